"""The examples run against a local cluster, each by its one command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agentmem.local import LocalCluster
from tests.conftest import EXAMPLES


@pytest.mark.parametrize("example", ["shared-state", "langgraph-team"])
def test_example_runs_and_loses_nothing(up: LocalCluster, example: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / example / "main.py"), "--url", up.router_url],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    if example == "shared-state":
        assert "no update lost" in result.stdout
    else:
        assert "memory: agents share memory; the log orders writes; reads see writes" in (
            result.stdout
        )
