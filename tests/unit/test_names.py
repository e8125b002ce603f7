"""Names in an address."""

from __future__ import annotations

import pytest

from agentmem.directory.names import Address, InvalidNameError, check_agent, check_key


@pytest.mark.parametrize("bad", ["", "a/b", "-x", "x\n", "x y", "ü", "a" * 129, "x\x00", 'x"'])
def test_bad_ids(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="agent id"):
        check_agent(bad)


@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "k\n", "k v", 'k"', "k" * 513])
def test_bad_keys(bad: str) -> None:
    with pytest.raises(InvalidNameError, match="key"):
        check_key(bad)


def test_good_names() -> None:
    addr = Address.parse("acme", "robot-7.eu:1", "notes/2026/plan=a@b+c")
    assert addr.path == "acme/robot-7.eu:1/notes/2026/plan=a@b+c"
    assert addr.agent_path == "acme/robot-7.eu:1"
