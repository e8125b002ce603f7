"""Tokens of the real API server: the operator publishes its issuer, a node verifies.

The operator copies the API server's service-account issuer and keys into the
``<cluster>-auth`` ConfigMap; a memory node (a local process, reading that
ConfigMap's ``auth.json`` as it would from its mounted volume) then accepts a
projected token with the cluster's audience and refuses the rest.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agentmem.model import naming
from agentmem.resources.auth import OPERATOR_ISSUER, SIGNING_KEY
from agentmem.runtime.auth import SigningKey
from tests.controlplane.conftest import ControlPlane, Operator, wait_until
from tests.controlplane.test_operator import cluster
from tests.net import free_port

KUBERNETES_ISSUER = "https://kubernetes.default.svc.cluster.local"


def call(base: str, method: str, path: str, token: str, body: bytes | None = None) -> Any:
    request = urllib.request.Request(
        f"{base}{path}", data=body, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def start_node(tmp_path: Path, auth: Path, namespace: str) -> tuple[subprocess.Popen[bytes], str]:
    """A memory node (embedded log, state in memory) that trusts ``auth``."""
    port = free_port()
    with (tmp_path / "node.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentmem", "node", "--log", f"sqlite:{tmp_path / 'log.db'}",
             "--state", "memory", "--partitions", "4", "--listen", f"127.0.0.1:{port}",
             "--cluster", "demo", "--namespace", namespace, "--auth-file", str(auth)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_until("the node ready", ready, timeout=30)
    return proc, base


def test_projected_service_account_tokens_of_the_real_api_server(
    controlplane: ControlPlane, operator: Operator, tmp_path: Path
) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    for account in ("planner", "globex-bot", "stranger"):
        kubectl.run("create", "serviceaccount", account, "-n", ns)
    grants = [
        {"name": "planner", "tenant": "acme", "agents": ["plan-*"], "scopes": ["read", "write"]},
        {"name": "globex-bot", "tenant": "globex", "scopes": ["read", "write"]},
    ]
    store = {"urlSecret": {"name": "pg", "key": "url"}}
    kubectl.apply(cluster(auth={"serviceAccounts": grants}, store=store), ns)

    def published() -> dict[str, Any] | None:
        cm = kubectl.get("configmap", naming.auth_name("demo"), ns)
        if cm is None:
            return None
        doc: dict[str, Any] = json.loads(cm["data"][naming.AUTH_KEY])
        return doc if any(i["issuer"] == KUBERNETES_ISSUER for i in doc["issuers"]) else None

    doc = wait_until("the auth ConfigMap with the API server's issuer", published)
    assert doc["audience"] == f"agentmem.io/{ns}/demo"
    assert {"namespace": ns, **grants[0]} in doc["serviceAccounts"]
    # The nodes and the router mount it and are told where it is. (The ConfigMap is
    # published before the pods that mount it: the StatefulSet may follow a moment later.)
    sts = wait_until(
        "the first StatefulSet",
        lambda: kubectl.get("statefulset", naming.shard_name("demo", 0), ns),
    )
    pod = sts["spec"]["template"]["spec"]
    assert any(v.get("configMap", {}).get("name") == "demo-auth" for v in pod["volumes"])
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["AGENTMEM_AUTH_FILE"] == "/etc/agentmem/auth/auth.json"
    # The signing key stays in the Secret: the nodes get only public keys.
    assert "signing" not in json.dumps(doc) and '"d"' not in json.dumps(doc)

    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps(doc))
    proc, base = start_node(tmp_path, auth, ns)
    try:
        audience = f"agentmem.io/{ns}/demo"

        def token(account: str, *audiences: str) -> str:
            args = ["create", "token", account, "-n", ns, "--duration", "10m"]
            args += [f"--audience={a}" for a in audiences]
            return kubectl.run(*args).stdout.strip()

        planner = token("planner", audience)
        status, body = call(base, "PUT", "/v1/tenants/acme/agents/plan-1/keys/k", planner, b"1")
        assert status == 200, body
        history = call(base, "GET", "/v1/tenants/acme/agents/plan-1/history", planner)[1]
        assert history["events"][0]["actor"] == f"system:serviceaccount:{ns}:planner"
        # Outside its grant: another agent, another tenant.
        assert call(base, "PUT", "/v1/tenants/acme/agents/bot-1/keys/k", planner, b"1")[0] == 403
        globex = token("globex-bot", audience)
        status, body = call(base, "GET", "/v1/tenants/acme/agents/plan-1/keys/k", globex)
        assert status == 403 and "globex" in body["message"], body
        # An automounted-style token (the API server's own audience) does not count.
        status, body = call(base, "GET", "/v1/tenants/acme/agents/plan-1/keys/k",
                            token("planner"))  # fmt: skip
        assert (status, body["error"]) == (401, "wrong_audience"), body
        # Authenticated by the API server, granted nothing here.
        status, body = call(base, "GET", "/v1/tenants/acme/agents/plan-1/keys/k",
                            token("stranger", audience))  # fmt: skip
        assert status == 403 and "spec.auth.serviceAccounts" in body["message"], body
        # Another issuer, even with the right audience and claims.
        evil = SigningKey.generate().mint("https://evil.example", audience, "eve",
                                          tenant="acme", scopes=["read"])  # fmt: skip
        status, body = call(base, "GET", "/v1/tenants/acme/agents/plan-1/keys/k", evil)
        assert (status, body["error"]) == (401, "untrusted_issuer"), body
        # The operator's own key (in its Secret) signs tokens the node accepts, while
        # they last: a status token works, an expired one does not.
        secret = kubectl.get("secret", naming.auth_name("demo"), ns)
        assert secret is not None
        key = SigningKey.from_pem(base64.b64decode(secret["data"][SIGNING_KEY]))
        fresh = key.mint(OPERATOR_ISSUER, audience, "agentmem-operator", scopes=["status"])
        status, body = call(base, "GET", "/v1/status", fresh)
        assert status == 200, body
        expired = key.mint(OPERATOR_ISSUER, audience, "agentmem-operator", scopes=["status"],
                           now=time.time() - 3600, ttl=600)  # fmt: skip
        status, body = call(base, "GET", "/v1/status", expired)
        assert (status, body["error"]) == (401, "expired_token"), body
        assert call(base, "GET", "/v1/status", planner)[0] == 403  # no status scope
        # Prometheus's token, kept by the operator in the Secret the ServiceMonitor names.
        metrics = kubectl.get("secret", "demo-metrics", ns)
        assert metrics is not None
        prometheus = base64.b64decode(metrics["data"]["token"]).decode()
        request = urllib.request.Request(
            f"{base}/metrics", headers={"Authorization": f"Bearer {prometheus}"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200 and b"memory_node_read_latency_seconds" in resp.read()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
