"""``agentmem router``: forwards each request to the shard that owns the agent.

It follows the directory file (the mounted ConfigMap) like the memory nodes,
hashes ``tenant/agent`` to the partition, and proxies the request to the
owner's endpoint with its directory epoch. While partitions move, the router
absorbs what a client should not see:

- a node that answers 307 (its directory is newer) names the owner and the
  epoch: the router rereads its file and, if that is still older, sends the
  request to the owner the node named, at the node's epoch;
- a node that answers 421 (the router's directory is newer than the node's:
  a new owner whose kubelet has not refreshed its copy yet) is skipped for the
  partition's previous owner, which serves it during its hand-off;
- a node that cannot be connected to (a pod being replaced), or a 421 with no
  previous owner, is tried again, with the directory reread, after a short
  pause, for about two seconds;
- a request that reached a node which then failed to answer is retried only
  when that is safe (a GET, or a write with an X-Request-Id).

A redirect is never passed on (its address is internal to the cluster): what
could not be forwarded is a 503 with Retry-After. Other answers, watch streams
included, pass through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from agentmem import __version__
from agentmem.directory import Directory, partition_for
from agentmem.directory.names import InvalidNameError, check_agent, check_tenant
from agentmem.runtime import (
    DirectoryFollower,
    json_error,
    run_service,
    serve_until_stopped,
    tracing,
)
from agentmem.runtime.auth import (
    ANONYMOUS,
    AuthError,
    Grant,
    data_scope,
    follow_while_serving,
    load_verifier,
    refusal,
)
from agentmem.runtime.search import merge, missing_partitions, shard_requests
from agentmem.runtime.serve import run_while_serving
from agentmem.runtime.tls import Reloading, TlsFiles, serve_tls

log = logging.getLogger("agentmem.router")

#: Pauses before the next try when the owner is changing or not reachable.
RETRY_DELAYS = (0.1, 0.2, 0.4, 0.6, 0.8)

#: Headers that belong to one connection, not to the request.
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip


@dataclass(frozen=True)
class RouterConfig:
    directory_file: str
    listen: str = "0.0.0.0:7070"
    timeout: float = 30.0
    #: The trusted issuers; None: no authentication.
    auth_file: str | None = None
    no_auth: bool = False
    #: HTTPS for clients with this certificate; with the cluster CA too, HTTPS to the
    #: nodes, checked against the CA and presenting the same certificate (mutual TLS).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    @property
    def tls(self) -> TlsFiles | None:
        if not self.tls_cert or not self.tls_key:
            return None
        return TlsFiles(self.tls_cert, self.tls_key, self.tls_ca or None)


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.follower = DirectoryFollower(config.directory_file)
        self.verifier = load_verifier(config.auth_file, "agentmem router", config.no_auth)
        #: How the nodes are reached: https with the cluster CA, else http.
        self.scheme = "https" if config.tls is not None and config.tls.ca else "http"
        self.upstream: Reloading | None = (
            Reloading(config.tls, server=False) if self.scheme == "https" and config.tls else None
        )
        self.session: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agentmem_router_requests_total", "Requests forwarded, by outcome.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "agentmem_router_request_seconds", "Time to forward a request.", registry=self.registry
        )

    def authenticate(self, request: web.Request) -> Grant:
        """The request's grant (the node checks the same token again: it trusts no hop)."""
        if self.verifier is None:
            return ANONYMOUS
        return self.verifier.authenticate(request.headers.get("Authorization"))

    async def forward(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            grant = self.authenticate(request)
            tenant = check_tenant(request.match_info["tenant"])
            agent = check_agent(request.match_info["agent"])
            grant.check(data_scope(request.method), tenant, agent)
        except AuthError as exc:
            return refusal(exc)
        except InvalidNameError as exc:
            return _error(400, "invalid_name", str(exc))
        if self.follower.directory is None:
            return _error(503, "no_directory", "the router has no directory yet; retry", "1")
        with tracing.span(
            f"router {request.method}", request.headers, SpanKind.SERVER, tenant=tenant,
            agent=agent,
        ) as current:  # fmt: skip
            response = await self._forward(request, tenant, agent, started)
            tracing.note(current, code=response.status)
            return response

    async def _forward(
        self, request: web.Request, tenant: str, agent: str, started: float
    ) -> web.StreamResponse:
        body = await request.read()
        retry_safe = request.method in ("GET", "HEAD") or "X-Request-Id" in request.headers
        named: tuple[str, int] | None = None  # (endpoint, epoch) a node redirected us to
        stale: set[str] = set()  # endpoints that answered 421 for this request
        problem = ("moving", "the agent's shard is moving")
        for attempt in range(len(RETRY_DELAYS) + 1):
            if attempt:
                await asyncio.sleep(RETRY_DELAYS[attempt - 1])
                self.follower.load()
            directory = self.follower.directory
            assert directory is not None
            owner = directory.owner(partition_for(tenant, agent, directory.partitions))
            endpoint, epoch = owner.endpoint, directory.epoch
            if named is not None and named[1] > epoch:
                endpoint, epoch = named
            elif endpoint in stale and self.follower.previous is not None:
                previous = self.follower.previous
                before = previous.owner(partition_for(tenant, agent, previous.partitions))
                if before.endpoint != endpoint:
                    endpoint, epoch = before.endpoint, previous.epoch
            try:
                response = await self._send(request, endpoint, body, epoch)
            except aiohttp.ClientConnectorError as exc:  # never sent: safe to try again
                problem = ("shard_unreachable", f"shard {owner.id} ({endpoint}) is not reachable")
                log.info("connecting to %s failed: %s", endpoint, exc)
                continue
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                problem = ("shard_failed", f"shard {owner.id} ({endpoint}) did not answer: {exc}")
                log.warning("forwarding to %s failed: %s", endpoint, exc)
                if retry_safe:
                    continue
                self.requests.labels("failed").inc()
                return _error(
                    503, "shard_failed",
                    f"{problem[1]}; the write may or may not have been applied: retry it with "
                    "an X-Request-Id (writes with one are retried for you)", "1",
                )  # fmt: skip
            if response.status == 307:
                named = await _redirect_target(response)
                problem = (
                    "moving",
                    f"the agent's partition is moving to {named[0] if named else '?'}",
                )
                self.follower.load()
                continue
            if response.status == 421:
                response.release()
                stale.add(endpoint)
                problem = ("stale_node", f"shard {owner.id} has not caught up with epoch {epoch}")
                continue
            self.requests.labels("forwarded").inc()
            self.latency.observe(time.perf_counter() - started)
            return await _relay(request, response)
        self.requests.labels(problem[0]).inc()
        return _error(503, problem[0], f"{problem[1]}; retry in a moment", "1")

    def _tenant_wide(
        self, request: web.Request
    ) -> tuple[str, Directory, dict[str, str]] | web.Response:
        """A request across every shard of a tenant: (tenant, directory, the headers to
        send each shard), or the refusal to answer with."""
        try:
            grant = self.authenticate(request)
            tenant = check_tenant(request.match_info["tenant"])
            grant.check("read", tenant)
        except AuthError as exc:
            return refusal(exc)
        except InvalidNameError as exc:
            return _error(400, "invalid_name", str(exc))
        directory = self.follower.directory
        if directory is None:
            return _error(503, "no_directory", "the router has no directory yet; retry", "1")
        headers = {"X-Agentmem-Epoch": str(directory.epoch)}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        return tenant, directory, headers

    async def agents(self, request: web.Request) -> web.Response:
        """The tenant's agents from every shard, united.

        ``partitions`` holds the applied offset of every partition answered for;
        ``missing`` the partitions whose shard did not answer (the answer is
        then partial: a client decides whether that will do).
        """
        asked = self._tenant_wide(request)
        if isinstance(asked, web.Response):
            return asked
        tenant, directory, headers = asked
        assert self.session is not None
        session = self.session
        shards = sorted(directory.assigned_shards())

        async def ask(shard: int) -> dict[str, Any]:
            endpoint = directory.owner(directory.partitions_of(shard)[0]).endpoint
            async with session.get(
                f"{self.scheme}://{endpoint}/v1/tenants/{tenant}/agents", headers=headers
            ) as response:
                if response.status != 200:
                    raise aiohttp.ClientError(f"{endpoint} answered {response.status}")
                data: dict[str, Any] = await response.json()
                return data

        answers = await asyncio.gather(*(ask(s) for s in shards), return_exceptions=True)
        agents: set[str] = set()
        partitions: dict[str, int] = {}
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BaseException):
                log.info("listing agents of shard %s failed: %s", shard, answer)
                continue
            agents.update(answer.get("agents", []))
            owned = set(directory.partitions_of(shard))
            partitions.update(
                {p: int(o) for p, o in answer.get("partitions", {}).items() if int(p) in owned}
            )
        missing = [p for p in range(directory.partitions) if str(p) not in partitions]
        return web.json_response(
            {
                "tenant": tenant,
                "agents": sorted(agents),
                "epoch": directory.epoch,
                "partitions": partitions,
                "missing": missing,
            }
        )

    async def search(self, request: web.Request) -> web.Response:
        """A tenant-wide search: every shard asked for its partitions, the answers
        merged (agentmem.runtime.search); ``missing`` names partitions that did not
        answer."""
        asked = self._tenant_wide(request)
        if isinstance(asked, web.Response):
            return asked
        tenant, directory, headers = asked
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return _error(400, "invalid_json", f"the body is not valid JSON: {exc}")
        if not isinstance(body, dict):
            return _error(400, "invalid_search", 'send {"query": "...", "k": 10}')
        k = body.get("k", 10)
        try:
            asks = shard_requests(body, directory)
        except TypeError:
            return _error(400, "invalid_search", "partitions is a list of partition numbers")
        assert self.session is not None
        session = self.session

        async def ask(shard: int) -> tuple[int, Any]:
            endpoint = directory.owner(asks[shard]["partitions"][0]).endpoint
            url = f"{self.scheme}://{endpoint}/v1/tenants/{tenant}/search"
            async with session.post(url, json=asks[shard], headers=headers) as response:
                return response.status, await response.json(content_type=None)

        results = await asyncio.gather(*(ask(s) for s in asks), return_exceptions=True)
        answers, answered, failures = [], [], []
        for shard, result in zip(asks, results, strict=True):
            if isinstance(result, BaseException):
                failures.append(f"shard {shard}: {result}")
                continue
            status, data = result
            if 400 <= status < 500 and status != 429:
                return web.json_response(data, status=status)  # the request itself is wrong
            if status != 200:
                failures.append(f"shard {shard}: {status} {data.get('error', '')}")
                continue
            answers.append(data)
            answered.append(shard)
        if not answers and asks:
            log.info("search failed on every shard: %s", failures)
            return _error(
                503, "search_failed", f"no shard answered ({'; '.join(failures)}); retry", "1"
            )
        metric = answers[0].get("metric", "COSINE") if answers else "COSINE"
        partitions: dict[str, int] = {}
        for data in answers:
            partitions.update(data.get("partitions", {}))
        return web.json_response(
            {
                "items": merge(answers, k if isinstance(k, int) else 10, metric),
                "metric": metric,
                "epoch": directory.epoch,
                "partitions": partitions,
                "missing": missing_partitions(asks, answered),
                "errors": failures,
            }
        )

    async def _send(
        self, request: web.Request, endpoint: str, body: bytes, epoch: int
    ) -> aiohttp.ClientResponse:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Agentmem-Epoch"] = str(epoch)
        if tracing.enabled():
            tracing.inject(headers)  # the node's span is a child of the router's
        return await self.session.request(
            request.method, f"{self.scheme}://{endpoint}{request.path_qs}", headers=headers,
            data=body or None, allow_redirects=False,
        )  # fmt: skip


