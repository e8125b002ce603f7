"""The CRD is generated from the typed model; the two cannot disagree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agentmem.model import (
    AgentMemoryCluster,
    InvalidClusterError,
    custom_resource_definition,
    naming,
)
from agentmem.model.spec import AgentMemoryClusterSpec
from tests.conftest import EXAMPLES, ROOT, load_yaml

CRD_FILE = ROOT / "crds" / "agentmem.io_agentmemoryclusters.yaml"


def schema() -> dict[str, Any]:
    crd = custom_resource_definition()
    result: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        out += walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        out += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_crds_folder_is_generated_from_the_model() -> None:
    on_disk = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    assert on_disk == custom_resource_definition(), "crds/ is stale: run `make manifests`"


def test_every_field_has_a_description() -> None:
    spec_and_status = [(p, n) for p, n in walk(schema()) if p.startswith((".spec.", ".status."))]
    missing = [
        p for p, n in spec_and_status if "description" not in n and not p.endswith(("[]", "{}"))
    ]
    assert not missing


def test_schema_is_structural() -> None:
    for path, node in walk(schema()):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert node.get("additionalProperties") is not False, path
        if path.startswith(".spec") and path != ".spec":
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path


def test_every_number_is_bounded() -> None:
    for path, node in walk(schema()):
        if path.startswith(".spec") and node.get("type") == "integer":
            assert "minimum" in node and "maximum" in node, path


def test_cel_rules_name_their_fields() -> None:
    rules = [
        (path, rule)
        for path, node in walk(schema())
        for rule in node.get("x-kubernetes-validations", [])
    ]
    messages = " | ".join(r["message"] for _, r in rules)
    for needle in (
        "spec.partitions is immutable",
        "spec.shards must not exceed spec.partitions",
        f"metadata.name must be at most {naming.MAX_CLUSTER_NAME_LENGTH} characters",
        "spec.eventLog.kafka.strimzi.clusterName is required",
        "spec.eventLog.kafka.minInSyncReplicas must not exceed",
        "spec.placement.zones must be unique",
    ):
        assert needle in messages
    for _, rule in rules:
        assert "spec." in rule["message"] or "metadata.name" in rule["message"]


def test_subresources_and_columns() -> None:
    version = custom_resource_definition()["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.shards"
    assert version["subresources"]["status"] == {}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Ready": ".status.readyShards",
        "Desired": ".spec.shards",
        "Epoch": ".status.directoryEpoch",
        "Phase": ".status.phase",
        "Lag": ".status.eventLag",
        "Age": ".metadata.creationTimestamp",
    }
    assert custom_resource_definition()["spec"]["names"]["shortNames"] == ["amc"]


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it."""
    if node.get("type") != "object" or not isinstance(value, dict):
        return value
    out = dict(value)
    for key, child in (node.get("properties") or {}).items():
        if key not in out and "default" in child:
            out[key] = child["default"]
        if key in out:
            out[key] = apply_defaults(child, out[key])
    return out


def test_crd_defaults_equal_model_defaults() -> None:
    minimal = {"eventLog": {"kafka": {"bootstrapServers": "k:9092", "topicManagement": "direct"}}}
    defaulted = apply_defaults(schema()["properties"]["spec"], minimal)
    model = AgentMemoryClusterSpec.model_validate(minimal).to_api()
    assert prune_empty(defaulted) == prune_empty(model)


def prune_empty(value: Any) -> Any:
    """Empty lists and maps mean the same as absent ones."""
    if isinstance(value, dict):
        pruned = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, [])}
    return value


def test_longest_child_name_fits() -> None:
    name = "a" * naming.MAX_CLUSTER_NAME_LENGTH
    sts = naming.shard_name(name, naming.MAX_SHARDS - 1)
    assert len(sts) + len("-0123456789") <= 63  # controller-revision-hash label value


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/*.yaml")), ids=lambda p: p.parent.name)
def test_examples_validate_against_the_crd(path: Path) -> None:
    for doc in load_yaml(path):
        if doc.get("kind") != naming.KIND:
            continue
        jsonschema.validate(doc, schema())
        AgentMemoryCluster.from_api(doc)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"spec": {"shards": 0}}, "shards"),
        ({"spec": {"shards": 65}}, "spec.shards must not exceed spec.partitions"),
        ({"spec": {"consistency": "linearizable"}}, "consistency"),
        ({"spec": {"unknownField": 1}}, "unknownField"),
        ({"metadata": {"name": "x" * 43}}, "metadata.name must be at most 42"),
        (
            {"spec": {"eventLog": {"kafka": {"bootstrapServers": "k:9092"}}}},
            "strimzi.clusterName is required",
        ),
    ],
)
def test_invalid_resources_name_the_field(
    example: dict[str, Any], patch: dict[str, Any], message: str
) -> None:
    doc = merge(example, patch)
    with pytest.raises(InvalidClusterError, match=message):
        AgentMemoryCluster.from_api(doc)


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kafka":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
