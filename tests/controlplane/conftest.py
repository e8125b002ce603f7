"""A real Kubernetes control plane for the tests, and the operator as a real process.

The session starts etcd, kube-apiserver (RBAC, PodSecurity), kube-controller-manager,
kube-scheduler and kwok with six fake nodes in three zones on 127.0.0.1
(``testenv/controlplane.sh``), and tears it all down at the end, also after a
failure. The binaries come from ``testenv/build.sh`` (``make testenv``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
from tests.net import free_port

TESTENV = ROOT / "testenv"
pytestmark = pytest.mark.controlplane


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "controlplane" in str(item.path):
            item.add_marker(pytest.mark.controlplane)


@dataclass
class Kubectl:
    """kubectl of the test control plane."""

    binary: str
    kubeconfig: Path

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        result = self.run("get", kind, name, "-n", namespace, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def items(self, kind: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", kind, "-n", namespace]
        if selector:
            args += ["-l", selector]
        items: list[dict[str, Any]] = self.json(*args)["items"]
        return items

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], namespace: str) -> None:
        docs = obj if isinstance(obj, list) else [obj]
        self.run(
            "apply", "--server-side", "--field-manager=tests", "-n", namespace, "-f", "-",
            stdin=yaml.safe_dump_all(docs),
        )  # fmt: skip


@dataclass
class ControlPlane:
    dir: Path
    env: dict[str, str]
    kubectl: Kubectl

    @property
    def kubeconfig(self) -> Path:
        return self.kubectl.kubeconfig


def _binaries() -> dict[str, str]:
    result = subprocess.run(
        ["bash", str(TESTENV / "build.sh"), "--print-env"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(
            "the control-plane binaries are not built: run `make testenv` "
            f"(testenv/build.sh)\n{result.stderr}"
        )
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@contextmanager
def control_plane(workdir: Path, fake_nodes: int = 6) -> Iterator[ControlPlane]:
    """A control plane in ``workdir`` with ``fake_nodes`` kwok nodes, torn down after."""
    binaries = _binaries()
    script = str(TESTENV / "controlplane.sh")
    up = subprocess.run(
        ["bash", script, "up", str(workdir), "--watch-pid", str(os.getpid())],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "AGENTMEM_NODES": str(fake_nodes)},
    )  # fmt: skip
    if up.returncode != 0:
        subprocess.run(["bash", script, "down", str(workdir)], check=False)
        pytest.fail(f"the control plane did not start:\n{up.stderr[-4000:]}")
    try:
        env = dict(
            line.split("=", 1)
            for line in (workdir / "env").read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
        kubectl = Kubectl(binaries["AGENTMEM_KUBECTL"], workdir / "kubeconfig")
        plane = ControlPlane(workdir, {**binaries, **env}, kubectl)
        kubectl.run("apply", "--server-side", "-f", str(ROOT / "crds"))
        kubectl.run("apply", "--server-side", "-f", str(ROOT / "tests" / "crds"))
        kubectl.run(
            "wait", "--for=condition=Established", "--timeout=60s",
            "crd/agentmemoryclusters.agentmem.io", "crd/kafkatopics.kafka.strimzi.io",
        )  # fmt: skip
        # The OpenAPI document (kubectl explain, field validation) follows a moment later.
        wait_until(
            "the CRD's OpenAPI schema to be published",
            lambda: kubectl.run("explain", "agentmemoryclusters", check=False).returncode == 0,
            timeout=60,
        )
        yield plane
    finally:
        subprocess.run(["bash", script, "down", str(workdir)], check=False, timeout=120)


@pytest.fixture(scope="session")
def controlplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with control_plane(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane


@pytest.fixture
def namespace(controlplane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    labels = getattr(request, "param", {}) or {}
    ns: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    if labels:
        ns["metadata"]["labels"] = labels
    controlplane.kubectl.run("apply", "-f", "-", stdin=yaml.safe_dump(ns))
    controlplane.kubectl.run("wait", "--for=jsonpath={.status.phase}=Active", f"namespace/{name}")
    yield name
    controlplane.kubectl.run("delete", "namespace", name, "--wait=false", check=False)


class Operator:
    """`agentmem operator` as a real process, watching one namespace."""

    def __init__(
        self, plane: ControlPlane, namespace: str, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.plane = plane
        self.namespace = namespace
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.liveness_port = free_port()
        self.metrics_port = free_port()

    def start(self) -> Operator:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.plane.kubeconfig),
            "AGENTMEM_RESYNC_SECONDS": "1",
            "AGENTMEM_LAG_SECONDS": "1",
            **self.env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "agentmem", "operator", "-n", self.namespace,
                    "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                    "--metrics-port", str(self.metrics_port),
                ],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def metrics(self) -> dict[str, float]:
        """The operator's /metrics: each sample (name with labels) and its value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        samples = (line.rpartition(" ") for line in text.splitlines() if line[:1] not in "#")
        return {name: float(value) for name, _, value in samples if name}

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def operator(
    controlplane: ControlPlane, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Operator]:
    op = Operator(controlplane, namespace, tmp_path / "operator.log").start()
    yield op
    op.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"--- operator log ---\n{op.tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def wait_until(
    what: str, check: Callable[[], Any], timeout: float = 90, interval: float = 0.3
) -> Any:
    """Poll until check() returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
