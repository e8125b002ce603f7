"""Traces: one write's spans from the SDK through the router and the node to the
log append and the apply, collected in process (node, router and SDK in one
process, the spans in memory), with the partition and the version token."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentmem.client import AsyncMemory
from agentmem.directory import Directory, ShardEntry, partition_for
from agentmem.node.http import create_app
from agentmem.router.proxy import Router, RouterConfig
from agentmem.router.proxy import create_app as router_app
from agentmem.runtime import tracing
from tests.net import free_port
from tests.unit.test_node_embedded import embedded_node, ready


def test_a_write_is_one_trace_from_the_sdk_to_the_apply(tmp_path: Path) -> None:
    collected = InMemorySpanExporter()
    assert tracing.configure("agentmem-test", exporter=collected)  # node and router
    application = TracerProvider()  # the application's own, as an app would set it up
    application.add_span_processor(SimpleSpanProcessor(collected))
    trace.set_tracer_provider(application)

    async def scenario() -> None:
        port = free_port()
        directory = tmp_path / "directory.json"
        shards = (ShardEntry(0, "s0", f"127.0.0.1:{port}"),)
        directory.write_text(Directory("c", "ns", "t", 1, (0, 0, 0, 0), shards).to_json())
        node = embedded_node(tmp_path, store=False, directory_file=str(directory))
        await node.start()
        server = TestServer(create_app(node), port=port)
        await server.start_server()
        await ready(node)
        router = Router(RouterConfig(str(directory), no_auth=True))
        router.follower.load(force=True)
        router.session = aiohttp.ClientSession()
        front = TestServer(router_app(router))
        await front.start_server()
        try:
            url = str(front.make_url("")).rstrip("/")
            async with AsyncMemory(url, tenant="acme", routing="router") as mem:
                written = await mem.put("bot", "plan", {"goal": "explore"})
            assert written.version
        finally:
            await front.close()
            await router.session.close()
            node.watchers.close()
            await server.close()
            await node.stop()
            tracing.shutdown()

    asyncio.run(scenario())
    spans = {s.name: s for s in collected.get_finished_spans()}
    chain = ["agentmem PUT keys", "router PUT", "node PUT keys", "log append", "apply"]
    assert set(chain) <= set(spans), sorted(spans)
    sdk, router, node, append, apply = (spans[n] for n in chain)
    assert len({s.context.trace_id for s in (sdk, router, node, append, apply)}) == 1
    # each hop a child of the one before; append and apply children of the node's span
    assert router.parent is not None and router.parent.span_id == sdk.context.span_id
    assert node.parent is not None and node.parent.span_id == router.context.span_id
    for step in (append, apply):
        assert step.parent is not None and step.parent.span_id == node.context.span_id
    p = partition_for("acme", "bot", 4)
    version = apply.attributes["agentmem.version"]
    assert version == append.attributes["agentmem.version"] == sdk.attributes["agentmem.version"]
    assert str(version).startswith(f"{p}:")
    assert apply.attributes["agentmem.partition"] == p
    assert apply.attributes["agentmem.outcome"] == "applied"
    assert node.attributes["agentmem.tenant"] == "acme" and node.attributes["agentmem.code"] == 200
    assert append.start_time < append.end_time <= apply.end_time


def test_tracing_is_off_unless_configured(monkeypatch: object) -> None:
    for name in ("AGENTMEM_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_ENDPOINT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)  # type: ignore[attr-defined]
    assert not tracing.configure("agentmem-node")
    assert not tracing.enabled()
    with tracing.span("anything") as current:
        assert current is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")  # type: ignore[attr-defined]
    assert tracing.endpoint_from_env() == "http://collector:4318/v1/traces"
