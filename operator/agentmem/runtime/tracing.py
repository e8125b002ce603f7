"""Traces (OpenTelemetry): a request's spans from the SDK through the router and
the node to the log append and the apply, joined by W3C ``traceparent`` headers.

Off by default, and then free: nodes and routers make no span at all unless
``configure`` found an OTLP endpoint (``AGENTMEM_OTLP_ENDPOINT``, else the
standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``)
or was handed an exporter (tests). The SDK uses the application's own tracer
provider (OpenTelemetry's global one): an application that does not trace pays
for a no-op span per call.

Span attributes: ``agentmem.tenant``, ``agentmem.agent``, ``agentmem.partition``,
``agentmem.version`` (the version token, ``<partition>:<offset>``) and
``agentmem.outcome`` where they are known.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


class _Tracing:
    """This process's tracer, when tracing is configured."""

    tracer: trace.Tracer | None = None
    provider: Any = None


_STATE = _Tracing()


def endpoint_from_env() -> str | None:
    for name in (
        "AGENTMEM_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        value = os.environ.get(name)
        if value:
            if name == "OTEL_EXPORTER_OTLP_ENDPOINT" and not value.rstrip("/").endswith(
                "/v1/traces"
            ):
                value = value.rstrip("/") + "/v1/traces"
            return value
    return None


def configure(service: str, exporter: Any = None, endpoint: str | None = None) -> bool:
    """Trace this process as ``service``; False (and nothing changes) when neither an
    exporter nor an endpoint is given or configured."""
    endpoint = endpoint or endpoint_from_env()
    if exporter is None and endpoint is None:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:  # pragma: no cover - the image has them
        raise RuntimeError(
            f"tracing is configured but OpenTelemetry's SDK is missing ({exc}): "
            "pip install 'agentmem[tracing]'"
        ) from None
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _STATE.provider = provider
    _STATE.tracer = provider.get_tracer("agentmem")
    return True


def shutdown() -> None:
    """Flush and stop (at the end of the process)."""
    if _STATE.provider is not None:
        _STATE.provider.shutdown()
    _STATE.tracer = _STATE.provider = None


def enabled() -> bool:
    return _STATE.tracer is not None


@contextmanager
def span(
    name: str,
    headers: Mapping[str, str] | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    **attributes: Any,
) -> Iterator[trace.Span | None]:
    """A span of this process (None when tracing is off); ``headers``: an incoming
    request's, whose ``traceparent`` makes it a child of the caller's span."""
    tracer = _STATE.tracer
    if tracer is None:
        yield None
        return
    parent = _PROPAGATOR.extract(headers) if headers is not None else None
    token = otel_context.attach(parent) if parent is not None else None
    try:
        with tracer.start_as_current_span(
            name, kind=kind, attributes={f"agentmem.{k}": v for k, v in attributes.items()}
        ) as current:
            yield current
    finally:
        if token is not None:
            otel_context.detach(token)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` to outgoing headers (replacing one)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return
    headers.pop("traceparent", None)
    headers.pop("tracestate", None)
    _PROPAGATOR.inject(headers)


def note(current: trace.Span | None, **attributes: Any) -> None:
    """Attributes learnt during a span (no-op without one)."""
    if current is not None:
        for key, value in attributes.items():
            if value is not None:
                current.set_attribute(f"agentmem.{key}", value)


@contextmanager
def client_span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span of the SDK, from the application's tracer provider (OpenTelemetry's
    global one: a no-op span unless the application set one up)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        yield trace.INVALID_SPAN  # the application traces nothing: no span, no cost
        return
    tracer = trace.get_tracer("agentmem.client")
    with tracer.start_as_current_span(
        name, kind=trace.SpanKind.CLIENT,
        attributes={f"agentmem.{k}": v for k, v in attributes.items() if v is not None},
    ) as current:  # fmt: skip
        yield current
