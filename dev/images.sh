#!/usr/bin/env bash
# Builds the two container images from Dockerfile.operator and Dockerfile.worker with buildah, on a
# Debian base made locally (no registry image can be pulled here), and runs podman on the same
# image store.
#
#   dev/images.sh [build [operator|worker|gateway ...]]   build (default: all three); unchanged inputs: no rebuild
#   dev/images.sh build pause                    the real nodes' sandbox image (dev/stack)
#   dev/images.sh tag operator|worker            print the image reference of the current inputs
#   dev/images.sh ref operator|worker|pause      that reference if it is built (exit 1 if not)
#   dev/images.sh push NAME...                   push built images to the dev stack's registry
#   dev/images.sh run ARGS...                    podman run on that store, rlimits the host allows
#   dev/images.sh podman ARGS...                 podman on the images' store (runc, cgroupfs)
#
# What it does, once per machine (cached under $IMAGEGEN_CACHE or ~/.cache/imagegen-dev/):
# - apt-get installs buildah, podman, mmdebstrap and runc when one is missing;
# - base/<suite>-<version>/: `mmdebstrap --variant=minbase` of Debian bookworm with python3,
#   python3-venv and ca-certificates, imported as localhost/imagegen-base:<suite>-<version>; the
#   Dockerfiles take it as BASE_IMAGE (their defaults stay the production bases);
# - wheelhouse/: the pinned dependencies downloaded once by the host's pip (and its cache); the
#   build reads them through a mounted pip.conf (no-index, find-links=/wheels), so a rebuild never
#   downloads torch again and the Dockerfiles' pip commands stay as they are for production;
# - containers/: the image store (storage driver overlay).
# Each image is tagged localhost/imagegen-<name>:<key>, the key a hash of the Dockerfile, the base
# and every file the Dockerfile COPYs (after .dockerignore): a tag already present is not rebuilt.
# localhost/imagegen-<name>:dev points at the newest build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUITE=bookworm
BASE_VERSION=1   # bump when the base's package list changes
BASE_PACKAGES=python3,python3-venv,ca-certificates
CACHE="${IMAGEGEN_CACHE:-$HOME/.cache/imagegen-dev}"
BASE_TAG="localhost/imagegen-base:$SUITE-$BASE_VERSION"
WHEELS="$CACHE/wheelhouse"
STORE="$CACHE/containers"
export CONTAINERS_STORAGE_CONF="$STORE/storage.conf"
PY=python3; [[ -x .venv/bin/python ]] && PY=.venv/bin/python

log() { echo "[images] $*" >&2; }

need_tools() {
  local missing=()
  for tool in buildah podman mmdebstrap runc; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

store_conf() {
  mkdir -p "$STORE/storage"
  if [[ ! -f "$CONTAINERS_STORAGE_CONF" ]]; then
    cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$STORE/storage"
runroot = "/run/imagegen-dev-containers"
EOF
  fi
}

pod() { podman --runtime runc --cgroup-manager cgroupfs "$@"; }

# podman run with rlimits below the host's: raising one is refused here (no CAP_SYS_RESOURCE), and
# podman's defaults (or the host's own nproc) are too high for runc.
run() {
  local nproc
  nproc=$(ulimit -u); [[ "$nproc" == unlimited || "$nproc" -gt 4096 ]] && nproc=4096
  pod run --ulimit "nofile=$(ulimit -n):$(ulimit -n)" --ulimit "nproc=$nproc:$nproc" "$@"
}

base_image() {
  pod image exists "$BASE_TAG" && return
  local dir="$CACHE/base/$SUITE-$BASE_VERSION"
  mkdir -p "$dir"
  if [[ ! -f "$dir/rootfs.tar" ]]; then
    log "mmdebstrap $SUITE (minbase + $BASE_PACKAGES) -> $dir/rootfs.tar"
    mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PACKAGES" \
      "$SUITE" "$dir/rootfs.tar.part"
    mv "$dir/rootfs.tar.part" "$dir/rootfs.tar"
  fi
  log "importing $BASE_TAG"
  pod import --quiet "$dir/rootfs.tar" "$BASE_TAG" >/dev/null
}

# The project's pinned requirements of the base install and one extra, from pyproject.toml.
requirements() {
  python3 - "$1" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join([*project["dependencies"], *project["optional-dependencies"][sys.argv[1]]]))
PY
}

wheelhouse() {
  local extra="$1" reqs stamp
  mkdir -p "$WHEELS"
  # Plus what the Dockerfile pins itself with `pip install --no-deps pkg==version` (the worker
  # swaps opencv-python for opencv-python-headless of the same version).
  reqs="$(requirements "$extra"; grep -oE -- '--no-deps [A-Za-z0-9_.-]+==[A-Za-z0-9_.]+' \
    "Dockerfile.$extra" | awk '{print $2}' || true)"
  stamp="$WHEELS/.done-$extra-$(printf '%s\n' "$reqs" | sha256sum | cut -c1-16)"
  [[ -f "$stamp" ]] && return
  log "downloading the $extra wheels into $WHEELS (once; pip's cache applies)"
  # setuptools: the build backend pip needs to build the project inside the image.
  # shellcheck disable=SC2086
  "$PY" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --dest "$WHEELS" 'setuptools>=69' $reqs
  touch "$stamp"
}

