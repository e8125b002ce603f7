#!/usr/bin/env bash
# End-to-end proof of the test control plane (no Python): up, check versions,
# StatefulSet (3 replicas, PVCs) + Deployment go Running+Ready on kwok nodes
# spread over 3 zones, PodSecurity and RBAC enforced, deleting owners
# garbage-collects everything, down leaves no process.  Prints timings.
#   testenv/smoke.sh [workdir]      (default: a fresh mktemp dir, removed after)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${1:-$(mktemp -d /tmp/agentmem-smoke.XXXXXX)}"
CP="${HERE}/controlplane.sh"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
fail() { echo "SMOKE FAIL: $*" >&2; exit 1; }
trap '"${CP}" down "${DIR}" >/dev/null 2>&1 || true' EXIT

t=$(ms)
"${CP}" up "${DIR}" >/dev/null
echo "warm start (nothing running -> API ready, nodes Ready): $(( $(ms) - t )) ms"
set -a; source "${DIR}/env"; set +a
k() { "${AGENTMEM_KUBECTL}" --kubeconfig "${KUBECONFIG}" "$@"; }

ver="$(k version -o json | tr -d ' \n')"
for w in clientVersion serverVersion; do
  grep -o "\"${w}\":{[^}]*}" <<<"${ver}" | grep -q "\"gitVersion\":\"${AGENTMEM_KUBERNETES_VERSION}\"" \
    || fail "${w} is not ${AGENTMEM_KUBERNETES_VERSION}"
done
echo "kubectl version: client and server ${AGENTMEM_KUBERNETES_VERSION}"
[[ "$(k get nodes -l topology.kubernetes.io/zone --no-headers | grep -c ' Ready ')" -ge 6 ]] || fail "6 Ready nodes"
[[ "$(k get nodes -o jsonpath='{.items[*].metadata.labels.topology\.kubernetes\.io/zone}' | tr ' ' '\n' | sort -u | tr '\n' ' ')" == "zone-a zone-b zone-c " ]] \
  || fail "nodes not spread over zone-a/b/c"

t=$(ms)
k apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: smoke-sts}
spec:
  replicas: 3
  serviceName: smoke-sts
  selector: {matchLabels: {app: smoke-sts}}
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}
  template:
    metadata: {labels: {app: smoke-sts}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: smoke-sts}}}
      containers:
      - {name: c, image: registry.k8s.io/pause:3.10, volumeMounts: [{name: data, mountPath: /data}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke-deploy}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke-deploy}}
  template:
    metadata: {labels: {app: smoke-deploy}}
    spec:
      containers: [{name: c, image: registry.k8s.io/pause:3.10}]
EOF
k rollout status statefulset/smoke-sts --timeout=60s >/dev/null || fail "statefulset not ready"
k rollout status deployment/smoke-deploy --timeout=60s >/dev/null || fail "deployment not ready"
echo "StatefulSet(3, PVCs) + Deployment(2) Running+Ready: $(( $(ms) - t )) ms"
k get pods -o wide --no-headers | awk '{print "  " $1, $2, $3, $7}'
zones="$(for n in $(k get pods -l app=smoke-sts -o jsonpath='{.items[*].spec.nodeName}'); do
          k get node "$n" -o jsonpath='{.metadata.labels.topology\.kubernetes\.io/zone}{"\n"}'; done | sort -u | wc -l)"
[[ "${zones}" == 3 ]] || fail "statefulset pods not spread over 3 zones"
[[ "$(k get pvc --no-headers | grep -c Bound)" == 3 ]] || fail "3 bound PVCs"

# PodSecurity + RBAC
k create namespace smoke-restricted >/dev/null
k label namespace smoke-restricted pod-security.kubernetes.io/enforce=restricted >/dev/null
if k -n smoke-restricted run priv --image=registry.k8s.io/pause:3.10 --privileged >/dev/null 2>&1; then
  fail "PodSecurity did not reject a privileged pod"
fi
[[ "$(k auth can-i list secrets --as=system:serviceaccount:default:default || true)" == no ]] || fail "RBAC not enforced"
echo "PodSecurity rejects privileged pod in restricted namespace; RBAC denies default SA"

# garbage collection: owners deleted -> pods, ReplicaSets, PVCs, PVs go away
t=$(ms)
k delete statefulset smoke-sts --wait=false >/dev/null
k delete deployment smoke-deploy --wait=false >/dev/null
for (( i = 0; i < 300; i++ )); do
  [[ -z "$(k get pods,replicasets,pvc,pv --no-headers 2>/dev/null)" ]] && break
  sleep 0.2
done
[[ -z "$(k get pods,replicasets,pvc,pv --no-headers 2>/dev/null)" ]] || fail "garbage not collected"
echo "garbage collection (pods, ReplicaSet, PVCs, PVs gone): $(( $(ms) - t )) ms"

t=$(ms)
"${CP}" down "${DIR}" >/dev/null 2>&1 || fail "down reported leftovers"
left="$(pgrep -f -- "${DIR}/(kubeconfig|etcd-data|pki/)" || true)"
[[ -z "${left}" ]] || fail "processes left: ${left}"
echo "down: $(( $(ms) - t )) ms, no process left"
trap - EXIT
[[ $# -ge 1 ]] || rm -rf "${DIR}"
echo "SMOKE OK"
