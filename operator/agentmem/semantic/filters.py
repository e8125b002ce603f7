"""Search scopes and filters on value fields, as Milvus boolean expressions.

A filter is a JSON object of conditions on the value's fields, all of which
must hold::

    {"kind": "fact", "priority": {"$gte": 2}, "tags.team": {"$in": ["red", "blue"]}}

A field is a dotted path of names (``tags.team`` is ``value["tags"]["team"]``);
a condition is a value (equality) or one operator of ``$eq $ne $gt $gte $lt
$lte $in``. Milvus narrows the candidates with the expression, and every hit is
checked again against the value the node holds (:func:`matches`), so a hit
always satisfies the filter exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

OPERATORS: Final = {"$eq": "==", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
MAX_CONDITIONS: Final = 16
_FIELD = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9_-]{1,64}){0,7}")
_SAFE_TEXT = re.compile(r'[^"\\\x00-\x1f]*')


class FilterError(ValueError):
    """A filter that cannot be used; the message says which part and why."""


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # a key of OPERATORS, or "$in"
    operand: Any

    def expr(self) -> str:
        path = "".join(f'["{name}"]' for name in self.field.split("."))
        target = f"value{path}"
        if self.op == "$in":
            return f"{target} in [{', '.join(_literal(v) for v in self.operand)}]"
        return f"{target} {OPERATORS[self.op]} {_literal(self.operand)}"

    def holds(self, value: Any) -> bool:
        found = value
        for name in self.field.split("."):
            if not isinstance(found, dict) or name not in found:
                return False
            found = found[name]
        if self.op == "$in":
            return any(_equal(found, v) for v in self.operand)
        if self.op in ("$eq", "$ne"):
            return _equal(found, self.operand) == (self.op == "$eq")
        if isinstance(found, bool) or not isinstance(found, int | float):
            if not (isinstance(found, str) and isinstance(self.operand, str)):
                return False
        elif isinstance(self.operand, str):
            return False
        try:
            if self.op == "$gt":
                return bool(found > self.operand)
            if self.op == "$gte":
                return bool(found >= self.operand)
            if self.op == "$lt":
                return bool(found < self.operand)
            return bool(found <= self.operand)
        except TypeError:
            return False


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _scalar(value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None:
        if value is None:
            raise FilterError(f"{where}: null cannot be compared; leave the condition out")
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        if not _SAFE_TEXT.fullmatch(value):
            raise FilterError(f'{where}: a text in a filter holds no ", \\ or control characters')
        return value
    raise FilterError(f"{where}: compare with a string, number or boolean")


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return json.dumps(value)


def parse_filter(data: Any) -> list[Condition]:
    """The conditions of a request's ``filter``; FilterError names what is wrong."""
    if data is None:
        return []
    if not isinstance(data, dict):
        raise FilterError('filter is an object of field conditions, e.g. {"kind": "fact"}')
    if len(data) > MAX_CONDITIONS:
        raise FilterError(f"filter has {len(data)} conditions; the limit is {MAX_CONDITIONS}")
    conditions = []
    for name, condition in data.items():
        if not _FIELD.fullmatch(name):
            raise FilterError(
                f"filter field {name!r}: dotted names of letters, digits, '_' and '-'"
            )
        where = f"filter.{name}"
        if isinstance(condition, dict):
            if len(condition) != 1:
                raise FilterError(f"{where}: one operator per field ({', '.join(OPERATORS)}, $in)")
            ((op, operand),) = condition.items()
            if op == "$in":
                if not isinstance(operand, list) or not 0 < len(operand) <= 100:
                    raise FilterError(f"{where}.$in: a list of 1 to 100 values")
                conditions.append(Condition(name, op, [_scalar(v, where) for v in operand]))
            elif op in OPERATORS:
                conditions.append(Condition(name, op, _scalar(operand, f"{where}.{op}")))
            else:
                raise FilterError(f"{where}: unknown operator {op!r}")
        else:
            conditions.append(Condition(name, "$eq", _scalar(condition, where)))
    return conditions


def matches(value: Any, conditions: Iterable[Condition]) -> bool:
    return all(c.holds(value) for c in conditions)


@dataclass(frozen=True)
class Scope:
    """Whose memory a search looks at: a tenant, narrowed to an agent (session-local
    memory) or to agents and keys starting with prefixes."""

    tenant: str
    agent: str | None = None
    agent_prefix: str = ""
    key_prefix: str = ""

    def covers(self, agent: str, key: str) -> bool:
        if self.agent is not None and agent != self.agent:
            return False
        return agent.startswith(self.agent_prefix) and key.startswith(self.key_prefix)


def _like_prefix(field: str, prefix: str) -> str | None:
    # '%' and '_' are LIKE's wildcards: narrow by the part before them (names hold
    # no '%'); the exact prefix is checked on every hit.
    usable = prefix.split("_", 1)[0]
    return f'{field} like "{usable}%"' if usable else None


def expression(
    scope: Scope, partitions: Iterable[int], conditions: Iterable[Condition], now_ms: int
) -> str:
    """The Milvus expression of a scope over ``partitions`` with ``conditions``.

    Names in a scope are checked by agentmem.directory.names (letters, digits,
    ``._:-`` and for keys ``/=@+``), so they need no escaping in a string literal.
    """
    parts = [f'tenant == "{scope.tenant}"']
    parts.append(f"partition in [{', '.join(str(p) for p in sorted(partitions))}]")
    if scope.agent is not None:
        parts.append(f'agent == "{scope.agent}"')
    for field, prefix in (("agent", scope.agent_prefix), ("key", scope.key_prefix)):
        like = _like_prefix(field, prefix) if prefix else None
        if like:
            parts.append(like)
    parts.append(f"(expires_at == 0 or expires_at > {now_ms})")
    parts += [c.expr() for c in conditions]
    return " and ".join(parts)


def value_of(text: str | None, limit: int) -> Mapping[str, Any] | None:
    """The value as the index keeps it for filters: objects up to ``limit`` bytes."""
    if text is None or len(text) > limit or not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
