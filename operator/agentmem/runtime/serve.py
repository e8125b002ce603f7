"""The serve loop of the node and the router: logging, an aiohttp site, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web

log = logging.getLogger("agentmem")


async def serve_until_stopped(
    app: web.Application,
    listen: str,
    on_stop: Callable[[], None] | None = None,
    started: Callable[[], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until SIGTERM or SIGINT; finish requests, then return.

    ``on_stop`` runs first when the signal arrives (e.g. to end streams). With
    ``ssl_context`` the site speaks HTTPS.
    """
    # A request whose client went away is cancelled, and with it what it waits for.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10, handler_cancellation=True)
    await runner.setup()
    host, _, port = listen.rpartition(":")
    await web.TCPSite(runner, host or "0.0.0.0", int(port), ssl_context=ssl_context).start()
    if started is not None:
        started()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    if on_stop is not None:
        on_stop()
    await runner.cleanup()


def run_while_serving(app: web.Application, make: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run the coroutine ``make()`` as a task for as long as ``app`` serves."""

    async def running(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(make())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(running)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (its TLS and sockets cost far less than the
    standard loop's), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)


def run_service(main: Callable[[], Coroutine[Any, Any, None]], name: str) -> int:
    """Run a service's main coroutine with logging set up; 1 on a start-up failure."""
    logging.basicConfig(
        level=os.environ.get("AGENTMEM_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        _run(main())
    except (RuntimeError, ValueError, OSError) as exc:
        logging.getLogger(f"agentmem.{name}").error("%s", exc)
        return 1
    with contextlib.suppress(Exception):
        logging.shutdown()
    return 0
