"""Generate the AgentMemoryCluster CRD from the typed model.

The pydantic models carry every description, default, bound and CEL rule; this
module turns their JSON schema into a structural OpenAPI v3 schema and wraps it
in a CustomResourceDefinition. ``crds/`` holds its output (``make manifests``),
and a test fails when the two differ.
"""

from __future__ import annotations

import copy
from typing import Any

from agentmem.model import naming
from agentmem.model.spec import AgentMemoryClusterSpec
from agentmem.model.status import AgentMemoryClusterStatus

_DNS_1035 = "^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline references and drop what a structural schema does not allow."""
    node = dict(schema)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = copy.deepcopy(defs[ref.rsplit("/", 1)[-1]])
        # Keywords beside the reference (the field's description, default, rules) win.
        extra_rules = node.pop("x-kubernetes-validations", None)
        target.update(node)
        if extra_rules:
            target["x-kubernetes-validations"] = [
                *target.get("x-kubernetes-validations", []),
                *extra_rules,
            ]
        return _structural(target, defs)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        branches = [b for b in any_of if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {any_of}")
        merged = {**branches[0], **node}
        if merged.get("default", ...) is None:
            del merged["default"]
        return _structural(merged, defs)
    node.pop("title", None)
    if node.get("default", ...) is None:
        del node["default"]
    if "properties" in node:
        node["type"] = "object"
        node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
        node.pop("additionalProperties", None)
    elif node.get("type") == "object":
        extra = node.get("additionalProperties")
        if extra is True or extra == {}:
            node.pop("additionalProperties")
            node["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict):
            node["additionalProperties"] = _structural(extra, defs)
    if "items" in node:
        node["items"] = _structural(node["items"], defs)
    return node


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """The structural schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyShards",
         "description": "Shards whose replicas are all ready."},
        {"name": "Desired", "type": "integer", "jsonPath": ".spec.shards",
         "description": "Desired shards."},
        {"name": "Epoch", "type": "integer", "jsonPath": ".status.directoryEpoch",
         "description": "Committed directory epoch."},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
         "description": "Summary of the conditions."},
        {"name": "Lag", "type": "string", "jsonPath": ".status.eventLag",
         "description": "How far the memory nodes are behind the event log."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]  # fmt: skip


def custom_resource_definition() -> dict[str, Any]:
    """The AgentMemoryCluster CustomResourceDefinition."""
    spec = openapi_schema(AgentMemoryClusterSpec)
    status = openapi_schema(AgentMemoryClusterStatus)
    max_name = naming.MAX_CLUSTER_NAME_LENGTH
    root: dict[str, Any] = {
        "type": "object",
        "description": (
            "An agentmem cluster: sharded, event-sourced memory for AI agents. The operator "
            "creates a StatefulSet per shard (memory node plus Redis), the event topic, the "
            "shard directory and a router."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            # name is declared so the rules on it can say where the error is
            "metadata": {"type": "object", "properties": {"name": {"type": "string"}}},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {max_name}",
                "message": (
                    f"metadata.name must be at most {max_name} characters, to leave room for "
                    "the longest child name"
                ),
                "reason": "FieldValueInvalid",
                "fieldPath": ".metadata.name",
            },
            {
                "rule": f"self.metadata.name.matches('{_DNS_1035}')",
                "message": (
                    "metadata.name must be a DNS-1035 label: lowercase letters, digits and '-', "
                    "starting with a letter"
                ),
                "reason": "FieldValueInvalid",
                "fieldPath": ".metadata.name",
            },
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{naming.PLURAL}.{naming.GROUP}",
            "labels": {naming.LABEL_NAME: naming.APP_NAME, naming.LABEL_PART_OF: naming.APP_NAME},
        },
        "spec": {
            "group": naming.GROUP,
            "names": {
                "kind": naming.KIND,
                "listKind": f"{naming.KIND}List",
                "plural": naming.PLURAL,
                "singular": naming.SINGULAR,
                "shortNames": list(naming.SHORT_NAMES),
                "categories": ["agentmem"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": naming.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.shards",
                            "statusReplicasPath": ".status.shards",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                }
            ],
        },
    }
