#!/usr/bin/env bash
# Builds the real Kubernetes components the tests and the demo run: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kubelet and etcd from the k8s.io/kubernetes
# Go module, kwok from sigs.k8s.io/kwok, helm from helm.sh/helm/v4, containerd (with ctr and its
# runc shim) from github.com/containerd/containerd/v2, and the program of the pause image from
# Kubernetes' build/pause, and KServe's controller manager (with its CRDs and ConfigMap) from
# github.com/kserve/kserve, at the versions pinned in hack/versions.env.
#
# The real node (hack/devcluster/realnode.py) also needs runc, the CNI plugins and a static
# busybox from Debian: run as root, the script installs them with apt-get when missing (also
# when every binary is cached); otherwise it says what to install.
#
# Binaries land in a cache directory keyed by those versions, so a second run builds nothing.
#
#   hack/build-k8s.sh                 build what is missing, print progress
#   hack/build-k8s.sh --print-bin-dir print the cache bin directory (builds nothing)
#   hack/build-k8s.sh --print-cache-dir print the cache root, shared with other builds
#   hack/build-k8s.sh --print-kserve-dir print where KServe's CRDs and ConfigMap are kept
#   hack/build-k8s.sh --check         exit 0 when every binary is already cached
#
# Environment: MIPART_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/mipart).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "${HACK_DIR}/versions.env"

CACHE_ROOT="${MIPART_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/mipart}"
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}"
ROOT="${CACHE_ROOT}/k8s/${KEY}"
BIN_DIR="${ROOT}/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet etcd kwok helm)
# helm is keyed apart (its version is not in KEY), so a helm bump rebuilds helm alone.
HELM_STAMP="${BIN_DIR}/.helm-${HELM_VERSION}"
# containerd is keyed apart too, the same way.
CONTAINERD_BINARIES=(containerd ctr containerd-shim-runc-v2)
CONTAINERD_STAMP="${BIN_DIR}/.containerd-${CONTAINERD_VERSION}"
# The one program of the real node's pause image (every pod's first container, holding its
# namespaces), compiled from the pause.c of the same Kubernetes release;
# hack/devcluster/images.py packs it into an image archive.
PAUSE="${ROOT}/share/pause"
# kwok's stage definitions (how fake nodes and pods move through their lifecycle), copied
# from the same kwok release so that they match the binary.
KWOK_STAGES="${ROOT}/share/kwok-stages.yaml"
# KServe's controller manager, the peer of the KServe tests (hack/devcluster/kserve.py), and
# what it is installed with: its CRDs and its ConfigMap, from the same module. Keyed apart.
KSERVE_STAMP="${BIN_DIR}/.kserve-${KSERVE_VERSION}"
KSERVE_SHARE="${ROOT}/share/kserve-${KSERVE_VERSION}"

all_cached() {
  local b
  for b in "${BINARIES[@]}" "${CONTAINERD_BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
  [[ -f "${KWOK_STAGES}" && -f "${HELM_STAMP}" && -f "${CONTAINERD_STAMP}" && -x "${PAUSE}" ]] &&
    [[ -x "${BIN_DIR}/kserve-manager" && -f "${KSERVE_STAMP}" && -d "${KSERVE_SHARE}" ]]
}

all_containerd_built() {
  local b
  for b in "${CONTAINERD_BINARIES[@]}"; do
    [[ -x "${BIN_DIR}/${b}" ]] || return 1
  done
}

case "${1:-}" in
  --print-bin-dir) echo "${BIN_DIR}"; exit 0 ;;
  --print-cache-dir) echo "${CACHE_ROOT}"; exit 0 ;;
  --print-kserve-dir) echo "${KSERVE_SHARE}"; exit 0 ;;
  --check) all_cached; exit $? ;;
  "") ;;
  *) echo "usage: $0 [--print-bin-dir|--print-cache-dir|--print-kserve-dir|--check]" >&2; exit 2 ;;
esac

START=$SECONDS
log() { printf '[build-k8s %3dm%02ds] %s\n' $(((SECONDS - START) / 60)) $(((SECONDS - START) % 60)) "$*"; }

