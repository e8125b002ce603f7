"""Who the nodes and routers trust: the auth ConfigMap, and the operator's key.

The ConfigMap ``<cluster>-auth`` holds ``auth.json`` (see
:mod:`agentmem.runtime.auth`): the cluster's audience, the trusted issuers with
their public keys, and the grants of service accounts. Nodes and routers mount
it and reread it when the kubelet refreshes it, so they never call the API
server. Its issuers:

- the API server's service-account issuer (its JWKS copied in by the operator),
  so a pod's projected token with the cluster's audience is enough;
- the operator, whose signing key is in the Secret ``<cluster>-auth``: it signs
  the short-lived tokens the operator itself uses for the nodes' ``/v1/status``;
- issuers named in ``spec.auth.issuers`` (their keys fetched by URL).
"""

from __future__ import annotations

import json
from typing import Any

from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources._meta import metadata

#: The iss of the operator's own tokens.
OPERATOR_ISSUER = "agentmem.io/operator"
#: The subject of the operator's tokens (the actor it would be, were it to write).
OPERATOR_SUBJECT = "agentmem-operator"
SIGNING_KEY = "signing.pem"
AUDIT_KEY = "audit.pem"
AUDIT_PUBLIC_KEY = "audit.pub"


def auth_document(
    cluster: AgentMemoryCluster,
    operator_jwks: dict[str, Any],
    kubernetes: tuple[str, dict[str, Any]] | None,
) -> dict[str, Any]:
    """``auth.json``: ``kubernetes`` is the API server's (issuer, JWKS), when trusted."""
    auth = cluster.spec.auth
    issuers: list[dict[str, Any]] = [{"issuer": OPERATOR_ISSUER, "jwks": operator_jwks}]
    if kubernetes is not None and auth.kubernetes_issuer:
        issuers.append({"issuer": kubernetes[0], "jwks": kubernetes[1]})
    issuers += [{"issuer": i.issuer, "jwksUrl": i.jwks_url} for i in auth.issuers]
    accounts = []
    for grant in auth.service_accounts:
        entry = grant.to_api()
        entry["namespace"] = grant.namespace or cluster.namespace
        accounts.append(entry)
    return {
        "audience": naming.audience(cluster.namespace, cluster.name),
        "issuers": issuers,
        "serviceAccounts": accounts,
    }


def auth_configmap(cluster: AgentMemoryCluster, document: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(cluster, naming.auth_name(cluster.name), naming.COMPONENT_NODE),
        "data": {naming.AUTH_KEY: json.dumps(document, indent=1, sort_keys=True)},
    }


def signing_secret(cluster: AgentMemoryCluster, pem: bytes) -> dict[str, Any]:
    """The operator's signing key of this cluster (created once, never overwritten)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(cluster, naming.auth_name(cluster.name), naming.COMPONENT_NODE),
        "stringData": {SIGNING_KEY: pem.decode()},
    }


def audit_secret(
    cluster: AgentMemoryCluster, private_pem: bytes, public_pem: bytes
) -> dict[str, Any]:
    """The key that signs the audit chain (mounted by the nodes; created once)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(cluster, naming.audit_name(cluster.name), naming.COMPONENT_NODE),
        "stringData": {AUDIT_KEY: private_pem.decode(), AUDIT_PUBLIC_KEY: public_pem.decode()},
    }


def metrics_token_secret(cluster: AgentMemoryCluster, token: str) -> dict[str, Any]:
    """The token Prometheus scrapes ``/metrics`` with (the ServiceMonitor names it)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(
            cluster, naming.metrics_token_name(cluster.name), naming.COMPONENT_MONITORING
        ),
        "stringData": {"token": token},
    }
