"""How agents reach the cluster and what its pods may do: the client Service,
the router, the nodes' RBAC, and the NetworkPolicy."""

from __future__ import annotations

from typing import Any

from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources._meta import container_security, metadata, pod_security, resources
from agentmem.resources.shard import (
    TLS_MOUNT,
    common_env,
    config_mounts,
    config_volumes,
    http_probe,
    kafka_env,
    tls_volume,
)

#: The operator's pods (the chart's app.kubernetes.io/name).
OPERATOR = "agentmem-operator"


def client_service(cluster: AgentMemoryCluster) -> dict[str, Any]:
    """A Service over every memory node; nodes redirect requests they do not own."""
    meta = metadata(
        cluster,
        naming.client_service_name(cluster.name),
        naming.COMPONENT_NODE,
        **{naming.SCRAPE_LABEL: "true"},
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(cluster.name, naming.COMPONENT_NODE),
            "ports": [
                {"name": "http", "port": naming.NODE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def router_deployment(cluster: AgentMemoryCluster) -> dict[str, Any]:
    """The stateless router: follows the directory and forwards to the owning shard."""
    name = naming.router_name(cluster.name)
    meta = metadata(cluster, name, naming.COMPONENT_ROUTER)
    spec = cluster.spec
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}, *config_mounts(cluster)]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        *config_volumes(cluster),
    ]
    tls = tls_volume(cluster)
    if tls is not None:
        volumes.append(tls)
        mounts.append({"name": "kafka-tls", "mountPath": TLS_MOUNT, "readOnly": True})
    container = {
        "name": "router",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["router"],
        "ports": [{"name": "http", "containerPort": naming.ROUTER_PORT, "protocol": "TCP"}],
        "env": [
            *common_env(cluster),
            {"name": "AGENTMEM_LISTEN", "value": f"0.0.0.0:{naming.ROUTER_PORT}"},
            *kafka_env(cluster),
        ],
        "readinessProbe": http_probe(cluster, "/readyz", period=5, failures=3),
        "livenessProbe": http_probe(cluster, "/livez", period=10, failures=3),
        "resources": resources(spec.router.resources),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }
    selector = naming.selector_labels(cluster.name, naming.COMPONENT_ROUTER)
    pod_spec: dict[str, Any] = {
        "serviceAccountName": naming.node_account_name(cluster.name),
        # Routers read their directory and issuers from mounted files: no API access.
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": volumes,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": naming.ZONE_LABEL,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
                "matchLabelKeys": ["pod-template-hash"],
            }
        ],
    }
    if spec.placement.node_selector:
        pod_spec["nodeSelector"] = dict(spec.placement.node_selector)
    if spec.placement.tolerations:
        pod_spec["tolerations"] = [t.to_api() for t in spec.placement.tolerations]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": spec.router.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": dict(meta["labels"])}, "spec": pod_spec},
        },
    }


def router_service(cluster: AgentMemoryCluster) -> dict[str, Any]:
    name = naming.router_name(cluster.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            cluster, name, naming.COMPONENT_ROUTER, **{naming.SCRAPE_LABEL: "true"}
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(cluster.name, naming.COMPONENT_ROUTER),
            "ports": [
                {
                    "name": "http",
                    "port": naming.ROUTER_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }


def service_account(cluster: AgentMemoryCluster) -> dict[str, Any]:
    name = naming.node_account_name(cluster.name)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(cluster, name, naming.COMPONENT_ACCESS),
        "automountServiceAccountToken": False,
    }


def network_policy(cluster: AgentMemoryCluster) -> dict[str, Any]:
    """Who reaches the memory nodes: their HTTP port, from the cluster's routers, the
    operator (the warm-up handshake), and pods labelled ``agentmem.io/client:
    <cluster>`` in any namespace (agents routing directly, Prometheus).

    Everything else is refused where a network plugin enforces NetworkPolicies.
    Redis listens on loopback inside each pod: no policy opens its port. The
    kubelet's probes come from the node, which policies do not govern.
    """
    anywhere: dict[str, Any] = {"namespaceSelector": {}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            cluster, naming.network_policy_name(cluster.name), naming.COMPONENT_ACCESS
        ),
        "spec": {
            "podSelector": {
                "matchLabels": naming.selector_labels(cluster.name, naming.COMPONENT_NODE)
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "podSelector": {
                                "matchLabels": naming.selector_labels(
                                    cluster.name, naming.COMPONENT_ROUTER
                                )
                            }
                        },
                        {**anywhere, "podSelector": {"matchLabels": {naming.LABEL_NAME: OPERATOR}}},
                        {
                            **anywhere,
                            "podSelector": {"matchLabels": {naming.CLIENT_LABEL: cluster.name}},
                        },
                    ],
                    "ports": [{"protocol": "TCP", "port": "http"}],
                }
            ],
        },
    }


def router_network_policy(cluster: AgentMemoryCluster) -> dict[str, Any]:
    """The routers are the cluster's front door: their HTTP port is open to all."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cluster, naming.router_name(cluster.name), naming.COMPONENT_ACCESS),
        "spec": {
            "podSelector": {
                "matchLabels": naming.selector_labels(cluster.name, naming.COMPONENT_ROUTER)
            },
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": "http"}]}],
        },
    }
