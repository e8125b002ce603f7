#!/usr/bin/env bash
# Start / stop a real Kubernetes control plane with kwok fake nodes, all on
# 127.0.0.1, using the binaries testenv/build.sh put in the cache.
#
#   testenv/controlplane.sh up   <dir> [--watch-pid PID]
#   testenv/controlplane.sh down <dir>
#   testenv/controlplane.sh status <dir>
#
# up: etcd, kube-apiserver (RBAC + PodSecurity), kube-controller-manager (all
# default controllers: garbage collector, statefulset, deployment, ...),
# kube-scheduler, kwok; creates AGENTMEM_NODES (default 6) Ready fake nodes
# spread over zone-a/zone-b/zone-c (topology.kubernetes.io/zone); writes
# <dir>/kubeconfig (cluster-admin, CA embedded) and <dir>/env (KUBECONFIG=,
# ports, versions). Returns when the API is ready, every node is Ready and the
# "default" ServiceAccount exists. On failure it tears everything down again.
# --watch-pid PID: also start a watchdog that runs `down <dir>` once PID exits
# (so a killed test runner leaves nothing behind).
#
# down: stops every process started by up (TERM, then KILL after 10s), checks
# none is left, deletes the etcd data. Logs stay in <dir>/logs. Idempotent.
#
# Env: AGENTMEM_TESTENV_CACHE (see build.sh), AGENTMEM_NODES (default 6; 0 for
#      none, when real kubelets join),
#      AGENTMEM_UP_TIMEOUT seconds (default 120),
#      AGENTMEM_KWOK_POD_NET the first two octets of the fake pods' addresses
#      (default 127.244: loopback, see below; the EndpointSlice controller rejects
#      loopback addresses and retries),
#      AGENTMEM_KCM_QPS the controller manager's requests per second to the API
#      server (unset: its defaults, 20 and a burst of 30; set: a burst of twice it).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="${HERE}/controlplane.sh"
COMPONENTS=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)  # stop order

usage() { sed -n '2,24p' "${BASH_SOURCE[0]}"; exit 2; }
T0=$(date +%s%N)
log() { printf '[controlplane %6.1fs] %s\n' "$(( ($(date +%s%N) - T0) / 1000000 ))e-3" "$*" >&2; }

# ------------------------------------------------------------------ processes
pid_alive() { # pidfile -> 0 if the recorded process is still ours and alive
  local pf=$1 pid exe
  [[ -f "$pf" ]] || return 1
  read -r pid exe < "$pf" || true
  [[ -n "${pid:-}" && -d "/proc/${pid}" ]] || return 1
  # guard against pid reuse: the process must still run the recorded binary
  [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null || true)" == "${exe}"* ]]
}

start_proc() { # name binary args...
  local name=$1 bin=$2; shift 2
  # own session/process group, detached from the caller's terminal
  setsid "$bin" "$@" >"${DIR}/logs/${name}.log" 2>&1 </dev/null &
  echo "$! $(readlink -f "$bin")" > "${DIR}/pids/${name}.pid"
}

stop_proc() { # name
  local pf="${DIR}/pids/$1.pid" pid exe i
  if pid_alive "$pf"; then
    read -r pid exe < "$pf"
    kill -TERM -- "-${pid}" 2>/dev/null || kill -TERM "${pid}" 2>/dev/null || true
    for (( i = 0; i < 100; i++ )); do
      pid_alive "$pf" || break
      sleep 0.1
    done
    if pid_alive "$pf"; then
      log "$1 (pid ${pid}) ignored SIGTERM for 10s, sending SIGKILL"
      kill -KILL -- "-${pid}" 2>/dev/null || kill -KILL "${pid}" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$pf"
}

die_component() { # name -> fail with the tail of its log
  log "ERROR: $1 failed or is not running; last log lines:"
  tail -n 25 "${DIR}/logs/$1.log" >&2 || true
  exit 1
}

