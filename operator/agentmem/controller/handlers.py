"""kopf handlers, and the controller they start: watches, a cache, a work queue.

kopf watches the clusters; every event puts the cluster in the cache and in
the work queue. The cache's informers watch the operator's children (labelled
as managed by it); a change of one that the operator did not make itself (a
pod became ready, a hand edit, a deletion) queues its cluster. Worker threads
take clusters from the queue, each cluster by one thread at a time, and run
:meth:`Reconciler.reconcile`, which reads from the cache and sends only the
writes that change something. Every cluster is also queued every
``AGENTMEM_RESYNC_SECONDS`` (a safety net; an idle one costs no request).

No handler needs a finalizer: children are owned through ownerReferences and
removed by Kubernetes garbage collection, so deleting a cluster never waits for
the operator.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from agentmem.controller._kube import Informer, Kube, KubeError
from agentmem.controller.cache import ObjectCache
from agentmem.controller.metrics import METRICS
from agentmem.controller.queue import WorkQueue
from agentmem.controller.reconcile import EventType, Reconciler, now_rfc3339
from agentmem.controller.settings import Settings
from agentmem.model import naming
from agentmem.resources.monitoring import MONITORING_API

log = logging.getLogger(__name__)

#: The kinds the cache watches: every kind the operator applies or reads back.
WATCHED: tuple[tuple[str, str], ...] = (
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Pod"),
    (MONITORING_API, "ServiceMonitor"),
    (MONITORING_API, "PrometheusRule"),
)
#: Strimzi's topic API, in the versions tried (the cache keeps whichever is served).
KAFKA_TOPIC_APIS = ("kafka.strimzi.io/v1beta2", "kafka.strimzi.io/v1")
#: How long the workers wait for the informers' first lists at startup.
SYNC_TIMEOUT_SECONDS = 60.0


class Controller:
    """The cache, its informers, the work queue and the periodic resync."""

    def __init__(self, settings: Settings, kube: Kube | None = None) -> None:
        self.settings = settings
        self.cache = ObjectCache(on_change=self._changed)
        self.kube = kube or Kube()
        self.kube.cache = self.cache

        def emit(body: dict[str, Any], type_: EventType, reason: str, message: str) -> None:
            try:
                self.kube.post_event(body, type_, reason, message, now_rfc3339())
            except KubeError as exc:  # an event is best effort
                log.warning("could not record event %s: %s", reason, exc)

        self.reconciler = Reconciler(self.kube, emit, lag_seconds=settings.lag_seconds)
        self.queue = WorkQueue(self._reconcile, settings.workers)
        self.informers: list[Informer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agentmem-resync", daemon=True)

    # Lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the informers of every kind served, and the thread that starts the
        workers once they listed (raises KubeError, having started nothing, when the
        API server does not answer)."""
        self._watch_served()
        self._thread.start()

    def _watch_served(self) -> None:
        """Start an informer for every kind served that has none yet."""
        namespaces: tuple[str | None, ...] = self.settings.namespaces or (None,)
        kinds = [(v, k) for v, k in WATCHED if self.kube.served(v)]
        topics = next((v for v in KAFKA_TOPIC_APIS if self.kube.served(v)), None)
        if topics is not None:
            kinds.append((topics, "KafkaTopic"))
        watched = {(i.kind, i.namespace) for i in self.informers}
        for api_version, kind in kinds:
            for namespace in namespaces:
                if (kind, namespace) in watched:
                    continue
                informer = Informer(self.kube, self.cache, api_version, kind, namespace)
                informer.start()
                self.informers.append(informer)

    def _rediscover(self) -> None:
        """Look again for the APIs that were not served; watch those now served, and
        reconcile every cluster (their children may include the new kinds)."""
        gone = self.kube.forget_unserved()
        try:
            found = [v for v in gone if self.kube.served(v)]
        except KubeError as exc:
            log.warning("API discovery failed: %s; trying again later", exc)
            return
        if found:
            log.info("now served: %s; watching and reconciling with them", ", ".join(found))
            self._watch_served()
            for key in self.cache.keys(naming.KIND):
                self.queue.add(key)

    def stop(self) -> None:
        self._stop.set()
        for informer in self.informers:
            informer.stop()
        self.queue.stop()
        self._thread.join(timeout=10)

    def alive(self) -> bool:
        return (
            self._thread.is_alive()
            and self.queue.alive()
            and all(i.alive() for i in self.informers)
        )

    def _run(self) -> None:
        """Start the workers once the informers listed, then queue every cluster
        each resync period."""
        deadline = time.monotonic() + SYNC_TIMEOUT_SECONDS
        while not self._synced() and time.monotonic() < deadline and not self._stop.is_set():
            self._stop.wait(0.1)
        if not self._synced():
            log.warning("the watches have not listed everything yet; reconciling anyway")
        self.queue.start()
        resync, discover = self.settings.resync_seconds, self.settings.discovery_seconds
        next_resync, next_discovery = time.monotonic() + resync, time.monotonic() + discover
        while not self._stop.wait(max(0.0, min(next_resync, next_discovery) - time.monotonic())):
            now = time.monotonic()
            if now >= next_discovery:
                next_discovery = now + discover
                self._rediscover()
            if now >= next_resync:
                next_resync = now + resync
                METRICS.cached_objects.set(len(self.cache))
                for key in self.cache.keys(naming.KIND):
                    self.queue.add(key)

    def _synced(self) -> bool:
        return all(self.cache.serves(i.kind, i.namespace) for i in self.informers)

    # Events ------------------------------------------------------------------

    def cluster_event(self, event: dict[str, Any]) -> None:
        """A watch event of a cluster (from kopf): into the cache, and queued."""
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        if not meta.get("name"):
            return
        namespace = meta.get("namespace", "default")
        obj.setdefault("kind", naming.KIND)
        if event.get("type") == "DELETED":
            self.cache.remove(naming.KIND, namespace, meta["name"], notify=False)
            return
        if self.cache.put(obj, notify=False):  # not the echo of a status the operator wrote
            self.queue.add((namespace, meta["name"]))

    def _changed(self, obj: dict[str, Any]) -> None:
        """A child changed (not by the operator's own write): queue its cluster."""
        meta = obj.get("metadata") or {}
        cluster = (meta.get("labels") or {}).get(naming.LABEL_CLUSTER)
        if cluster and obj.get("kind") != naming.KIND:
            self.queue.add((meta.get("namespace", ""), cluster))

    def _reconcile(self, key: Hashable) -> float | None:
        namespace, name = cast(tuple[str, str], key)
        return self.reconciler.reconcile(namespace, name)


@dataclass
class _State:
    settings: Settings = field(default_factory=Settings.from_env)
    controller: Controller | None = None


STATE = _State()


def configure(settings: Settings) -> None:
    """Set the operator's settings before kopf starts (the runner calls this)."""
    STATE.settings = settings


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
    controller = Controller(config)
    try:
        controller.start()
    except KubeError as exc:
        message = f"cannot read the API server's discovery: {exc}"
        raise kopf.TemporaryError(message, delay=5) from exc
    STATE.controller = controller


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    if STATE.controller is not None:
        STATE.controller.stop()
        STATE.controller.kube.close()


@kopf.on.event(naming.GROUP, naming.VERSION, naming.PLURAL)
def cluster_event(event: kopf.RawEvent, **_: Any) -> None:
    if STATE.controller is not None:
        STATE.controller.cluster_event(dict(event))


@kopf.on.probe(id="reconciler")
def probe(**_: Any) -> str:
    controller = STATE.controller
    if controller is None or not controller.alive():
        raise kopf.PermanentError("the work queue, a watch or the resync thread is not running")
    return f"running; {controller.queue.waiting()} clusters queued"
