"""The operator's CA and the certificate of each cluster's nodes and routers.

For each cluster with ``spec.tls.enabled`` the operator keeps

- a CA in the Secret ``<cluster>-ca`` (made once, never sent to a pod);
- the certificate of the nodes and routers in ``<cluster>-tls`` (``tls.crt``,
  ``tls.key``, ``ca.crt``), for every name of the cluster's namespace
  (``*.<namespace>.svc``), usable by servers and clients (mutual TLS). It is
  issued again when less than 30 days are left, or when the CA changed; the
  kubelet updates the mounted files and the nodes and routers reload them.
"""

from __future__ import annotations

import base64
import logging
import ssl
import threading
from typing import Any

from agentmem.controller._kube import Kube, owner_reference
from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources._meta import metadata
from agentmem.runtime.tls import Authority, needs_renewal

log = logging.getLogger(__name__)


def _secret(cluster: AgentMemoryCluster, name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls" if "tls.crt" in data else "Opaque",
        "metadata": metadata(cluster, name, naming.COMPONENT_NODE),
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _data(secret: dict[str, Any] | None, key: str) -> bytes | None:
    raw = ((secret or {}).get("data") or {}).get(key)
    return None if raw is None else base64.b64decode(raw)


class ClusterCerts:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._authorities: dict[str, Authority] = {}

    def ensure(self, body: dict[str, Any], cluster: AgentMemoryCluster) -> None:
        """Make the CA if missing, and issue the certificate if missing or due."""
        ca = self._authority(body, cluster)
        name = naming.tls_name(cluster.name)
        current = self.kube.get("v1", "Secret", cluster.namespace, name)
        cert = _data(current, "tls.crt")
        if cert is not None and not needs_renewal(cert) and _data(current, "ca.crt") == ca.cert_pem:
            return
        ns = cluster.namespace
        dns = [f"*.{ns}.svc", f"*.{ns}.svc.cluster.local", f"*.{ns}", "localhost"]
        cert, key = ca.issue(f"{cluster.name}.{ns}", dns, ["127.0.0.1"])
        secret = _secret(cluster, name, {"tls.crt": cert, "tls.key": key, "ca.crt": ca.cert_pem})
        secret["metadata"]["ownerReferences"] = [owner_reference(body)]
        self.kube.apply(secret)
        log.info("issued the TLS certificate of %s/%s", ns, cluster.name)

    def _authority(self, body: dict[str, Any], cluster: AgentMemoryCluster) -> Authority:
        name = naming.ca_name(cluster.name)
        secret = self.kube.get("v1", "Secret", cluster.namespace, name)
        cert, key = _data(secret, "ca.crt"), _data(secret, "ca.key")
        uid = cluster.metadata.uid
        if cert is not None and key is not None:
            with self._lock:
                held = self._authorities.get(uid)
            if held is not None and held.cert_pem == cert:
                return held  # the same CA as last time: nothing to parse again
            ca = Authority(cert, key)
        else:
            ca = Authority.create(f"agentmem {cluster.namespace}/{cluster.name} CA")
            new = _secret(cluster, name, {"ca.crt": ca.cert_pem, "ca.key": ca.key_pem})
            new["metadata"]["ownerReferences"] = [owner_reference(body)]
            if self.kube.create(new) is None:  # another reconcile made one first
                return self._authority(body, cluster)
            log.info("made the CA of %s/%s", cluster.namespace, cluster.name)
        context = ssl.create_default_context(cadata=ca.cert_pem.decode())
        # Pods are reached by address: the CA is checked, the name cannot be.
        context.check_hostname = False
        with self._lock:
            self._contexts[uid] = context
            self._authorities[uid] = ca
        return ca

    def context(self, cluster: AgentMemoryCluster) -> ssl.SSLContext | None:
        """The context to ask this cluster's pods over HTTPS (None: plain HTTP)."""
        if not cluster.spec.tls.enabled:
            return None
        with self._lock:
            return self._contexts.get(cluster.metadata.uid)
