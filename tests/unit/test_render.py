"""`agentmem render`: offline manifests that a Kubernetes 1.35 API server accepts."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from agentmem.cli import build_parser, render
from tests.conftest import EXAMPLES, ROOT, load_yaml

KUBERNETES_VERSION = "1.35.0"
KAFKA_TOPIC_CRD = load_yaml(ROOT / "tests" / "crds" / "kafka.strimzi.io_kafkatopics.yaml")[0]


def run_render(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    parsed = build_parser().parse_args(["render", *args])
    code = render(parsed, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def kafka_topic_schema(version: str) -> dict[str, Any]:
    for v in KAFKA_TOPIC_CRD["spec"]["versions"]:
        if v["name"] == version:
            schema: dict[str, Any] = v["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(version)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.yaml")), ids=lambda p: p.parent.name)
def test_rendered_manifests_validate_against_kubernetes_1_35(path: Path) -> None:
    code, out, err = run_render("-f", str(path))
    assert code == 0, err
    manifests = [d for d in yaml.safe_load_all(out) if d]
    validated = set()
    for manifest in manifests:
        kind = manifest["kind"]
        if kind == "KafkaTopic":
            version = manifest["apiVersion"].split("/")[1]
            jsonschema.validate(manifest, kafka_topic_schema(version))
        elif kind in ("ServiceMonitor", "PrometheusRule"):
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        else:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        validated.add(kind)
    assert validated >= {
        "StatefulSet", "Service", "PodDisruptionBudget", "Deployment", "ConfigMap",
        "ServiceAccount", "NetworkPolicy",
    }  # fmt: skip


def test_basic_example_renders_every_child() -> None:
    code, out, _ = run_render("-f", str(EXAMPLES / "basic" / "cluster.yaml"), "-n", "prod")
    assert code == 0
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out) if d]
    for shard in range(3):
        assert ("StatefulSet", f"demo-shard-{shard}") in kinds
        assert ("Service", f"demo-shard-{shard}") in kinds
        assert ("PodDisruptionBudget", f"demo-shard-{shard}") in kinds
    for expected in [
        ("ServiceAccount", "demo-node"),
        ("ConfigMap", "demo-directory"), ("KafkaTopic", "agentmem.prod.demo.events"),
        ("Service", "demo"), ("Service", "demo-router"), ("Deployment", "demo-router"),
        ("NetworkPolicy", "demo-node"), ("NetworkPolicy", "demo-router"),
        ("ServiceMonitor", "demo"), ("PrometheusRule", "demo"),
    ]:  # fmt: skip
        assert expected in kinds
    assert len(kinds) == 19


def test_render_from_stdin_through_the_console_script(tmp_path: Path) -> None:
    text = (EXAMPLES / "basic" / "cluster.yaml").read_text()
    result = subprocess.run(
        [sys.executable, "-m", "agentmem", "render", "-f", "-", "--no-monitoring"],
        input=text, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert "ServiceMonitor" not in kinds and "StatefulSet" in kinds


def test_invalid_resource_names_the_field(tmp_path: Path, example: dict[str, Any]) -> None:
    example["spec"]["shards"] = 100
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(example))
    code, out, err = run_render("-f", str(path))
    assert code == 1
    assert out == ""
    assert "spec.shards must not exceed spec.partitions" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: ConfigMap\napiVersion: v1\n", "holds no AgentMemoryCluster"),
        ("a: [", "cannot read"),
    ],
)
def test_unusable_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(content)
    code, _, err = run_render("-f", str(path))
    assert code == 2 and message in err


def test_missing_file() -> None:
    code, _, err = run_render("-f", "/nonexistent/cluster.yaml")
    assert code == 2 and "cannot read /nonexistent/cluster.yaml" in err
