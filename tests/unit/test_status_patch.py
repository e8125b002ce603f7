"""The operator patches a cluster's status only when it changes: an idle
cluster's resync sends no status request."""

from __future__ import annotations

from typing import Any

from agentmem.controller.reconcile import Reconciler
from agentmem.model.status import AgentMemoryClusterStatus


class RecordingKube:
    def __init__(self) -> None:
        self.patches: list[dict[str, Any]] = []

    def patch_status(self, api: str, kind: str, ns: str, name: str, data: dict[str, Any]) -> None:
        self.patches.append(data)


def test_an_unchanged_status_is_not_patched_again() -> None:
    kube = RecordingKube()
    events: list[str] = []
    reconciler = Reconciler(kube, lambda body, t, reason, message: events.append(reason))  # type: ignore[arg-type]
    status = AgentMemoryClusterStatus(
        observed_generation=3, phase="Ready", shards=3, ready_shards=3
    )
    body: dict[str, Any] = {"metadata": {"namespace": "ns", "name": "demo"}, "status": {}}
    reconciler._patch(body, status, [])
    assert len(kube.patches) == 1
    body["status"] = kube.patches[0]  # what the API server now holds
    reconciler._patch(body, status, [])
    assert len(kube.patches) == 1, "the same status was patched again"
    changed = status.model_copy(update={"ready_shards": 2})
    reconciler._patch(body, changed, [])
    assert len(kube.patches) == 2 and kube.patches[1]["readyShards"] == 2