# --- the real node's Debian packages (runc, CNI plugins, busybox-static) ---------------------
# Checked on every run, before the cache: a CI machine may restore ~/.cache/mipart but start
# without the packages.
node_packages_missing() {
  local p missing=()
  command -v dpkg-query >/dev/null || return 0
  for p in ${NODE_DEBIAN_PACKAGES}; do
    [[ "$(dpkg-query -W -f='${Status}' "${p}" 2>/dev/null)" == "install ok installed" ]] ||
      missing+=("${p}")
  done
  echo "${missing[*]}"
}
read -ra missing_packages <<<"$(node_packages_missing)"
if ((${#missing_packages[@]} > 0)); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing the real node's Debian packages: ${missing_packages[*]}"
    mkdir -p "${CACHE_ROOT}"
    # Another apt run (a second build, say) holds dpkg's lock for a while: wait for it.
    apt=(apt-get -qq -o DPkg::Lock::Timeout=300)
    if ! { "${apt[@]}" update && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y \
      --no-install-recommends "${missing_packages[@]}"; } >"${CACHE_ROOT}/apt-node-packages.log" 2>&1; then
      tail -n 20 "${CACHE_ROOT}/apt-node-packages.log" >&2
      log "FAILED installing ${missing_packages[*]}; full log: ${CACHE_ROOT}/apt-node-packages.log"
      exit 1
    fi
  else
    log "the real node's tests need Debian packages (as root: apt-get install ${missing_packages[*]})"
  fi
fi

if all_cached; then
  log "all binaries cached in ${BIN_DIR}"
  exit 0
fi

# Kubernetes 1.36 and kwok 0.8 declare `go 1.26.0`; an older toolchain would try to download
# a newer one, which a machine that reaches only the module proxy cannot do.
go_minor="$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
if [[ -z "${go_minor}" || "${go_minor}" -lt 26 ]]; then
  echo "build-k8s: needs Go >= 1.26 on PATH (found: $(go env GOVERSION 2>/dev/null || echo none))" >&2
  exit 1
fi
mkdir -p "${BIN_DIR}" "${ROOT}/logs"
log "building Kubernetes ${K8S_VERSION}, etcd ${ETCD_VERSION}, kwok ${KWOK_VERSION} into ${BIN_DIR}"
log "a cold build (empty Go caches) takes about 11 minutes on 2 cores; later runs reuse it"

# Two builds at once (pytest and hack/cluster, say) would only fight over 2 cores.
exec 9>"${ROOT}/.lock"
if ! flock -n 9; then
  log "another build holds ${ROOT}/.lock; waiting for it"
  flock 9
fi

# Static binaries, no VCS stamping, stripped: the smallest and fastest build.
export CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
# The binaries are built one after another: go already compiles packages in parallel, and
# two links of ~100 MB binaries at once would only thrash a 2-core machine.

# The Kubernetes build normally stamps its version with ldflags (hack/lib/version.sh);
# without them the binaries report v0.0.0-master and kubectl warns about version skew.
k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
version_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1"
  version_ldflags+=" -X ${pkg}.gitMinor=${k8s_minor} -X ${pkg}.gitTreeState=clean"
  version_ldflags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
done

# Runs a `go build -v`/`go install -v` command line, printing a line a minute with the count
# of packages compiled so far, so that a CI log shows the cold build moving.
#   go_build NAME DIR OUTPUT_FILE GO_ARGS...
go_build() {
  local name="$1" dir="$2" produced="$3"; shift 3
  local blog="${ROOT}/logs/build-${name}.log" t0=$SECONDS next=60
  log "building ${name}"
  (cd "${dir}" && go "$@") >"${blog}" 2>&1 &
  local pid=$! rc=0
  while kill -0 "${pid}" 2>/dev/null; do
    sleep 2
    if ((SECONDS - t0 >= next)); then
      log "  ${name}: $(wc -l <"${blog}") packages compiled so far"
      next=$((next + 60))
    fi
  done
  wait "${pid}" || rc=$?
  if ((rc != 0)); then
    tail -n 40 "${blog}" >&2
    log "FAILED building ${name}; full log: ${blog}"
    exit "${rc}"
  fi
  mv -f "${produced}" "${BIN_DIR}/${name}"
  log "built ${name} in $((SECONDS - t0))s"
}

# --- the wrapper module for k8s.io/kubernetes -------------------------------------------
# k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) at v0.0.0 and replaces
# them with ./staging/src/... paths, which do not resolve outside its repository. A module
# that depends on it has to replace each one with the published tag, v0.<minor>.<patch>.
SRC="${ROOT}/src"
# A build-tagged file that imports the main packages, so `go mod tidy` records their deps.
TOOLS_GO='//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)'
if [[ ! -f "${SRC}/go.sum" || "$(cat "${SRC}/tools.go" 2>/dev/null)" != "${TOOLS_GO}" ]]; then
  log "resolving k8s.io/kubernetes@${K8S_VERSION} (module download, first run only)"
  rm -rf "${SRC}"; mkdir -p "${SRC}"
  k8s_gomod="$(cd "${SRC}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  staging_version="v0.${K8S_VERSION#v1.}"
  {
    echo "// Generated by hack/build-k8s.sh: builds the pinned Kubernetes binaries."
    echo "module mipart.local/k8s-tools"
    echo
    echo "go 1.26.0"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes ${K8S_VERSION}"
    echo "	go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"
    echo ")"
    echo
    echo "replace ("
    # Only the staging modules Kubernetes requires; it also replaces a few it never uses.
    grep -oE '^[[:space:]]+k8s\.io/[a-z0-9-]+ v0\.0\.0' "${k8s_gomod}" | awk '{print $1}' |
      while read -r m; do
        if grep -qE "^[[:space:]]+${m} => \./staging/" "${k8s_gomod}"; then
          printf '\t%s => %s %s\n' "${m}" "${m}" "${staging_version}"
        fi
      done
    echo ")"
  } >"${SRC}/go.mod"
  printf '%s\n' "${TOOLS_GO}" >"${SRC}/tools.go"
  (cd "${SRC}" && go mod tidy) >"${ROOT}/logs/go-mod-tidy.log" 2>&1 || {
    cat "${ROOT}/logs/go-mod-tidy.log" >&2
    rm -f "${SRC}/go.sum"
    exit 1
  }
  # etcd must stay at the pinned release: fail rather than silently build another one.
  got_etcd="$(cd "${SRC}" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
  if [[ "${got_etcd}" != "${ETCD_VERSION}" ]]; then
    echo "build-k8s: ${K8S_VERSION} resolves etcd ${got_etcd}, not ${ETCD_VERSION}" >&2
    rm -f "${SRC}/go.sum"
    exit 1
  fi
  log "module graph resolved"
fi

for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do
  [[ -x "${BIN_DIR}/${b}" ]] || go_build "${b}" "${SRC}" "${BIN_DIR}/.${b}.tmp" \
    build -v -ldflags "-s -w ${version_ldflags}" -o "${BIN_DIR}/.${b}.tmp" "k8s.io/kubernetes/cmd/${b}"
done
[[ -x "${BIN_DIR}/etcd" ]] || go_build etcd "${SRC}" "${BIN_DIR}/.etcd.tmp" \
  build -v -ldflags "-s -w" -o "${BIN_DIR}/.etcd.tmp" go.etcd.io/etcd/server/v3

# --- kwok: its own module, which has no replace directives, so `go install pkg@version`
# builds it with exactly the dependency versions its release pins.
if [[ ! -x "${BIN_DIR}/kwok" ]]; then
  rm -rf "${ROOT}/kwok-gobin"; mkdir -p "${ROOT}/kwok-gobin"
  export GOBIN="${ROOT}/kwok-gobin"
  go_build kwok "${ROOT}" "${ROOT}/kwok-gobin/kwok" \
    install -v -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  unset GOBIN
fi

# --- helm: like kwok, a module without replace directives. Its version string is stamped the
# way helm's own Makefile does it.
if [[ ! -x "${BIN_DIR}/helm" || ! -f "${HELM_STAMP}" ]]; then
  rm -rf "${ROOT}/helm-gobin"; mkdir -p "${ROOT}/helm-gobin"
  export GOBIN="${ROOT}/helm-gobin"
  go_build helm "${ROOT}" "${ROOT}/helm-gobin/helm" \
    install -v -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
  unset GOBIN
  rm -f "${BIN_DIR}"/.helm-*
  touch "${HELM_STAMP}"
fi

# --- containerd, ctr and the runc shim: one module without replace directives, built with the
# tags containerd's own Makefile uses (the shim without gRPC, as released).
if [[ ! -f "${CONTAINERD_STAMP}" ]] || ! all_containerd_built; then
  rm -rf "${ROOT}/containerd-gobin"; mkdir -p "${ROOT}/containerd-gobin"
  export GOBIN="${ROOT}/containerd-gobin"
  containerd_ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION}"
  for b in "${CONTAINERD_BINARIES[@]}"; do
    tags=urfave_cli_no_docs
    [[ "${b}" == containerd-shim-runc-v2 ]] && tags+=",no_grpc"
    go_build "${b}" "${ROOT}" "${ROOT}/containerd-gobin/${b}" \
      install -v -tags "${tags}" -ldflags "${containerd_ldflags}" \
      "github.com/containerd/containerd/v2/cmd/${b}@${CONTAINERD_VERSION}"
  done
  unset GOBIN
  rm -f "${BIN_DIR}"/.containerd-*
  touch "${CONTAINERD_STAMP}"
fi

# --- pause: the pause image's program, compiled as Kubernetes' build/pause/Makefile does.
if [[ ! -x "${PAUSE}" ]]; then
  k8s_dir="$(cd "${SRC}" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  pause_tag="$(sed -n 's/^TAG ?= //p' "${k8s_dir}/build/pause/Makefile")"
  log "compiling pause ${pause_tag} (build/pause/linux/pause.c of ${K8S_VERSION})"
  mkdir -p "$(dirname "${PAUSE}")"
  if ! gcc -Os -Wall -Werror -static "-DVERSION=v${pause_tag}-${K8S_VERSION}" \
    -o "${PAUSE}.tmp" "${k8s_dir}/build/pause/linux/pause.c" >"${ROOT}/logs/build-pause.log" 2>&1; then
    cat "${ROOT}/logs/build-pause.log" >&2
    log "FAILED compiling pause (needs gcc and the static C library, Debian's libc6-dev)"
    exit 1
  fi
  mv -f "${PAUSE}.tmp" "${PAUSE}"
fi

# --- KServe's controller manager. Its go.mod pins controller-runtime with a replace directive,
# which only a build inside that module honours: it is built in a writable copy of the module.
if [[ ! -x "${BIN_DIR}/kserve-manager" || ! -f "${KSERVE_STAMP}" || ! -d "${KSERVE_SHARE}" ]]; then
  log "downloading github.com/kserve/kserve@${KSERVE_VERSION} (first run only)"
  kserve_dir="$(cd "${ROOT}" && go mod download -json "github.com/kserve/kserve@${KSERVE_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  kserve_src="${ROOT}/kserve-src"
  rm -rf "${kserve_src}"; cp -r "${kserve_dir}" "${kserve_src}"; chmod -R u+w "${kserve_src}"
  go_build kserve-manager "${kserve_src}" "${kserve_src}/.kserve-manager.tmp" \
    build -v -ldflags "-s -w" -o "${kserve_src}/.kserve-manager.tmp" ./cmd/manager
  rm -rf "${KSERVE_SHARE}"; mkdir -p "${KSERVE_SHARE}"
  cp -r "${kserve_src}/config/crd" "${KSERVE_SHARE}/crd"
  cp "${kserve_src}/config/configmap/inferenceservice.yaml" "${KSERVE_SHARE}/inferenceservice-config.yaml"
  rm -rf "${kserve_src}" "${BIN_DIR}"/.kserve-*
  touch "${KSERVE_STAMP}"
fi

if [[ ! -f "${KWOK_STAGES}" ]]; then
  kwok_dir="$(cd "${ROOT}" && go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  # What `kwokctl create cluster` configures by default: nodes become Ready and keep a lease
  # alive; pods become Running, complete, and go away when deleted.
  mkdir -p "$(dirname "${KWOK_STAGES}")"
  stage_dir="${kwok_dir}/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "${stage_dir}/${f}"
  done >"${KWOK_STAGES}.tmp"
  mv -f "${KWOK_STAGES}.tmp" "${KWOK_STAGES}"
  log "wrote ${KWOK_STAGES}"
fi

log "done in $((SECONDS - START))s: ${BIN_DIR} (${BINARIES[*]} ${CONTAINERD_BINARIES[*]} kserve-manager)"
