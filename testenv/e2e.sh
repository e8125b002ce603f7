#!/usr/bin/env bash
# A real Kubernetes node for the end-to-end tier: containerd and runc run the
# operator's pods, a kubelet joins the control plane of testenv/controlplane.sh,
# CoreDNS answers Service names. Images are built here, with no registry: a
# Debian base made by debootstrap, the project's own Dockerfile built on it by
# buildah, and a pause image compiled from the Kubernetes module.
#
#   testenv/e2e.sh images                          build (or reuse) the images; print their names
#   testenv/e2e.sh up   <dir> <controlplane-dir> [--watch-pid PID]
#   testenv/e2e.sh down <dir>
#
# up: a bridge amb0 (10.217.0.1/16) that pods are attached to (CNI bridge) and
# that the host's test servers listen on; containerd and the kubelet inside a
# mount namespace of their own (their mounts vanish with it); CoreDNS on
# 10.217.0.1:53 for cluster.local; the node "agentmem-e2e" in zone-a. Writes
# <dir>/env. Traffic stays on loopback, the bridge and the pods' network
# namespaces: the pods' DNS answers only cluster.local, nothing is routed out.
# down: stops all of it, removes the bridge and the kubelet's cgroups, and
# restores the iptables rules and sysctls the kubelet and the bridge changed.
# Idempotent.
#
# Needs root, and the Debian packages testenv/packages.sh --e2e installs.
# Env: AGENTMEM_TESTENV_CACHE (see build.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/.." && pwd)"
SELF="${HERE}/e2e.sh"
# shellcheck source=versions.env
source "${HERE}/versions.env"
CACHE_ROOT="${AGENTMEM_TESTENV_CACHE:-${HOME}/.cache/agentmem-testenv}"
IMAGES="${CACHE_ROOT}/images"
BUILDAH=(buildah --root "${CACHE_ROOT}/buildah/storage" --runroot "${CACHE_ROOT}/buildah/run"
         --storage-driver vfs)

BRIDGE=amb0
# Not 10.88.0.0/16: podman and buildah's default network uses it.
BRIDGE_IP=10.217.0.1
SUBNET=10.217.0.0/16
NODE_NAME=agentmem-e2e
DEBIAN_SUITE=bookworm
BASE_PACKAGES=python3,python3-pip,ca-certificates,redis-server
#: sysctls the kubelet or the CNI bridge may change; restored by down
SYSCTLS=(net/ipv4/ip_forward vm/overcommit_memory kernel/panic kernel/panic_on_oops)
#: directories the namespace covers with a tmpfs (created here if missing): what
#: containerd, CNI and the kubelet write outside the directories they are given
PRIVATE_DIRS=(/run/containerd /var/log/containers /var/lib/cni /var/lib/kubelet)

