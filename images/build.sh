#!/bin/sh
# `./dev images`: build the sidecar and operator images with podman on this machine,
# which reaches no container registry and gives builds no network:
#   1. a Debian bookworm base (python3, venv, CA certificates, nftables) made with
#      mmdebstrap from Debian's packages and imported into podman (cached: the tarball
#      and the image are named after a digest of the package list);
#   2. a wheelhouse: every pinned dependency (images/constraints.txt) as wheels made on
#      the host with `pip wheel` (cached: rebuilt when the constraints change);
#   3. both Dockerfile targets, `--network none --build-arg OFFLINE=1`, so pip installs
#      from the wheelhouse only; podman's layer cache makes a rebuild of an unchanged
#      tree take seconds.
# Then it prints the images' sizes. Root only (podman as root; mmdebstrap).
# Environment: TAG (default: the version in pyproject.toml), TARGETS (default "sidecar
# operator"), NO_CACHE=1 (rebuild every layer), CACHE (default .cache/images),
# PYTHON (the host interpreter whose pip makes the wheels; its minor version must be the
# base image's, 3.11 for bookworm).
set -eu
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
CACHE="${CACHE:-.cache/images}"
TAG="${TAG:-$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}"
BASE_PACKAGES="python3,python3-venv,ca-certificates,nftables"
# podman here: runc (crun refuses this machine's hybrid cgroup layout) and explicit
# ulimits (podman's defaults are above what this machine permits).
PODMAN="podman --runtime runc"
ULIMITS="--ulimit nofile=1024:1024 --ulimit nproc=1000:1000"

for tool in podman mmdebstrap; do
    command -v "$tool" >/dev/null || { echo "images: $tool is missing (apt-get install podman runc mmdebstrap)" >&2; exit 1; }
done
mkdir -p "$CACHE"
started=$(date +%s)

# 1. The base image.
key=$(printf '%s' "bookworm $BASE_PACKAGES" | sha256sum | cut -c1-12)
base="localhost/kipsec-base:bookworm-$key"
if ! podman image exists "$base"; then
    tarball="$CACHE/base-$key.tar"
    if [ ! -s "$tarball" ]; then
        echo "images: making the base with mmdebstrap ($BASE_PACKAGES)"
        # No documentation, manual pages or translations: nothing in the image reads them.
        mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PACKAGES" \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            bookworm "$tarball.tmp"
        mv "$tarball.tmp" "$tarball"
    fi
    podman import --quiet "$tarball" "$base" >/dev/null
fi
base_python=$($PODMAN run --rm --network none $ULIMITS "$base" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
host_python=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$base_python" != "$host_python" ]; then
    echo "images: the base has Python $base_python, $PYTHON is $host_python: set PYTHON to a $base_python interpreter" >&2
    exit 1
fi

# 2. The wheelhouse.
wheelhouse=images/wheelhouse
stamp="$wheelhouse/.constraints.sha256"
want=$(sha256sum images/constraints.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "images: building the wheelhouse from images/constraints.txt"
    rm -f "$wheelhouse"/*.whl "$stamp"
    "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$wheelhouse" -r images/constraints.txt
    echo "$want" > "$stamp"
fi

# 3. The images.
layers="--layers"
[ "${NO_CACHE:-0}" = 1 ] && layers="--no-cache"
for target in ${TARGETS:-sidecar operator}; do
    echo "images: building localhost/kipsec-$target:$TAG"
    $PODMAN build --quiet --network none $ULIMITS $layers \
        --build-arg PYTHON_IMAGE="$base" --build-arg OFFLINE=1 \
        --target "$target" --tag "localhost/kipsec-$target:$TAG" . >/dev/null
done
echo "images: built in $(( $(date +%s) - started )) s"
podman image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' \
    | grep -E "^localhost/kipsec-(sidecar|operator|base):" | sort
