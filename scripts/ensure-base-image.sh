#!/usr/bin/env bash
# Make sure the base image (default debian:sid-slim) exists locally.
#
# Order: already present -> docker pull (bounded) -> build it with debootstrap and `docker import`.
# The last path exists for machines without a reachable registry: the Dockerfiles stay ordinary
# (`FROM debian:sid-slim`) whichever way the image arrived.
set -euo pipefail

IMAGE="${BASE_IMAGE:-debian:sid-slim}"
SUITE="${BASE_SUITE:-sid}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
PULL_TIMEOUT="${PULL_TIMEOUT:-60}"

say() { printf '[base-image] %s\n' "$*" >&2; }

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

say "$IMAGE not present; trying docker pull (timeout ${PULL_TIMEOUT}s)"
if timeout "$PULL_TIMEOUT" docker pull "$IMAGE" >/dev/null 2>&1; then
    say "pulled $IMAGE"
    exit 0
fi

say "pull failed (no registry?); building $IMAGE with debootstrap from $MIRROR"
if [ "$(id -u)" != 0 ]; then
    say "ERROR: building the base image needs root (debootstrap). Run as root or provide $IMAGE."
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "ERROR: debootstrap is missing and apt-get is not available to install it."
        exit 1
    fi
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

ROOTFS="$(mktemp -d /var/tmp/base-rootfs.XXXXXX)"
cleanup() { rm -rf --one-file-system "$ROOTFS"; }
trap cleanup EXIT

start=$(date +%s)
say "debootstrap --variant=minbase $SUITE (log: /var/tmp/debootstrap.log)"
if ! debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >/var/tmp/debootstrap.log 2>&1; then
    say "ERROR: debootstrap failed; last lines of /var/tmp/debootstrap.log:"
    tail -n 20 /var/tmp/debootstrap.log >&2
    exit 1
fi
# Slim it down the way the official -slim images do: no apt lists, no caches, no docs.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
    "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
say "importing rootfs as $IMAGE"
tar -C "$ROOTFS" -c . | docker import -c 'CMD ["bash"]' - "$IMAGE" >/dev/null
say "built $IMAGE in $(( $(date +%s) - start ))s"