T0=$(date +%s%N)
log() { printf '[e2e %6.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ------------------------------------------------------------------ images
debian_mirror() { # Debian's mirror as apt is configured (the only one reachable)
  local files=() m
  for m in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$m" ]] && files+=("$m")
  done
  m="$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' "${files[@]}" 2>/dev/null \
        | awk '{print $2}' | grep -E '/debian/?$' | head -1)"
  echo "${m:-http://deb.debian.org/debian}"
}

image_key() { # files... -> a short hash of their contents
  (cd "${ROOT}" && find "$@" -type f -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 \
     | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
}

build_base() { # -> image name; the Debian base, with Python and redis-server
  local key name archive rootfs c m
  key="$(printf '%s %s v1' "${DEBIAN_SUITE}" "${BASE_PACKAGES}" | sha256sum | cut -c1-12)"
  name="localhost/agentmem-base:${DEBIAN_SUITE}-${key}"
  archive="${IMAGES}/base-${key}.tar"
  if [[ ! -f "${archive}" ]]; then
    rootfs="$(mktemp -d "${IMAGES}/rootfs.tmp.XXXXXX")"
    log "debootstrap ${DEBIAN_SUITE} (${BASE_PACKAGES}) from $(debian_mirror) ..."
    debootstrap --variant=minbase --include="${BASE_PACKAGES}" "${DEBIAN_SUITE}" "${rootfs}" \
      "$(debian_mirror)" > "${IMAGES}/debootstrap.log" 2>&1 \
      || { tail -20 "${IMAGES}/debootstrap.log" >&2; rm -rf "${rootfs}"; die "debootstrap failed"; }
    # pip may install into the image's Python (it is the image's only user)
    rm -f "${rootfs}"/usr/lib/python3*/EXTERNALLY-MANAGED
    rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
    c="$("${BUILDAH[@]}" from scratch)"
    m="$("${BUILDAH[@]}" mount "$c")"
    cp -a "${rootfs}/." "$m/"
    "${BUILDAH[@]}" umount "$c" >/dev/null
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
    "${BUILDAH[@]}" commit -q "$c" "${name}" >/dev/null
    "${BUILDAH[@]}" rm "$c" >/dev/null
    rm -rf "${rootfs}"
    "${BUILDAH[@]}" push -q "${name}" "oci-archive:${archive}.tmp:${name}"
    mv "${archive}.tmp" "${archive}"
    log "base image ${name} built"
  elif ! "${BUILDAH[@]}" inspect "${name}" >/dev/null 2>&1; then
    "${BUILDAH[@]}" pull -q "oci-archive:${archive}" >/dev/null
  fi
  echo "${name}"
}

build_pause() { # -> image name; the sandbox image, compiled from the Kubernetes module
  local name="localhost/agentmem-pause:${KUBERNETES_VERSION}" archive src tmp c
  archive="${IMAGES}/pause-${KUBERNETES_VERSION}.tar"
  if [[ ! -f "${archive}" ]]; then
    src="$(cd "${HERE}/go/kubernetes" && GOFLAGS= go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    [[ -f "${src}" ]] || die "pause.c not found in the module cache (run testenv/build.sh)"
    tmp="$(mktemp -d)"
    gcc -Os -static -DVERSION="${KUBERNETES_VERSION}" -o "${tmp}/pause" "${src}"
    c="$("${BUILDAH[@]}" from scratch)"
    "${BUILDAH[@]}" copy "$c" "${tmp}/pause" /pause >/dev/null
    "${BUILDAH[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c"
    "${BUILDAH[@]}" commit -q "$c" "${name}" >/dev/null
    "${BUILDAH[@]}" rm "$c" >/dev/null
    rm -rf "${tmp}"
    "${BUILDAH[@]}" push -q "${name}" "oci-archive:${archive}.tmp:${name}"
    mv "${archive}.tmp" "${archive}"
    log "pause image ${name} built"
  fi
  echo "${name}"
}

build_agentmem() { # base -> image name; the project's Dockerfile, as it is in this tree
  local base=$1 key name archive
  key="$( (image_key Dockerfile pyproject.toml README.md .dockerignore operator; echo "${base}") \
          | sha256sum | cut -c1-12)"
  name="localhost/agentmem:e2e-${key}"
  archive="${IMAGES}/agentmem-${key}.tar"
  if [[ ! -f "${archive}" ]]; then
    log "building ${name} from the Dockerfile ..."
    # RUN steps reach PyPI through the host's network and trust its CA bundle.
    (cd "${ROOT}" && "${BUILDAH[@]}" bud --pull=never --network host --layers=false \
       --build-arg "PYTHON_IMAGE=${base}" \
       -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
       -t "${name}" . > "${IMAGES}/build.log" 2>&1) \
      || { tail -30 "${IMAGES}/build.log" >&2; die "building the agentmem image failed"; }
    "${BUILDAH[@]}" push -q "${name}" "oci-archive:${archive}.tmp:${name}"
    mv "${archive}.tmp" "${archive}"
    # keep the three newest agentmem images
    ls -t "${IMAGES}"/agentmem-*.tar | tail -n +4 | xargs -r rm -f
    log "${name} built"
  fi
  echo "${name}"
}

cmd_images() {
  [[ $(id -u) == 0 ]] || die "building images needs root (buildah, debootstrap)"
  mkdir -p "${IMAGES}"
  exec 9>"${CACHE_ROOT}/.images.lock"
  flock 9
  local base pause agentmem
  base="$(build_base)"
  pause="$(build_pause)"
  agentmem="$(build_agentmem "${base}")"
  cat <<EOF
AGENTMEM_E2E_BASE_IMAGE=${base}
AGENTMEM_E2E_PAUSE_IMAGE=${pause}
AGENTMEM_E2E_IMAGE=${agentmem}
AGENTMEM_E2E_BASE_ARCHIVE=${IMAGES}/base-$(cut -d- -f2 <<<"${base##*:}").tar
AGENTMEM_E2E_PAUSE_ARCHIVE=${IMAGES}/pause-${KUBERNETES_VERSION}.tar
AGENTMEM_E2E_ARCHIVE=${IMAGES}/agentmem-${agentmem##*:e2e-}.tar
EOF
}

# ------------------------------------------------------------------ processes
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cut -d' ' -f1 "$1")" 2>/dev/null; }

start_in_ns() { # name binary args... : started inside the node's mount namespace
  local name=$1; shift
  setsid nsenter -t "$(cat "${DIR}/pids/ns.pid")" -m -- "$@" >"${DIR}/logs/${name}.log" 2>&1 </dev/null &
  echo "$!" > "${DIR}/pids/${name}.pid"
}

stop_pid() { # name [signal]
  local pf="${DIR}/pids/$1.pid" pid i
  [[ -f "${pf}" ]] || return 0
  pid="$(cut -d' ' -f1 "${pf}")"
  kill -"${2:-TERM}" -- "-${pid}" 2>/dev/null || kill -"${2:-TERM}" "${pid}" 2>/dev/null || true
  for (( i = 0; i < 100; i++ )); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-${pid}" 2>/dev/null || kill -KILL "${pid}" 2>/dev/null || true
  rm -f "${pf}"
}

wait_for() { # description timeout command...
  local what=$1 timeout=$2 start; shift 2
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) - start < timeout )) || { log "ERROR: timed out waiting for ${what}"; return 1; }
    sleep 0.2
  done
}

