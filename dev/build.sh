#!/usr/bin/env bash
# Builds the local stack's binaries from package registries into a cache keyed by version.
# Usage: dev/build.sh [component ...]   (default: all). A cached component is a no-op.
# Called by `dev/stack up`; safe to run by hand to pre-warm the cache.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${IMAGEGEN_CACHE:-$HOME/.cache/imagegen-dev}"
export GOFLAGS="-mod=mod -buildvcs=false"
export GOTOOLCHAIN=local
mkdir -p "$CACHE"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# done_marker DIR: a component is cached when its directory holds .complete
cached() { [[ -f "$1/.complete" ]]; }

# Version stamps of the Kubernetes binaries (`kubectl version`, the node's kubelet version).
k8s_ldflags() {
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=2025-01-01T00:00:00Z"
  done
  echo "$ld"
}

build_k8s() {
  local out="$CACHE/kubernetes-$K8S_VERSION"
  cached "$out" && return 0
  log "kubernetes $K8S_VERSION: wrapper module (staging modules pinned to published versions)"
  local src="$CACHE/src/k8s-wrapper-$K8S_VERSION"
  rm -rf "$src" && mkdir -p "$src" "$out/bin"
  local gomod
  gomod="$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local staging_ver="v0.${K8S_VERSION#v1.}"
  {
    echo "module imagegen.dev/k8s-build"
    echo
    grep -E '^go [0-9]' "$gomod"
    # a dependency's godebug settings are ignored; copy them into the main module
    sed -n '/^godebug/,/^)/p' "$gomod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | sort -u |
      while read -r mod; do echo "	$mod => $mod $staging_ver"; done
    echo ")"
  } >"$src/go.mod"
  log "kubernetes: compiling kube-apiserver, kube-controller-manager, kube-scheduler, kubectl"
  local ld; ld="$(k8s_ldflags)"
  (cd "$src" && go build -trimpath -ldflags "$ld" -o "$out/bin/" \
     k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
     k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  touch "$out/.complete"
}

# The kubelet of a real node (dev/stack's "node" component), from the same wrapper module as the
# control plane, and the sandbox ("pause") binary from the module's build/pause/linux/pause.c
# (no registry image can be pulled here; dev/localstack/node.py packages it as an image).
build_kubelet() {
  local out="$CACHE/kubelet-$K8S_VERSION"
  cached "$out" && return 0
  build_k8s
  local src="$CACHE/src/k8s-wrapper-$K8S_VERSION"
  mkdir -p "$out/bin"
  log "kubelet $K8S_VERSION and pause"
  local ld; ld="$(k8s_ldflags)"
  (cd "$src" && go build -trimpath -ldflags "$ld" -o "$out/bin/" k8s.io/kubernetes/cmd/kubelet)
  local moddir
  moddir="$(cd "$src" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  gcc -Os -static -Wall -DVERSION="\"$K8S_VERSION-imagegen\"" -o "$out/bin/pause" \
    "$moddir/build/pause/linux/pause.c"
  touch "$out/.complete"
}

# containerd and runc for the real node (Debian packages; CNI plugins come with podman).
ensure_containerd() {
  local missing=()
  for tool in containerd runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [[ -d /usr/lib/cni ]] || missing+=(containernetworking-plugins)
  ((${#missing[@]})) || return 0
  log "${missing[*]} from Debian"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # Debian's package may start a system containerd; the stack runs its own.
  (service containerd stop || true) >/dev/null 2>&1
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION"
  cached "$out" && return 0
  log "etcd $ETCD_VERSION"
  local src="$CACHE/src/etcd-wrapper-$ETCD_VERSION"
  rm -rf "$src" && mkdir -p "$src" "$out/bin"
  printf 'module imagegen.dev/etcd-build\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$src/go.mod"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3)
  touch "$out/.complete"
}

build_kwok() {
  local out="$CACHE/kwok-$KWOK_VERSION"
  cached "$out" && return 0
  log "kwok $KWOK_VERSION"
  mkdir -p "$out/bin" "$out/stages"
  GOBIN="$out/bin" GOFLAGS="-buildvcs=false" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  local moddir
  moddir="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION"
  cp -r "$moddir/kustomize/stage/." "$out/stages/"
  chmod -R u+w "$out/stages"
  touch "$out/.complete"
}

# A Go command installed from the module proxy into $CACHE/<name>-<version>/bin.
# go_install NAME VERSION PACKAGE [LABEL]
go_install() {
  local name="$1" version="$2" pkg="$3" out="$CACHE/$1-$2"
  cached "$out" && return 0
  log "${4:-$name} $version"
  mkdir -p "$out/bin"
  GOBIN="$out/bin" GOFLAGS="-buildvcs=false" go install -trimpath -ldflags "-s -w" "$pkg@$version"
  touch "$out/.complete"
}

build_helm() { go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm; }

build_minio() { go_install minio "$MINIO_VERSION" github.com/minio/minio; }

build_promtool() {
  go_install promtool "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool \
    "promtool (Prometheus $(sed -E 's/^v0\.([0-9])([0-9]{2})\./v\1.\2./' <<<"$PROMETHEUS_VERSION"))"
}

# The image registry the real nodes pull from.
build_registry() {
  go_install registry "$REGISTRY_VERSION" github.com/distribution/distribution/v3/cmd/registry \
    "registry (distribution)"
}

build_kafka() {
  local out="$CACHE/kafka-$KAFKA_VERSION"
  cached "$out" && return 0
  log "kafka $KAFKA_VERSION (Maven Central)"
  mkdir -p "$out/libs"
  local pom="$out/pom.xml"
  cat >"$pom" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.imagegen</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_$KAFKA_SCALA</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
POM
  mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$out/libs" -DincludeScope=runtime
  touch "$out/.complete"
}

ensure_redis() {
  command -v redis-server >/dev/null && return 0
  log "redis-server from Debian"
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  # Debian starts a system redis on :6379; the stack runs its own on another port.
  (service redis-server stop || true) >/dev/null 2>&1
}

all=(redis kafka etcd kwok k8s minio helm promtool containerd kubelet registry)
components=("${@:-${all[@]}}")
for c in "${components[@]}"; do
  case "$c" in
    redis) ensure_redis ;;
    kafka) build_kafka ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    k8s|kubernetes) build_k8s ;;
    minio) build_minio ;;
    helm) build_helm ;;
    promtool) build_promtool ;;
    kubelet) build_kubelet ;;
    registry) build_registry ;;
    containerd) ensure_containerd ;;
    *) echo "unknown component: $c" >&2; exit 2 ;;
  esac
done
log "done: ${components[*]}"