async def _redirect_target(response: aiohttp.ClientResponse) -> tuple[str, int] | None:
    """The owner and epoch a node's 307 names."""
    try:
        info = await response.json()
        return str(info["owner"]["endpoint"]), int(info["epoch"])
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        return None
    finally:
        response.release()


async def _relay(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
    if upstream.content_type == "text/event-stream":
        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (ConnectionResetError, aiohttp.ClientError):
            pass
        finally:
            upstream.release()
        return response
    data = await upstream.read()
    upstream.release()
    return web.Response(status=upstream.status, body=data, headers=headers)


def _answers_json(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler whose unexpected failure is a JSON 500 (never a plain-text traceback page)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (ConnectionResetError, web.HTTPException, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _error(
                500, "internal",
                "the router failed to answer this request (its log says why); retry, and "
                "report it if it persists",
            )  # fmt: skip

    return wrapped


def _error(status: int, code: str, message: str, retry_after: str | None = None) -> web.Response:
    return json_error(status, code, message, {"Retry-After": retry_after} if retry_after else None)


ROUTER_KEY = web.AppKey("router", Router)


def create_app(router: Router) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[ROUTER_KEY] = router

    async def livez(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "version": __version__})

    async def readyz(request: web.Request) -> web.Response:
        current = router.follower.directory
        if current is None:
            return _error(503, "no_directory", "the router has no directory yet")
        return web.json_response({"status": "ready", "epoch": current.epoch})

    async def directory(request: web.Request) -> web.Response:
        try:
            router.authenticate(request)
        except AuthError as exc:
            return refusal(exc)
        current = router.follower.directory
        if current is None:
            return _error(503, "no_directory", "the router has no directory yet")
        return web.Response(text=current.to_json(), content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        try:
            router.authenticate(request).check("metrics")
        except AuthError as exc:
            return refusal(exc)
        return web.Response(
            body=generate_latest(router.registry), content_type="text/plain", charset="utf-8"
        )

    app.router.add_route(
        "*", "/v1/tenants/{tenant}/agents/{agent}/{rest:.*}", _answers_json(router.forward)
    )
    app.router.add_get("/v1/tenants/{tenant}/agents", _answers_json(router.agents))
    app.router.add_post("/v1/tenants/{tenant}/search", _answers_json(router.search))
    app.router.add_get("/v1/directory", directory)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if router.verifier is not None:
        follow_while_serving(app, router.verifier)
    return app


async def serve(config: RouterConfig) -> None:
    router = Router(config)
    if tracing.configure("agentmem-router"):
        log.info("tracing: spans are exported over OTLP to %s", tracing.endpoint_from_env())
    try:
        router.follower.load(force=True)
    except RuntimeError as exc:
        log.warning("no usable directory yet: %s", exc)
    router.session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=config.timeout),
        # No DNS cache: a replaced pod's new address is found at once.
        connector=aiohttp.TCPConnector(
            limit=0, keepalive_timeout=30, use_dns_cache=False,
            ssl=router.upstream.context if router.upstream is not None else True,
        ),
    )  # fmt: skip
    follow = asyncio.create_task(router.follower.follow())
    app = create_app(router)
    context = serve_tls(app, config.tls, mutual=False)
    if router.upstream is not None:
        run_while_serving(app, router.upstream.follow)
    try:
        await serve_until_stopped(
            app,
            config.listen,
            started=lambda: log.info(
                "router listening on %s (%s)", config.listen, "https" if context else "http"
            ),
            ssl_context=context,
        )
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
        await router.session.close()
        tracing.shutdown()


def run(config: RouterConfig) -> int:
    return run_service(lambda: serve(config), "router")
