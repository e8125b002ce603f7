"""A real Prometheus server for the end-to-end tier (built by testenv/build.sh from
the Go module pinned in testenv/versions.env), and the scrape configuration the
Prometheus Operator would generate from the operator's ServiceMonitor.

No Prometheus Operator runs here (its CRDs and controller are not part of the test
environment), so :func:`scrape_config` stands in for its translation, restricted
to the fields agentmem's ServiceMonitor uses: Services selected by label in the
listed namespaces, the named port, the scheme, the CA and server name, the bearer
token, the interval; and the target labels it adds (``namespace``, ``service``,
``pod``, ``container``, ``endpoint``, ``job``), which the alert rules group by.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.net import free_port


def _meta(name: str) -> str:
    """A Kubernetes label name as Prometheus's service discovery spells it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def scrape_config(
    monitor: dict[str, Any], kubeconfig: Path, secrets: dict[tuple[str, str], Path]
) -> dict[str, Any]:
    """One Prometheus scrape job for ``monitor``'s (single) endpoint; ``secrets`` maps
    the (Secret, key) pairs it names to files holding their values."""
    spec = monitor["spec"]
    (endpoint,) = spec["endpoints"]
    keep = [
        {
            "source_labels": [f"__meta_kubernetes_service_label_{_meta(k)}"],
            "regex": re.escape(v),
            "action": "keep",
        }
        for k, v in spec["selector"]["matchLabels"].items()
    ]
    keep.append(
        {
            "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
            "regex": re.escape(endpoint["port"]),
            "action": "keep",
        }
    )
    labels = [
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_service_name", "service"),
        ("__meta_kubernetes_pod_name", "pod"),
        ("__meta_kubernetes_pod_container_name", "container"),
        ("__meta_kubernetes_service_name", "job"),
    ]
    relabel = keep + [
        {"source_labels": [source], "target_label": target} for source, target in labels
    ]
    relabel.append({"target_label": "endpoint", "replacement": endpoint["port"]})
    job: dict[str, Any] = {
        "job_name": f"serviceMonitor/{monitor['metadata']['namespace']}/"
        f"{monitor['metadata']['name']}/0",
        "scrape_interval": endpoint["interval"],
        "scrape_timeout": endpoint["interval"],
        "metrics_path": endpoint["path"],
        "scheme": endpoint.get("scheme", "http"),
        "kubernetes_sd_configs": [
            {
                "role": "endpointslice",
                "kubeconfig_file": str(kubeconfig),
                "namespaces": {"names": spec["namespaceSelector"]["matchNames"]},
            }
        ],
        "relabel_configs": relabel,
    }
    if "authorization" in endpoint:
        ref = endpoint["authorization"]["credentials"]
        job["authorization"] = {
            "type": endpoint["authorization"]["type"],
            "credentials_file": str(secrets[ref["name"], ref["key"]]),
        }
    if "tlsConfig" in endpoint:
        ca = endpoint["tlsConfig"]["ca"]["secret"]
        job["tls_config"] = {
            "ca_file": str(secrets[ca["name"], ca["key"]]),
            "server_name": endpoint["tlsConfig"]["serverName"],
        }
    return job


@dataclass
class PrometheusServer:
    """``prometheus`` on a loopback port with one configuration and rule file."""

    binary: str
    scrape_configs: list[dict[str, Any]]
    rule_groups: list[dict[str, Any]]
    interval: str = "1s"
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="agentmem-prom-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> PrometheusServer:
        rules = self.workdir / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": self.rule_groups}))
        config = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "rule_files": [str(rules)],
            "scrape_configs": self.scrape_configs,
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        with (self.workdir / "log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"prometheus was not ready in {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def tail(self, lines: int = 40) -> str:
        log = self.workdir / "log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of an HTTP API answer (``/api/v1/<path>``)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's samples: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("targets", state="active")["activeTargets"]
        return active

    def rules(self) -> list[dict[str, Any]]:
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["state"] == state]