# The files a Dockerfile's COPY lines bring in, honouring .dockerignore's directory patterns.
copied_files() {
  local srcs
  srcs="$(awk 'toupper($1)=="COPY" {for (i=2; i<NF; i++) if ($i !~ /^--/) print $i}' "$1")"
  # shellcheck disable=SC2086
  find $srcs -type f -not -path '*/__pycache__/*' -not -name '*.py[cod]' \
    -not -path '*.egg-info/*' | LC_ALL=C sort
}

image_key() {
  local dockerfile="Dockerfile.$1"
  {
    echo "base $BASE_TAG $(pod image inspect --format '{{.Id}}' "$BASE_TAG")"
    sha256sum "$dockerfile" .dockerignore
    copied_files "$dockerfile" | xargs -d '\n' sha256sum
  } | sha256sum | cut -c1-16
}

build_one() {
  local name="$1" extra ref started
  extra="$name"
  ref="localhost/imagegen-$name:$(image_key "$name")"
  if pod image exists "$ref"; then
    log "$ref is up to date"
  else
    wheelhouse "$extra"
    local conf
    conf="$(mktemp)"
    printf '[global]\nno-index = true\nfind-links = /wheels\n' >"$conf"
    started=$(date +%s)
    log "building $ref from Dockerfile.$name"
    # --network host: the worker's apt-get reaches Debian's mirror; --layers: unchanged steps
    # (the dependency layer) are reused when only the sources change; --force-rm: no working
    # container is left behind, even by a failed build.
    if ! buildah build --quiet --layers --force-rm --network host --isolation chroot \
        --build-arg "BASE_IMAGE=$BASE_TAG" \
        --volume "$WHEELS:/wheels:ro" --volume "$conf:/etc/pip.conf:ro" \
        --file "Dockerfile.$name" --tag "$ref" . >/dev/null; then
      rm -f "$conf"
      log "build of $ref failed"
      return 1
    fi
    rm -f "$conf"
    log "built $ref in $(($(date +%s) - started)) s"
  fi
  pod tag "$ref" "localhost/imagegen-$name:dev"
  # Older keys of this image: untagged, their layers freed unless shared (the store stays ~1 copy).
  # Only what is older than three days is pruned: the intermediate images of recent builds are
  # the layer cache (pruning them made the next worker build reinstall torch: 443 s instead of 6).
  local old
  for old in $(pod images --format '{{.Repository}}:{{.Tag}}' "localhost/imagegen-$name"); do
    [[ "$old" == "$ref" || "$old" == *:dev ]] || pod rmi --force "$old" >/dev/null 2>&1 || true
  done
  pod image prune --force --filter until=72h >/dev/null 2>&1 || true
  log "$ref: $(pod image inspect --format '{{.Size}}' "$ref" | numfmt --to=iec) ($name)"
  echo "$ref"
}

# The sandbox ("pause") image of the dev stack's real nodes: the static binary dev/build.sh
# compiles from the Kubernetes sources, FROM scratch (no registry image can be pulled here).
build_pause() {
  # shellcheck source=versions.env
  source dev/versions.env
  local ref="localhost/imagegen-pause:$K8S_VERSION" bin="$CACHE/kubelet-$K8S_VERSION/bin/pause"
  if pod image exists "$ref"; then echo "$ref"; return; fi
  [[ -x "$bin" ]] || dev/build.sh kubelet
  local ctx
  ctx="$(mktemp -d)"
  cp "$bin" "$ctx/pause"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Containerfile"
  buildah build --quiet --isolation chroot --tag "$ref" "$ctx" >/dev/null
  rm -rf "$ctx"
  log "built $ref"
  echo "$ref"
}

# The dev stack's registry (dev/stack's "registry" component), which the real nodes pull from.
REGISTRY="${IMAGEGEN_REGISTRY:-localhost:15000}"

# Push built images to the registry: only layers it lacks travel (the first push of the worker's
# ~6 GB dependency layer takes ~2 min, a source change seconds); zstd, which containerd reads.
push() {
  local name r dest
  for name in "$@"; do
    r="$(ref "$name")" || { log "$name: not built for these sources (make images)"; return 1; }
    dest="$REGISTRY/${r#localhost/}"
    pod push --quiet --tls-verify=false --compression-format zstd "$r" "docker://$dest" >/dev/null
    echo "$dest"
  done
}

# The reference of an image built from the current inputs, if it is in the store (exit 1 if not).
ref() {
  local r
  if [[ "$1" == pause ]]; then
    # shellcheck source=versions.env
    source dev/versions.env; r="localhost/imagegen-pause:$K8S_VERSION"
  else
    r="localhost/imagegen-$1:$(image_key "$1")"
  fi
  pod image exists "$r" && echo "$r"
}

main() {
  local cmd="${1:-build}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    build)
      need_tools; store_conf; base_image
      local names=("$@")
      ((${#names[@]})) || names=(operator worker gateway)
      for name in "${names[@]}"; do
        if [[ "$name" == pause ]]; then build_pause; else build_one "$name"; fi
      done
      ;;
    tag) need_tools; store_conf; echo "localhost/imagegen-$1:$(image_key "$1")" ;;
    ref) need_tools; store_conf; ref "$1" ;;
    push) need_tools; store_conf; push "$@" ;;
    podman) need_tools; store_conf; pod "$@" ;;
    run) need_tools; store_conf; run "$@" ;;
    *) echo "usage: dev/images.sh [build [operator|worker]] | tag NAME | run ARGS... | podman ARGS..." >&2; exit 2 ;;
  esac
}

main "$@"
