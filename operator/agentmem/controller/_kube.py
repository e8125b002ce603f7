"""The one module that talks to the Kubernetes API (besides kopf itself).

A small, synchronous client over the official ``kubernetes`` package: server-side
apply under one field manager, get, list, delete, status patches and API
discovery. Kinds are looked up in a fixed table, so there is no discovery
round trip per call. kopf runs the handlers that use it in worker threads.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import kubernetes
from kubernetes.client import ApiClient

from agentmem.model import naming

_HOSTNAME = socket.gethostname()


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

    def __init__(self, api_client: ApiClient | None = None) -> None:
        self._api = api_client or _default_client()
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
    ) -> Any:
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
            response = self._api.call_api(*request, _request_timeout=30)
            response.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.exceptions.ApiException as exc:
            raise KubeError(exc.status or 0, f"{method} {url}: {exc.reason}") from exc
        except OSError as exc:
            raise KubeError(0, f"{method} {url}: {exc}") from exc
        text = response.data.decode() if response.data else ""
        if not 200 <= response.status <= 299:
            message = text
            with contextlib.suppress(ValueError):
                message = json.loads(text).get("message", text)
            raise KubeError(response.status, f"{method} {url}: {response.status} {message}")
        return json.loads(text) if text else None

    # Objects -----------------------------------------------------------------

    def apply(self, obj: dict[str, Any], force: bool = True) -> dict[str, Any]:
        """Server-side apply under the operator's field manager."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query = {"fieldManager": naming.FIELD_MANAGER, "force": "true" if force else "false"}
        result: dict[str, Any] = self.request(
            "PATCH", url, obj, query, content_type="application/apply-patch+yaml"
        )
        return result

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.request("GET", path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": label_selector} if label_selector else None
        result = self.request("GET", path(api_version, kind, namespace), query=query)
        items: list[dict[str, Any]] = result.get("items", [])
        return items

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with background propagation; False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self.request("DELETE", path(api_version, kind, namespace, name), body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace the status fields given (a JSON merge patch of the status subresource)."""
        url = path(api_version, kind, namespace, name) + "/status"
        result: dict[str, Any] = self.request(
            "PATCH", url, {"status": status}, content_type="application/merge-patch+json"
        )
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
        self.request("POST", path("v1", "Event", meta["namespace"]), event)

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create an object; None when it exists already (it is left as it is)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        try:
            result: dict[str, Any] = self.request("POST", url, obj)
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise
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

    def forget_discovery(self) -> None:
        with self._lock:
            self._served.clear()


def _default_client() -> ApiClient:
    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
    return ApiClient()


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
