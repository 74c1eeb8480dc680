#!/usr/bin/env bash
# `make up`: engine, images, secrets, the PBX (and the sandbox carrier when a provider points at
# it), one apply, the watch loop, then what to type into a phone, the status and what to dial.
# Running it again changes nothing that is already right: no secret is regenerated, no container
# is recreated, Asterisk is neither restarted nor reloaded.
#
# Environment (the Makefile passes them): DESIRED (desired dir, default desired), PBX_CONTAINER,
# RECONCILER_NAME, CARRIER_CONTAINER, CARRIER_PORT (the carrier's SIP port, default 5070),
# COMPOSE_PROJECT_NAME, ENV_FILE (secrets, default .env), RTP_START/RTP_END, SHOW_PASSWORDS
# (1: print the SIP passwords with the phone settings).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DESIRED="${DESIRED:-desired}"
export DESIRED_DIR
DESIRED_DIR="$(cd "$DESIRED" && pwd)"
export PBX_CONTAINER="${PBX_CONTAINER:-gitops-pbx}"
export RECONCILER_NAME="${RECONCILER_NAME:-gitops-reconciler}"
export CARRIER_CONTAINER="${CARRIER_CONTAINER:-gitops-carrier}"
CARRIER_PORT="${CARRIER_PORT:-5070}"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-90}"
REGISTER_TIMEOUT="${REGISTER_TIMEOUT:-20}"
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

# The trunk registers within about a second of an apply that restarted the PBX; wait (bounded) so
# that the status below shows it, instead of a transient "Unregistered".
wait_registered() {
    local tries=0
    until docker exec "$PBX_CONTAINER" asterisk -rx "pjsip show registrations" 2>/dev/null | grep -q " Registered"; do
        if [ "$tries" -ge $((REGISTER_TIMEOUT * 4)) ]; then
            say "the trunk is not registered after ${REGISTER_TIMEOUT}s; the status below says why"
            return 0
        fi
        sleep 0.25
        tries=$((tries + 1))
    done
}

say "1/8 Docker engine and Compose"
scripts/ensure-docker.sh

say "2/8 images"
# Pin the tags built from this tree: another checkout's build may retag :latest meanwhile.
tags_file="$(mktemp)"
trap 'rm -f "$tags_file"' EXIT
IMAGE_TAGS_OUT="$tags_file" scripts/build-images.sh
set -a
# shellcheck source=/dev/null
. "$tags_file"
set +a

say "3/8 secrets for $DESIRED_DIR"
ls "$DESIRED_DIR"/*.yaml >/dev/null 2>&1 || die "no *.yaml in $DESIRED_DIR"
python3 scripts/gen-secrets.py "$DESIRED_DIR" "$ENV_FILE" RECONCILER_WEBHOOK_SECRET
# Which provider (if any) the sandbox carrier plays is decided by the product, from the desired
# state; an invalid desired state stops here, before anything starts.
carrier_json="$(reconciler carrier show /desired --port "$CARRIER_PORT" --container "$CARRIER_CONTAINER" --json)" \
    || die "the desired state in $DESIRED_DIR is invalid (see above); nothing was started"
carrier_wanted="$(printf '%s' "$carrier_json" | python3 -c 'import json, sys; print("yes" if json.load(sys.stdin)["enabled"] else "no")')"

if [ "$carrier_wanted" = yes ]; then
    say "4/8 starting the PBX ($PBX_CONTAINER) and the sandbox carrier ($CARRIER_CONTAINER, 127.0.0.1:$CARRIER_PORT)"
    docker compose --profile carrier up -d asterisk carrier
    say "5/8 configuring the sandbox carrier for $DESIRED_DIR"
    reconciler carrier apply /desired --port "$CARRIER_PORT" --container "$CARRIER_CONTAINER" \
        || die "the sandbox carrier could not be configured (see above)"
else
    say "4/8 starting the PBX ($PBX_CONTAINER)"
    docker compose up -d asterisk
    say "5/8 no provider points at the sandbox carrier (127.0.0.1:$CARRIER_PORT/udp): not started"
    if docker container inspect "$CARRIER_CONTAINER" >/dev/null 2>&1; then
        say "    removing the carrier a previous \`make up\` started (its calls log stays in its volume)"
        docker compose --profile carrier rm --stop --force carrier >/dev/null
    fi
fi
wait_booted

say "6/8 applying $DESIRED_DIR"
# On a fresh PBX the first apply adds the transports, and the plan restarts Asterisk for that:
# PJSIP chooses its resolver's transport types only at start.
reconciler apply /desired --container "$PBX_CONTAINER" || die "apply failed (see above); the PBX keeps its previous config"

say "7/8 watch loop ($RECONCILER_NAME)"
docker compose --profile watch up -d reconciler
[ "$carrier_wanted" = no ] || wait_registered

say "8/8 phones, status and what to dial"
if [ "$SHOW_PASSWORDS" = 1 ]; then
    reconciler softphones --dir /desired --show-passwords
else
    reconciler softphones --dir /desired
fi
reconciler status --container "$PBX_CONTAINER" --dir /desired --state-dir /state || true
if [ "$carrier_wanted" = yes ]; then
    echo
    reconciler carrier show /desired --port "$CARRIER_PORT" --container "$CARRIER_CONTAINER"
    echo "  read it with: make carrier-log"
fi
echo
say "PBX up. Dashboard: http://${RECONCILER_HTTP:-127.0.0.1:8088}/   Console: make cli   Stop (keeps config, voicemail, logs): make down"