# ------------------------------------------------------------------ ports
PICKED=" "
free_port() {
  local p i
  for (( i = 0; i < 200; i++ )); do
    # below the usual ephemeral range (32768+) so outgoing connections can't take it
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    [[ "${PICKED}" == *" $p "* ]] && continue
    if command -v ss >/dev/null 2>&1; then
      [[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]] || continue
    else
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    fi
    PICKED+="$p "
    echo "$p"; return 0
  done
  echo "no free port found" >&2; return 1
}

wait_for() { # description timeout_s command...
  local what=$1 timeout=$2 start; shift 2
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    if (( $(date +%s) - start >= timeout )); then log "ERROR: timed out waiting for ${what}"; return 1; fi
    sleep 0.2
  done
}

# ------------------------------------------------------------------ up
cmd_up() {
  local watch_pid=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --watch-pid) watch_pid=$2; shift 2 ;;
      *) usage ;;
    esac
  done
  local nodes="${AGENTMEM_NODES:-6}" timeout="${AGENTMEM_UP_TIMEOUT:-120}" c
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "${DIR}/pids/$c.pid"; then
      echo "error: $c already running for ${DIR}; run: $0 down ${DIR}" >&2; exit 1
    fi
  done

  # binaries from the cache (does not build; run testenv/build.sh first)
  local envs
  envs="$("${HERE}/build.sh" --print-env)" || {
    echo "error: test binaries missing; run testenv/build.sh first" >&2; exit 1; }
  eval "$(sed 's/^/local /' <<<"${envs}")"

  mkdir -p "${DIR}"/{logs,pids,pki}
  rm -rf "${DIR}/etcd-data"
  trap 'rc=$?; if (( rc != 0 )); then log "up failed (rc=$rc), tearing down"; cmd_down >/dev/null 2>&1 || true; fi' EXIT

  # --- credentials: CA, apiserver serving cert (127.0.0.1/localhost), SA key, admin token
  local pki="${DIR}/pki"
  openssl ecparam -name prime256v1 -genkey -noout -out "${pki}/ca.key" 2>/dev/null
  openssl req -x509 -new -key "${pki}/ca.key" -subj "/CN=agentmem-testenv-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "${pki}/ca.crt" 2>/dev/null
  openssl ecparam -name prime256v1 -genkey -noout -out "${pki}/apiserver.key" 2>/dev/null
  openssl req -new -key "${pki}/apiserver.key" -subj "/CN=kube-apiserver" -out "${pki}/apiserver.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1" \
    > "${pki}/apiserver.ext"
  openssl x509 -req -in "${pki}/apiserver.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" -CAcreateserial \
    -days 3650 -extfile "${pki}/apiserver.ext" -out "${pki}/apiserver.crt" 2>/dev/null
  # the API server's client certificate towards kubelets (logs, exec)
  openssl ecparam -name prime256v1 -genkey -noout -out "${pki}/kubelet-client.key" 2>/dev/null
  openssl req -new -key "${pki}/kubelet-client.key" -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    -out "${pki}/kubelet-client.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=clientAuth" > "${pki}/kubelet-client.ext"
  openssl x509 -req -in "${pki}/kubelet-client.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" -CAcreateserial \
    -days 3650 -extfile "${pki}/kubelet-client.ext" -out "${pki}/kubelet-client.crt" 2>/dev/null
  openssl genrsa -out "${pki}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${pki}/sa.key" -pubout -out "${pki}/sa.pub" 2>/dev/null
  local token
  token="$(openssl rand -hex 24)"
  echo "${token},agentmem-admin,agentmem-admin,\"system:masters\"" > "${pki}/tokens.csv"
  chmod 600 "${pki}"/*.key "${pki}/tokens.csv"
  log "credentials generated"

  # --- ports (all 127.0.0.1); KCM and scheduler run with --secure-port=0 (no listener)
  local etcd_port etcd_peer_port api_port
  etcd_port=$(free_port); etcd_peer_port=$(free_port); api_port=$(free_port)

  # --- kubeconfig (cluster-admin via static token, CA embedded)
  local kubeconfig="${DIR}/kubeconfig"
  cat > "${kubeconfig}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: agentmem-testenv
  cluster:
    server: https://127.0.0.1:${api_port}
    certificate-authority-data: $(base64 -w0 < "${pki}/ca.crt")
users:
- name: agentmem-admin
  user:
    token: ${token}
contexts:
- name: agentmem-testenv
  context:
    cluster: agentmem-testenv
    user: agentmem-admin
    namespace: default
current-context: agentmem-testenv
EOF
  chmod 600 "${kubeconfig}"

  # --- etcd
  start_proc etcd "${AGENTMEM_ETCD}" \
    --name=agentmem --data-dir="${DIR}/etcd-data" \
    --listen-client-urls="http://127.0.0.1:${etcd_port}" --advertise-client-urls="http://127.0.0.1:${etcd_port}" \
    --listen-peer-urls="http://127.0.0.1:${etcd_peer_port}" --initial-advertise-peer-urls="http://127.0.0.1:${etcd_peer_port}" \
    --initial-cluster="agentmem=http://127.0.0.1:${etcd_peer_port}" --initial-cluster-state=new \
    --unsafe-no-fsync=true --quota-backend-bytes=4294967296 --log-level=warn
  log "etcd starting on 127.0.0.1:${etcd_port} (peer ${etcd_peer_port})"
  wait_for etcd 30 bash -c "curl -sf http://127.0.0.1:${etcd_port}/health | grep -q '\"health\":\"true\"'" \
    || die_component etcd
  log "etcd healthy"

  # --- kube-apiserver, with an audit log of what service accounts do (the tests
  # compare what the operator's ServiceAccount uses with what its role grants)
  cat >"${DIR}/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
POLICY
  start_proc kube-apiserver "${AGENTMEM_KUBE_APISERVER}" \
    --audit-policy-file="${DIR}/audit-policy.yaml" --audit-log-path="${DIR}/logs/audit.log" \
    --audit-log-format=json --audit-log-maxsize=200 \
    --etcd-servers="http://127.0.0.1:${etcd_port}" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="${api_port}" \
    --tls-cert-file="${pki}/apiserver.crt" --tls-private-key-file="${pki}/apiserver.key" \
    --client-ca-file="${pki}/ca.crt" \
    --token-auth-file="${pki}/tokens.csv" \
    --authorization-mode=RBAC \
    --enable-admission-plugins=PodSecurity \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${pki}/sa.pub" --service-account-signing-key-file="${pki}/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --kubelet-preferred-address-types=InternalIP \
    --kubelet-client-certificate="${pki}/kubelet-client.crt" --kubelet-client-key="${pki}/kubelet-client.key" \
    --allow-privileged=true --profiling=false --v=0
  log "kube-apiserver starting on https://127.0.0.1:${api_port}"
  local api_ok=(curl -sf --cacert "${pki}/ca.crt" -H "Authorization: Bearer ${token}" "https://127.0.0.1:${api_port}/readyz")
  local start; start=$(date +%s)
  until "${api_ok[@]}" >/dev/null 2>&1; do
    pid_alive "${DIR}/pids/kube-apiserver.pid" || die_component kube-apiserver
    (( $(date +%s) - start < timeout )) || { log "ERROR: kube-apiserver not ready in ${timeout}s"; die_component kube-apiserver; }
    sleep 0.2
  done
  log "kube-apiserver ready"

  # --- controller-manager, scheduler, kwok (all use the admin kubeconfig)
  start_proc kube-controller-manager "${AGENTMEM_KUBE_CONTROLLER_MANAGER}" \
    --kubeconfig="${kubeconfig}" --authentication-kubeconfig="${kubeconfig}" --authorization-kubeconfig="${kubeconfig}" \
    --secure-port=0 --leader-elect=false \
    --controllers='*' \
    --service-account-private-key-file="${pki}/sa.key" --root-ca-file="${pki}/ca.crt" \
    --use-service-account-credentials=false \
    --service-cluster-ip-range=10.96.0.0/16 --allocate-node-cidrs=false \
    ${AGENTMEM_KCM_QPS:+--kube-api-qps="${AGENTMEM_KCM_QPS}" --kube-api-burst="$(( AGENTMEM_KCM_QPS * 2 ))"} \
    --concurrent-gc-syncs=20 --v=0
  start_proc kube-scheduler "${AGENTMEM_KUBE_SCHEDULER}" \
    --kubeconfig="${kubeconfig}" --authentication-kubeconfig="${kubeconfig}" --authorization-kubeconfig="${kubeconfig}" \
    --secure-port=0 --leader-elect=false --v=0
  local stage_args=() f pod_net="${AGENTMEM_KWOK_POD_NET:-127.244}"
  # upstream node/pod stages (copied from the kwok module by build.sh) + ours
  # for fake volume provisioning (testenv/kwok-stages)
  for f in "${AGENTMEM_KWOK_STAGES_DIR}"/*.yaml "${HERE}/kwok-stages/pvc-provision.yaml" \
           "${HERE}/kwok-stages/pv-delete.yaml"; do stage_args+=(-c "$f"); done
  start_proc kwok "${AGENTMEM_KWOK}" \
    --kubeconfig="${kubeconfig}" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --cidr="${pod_net}.0.0/16" --node-ip=127.255.0.1 \
    "${stage_args[@]}"
  log "kube-controller-manager, kube-scheduler, kwok started"

  # --- fake nodes, round-robin over 3 zones. Their pods run nothing; their
  # addresses are loopback ones, so whatever tries to reach them (the operator
  # asking nodes how far they are) stays on this machine and is refused.
  local kc=("${AGENTMEM_KUBECTL}" --kubeconfig="${kubeconfig}") i zones=(zone-a zone-b zone-c) zone name
  {
    for (( i = 0; i < nodes; i++ )); do
      zone=${zones[$(( i % 3 ))]}; name="kwok-node-${i}"
      cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: ${name}
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: ${name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    beta.kubernetes.io/os: linux
    beta.kubernetes.io/arch: amd64
    node-role.kubernetes.io/agent: ""
    topology.kubernetes.io/region: region-1
    topology.kubernetes.io/zone: ${zone}
spec:
  podCIDR: ${pod_net}.${i}.0/24
  podCIDRs: [${pod_net}.${i}.0/24]
status:
  addresses: [{type: InternalIP, address: 127.255.0.$(( i + 1 ))}, {type: Hostname, address: ${name}}]
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, containerRuntimeVersion: fake, kernelVersion: fake, osImage: fake, bootID: "", machineID: "", systemUUID: "", kubeProxyVersion: ""}
EOF
    done
  } > "${DIR}/nodes.yaml"
  if (( nodes > 0 )); then
    "${kc[@]}" create -f "${DIR}/nodes.yaml" -f "${HERE}/kwok-stages/storageclass.yaml" >/dev/null
    log "${nodes} nodes and default StorageClass \"standard\" created"
  fi

  for c in kube-controller-manager kube-scheduler kwok; do
    # (a process just started may not have exec'd its binary yet)
    wait_for "$c" 5 pid_alive "${DIR}/pids/$c.pid" || die_component "$c"
  done
  if (( nodes > 0 )); then
    "${kc[@]}" wait --for=condition=Ready node --all --timeout="${timeout}s" >/dev/null \
      || { log "ERROR: nodes not Ready"; die_component kwok; }
    log "all nodes Ready"
  fi
  # pods can only be created once the serviceaccount controller made "default"
  wait_for "default ServiceAccount" "${timeout}" "${kc[@]}" -n default get serviceaccount default \
    || die_component kube-controller-manager
  log "default ServiceAccount present"
  for c in "${COMPONENTS[@]}"; do pid_alive "${DIR}/pids/$c.pid" || die_component "$c"; done

  cat > "${DIR}/env" <<EOF
KUBECONFIG=${kubeconfig}
AGENTMEM_API_SERVER=https://127.0.0.1:${api_port}
AGENTMEM_API_PORT=${api_port}
AGENTMEM_ETCD_PORT=${etcd_port}
AGENTMEM_ETCD_PEER_PORT=${etcd_peer_port}
AGENTMEM_ADMIN_TOKEN_FILE=${pki}/tokens.csv
AGENTMEM_CA_FILE=${pki}/ca.crt
AGENTMEM_NODES=${nodes}
${envs}
EOF

  if [[ -n "${watch_pid}" ]]; then
    # watchdog: tear down when the owning process (e.g. pytest) goes away
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -f "$2/env" ]]; do sleep 1; done; exec "$3" down "$2"' \
      agentmem-watchdog "${watch_pid}" "${DIR}" "${SELF}" >"${DIR}/logs/watchdog.log" 2>&1 </dev/null &
    echo "$! $(readlink -f /bin/bash)" > "${DIR}/pids/watchdog.pid"
  fi
  trap - EXIT
  log "control plane up: KUBECONFIG=${kubeconfig}"
  cat "${DIR}/env"
}

# ------------------------------------------------------------------ down
cmd_down() {
  [[ -d "${DIR}" ]] || return 0
  local c left=()
  rm -f "${DIR}/env"   # also tells the watchdog to stop
  for c in "${COMPONENTS[@]}"; do stop_proc "$c"; done
  # stop the watchdog unless we *are* the watchdog
  if [[ -f "${DIR}/pids/watchdog.pid" ]]; then
    local wpid; read -r wpid _ < "${DIR}/pids/watchdog.pid"
    if [[ "${wpid}" != "$$" && "${wpid}" != "${PPID}" ]]; then stop_proc watchdog; else rm -f "${DIR}/pids/watchdog.pid"; fi
  fi
  for c in "${COMPONENTS[@]}"; do [[ -f "${DIR}/pids/$c.pid" ]] && left+=("$c"); done
  # belt and braces: any process running one of our component binaries with this
  # work dir in its argv (e.g. left by an `up` whose pid files got lost) is ours
  # too. kubectl & co. started by tests are not touched.
  local re_dir pid exe stray=()
  re_dir="$(printf '%s' "${DIR}" | sed 's/[][\\.^$*+?(){}|]/\\&/g')"
  for pid in $(pgrep -f -- "${re_dir}/(kubeconfig|etcd-data|pki/)" 2>/dev/null || true); do
    exe="$(readlink "/proc/${pid}/exe" 2>/dev/null || true)"
    case "$(basename "${exe% (deleted)}")" in
      etcd|kube-apiserver|kube-controller-manager|kube-scheduler|kwok) stray+=("${pid}") ;;
    esac
  done
  if [[ ${#stray[@]} -gt 0 ]]; then
    log "WARNING: killing stray processes of ${DIR}: ${stray[*]}"
    kill -KILL "${stray[@]}" 2>/dev/null || true
    sleep 0.2
    for pid in "${stray[@]}"; do
      [[ -n "$(readlink "/proc/${pid}/exe" 2>/dev/null || true)" ]] && left+=("pid:${pid}")
    done
  fi
  rm -rf "${DIR}/etcd-data"
  if [[ ${#left[@]} -gt 0 ]]; then log "ERROR: still running: ${left[*]}"; return 1; fi
  log "control plane down (logs kept in ${DIR}/logs)"
}

cmd_status() {
  local c rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "${DIR}/pids/$c.pid"; then echo "$c: running (pid $(cut -d' ' -f1 "${DIR}/pids/$c.pid"))"
    else echo "$c: stopped"; rc=1; fi
  done
  return $rc
}

[[ $# -ge 2 ]] || usage
ACTION=$1; DIR=$2; shift 2
mkdir -p "${DIR}"
DIR="$(cd "${DIR}" && pwd)"
case "${ACTION}" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) usage ;;
esac
