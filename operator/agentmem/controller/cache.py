"""What the API server holds of the operator's children, kept current by watches.

One informer per kind (and per watched namespace; :class:`Informer` in
``_kube``) lists the objects labelled
``app.kubernetes.io/managed-by=agentmem-operator`` and then follows a watch of
them into this cache, so a reconcile reads its children from memory instead of
asking the API server. The operator's own writes go into the cache at once (the object the
server answered), so a reconcile reads what it just wrote; a watch event never
replaces an entry with an older ``resourceVersion``.

Kept of each object: everything but ``managedFields``, and of a workload's
spec (StatefulSet, Deployment) only ``replicas``: the pod template is the
operator's own, and large. Of a Pod (the StatefulSets' and Deployments' pods carry
the label too) only its metadata, phase and address: the operator asks each pod
how far it is, at its address. The reconciler reads labels, owners, status and
data; this keeps them at a fraction of the memory.

A kind whose informer has not listed yet is not *served*: :class:`Kube` then
asks the API server, as it would without a cache. Any change an informer sees
(not an echo of the operator's own write, nor an event that changed nothing the
cache keeps, such as a Pod's probe timestamps) is passed to ``on_change`` with
the object, which the work queue turns into a reconcile of its cluster.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from agentmem.model import naming

Key = tuple[str, str, str]  # kind, namespace, name
Objects = list[dict[str, Any]]
OnChange = Callable[[dict[str, Any]], None]


def _version(obj: dict[str, Any]) -> int:
    raw = obj.get("metadata", {}).get("resourceVersion") or "0"
    return int(raw) if raw.isdigit() else 0


#: Kinds whose spec is not kept beyond ``replicas``.
WORKLOADS = frozenset({"StatefulSet", "Deployment"})


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    """What the cache keeps of an object (see the module's docstring)."""
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    spec = obj.get("spec")
    if obj.get("kind") in WORKLOADS and isinstance(spec, dict):
        out["spec"] = {"replicas": spec["replicas"]} if "replicas" in spec else {}
    elif obj.get("kind") == "Pod":
        status = obj.get("status") or {}
        out.pop("spec", None)
        out["status"] = {k: status[k] for k in ("phase", "podIP") if k in status}
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two kept versions of an object differ only in their resourceVersion."""
    meta_a = {k: v for k, v in a["metadata"].items() if k != "resourceVersion"}
    meta_b = {k: v for k, v in b["metadata"].items() if k != "resourceVersion"}
    return meta_a == meta_b and {k: v for k, v in a.items() if k != "metadata"} == {
        k: v for k, v in b.items() if k != "metadata"
    }


def fingerprint(obj: dict[str, Any]) -> str:
    """What changes when anyone changes the object's desired state.

    Objects with a ``generation`` (workloads, custom resources) bump it on every
    change of their spec, not on status updates; of the others (ConfigMaps,
    Secrets, Services) the resourceVersion is taken. Labels, annotations and
    owners count for both.
    """
    meta = obj.get("metadata", {})
    change = meta.get("generation") or f"rv{meta.get('resourceVersion')}"
    extra = json.dumps(
        [meta.get("labels"), meta.get("annotations"), meta.get("ownerReferences")],
        sort_keys=True,
    )
    return f"{change}:{extra}"


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _cluster(labels: dict[str, str]) -> str:
    return labels.get(naming.LABEL_CLUSTER) or labels.get(naming.LABEL_INSTANCE) or ""


@dataclass
class ObjectCache:
    """The objects of the kinds being watched, by (kind, namespace, name), and by the
    cluster they belong to (so a reconcile's lists do not scan every cluster's)."""

    on_change: OnChange | None = None
    _objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    _by_cluster: dict[Key, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _synced: set[tuple[str, str | None]] = field(default_factory=set)
    _applied: dict[Key, tuple[str, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # Reading -----------------------------------------------------------------

    def serves(self, kind: str, namespace: str | None) -> bool:
        """Whether ``kind`` in ``namespace`` is listed and watched (so a miss is an absence)."""
        return (kind, None) in self._synced or (
            namespace is not None and (kind, namespace) in self._synced
        )

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((kind, namespace, name))  # one dict read: atomic

    def list(self, kind: str, namespace: str | None, selector: str = "") -> Objects:
        terms = dict(t.partition("=")[::2] for t in selector.split(",") if t)
        cluster = terms.get(naming.LABEL_CLUSTER) or terms.get(naming.LABEL_INSTANCE)
        with self._lock:
            if cluster and namespace is not None:
                found = list(self._by_cluster.get((kind, namespace, cluster), {}).values())
            else:
                found = [
                    obj
                    for (k, ns, _), obj in self._objects.items()
                    if k == kind and (namespace is None or ns == namespace)
                ]
        return [o for o in found if _matches(o["metadata"].get("labels") or {}, selector)]

    def keys(self, kind: str) -> Iterator[tuple[str, str]]:
        """(namespace, name) of every object of ``kind``."""
        with self._lock:
            found = [(ns, name) for k, ns, name in self._objects if k == kind]
        return iter(found)

    def __len__(self) -> int:
        return len(self._objects)

    def _index(self, key: Key, obj: dict[str, Any] | None, old: dict[str, Any] | None) -> None:
        """Under the lock: move ``key`` from ``old``'s cluster to ``obj``'s."""
        kind, namespace, name = key
        if old is not None:
            group = (kind, namespace, _cluster(old["metadata"].get("labels") or {}))
            members = self._by_cluster.get(group)
            if members is not None:
                members.pop(name, None)
                if not members:
                    del self._by_cluster[group]
        if obj is not None:
            group = (kind, namespace, _cluster(obj["metadata"].get("labels") or {}))
            self._by_cluster.setdefault(group, {})[name] = obj

    # Applies that change nothing -------------------------------------------------

    def unchanged(self, kind: str, namespace: str, name: str, digest: str) -> bool:
        """True when ``digest`` is what the operator last applied to this object and
        nobody changed the object since (it is still there, with the fingerprint
        the server answered then)."""
        key = (kind, namespace, name)
        with self._lock:
            current = self._objects.get(key)
            applied = self._applied.get(key)
        return (
            current is not None
            and applied is not None
            and applied == (digest, fingerprint(current))
        )

    def applied(self, obj: dict[str, Any], digest: str) -> None:
        """Remember the server's answer to an apply of a manifest with ``digest``."""
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        with self._lock:
            self._applied[key] = (digest, fingerprint(obj))
        self.put(obj, notify=False)

    # Writing (watch events and the operator's own writes) ----------------------------

    def put(self, obj: dict[str, Any], notify: bool = True) -> bool:
        """Keep ``obj`` unless the cache holds it at the same or a newer version;
        whether it was kept (a change, not an echo of the operator's own write)."""
        meta = obj["metadata"]
        key = (obj["kind"], meta.get("namespace", ""), meta["name"])
        kept = strip(obj)
        with self._lock:
            current = self._objects.get(key)
            if current is not None and _version(current) >= _version(kept):
                return False
            self._objects[key] = kept
            self._index(key, kept, current)
        if current is not None and _same(current, kept):
            return False
        if notify and self.on_change is not None:
            self.on_change(kept)
        return True

    def remove(self, kind: str, namespace: str, name: str, notify: bool = True) -> None:
        key = (kind, namespace, name)
        with self._lock:
            gone = self._objects.pop(key, None)
            self._applied.pop(key, None)
            self._index(key, None, gone)
        if gone is not None and notify and self.on_change is not None:
            self.on_change(gone)

    def replace(self, kind: str, namespace: str | None, objects: Objects) -> None:
        """A fresh list of ``kind`` in ``namespace`` (None: all): put them, drop the rest."""
        names = set()
        for obj in objects:
            obj.setdefault("kind", kind)
            names.add((obj["metadata"].get("namespace", ""), obj["metadata"]["name"]))
            self.put(obj)
        with self._lock:
            stale = [
                key
                for key in self._objects
                if key[0] == kind
                and (namespace is None or key[1] == namespace)
                and (key[1], key[2]) not in names
            ]
        for key in stale:
            self.remove(*key)
        with self._lock:
            self._synced.add((kind, namespace))