ns_ready() { # the namespace's tmpfs mounts are in place
  nsenter -t "$(cat "${DIR}/pids/ns.pid")" -m findmnt -rno TARGET "${PRIVATE_DIRS[0]}" | grep -q .
}

# ------------------------------------------------------------------ up
cmd_up() {
  local cp=$1 watch_pid=""; shift
  while [[ $# -gt 0 ]]; do
    case "$1" in --watch-pid) watch_pid=$2; shift 2 ;; *) usage ;; esac
  done
  [[ $(id -u) == 0 ]] || die "the e2e node needs root (containerd, kubelet, a bridge)"
  [[ -f "${cp}/env" ]] || die "no control plane in ${cp} (run testenv/controlplane.sh up first)"
  pid_alive "${DIR}/pids/kubelet.pid" && die "already up in ${DIR}; run: $0 down ${DIR}"
  local cpenv images
  cpenv="$(cat "${cp}/env")"
  eval "$(sed 's/^/local /' <<<"${cpenv}")"
  images="$(cmd_images)"
  eval "$(sed 's/^/local /' <<<"${images}")"
  mkdir -p "${DIR}"/{logs,pids,state,cni,ipam,containerd,kubelet,pod-logs}
  trap 'rc=$?; if (( rc != 0 )); then log "up failed (rc=$rc), tearing down"; cmd_down >/dev/null 2>&1 || true; fi' EXIT

  # --- what down restores
  local s
  for s in "${SYSCTLS[@]}"; do cat "/proc/sys/$s" > "${DIR}/state/sysctl.${s//\//.}"; done
  iptables-save > "${DIR}/state/iptables"
  ip6tables-save > "${DIR}/state/ip6tables" 2>/dev/null || true
  if ip route show "${SUBNET}" | grep -qv "dev ${BRIDGE} "; then
    die "${SUBNET} is routed elsewhere already ($(ip route show "${SUBNET}" | head -1)); remove that network first"
  fi
  for s in "${PRIVATE_DIRS[@]}"; do
    [[ -d "$s" ]] || { mkdir -p "$s"; echo "$s" >> "${DIR}/state/created-dirs"; }
  done

  # --- the bridge the pods and the host's test servers share
  ip link del "${BRIDGE}" 2>/dev/null || true  # a leftover of a run that was killed
  ip link add "${BRIDGE}" type bridge
  ip addr add "${BRIDGE_IP}/16" dev "${BRIDGE}"
  ip link set "${BRIDGE}" up
  cat > "${DIR}/cni/10-agentmem.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "agentmem-e2e",
  "plugins": [{
    "type": "bridge", "bridge": "${BRIDGE}", "isGateway": true, "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "${SUBNET}", "rangeStart": "10.217.1.1",
                   "rangeEnd": "10.217.255.254", "gateway": "${BRIDGE_IP}"}]],
      "dataDir": "${DIR}/ipam"
    }
  }]
}
EOF
  log "bridge ${BRIDGE} ${BRIDGE_IP}/16"

  # --- a mount namespace for containerd and the kubelet: their mounts go with it
  setsid unshare --mount --propagation private -- sh -c \
    'for d in "$@"; do mount -t tmpfs -o mode=0711 tmpfs "$d"; done; exec sleep infinity' \
    sh "${PRIVATE_DIRS[@]}" >"${DIR}/logs/ns.log" 2>&1 </dev/null &
  echo "$!" > "${DIR}/pids/ns.pid"
  wait_for "the mount namespace" 10 ns_ready || die "cannot make a mount namespace"

  # --- containerd
  local sock="${DIR}/containerd/containerd.sock"
  cat > "${DIR}/containerd/config.toml" <<EOF
