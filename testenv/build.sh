#!/usr/bin/env bash
# Build the agentmem test-environment binaries (Kubernetes control plane and
# kubelet, etcd, kwok/kwokctl, helm, CoreDNS, Prometheus and promtool) from the Go module proxy only. Idempotent: builds only
# what is missing from the version-keyed cache directories.
#
# Usage:
#   testenv/build.sh                 build whatever is missing, print bin dirs
#   testenv/build.sh --print-env     print KEY=path lines (no building; exit 1
#                                    if a binary is missing)
#   testenv/build.sh --check         exit 0 iff every binary is already built
#   testenv/build.sh --sync-modules  regenerate testenv/go/*/go.mod + go.sum
#                                    from versions.env (maintainers only)
#
# Env:
#   AGENTMEM_TESTENV_CACHE  cache root (default ~/.cache/agentmem-testenv)
#   GOMODCACHE / GOCACHE    honoured as usual by go
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "${HERE}/versions.env"

CACHE_ROOT="${AGENTMEM_TESTENV_CACHE:-${HOME}/.cache/agentmem-testenv}"
BIN_ROOT="${CACHE_ROOT}/bin"
K8S_DIR="${BIN_ROOT}/k8s-${KUBERNETES_VERSION}"
ETCD_DIR="${BIN_ROOT}/etcd-${ETCD_VERSION}"
KWOK_DIR="${BIN_ROOT}/kwok-${KWOK_VERSION}"
HELM_DIR="${BIN_ROOT}/helm-${HELM_VERSION}"
COREDNS_DIR="${BIN_ROOT}/coredns-${COREDNS_VERSION}"
PROMETHEUS_DIR="${BIN_ROOT}/prometheus-${PROMETHEUS_VERSION}"
KWOK_STAGES_DIR="${KWOK_DIR}/stages"

