"""Packaging without a cluster: generated copies in sync, chart values, RBAC, image, health.

The control-plane tier (tests/controlplane/test_packaging.py) installs all of it.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import lupa
import pytest
import yaml

from agentmem import cli
from agentmem.controller._kube import path as api_path
from agentmem.controller.handlers import KAFKA_TOPIC_APIS, WATCHED
from agentmem.controller.reconcile import _PRUNABLE
from agentmem.model import AgentMemoryCluster, naming
from agentmem.model.spec import AgentMemoryClusterSpec
from agentmem.resources import children
from tests.conftest import EXAMPLES, ROOT, load_manifest_generator, load_yaml

gen = load_manifest_generator()
CHART = ROOT / "charts" / "agentmem-operator"
BASE = ROOT / "manifests" / "base"


def base_docs(name: str) -> list[dict[str, Any]]:
    return load_yaml(BASE / name)


def base_deployment() -> dict[str, Any]:
    (deployment,) = base_docs("deployment.yaml")
    return deployment


def operator_container() -> dict[str, Any]:
    (container,) = base_deployment()["spec"]["template"]["spec"]["containers"]
    return container


# One CRD source ----------------------------------------------------------------------


def test_chart_crds_and_base_crds_are_generated_from_crds_folder() -> None:
    outputs = gen.static_outputs()
    assert outputs, "nothing generated"
    stale = [str(p.relative_to(ROOT)) for p in gen.stale_files(outputs)]
    assert not stale, f"stale, run `make manifests`: {stale}"
    assert {p.name for p in (CHART / "templates" / "crds").glob("*.yaml")} == {
        p.name for p in (ROOT / "crds").glob("*.yaml")
    }


def test_chart_crd_template_is_gated_and_kept() -> None:
    for source in gen.crd_sources():
        text = (CHART / "templates" / "crds" / source.name).read_text(encoding="utf-8")
        lines = text.splitlines()
        assert lines[1] == "{{- if .Values.crds.install }}" and lines[-1] == "{{- end }}"
        assert "    helm.sh/resource-policy: keep" in lines
        # Without its template lines, the template is the CRD of crds/.
        plain = "\n".join(line for line in lines if not line.strip().startswith("{{"))
        assert yaml.safe_load(plain)["spec"] == yaml.safe_load(source.read_text())["spec"]


def test_bundle_is_the_base_in_one_file() -> None:
    on_disk = gen.BUNDLE.read_text(encoding="utf-8")
    assert on_disk == gen.bundle_from_disk(), "manifests/install.yaml is stale: make manifests"
    kinds = [d["kind"] for d in load_yaml(gen.BUNDLE)]
    assert kinds == [
        "Namespace", "CustomResourceDefinition", "ServiceAccount",
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment",
    ]  # fmt: skip
    dashboards = next(d for d in load_yaml(gen.BUNDLE) if d["kind"] == "ConfigMap")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"  # Grafana's sidecar
    assert sorted(dashboards["data"]) == ["agentmem-cluster.json", "agentmem-operator.json"]


def test_base_holds_exactly_its_kustomization() -> None:
    assert (BASE / "kustomization.yaml").read_text(encoding="utf-8") == gen.kustomization()
    files = {str(p.relative_to(BASE)) for p in BASE.rglob("*.yaml")}
    assert files == {"kustomization.yaml", *gen.base_resources()}
    assert (BASE / "namespace.yaml").read_text(encoding="utf-8") == gen.namespace_manifest()
    for doc in load_yaml(gen.BUNDLE):
        labels = doc["metadata"].get("labels", {})
        assert "helm.sh/chart" not in labels and labels.get(naming.LABEL_MANAGED_BY) != "Helm"


def test_example_overlay_builds_on_the_base() -> None:
    overlay = ROOT / "manifests" / "overlays" / "example"
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../../base"]
    for patch in kustomization.get("patches", []):
        assert (overlay / patch["path"]).is_file()


# Chart values -----------------------------------------------------------------------


def chart_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over the chart's."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = yaml.safe_load((CHART / "values.schema.json").read_text())
    return schema


def test_every_values_key_has_a_comment() -> None:
    key = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):")
    previous = ""
    missing = []
    for number, line in enumerate((CHART / "values.yaml").read_text().splitlines(), 1):
        match = key.match(line)
        if match and not previous.strip().startswith("#"):
            missing.append(f"{number}: {line.strip()}")
        if line.strip():
            previous = line
    assert not missing, f"values.yaml keys without a comment: {missing}"


def test_values_validate_against_their_schema() -> None:
    jsonschema.validate(chart_values(), values_schema())


def test_schema_describes_every_value_and_rejects_typos() -> None:
    def walk(values: dict[str, Any], schema: dict[str, Any], where: str) -> None:
        for name, value in values.items():
            prop = schema.get("properties", {}).get(name)
            assert prop is not None, f"values.schema.json has no {where}{name}"
            assert prop.get("description"), f"{where}{name} has no description"
            if isinstance(value, dict) and prop.get("properties"):
                walk(value, prop, f"{where}{name}.")

    walk(chart_values(), values_schema(), "")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**chart_values(), "watchNamespace": ["a"]}, values_schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**chart_values(), "watchNamespaces": ["Not_A_Name"]}, values_schema())


def test_sample_cluster_is_the_basic_example() -> None:
    example = load_yaml(EXAMPLES / "basic" / "cluster.yaml")[0]
    sample = chart_values()["sampleCluster"]
    assert sample["name"] == example["metadata"]["name"]
    assert sample["spec"] == example["spec"]


def test_chart_version_image_and_package_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    # The operator image is the one the model gives memory nodes and routers by default.
    default_image = AgentMemoryClusterSpec.model_fields["image"].default
    assert f"{chart_values()['image']['repository']}:{chart['appVersion']}" == default_image
    assert operator_container()["image"] == default_image


# The operator Deployment ---------------------------------------------------------------


def test_deployment_args_are_an_agentmem_command() -> None:
    container = operator_container()
    args = cli.build_parser().parse_args(container["args"])  # exits on an unknown command
    assert args.command == container["args"][0] == "operator"
    assert args.func is cli.operator
    assert args.namespace is None  # the default values watch every namespace
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert args.liveness == f"http://0.0.0.0:{ports['healthz']}/healthz"
    assert args.metrics_port == ports["metrics"] == 8081
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "healthz"} and ports["healthz"] == 8080


def subcommands() -> set[str]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_memory_nodes_run_an_agentmem_command() -> None:
    """The operator runs the same image as memory nodes: their command must exist too."""
    cluster = example_cluster()
    for child in children(cluster):
        if child["kind"] != "StatefulSet":
            continue
        pod = child["spec"]["template"]["spec"]
        (node,) = [c for c in pod["containers"] if c["image"] == cluster.spec.image]
        assert node["args"][0] in subcommands()


def test_deployment_is_one_recreated_restricted_pod() -> None:
    deployment = base_deployment()
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = operator_container()
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


# RBAC ---------------------------------------------------------------------------------


def cluster_role_rules() -> list[dict[str, Any]]:
    """The resource rules of the default ClusterRole."""
    (role,) = [d for d in base_docs("rbac.yaml") if d["kind"] == "ClusterRole"]
    return [r for r in role["rules"] if "apiGroups" in r]


def non_resource_rules() -> list[dict[str, Any]]:
    (role,) = [d for d in base_docs("rbac.yaml") if d["kind"] == "ClusterRole"]
    return [r for r in role["rules"] if "nonResourceURLs" in r]


def granted(api_version: str, kind: str) -> set[str]:
    """Verbs the default ClusterRole grants on a kind (as in _kube's table)."""
    group = api_version.rpartition("/")[0]
    resource = api_path(api_version, kind, None).rsplit("/", 1)[1]
    verbs: set[str] = set()
    for rule in cluster_role_rules():
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def example_cluster() -> AgentMemoryCluster:
    return AgentMemoryCluster.from_api(load_yaml(EXAMPLES / "basic" / "cluster.yaml")[0])


def test_rbac_covers_every_child_the_operator_applies() -> None:
    for child in children(example_cluster(), monitoring_api=True):
        verbs = granted(child["apiVersion"], child["kind"])
        assert {"create", "patch"} <= verbs, f"{child['kind']}: {sorted(verbs)}"
    for api_version, kind in _PRUNABLE:
        assert {"list", "delete"} <= granted(api_version, kind), kind
    assert {"get", "list", "watch"} <= granted(naming.API_VERSION, naming.KIND)
    for api_version, kind in WATCHED:  # the cache's informers
        assert {"list", "watch"} <= granted(api_version, kind), kind
    assert {"list", "watch"} <= granted(KAFKA_TOPIC_APIS[0], "KafkaTopic")
    assert "create" in granted("v1", "Event")
    assert "list" in granted("v1", "Pod")  # the nodes asked during a rebalance
    # Each cluster's signing key; the API server's issuer, published to the nodes.
    assert {"get", "create", "patch"} <= granted("v1", "Secret")
    (issuer,) = non_resource_rules()
    assert set(issuer["nonResourceURLs"]) == {
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
    }
    assert issuer["verbs"] == ["get"]


def test_rbac_is_least_privilege() -> None:
    for rule in cluster_role_rules():
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "*" not in rule["apiGroups"], rule
        assert "nodes" not in rule["resources"], rule
        if "secrets" in rule["resources"]:  # keys, CA and certificate; never deleted
            assert rule["resources"] == ["secrets"], rule
            # Listed and watched only with the operator's label (its own Secrets),
            # which RBAC cannot express: said in docs/install.md.
            assert rule["verbs"] == ["get", "list", "watch", "create", "patch"], rule
        if "pods" in rule["resources"]:  # read to ask the nodes how far they are, no more
            assert rule["resources"] == ["pods"] and rule["verbs"] == ["list", "watch"], rule
        risky = {"escalate", "bind", "impersonate", "update", "deletecollection"}
        if rule["resources"] == ["agentmemoryclusters/finalizers"]:
            risky -= {"update"}  # for blockOwnerDeletion, see the chart's _helpers.tpl
        assert not risky & set(rule["verbs"]), rule


# The image ----------------------------------------------------------------------------


def dockerfile() -> list[str]:
    """Instructions of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [i.strip() for i in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines() if i.strip()]


def dockerignore() -> list[str]:
    text = (ROOT / ".dockerignore").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def copied_sources() -> list[str]:
    sources = []
    for instruction in dockerfile():
        words = shlex.split(instruction)
        if words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_base_image_is_pinned_to_a_patch_release() -> None:
    args = {}
    for instruction in dockerfile():
        words = instruction.split(maxsplit=1)
        if words[0] == "ARG" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            args[name] = value
    stages = [i.split()[1] for i in dockerfile() if i.startswith("FROM ")]
    assert len(stages) >= 2, "a multi-stage build"
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage)
        assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", image), image


def test_image_runs_agentmem_as_the_pods_user() -> None:
    instructions = dockerfile()
    assert 'ENTRYPOINT ["agentmem"]' in instructions
    users = [i.split()[1] for i in instructions if i.startswith("USER ")]
    assert users[-1] == "10001:10001"
    pod = base_deployment()["spec"]["template"]["spec"]["securityContext"]
    assert users[-1] == f"{pod['runAsUser']}:{pod['runAsGroup']}"


def test_copied_files_exist_and_are_not_ignored() -> None:
    sources = copied_sources()
    assert sources, "the Dockerfile copies nothing"
    ignored = {p.strip("/") for p in dockerignore()}
    for source in sources:
        assert (ROOT / source).exists(), source
        assert source.strip("./") not in ignored, f"{source} is in .dockerignore"


def _ignored(relative: Path) -> bool:
    return any(part in {"__pycache__"} or part.endswith(".egg-info") for part in relative.parts)


def test_wheel_builds_from_the_dockerfile_context(tmp_path: Path) -> None:
    """Build the wheel from exactly what the build stage copies, as `pip wheel` there does."""
    context = tmp_path / "src"
    context.mkdir()
    for source in copied_sources():
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(
                origin,
                context / source,
                ignore=lambda d, names: [n for n in names if _ignored(Path(d, n))],
            )
        else:
            shutil.copy2(origin, context / source)
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--wheel-dir", str(wheels), str(context)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = wheels.glob("agentmem-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"agentmem/cli.py", "agentmem/py.typed", "agentmem/__main__.py"} <= names
        assert not any(n.startswith(("tests/", "operator/")) for n in names)
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert re.search(r"^\[console_scripts\]\s*\nagentmem = agentmem\.cli:main$", text, re.M)


# Argo CD health -----------------------------------------------------------------------

HEALTH = ROOT / "manifests" / "argocd" / "health.lua"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    runtime = lupa.LuaRuntime()
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(HEALTH.read_text(encoding="utf-8"))
    return str(result["status"]), str(result["message"])


def amc(
    generation: int = 3,
    observed: int | None = 3,
    conditions: dict[str, tuple[str, int]] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": naming.API_VERSION,
        "kind": naming.KIND,
        "metadata": {"name": "demo", "namespace": "default", "generation": generation},
    }
    if annotations:
        obj["metadata"]["annotations"] = annotations
    if observed is not None:
        obj["status"] = {
            "observedGeneration": observed,
            "conditions": [
                {
                    "type": kind,
                    "status": status,
                    "reason": f"{kind}Reason",
                    "message": f"{kind} says {status}",
                    "observedGeneration": gen,
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
                for kind, (status, gen) in (conditions or {}).items()
            ],
        }
    return obj


READY = {
    "Ready": ("True", 3), "Degraded": ("False", 3),
    "Rebalancing": ("False", 3), "Progressing": ("False", 3),
}  # fmt: skip
REBALANCING = {"Rebalancing": ("True", 3)}
HEALTH_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("ready for this generation", amc(conditions=READY), "Healthy"),
    ("no status yet", amc(observed=None), "Progressing"),
    ("status for an older generation", amc(observed=2, conditions=READY), "Progressing"),
    (
        "Ready=True only for an older generation",
        amc(conditions={**READY, "Ready": ("True", 2)}),
        "Degraded",
    ),
    (
        "rebalance running",
        amc(conditions={**READY, "Ready": ("False", 3), "Rebalancing": ("True", 3)}),
        "Progressing",
    ),
    (
        "shards still starting",
        amc(conditions={**READY, "Ready": ("False", 3), "Progressing": ("True", 3)}),
        "Progressing",
    ),
    (
        "degraded while rebalancing (warm-up timeout)",
        amc(conditions={**READY, "Ready": ("False", 3), "Degraded": ("True", 3), **REBALANCING}),
        "Degraded",
    ),
    (
        "degraded, invalid spec",
        amc(conditions={"Ready": ("False", 3), "Degraded": ("True", 3)}),
        "Degraded",
    ),
    (
        "not ready and nothing in progress",
        amc(conditions={**READY, "Ready": ("False", 3)}),
        "Degraded",
    ),
    (
        "paused",
        amc(observed=2, conditions=READY, annotations={naming.PAUSED_ANNOTATION: "True"}),
        "Suspended",
    ),
    (
        "paused annotation set to false",
        amc(conditions=READY, annotations={naming.PAUSED_ANNOTATION: "false"}),
        "Healthy",
    ),
]


@pytest.mark.parametrize(
    ("case", "obj", "expected"), HEALTH_CASES, ids=[c[0] for c in HEALTH_CASES]
)
def test_argocd_health(case: str, obj: dict[str, Any], expected: str) -> None:
    status, message = health(obj)
    assert status == expected, f"{case}: {status} ({message})"
    assert message


def test_argocd_health_messages_explain() -> None:
    _, message = health(amc(observed=2))
    assert message == "Waiting for the operator to observe generation 3"
    degraded = {"Ready": ("False", 3), "Degraded": ("True", 3)}
    assert health(amc(conditions=degraded))[1] == "DegradedReason: Degraded says True"


def test_argocd_cm_patch_carries_the_health_script() -> None:
    patch = yaml.safe_load(gen.ARGOCD_CM_PATCH.read_text(encoding="utf-8"))
    key = f"resource.customizations.health.{naming.GROUP}_{naming.KIND}"
    assert patch == {"data": {key: HEALTH.read_text(encoding="utf-8")}}


def test_argocd_application_installs_the_chart() -> None:
    (app,) = load_yaml(ROOT / "manifests" / "argocd" / "application.yaml")
    assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
    source = app["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").is_file()
    values = deep_merge(chart_values(), source["helm"].get("valuesObject", {}))
    jsonschema.validate(values, values_schema())
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
