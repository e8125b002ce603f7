"""``agentmem router``: forwards each request to the shard that owns the agent.

It follows the directory file (the mounted ConfigMap) like the memory nodes,
hashes ``tenant/agent`` to the partition, and proxies the request to the
owner's endpoint with its directory epoch. When a node answers 307 (its
directory is newer), the router rereads its directory and tries once more.
Responses, including watch streams, pass through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from agentmem import __version__
from agentmem.directory import partition_for
from agentmem.directory.names import InvalidNameError, check_agent, check_tenant
from agentmem.runtime import DirectoryFollower, json_error, run_service, serve_until_stopped

log = logging.getLogger("agentmem.router")

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


class Router:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.follower = DirectoryFollower(config.directory_file)
        self.session: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agentmem_router_requests_total", "Requests forwarded, by outcome.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "agentmem_router_request_seconds", "Time to forward a request.", registry=self.registry
        )

    async def forward(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            tenant = check_tenant(request.match_info["tenant"])
            agent = check_agent(request.match_info["agent"])
        except InvalidNameError as exc:
            return _error(400, "invalid_name", str(exc))
        if self.follower.directory is None:
            return _error(503, "no_directory", "the router has no directory yet; retry", "1")
        body = await request.read()
        for attempt in range(2):
            directory = self.follower.directory
            owner = directory.owner(partition_for(tenant, agent, directory.partitions))
            response = await self._send(request, owner.endpoint, body, directory.epoch)
            if response is None:
                self.requests.labels("unreachable").inc()
                return _error(
                    503, "shard_unreachable",
                    f"shard {owner.id} ({owner.endpoint}) did not answer; retry", "1",
                )  # fmt: skip
            if response.status == 307 and attempt == 0:
                response.release()
                self.follower.load(force=True)
                continue
            self.requests.labels("forwarded").inc()
            self.latency.observe(time.perf_counter() - started)
            return await _relay(request, response)
        return _error(503, "moving", "the agent's shard is moving; retry", "1")  # pragma: no cover

    async def _send(
        self, request: web.Request, endpoint: str, body: bytes, epoch: int
    ) -> aiohttp.ClientResponse | None:
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Agentmem-Epoch"] = str(epoch)
        try:
            return await self.session.request(
                request.method, f"http://{endpoint}{request.path_qs}", headers=headers,
                data=body or None, allow_redirects=False,
            )  # fmt: skip
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("forwarding to %s failed: %s", endpoint, exc)
            return None


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
        current = router.follower.directory
        if current is None:
            return _error(503, "no_directory", "the router has no directory yet")
        return web.Response(text=current.to_json(), content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(router.registry), content_type="text/plain", charset="utf-8"
        )

    app.router.add_route("*", "/v1/tenants/{tenant}/agents/{agent}/{rest:.*}", router.forward)
    app.router.add_get("/v1/directory", directory)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(config: RouterConfig) -> None:
    router = Router(config)
    try:
        router.follower.load(force=True)
    except RuntimeError as exc:
        log.warning("no usable directory yet: %s", exc)
    router.session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=config.timeout),
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
    )
    follow = asyncio.create_task(router.follower.follow())
    try:
        await serve_until_stopped(
            create_app(router),
            config.listen,
            started=lambda: log.info("router listening on %s", config.listen),
        )
    finally:
        follow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follow
        await router.session.close()


def run(config: RouterConfig) -> int:
    return run_service(lambda: serve(config), "router")
