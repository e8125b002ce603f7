"""The memory node's HTTP/JSON API (aiohttp). ``/openapi.json`` documents it.

Every address is ``/v1/tenants/{tenant}/agents/{agent}/keys/{key}``; nothing in
the API reaches across tenants. Errors are JSON ``{"error": code, "message": ...}``
with a 4xx that says what is wrong, 307 to the owning shard, or 5xx with
``Retry-After`` for a retryable condition. Nothing is appended to the log for a
request that is refused.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agentmem import __version__
from agentmem.directory.names import Address, InvalidNameError, check_agent, check_tenant
from agentmem.node.apply import Record
from agentmem.node.events import Expect
from agentmem.node.openapi import openapi_document
from agentmem.node.service import Consistency, Node, NodeError, Version, now_ms

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
MAX_BATCH_KEYS = 1000
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

NODE_KEY = web.AppKey("node", Node)
DEFAULT_CONSISTENCY_KEY = web.AppKey("consistency", str)


def _error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    body = json.dumps({"error": code, "message": message, **extra})
    return web.Response(status=status, text=body, content_type=JSON, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def answers_errors(handler: Handler) -> Handler:
    """Turn the errors a handler raises into JSON answers.

    (A decorator rather than an aiohttp middleware: it costs less per request.)
    """

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except NodeError as exc:
            return _error(exc.status, exc.code, exc.message, exc.headers, **exc.extra)
        except InvalidNameError as exc:
            return _error(400, "invalid_name", str(exc))
        except web.HTTPRequestEntityTooLarge:
            limit = request.app[NODE_KEY].config.max_value_bytes
            return _error(413, "too_large", f"the request body is larger than {limit} bytes")

    return wrapped


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


def _address(request: web.Request) -> Address:
    info = request.match_info
    return Address.parse(info["tenant"], info["agent"], info["key"])


def _agent(request: web.Request) -> tuple[str, str]:
    info = request.match_info
    return check_tenant(info["tenant"]), check_agent(info["agent"])


def _epoch(request: web.Request) -> int | None:
    raw = request.headers.get("X-Agentmem-Epoch")
    if raw is None:
        return None
    if not raw.isdigit():
        raise NodeError(400, "invalid_epoch", f"X-Agentmem-Epoch {raw!r} is not a whole number")
    return int(raw)


def _read_options(request: web.Request) -> tuple[Consistency, Version | None]:
    node = _node(request)
    consistency = request.query.get("consistency", request.app[DEFAULT_CONSISTENCY_KEY])
    if consistency not in ("eventual", "session", "strong"):
        raise NodeError(
            400,
            "invalid_consistency",
            f"consistency {consistency!r} is not one of eventual, session, strong",
        )
    raw = request.query.get("min_version")
    min_version = Version.parse(raw, node.config.partitions) if raw else None
    return consistency, min_version  # type: ignore[return-value]


def _expect(request: web.Request, partition: int) -> Expect:
    if_match = request.headers.get("If-Match")
    if_none = request.headers.get("If-None-Match")
    if if_match and if_none:
        raise NodeError(400, "invalid_condition", "send If-Match or If-None-Match, not both")
    if if_none is not None:
        if if_none.strip() != "*":
            raise NodeError(400, "invalid_condition", "If-None-Match supports only '*'")
        return "absent"
    if if_match is not None:
        version = Version.parse(if_match, _node(request).config.partitions)
        if version.partition != partition:
            raise NodeError(
                400,
                "foreign_version",
                f"If-Match {version} is of partition {version.partition}, but this key is in "
                f"partition {partition}",
            )
        return version.offset
    return None


def _request_id(request: web.Request) -> str:
    rid = request.headers.get("X-Request-Id")
    if rid is None:
        return uuid.uuid4().hex
    if not _REQUEST_ID.match(rid):
        raise NodeError(
            400,
            "invalid_request_id",
            "X-Request-Id must be 1 to 128 letters, digits, '.', '_', ':' or '-'",
        )
    return rid


def _actor(request: web.Request) -> str:
    actor = request.headers.get("X-Agentmem-Actor", "")
    if len(actor) > 256:
        raise NodeError(400, "invalid_actor", "X-Agentmem-Actor is longer than 256 characters")
    return actor


def _ttl(request: web.Request) -> int | None:
    raw = request.query.get("ttl")
    if raw is None:
        return None
    if not raw.isdigit() or not 0 < int(raw) <= MAX_TTL_SECONDS:
        raise NodeError(
            400, "invalid_ttl", f"ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}"
        )
    return int(raw) * 1000


async def _body(request: web.Request, types: tuple[str, ...]) -> str:
    node = _node(request)
    if request.content_type not in types:
        raise NodeError(
            415,
            "unsupported_media_type",
            f"send the value as {' or '.join(types)} (got {request.content_type or 'nothing'})",
        )
    limit = node.config.max_value_bytes
    if request.content_length is not None and request.content_length > limit:
        raise NodeError(413, "too_large", f"the value is larger than the limit of {limit} bytes")
    raw = await request.read()
    if len(raw) > limit:
        raise NodeError(413, "too_large", f"the value is larger than the limit of {limit} bytes")
    try:
        text = raw.decode("utf-8")
        json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NodeError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    return text


def _headers(node: Node, version: str | None = None) -> dict[str, str]:
    headers = {"X-Agentmem-Epoch": str(node.view.epoch)}
    if version is not None:
        headers["ETag"] = f'"{version}"'
    return headers


def _record_json(addr: Address, partition: int, record: Record) -> str:
    # Validated names hold no character JSON would escape; the value is stored JSON.
    expires = "null" if record.expires_at is None else record.expires_at
    return (
        f'{{"tenant":"{addr.tenant}","agent":"{addr.agent}","key":"{addr.key}",'
        f'"version":"{partition}:{record.version}","expires_at":{expires},'
        f'"value":{record.value}}}'
    )


# Handlers ---------------------------------------------------------------------


@answers_errors
async def get_key(request: web.Request) -> web.Response:
    node = _node(request)
    addr = _address(request)
    consistency, min_version = _read_options(request)
    partition, record = await node.get(addr, consistency, min_version, _epoch(request))
    if record is None:
        return _error(404, "not_found", f"{addr.key} is not set", _headers(node))
    return web.Response(
        text=_record_json(addr, partition, record),
        content_type=JSON,
        headers=_headers(node, f"{partition}:{record.version}"),
    )


async def _write_response(node: Node, addr: Address, result: Any) -> web.Response:
    if result.outcome.status == "conflict":
        current = str(result.current) if result.current is not None else None
        return _error(
            409,
            "conflict",
            f"{addr.key} is at version {current or '(absent)'}, not the expected one",
            _headers(node),
            current_version=current,
        )
    version = str(result.version)
    body = {"key": addr.key, "version": version, "duplicate": result.outcome.duplicate}
    return web.json_response(body, headers=_headers(node, version))


@dataclass(frozen=True)
class _Write:
    """What every write request carries besides its body, checked before anything else."""

    node: Node
    addr: Address
    expect: Expect
    rid: str
    actor: str
    epoch: int | None


def _write(request: web.Request) -> _Write:
    node = _node(request)
    addr = _address(request)
    epoch = _epoch(request)
    partition = node.route(addr, epoch)
    return _Write(
        node, addr, _expect(request, partition), _request_id(request), _actor(request), epoch
    )


@answers_errors
async def put_key(request: web.Request) -> web.Response:
    w = _write(request)
    ttl = _ttl(request)
    value = await _body(request, (JSON,))
    expires_at = now_ms() + ttl if ttl else None
    result = await w.node.append(
        w.addr, "put", value, w.expect, expires_at, w.rid, w.actor, w.epoch
    )
    return await _write_response(w.node, w.addr, result)


@answers_errors
async def patch_key(request: web.Request) -> web.Response:
    w = _write(request)
    ttl = _ttl(request)
    patch = json.loads(await _body(request, (MERGE_PATCH, JSON)))
    result = await w.node.merge(w.addr, patch, w.expect, ttl, w.rid, w.actor, w.epoch)
    return await _write_response(w.node, w.addr, result)


@answers_errors
async def delete_key(request: web.Request) -> web.Response:
    w = _write(request)
    result = await w.node.append(w.addr, "delete", None, w.expect, None, w.rid, w.actor, w.epoch)
    return await _write_response(w.node, w.addr, result)


@answers_errors
async def list_keys(request: web.Request) -> web.Response:
    node = _node(request)
    tenant, agent = _agent(request)
    consistency, min_version = _read_options(request)
    keys = await node.keys(tenant, agent, consistency, min_version, _epoch(request))
    return web.json_response(
        {"tenant": tenant, "agent": agent, "keys": keys}, headers=_headers(node)
    )


@answers_errors
async def batch_get(request: web.Request) -> web.Response:
    node = _node(request)
    tenant, agent = _agent(request)
    consistency, min_version = _read_options(request)
    body = json.loads(await _body(request, (JSON,)))
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise NodeError(400, "invalid_batch", 'send {"keys": ["key", ...]}')
    if not 0 < len(keys) <= MAX_BATCH_KEYS:
        raise NodeError(400, "invalid_batch", f"ask for 1 to {MAX_BATCH_KEYS} keys at once")
    partition, records = await node.get_many(
        tenant, agent, keys, consistency, min_version, _epoch(request)
    )
    items = []
    for key, record in zip(keys, records, strict=True):
        addr = Address(tenant, agent, key)
        items.append(_record_json(addr, partition, record) if record is not None else "null")
    text = '{"items":[' + ",".join(items) + "]}"
    return web.Response(text=text, content_type=JSON, headers=_headers(node))


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise NodeError(400, f"invalid_{name}", f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise NodeError(400, f"invalid_{name}", f"{name} must be from {low} to {high}")
    return value


def _after(request: web.Request) -> int | None:
    raw = request.query.get("after")
    if raw is None:
        return None
    return Version.parse(raw, _node(request).config.partitions).offset


@answers_errors
async def history(request: web.Request) -> web.Response:
    node = _node(request)
    tenant, agent = _agent(request)
    after = _after(request)
    limit = _int_query(request, "limit", 100, 1, 1000)
    events, cursor = await node.history(
        tenant, agent, -1 if after is None else after, limit, _epoch(request)
    )
    p = node.route(Address(tenant, agent, "_"))
    return web.json_response(
        {"events": events, "next_after": f"{p}:{cursor}" if cursor >= 0 else None},
        headers=_headers(node),
    )


@answers_errors
async def watch(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    tenant, agent = _agent(request)
    after = _after(request)
    node.route(Address(tenant, agent, "_"), _epoch(request))  # redirect before streaming
    stream = node.watch(tenant, agent, after, _epoch(request))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **_headers(node)}
    )
    await response.prepare(request)
    try:
        async for entry in stream:
            if not entry:
                await response.write(b": heartbeat\n\n")
                continue
            if entry.get("overflow"):
                data = json.dumps({"resume_after": entry["resume_after"]})
                await response.write(f"event: overflow\ndata: {data}\n\n".encode())
                break
            data = json.dumps(entry, separators=(",", ":"))
            await response.write(
                f"id: {entry['version']}\nevent: change\ndata: {data}\n\n".encode()
            )
    except ConnectionResetError:
        pass  # the client went away
    return response


@answers_errors
async def status(request: web.Request) -> web.Response:
    return web.json_response(_node(request).status())


@answers_errors
async def directory(request: web.Request) -> web.Response:
    view = _node(request).view
    if view.directory is None:
        return _error(404, "no_directory", "this node serves every partition without a directory")
    return web.Response(text=view.directory.to_json(), content_type=JSON)


@answers_errors
async def livez(request: web.Request) -> web.Response:
    if not _node(request).alive():
        return _error(503, "applier_stopped", "the thread that applies events has stopped")
    return web.json_response({"status": "alive", "version": __version__})


@answers_errors
async def readyz(request: web.Request) -> web.Response:
    node = _node(request)
    if node.fatal:
        return _error(503, "unavailable", node.fatal)
    if not node.caught_up():
        return _error(503, "catching_up", "this node is still applying its partitions' events")
    return web.json_response({"status": "ready", "epoch": node.view.epoch})


@answers_errors
async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=_node(request).metrics.exposition(), content_type="text/plain", charset="utf-8"
    )


@answers_errors
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(_node(request).config.max_value_bytes))


#: Handlers under /v1/tenants/{tenant}/agents/{agent}/: one aiohttp route for all
#: of them, dispatched here (resolving one pattern costs less than trying many).
_KEY_HANDLERS: dict[str, Handler] = {
    "GET": get_key,
    "PUT": put_key,
    "PATCH": patch_key,
    "DELETE": delete_key,
}
_AGENT_HANDLERS: dict[str, dict[str, Handler]] = {
    "keys": {"GET": list_keys},
    "batch-get": {"POST": batch_get},
    "history": {"GET": history},
    "watch": {"GET": watch},
}


async def agent_route(request: web.Request) -> web.StreamResponse:
    rest = request.match_info["rest"]
    if rest.startswith("keys/"):
        methods = _KEY_HANDLERS
        request.match_info["key"] = rest[5:]
    elif rest in _AGENT_HANDLERS:
        methods = _AGENT_HANDLERS[rest]
    else:
        return await not_found(request)
    handler = methods.get(request.method)
    if handler is None:
        allowed = ", ".join(methods)
        return _error(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}; use {allowed}",
            {"Allow": allowed},
        )
    return await handler(request)


def create_app(node: Node, default_consistency: str = "session") -> web.Application:
    app = web.Application(client_max_size=node.config.max_value_bytes + 64 * 1024)
    app[NODE_KEY] = node
    app[DEFAULT_CONSISTENCY_KEY] = default_consistency
    app.router.add_route("*", "/v1/tenants/{tenant}/agents/{agent}/{rest:.*}", agent_route)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/directory", directory)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_route("*", "/{path:.*}", not_found)
    return app


async def not_found(request: web.Request) -> web.Response:
    return _error(
        404, "not_found", f"no such endpoint: {request.method} {request.path}; see /openapi.json"
    )
