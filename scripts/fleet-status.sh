#!/usr/bin/env bash
# `make fleet-status FLEET=DIR [JSON=1]`: `reconciler fleet status` for a fleet, run from this tree's
# reconciler image (no virtualenv needed): every site's live revision, sync, trunks, phones,
# rollout. Exit 0: every site reachable, in sync and healthy; 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/fleet-lib.sh
. "$ROOT/scripts/fleet-lib.sh"
LOG_PREFIX="fleet-status"

scripts/ensure-docker.sh >/dev/null
tags_file="$(mktemp)"
trap 'rm -f "$tags_file"' EXIT
IMAGE_TAGS_OUT="$tags_file" scripts/build-images.sh reconciler 2>/dev/null
set -a
# shellcheck source=/dev/null
. "$tags_file"
set +a
export RECONCILER_IMAGE_TAG
fleet_resolve
args=(fleet status --fleet /fleet)
[ "${JSON:-0}" != 1 ] || args+=(--json)
rc "${args[@]}"
