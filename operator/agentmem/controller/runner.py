"""Start the operator: settings, metrics endpoint, then kopf."""

from __future__ import annotations

from collections.abc import Sequence


def run(namespaces: Sequence[str], liveness: str, metrics_port: int, verbose: bool) -> int:
    import kopf
    from prometheus_client import start_http_server

    from agentmem.controller import handlers
    from agentmem.controller.settings import Settings

    handlers.configure(Settings.from_env(tuple(namespaces)))
    if metrics_port:
        start_http_server(metrics_port)
    kopf.configure(verbose=verbose)
    kopf.run(
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness or None,
        standalone=True,
    )
    return 0
