"""The operator's pods really run: the project's image on a real kubelet."""

from __future__ import annotations

from tests.controlplane.conftest import Operator
from tests.e2e.conftest import (
    Env,
    client_token,
    cluster,
    cluster_ca,
    eventually,
    http,
    pods,
    router_url,
    wait_ready,
)


def test_the_operator_runs_real_memory_nodes_that_keep_every_write(
    e2e: Env, e2e_namespace: str, e2e_operator: Operator
) -> None:
    kubectl, ns = e2e.plane.kubectl, e2e_namespace
    kubectl.apply(cluster(e2e, ns), ns)
    obj = wait_ready(e2e, ns)
    assert obj["status"]["durability"] == "Store"
    nodes = pods(e2e, ns, "memory-node")
    assert len(nodes) == 2
    for pod in nodes:  # every container of every pod runs, restricted Pod Security
        assert all(c["ready"] for c in pod["status"]["containerStatuses"])
        assert pod["spec"]["nodeName"] == e2e.node["AGENTMEM_E2E_NODE"]
    base = router_url(e2e, ns)
    # A projected token of the real API server, for this cluster's audience: the node
    # pods verify it with the keys the operator published to them.
    token = client_token(e2e, ns)
    tls = cluster_ca(e2e, ns)  # HTTPS: the operator's CA
    key = f"{base}/v1/tenants/acme/agents/a0/keys/k"
    status, body = http("PUT", key, {"i": 0}, context=tls)
    assert (status, body["error"]) == (401, "missing_token"), body
    automounted = kubectl.run("create", "token", "load", "-n", ns).stdout.strip()
    status, body = http("PUT", key, {"i": 0}, token=automounted, context=tls)
    assert (status, body["error"]) == (401, "wrong_audience"), body
    written = {}
    for i in range(20):
        url = f"{base}/v1/tenants/acme/agents/a{i}/keys/k"
        status, body = http("PUT", url, {"i": i}, token=token, context=tls)
        assert status == 200, body
        written[f"a{i}"] = body["version"]
    history = http("GET", f"{base}/v1/tenants/acme/agents/a0/history", token=token, context=tls)
    assert history[1]["events"][0]["actor"] == f"system:serviceaccount:{ns}:load"
    logs = kubectl.run("logs", "-n", ns, nodes[0]["metadata"]["name"], "-c", "memory-node").stdout
    assert "memory node of shard" in logs

    # A node pod is deleted: its replacement starts with an empty Redis, loads
    # its partitions from the store, and serves every acknowledged write.
    victim = nodes[0]["metadata"]["name"]
    uid = nodes[0]["metadata"]["uid"]
    kubectl.run("delete", "pod", "-n", ns, victim, "--wait=false")

    def replaced() -> bool:
        pod = kubectl.get("pod", victim, ns)
        statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
        return bool(
            pod and pod["metadata"]["uid"] != uid and statuses and all(c["ready"] for c in statuses)
        )

    eventually("the node pod to come back", replaced, timeout=120)
    for agent, version in written.items():
        url = f"{base}/v1/tenants/acme/agents/{agent}/keys/k?consistency=strong"
        status, body = http("GET", url, token=token, context=tls)
        assert status == 200, (agent, body)
        assert body["version"] == version

    # Least privilege: the pods' ServiceAccount holds no role and mounts no token,
    # and the API server's audit log shows it never made a request.
    audit = (e2e.plane.dir / "logs" / "audit.log").read_text()
    assert f'"username":"system:serviceaccount:{ns}:demo-node"' not in audit
    assert f'"username":"system:serviceaccount:{ns}:load"' not in audit  # tokens, not calls
