"""The operator's side of authentication: what nodes trust, and its own tokens.

For each cluster with ``spec.auth.enabled`` the operator

- keeps a signing key in the Secret ``<cluster>-auth`` (made once; deleting
  the Secret rotates it: the next reconcile makes a new key and publishes it);
- publishes the ConfigMap ``<cluster>-auth``: the audience, its own public key,
  the API server's service-account issuer with its JWKS (read from
  ``/.well-known/openid-configuration`` and ``/openid/v1/jwks``, again every
  few minutes, so a rotated API-server key reaches the nodes), the issuers and
  service-account grants of the spec;
- signs short-lived ``status`` tokens for its own calls to the nodes.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

import jwt

from agentmem.controller._kube import Kube, KubeError, owner_reference
from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources.auth import (
    OPERATOR_ISSUER,
    OPERATOR_SUBJECT,
    SIGNING_KEY,
    audit_secret,
    auth_configmap,
    auth_document,
    metrics_token_secret,
    signing_secret,
)
from agentmem.runtime.audit import AuditKey
from agentmem.runtime.auth import SigningKey

log = logging.getLogger(__name__)

#: How often the API server's keys are read again (and after a failure).
ISSUER_REFRESH_SECONDS = 300.0
ISSUER_RETRY_SECONDS = 30.0
#: Lifetime of the operator's own tokens, and when a fresh one is made.
TOKEN_SECONDS = 900.0
TOKEN_RENEW_SECONDS = 300.0
#: Prometheus's token (in a Secret the ServiceMonitor names): its lifetime, and
#: how long before it expires it is replaced.
METRICS_TOKEN_SECONDS = 30 * 24 * 3600.0
METRICS_RENEW_SECONDS = 10 * 24 * 3600.0


class ClusterAuth:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._tokens: dict[str, tuple[str, str, float]] = {}  # uid: (kid, token, expires)
        self._issuer: tuple[str, dict[str, Any]] | None = None
        self._issuer_read = -1e9

    def publish(self, body: dict[str, Any], cluster: AgentMemoryCluster) -> None:
        """Make sure the signing key exists and the trusted issuers are published."""
        key = self.signing_key(body, cluster)
        document = auth_document(cluster, {"keys": [key.jwk()]}, self.kubernetes_issuer(cluster))
        configmap = auth_configmap(cluster, document)
        configmap["metadata"]["ownerReferences"] = [owner_reference(body)]
        self.kube.apply(configmap)
        self._metrics_token(body, cluster, key)

    def _metrics_token(
        self, body: dict[str, Any], cluster: AgentMemoryCluster, key: SigningKey
    ) -> None:
        """The Secret Prometheus reads its token from: made, and replaced before it expires
        or when the signing key changed."""
        name = naming.metrics_token_name(cluster.name)
        current = self.kube.get("v1", "Secret", cluster.namespace, name)
        raw = ((current or {}).get("data") or {}).get("token")
        if raw is not None:
            try:
                header = jwt.get_unverified_header(base64.b64decode(raw).decode())
                claims = jwt.decode(base64.b64decode(raw), options={"verify_signature": False})
                if (
                    header.get("kid") == key.kid
                    and float(claims["exp"]) - time.time() > METRICS_RENEW_SECONDS
                ):
                    return
            except (jwt.PyJWTError, KeyError, ValueError):
                pass  # unreadable: replaced below
        token = key.mint(
            OPERATOR_ISSUER, naming.audience(cluster.namespace, cluster.name), "prometheus",
            scopes=("metrics",), ttl=METRICS_TOKEN_SECONDS,
        )  # fmt: skip
        secret = metrics_token_secret(cluster, token)
        secret["metadata"]["ownerReferences"] = [owner_reference(body)]
        self.kube.apply(secret)

    def ensure_audit_key(self, body: dict[str, Any], cluster: AgentMemoryCluster) -> None:
        """The audit chain's signing key (made once; the nodes mount it)."""
        name = naming.audit_name(cluster.name)
        if self.kube.get("v1", "Secret", cluster.namespace, name) is not None:
            return
        key = AuditKey.generate()
        secret = audit_secret(cluster, key.pem(), key.public_pem())
        secret["metadata"]["ownerReferences"] = [owner_reference(body)]
        if self.kube.create(secret) is not None:
            log.info("made the audit signing key of %s/%s", cluster.namespace, cluster.name)

    def signing_key(self, body: dict[str, Any], cluster: AgentMemoryCluster) -> SigningKey:
        name = naming.auth_name(cluster.name)
        secret = self.kube.get("v1", "Secret", cluster.namespace, name)
        pem = ((secret or {}).get("data") or {}).get(SIGNING_KEY)
        if pem is not None:
            key = self._keys.get(pem)
            if key is None:
                key = SigningKey.from_pem(base64.b64decode(pem))
                with self._lock:
                    self._keys[pem] = key
            return self._remember(cluster, key)
        key = SigningKey.generate()
        new = signing_secret(cluster, key.pem())
        new["metadata"]["ownerReferences"] = [owner_reference(body)]
        if self.kube.create(new) is None:  # another reconcile made one first: use it
            return self.signing_key(body, cluster)
        log.info("made the token signing key of %s/%s", cluster.namespace, cluster.name)
        return self._remember(cluster, key)

    def _remember(self, cluster: AgentMemoryCluster, key: SigningKey) -> SigningKey:
        uid = cluster.metadata.uid
        with self._lock:
            held = self._tokens.get(uid)
            if held is not None and held[0] != key.kid:
                del self._tokens[uid]  # the key changed: the old token is void
            self._keys[uid] = key
        return key

    def kubernetes_issuer(self, cluster: AgentMemoryCluster) -> tuple[str, dict[str, Any]] | None:
        """The API server's issuer and JWKS, read every few minutes (None if unreadable)."""
        if not cluster.spec.auth.kubernetes_issuer:
            return None
        now = time.monotonic()
        if now - self._issuer_read < ISSUER_REFRESH_SECONDS:
            return self._issuer
        try:
            issuer = self.kube.service_account_issuer()
        except (KubeError, KeyError, TypeError) as exc:
            log.warning("cannot read the API server's service-account issuer: %s", exc)
            with self._lock:  # try again in a while, not on every reconcile
                self._issuer_read = now - ISSUER_REFRESH_SECONDS + ISSUER_RETRY_SECONDS
            return self._issuer
        with self._lock:
            self._issuer, self._issuer_read = issuer, now
        return issuer

    def token(self, cluster: AgentMemoryCluster) -> str | None:
        """A ``status`` token for this cluster's nodes (None when auth is off)."""
        if not cluster.spec.auth.enabled:
            return None
        uid = cluster.metadata.uid
        now = time.time()
        with self._lock:
            held = self._tokens.get(uid)
            if held is not None and held[2] - now > TOKEN_RENEW_SECONDS:
                return held[1]
            key = self._keys.get(uid)
        if key is None:
            return None  # published on the next reconcile
        token = key.mint(
            OPERATOR_ISSUER,
            naming.audience(cluster.namespace, cluster.name),
            OPERATOR_SUBJECT,
            scopes=("status",),
            ttl=TOKEN_SECONDS,
        )
        with self._lock:
            self._tokens[uid] = (key.kid, token, now + TOKEN_SECONDS)
        return token
