"""``agentmem router``: forwards each request to the shard that owns the agent.

It follows the directory file (the mounted ConfigMap) like the memory nodes,
hashes ``tenant/agent`` to the partition, and proxies the request to the
owner's endpoint with its directory epoch. When a node answers 307 (its
directory is newer), the router rereads its directory and tries once more.
Responses, including watch streams, pass through unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from agentmem import __version__
from agentmem.directory import Directory, DirectoryError, partition_for
from agentmem.directory.names import InvalidNameError, check_agent, check_tenant

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
        self.directory: Directory | None = None
        self._mtime = 0.0
        self.session: aiohttp.ClientSession | None = None
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agentmem_router_requests_total", "Requests forwarded, by outcome.", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "agentmem_router_request_seconds", "Time to forward a request.", registry=self.registry
        )

    def reload(self, force: bool = False) -> bool:
        try:
            mtime = os.stat(self.config.directory_file).st_mtime
            if not force and mtime == self._mtime:
                return False
            with open(self.config.directory_file, encoding="utf-8") as f:
                directory = Directory.from_json(f.read())
        except (OSError, DirectoryError) as exc:
            if self.directory is None:
                log.warning("no usable directory yet: %s", exc)
            return False
        self.directory, self._mtime = directory, mtime
        return True

    async def follow(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.reload():
                assert self.directory is not None
                log.info("directory epoch %s", self.directory.epoch)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            tenant = check_tenant(request.match_info["tenant"])
            agent = check_agent(request.match_info["agent"])
        except InvalidNameError as exc:
            return _error(400, "invalid_name", str(exc))
        if self.directory is None:
            return _error(503, "no_directory", "the router has no directory yet; retry", "1")
        body = await request.read()
        for attempt in range(2):
            directory = self.directory
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
                self.reload(force=True)
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
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.Response(
        status=status,
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
        headers=headers,
    )


ROUTER_KEY = web.AppKey("router", Router)


def create_app(router: Router) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[ROUTER_KEY] = router

    async def livez(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "version": __version__})

    async def readyz(request: web.Request) -> web.Response:
        if router.directory is None:
            return _error(503, "no_directory", "the router has no directory yet")
        return web.json_response({"status": "ready", "epoch": router.directory.epoch})

    async def directory(request: web.Request) -> web.Response:
        if router.directory is None:
            return _error(503, "no_directory", "the router has no directory yet")
        return web.Response(text=router.directory.to_json(), content_type="application/json")

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
    router.reload(force=True)
    router.session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=config.timeout),
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
    )
    follow = asyncio.create_task(router.follow())
    runner = web.AppRunner(create_app(router), access_log=None, shutdown_timeout=10)
    await runner.setup()
    host, _, port = config.listen.rpartition(":")
    await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
    log.info("router listening on %s", config.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    follow.cancel()
    await runner.cleanup()
    await router.session.close()


def run(config: RouterConfig) -> int:
    logging.basicConfig(
        level=os.environ.get("AGENTMEM_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config))
    return 0
