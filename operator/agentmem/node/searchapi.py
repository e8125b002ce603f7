"""Parsing the semantic parts of requests: a write's text and vector, and a
search's body. Pure functions of the request's data; the HTTP layer calls them."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from agentmem.directory.names import check_tenant
from agentmem.node import errors
from agentmem.node.requests import Consistency, Embedding, SearchRequest
from agentmem.node.semantic import MAX_K
from agentmem.node.tokens import Version
from agentmem.semantic.filters import FilterError, Scope, parse_filter

#: A write with text or a vector to index: ``{"value": ..., "text": "...", "vector": [...]}``.
MEMORY = "application/vnd.agentmem.memory+json"
MAX_QUERY_BYTES = 65_535
_KEY_PREFIX = re.compile(r"[A-Za-z0-9._:/=@+-]+")
_AGENT_PREFIX = re.compile(r"[A-Za-z0-9._:-]+")


def _vector(data: Any, where: str) -> list[float] | None:
    if data is None:
        return None
    if not isinstance(data, list) or not data:
        raise errors.InvalidRequest("invalid_vector", f"{where} is a list of numbers")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in data):
        raise errors.InvalidRequest("invalid_vector", f"{where} holds numbers only")
    if not all(math.isfinite(x) for x in data):
        raise errors.InvalidRequest("invalid_vector", f"{where} holds finite numbers only")
    return [float(x) for x in data]


def embed_fields(raw: str | None) -> tuple[str, ...]:
    if raw is None:
        return ()
    fields = tuple(f for f in raw.split(",") if f)
    if not fields or len(fields) > 16 or any(len(f) > 200 for f in fields):
        raise errors.InvalidRequest(
            "invalid_embed", "embed names 1 to 16 value fields, comma-separated (e.g. embed=text)"
        )
    return fields


def memory_body(text: str, fields: tuple[str, ...]) -> tuple[str, Embedding]:
    """The value (or patch) of a memory body, re-encoded compactly, and its embedding."""
    data = json.loads(text)
    if not isinstance(data, dict) or "value" not in data:
        raise errors.InvalidRequest(
            "invalid_memory",
            f'a {MEMORY} body is {{"value": ..., "text": "...", "vector": [...]}}',
        )
    unknown = set(data) - {"value", "text", "vector"}
    if unknown:
        raise errors.InvalidRequest(
            "invalid_memory", f"unknown member(s) {sorted(unknown)}: send value, text, vector"
        )
    memo_text = data.get("text")
    if memo_text is not None and not isinstance(memo_text, str):
        raise errors.InvalidRequest("invalid_memory", "text is a string")
    embedding = Embedding(memo_text, _vector(data.get("vector"), "vector"), fields)
    if embedding.text is None and embedding.vector is None and not fields:
        raise errors.InvalidRequest(
            "invalid_memory", "send text, a vector, or embed=<fields> with a memory body"
        )
    return json.dumps(data["value"], separators=(",", ":"), ensure_ascii=False), embedding


def search_request(
    data: Any,
    tenant: str,
    agent: str | None,
    partitions: int,
    default_consistency: Consistency,
    epoch: int | None,
) -> SearchRequest:
    """A search body: ``{"query" | "vector", "k", "filter", "key_prefix",
    "agent_prefix" (tenant-wide), "consistency", "min_version" | "min_versions",
    "partitions"}``."""
    if not isinstance(data, dict):
        raise errors.InvalidRequest("invalid_search", 'send {"query": "...", "k": 10}')
    allowed = {"query", "vector", "k", "filter", "key_prefix", "consistency", "min_version"}
    if agent is None:
        allowed |= {"agent_prefix", "min_versions", "partitions"}
    unknown = set(data) - allowed
    if unknown:
        raise errors.InvalidRequest(
            "invalid_search", f"unknown member(s) {sorted(unknown)}; known: {sorted(allowed)}"
        )
    query = data.get("query")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise errors.InvalidRequest("invalid_search", "query is a non-empty string")
    if query is not None and len(query.encode()) > MAX_QUERY_BYTES:
        raise errors.InvalidRequest("invalid_search", f"query is at most {MAX_QUERY_BYTES} bytes")
    vector = _vector(data.get("vector"), "vector")
    if (query is None) == (vector is None):
        raise errors.InvalidRequest("invalid_search", "send a query text or a vector (one of them)")
    k = data.get("k", 10)
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise errors.InvalidRequest("invalid_k", f"k is a whole number from 1 to {MAX_K}")
    try:
        conditions = parse_filter(data.get("filter"))
    except FilterError as exc:
        raise errors.InvalidRequest("invalid_filter", str(exc)) from None
    prefixes = {}
    for name in ("key_prefix", "agent_prefix"):
        value = data.get(name, "")
        if not isinstance(value, str):
            raise errors.InvalidRequest("invalid_search", f"{name} is a string")
        pattern, limit = (_KEY_PREFIX, 512) if name == "key_prefix" else (_AGENT_PREFIX, 128)
        if value and (len(value) > limit or not pattern.fullmatch(value)):
            raise errors.InvalidRequest(
                "invalid_name",
                f"{name} {value!r} is not the start of a name (up to {limit} letters, digits "
                f"and {'._:/=@+-' if name == 'key_prefix' else '._:-'})",
            )
        prefixes[name] = value
    consistency = data.get("consistency", default_consistency)
    if consistency not in ("eventual", "session", "strong"):
        raise errors.InvalidRequest(
            "invalid_consistency",
            f"consistency {consistency!r} is not one of eventual, session, strong",
        )
    min_versions: dict[int, int] = {}
    raw = data.get("min_version")
    if raw is not None:
        if not isinstance(raw, str):
            raise errors.InvalidRequest("invalid_version", "min_version is a version (p:offset)")
        version = Version.parse(raw, partitions, "min_version")
        min_versions[version.partition] = version.offset
    raw_many = data.get("min_versions")
    if raw_many is not None:
        if not isinstance(raw_many, dict):
            raise errors.InvalidRequest(
                "invalid_version", 'min_versions is {"<partition>": <offset>, ...}'
            )
        for p, offset in raw_many.items():
            if not (isinstance(p, str) and p.isdigit() and int(p) < partitions) or not (
                isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0
            ):
                raise errors.InvalidRequest(
                    "invalid_version",
                    f"min_versions: partition {p!r} -> {offset!r} is not a partition below "
                    f"{partitions} and an offset",
                )
            min_versions[int(p)] = max(min_versions.get(int(p), -1), offset)
    chosen: frozenset[int] | None = None
    raw_partitions = data.get("partitions")
    if raw_partitions is not None:
        if not isinstance(raw_partitions, list) or not all(
            isinstance(p, int) and not isinstance(p, bool) and 0 <= p < partitions
            for p in raw_partitions
        ):
            raise errors.InvalidRequest(
                "invalid_search", f"partitions is a list of partitions below {partitions}"
            )
        chosen = frozenset(raw_partitions)
    scope = Scope(
        check_tenant(tenant),
        agent,
        prefixes["agent_prefix"],
        prefixes["key_prefix"],
    )
    return SearchRequest(
        scope, query, vector, k, conditions, consistency, min_versions, chosen, epoch
    )
