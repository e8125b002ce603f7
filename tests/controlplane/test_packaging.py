"""The chart, the kustomize base and the bundle, installed into the real control plane.

kwok pods run no processes: the operator Deployment becomes Ready without its image
ever being pulled. So the operator runs here as a local process, with the identity
of the chart's ServiceAccount (a token from ``kubectl create token``) and the args
and env of the Deployment the chart installed. It can do exactly what the chart's
RBAC allows; a cluster reaching Ready with no 403 in its log proves the RBAC is enough.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmem import cli
from agentmem.model import naming
from tests.conftest import EXAMPLES, ROOT, load_manifest_generator, load_yaml
from tests.controlplane.conftest import ControlPlane, Kubectl, Operator, wait_until
from tests.controlplane.test_operator import ready_cluster

CHART = ROOT / "charts" / "agentmem-operator"
BASE = ROOT / "manifests" / "base"
CRD_NAME = f"{naming.PLURAL}.{naming.GROUP}"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


gen = load_manifest_generator()


@dataclass
class Helm:
    """helm v3 against the test control plane."""

    binary: str
    kubeconfig: Path
    kube_version: str

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> str:
        result = subprocess.run(
            [self.binary, "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout + result.stderr

    def template(self, *args: str) -> list[dict[str, Any]]:
        out = self.run(
            "template", "agentmem-operator", str(CHART), "--kube-version", self.kube_version, *args
        )
        return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture
def helm(controlplane: ControlPlane) -> Helm:
    return Helm(
        controlplane.env["AGENTMEM_HELM"],
        controlplane.kubeconfig,
        controlplane.env["AGENTMEM_KUBERNETES_VERSION"],
    )


def adopt_crds(kubectl: Kubectl, release: str, namespace: str) -> None:
    """Hand CRDs applied earlier (by kubectl, or another release) to this release.

    Helm refuses to take over objects it did not create unless they carry its
    ownership label and annotations (docs/install.md says the same to users).
    """
    kubectl.run("label", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm", "--overwrite")
    kubectl.run(
        "annotate", "crd", CRD_NAME, "--overwrite",
        f"meta.helm.sh/release-name={release}", f"meta.helm.sh/release-namespace={namespace}",
    )  # fmt: skip


def token_kubeconfig(plane: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (a bound token, 1 hour)."""
    token = plane.kubectl.run(
        "create", "token", account, "-n", namespace, "--duration=1h"
    ).stdout.strip()
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": cluster["name"], "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ChartOperator(Operator):
    """The operator as the chart runs it: the Deployment's args and env, its identity.

    Only the liveness and metrics endpoints move to free local ports.
    """

    def __init__(
        self, plane: ControlPlane, deployment: dict[str, Any], kubeconfig: Path, log: Path
    ) -> None:
        super().__init__(plane, deployment["metadata"]["namespace"], log)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        self.args = [
            a for a in container["args"] if not a.startswith(("--liveness", "--metrics-port"))
        ]
        self.env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        self.kubeconfig = kubeconfig

    def start(self) -> ChartOperator:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "AGENTMEM_"))
        }
        env.update(self.env, KUBECONFIG=str(self.kubeconfig))
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "agentmem", *self.args,
                    "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                    "--metrics-port", "0",
                ],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    def forbidden(self) -> list[str]:
        """Log lines that say the API server refused something."""
        # 403 as a status, not as the milliseconds of a log timestamp ("12:00:01,403").
        pattern = re.compile(r"(?<![,.])\b403\b|forbidden|not enough permissions", re.I)
        return [
            line for line in self.log.read_text(errors="replace").splitlines()
            if pattern.search(line)
        ]  # fmt: skip


def wait_ready_as(operator: ChartOperator, namespace: str, name: str = "demo") -> Any:
    """Wait for Ready=True at the current generation; fail at once on a refused call."""
    kubectl = operator.plane.kubectl

    def check() -> Any:
        denied = operator.forbidden()
        assert not denied, "the API server refused the operator:\n" + "\n".join(denied[:10])
        return ready_cluster(kubectl, namespace, name)

    return wait_until(f"{name} Ready", check, timeout=120)


