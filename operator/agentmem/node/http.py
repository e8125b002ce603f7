"""The memory node's HTTP/JSON API (aiohttp). ``/openapi.json`` documents it.

Every address is ``/v1/tenants/{tenant}/agents/{agent}/keys/{key}``; nothing in
the API reaches across tenants. A request is parsed and checked here, once,
into a :class:`~agentmem.node.requests.WriteRequest` or
:class:`~agentmem.node.requests.ReadRequest`; the node's domain errors become
HTTP statuses here and nowhere else. Errors are JSON ``{"error": code,
"message": ...}``: a 4xx says what is wrong, 307 names the owning shard, a 5xx
carries ``Retry-After`` and says what to retry. Nothing is appended to the log
for a request that is refused.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry.trace import SpanKind

from agentmem import __version__
from agentmem.directory import partition_for
from agentmem.directory.names import Address, InvalidNameError, check_agent, check_tenant
from agentmem.eventlog.events import Expect
from agentmem.node import errors
from agentmem.node.limits import Admission, Quotas
from agentmem.node.node import Node, WriteResult
from agentmem.node.openapi import openapi_document
from agentmem.node.requests import Consistency, Embedding, ReadRequest, WriteOp, WriteRequest
from agentmem.node.searchapi import MEMORY, embed_fields, memory_body, search_request
from agentmem.node.tokens import Version
from agentmem.runtime import tracing
from agentmem.runtime.auth import (
    ANONYMOUS,
    AuthError,
    Grant,
    Verifier,
    data_scope,
    follow_while_serving,
    refusal,
)
from agentmem.runtime.errors import json_error
from agentmem.runtime.serve import run_while_serving
from agentmem.runtime.tls import MUTUAL_TLS, has_client_cert
from agentmem.store.ports import Record

log = logging.getLogger(__name__)

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
MAX_BATCH_KEYS = 1000
#: How deeply arrays and objects may nest in a value or a patch (parsers, the
#: merge and Redis's JSON all recurse: a bound keeps every one of them safe).
MAX_DEPTH = 100
#: A JSON string (brackets inside it do not nest) or a bracket.
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

NODE_KEY = web.AppKey("node", Node)
#: The token verifier; None when authentication is off.
AUTH_KEY: web.AppKey[Verifier | None] = web.AppKey("auth")
ADMISSION_KEY = web.AppKey("admission", Admission)
#: The verified grant of a request on an agent's memory.
GRANT_KEY = web.RequestKey("grant", Grant)

#: The HTTP status of each kind of domain error (the most specific kind wins).
STATUS: dict[type[errors.NodeError], int] = {
    errors.InvalidRequest: 400,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.Contended: 409,
    errors.TooLarge: 413,
    errors.OverLimit: 429,
    errors.UnsupportedMediaType: 415,
    errors.WrongShard: 307,
    errors.StaleNode: 421,
    errors.StateFull: 507,
    errors.Unavailable: 503,
    errors.NotCaughtUp: 504,
    errors.ApplyTimeout: 504,
}


def status_of(exc: errors.NodeError) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def error_response(exc: errors.NodeError, scheme: str = "http") -> web.Response:
    headers: dict[str, str] = {}
    extra = exc.extra
    if exc.retry_after is not None:
        headers["Retry-After"] = str(math.ceil(exc.retry_after))
        extra = {**extra, "retry_after": round(exc.retry_after, 3)}
    if isinstance(exc, errors.WrongShard):
        headers["Location"] = f"{scheme}://{exc.endpoint}"
    return json_error(status_of(exc), exc.code, exc.message, headers or None, **extra)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: The kind of request each handler answers (the label of memory_node_requests_total).
_KINDS = {
    "get_key": "read", "batch_get": "read", "handle": "write", "list_keys": "list",
    "list_agents": "list", "history": "history", "watch": "watch", "search_agent": "search",
    "search_tenant": "search", "status": "status", "directory": "status",
}  # fmt: skip


def answers_errors(handler: Handler) -> Handler:
    """Turn whatever a handler raises into a JSON answer (never a traceback), and
    count the answer by kind and status.

    (A decorator rather than an aiohttp middleware: it costs less per request.)
    """
    kind = _KINDS.get(handler.__name__, "other")

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        response = await _answer(handler, request)
        request.app[NODE_KEY].metrics.request(kind, response.status)
        return response

    return wrapped


async def _answer(handler: Handler, request: web.Request) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.NodeError as exc:
        return error_response(exc, request.scheme)
    except AuthError as exc:
        return refusal(exc)
    except InvalidNameError as exc:
        return json_error(400, "invalid_name", str(exc))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[NODE_KEY].settings.max_value_bytes
        return json_error(413, "too_large", f"the request body is larger than {limit} bytes")
    except (ConnectionResetError, web.HTTPException):
        raise
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return json_error(
            500,
            "internal",
            "the node failed to answer this request (its log says why); retry, and report "
            "it if it persists",
        )


# Parsing ------------------------------------------------------------------------


def _node(request: web.Request) -> Node:
    return request.app[NODE_KEY]


def authenticate(request: web.Request, data: bool = True) -> Grant:
    """The grant of the request's bearer token (401 without a valid one).

    With mutual TLS, a ``data`` endpoint also wants the connection's client
    certificate (the status and metrics endpoints take a token alone: the
    operator and Prometheus hold tokens, not the cluster's certificates).
    """
    if data and request.app.get(MUTUAL_TLS) and not has_client_cert(request):
        raise AuthError(
            401, "client_certificate_required",
            "this node answers only clients with a certificate of the cluster's CA (mutual "
            "TLS): send requests through the router, or give the client the certificate",
        )  # fmt: skip
    verifier = request.app[AUTH_KEY]
    if verifier is None:
        return ANONYMOUS
    return verifier.authenticate(request.headers.get("Authorization"))


def _agent(request: web.Request) -> tuple[str, str]:
    info = request.match_info
    return check_tenant(info["tenant"]), check_agent(info["agent"])


def _epoch(request: web.Request) -> int | None:
    raw = request.headers.get("X-Agentmem-Epoch")
    if raw is None:
        return None
    if not raw.isdigit():
        raise errors.InvalidRequest(
            "invalid_epoch", f"X-Agentmem-Epoch {raw!r} is not a whole number"
        )
    return int(raw)


def _read_request(
    request: web.Request, keys: tuple[str, ...] | None, agent: tuple[str, str] | None = None
) -> ReadRequest:
    node = _node(request)
    tenant, agent_id = agent or _agent(request)
    consistency = request.query.get("consistency", node.settings.consistency)
    if consistency not in ("eventual", "session", "strong"):
        raise errors.InvalidRequest(
            "invalid_consistency",
            f"consistency {consistency!r} is not one of eventual, session, strong",
        )
    raw = request.query.get("min_version")
    min_version = Version.parse(raw, node.settings.partitions, "min_version") if raw else None
    chosen: Consistency = consistency  # type: ignore[assignment]
    return ReadRequest(tenant, agent_id, keys, chosen, min_version, _epoch(request))


def _expect(request: web.Request, addr: Address) -> Expect:
    if_match = request.headers.get("If-Match")
    if_none = request.headers.get("If-None-Match")
    if if_match and if_none:
        raise errors.InvalidRequest("invalid_condition", "send If-Match or If-None-Match, not both")
    if if_none is not None:
        if if_none.strip() != "*":
            raise errors.InvalidRequest("invalid_condition", "If-None-Match supports only '*'")
        return "absent"
    if if_match is not None:
        partitions = _node(request).settings.partitions
        version = Version.parse(if_match, partitions, "If-Match")
        partition = partition_for(addr.tenant, addr.agent, partitions)
        if version.partition != partition:
            raise errors.InvalidRequest(
                "foreign_version",
                f"If-Match {version} is of partition {version.partition}, but this key is in "
                f"partition {partition}",
            )
        return version.offset
    return None


def _request_id(request: web.Request) -> str:
    rid = request.headers.get("X-Request-Id")
    if rid is None:
        return ""  # nothing to remember: only a client's own id makes a retry safe
    if not _REQUEST_ID.match(rid):
        raise errors.InvalidRequest(
            "invalid_request_id",
            "X-Request-Id must be 1 to 128 letters, digits, '.', '_', ':' or '-'",
        )
    return rid


def _ttl(request: web.Request) -> int | None:
    raw = request.query.get("ttl")
    if raw is None:
        return None
    if not raw.isdigit() or not 0 < int(raw) <= MAX_TTL_SECONDS:
        raise errors.InvalidRequest(
            "invalid_ttl", f"ttl must be a whole number of seconds from 1 to {MAX_TTL_SECONDS}"
        )
    return int(raw) * 1000


async def _body(request: web.Request, types: tuple[str, ...]) -> str:
    limit = _node(request).settings.max_value_bytes
    if request.content_type not in types:
        raise errors.UnsupportedMediaType(
            f"send the value as {' or '.join(types)} (got {request.content_type or 'nothing'})"
        )
    if request.content_length is not None and request.content_length > limit:
        raise errors.TooLarge(f"the value is larger than the limit of {limit} bytes")
    raw = await request.read()
    if len(raw) > limit:
        raise errors.TooLarge(f"the value is larger than the limit of {limit} bytes")
    try:
        text = raw.decode("utf-8")
        check_depth(text)
        json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.InvalidRequest("invalid_json", f"the body is not valid JSON: {exc}") from None
    return text


def nesting_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (without recursing);
    0 for a text with too few brackets to pass the limit."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0  # cannot be deeper than it has brackets: the common case costs two scans
    steps = (_DEPTH_STEP.get(token, 0) for token in _NESTING.findall(text))
    return max(itertools.accumulate(steps, initial=0))


def check_depth(text: str) -> None:
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise errors.InvalidRequest(
            "too_deep",
            f"the body nests arrays and objects {depth} deep; the limit is {MAX_DEPTH}",
        )


async def _write_request(request: web.Request, op: WriteOp) -> WriteRequest:
    info = request.match_info
    addr = Address.parse(info["tenant"], info["agent"], info["key"])
    epoch = _epoch(request)
    expect = _expect(request, addr)
    rid, actor = _request_id(request), request[GRANT_KEY].subject
    ttl = _ttl(request) if op != "delete" else None
    body = None
    embedding = None
    if op != "delete":
        fields = embed_fields(request.query.get("embed"))
        types = (JSON, MEMORY) if op == "put" else (MERGE_PATCH, JSON, MEMORY)
        body = await _body(request, types)
        if request.content_type == MEMORY:
            body, embedding = memory_body(body, fields)
        elif fields:
            embedding = Embedding(fields=fields)
    return WriteRequest(addr, op, body, expect, ttl, rid, actor, epoch, embedding)


# Answers ------------------------------------------------------------------------


def _headers(
    node: Node, partition: int | None = None, version: str | None = None
) -> dict[str, str]:
    headers = {"X-Agentmem-Epoch": str(node.view.epoch)}
    if partition is not None:
        # The partition's applied offset this answer reflects: a client keeps it
        # as a session token so its next read elsewhere sees at least as much.
        headers["X-Agentmem-Applied"] = f"{partition}:{node.progress.applied_offset(partition)}"
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


def _write_response(node: Node, addr: Address, result: WriteResult) -> web.Response:
    p = partition_for(addr.tenant, addr.agent, node.settings.partitions)
    if result.outcome.status == "conflict":
        current = str(result.current) if result.current is not None else None
        return json_error(
            409,
            "conflict",
            f"{addr.key} is at version {current or '(absent)'}, not the expected one",
            _headers(node, p),
            current_version=current,
        )
    version = str(result.version)
    body = {"key": addr.key, "version": version, "duplicate": result.outcome.duplicate}
    return web.json_response(body, headers=_headers(node, p, version))


# Handlers ---------------------------------------------------------------------


@answers_errors
async def get_key(request: web.Request) -> web.Response:
    node = _node(request)
    info = request.match_info
    addr = Address.parse(info["tenant"], info["agent"], info["key"])
    req = _read_request(request, (addr.key,), (addr.tenant, addr.agent))
    partition, (record,) = await node.read(req)
    if record is None:
        return json_error(404, "not_found", f"{addr.key} is not set", _headers(node, partition))
    version = f"{partition}:{record.version}"
    return web.Response(
        text=_record_json(addr, partition, record),
        content_type=JSON,
        headers=_headers(node, partition, version),
    )


def _writer(op: WriteOp) -> Handler:
    @answers_errors
    async def handle(request: web.Request) -> web.Response:
        node = _node(request)
        req = await _write_request(request, op)
        return _write_response(node, req.addr, await node.write(req))

    return handle


put_key, patch_key, delete_key = _writer("put"), _writer("merge"), _writer("delete")


@answers_errors
async def list_keys(request: web.Request) -> web.Response:
    node = _node(request)
    req = _read_request(request, None)
    partition, keys = await node.keys(req)
    return web.json_response(
        {"tenant": req.tenant, "agent": req.agent, "keys": keys},
        headers=_headers(node, partition),
    )


@answers_errors
async def batch_get(request: web.Request) -> web.Response:
    node = _node(request)
    body = json.loads(await _body(request, (JSON,)))
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise errors.InvalidRequest("invalid_batch", 'send {"keys": ["key", ...]}')
    if not 0 < len(keys) <= MAX_BATCH_KEYS:
        raise errors.InvalidRequest("invalid_batch", f"ask for 1 to {MAX_BATCH_KEYS} keys at once")
    req = _read_request(request, tuple(keys))
    addrs = [Address.parse(req.tenant, req.agent, k) for k in keys]
    partition, records = await node.read(req)
    items = [
        _record_json(addr, partition, record) if record is not None else "null"
        for addr, record in zip(addrs, records, strict=True)
    ]
    text = '{"items":[' + ",".join(items) + "]}"
    return web.Response(text=text, content_type=JSON, headers=_headers(node, partition))


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.InvalidRequest(f"invalid_{name}", f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise errors.InvalidRequest(f"invalid_{name}", f"{name} must be from {low} to {high}")
    return value


def _after(request: web.Request) -> int | None:
    raw = request.query.get("after")
    if raw is None:
        return None
    return Version.parse(raw, _node(request).settings.partitions, "after").offset


@answers_errors
async def history(request: web.Request) -> web.Response:
    node = _node(request)
    tenant, agent = _agent(request)
    after = _after(request)
    limit = _int_query(request, "limit", 100, 1, 1000)
    p, events, cursor = await node.history(
        tenant, agent, -1 if after is None else after, limit, _epoch(request)
    )
    return web.json_response(
        {"events": events, "next_after": f"{p}:{cursor}" if cursor >= 0 else None},
        headers=_headers(node, p),
    )


@answers_errors
async def watch(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    tenant, agent = _agent(request)
    after = _after(request)
    stream = node.watch(tenant, agent, after, _epoch(request))  # a redirect is raised here
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
    except errors.NodeError as exc:
        data = json.dumps({"error": exc.code, "message": exc.message})
        await response.write(f"event: error\ndata: {data}\n\n".encode())
    return response


def _search_answer(node: Node, applied: dict[int, int], found: list[Any]) -> web.Response:
    items = [
        {
            "tenant": hit.tenant,
            "agent": hit.agent,
            "key": hit.key,
            "version": f"{hit.partition}:{record.version}",
            "score": hit.score,
            "text": hit.text,
            "value": json.loads(record.value),
            "expires_at": record.expires_at,
        }
        for hit, record in found
    ]
    metric = node.semantic.config.metric if node.semantic is not None else "COSINE"
    body = {
        "items": items,
        "metric": metric,
        "epoch": node.view.epoch,
        "partitions": {str(p): offset for p, offset in applied.items()},
    }
    return web.json_response(body, headers=_headers(node))


async def _search_body(request: web.Request) -> Any:
    return json.loads(await _body(request, (JSON,)))


@answers_errors
async def search_agent(request: web.Request) -> web.Response:
    """An agent's own memory (session-local): one partition, one shard."""
    node = _node(request)
    tenant, agent = _agent(request)
    req = search_request(
        await _search_body(request), tenant, agent, node.settings.partitions,
        node.settings.consistency, _epoch(request),
    )  # fmt: skip
    applied, found = await node.search(req)
    return _search_answer(node, applied, found)


@answers_errors
async def search_tenant(request: web.Request) -> web.Response:
    """A tenant's memory (global) in the partitions this node serves; a router or
    the SDK asks every shard and merges."""
    node = _node(request)
    grant = authenticate(request)
    tenant = check_tenant(request.match_info["tenant"])
    grant.check("read", tenant)
    req = search_request(
        await _search_body(request), tenant, None, node.settings.partitions,
        node.settings.consistency, _epoch(request),
    )  # fmt: skip
    applied, found = await node.search(req)
    return _search_answer(node, applied, found)


@answers_errors
async def list_agents(request: web.Request) -> web.Response:
    node = _node(request)
    grant = authenticate(request)
    tenant = check_tenant(request.match_info["tenant"])
    grant.check("read", tenant)
    applied, agents = await node.agents(tenant, _epoch(request))
    body = {
        "tenant": tenant,
        "agents": agents,
        "epoch": node.view.epoch,
        "partitions": {str(p): offset for p, offset in applied.items()},
    }
    return web.json_response(body, headers=_headers(node))


@answers_errors
async def status(request: web.Request) -> web.Response:
    authenticate(request, data=False).check("status")
    return web.json_response(_node(request).status())


@answers_errors
async def directory(request: web.Request) -> web.Response:
    authenticate(request)  # any token of this cluster: the directory holds no tenant's data
    view = _node(request).view
    if view.directory is None:
        raise errors.NotFound(
            "this node serves every partition without a directory", code="no_directory"
        )
    return web.Response(text=view.directory.to_json(), content_type=JSON)


@answers_errors
async def livez(request: web.Request) -> web.Response:
    if not _node(request).alive():
        raise errors.Unavailable(
            "the thread that applies events has stopped", code="applier_stopped"
        )
    return web.json_response({"status": "alive", "version": __version__})


@answers_errors
async def readyz(request: web.Request) -> web.Response:
    node = _node(request)
    not_ready = node.readiness()
    if not_ready is not None:
        code, why = not_ready
        raise errors.Unavailable(why, code=code)
    return web.json_response({"status": "ready", "epoch": node.view.epoch})


@answers_errors
async def metrics(request: web.Request) -> web.Response:
    authenticate(request, data=False).check("metrics")
    return web.Response(
        body=_node(request).metrics.exposition(), content_type="text/plain", charset="utf-8"
    )


@answers_errors
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(_node(request).settings.max_value_bytes))


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
    "search": {"POST": search_agent},
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
        return json_error(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed on {request.path}; use {allowed}",
            {"Allow": allowed},
        )
    # Who asks, and whether the node takes it on, is settled before anything else
    # is read (the body included).
    try:
        grant = authenticate(request)
        tenant, agent = _agent(request)
        scope = data_scope(request.method)
        grant.check(scope, tenant, agent)
        admission = request.app[ADMISSION_KEY]
        if scope == "write":
            admission.write(tenant, grows=request.method != "DELETE")
        kind = _held_kind(request, rest)
        request[GRANT_KEY] = grant
        with tracing.span(
            f"node {request.method} {rest.split('/', 1)[0]}", request.headers,
            SpanKind.SERVER, tenant=tenant, agent=agent,
        ) as current:  # fmt: skip
            if kind is None:
                response = await handler(request)
            else:
                with admission.hold(kind, tenant, grant.subject):
                    response = await handler(request)
            if current is not None:
                tracing.note(
                    current, code=response.status,
                    version=response.headers.get("ETag", "").strip('"') or None,
                    applied=response.headers.get("X-Agentmem-Applied"),
                )  # fmt: skip
            return response
    except AuthError as exc:
        refused = refusal(exc)
    except InvalidNameError as exc:
        refused = json_error(400, "invalid_name", str(exc))
    except errors.OverLimit as exc:
        refused = error_response(exc)
    request.app[NODE_KEY].metrics.request("refused", refused.status)
    return refused


