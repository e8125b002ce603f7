"""A local cluster (``agentmem up``'s processes) for the SDK and adapter tests.

Needs no servers: the nodes use the embedded log and store (SQLite files) and
keep their state in memory; they are real processes behind a real router.
Authentication is on, as with ``agentmem up``: the module's cluster puts its
development token in ``AGENTMEM_TOKEN_FILE``, where the SDK (and the examples
and ``agentmem mcp`` started from a test) find it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmem.local import LocalCluster
from tests.net import free_port_run


def start_cluster(data: Path, shards: int = 3, **options: object) -> LocalCluster:
    cluster = LocalCluster(data=data, shards=shards, port=free_port_run(shards + 1), **options)  # type: ignore[arg-type]
    cluster.prepare()
    try:
        cluster.start(io.StringIO())
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three shards and a router, shared by a module's tests (each uses its own tenant)."""
    cluster = start_cluster(tmp_path_factory.mktemp("up"))
    before = os.environ.get("AGENTMEM_TOKEN_FILE")
    os.environ["AGENTMEM_TOKEN_FILE"] = str(cluster.token_file)
    yield cluster
    cluster.stop()
    if before is None:
        del os.environ["AGENTMEM_TOKEN_FILE"]
    else:
        os.environ["AGENTMEM_TOKEN_FILE"] = before
