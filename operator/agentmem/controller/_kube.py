"""The one module that talks to the Kubernetes API (besides kopf itself).

A small, synchronous client over the official ``kubernetes`` package: server-side
apply under one field manager, get, list, watch, delete, status patches and API
discovery. Kinds are looked up in a fixed table, so there is no discovery
round trip per call. The work queue's threads use it.

With an :class:`~agentmem.controller.cache.ObjectCache`, reads of the kinds the
cache serves are answered from memory, every write's answer goes into the
cache, and an apply whose manifest is the one last applied to an object nobody
changed since is not sent at all. Every request is counted by verb.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import kubernetes
from kubernetes.client import ApiClient

from agentmem.controller.cache import ObjectCache, Objects
from agentmem.controller.metrics import METRICS
from agentmem.model import naming

_HOSTNAME = socket.gethostname()
log = logging.getLogger(__name__)

#: Only the operator's own objects are watched and cached.
MANAGED_SELECTOR = f"{naming.LABEL_MANAGED_BY}={naming.FIELD_MANAGER}"
#: A watch asks the server to end it after this long (and starts again at once).
WATCH_SECONDS = 290
#: After a failed list or watch: first wait, and the longest.
WATCH_RETRY_SECONDS = (1.0, 30.0)


class KubeError(RuntimeError):
    """An API call failed; ``status`` is the HTTP status (0 when none came back)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Kind:
    plural: str
    namespaced: bool = True


_KINDS: dict[str, Kind] = {
    "ConfigMap": Kind("configmaps"),
    "Secret": Kind("secrets"),
    "Service": Kind("services"),
    "ServiceAccount": Kind("serviceaccounts"),
    "Pod": Kind("pods"),
    "Node": Kind("nodes", namespaced=False),
    "Event": Kind("events"),
    "StatefulSet": Kind("statefulsets"),
    "Deployment": Kind("deployments"),
    "PodDisruptionBudget": Kind("poddisruptionbudgets"),
    "Role": Kind("roles"),
    "RoleBinding": Kind("rolebindings"),
    "NetworkPolicy": Kind("networkpolicies"),
    "KafkaTopic": Kind("kafkatopics"),
    "ServiceMonitor": Kind("servicemonitors"),
    "PrometheusRule": Kind("prometheusrules"),
    naming.KIND: Kind(naming.PLURAL),
    "CustomResourceDefinition": Kind("customresourcedefinitions", namespaced=False),
}