def _held_kind(request: web.Request, rest: str) -> str | None:
    """What a request holds on the node while it runs, if it is bounded per client."""
    if rest == "watch":
        return "watchers"
    if rest == "history":
        return "history"
    if rest == "search":
        return "waiting"  # a search may wait for versions (its consistency is in the body)
    query = request.query
    if query.get("consistency") == "strong" or "min_version" in query:
        return "waiting"
    return None


def create_app(
    node: Node, verifier: Verifier | None = None, quotas: Quotas | None = None
) -> web.Application:
    """The node's application; ``verifier`` None turns authentication off."""
    app = web.Application(client_max_size=node.settings.max_value_bytes + 64 * 1024)
    app[NODE_KEY] = node
    app[AUTH_KEY] = verifier
    admission = app[ADMISSION_KEY] = Admission(quotas or Quotas())
    store = node.store
    if admission.quotas.counts_storage and store is not None:
        run_while_serving(app, lambda: admission.count_storage(lambda: store.get().tenant_bytes()))
    if verifier is not None:
        follow_while_serving(app, verifier)
    app.router.add_route("*", "/v1/tenants/{tenant}/agents/{agent}/{rest:.*}", agent_route)
    app.router.add_get("/v1/tenants/{tenant}/agents", list_agents)
    app.router.add_post("/v1/tenants/{tenant}/search", search_tenant)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/directory", directory)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_route("*", "/{path:.*}", not_found)
    return app


async def not_found(request: web.Request) -> web.Response:
    return json_error(
        404, "not_found", f"no such endpoint: {request.method} {request.path}; see /openapi.json"
    )
