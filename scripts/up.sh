#!/usr/bin/env bash
# `make up`: engine, images, secrets, PBX, one apply, then the watch loop and what to type into a phone.
#
# Environment (the Makefile passes them): DESIRED (desired dir, default desired), PBX_CONTAINER,
# RECONCILER_NAME, COMPOSE_PROJECT_NAME, ENV_FILE (secrets, default .env), RTP_START/RTP_END,
# SHOW_PASSWORDS (1: print the SIP passwords with the phone settings).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DESIRED="${DESIRED:-desired}"
export DESIRED_DIR
DESIRED_DIR="$(cd "$DESIRED" && pwd)"
export PBX_CONTAINER="${PBX_CONTAINER:-gitops-pbx}"
export RECONCILER_NAME="${RECONCILER_NAME:-gitops-reconciler}"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-90}"
SHOW_PASSWORDS="${SHOW_PASSWORDS:-1}"
export ENV_FILE="${ENV_FILE:-.env}"

say() { printf '[up] %s\n' "$*" >&2; }
die() { printf '[up] ERROR: %s\n' "$*" >&2; exit 1; }
# One-off reconciler runs: same image, env file, socket and desired mount as the watch service.
reconciler() { docker compose run --rm --no-deps -T reconciler reconciler "$@"; }

wait_booted() {
    local waited=0
    until docker exec "$PBX_CONTAINER" asterisk -rx "core waitfullybooted" 2>/dev/null | grep -q "fully booted"; do
        [ "$waited" -lt "$BOOT_TIMEOUT" ] || die "Asterisk did not boot within ${BOOT_TIMEOUT}s: docker logs $PBX_CONTAINER"
        sleep 1
        waited=$((waited + 1))
    done
    say "Asterisk is fully booted"
}

say "1/7 Docker engine and Compose"
scripts/ensure-docker.sh

say "2/7 images"
scripts/build-images.sh

say "3/7 secrets for $DESIRED_DIR"
ls "$DESIRED_DIR"/*.yaml >/dev/null 2>&1 || die "no *.yaml in $DESIRED_DIR"
python3 scripts/gen-secrets.py "$DESIRED_DIR" "$ENV_FILE" RECONCILER_WEBHOOK_SECRET

say "4/7 starting the PBX ($PBX_CONTAINER)"
docker compose up -d asterisk
wait_booted

say "5/7 applying $DESIRED_DIR"
# On a fresh PBX the first apply adds the transports, and the plan restarts Asterisk for that:
# PJSIP chooses its resolver's transport types only at start.
reconciler apply /desired --container "$PBX_CONTAINER" || die "apply failed (see above); the PBX keeps its previous config"

say "6/7 watch loop ($RECONCILER_NAME)"
docker compose --profile watch up -d reconciler

say "7/7 phones and status"
if [ "$SHOW_PASSWORDS" = 1 ]; then
    printf '\n!! The settings below include SIP passwords: do not paste them into tickets or chats.\n' >&2
    reconciler softphones --dir /desired --show-passwords
else
    reconciler softphones --dir /desired
fi
reconciler status --container "$PBX_CONTAINER" --dir /desired --state-dir /state || true
say "PBX up. Console: make cli   Stop (keeps config and voicemail): make down"
