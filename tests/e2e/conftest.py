"""The end-to-end tier: the operator drives memory nodes that really run.

A control plane without fake nodes (testenv/controlplane.sh), a real node
(testenv/e2e.sh: containerd, runc, a kubelet, CoreDNS) running the project's
own image built from its Dockerfile, and the Kafka broker and PostgreSQL
listening on the bridge the pods are attached to. The operator runs as a real
process. Needs root (a kubelet, a bridge); `make testenv` installs the Debian
packages and builds the binaries, the first run builds the images.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.controlplane.conftest import ControlPlane, Operator, control_plane, wait_until
from tests.kafka.conftest import Broker
from tests.net import free_port
from tests.postgres import PostgresServer

E2E = ROOT / "testenv" / "e2e.sh"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@dataclass
class Env:
    plane: ControlPlane
    node: dict[str, str]  # testenv/e2e.sh's env: images, bridge address
    kafka: Broker
    postgres: PostgresServer

    @property
    def bridge(self) -> str:
        return self.node["AGENTMEM_E2E_BRIDGE_IP"]

    @property
    def image(self) -> str:
        return self.node["AGENTMEM_E2E_IMAGE"]

    @property
    def redis_image(self) -> str:
        return self.node["AGENTMEM_E2E_BASE_IMAGE"]


@contextmanager
def environment(workdir: Path) -> Iterator[Env]:
    """The e2e environment in ``workdir``: control plane, real node, broker, PostgreSQL."""
    if os.geteuid() != 0:
        pytest.fail("the e2e tier needs root: it runs a kubelet and a bridge")
    images = subprocess.run(
        ["bash", str(E2E), "images"], capture_output=True, text=True, check=False, timeout=1800
    )
    if images.returncode != 0:
        pytest.fail(f"the e2e images could not be built:\n{images.stderr[-4000:]}")
    (workdir / "plane").mkdir(parents=True, exist_ok=True)
    with control_plane(workdir / "plane", fake_nodes=0) as plane:
        node_dir = workdir / "node"
        watch = ["--watch-pid", str(os.getpid())]
        up = subprocess.run(
            ["bash", str(E2E), "up", str(node_dir), str(plane.dir), *watch],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        try:
            if up.returncode != 0:
                pytest.fail(f"the e2e node did not start:\n{up.stderr[-4000:]}")
            node = dict(
                line.split("=", 1)
                for line in (node_dir / "env").read_text().splitlines()
                if "=" in line
            )
            bridge = node["AGENTMEM_E2E_BRIDGE_IP"]
            (workdir / "kafka").mkdir(exist_ok=True)
            broker = Broker(workdir / "kafka", free_port(), free_port(), host=bridge)
            broker.start()
            postgres = PostgresServer(host=bridge).init()
            try:
                yield Env(plane, node, broker, postgres)
            finally:
                postgres.destroy()
                broker.stop()
        finally:
            subprocess.run(["bash", str(E2E), "down", str(node_dir)], check=False, timeout=180)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with environment(tmp_path_factory.mktemp("e2e")) as env:
        yield env


@pytest.fixture
def e2e_namespace(e2e: Env) -> Iterator[str]:
    """A namespace of its own per test, at the restricted Pod Security level."""
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    kubectl = e2e.plane.kubectl
    kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(ns))
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def e2e_operator(
    e2e: Env, e2e_namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    op = Operator(e2e.plane, e2e_namespace, tmp_path / "operator.log").start()
    yield op
    op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- operator log ---\n{op.tail()}")


#: The ServiceAccount whose projected tokens the tests' clients use.
CLIENT_ACCOUNT = "load"


def cluster(e2e: Env, namespace: str, name: str = "demo", **spec: Any) -> list[dict[str, Any]]:
    """An AgentMemoryCluster of the project's image, with its store's Secret and the
    ServiceAccount of the tests' clients (granted every tenant)."""
    schema = f"e2e_{namespace.replace('-', '_')}_{name}"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{name}-store"},
        "stringData": {"url": e2e.postgres.url},
    }
    body: dict[str, Any] = {
        "shards": 2,
        "replicasPerShard": 1,
        "partitions": 16,
        "image": e2e.image,
        "imagePullPolicy": "Never",
        "cache": {"image": e2e.redis_image, "memoryLimit": "256Mi", "cpuRequest": "10m"},
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "router": {
            "replicas": 1,
            "resources": {
                "requests": {"cpu": "10m", "memory": "64Mi"},
                "limits": {"memory": "256Mi"},
            },
        },
        "store": {
            "urlSecret": {"name": f"{name}-store", "key": "url"},
            "schemaName": schema,
            "tls": {"mode": "disable"},
        },
        "eventLog": {
            "kafka": {
                "bootstrapServers": e2e.kafka.bootstrap,
                "topicManagement": "direct",
                "replicas": 1,
                "minInSyncReplicas": 1,
            }
        },
        "auth": {
            "serviceAccounts": [
                {"name": CLIENT_ACCOUNT, "tenant": "*", "scopes": ["read", "write", "metrics"]}
            ]
        },
        **spec,
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": CLIENT_ACCOUNT}}
    resource = {
        "apiVersion": "agentmem.io/v1alpha1",
        "kind": "AgentMemoryCluster",
        "metadata": {"name": name},
        "spec": body,
    }
    return [secret, account, resource]


def client_token(
    e2e: Env, namespace: str, name: str = "demo", account: str = CLIENT_ACCOUNT
) -> str:
    """A projected token of the API server for ``account``, with the cluster's audience."""
    return e2e.plane.kubectl.run(
        "create", "token", account, "-n", namespace, "--duration", "2h",
        f"--audience=agentmem.io/{namespace}/{name}",
    ).stdout.strip()  # fmt: skip


def wait_ready(
    e2e: Env, namespace: str, name: str = "demo", timeout: float = 180
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = e2e.plane.kubectl.get("amc", name, namespace) or {}
        status = obj.get("status") or {}
        for c in status.get("conditions", []):
            if (
                c["type"] == "Ready"
                and c["status"] == "True"
                and c.get("observedGeneration") == obj["metadata"]["generation"]
            ):
                return obj
        return None

    found: dict[str, Any] = wait_until(f"{namespace}/{name} Ready", ready, timeout=timeout)
    return found


def pods(e2e: Env, namespace: str, component: str) -> list[dict[str, Any]]:
    return e2e.plane.kubectl.items("pods", namespace, f"app.kubernetes.io/component={component}")


def router_url(e2e: Env, namespace: str) -> str:
    running = [
        p for p in pods(e2e, namespace, "router")
        if p["status"].get("podIP") and p["status"].get("phase") == "Running"
    ]  # fmt: skip
    assert running, "no router pod runs"
    return f"https://{running[0]['status']['podIP']}:7070"


def cluster_ca(e2e: Env, namespace: str, name: str = "demo") -> ssl.SSLContext:
    """A context that trusts the cluster's CA (the operator's Secret). Tests reach pods
    by address, so the CA is checked and the name is not."""
    secret = e2e.plane.kubectl.get("secret", f"{name}-ca", namespace)
    assert secret is not None, "no CA Secret"
    context = ssl.create_default_context(cadata=base64.b64decode(secret["data"]["ca.crt"]).decode())
    context.check_hostname = False
    return context


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
    token: str | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"null")
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def eventually(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    return wait_until(what, check, timeout=timeout, interval=0.5)


def sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def kill_container(
    e2e: Env, namespace: str, pod: str, container: str, signal: str = "KILL"
) -> bool:
    """Send a signal to a container's process from the host (containerd), as the kernel
    would; the kubelet restarts it in the same pod. False when it does not run."""
    obj = e2e.plane.kubectl.get("pod", pod, namespace) or {}
    for status in (obj.get("status") or {}).get("containerStatuses") or []:
        cid = status.get("containerID", "")
        if (
            status["name"] == container
            and cid.startswith("containerd://")
            and status.get("state", {}).get("running")
        ):
            result = subprocess.run(
                ["ctr", "--address", e2e.node["AGENTMEM_E2E_CONTAINERD"], "-n", "k8s.io",
                 "tasks", "kill", "-s", f"SIG{signal}", cid.removeprefix("containerd://")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            return result.returncode == 0
    return False


class RouterAddress:
    """The router's URL for a workload, asked of the API at most every few seconds."""

    def __init__(self, e2e: Env, namespace: str, ttl: float = 5.0) -> None:
        self.e2e, self.namespace, self.ttl = e2e, namespace, ttl
        self._url, self._at = "", 0.0

    def __call__(self) -> str:
        if not self._url or time.monotonic() - self._at > self.ttl:
            self._url, self._at = router_url(self.e2e, self.namespace), time.monotonic()
        return self._url
