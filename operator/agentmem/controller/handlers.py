"""kopf handlers. They are thin: every event ends in :meth:`Reconciler.reconcile`.

No handler needs a finalizer: children are owned through ownerReferences and
removed by Kubernetes garbage collection, so deleting a cluster never waits for
the operator (the delete handler is optional and only logs). For the same
reason the periodic resync is a plain thread, not a kopf timer or daemon
(those would add a finalizer).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from agentmem.controller._kube import Kube, KubeError
from agentmem.controller.reconcile import EventType, Reconciler, now_rfc3339
from agentmem.controller.settings import Settings
from agentmem.model import naming

log = logging.getLogger(__name__)


class Resync:
    """Reconciles every cluster periodically, at once when kicked, and again soon
    when a reconcile asks for it.

    Kicks come from changes of owned StatefulSets (pod readiness), so status
    follows the pods without waiting for the next period. A cluster that is
    rebalancing or not yet ready is looked at again within seconds (its nodes
    are asked how far they are), not at the next period.
    """

    def __init__(self, reconciler: Reconciler, settings: Settings) -> None:
        self.reconciler = reconciler
        self.settings = settings
        self._kicked: set[tuple[str, str]] = set()
        self._due: dict[tuple[str, str], float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentmem-resync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def kick(self, namespace: str, name: str) -> None:
        self._kicked.add((namespace, name))
        self._wake.set()

    def _all(self) -> set[tuple[str, str]]:
        kube = self.reconciler.kube
        namespaces: tuple[str | None, ...] = self.settings.namespaces or (None,)
        found = set()
        for ns in namespaces:
            for obj in kube.list(naming.API_VERSION, naming.KIND, ns):
                found.add((obj["metadata"]["namespace"], obj["metadata"]["name"]))
        return found

    def _run(self) -> None:
        next_periodic = time.monotonic() + self.settings.resync_seconds
        while not self._stop.is_set():
            now = time.monotonic()
            wake_at = min([next_periodic, *self._due.values()])
            self._wake.wait(timeout=max(0.0, wake_at - now))
            self._wake.clear()
            if self._stop.is_set():
                return
            now = time.monotonic()
            keys, self._kicked = self._kicked, set()
            keys |= {key for key, at in self._due.items() if at <= now}
            try:
                if now >= next_periodic:
                    keys |= self._all()
                    next_periodic = now + self.settings.resync_seconds
                for namespace, name in sorted(keys):
                    self._due.pop((namespace, name), None)
                    again = self.reconciler.reconcile(namespace, name)
                    if again is not None:
                        self._due[(namespace, name)] = time.monotonic() + again
            except Exception:  # keep resyncing whatever one reconcile did
                log.exception("resync failed; retrying in %ss", self.settings.resync_seconds)


@dataclass
class _State:
    settings: Settings = field(default_factory=Settings.from_env)
    reconciler: Reconciler | None = None
    resync: Resync | None = None


STATE = _State()


def configure(settings: Settings) -> None:
    """Set the operator's settings before kopf starts (the runner calls this)."""
    STATE.settings = settings


def _reconciler() -> Reconciler:
    if STATE.reconciler is None:  # pragma: no cover - startup always runs first
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    return STATE.reconciler


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Every setting of the operator, in one place."""
    config = STATE.settings
    settings.persistence.finalizer = f"{naming.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=naming.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=naming.GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = config.workers
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    kube = Kube()

    def emit(body: dict[str, Any], type_: EventType, reason: str, message: str) -> None:
        try:
            kube.post_event(body, type_, reason, message, now_rfc3339())
        except KubeError as exc:  # an event is best effort
            log.warning("could not record event %s: %s", reason, exc)

    STATE.reconciler = Reconciler(kube, emit)
    STATE.resync = Resync(STATE.reconciler, config)
    STATE.resync.start()


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    if STATE.resync is not None:
        STATE.resync.stop()
    if STATE.reconciler is not None:
        STATE.reconciler.kube.close()


@kopf.on.create(naming.GROUP, naming.VERSION, naming.PLURAL)
@kopf.on.update(naming.GROUP, naming.VERSION, naming.PLURAL)
@kopf.on.resume(naming.GROUP, naming.VERSION, naming.PLURAL)
def reconcile(name: str, namespace: str | None, **_: Any) -> None:
    try:
        _reconciler().reconcile(namespace or "default", name)
    except KubeError as exc:
        raise kopf.TemporaryError(f"{exc}; retrying", delay=5) from exc


@kopf.on.delete(naming.GROUP, naming.VERSION, naming.PLURAL, optional=True)
def deleted(name: str, namespace: str | None, **_: Any) -> None:
    log.info("cluster %s/%s deleted; garbage collection removes its children", namespace, name)


@kopf.on.event("apps", "v1", "statefulsets", labels={naming.LABEL_MANAGED_BY: naming.FIELD_MANAGER})
def statefulset_changed(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    cluster = labels.get(naming.LABEL_CLUSTER)
    if cluster and namespace and STATE.resync is not None:
        STATE.resync.kick(namespace, cluster)


@kopf.on.probe(id="reconciler")
def probe(**_: Any) -> str:
    alive = STATE.resync is not None and STATE.resync._thread.is_alive()
    if not alive:
        raise kopf.PermanentError("the resync thread is not running")
    return "running"