version = 2
root = "${DIR}/containerd/root"
state = "${DIR}/containerd/state"
[grpc]
  address = "${sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${AGENTMEM_E2E_PAUSE_IMAGE}"
  # the VM lacks CAP_SYS_RESOURCE: without this every sandbox fails to start
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${DIR}/cni"
EOF
  start_in_ns containerd containerd --config "${DIR}/containerd/config.toml"
  wait_for containerd 30 ctr --address "${sock}" version || { tail -20 "${DIR}/logs/containerd.log" >&2; die "containerd did not start"; }
  local a
  for a in "${AGENTMEM_E2E_PAUSE_ARCHIVE}" "${AGENTMEM_E2E_BASE_ARCHIVE}" "${AGENTMEM_E2E_ARCHIVE}"; do
    ctr --address "${sock}" -n k8s.io images import "$a" >/dev/null
  done
  log "containerd up, images imported"

  # --- CoreDNS: cluster.local from the API server; nothing else resolves
  cat > "${DIR}/Corefile" <<EOF
cluster.local:53 {
    bind ${BRIDGE_IP}
    kubernetes cluster.local {
        kubeconfig ${KUBECONFIG} agentmem-testenv
    }
}
.:53 {
    bind ${BRIDGE_IP}
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
  setsid "${AGENTMEM_COREDNS}" -conf "${DIR}/Corefile" >"${DIR}/logs/coredns.log" 2>&1 </dev/null &
  echo "$!" > "${DIR}/pids/coredns.pid"

  # --- kubelet
  printf 'nameserver %s\n' "${BRIDGE_IP}" > "${DIR}/resolv.conf"
  cat > "${DIR}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The kernel mounts cgroup v1 and nothing runs systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://${sock}
resolvConf: ${DIR}/resolv.conf
clusterDNS: [${BRIDGE_IP}]
clusterDomain: cluster.local
podLogsDir: ${DIR}/pod-logs
address: ${BRIDGE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${AGENTMEM_CA_FILE}}
authorization: {mode: Webhook}
# Mounted ConfigMaps (the directory) follow their source within seconds.
syncFrequency: 5s
failSwapOn: false
enforceNodeAllocatable: []
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
maxPods: 60
EOF
  start_in_ns kubelet "${AGENTMEM_KUBELET}" --config="${DIR}/kubelet.yaml" --kubeconfig="${KUBECONFIG}" \
    --root-dir="${DIR}/kubelet" --cert-dir="${DIR}/kubelet/pki" --node-ip="${BRIDGE_IP}" --hostname-override="${NODE_NAME}" \
    --node-labels="topology.kubernetes.io/zone=zone-a,topology.kubernetes.io/region=region-1" --v=1
  local kc=("${AGENTMEM_KUBECTL}" --kubeconfig="${KUBECONFIG}")
  wait_for "node ${NODE_NAME}" 60 "${kc[@]}" get node "${NODE_NAME}" \
    || { tail -20 "${DIR}/logs/kubelet.log" >&2; die "the kubelet did not register"; }
  "${kc[@]}" wait --for=condition=Ready "node/${NODE_NAME}" --timeout=60s >/dev/null \
    || { tail -20 "${DIR}/logs/kubelet.log" >&2; die "node ${NODE_NAME} not Ready"; }
  log "node ${NODE_NAME} Ready"

  cat > "${DIR}/env" <<EOF
AGENTMEM_E2E_BRIDGE_IP=${BRIDGE_IP}
AGENTMEM_E2E_NODE=${NODE_NAME}
AGENTMEM_E2E_CONTAINERD=${sock}
${images}
EOF
  if [[ -n "${watch_pid}" ]]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -f "$2/env" ]]; do sleep 1; done; exec "$3" down "$2"' \
      agentmem-e2e-watchdog "${watch_pid}" "${DIR}" "${SELF}" >"${DIR}/logs/watchdog.log" 2>&1 </dev/null &
    echo "$!" > "${DIR}/pids/watchdog.pid"
  fi
  trap - EXIT
  log "e2e node up"
  cat "${DIR}/env"
}

