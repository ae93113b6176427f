#!/usr/bin/env bash
# Make the local base image for deploy/Dockerfile, for machines that reach
# Debian's package mirror but no image registry:
#   deploy/podman-base.sh
#   podman build --build-arg BASE_IMAGE=localhost/tasks-core-base:bookworm \
#       -f deploy/Dockerfile -t tasks-core .
# Debian bookworm (python3, python3-venv, ca-certificates) made with
# debootstrap, which needs root. Cached twice, so it is made only once per
# machine: the image itself (nothing to do when it exists) and a tarball
# under $TASKS_CORE_CACHE (default /var/cache/tasks-core), which podman
# imports again after its storage was reset.
set -euo pipefail

IMAGE="${BASE_IMAGE:-localhost/tasks-core-base:bookworm}"
CACHE="${TASKS_CORE_CACHE:-/var/cache/tasks-core}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TARBALL="$CACHE/base-bookworm.tar"

if podman image exists "$IMAGE"; then
    echo "base: $IMAGE exists"
    exit 0
fi

if [[ ! -s "$TARBALL" ]]; then
    [[ $(id -u) -eq 0 ]] || { echo "base: debootstrap needs root" >&2; exit 1; }
    for tool in debootstrap tar; do
        command -v "$tool" >/dev/null || { echo "base: $tool is needed" >&2; exit 1; }
    done
    root="$(mktemp -d /tmp/tasks-core-base.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    echo "base: debootstrap bookworm from $MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; rm -f "$root.log"; exit 1; }
    rm -f "$root.log"
    # Downloaded packages and indexes: the image has no use for them (~45 MB).
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    mkdir -p "$CACHE"
    # Written aside and renamed, so an interrupted run leaves no half tarball.
    tar -C "$root" -cf "$TARBALL.part" . && mv "$TARBALL.part" "$TARBALL"
fi

# A tarball has no image config: give it the PATH and locale a Debian image has.
podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    "$TARBALL" "$IMAGE" >/dev/null
echo "base: imported $IMAGE from $TARBALL"
