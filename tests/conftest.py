"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture
def example() -> dict[str, Any]:
    """The basic example cluster."""
    return load_yaml(EXAMPLES / "basic" / "cluster.yaml")[0]
