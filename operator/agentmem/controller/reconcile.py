"""One reconcile of one AgentMemoryCluster: build, adopt, apply, advance, prune, report.

Every step is safe to repeat. The rebalance plan is checkpointed in status
before the step that acts on it, and the directory ConfigMap's epoch tells
whether a step's commit already happened, so an operator killed at any point
finishes the same plan without applying a move twice. A shard's StatefulSet is
deleted only once the directory assigns it no partition.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from agentmem.controller import conditions as cond
from agentmem.controller import rebalance as rb
from agentmem.controller._kube import Kube, KubeError, owned_by, owner_reference
from agentmem.controller.auth import ClusterAuth
from agentmem.controller.certs import ClusterCerts
from agentmem.controller.metrics import METRICS
from agentmem.controller.nodes import (
    Credentials,
    HttpProbe,
    PodView,
    Probe,
    epoch_reasons,
    event_lag,
    warm_reasons,
)
from agentmem.directory import Directory, DirectoryError, Move
from agentmem.eventlog.kafka import KafkaSettings, TopicMismatchError, TopicSpec, ensure_topic
from agentmem.model import AgentMemoryCluster, InvalidClusterError, RebalanceStatus, naming
from agentmem.model.status import AgentMemoryClusterStatus, Condition
from agentmem.resources import (
    children,
    directory_configmap,
    directory_from_configmap,
    initial_directory,
    shard_entries,
    topic_config,
)
from agentmem.resources.monitoring import MONITORING_API

log = logging.getLogger(__name__)

#: How long a topic found right is not checked again.
TOPIC_RECHECK_SECONDS = 300.0
#: A rebalancing cluster is reconciled again this soon: its nodes are asked how
#: far they are, which no watch tells.
BUSY_REQUEUE_SECONDS = 2.0
#: A cluster not ready: again this soon, for what no watch tells either (a topic
#: checked through Kafka); its pods becoming ready are seen at once through the
#: StatefulSets' watch.
NOT_READY_REQUEUE_SECONDS = 10.0

EventType = Literal["Normal", "Warning"]
#: Posts a Kubernetes Event about the cluster: (body, type, reason, message).
Emit = Callable[[dict[str, Any], EventType, str, str], None]

#: Kinds the operator creates and prunes, with their API versions.
_PRUNABLE: tuple[tuple[str, str], ...] = (
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    (MONITORING_API, "ServiceMonitor"),
    (MONITORING_API, "PrometheusRule"),
)


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class Observation:
    """What one reconcile learned, turned into conditions at the end."""

    ready_shards: int = 0
    shards: int = 0
    degraded: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    event_lag: str | None = None  # None: not asked this time (status keeps its value)


class Reconciler:
    """Reconciles clusters (the work queue gives a cluster to one thread at a time)."""

    def __init__(
        self,
        kube: Kube,
        emit: Emit,
        clock: Callable[[], str] = now_rfc3339,
        probe: Probe | None = None,
        lag_seconds: float = 0.0,
    ) -> None:
        self.kube = kube
        self.emit = emit
        self.clock = clock
        self.probe = probe or HttpProbe()
        self.lag_seconds = lag_seconds  # 0: status.eventLag is not kept
        self._lag_asked: dict[tuple[str, str], float] = {}  # when a cluster's nodes were asked
        self.auth = ClusterAuth(kube)
        self.certs = ClusterCerts(kube)
        self._topics_ok: dict[tuple[str, str, int], float] = {}

    def reconcile(self, namespace: str, name: str) -> float | None:
        """Reconcile one cluster; the seconds after which to look again, if soon."""
        started = time.monotonic()
        result = "error"
        try:
            again = self._reconcile(namespace, name)
            result = "ok"
            return again
        finally:
            METRICS.reconciles.labels(result=result).inc()
            METRICS.reconcile_seconds.observe(time.monotonic() - started)

    # The steps ---------------------------------------------------------------

    def _reconcile(self, namespace: str, name: str) -> float | None:
        """One reconcile; the seconds after which to look again (None: when it changes)."""
        body = self.kube.get(naming.API_VERSION, naming.KIND, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._lag_asked.pop((namespace, name), None)
            return None
        generation = int(body["metadata"].get("generation", 0))
        try:
            cluster = AgentMemoryCluster.from_api(body)
        except InvalidClusterError as exc:
            self._report_invalid(body, generation, str(exc))
            return None
        if cluster.metadata.annotations.get(naming.PAUSED_ANNOTATION, "").lower() == "true":
            self._report_paused(body, cluster)
            return None

        seen = Observation()
        directory = self._read_directory(cluster, seen)
        if directory is None:
            self._write_status(body, cluster, seen, cluster.status.rebalance, None)
            return None
        rebalance = cluster.status.rebalance
        if rebalance is None and rb.needs_rebalance(cluster, directory):
            rebalance = rb.plan(cluster, directory, self.clock())
            self._checkpoint(body, rebalance)
            self.emit(
                body,
                "Normal",
                "RebalancePlanned",
                f"{rebalance.from_shards} -> {rebalance.target_shards} shards: "
                f"{len(rebalance.moves)} partition moves in {rebalance.steps} steps",
            )
        existing = self._existing_shards(directory, rebalance)
        if cluster.spec.auth.enabled:
            self.auth.publish(body, cluster)  # before the pods that mount it
        if cluster.spec.store is not None:
            self.auth.ensure_audit_key(body, cluster)
        if cluster.spec.tls.enabled:
            self.certs.ensure(body, cluster)
        self._apply_children(body, cluster, directory, existing, seen)
        self._check_topic(cluster, seen)
        if rebalance is not None:
            rebalance, directory = self._advance(body, cluster, rebalance, directory, seen)
        existing = self._existing_shards(directory, rebalance)
        self._prune(cluster, directory, existing)
        self._observe_shards(cluster, existing, seen)
        self._observe_lag(cluster, seen)
        self._write_status(body, cluster, seen, rebalance, directory)
        if rebalance is not None:
            return BUSY_REQUEUE_SECONDS
        return NOT_READY_REQUEUE_SECONDS if seen.ready_shards < seen.shards else None

    def _read_directory(self, cluster: AgentMemoryCluster, seen: Observation) -> Directory | None:
        """The directory to work from: the ConfigMap, or the committed epoch in status.

        Status holds the committed table and is written before the ConfigMap, so
        a deleted or damaged ConfigMap, or one older than status, comes back with
        the same owners at the same epoch (the higher epoch wins).
        """
        cm = self.kube.get(
            "v1", "ConfigMap", cluster.namespace, naming.directory_name(cluster.name)
        )
        saved = self._directory_from_status(cluster)
        if cm is None:
            if saved is not None:
                log.warning("directory ConfigMap of %s missing: restored at epoch %s",
                            cluster.name, saved.epoch)  # fmt: skip
                return saved
            directory = initial_directory(cluster)
            if cluster.status.directory_epoch >= directory.epoch:
                # Status names an epoch but not its table (written by an older
                # operator): start above every epoch clients may hold.
                directory = dataclasses.replace(directory, epoch=cluster.status.directory_epoch + 1)
            return directory
        try:
            directory = directory_from_configmap(cm)
        except (DirectoryError, KeyError) as exc:
            if saved is not None:
                log.warning("directory ConfigMap of %s is damaged (%s): restored at epoch %s",
                            cluster.name, exc, saved.epoch)  # fmt: skip
                return saved
            seen.degraded.append(
                (
                    "DirectoryInvalid",
                    f"ConfigMap {naming.directory_name(cluster.name)} does not hold a valid "
                    f"directory ({exc}); restore it or delete it to start over at epoch 1",
                )
            )
            return None
        if directory.partitions != cluster.spec.partitions:
            seen.degraded.append(
                (
                    "DirectoryMismatch",
                    f"the directory has {directory.partitions} partitions but spec.partitions is "
                    f"{cluster.spec.partitions}; partitions cannot change after creation",
                )
            )
            return None
        if saved is not None and saved.epoch > directory.epoch:
            return saved
        return directory

    def _directory_from_status(self, cluster: AgentMemoryCluster) -> Directory | None:
        status = cluster.status
        table = status.directory_table
        if status.directory_epoch < 1 or len(table) != cluster.spec.partitions:
            return None
        shards = set(table)
        if status.rebalance is not None:
            shards |= rb.shards_during(status.rebalance)
        return Directory(
            cluster.name, cluster.namespace, cluster.topic, status.directory_epoch, tuple(table),
            tuple(shard_entries(cluster, sorted(shards))),
        )  # fmt: skip

    @staticmethod
    def _existing_shards(directory: Directory, rebalance: RebalanceStatus | None) -> set[int]:
        shards = rb.ring_shards(directory) | directory.assigned_shards()
        if rebalance is not None:
            shards |= rb.shards_during(rebalance)
        return shards

    def _adopt(self, body: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["ownerReferences"] = [owner_reference(body)]
        return obj

    def _apply_children(
        self,
        body: dict[str, Any],
        cluster: AgentMemoryCluster,
        directory: Directory,
        shards: set[int],
        seen: Observation,
    ) -> None:
        monitoring = self.kube.served(MONITORING_API)
        for child in children(cluster, directory, shards, monitoring_api=monitoring):
            if child["kind"] == "KafkaTopic":
                if not self.kube.served(child["apiVersion"]):
                    seen.degraded.append(
                        (
                            "StrimziMissing",
                            f"the {child['apiVersion']} API is not served: install Strimzi, or "
                            "set spec.eventLog.kafka.topicManagement to direct or external",
                        )
                    )
                    continue
                self._observe_topic(child, seen)
            self.kube.apply(self._adopt(body, child))

    def _check_topic(self, cluster: AgentMemoryCluster, seen: Observation) -> None:
        """topicManagement direct: create the topic; external: check it exists as needed.

        A topic found right is remembered for a while, so resyncs do not ask
        Kafka every time.
        """
        kafka = cluster.spec.event_log.kafka
        if kafka.topic_management == "strimzi":
            return
        key = (cluster.metadata.uid, cluster.topic, cluster.spec.partitions)
        if time.monotonic() - self._topics_ok.get(key, -1e9) < TOPIC_RECHECK_SECONDS:
            return
        if kafka.tls.enabled or kafka.sasl is not None:
            seen.waiting.append(
                f"the operator does not check topic {cluster.topic} over TLS or SASL; make sure "
                f"it exists with {cluster.spec.partitions} partitions"
            )
            return
        spec = TopicSpec(
            cluster.topic, cluster.spec.partitions, kafka.replicas, topic_config(cluster)
        )
        try:
            result = ensure_topic(
                KafkaSettings(kafka.bootstrap_servers),
                spec,
                create=kafka.topic_management == "direct",
                timeout=10,
            )
        except TopicMismatchError as exc:
            seen.degraded.append(("TopicMismatch", str(exc)))
            return
        except Exception as exc:  # the admin client raises KafkaException, TimeoutError, ...
            seen.degraded.append(
                (
                    "EventLogUnreachable",
                    f"cannot check topic {cluster.topic} at {kafka.bootstrap_servers}: {exc}; "
                    "check spec.eventLog.kafka.bootstrapServers and the brokers",
                )
            )
            return
        self._topics_ok[key] = time.monotonic()
        if result == "created":
            log.info("created topic %s with %s partitions", cluster.topic, cluster.spec.partitions)

    def _observe_topic(self, topic: dict[str, Any], seen: Observation) -> None:
        meta = topic["metadata"]
        current = self.kube.get(topic["apiVersion"], "KafkaTopic", meta["namespace"], meta["name"])
        for c in ((current or {}).get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready" and c.get("status") == "False":
                seen.degraded.append(
                    (
                        "TopicNotReady",
                        f"KafkaTopic {meta['name']}: {c.get('reason', '')} {c.get('message', '')}",
                    )
                )

    def _write_directory(
        self, body: dict[str, Any], cluster: AgentMemoryCluster, d: Directory
    ) -> None:
        self.kube.apply(self._adopt(body, directory_configmap(cluster, d)))

    def _patch_status(self, body: dict[str, Any], data: dict[str, Any]) -> None:
        meta = body["metadata"]
        self.kube.patch_status(
            naming.API_VERSION, naming.KIND, meta["namespace"], meta["name"], data
        )

    def _checkpoint(self, body: dict[str, Any], rebalance: RebalanceStatus | None) -> None:
        self._patch_status(body, {"rebalance": None if rebalance is None else rebalance.to_api()})

    def _advance(
        self,
        body: dict[str, Any],
        cluster: AgentMemoryCluster,
        reb: RebalanceStatus,
        directory: Directory,
        seen: Observation,
    ) -> tuple[RebalanceStatus | None, Directory]:
        """Advance the plan as far as it can go now; checkpoint after every transition."""
        entries = shard_entries(cluster, rb.shards_during(reb))
        interval = cluster.spec.rebalance.step_interval_seconds
        while True:
            if reb.phase == "AwaitingApproval":
                approved = cluster.metadata.annotations.get(naming.APPROVE_ANNOTATION)
                if approved != str(reb.target_epoch) and not cluster.spec.rebalance.auto_approve:
                    seen.waiting.append(
                        f"the rebalance to epoch {reb.target_epoch} waits for approval: annotate "
                        f"{naming.APPROVE_ANNOTATION}={reb.target_epoch}"
                    )
                    return reb, directory
                reb = reb.model_copy(update={"phase": "Warming", "step_started_at": self.clock()})
                self._checkpoint(body, reb)
            elif reb.phase == "Warming" and reb.current_step >= reb.steps:
                reb = reb.model_copy(update={"phase": "Retiring", "step_started_at": self.clock()})
                self._checkpoint(body, reb)
            elif reb.phase == "Warming":
                step = reb.current_step
                epoch = rb.step_epoch(reb, step)
                moves = rb.step_moves(reb, step)
                if directory.epoch >= epoch:
                    # Committed before a restart: record it, apply nothing again.
                    reb = rb.committed(reb, step, self.clock())
                    self._checkpoint(body, reb)
                    continue
                if step > 0 and _seconds_since(reb.step_started_at) < interval:
                    seen.waiting.append(f"step {step + 1} of {reb.steps} starts after {interval}s")
                    return reb, directory
                pending = directory.with_pending(epoch, moves).with_shards(entries)
                if pending != directory:
                    directory = pending
                    self._write_directory(body, cluster, directory)
                    reb = rb.mark(reb, step, "Warming")
                    self._checkpoint(body, reb)
                reasons = self._warm_reasons(cluster, epoch, moves)
                if reasons:
                    self._check_warmup_timeout(cluster, reb, reasons, seen)
                    return reb, directory
                try:
                    directory = directory.commit(epoch, moves, entries)
                except DirectoryError as exc:
                    # The directory changed under the plan (e.g. it was re-created).
                    self._checkpoint(body, None)
                    self.emit(
                        body,
                        "Warning",
                        "RebalanceAbandoned",
                        f"{exc}; the rebalance is planned again from epoch {directory.epoch}",
                    )
                    return None, directory
                # Status first: should the operator stop here, the ConfigMap is
                # restored from it at this epoch.
                self._patch_status(
                    body,
                    {"directoryEpoch": directory.epoch, "directoryTable": list(directory.table)},
                )
                self._write_directory(body, cluster, directory)
                METRICS.directory_epoch.labels(cluster.namespace, cluster.name).set(epoch)
                self.emit(
                    body,
                    "Normal",
                    "EpochCommitted",
                    f"directory epoch {epoch}: {len(moves)} partitions moved (step "
                    f"{step + 1} of {reb.steps})",
                )
                reb = rb.committed(reb, step, self.clock())
                self._checkpoint(body, reb)
            else:  # Retiring
                return self._retire(body, cluster, reb, directory, seen)

    def _retire(
        self,
        body: dict[str, Any],
        cluster: AgentMemoryCluster,
        reb: RebalanceStatus,
        directory: Directory,
        seen: Observation,
    ) -> tuple[RebalanceStatus | None, Directory]:
        """Remove shards that left the ring, then close the plan."""
        fresh = self._read_directory(cluster, seen) or directory
        leaving = rb.retiring(reb)
        still_owning = sorted(set(leaving) & fresh.assigned_shards())
        if still_owning:
            seen.degraded.append(
                (
                    "RetireBlocked",
                    f"shards {still_owning} still own partitions in epoch {fresh.epoch}; "
                    "they are kept until the directory moves them",
                )
            )
            return reb, fresh
        if leaving:
            lagging = self._epoch_reasons(cluster, fresh.epoch)
            grace = cluster.spec.rebalance.retire_grace_seconds
            waited = _seconds_since(reb.step_started_at)
            if lagging and waited < grace:
                seen.waiting.append(
                    f"shards {leaving} leave once every node and router follows epoch "
                    f"{fresh.epoch} (or after {grace}s): " + "; ".join(lagging[:3])
                )
                return reb, fresh
            if lagging:
                self.emit(
                    body,
                    "Warning",
                    "RetireGraceOver",
                    f"retiring shards {leaving} after {int(waited)}s although "
                    + "; ".join(lagging[:3]),
                )
        for shard in leaving:
            for api_version, kind in (
                ("apps/v1", "StatefulSet"),
                ("policy/v1", "PodDisruptionBudget"),
                ("v1", "Service"),
            ):
                self.kube.delete(
                    api_version, kind, cluster.namespace, naming.shard_name(cluster.name, shard)
                )
            self.emit(body, "Normal", "ShardRetired", f"shard {shard} left the ring")
        entries = shard_entries(cluster, range(reb.target_shards))
        if fresh.shards != entries:
            fresh = fresh.with_shards(entries)
            self._write_directory(body, cluster, fresh)
        now = self.clock()
        self._patch_status(body, {"rebalance": None, "lastRebalance": rb.summary(reb, now)})
        self.emit(body, "Normal", "RebalanceCompleted", rb.summary(reb, now))
        return None, fresh

    def _statefulsets(self, cluster: AgentMemoryCluster) -> dict[int, dict[str, Any]]:
        selector = ",".join(
            f"{k}={v}"
            for k, v in naming.selector_labels(cluster.name, naming.COMPONENT_NODE).items()
        )
        out = {}
        for sts in self.kube.list("apps/v1", "StatefulSet", cluster.namespace, selector):
            shard = sts["metadata"].get("labels", {}).get(naming.LABEL_SHARD)
            if shard is not None and shard.isdigit():
                out[int(shard)] = sts
        return out

    @staticmethod
    def _ready(sts: dict[str, Any] | None) -> bool:
        if sts is None:
            return False
        want = int(sts.get("spec", {}).get("replicas", 1))
        status = sts.get("status") or {}
        return (
            int(status.get("observedGeneration", 0)) >= int(sts["metadata"].get("generation", 0))
            and int(status.get("readyReplicas", 0)) >= want
            and int(status.get("updatedReplicas", 0)) >= want
        )

    def _pods(self, cluster: AgentMemoryCluster, labels: dict[str, str]) -> list[PodView]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return [PodView.of(p) for p in self.kube.list("v1", "Pod", cluster.namespace, selector)]

    def _warm_reasons(
        self, cluster: AgentMemoryCluster, epoch: int, moves: list[Move]
    ) -> list[str]:
        """Why the step that commits ``epoch`` cannot commit yet (empty: it can).

        Every replica of every gaining shard is asked: it must have seen the
        step's pending block and applied each moving partition to within
        spec.rebalance.maxWarmupLagEvents of the log's end.
        """
        reasons = []
        for shard in sorted({m.target for m in moves}):
            partitions = sorted(m.partition for m in moves if m.target == shard)
            pods = self._pods(cluster, naming.shard_selector_labels(cluster.name, shard))
            reasons += warm_reasons(
                self.probe, pods, cluster.spec.replicas_per_shard, epoch, partitions,
                cluster.spec.rebalance.max_warmup_lag_events, self._credentials(cluster),
            )  # fmt: skip
        return reasons

    def _epoch_reasons(self, cluster: AgentMemoryCluster, epoch: int) -> list[str]:
        """Which nodes and routers do not follow ``epoch`` yet."""
        nodes = self._pods(cluster, naming.selector_labels(cluster.name, naming.COMPONENT_NODE))
        routers = self._pods(cluster, naming.selector_labels(cluster.name, naming.COMPONENT_ROUTER))
        credentials = self._credentials(cluster)
        return epoch_reasons(self.probe, nodes, epoch, False, credentials) + epoch_reasons(
            self.probe, routers, epoch, True, Credentials(context=credentials.context)
        )

    def _observe_lag(self, cluster: AgentMemoryCluster, seen: Observation) -> None:
        """Ask the nodes how far behind the log they are, at most every lag_seconds."""
        key = (cluster.namespace, cluster.name)
        if not self.lag_seconds or time.monotonic() - self._lag_asked.get(key, -1e9) < (
            self.lag_seconds
        ):
            return
        self._lag_asked[key] = time.monotonic()
        nodes = self._pods(cluster, naming.selector_labels(cluster.name, naming.COMPONENT_NODE))
        seen.event_lag = event_lag(self.probe, nodes, self._credentials(cluster))

    def _credentials(self, cluster: AgentMemoryCluster) -> Credentials:
        return Credentials(self.auth.token(cluster), self.certs.context(cluster))

    def _check_warmup_timeout(
        self,
        cluster: AgentMemoryCluster,
        reb: RebalanceStatus,
        reasons: list[str],
        seen: Observation,
    ) -> None:
        limit = cluster.spec.rebalance.warmup_timeout_seconds
        elapsed = _seconds_since(reb.step_started_at)
        shown = "; ".join(reasons[:5]) + (
            f"; and {len(reasons) - 5} more" if len(reasons) > 5 else ""
        )
        if elapsed > limit:
            seen.degraded.append(
                (
                    "WarmupTimeout",
                    f"step {reb.current_step + 1} of {reb.steps} has waited {int(elapsed)}s "
                    f"(limit {limit}s) for its gaining shards: {shown}",
                )
            )
        else:
            seen.waiting.append(
                f"step {reb.current_step + 1} of {reb.steps} waits for its gaining shards: {shown}"
            )

    def _prune(self, cluster: AgentMemoryCluster, directory: Directory, shards: set[int]) -> None:
        """Delete children this cluster no longer wants (never a shard that owns partitions)."""
        wanted = {
            (c["kind"], c["metadata"]["name"])
            for c in children(cluster, directory, shards, monitoring_api=True)
        }
        assigned = {naming.shard_name(cluster.name, s) for s in directory.assigned_shards()}
        selector = f"{naming.LABEL_CLUSTER}={cluster.name}"
        uid = cluster.metadata.uid
        for api_version, kind in _PRUNABLE:
            if not self.kube.served(api_version):
                continue
            for obj in self.kube.list(api_version, kind, cluster.namespace, selector):
                name = obj["metadata"]["name"]
                if (kind, name) in wanted or not owned_by(obj, uid):
                    continue
                if kind == "StatefulSet" and name in assigned:
                    continue
                log.info("pruning %s %s/%s", kind, cluster.namespace, name)
                self.kube.delete(api_version, kind, cluster.namespace, name)

    def _observe_shards(
        self, cluster: AgentMemoryCluster, shards: set[int], seen: Observation
    ) -> None:
        sets = self._statefulsets(cluster)
        seen.shards = len(shards)
        seen.ready_shards = sum(1 for s in shards if self._ready(sets.get(s)))

    # Status ------------------------------------------------------------------

    def _write_status(
        self,
        body: dict[str, Any],
        cluster: AgentMemoryCluster,
        seen: Observation,
        reb: RebalanceStatus | None,
        directory: Directory | None,
    ) -> None:
        gen = cluster.metadata.generation
        now = self.clock()
        old = cluster.status
        conds: list[Condition] = list(old.conditions)
        ready = (
            not seen.degraded
            and reb is None
            and directory is not None
            and seen.shards == cluster.spec.shards
            and seen.ready_shards == seen.shards
        )
        if seen.degraded:
            reason, message = seen.degraded[0]
            conds = cond.set_condition(
                conds, "Degraded", True, reason, "; ".join(m for _, m in seen.degraded), gen, now
            )
        else:
            conds = cond.set_condition(conds, "Degraded", False, "AsExpected", "", gen, now)
        if reb is not None:
            message = (
                f"{reb.from_shards} -> {reb.target_shards} shards, step "
                f"{min(reb.current_step + 1, reb.steps)} of {reb.steps} ({reb.phase})"
            )
            if cluster.spec.shards != reb.target_shards:
                message += f"; spec.shards={cluster.spec.shards} waits for this rebalance to finish"
            conds = cond.set_condition(conds, "Rebalancing", True, reb.phase, message, gen, now)
        else:
            conds = cond.set_condition(conds, "Rebalancing", False, "Balanced", "", gen, now)
        if ready:
            conds = cond.set_condition(
                conds, "Ready", True, "ShardsReady", f"{seen.ready_shards} shards ready", gen, now
            )
            conds = cond.set_condition(conds, "Progressing", False, "Reconciled", "", gen, now)
        else:
            waiting = [
                *seen.waiting,
                f"{seen.ready_shards} of {seen.shards} shards ready",
            ]
            conds = cond.set_condition(
                conds, "Ready", False, "NotReady", "; ".join(waiting), gen, now
            )
            conds = cond.set_condition(
                conds, "Progressing", not seen.degraded, "Reconciling", "; ".join(waiting), gen, now
            )
        status = AgentMemoryClusterStatus(
            observed_generation=gen,
            phase=cond.phase(conds, gen, paused=False),
            shards=seen.shards,
            ready_shards=seen.ready_shards,
            selector=",".join(
                f"{k}={v}"
                for k, v in naming.selector_labels(cluster.name, naming.COMPONENT_NODE).items()
            ),
            directory_epoch=directory.epoch if directory is not None else old.directory_epoch,
            directory_table=list(directory.table) if directory is not None else old.directory_table,
            topic=cluster.topic,
            durability="Store" if cluster.spec.store is not None else "LogOnly",
            conditions=conds,
            rebalance=reb,
            last_rebalance=old.last_rebalance,
            event_lag=seen.event_lag if seen.event_lag is not None else old.event_lag,
        )
        self._patch(body, status, transitions=_transitions(old, status))

    def _patch(
        self, body: dict[str, Any], status: AgentMemoryClusterStatus, transitions: list[str]
    ) -> None:
        data = status.to_api()
        data.setdefault("rebalance", None)
        # The last rebalance summary is written when a plan completes; keep it.
        data.pop("lastRebalance", None)
        current = body.get("status") or {}
        if all(current.get(key) == value for key, value in data.items()):
            return  # nothing changed: no request (an idle cluster costs none)
        try:
            self._patch_status(body, data)
        except KubeError as exc:
            if exc.status == 404:
                return
            raise
        for message in transitions:
            self.emit(body, "Normal", "PhaseChanged", message)

    def _report_invalid(self, body: dict[str, Any], generation: int, message: str) -> None:
        old = AgentMemoryClusterStatus.model_validate(body.get("status") or {})
        now = self.clock()
        conds = cond.set_condition(
            old.conditions, "Degraded", True, "InvalidSpec", message, generation, now
        )
        conds = cond.set_condition(conds, "Ready", False, "InvalidSpec", message, generation, now)
        status = old.model_copy(
            update={"conditions": conds, "phase": "Degraded", "observed_generation": generation}
        )
        self.emit(body, "Warning", "InvalidSpec", message)
        self._patch(body, status, transitions=[])

    def _report_paused(self, body: dict[str, Any], cluster: AgentMemoryCluster) -> None:
        gen = cluster.metadata.generation
        now = self.clock()
        message = f"reconciliation is paused by the annotation {naming.PAUSED_ANNOTATION}"
        conds = cond.set_condition(
            cluster.status.conditions, "Progressing", False, "Paused", message, gen, now
        )
        status = cluster.status.model_copy(update={"conditions": conds, "phase": "Paused"})
        self._patch(body, status, transitions=_transitions(cluster.status, status))


def _seconds_since(timestamp: str | None) -> float:
    if timestamp is None:
        return 0.0
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (datetime.now(UTC) - then).total_seconds()


def _transitions(old: AgentMemoryClusterStatus, new: AgentMemoryClusterStatus) -> list[str]:
    if old.phase == new.phase:
        return []
    return [f"phase {old.phase} -> {new.phase}"]
