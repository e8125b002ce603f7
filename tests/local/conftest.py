"""A local cluster (``agentmem up``'s processes) for the SDK and adapter tests.

Needs no servers: the nodes use the embedded log and store (SQLite files) and
keep their state in memory; they are real processes behind a real router.
"""

from __future__ import annotations

import io
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
    yield cluster
    cluster.stop()