def _base(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    info = _KINDS[kind]
    parts = [_base(api_version)]
    if info.namespaced and namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(info.plural)
    if name:
        parts.append(name)
    return "/".join(parts)


class Kube:
    """Synchronous Kubernetes API access for the controller."""

    def __init__(
        self, api_client: ApiClient | None = None, cache: ObjectCache | None = None
    ) -> None:
        self._api = api_client or _default_client()
        self.cache = cache
        self._served: dict[str, bool] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        verb: str = "",
    ) -> Any:
        response = self._send(method, url, body, query, content_type, accept, verb, timeout=30)
        response.read()
        text = response.data.decode() if response.data else ""
        return json.loads(text) if text else None

    def _send(
        self,
        method: str,
        url: str,
        body: Any,
        query: dict[str, str] | None,
        content_type: str,
        accept: str,
        verb: str,
        timeout: float | tuple[float, float],
    ) -> Any:
        """Send one request; the response (not read yet) when its status is 2xx."""
        METRICS.api_requests.labels(verb=verb or method.lower()).inc()
        if query:
            url = f"{url}?{urlencode(query)}"
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self._api.param_serialize(
            method=method,
            resource_path=url,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*request, _request_timeout=timeout)
        except kubernetes.client.exceptions.ApiException as exc:
            raise KubeError(exc.status or 0, f"{method} {url}: {exc.reason}") from exc
        except OSError as exc:
            raise KubeError(0, f"{method} {url}: {exc}") from exc
        if not 200 <= response.status <= 299:
            text = response.read().decode()  # type: ignore[no-untyped-call]
            message = text
            with contextlib.suppress(ValueError, AttributeError):
                message = json.loads(text).get("message", text)
            raise KubeError(response.status, f"{method} {url}: {response.status} {message}")
        return response

    def _cached(self, kind: str, namespace: str | None) -> ObjectCache | None:
        """The cache, when it answers for ``kind`` in ``namespace``."""
        if self.cache is not None and self.cache.serves(kind, namespace):
            return self.cache
        return None

    def _remember(self, obj: Any) -> None:
        if self.cache is not None and isinstance(obj, dict) and "metadata" in obj:
            self.cache.put(obj, notify=False)

    # Objects -----------------------------------------------------------------

    def apply(self, obj: dict[str, Any], force: bool = True) -> dict[str, Any]:
        """Server-side apply under the operator's field manager.

        Not sent when the cache serves the kind, this exact manifest was the last
        one applied, and the object has not changed since (anyone's change, a
        hand edit or a deletion, makes the next apply go out and restore it).
        """
        meta = obj["metadata"]
        kind, namespace = obj["kind"], meta.get("namespace")
        cache = self._cached(kind, namespace)
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        if cache is not None and cache.unchanged(kind, namespace or "", meta["name"], digest):
            METRICS.applies_skipped.inc()
            current = cache.get(kind, namespace or "", meta["name"])
            assert current is not None  # unchanged() saw it
            return current
        url = path(obj["apiVersion"], kind, namespace, meta["name"])
        query = {"fieldManager": naming.FIELD_MANAGER, "force": "true" if force else "false"}
        result: dict[str, Any] = self.request(
            "PATCH", url, obj, query, content_type="application/apply-patch+yaml", verb="apply"
        )
        if self.cache is not None:
            self.cache.applied(result, digest)
        return result

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The object, or None; from the cache when it serves the kind, or holds the
        object (the clusters, which kopf's watch puts there)."""
        if self.cache is not None:
            held = self.cache.get(kind, namespace or "", name)
            if held is not None or self.cache.serves(kind, namespace):
                return held
        try:
            result: dict[str, Any] = self.request(
                "GET", path(api_version, kind, namespace, name), verb="get"
            )
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        cache = self._cached(kind, namespace)
        if cache is not None:
            return cache.list(kind, namespace, label_selector)
        return self.list_with_version(api_version, kind, namespace, label_selector)[0]

    def list_with_version(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str = ""
    ) -> tuple[Objects, str]:
        """A list from the API server, and its resourceVersion (where a watch goes on)."""
        query = {"labelSelector": label_selector} if label_selector else None
        result = self.request("GET", path(api_version, kind, namespace), query=query, verb="list")
        items: list[dict[str, Any]] = result.get("items", [])
        return items, str(result.get("metadata", {}).get("resourceVersion", ""))

    def stream(
        self, api_version: str, kind: str, namespace: str | None, query: dict[str, str]
    ) -> Iterator[bytes]:
        """The lines of a watch (one JSON event each), until the server ends it."""
        response = self._send(
            "GET", path(api_version, kind, namespace), None, query, "application/json",
            "application/json", "watch", timeout=(10, WATCH_SECONDS + 30),
        )  # fmt: skip
        raw = response.response
        try:
            yield from (line for line in raw if line.strip())
        except OSError as exc:
            raise KubeError(0, f"watch of {kind} ended: {exc}") from exc
        finally:
            raw.release_conn()

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self.request("DELETE", path(api_version, kind, namespace, name), body, verb="delete")
            deleted = True
        except KubeError as exc:
            if exc.status != 404:
                raise  # still there: the cache keeps it
            deleted = False
        if self.cache is not None:
            self.cache.remove(kind, namespace or "", name, notify=False)
        return deleted

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace the status fields given (a JSON merge patch of the status subresource)."""
        url = path(api_version, kind, namespace, name) + "/status"
        result: dict[str, Any] = self.request(
            "PATCH", url, {"status": status}, content_type="application/merge-patch+json",
            verb="patch",
        )  # fmt: skip
        self._remember(result)
        return result

    def post_event(
        self, involved: dict[str, Any], type_: str, reason: str, message: str, now: str
    ) -> None:
        """Record a core/v1 Event about an object (shown by ``kubectl describe``)."""
        meta = involved["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", naming.API_VERSION),
                "kind": involved.get("kind", naming.KIND),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": naming.FIELD_MANAGER},
            "reportingComponent": naming.FIELD_MANAGER,
            "reportingInstance": _HOSTNAME,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.request("POST", path("v1", "Event", meta["namespace"]), event, verb="event")

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create an object; None when it exists already (it is left as it is)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        try:
            result: dict[str, Any] = self.request("POST", url, obj, verb="create")
        except KubeError as exc:
            if exc.status == 409:
                # The cache may not hold it yet (made by another reconcile just
                # now, or not labelled as the operator's): read it from the server.
                if self.cache is not None:
                    live = self.request("GET", path(obj["apiVersion"], obj["kind"],
                                                    meta.get("namespace"), meta["name"]),
                                        verb="get")  # fmt: skip
                    self._remember(live)
                return None
            raise
        self._remember(result)
        return result

    # Discovery ---------------------------------------------------------------

    def service_account_issuer(self) -> tuple[str, dict[str, Any]]:
        """The API server's service-account issuer and its public keys (JWKS)."""
        config = self.request("GET", "/.well-known/openid-configuration")
        jwks: dict[str, Any] = self.request(
            "GET", "/openid/v1/jwks", accept="application/jwk-set+json"
        )
        return str(config["issuer"]), jwks

    def served(self, api_version: str, refresh: bool = False) -> bool:
        """Whether the API server serves a group/version (e.g. monitoring.coreos.com/v1)."""
        with self._lock:
            if not refresh and api_version in self._served:
                return self._served[api_version]
        try:
            self.request("GET", _base(api_version))
            served = True
        except KubeError as exc:
            if exc.status not in (404, 503):
                raise
            served = False
        with self._lock:
            self._served[api_version] = served
        return served

    def forget_unserved(self) -> tuple[str, ...]:
        """Forget which group/versions were not served, so that one installed since
        (the Prometheus Operator's, Strimzi's) is found; the ones forgotten."""
        with self._lock:
            gone = tuple(v for v, served in self._served.items() if not served)
            for api_version in gone:
                del self._served[api_version]
        return gone


#: Connections kept to the API server: the work queue's threads, and one
#: long-lived watch per cached kind (and namespace).
CONNECTIONS = 64


def _default_client() -> ApiClient:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    configuration = kubernetes.client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = CONNECTIONS
    return ApiClient(configuration)


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", naming.API_VERSION),
        "kind": owner.get("kind", naming.KIND),
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def iter_kinds() -> Iterator[str]:
    return iter(_KINDS)


class Informer:
    """List, then watch, one kind in one namespace (None: all), into the cache."""

    def __init__(
        self, kube: Kube, cache: ObjectCache, api_version: str, kind: str, namespace: str | None
    ) -> None:
        self.kube = kube
        self.cache = cache
        self.api_version = api_version
        self.kind = kind
        self.namespace = namespace
        self._stop = threading.Event()
        where = namespace or "all namespaces"
        self._thread = threading.Thread(
            target=self._run, name=f"informer {kind} in {where}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        delay = WATCH_RETRY_SECONDS[0]
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                version = self._watch(version)
                delay = WATCH_RETRY_SECONDS[0]
                continue  # the server ended the watch: go on from where it was
            except KubeError as exc:
                if exc.status == 410:  # too old: list again
                    version = ""
                    continue
                log.warning("watching %s failed (%s); again in %.0fs", self.kind, exc, delay)
            except Exception:  # never let a watch thread die; list afresh
                log.exception("watching %s failed; listing again in %.0fs", self.kind, delay)
                version = ""
            self._stop.wait(delay)
            delay = min(delay * 2, WATCH_RETRY_SECONDS[1])

    def _list(self) -> str:
        items, version = self.kube.list_with_version(
            self.api_version, self.kind, self.namespace, MANAGED_SELECTOR
        )
        self.cache.replace(self.kind, self.namespace, items)
        return version

    def _watch(self, version: str) -> str:
        """Follow the watch until the server ends it; the version to go on from."""
        for event in self._events(version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                raise KubeError(int(obj.get("code", 0)), str(obj.get("message", "")))
            version = obj.get("metadata", {}).get("resourceVersion") or version
            if kind == "BOOKMARK":
                continue
            obj.setdefault("kind", self.kind)
            if kind == "DELETED":
                meta = obj["metadata"]
                self.cache.remove(self.kind, meta.get("namespace", ""), meta["name"])
            else:
                self.cache.put(obj)
        return version

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        query = {
            "watch": "true",
            "labelSelector": MANAGED_SELECTOR,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        started = time.monotonic()
        for line in self.kube.stream(self.api_version, self.kind, self.namespace, query):
            if self._stop.is_set():
                return
            yield json.loads(line)
        if time.monotonic() - started < 1:
            self._stop.wait(1)  # a watch the server ended at once: do not spin