export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false"
GO="${GO:-go}"
command -v "${GO}" >/dev/null 2>&1 || { [[ -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go; }

K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)
KWOK_STAGE_FILES=(
  kustomize/stage/node/fast/node-initialize.yaml
  kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  kustomize/stage/pod/fast/pod-ready.yaml
  kustomize/stage/pod/fast/pod-complete.yaml
  kustomize/stage/pod/fast/pod-delete.yaml
)

print_env() {
  cat <<EOF
AGENTMEM_KUBE_APISERVER=${K8S_DIR}/kube-apiserver
AGENTMEM_KUBE_CONTROLLER_MANAGER=${K8S_DIR}/kube-controller-manager
AGENTMEM_KUBE_SCHEDULER=${K8S_DIR}/kube-scheduler
AGENTMEM_KUBECTL=${K8S_DIR}/kubectl
AGENTMEM_KUBELET=${K8S_DIR}/kubelet
AGENTMEM_ETCD=${ETCD_DIR}/etcd
AGENTMEM_KWOK=${KWOK_DIR}/kwok
AGENTMEM_KWOKCTL=${KWOK_DIR}/kwokctl
AGENTMEM_KWOK_STAGES_DIR=${KWOK_STAGES_DIR}
AGENTMEM_HELM=${HELM_DIR}/helm
AGENTMEM_COREDNS=${COREDNS_DIR}/coredns
AGENTMEM_PROMTOOL=${PROMETHEUS_DIR}/promtool
AGENTMEM_PROMETHEUS=${PROMETHEUS_DIR}/prometheus
AGENTMEM_KUBERNETES_VERSION=${KUBERNETES_VERSION}
AGENTMEM_ETCD_VERSION=${ETCD_VERSION}
AGENTMEM_KWOK_VERSION=${KWOK_VERSION}
AGENTMEM_HELM_VERSION=${HELM_VERSION}
EOF
}

all_present() {
  local f
  for f in "${K8S_BINS[@]/#/${K8S_DIR}/}" "${ETCD_DIR}/etcd" "${KWOK_DIR}/kwok" \
           "${KWOK_DIR}/kwokctl" "${HELM_DIR}/helm" "${COREDNS_DIR}/coredns" \
           "${PROMETHEUS_DIR}/promtool" "${PROMETHEUS_DIR}/prometheus"; do
    [[ -x "$f" ]] || return 1
  done
  [[ -f "${KWOK_STAGES_DIR}/.complete" ]] || return 1
}

# ---------------------------------------------------------------- helpers
T0=$(date +%s)
now() { date +%s; }
log() { printf '[testenv %4ds] %s\n' "$(( $(now) - T0 ))" "$*" >&2; }

# staging version for k8s.io/kubernetes vX.Y.Z is v0.Y.Z
K8S_MINOR="$(echo "${KUBERNETES_VERSION#v}" | cut -d. -f2)"
K8S_MAJOR="$(echo "${KUBERNETES_VERSION#v}" | cut -d. -f1)"
K8S_STAGING_VERSION="v0.${KUBERNETES_VERSION#v*.}"

# module dir -> the main requirement and the version versions.env wants
check_module_pin() { # dir module want
  local have
  have="$(awk -v m="$2" '$1==m && $2 ~ /^v/ {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$1/go.mod")"
  if [[ "${have}" != "$3" ]]; then
    echo "error: $1/go.mod pins $2 ${have:-<none>} but versions.env says $3;" \
         "run: testenv/build.sh --sync-modules" >&2
    exit 2
  fi
}

module_time() { # dir module -> RFC3339 publish time from the proxy's .info
  (cd "$1" && "${GO}" list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$2")
}

# go_build <module dir> <output path> <package> <ldflags>
go_build() {
  local dir=$1 out=$2 pkg=$3 ldflags=$4 t tmp
  t=$(now)
  log "building $(basename "${out}") (${pkg})"
  mkdir -p "$(dirname "${out}")"
  tmp="$(mktemp "${out}.tmp.XXXXXX")"
  if ! (cd "${dir}" && "${GO}" build -trimpath -ldflags "-s -w ${ldflags}" -o "${tmp}" "${pkg}"); then
    rm -f "${tmp}"
    log "FAILED building ${out}"
    exit 1
  fi
  chmod 0755 "${tmp}"
  mv -f "${tmp}" "${out}"
  log "built $(basename "${out}") in $(( $(now) - t ))s ($(du -h "${out}" | cut -f1))"
}

go_download() { # dir packages... : fetch the modules these packages need
  local dir=$1 t; shift
  t=$(now)
  log "downloading modules for $(basename "${dir}") ..."
  (cd "${dir}" && "${GO}" list -deps "$@" >/dev/null)
  log "modules for $(basename "${dir}") ready in $(( $(now) - t ))s"
}

# ---------------------------------------------------------------- builders
build_k8s() {
  local dir="${HERE}/go/kubernetes" missing=() b
  for b in "${K8S_BINS[@]}"; do [[ -x "${K8S_DIR}/${b}" ]] || missing+=("$b"); done
  [[ ${#missing[@]} -gt 0 ]] || { log "k8s ${KUBERNETES_VERSION}: up to date"; return; }
  check_module_pin "${dir}" k8s.io/kubernetes "${KUBERNETES_VERSION}"
  go_download "${dir}" "${missing[@]/#/k8s.io/kubernetes/cmd/}"
  local date ld="" key val
  date="$(module_time "${dir}" k8s.io/kubernetes)"
  for kv in "gitVersion=${KUBERNETES_VERSION}" "gitMajor=${K8S_MAJOR}" "gitMinor=${K8S_MINOR}" \
            "gitCommit=${KUBERNETES_VERSION}-gomod" "gitTreeState=clean" "buildDate=${date:-1970-01-01T00:00:00Z}"; do
    key=${kv%%=*}; val=${kv#*=}
    ld+=" -X k8s.io/client-go/pkg/version.${key}=${val} -X k8s.io/component-base/version.${key}=${val}"
  done
  for b in "${missing[@]}"; do
    go_build "${dir}" "${K8S_DIR}/${b}" "k8s.io/kubernetes/cmd/${b}" "${ld}"
  done
}

build_etcd() {
  local dir="${HERE}/go/etcd"
  [[ -x "${ETCD_DIR}/etcd" ]] && { log "etcd ${ETCD_VERSION}: up to date"; return; }
  check_module_pin "${dir}" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}"
  go_download "${dir}" go.etcd.io/etcd/server/v3
  go_build "${dir}" "${ETCD_DIR}/etcd" go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=${ETCD_VERSION}-gomod"
}

build_kwok() {
  local dir="${HERE}/go/kwok" missing=() b
  for b in kwok kwokctl; do [[ -x "${KWOK_DIR}/${b}" ]] || missing+=("$b"); done
  if [[ ${#missing[@]} -gt 0 ]]; then
    check_module_pin "${dir}" sigs.k8s.io/kwok "${KWOK_VERSION}"
    go_download "${dir}" "${missing[@]/#/sigs.k8s.io/kwok/cmd/}"
    # Same values a release build (hack/releases.sh) stamps in; KubeVersion is
    # the default Kubernetes version kwokctl assumes, so make it ours.
    local ld="-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}"
    ld+=" -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${KUBERNETES_VERSION}"
    ld+=" -X sigs.k8s.io/kwok/pkg/consts.PreRelease=GA"
    for b in "${missing[@]}"; do
      go_build "${dir}" "${KWOK_DIR}/${b}" "sigs.k8s.io/kwok/cmd/${b}" "${ld}"
    done
  else
    log "kwok ${KWOK_VERSION}: up to date"
  fi
  if [[ ! -f "${KWOK_STAGES_DIR}/.complete" ]]; then
    # Stage configs (node init/heartbeat, pod ready/complete/delete) the kwok
    # controller needs via -c; copied out of the module so fixtures don't
    # depend on GOMODCACHE.
    local src tmp f
    src="$(cd "${dir}" && "${GO}" mod download -json sigs.k8s.io/kwok | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
    [[ -d "${src}" ]] || { echo "error: kwok module dir not found" >&2; exit 1; }
    tmp="$(mktemp -d "${KWOK_DIR}/stages.tmp.XXXXXX")"
    for f in "${KWOK_STAGE_FILES[@]}"; do install -m 0644 "${src}/${f}" "${tmp}/"; done
    touch "${tmp}/.complete"
    chmod 0755 "${tmp}"
    rm -rf "${KWOK_STAGES_DIR}"
    mv "${tmp}" "${KWOK_STAGES_DIR}"
    log "kwok stage files copied to ${KWOK_STAGES_DIR}"
  fi
}

build_helm() {
  local dir="${HERE}/go/helm"
  [[ -x "${HELM_DIR}/helm" ]] && { log "helm ${HELM_VERSION}: up to date"; return; }
  check_module_pin "${dir}" helm.sh/helm/v3 "${HELM_VERSION}"
  go_download "${dir}" helm.sh/helm/v3/cmd/helm
  # k8sVersionMajor/Minor: default kube version helm's lint/template assume
  # (helm's Makefile derives it from its k8s.io/client-go requirement).
  local cg cgminor
  cg="$(cd "${dir}" && "${GO}" list -m -f '{{.Version}}' k8s.io/client-go)"
  cgminor="$(echo "${cg#v}" | cut -d. -f2)"
  go_build "${dir}" "${HELM_DIR}/helm" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} \
     -X helm.sh/helm/v3/internal/version.gitCommit=${HELM_VERSION}-gomod \
     -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
     -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
     -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${cgminor} \
     -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
     -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${cgminor}"
}

build_coredns() {
  local dir="${HERE}/go/coredns"
  [[ -x "${COREDNS_DIR}/coredns" ]] && { log "coredns ${COREDNS_VERSION}: up to date"; return; }
  check_module_pin "${dir}" github.com/coredns/coredns "${COREDNS_VERSION}"
  go_download "${dir}" github.com/coredns/coredns
  go_build "${dir}" "${COREDNS_DIR}/coredns" github.com/coredns/coredns \
    "-X github.com/coredns/coredns/coremain.GitCommit=${COREDNS_VERSION}-gomod"
}

# promtool (the alert rules' unit tests) and the server (the end-to-end tier: it
# scrapes real nodes and evaluates the rules), from one module. The server's web
# UI assets are not embedded (no builtinassets tag): the tests use its HTTP API.
build_prometheus() { # command
  local dir="${HERE}/go/prometheus" cmd=$1
  [[ -x "${PROMETHEUS_DIR}/${cmd}" ]] && { log "${cmd} ${PROMETHEUS_VERSION}: up to date"; return; }
  check_module_pin "${dir}" github.com/prometheus/prometheus "${PROMETHEUS_VERSION}"
  go_download "${dir}" "github.com/prometheus/prometheus/cmd/${cmd}"
  go_build "${dir}" "${PROMETHEUS_DIR}/${cmd}" "github.com/prometheus/prometheus/cmd/${cmd}" \
    "-X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION} \
     -X github.com/prometheus/common/version.Revision=${PROMETHEUS_VERSION}-gomod"
}

# ---------------------------------------------------------------- sync-modules
write_tools_go() { # dir pkg...
  local dir=$1; shift
  {
    echo '//go:build tools'
    echo
    echo '// Package tools pins the commands testenv/build.sh builds; see versions.env.'
    echo 'package tools'
    echo
    echo 'import ('
    local p; for p in "$@"; do echo "	_ \"$p\""; done
    echo ')'
  } > "${dir}/tools.go"
}

sync_modules() {
  local d="${HERE}/go" gomod staging m
  mkdir -p "$d"/{kubernetes,etcd,kwok,helm,coredns}

  # Kubernetes: its go.mod replaces every k8s.io/<staging> module with
  # ./staging/src/...; as a dependency those replaces are ignored and the
  # requirements say v0.0.0, so point each one at the published v0.Y.Z.
  gomod="$(cd "$d/kubernetes" && GOFLAGS= "${GO}" mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" \
            | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
  # only staging modules k8s.io/kubernetes actually requires (sample-cli-plugin
  # and sample-controller are replaced but not required and not on the proxy)
  staging="$(awk '/=> \.\/staging\/src\// {print $1}' "${gomod}" | while read -r m; do
               grep -qE "^[[:space:]]+${m//./\\.} v0\.0\.0" "${gomod}" && echo "$m" || true; done)"
  {
    echo "// Generated by testenv/build.sh --sync-modules from versions.env; do not edit."
    echo "module agentmem.local/testenv/kubernetes"
    echo
    grep -m1 '^go ' "${gomod}"
    echo
    grep -m1 '^godebug ' "${gomod}" || true
    echo
    echo "require k8s.io/kubernetes ${KUBERNETES_VERSION}"
    echo
    echo "replace ("
    for m in ${staging}; do echo "	$m => $m ${K8S_STAGING_VERSION}"; done
    echo ")"
  } > "$d/kubernetes/go.mod"
  write_tools_go "$d/kubernetes" "${K8S_BINS[@]/#/k8s.io/kubernetes/cmd/}"

  printf '// Generated by testenv/build.sh --sync-modules from versions.env; do not edit.\nmodule agentmem.local/testenv/etcd\n\ngo 1.25.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "${ETCD_VERSION}" > "$d/etcd/go.mod"
  write_tools_go "$d/etcd" go.etcd.io/etcd/server/v3
  printf '// Generated by testenv/build.sh --sync-modules from versions.env; do not edit.\nmodule agentmem.local/testenv/kwok\n\ngo 1.25.0\n\nrequire sigs.k8s.io/kwok %s\n' "${KWOK_VERSION}" > "$d/kwok/go.mod"
  write_tools_go "$d/kwok" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
  printf '// Generated by testenv/build.sh --sync-modules from versions.env; do not edit.\nmodule agentmem.local/testenv/helm\n\ngo 1.25.0\n\nrequire helm.sh/helm/v3 %s\n' "${HELM_VERSION}" > "$d/helm/go.mod"
  write_tools_go "$d/helm" helm.sh/helm/v3/cmd/helm
  printf '// Generated by testenv/build.sh --sync-modules from versions.env; do not edit.\nmodule agentmem.local/testenv/coredns\n\ngo 1.25.0\n\nrequire github.com/coredns/coredns %s\n' "${COREDNS_VERSION}" > "$d/coredns/go.mod"
  write_tools_go "$d/coredns" github.com/coredns/coredns
  mkdir -p "$d/prometheus"
  printf '// Generated by testenv/build.sh --sync-modules from versions.env; do not edit.\nmodule agentmem.local/testenv/prometheus\n\ngo 1.25.0\n\nrequire github.com/prometheus/prometheus %s\n' "${PROMETHEUS_VERSION}" > "$d/prometheus/go.mod"
  write_tools_go "$d/prometheus" github.com/prometheus/prometheus/cmd/promtool \
    github.com/prometheus/prometheus/cmd/prometheus

  for m in kubernetes etcd kwok helm coredns prometheus; do
    rm -f "$d/$m/go.sum"
    log "go mod tidy in go/$m"
    (cd "$d/$m" && GOFLAGS= "${GO}" mod tidy)
  done
  log "modules synced to versions.env"
}

# ---------------------------------------------------------------- main
case "${1:-}" in
  --print-env|--paths)
    print_env
    all_present || { echo "warning: some binaries are missing; run testenv/build.sh" >&2; exit 1; }
    exit 0 ;;
  --check)
    all_present; exit $? ;;
  --sync-modules)
    sync_modules; exit 0 ;;
  ""|--build) ;;
  -h|--help)
    sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

if all_present; then
  log "all binaries present, nothing to build"
else
  # one build at a time per cache root (parallel test runners may all call us)
  mkdir -p "${BIN_ROOT}"
  exec 9>"${CACHE_ROOT}/.build.lock"
  if ! flock -n 9; then
    log "another build.sh holds ${CACHE_ROOT}/.build.lock; waiting ..."
    flock 9
  fi
  # leftovers of an interrupted build (we hold the lock, so none is in use)
  find "${BIN_ROOT}" -maxdepth 2 -name '*.tmp.*' -exec rm -rf {} + 2>/dev/null || true
  log "go: $("${GO}" version); cache root: ${CACHE_ROOT}"
  build_etcd
  build_kwok
  build_helm
  build_k8s
  build_coredns
  build_prometheus promtool
  build_prometheus prometheus
  log "done in $(( $(now) - T0 ))s"
fi
echo "bin directories:"
for d in "${K8S_DIR}" "${ETCD_DIR}" "${KWOK_DIR}" "${HELM_DIR}" "${COREDNS_DIR}" "${PROMETHEUS_DIR}"; do
  echo "  $d"
done
