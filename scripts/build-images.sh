#!/usr/bin/env bash
# Build the project's images, tagged with a hash of their inputs, and skip what is already built.
#
#   asterisk-gitops/asterisk:<sha12>   (+ :latest)  from asterisk/
#   asterisk-gitops/reconciler:<sha12> (+ :latest)  from Dockerfile + pyproject.toml + reconciler/ + templates/
#                                                  (a wheel built in the image, then installed; no README)
#   asterisk-gitops/sidecar:<sha12>    (+ :latest)  FROM asterisk:<its sha12> + Dockerfile.sidecar + the package
#
# The hash covers every input file and the base image id, so an unchanged tree costs one
# `docker image inspect` per image: that is what keeps CI fast on a machine that built before.
# Usage: scripts/build-images.sh [asterisk|reconciler|sidecar]...   (default: all three, Asterisk first)
# IMAGE_TAGS_OUT=FILE appends `ASTERISK_IMAGE_TAG=<sha12>` / `RECONCILER_IMAGE_TAG=<sha12>` lines to
# FILE, so `make up` runs exactly the images of this tree even if another tree retags :latest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-debian:sid-slim}"
LOG_DIR="${BUILD_LOG_DIR:-${TMPDIR:-/tmp}/asterisk-gitops-build}"
export DOCKER_BUILDKIT=0  # buildx is not installed everywhere; the classic builder is enough here

say() { printf '[images] %s\n' "$*" >&2; }

# Hash of the named files/dirs (relative to ROOT) plus the base image id.
inputs_hash() {
    local base_id
    base_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
    (
        cd "$ROOT"
        local p existing=()
        for p in "$@"; do [ -e "$p" ] && existing+=("$p"); done
        find "${existing[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' ! -name '*~' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
        echo "base $base_id"
        # build_sidecar: the Asterisk image it is built FROM (a dynamically scoped local).
        [ -z "${HASH_EXTRA:-}" ] || echo "$HASH_EXTRA"
    ) | sha256sum | cut -c1-12
}

# build NAME CONTEXT DOCKERFILE INPUT...
build() {
    local name="$1" repo="asterisk-gitops/$1" context="$2" dockerfile="$3"
    shift 3
    local tag started log
    tag="$(inputs_hash "$@")"
    if [ -n "${IMAGE_TAGS_OUT:-}" ]; then
        printf '%s_IMAGE_TAG=%s\n' "$(printf %s "$name" | tr '[:lower:]' '[:upper:]')" "$tag" >>"$IMAGE_TAGS_OUT"
    fi
    if docker image inspect "$repo:$tag" >/dev/null 2>&1; then
        docker tag "$repo:$tag" "$repo:latest"
        say "$repo:$tag is up to date (tagged :latest)"
        return 0
    fi
    mkdir -p "$LOG_DIR"
    log="$LOG_DIR/$name.log"
    say "building $repo:$tag (log: $log)"
    started=$(date +%s)
    if ! docker build --build-arg "BASE=$BASE_IMAGE" ${EXTRA_BUILD_ARGS[@]+"${EXTRA_BUILD_ARGS[@]}"} -f "$dockerfile" -t "$repo:$tag" -t "$repo:latest" \
        "$context" 2>&1 | tee "$log" | grep --line-buffered -E '^Step [0-9]+/[0-9]+ : ' | sed -u 's/^/[images]   /' >&2; then
        :
    fi
    if ! docker image inspect "$repo:$tag" >/dev/null 2>&1; then
        say "ERROR: building $repo failed; last lines of $log:"
        tail -n 25 "$log" >&2
        exit 1
    fi
    say "built $repo:$tag in $(($(date +%s) - started))s"
    prune_old_tags "$repo"
}

# Every code change makes a new hash tag; keep the newest KEEP_TAGS of them (switching back to a
# recent tree stays instant) and untag the rest. An image a container still uses stays.
prune_old_tags() {
    local repo="$1" old
    docker image ls "$repo" --format '{{.Tag}}' | grep -v '^latest$' | tail -n +"$((${KEEP_TAGS:-3} + 1))" \
        | while read -r old; do docker image rm "$repo:$old" >/dev/null 2>&1 || true; done
}

build_asterisk() {
    build asterisk "$ROOT/asterisk" "$ROOT/asterisk/Dockerfile" asterisk
}

build_reconciler() {
    build reconciler "$ROOT" "$ROOT/Dockerfile" Dockerfile .dockerignore pyproject.toml reconciler templates
}

# FROM this tree's Asterisk image (built first when missing): its tag is part of the sidecar's hash.
build_sidecar() {
    local asterisk_tag
    asterisk_tag="$(inputs_hash asterisk)"
    docker image inspect "asterisk-gitops/asterisk:$asterisk_tag" >/dev/null 2>&1 || build_asterisk
    local HASH_EXTRA="asterisk $asterisk_tag"
    local EXTRA_BUILD_ARGS=(--build-arg "ASTERISK_IMAGE=asterisk-gitops/asterisk:$asterisk_tag")
    build sidecar "$ROOT" "$ROOT/Dockerfile.sidecar" Dockerfile.sidecar .dockerignore pyproject.toml reconciler templates
}

main() {
    "$ROOT/scripts/ensure-docker.sh"
    "$ROOT/scripts/ensure-base-image.sh"
    local targets=("$@")
    [ "${#targets[@]}" -gt 0 ] || targets=(asterisk reconciler sidecar)
    local t
    for t in "${targets[@]}"; do
        case "$t" in
            asterisk) build_asterisk ;;
            reconciler) build_reconciler ;;
            sidecar) build_sidecar ;;
            *) say "unknown image '$t' (asterisk|reconciler|sidecar)"; exit 2 ;;
        esac
    done
}

main "$@"
