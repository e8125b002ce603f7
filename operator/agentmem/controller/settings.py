"""Operator settings, read once at startup from the environment and the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _env_float(name: str, default: float, zero: bool = False) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a number of seconds") from None
    if value < 0 or (value == 0 and not zero):
        raise SystemExit(f"{name} must be {'0 or more' if zero else 'positive'}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """What the operator needs beyond kopf's own settings.

    ``AGENTMEM_RESYNC_SECONDS``: how often every cluster is reconciled even when
    nothing changed (restores hand-edited children, refreshes status). Default 30.
    ``AGENTMEM_WORKERS``: threads for reconciles. Default 4.
    ``AGENTMEM_LAG_SECONDS``: at most how often a reconcile asks a cluster's nodes how
    far behind the log they are, for ``status.eventLag`` (a request to each node pod,
    none to the API server). Default 30; 0 turns it off.
    ``AGENTMEM_DISCOVERY_SECONDS``: how often the APIs that were not served (the
    Prometheus Operator's, Strimzi's) are looked for again, so one installed after
    the operator started is used without a restart. Default 300.
    """

    namespaces: tuple[str, ...] = ()
    resync_seconds: float = 30.0
    workers: int = 4
    lag_seconds: float = 30.0
    discovery_seconds: float = 300.0

    @classmethod
    def from_env(cls, namespaces: tuple[str, ...] = ()) -> Settings:
        return cls(
            namespaces=namespaces,
            resync_seconds=_env_float("AGENTMEM_RESYNC_SECONDS", 30.0),
            workers=int(_env_float("AGENTMEM_WORKERS", 4)),
            lag_seconds=_env_float("AGENTMEM_LAG_SECONDS", 30.0, zero=True),
            discovery_seconds=_env_float("AGENTMEM_DISCOVERY_SECONDS", 300.0),
        )
