#!/usr/bin/env bash
# apt-get install PACKAGE... on Debian as root (or with sudo); elsewhere say what is missing.
set -euo pipefail
[ "$#" -gt 0 ] || { echo "usage: $0 PACKAGE..." >&2; exit 2; }
if ! command -v apt-get >/dev/null 2>&1; then
    echo "[apt] ERROR: missing $*; install it with your package manager (this is not Debian)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "[apt] ERROR: need root to install $*" >&2; exit 1; }
    SUDO="sudo"
fi
echo "[apt] installing $*" >&2
# Update the package lists only when they are missing or the install fails on stale lists.
if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1; then
    $SUDO apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
fi