Permission = tuple[str, str, str]  # (API group or "url", resource or URL, verb)

#: What the operator's role grants for paths this test does not walk, and why.
RARE_PATHS: dict[Permission, str] = {
    ("", "services", "delete"): "a shard's Service is deleted when the shard retires",
    ("apps", "statefulsets", "delete"): "a retired shard's StatefulSet",
    ("apps", "deployments", "delete"): "the router Deployment when router.replicas is 0",
    ("policy", "poddisruptionbudgets", "delete"): "a retired shard's budget",
    ("networking.k8s.io", "networkpolicies", "delete"): "pruned when no longer rendered",
    ("networking.k8s.io", "networkpolicies", "list"): "listed only to prune",
    ("monitoring.coreos.com", "servicemonitors", "list"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "servicemonitors", "watch"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "prometheusrules", "watch"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "servicemonitors", "create"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "servicemonitors", "patch"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "servicemonitors", "delete"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "prometheusrules", "list"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "prometheusrules", "create"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "prometheusrules", "patch"): "no Prometheus Operator here",
    ("monitoring.coreos.com", "prometheusrules", "delete"): "no Prometheus Operator here",
    ("kafka.strimzi.io", "kafkatopics", "get"): "Strimzi is not installed here",
    ("kafka.strimzi.io", "kafkatopics", "create"): "Strimzi is not installed here",
    ("kafka.strimzi.io", "kafkatopics", "patch"): "Strimzi is not installed here",
    ("", "secrets", "patch"): "the certificate is renewed 30 days before it expires",
    # Reads by name: the watches answer them, except before their first list, after
    # a create that conflicted, and for a cluster the watch no longer holds.
    ("", "configmaps", "get"): "read by name only when the watch cannot answer",
    ("", "secrets", "get"): "read by name only when the watch cannot answer",
    ("agentmem.io", "agentmemoryclusters", "get"): "read by name once deleted",
    ("agentmem.io", "agentmemoryclusters/finalizers", "update"): (
        "checked by the OwnerReferencesPermissionEnforcement admission plugin, not enabled here"
    ),
}


DISCOVERY = re.compile(r"^/(api|apis)(/[^/]+){0,2}$|^/version$")


def granted_permissions(role: dict[str, Any]) -> set[Permission]:
    out: set[Permission] = set()
    for rule in role.get("rules") or []:
        for verb in rule["verbs"]:
            for url in rule.get("nonResourceURLs") or []:
                out.add(("url", url, verb))
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    out.add((group, resource, verb))
    return out


def audited_permissions(plane: ControlPlane, username: str) -> set[Permission]:
    """What ``username`` did, from the API server's audit log."""
    used: set[Permission] = set()
    for line in (plane.dir / "logs" / "audit.log").read_text().splitlines():
        event = json.loads(line)
        if event.get("user", {}).get("username") != username:
            continue
        ref = event.get("objectRef")
        if ref is None:
            used.add(("url", event["requestURI"].split("?")[0], event["verb"]))
            continue
        resource = ref.get("resource", "")
        if ref.get("subresource"):
            resource += "/" + ref["subresource"]
        used.add((ref.get("apiGroup", ""), resource, event["verb"]))
        if event["verb"] == "patch" and event.get("responseStatus", {}).get("code") == 201:
            used.add((ref.get("apiGroup", ""), resource, "create"))  # an apply that created
    return used


