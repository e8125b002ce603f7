"""Names in an address: what a tenant, an agent id and a key may be.

Tenant and agent id form the routing key ``tenant/agent_id`` and may not
contain ``/``; a key may (``notes/2026/today``). The limits keep every Redis key
and Kafka message key short and printable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_ID_LENGTH: Final = 128
MAX_KEY_LENGTH: Final = 512

# fullmatch, not match with "$": "$" also matches before a trailing newline.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_KEY = re.compile(r"[A-Za-z0-9._:/=@+-]+")


class InvalidNameError(ValueError):
    """A tenant, agent id or key that is not allowed; the message says which and why."""


def _check_id(kind: str, value: str) -> str:
    if not value:
        raise InvalidNameError(f"{kind} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidNameError(
            f"{kind} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    if not _ID.fullmatch(value):
        raise InvalidNameError(
            f"{kind} {value!r} may contain only letters, digits, '.', '_', ':' and '-', "
            "and must start with a letter or digit"
        )
    return value


def check_tenant(value: str) -> str:
    return _check_id("tenant", value)


def check_agent(value: str) -> str:
    return _check_id("agent id", value)


def check_key(value: str) -> str:
    if not value:
        raise InvalidNameError("key must not be empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidNameError(
            f"key is {len(value)} characters long; the limit is {MAX_KEY_LENGTH}"
        )
    if not _KEY.fullmatch(value):
        raise InvalidNameError(
            f"key {value!r} may contain only letters, digits and . _ : / = @ + -"
        )
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise InvalidNameError(f"key {value!r} must not start or end with '/' or contain '//'")
    return value


@dataclass(frozen=True, order=True)
class Address:
    """Where a value lives: (tenant, agent id, key)."""

    tenant: str
    agent: str
    key: str

    @classmethod
    def parse(cls, tenant: str, agent: str, key: str) -> Address:
        return cls(check_tenant(tenant), check_agent(agent), check_key(key))

    @property
    def agent_path(self) -> str:
        return f"{self.tenant}/{self.agent}"

    @property
    def path(self) -> str:
        """``tenant/agent/key``: the Kafka message key (compaction keeps the newest per path)."""
        return f"{self.tenant}/{self.agent}/{self.key}"
