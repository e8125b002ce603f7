"""Shared test helpers."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_manifest_generator() -> ModuleType:
    """scripts/generate_manifests.py as a module."""
    spec = importlib.util.spec_from_file_location(
        "generate_manifests", ROOT / "scripts" / "generate_manifests.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture
def example() -> dict[str, Any]:
    """The basic example cluster."""
    return load_yaml(EXAMPLES / "basic" / "cluster.yaml")[0]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by the session (each test takes its own schema)."""
    server = PostgresServer().init()
    yield server
    server.destroy()


@pytest.fixture
def postgres_factory() -> Iterator[Callable[[], PostgresServer]]:
    """PostgreSQL servers of a test's own, for tests that stop them."""
    servers: list[PostgresServer] = []

    def make() -> PostgresServer:
        server = PostgresServer().init()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.destroy()


@pytest.fixture
def schema() -> str:
    """A fresh schema name for one test's durable store."""
    return f"t_{uuid.uuid4().hex[:12]}"