def release_deployment(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    (deployment,) = kubectl.items(
        "deployments", namespace, "app.kubernetes.io/name=agentmem-operator"
    )
    return deployment


def example(name: str = "demo") -> dict[str, Any]:
    doc = load_yaml(EXAMPLES / "basic" / "cluster.yaml")[0]
    doc["metadata"]["name"] = name
    return doc


def wait_no_clusters_outside(kubectl: Kubectl, namespace: str) -> None:
    """A cluster-wide operator must not meet clusters of earlier tests' namespaces,
    which are being deleted (creating in a terminating namespace is refused)."""

    def alone() -> bool:
        items = kubectl.json("get", naming.PLURAL, "--all-namespaces")["items"]
        return all(i["metadata"]["namespace"] == namespace for i in items)

    wait_until("clusters of earlier tests to be gone", alone, timeout=180, interval=1)


@pytest.fixture
def watched(controlplane: ControlPlane) -> Iterator[str]:
    """A second namespace, for an operator that watches a namespace other than its own."""
    name = f"w-{uuid.uuid4().hex[:8]}"
    controlplane.kubectl.run("create", "namespace", name)
    yield name
    controlplane.kubectl.run("delete", "namespace", name, "--wait=false", check=False)


# helm lint / template -----------------------------------------------------------------


def test_chart_lints_and_renders(controlplane: ControlPlane, helm: Helm, namespace: str) -> None:
    helm.run("lint", "--strict", str(CHART), "--kube-version", helm.kube_version)
    helm.run(
        "lint", "--strict", str(CHART), "--kube-version", helm.kube_version,
        "--set", "watchNamespaces={a,b},sampleCluster.enabled=true,metrics.service.enabled=true",
    )  # fmt: skip

    defaults = helm.template("--namespace", namespace)
    kinds = sorted(d["kind"] for d in defaults)
    assert kinds == [
        "ClusterRole", "ClusterRoleBinding", "ConfigMap", "CustomResourceDefinition",
        "Deployment", "ServiceAccount",
    ]  # fmt: skip
    (board,) = [d for d in defaults if d["kind"] == "ConfigMap"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "dashboards" not in {
        d["metadata"]["name"].rsplit("-", 1)[-1]
        for d in helm.template("--set", "dashboards.enabled=false")
    }
    (crd,) = [d for d in defaults if d["kind"] == "CustomResourceDefinition"]
    source = yaml.safe_load((ROOT / "crds" / "agentmem.io_agentmemoryclusters.yaml").read_text())
    assert crd["spec"] == source["spec"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "CustomResourceDefinition" not in {
        d["kind"] for d in helm.template("--set", "crds.install=false")
    }

    # The chart's kubeVersion is enforced.
    old = helm.run("template", "x", str(CHART), "--kube-version", "v1.29.0", check=False)
    assert "incompatible with Kubernetes v1.29.0" in old, old

    # Namespaced: a Role per watched namespace; the Deployment's args are a valid command.
    scoped = helm.template("--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}")
    roles = [(d["kind"], d["metadata"]["namespace"]) for d in scoped if d["kind"] == "Role"]
    assert roles == [("Role", namespace)]
    cluster_roles = [d["metadata"]["name"] for d in scoped if d["kind"] == "ClusterRole"]
    assert cluster_roles == ["agentmem-operator-discovery"]
    (deployment,) = [d for d in scoped if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = cli.build_parser().parse_args(container["args"])
    assert args.func is cli.operator and args.namespace == [namespace]

    # Optional objects, each validated by the API server (dry run, nothing is created).
    extras = helm.template(
        "--namespace", namespace, "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
        "--set", "sampleCluster.enabled=true,metrics.serviceMonitor.enabled=true",
        "--set", "crds.install=false",
    )  # fmt: skip
    assert {"Service", "ServiceMonitor", naming.KIND} <= {d["kind"] for d in extras}
    checkable = [d for d in extras if d["kind"] != "ServiceMonitor"]  # no Prometheus Operator
    controlplane.kubectl.run(
        "apply", "--dry-run=server", "--server-side", "-n", namespace, "-f", "-",
        stdin=yaml.safe_dump_all(checkable),
    )  # fmt: skip


def test_kustomize_base_and_bundle_are_rendered_from_the_chart(helm: Helm) -> None:
    outputs = gen.generate(helm.binary)
    stale = [str(p.relative_to(ROOT)) for p in gen.stale_files(outputs)]
    assert not stale, f"stale, run `make manifests`: {stale}"


# helm install / upgrade / uninstall -----------------------------------------------------


@pytest.mark.parametrize("namespace", [RESTRICTED], indirect=True)
def test_helm_install_upgrade_uninstall_with_the_charts_rbac(
    controlplane: ControlPlane, helm: Helm, namespace: str, tmp_path: Path
) -> None:
    """Every namespace (the default): ClusterRole, the operator cluster-wide."""
    kubectl = controlplane.kubectl
    release = f"op-{namespace}"
    adopt_crds(kubectl, release, namespace)
    helm.run(
        "install", release, str(CHART), "-n", namespace, "--wait", "--timeout", "120s",
        "--set", "operator.resyncSeconds=1",
    )  # fmt: skip
    operator: ChartOperator | None = None
    try:
        deployment = release_deployment(kubectl, namespace)
        assert deployment["status"]["availableReplicas"] == 1  # admitted as restricted
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        assert kubectl.get("clusterrole", f"{release}-agentmem-operator", namespace)
        assert not kubectl.items("roles", namespace)

        wait_no_clusters_outside(kubectl, namespace)
        config = token_kubeconfig(controlplane, namespace, account, tmp_path / "kubeconfig")
        operator = ChartOperator(controlplane, deployment, config, tmp_path / "operator.log")
        assert operator.args == ["operator"]  # cluster-wide
        operator.start()
        kubectl.apply(example(), namespace)
        wait_ready_as(operator, namespace)

        # helm upgrade: a changed value reaches the Deployment; the sample cluster appears.
        helm.run(
            "upgrade", release, str(CHART), "-n", namespace, "--reuse-values", "--wait",
            "--timeout", "120s",
            "--set", "operator.workers=2,sampleCluster.enabled=true,sampleCluster.name=sample",
        )  # fmt: skip
        upgraded = release_deployment(kubectl, namespace)
        (container,) = upgraded["spec"]["template"]["spec"]["containers"]
        assert {"name": "AGENTMEM_WORKERS", "value": "2"} in container["env"]
        assert upgraded["metadata"]["generation"] > deployment["metadata"]["generation"]
        wait_ready_as(operator, namespace, "sample")
        assert "Upgrade complete" in helm.run("history", release, "-n", namespace)
        assert not operator.forbidden(), operator.tail()

        # Least privilege, from the API server's audit log: every permission the role
        # grants was used, or serves a path this test does not walk (RARE_PATHS).
        subject = f"system:serviceaccount:{namespace}:{account}"
        used = wait_until("the operator's requests in the audit log",
                          lambda: audited_permissions(controlplane, subject))  # fmt: skip
        granted: set[Permission] = set()
        for name in (f"{release}-agentmem-operator", f"{release}-agentmem-operator-discovery"):
            role = kubectl.get("clusterrole", name, "")
            if role is not None:
                granted |= granted_permissions(role)
        # API discovery (/api, /apis/..., /version) is every user's, by system:discovery.
        used = {p for p in used if not (p[0] == "url" and DISCOVERY.match(p[1]))}
        assert used <= granted, sorted(used - granted)
        unused = granted - used - set(RARE_PATHS)
        assert not unused, f"granted, never used: {sorted(unused)}"
    finally:
        if operator is not None:
            operator.stop()
        out = helm.run("uninstall", release, "-n", namespace, "--wait", check=False)

    # helm uninstall keeps the CRD, and with it the clusters it did not create.
    assert "kept due to the resource policy" in out, out
    assert f"[CustomResourceDefinition] {CRD_NAME}" in out, out
    assert kubectl.get("crd", CRD_NAME, "") is not None
    assert kubectl.get(naming.PLURAL, "demo", namespace) is not None
    wait_until(
        "the release's objects to be gone",
        lambda: (
            kubectl.get(naming.PLURAL, "sample", namespace) is None
            and kubectl.get("clusterrole", f"{release}-agentmem-operator", "") is None
            and kubectl.get("serviceaccount", f"{release}-agentmem-operator", namespace) is None
            and not kubectl.items("deployments", namespace, "app.kubernetes.io/instance=" + release)
        ),
    )


def test_helm_install_watching_one_namespace_needs_only_roles_there(
    controlplane: ControlPlane, helm: Helm, namespace: str, watched: str, tmp_path: Path
) -> None:
    """watchNamespaces: a Role and RoleBinding in the watched namespace, nothing else
    namespaced, and cluster-wide only the reads kopf makes of CRDs and Namespaces."""
    kubectl = controlplane.kubectl
    release = f"op-{namespace}"
    adopt_crds(kubectl, release, namespace)
    helm.run(
        "install", release, str(CHART), "-n", namespace, "--wait", "--timeout", "120s",
        "--set", f"operator.resyncSeconds=1,watchNamespaces={{{watched}}}",
    )  # fmt: skip
    operator: ChartOperator | None = None
    try:
        deployment = release_deployment(kubectl, namespace)
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        subject = f"system:serviceaccount:{namespace}:{account}"

        def can(*args: str) -> bool:
            result = kubectl.run("auth", "can-i", *args, f"--as={subject}", check=False)
            return result.stdout.strip() == "yes"

        assert can("patch", "statefulsets", "-n", watched)
        assert not can("patch", "statefulsets", "-n", namespace)
        assert not can("list", naming.PLURAL, "--all-namespaces")
        # Secrets: each cluster's keys are made, its certificate applied; they are
        # watched (the operator's own, by label) in the watched namespace only.
        assert can("get", "secrets", "-n", watched)
        assert can("watch", "secrets", "-n", watched)
        assert not can("delete", "secrets", "-n", watched)
        assert not can("get", "secrets", "-n", namespace)
        assert not can("list", "secrets", "-n", namespace)
        assert can("get", "/openid/v1/jwks")
        assert can("watch", "customresourcedefinitions")
        assert not can("patch", "customresourcedefinitions")

        config = token_kubeconfig(controlplane, namespace, account, tmp_path / "kubeconfig")
        operator = ChartOperator(controlplane, deployment, config, tmp_path / "operator.log")
        assert operator.args == ["operator", f"--namespace={watched}"]
        operator.start()
        kubectl.apply(example(), watched)
        wait_ready_as(operator, watched)
        assert not operator.forbidden(), operator.tail()
    finally:
        if operator is not None:
            operator.stop()
        helm.run("uninstall", release, "-n", namespace, "--wait", check=False)
    wait_until(
        "the release's RBAC to be gone",
        lambda: (
            kubectl.get("clusterrole", f"{release}-agentmem-operator-discovery", "") is None
            and not kubectl.items("roles", watched, f"app.kubernetes.io/instance={release}")
        ),
    )


# kubectl apply -k / the bundle ---------------------------------------------------------

#: Fields the API server or the installing tool sets; the objects are compared without them.
_VOLATILE_META = (
    "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
)  # fmt: skip
_TOOL_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
_TOOL_ANNOTATIONS = (
    "meta.helm.sh/", "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision", "helm.sh/resource-policy",
)  # fmt: skip


def normalized(obj: dict[str, Any]) -> dict[str, Any]:
    """Without what the server or the installing tool adds (also on the pod template)."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in _VOLATILE_META}
    labels = {k: v for k, v in meta.pop("labels", {}).items() if k not in _TOOL_LABELS}
    spec = obj.get("spec")
    if isinstance(spec, dict) and "template" in spec:
        template = spec["template"]["metadata"]
        template["labels"] = {
            k: v for k, v in template.get("labels", {}).items() if k not in _TOOL_LABELS
        }
    annotations = {
        k: v for k, v in meta.pop("annotations", {}).items() if not k.startswith(_TOOL_ANNOTATIONS)
    }
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    return {
        **{k: v for k, v in obj.items() if k not in ("metadata", "status")},
        "metadata": meta,
    }


def installed(kubectl: Kubectl, docs: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """The server's copy of each document, by (kind, name), normalized."""
    out = {}
    for doc in docs:
        meta = doc["metadata"]
        obj = kubectl.get(doc["kind"].lower(), meta["name"], meta.get("namespace", ""))
        assert obj is not None, f"{doc['kind']} {meta['name']} was not installed"
        out[doc["kind"], meta["name"]] = normalized(obj)
    return out


def delete_all_but_crds(kubectl: Kubectl, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] == "CustomResourceDefinition":
            continue  # other tests' clusters live in it
        meta = doc["metadata"]
        ns = ["-n", meta["namespace"]] if meta.get("namespace") else []
        kubectl.run(
            "delete", doc["kind"].lower(), meta["name"], *ns, "--ignore-not-found", "--wait=true",
            timeout=180,
        )  # fmt: skip


def test_kustomize_base_installs_what_the_chart_installs(
    controlplane: ControlPlane, helm: Helm
) -> None:
    kubectl = controlplane.kubectl
    base = [d for d in yaml.safe_load_all(kubectl.run("kustomize", str(BASE)).stdout) if d]
    assert base == load_yaml(gen.BUNDLE), "kubectl kustomize and the bundle differ"
    ns = gen.NAMESPACE
    try:
        # The chart with its default values, as the base was rendered.
        adopt_crds(kubectl, gen.RELEASE, ns)
        helm.run(
            "install", gen.RELEASE, str(CHART), "-n", ns, "--create-namespace", "--wait",
            "--timeout", "120s",
        )  # fmt: skip
        manifest = [
            d for d in yaml.safe_load_all(helm.run("get", "manifest", gen.RELEASE, "-n", ns)) if d
        ]
        by_chart = installed(kubectl, manifest)
        helm.run("uninstall", gen.RELEASE, "-n", ns, "--wait")
        kubectl.run("delete", "namespace", ns, "--wait=true", timeout=180)

        # The same objects from the base, plus its Namespace (Helm's --create-namespace).
        kubectl.run("apply", "--server-side", "-k", str(BASE))
        by_base = installed(kubectl, base)
        assert set(by_base) - set(by_chart) == {("Namespace", ns)}
        assert set(by_chart) <= set(by_base)
        for key, obj in by_chart.items():
            assert by_base[key] == obj, f"{key} differs between the chart and the base"
        kubectl.run(
            "rollout", "status", f"deployment/{gen.RELEASE}", "-n", ns, "--timeout=120s"
        )  # restricted namespace: the pod was admitted

        # The bundle is the same install: applying it changes nothing.
        diff = kubectl.run("diff", "--server-side", "-f", str(gen.BUNDLE), check=False)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        kubectl.run("apply", "--server-side", "-f", str(gen.BUNDLE))
    finally:
        helm.run("uninstall", gen.RELEASE, "-n", ns, check=False)
        delete_all_but_crds(kubectl, base)


def test_example_overlay_moves_the_operator(controlplane: ControlPlane) -> None:
    built = controlplane.kubectl.run("kustomize", str(ROOT / "manifests/overlays/example"))
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(built.stdout) if d}
    assert ("Namespace", "agentmem") in docs
    deployment = docs["Deployment", "agentmem-operator"]
    assert deployment["metadata"]["namespace"] == "agentmem"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/platform/agentmem:0.1.0"
    assert {"name": "AGENTMEM_RESYNC_SECONDS", "value": "60"} in container["env"]
    assert container["resources"]["limits"]["memory"] == "512Mi"
    (subject,) = docs["ClusterRoleBinding", "agentmem-operator"]["subjects"]
    assert subject["namespace"] == "agentmem"