# ------------------------------------------------------------------ down
cmd_down() {
  [[ -d "${DIR}" ]] || return 0
  rm -f "${DIR}/env"  # also tells the watchdog to stop
  local sock="${DIR}/containerd/containerd.sock" id ns_pid="" pid
  stop_pid kubelet
  if [[ -S "${sock}" ]]; then
    for id in $(ctr --address "${sock}" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "${sock}" -n k8s.io tasks kill -s KILL "${id}" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd
  stop_pid coredns
  # whatever still runs in the namespace (shims, containers) goes with it
  [[ -f "${DIR}/pids/ns.pid" ]] && ns_pid="$(cat "${DIR}/pids/ns.pid")"
  if [[ -n "${ns_pid}" && -e "/proc/${ns_pid}/ns/mnt" ]]; then
    local ns; ns="$(readlink "/proc/${ns_pid}/ns/mnt")"
    for pid in $(ls /proc | grep -E '^[0-9]+$'); do
      [[ "${pid}" != "${ns_pid}" && "$(readlink "/proc/${pid}/ns/mnt" 2>/dev/null)" == "${ns}" ]] \
        && kill -KILL "${pid}" 2>/dev/null || true
    done
  fi
  stop_pid ns KILL
  if [[ -f "${DIR}/pids/watchdog.pid" ]]; then
    local wpid; wpid="$(cat "${DIR}/pids/watchdog.pid")"
    [[ "${wpid}" != "$$" && "${wpid}" != "${PPID}" ]] && stop_pid watchdog || rm -f "${DIR}/pids/watchdog.pid"
  fi
  # cgroups the kubelet made (cgroup v1: one tree per controller)
  local c
  for c in /sys/fs/cgroup/*/; do
    [[ -d "${c}kubepods" ]] && find "${c}kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  ip link del "${BRIDGE}" 2>/dev/null || true
  # the kubelet's chains (KUBE-FIREWALL, ...) go; the rules from before come back
  [[ -s "${DIR}/state/iptables" ]] && iptables-restore < "${DIR}/state/iptables" || true
  [[ -s "${DIR}/state/ip6tables" ]] && ip6tables-restore < "${DIR}/state/ip6tables" 2>/dev/null || true
  local f
  for f in "${DIR}"/state/sysctl.*; do
    [[ -f "$f" ]] || continue
    c="${f##*/sysctl.}"; cat "$f" > "/proc/sys/${c//.//}" 2>/dev/null || true
  done
  if [[ -f "${DIR}/state/created-dirs" ]]; then
    while read -r f; do rmdir "$f" 2>/dev/null || true; done < "${DIR}/state/created-dirs"
    rm -f "${DIR}/state/created-dirs"
  fi
  log "e2e node down (logs kept in ${DIR}/logs)"
}

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 2; }

case "${1:-}" in
  images) cmd_images ;;
  up) [[ $# -ge 3 ]] || usage; DIR=$2; mkdir -p "${DIR}"; DIR="$(cd "${DIR}" && pwd)"; shift 2; cmd_up "$@" ;;
  down) [[ $# -ge 2 ]] || usage; DIR=$2; [[ -d "${DIR}" ]] && DIR="$(cd "${DIR}" && pwd)"; cmd_down ;;
  *) usage ;;
esac
