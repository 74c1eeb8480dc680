#!/usr/bin/env bash
# `make fleet-up FLEET=DIR`: deploy a fleet (docs/fleet.md) as a Docker Swarm stack on this machine.
#
#   engine -> images (asterisk, reconciler, sidecar) -> `reconciler validate --fleet` -> per-site
#   secrets (DIR/.secrets/<site>.env, 0600, never overwritten) -> swarm (a single-node swarm on
#   127.0.0.1 when this engine is in none; remembered so that fleet-down leaves it again) -> the
#   versioned Swarm secrets that are missing -> `docker stack deploy` -> wait until every service
#   runs and every site is live on the desired revision -> each site's sandbox carrier -> wait until
#   every trunk is registered -> per site: SIP address, phone settings; the fleet's status.
#
# Running it again changes nothing that is right: no secret value or version is new, the stack
# file is the same, so `docker stack deploy` updates no service.
#
# Environment: FLEET (fleet dir, default examples/fleet), STACK (stack name, default the fleet's
# name), FLEET_TIMEOUT (seconds to wait for the sites, default 240), SHOW_PASSWORDS (1: print the
# SIP passwords with the phone settings), FLEET_NODE (Swarm node hostname for sites without
# `node:`, default this node).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/fleet-lib.sh
. "$ROOT/scripts/fleet-lib.sh"
FLEET_TIMEOUT="${FLEET_TIMEOUT:-240}"
SHOW_PASSWORDS="${SHOW_PASSWORDS:-1}"
STARTED=$(date +%s)
LOG_PREFIX="fleet-up"

say "1/9 Docker engine"
scripts/ensure-docker.sh

say "2/9 images"
tags_file="$(mktemp)"
work_dir="$(mktemp -d)"
trap 'rm -rf "$tags_file" "$work_dir"' EXIT
IMAGE_TAGS_OUT="$tags_file" scripts/build-images.sh asterisk reconciler sidecar
set -a
# shellcheck source=/dev/null
. "$tags_file"
set +a
export RECONCILER_IMAGE_TAG
fleet_resolve

say "3/9 validating $FLEET_DIR"
rc validate --fleet /fleet || die "the fleet in $FLEET_DIR is invalid (see above); nothing was deployed"
fleet_name="$(rc fleet sites --fleet /fleet --json | json_get fleet)"
STACK="${STACK:-$fleet_name}"

say "4/9 secrets of every site ($FLEET_DIR/.secrets/<site>.env)"
rc fleet secrets --fleet /fleet --json | python3 scripts/gen-secrets.py --fleet "$FLEET_DIR" -

say "5/9 swarm"
state="$(swarm_state)"
if [ "$state" = inactive ]; then
    say "    this engine is in no swarm: initialising a single-node swarm on 127.0.0.1"
    docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377 >/dev/null
    mkdir -p "$FLEET_DIR/.secrets" && chmod 0700 "$FLEET_DIR/.secrets"
    printf 'swarm initialised by make fleet-up at %s; make fleet-down leaves it\n' "$(date -Iseconds)" \
        > "$SWARM_MARKER"
elif [ "$state" = active ]; then
    say "    swarm is active (node $(docker node inspect self --format '{{.Description.Hostname}}'))"
else
    die "this engine's swarm state is '$state'; fix it first (docker info)"
fi
node="${FLEET_NODE:-$(docker node inspect self --format '{{.Description.Hostname}}')}"

say "6/9 Swarm secrets (versioned by value: a new value is a new secret)"
rc fleet secrets --fleet /fleet --create --json | python3 -c '
import json, sys
made = json.load(sys.stdin)["created"]
print("[fleet-up]     " + (f"created {len(made)}: " + ", ".join(made) if made else "all present, none created"), file=sys.stderr)'

say "7/9 stack $STACK"
cp "$tags_file" "$work_dir/images.env"
rc_with "$work_dir" fleet render-swarm --fleet /fleet --out /work/stack.yml --node "$node" \
    --images-from /work/images.env --host-dir "$FLEET_DIR"
# The same stack file as the last deploy, with all its services there: deploying it again would
# replace no task but still record an update of every service, so it is not redeployed.
deployed="$FLEET_DIR/.secrets/stack-$STACK.yml"
wanted_services="$(grep -cE '^  [a-z][a-z0-9-]*-(asterisk|reconciler|carrier):$' "$work_dir/stack.yml" || true)"
running_services="$(docker service ls -q --filter "label=com.docker.stack.namespace=$STACK" | wc -l)"
if cmp -s "$work_dir/stack.yml" "$deployed" && [ "$wanted_services" = "$running_services" ]; then
    say "    stack $STACK is deployed as rendered: nothing to update"
else
    docker stack deploy --prune --resolve-image never -c "$work_dir/stack.yml" "$STACK" 2>&1 \
        | grep -v -e 'detach=false' -e 'will become the default' | sed 's/^/[fleet-up]     /' >&2
    cp "$work_dir/stack.yml" "$deployed"
fi

say "8/9 waiting for every service (1/1) and every site live on the desired revision (at most ${FLEET_TIMEOUT}s)"
wait_services "$STACK" "$FLEET_TIMEOUT"
left=$((FLEET_TIMEOUT - ($(date +%s) - STARTED)))
[ "$left" -gt 30 ] || left=30
rc fleet wait --fleet /fleet --timeout "$left" || die "the sites did not come up (see above)"

say "9/9 sandbox carriers"
while read -r site _sip _http carrier_port <&3; do
    [ "$carrier_port" != - ] || continue
    cid="$(task_container "$STACK" "$site-carrier")"
    [ -n "$cid" ] || die "no running container of service ${STACK}_$site-carrier"
    rc carrier apply --fleet /fleet --site "$site" --container "$cid" \
        || die "the sandbox carrier of $site could not be configured (see above)"
    # The site's sidecar may have applied (and its trunk tried to register) before its carrier
    # had an account: a REGISTER refused then is not retried soon, so send one now.
    pbx="$(task_container "$STACK" "$site-asterisk")"
    [ -z "$pbx" ] || docker exec "$pbx" asterisk -rx "pjsip send register *all" >/dev/null 2>&1 || true
done 3< <(rc fleet sites --fleet /fleet)
rc fleet wait --fleet /fleet --registered --timeout 60 \
    || say "a trunk is not registered yet; the status below says why"

echo
while read -r site sip http carrier_port <&3; do
    echo "=== site $site: SIP 127.0.0.1:$sip (UDP/TCP), reconciler http://$http/ ==="
    if [ "$SHOW_PASSWORDS" = 1 ]; then
        rc softphones --fleet /fleet --site "$site" --show-passwords || true
    else
        rc softphones --fleet /fleet --site "$site" || true
    fi
    if [ "$carrier_port" != - ]; then
        echo "  sandbox carrier: 127.0.0.1:$carrier_port/udp (service ${STACK}_$site-carrier)"
    fi
    echo
done 3< <(rc fleet sites --fleet /fleet)
rc fleet status --fleet /fleet || true
say "fleet $STACK up in $(($(date +%s) - STARTED))s. Status: make fleet-status FLEET=$FLEET   Stop: make fleet-down FLEET=$FLEET"
