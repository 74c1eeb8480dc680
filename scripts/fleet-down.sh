#!/usr/bin/env bash
# `make fleet-down FLEET=DIR`: remove the fleet's Swarm stack, wait until its containers are gone,
# remove the fleet's Swarm secrets (every version), and leave the swarm ONLY if `make fleet-up`
# initialised it (its marker in DIR/.secrets/) and no other stack is left in it. The volumes (config,
# voicemail, logs, the reconcilers' state) stay, as with `make down`, unless PURGE=1. The per-site
# env files in DIR/.secrets/ always stay. Works when nothing is deployed.
#
# Environment: FLEET (default examples/fleet), STACK (default the fleet's name), PURGE (1: remove
# the volumes too), FLEET_DOWN_TIMEOUT (seconds to wait for the containers, default 90).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/fleet-lib.sh
. "$ROOT/scripts/fleet-lib.sh"
LOG_PREFIX="fleet-down"
TIMEOUT="${FLEET_DOWN_TIMEOUT:-90}"
# The labels reconciler.deploy.swarm puts on the fleet's secrets and volumes.
FLEET_LABEL=com.asterisk-gitops.fleet

scripts/ensure-docker.sh
fleet_resolve
if [ -z "${STACK:-}" ] || [ -z "${FLEET_NAME:-}" ]; then
    if ! docker image inspect "asterisk-gitops/reconciler:${RECONCILER_IMAGE_TAG:-latest}" >/dev/null 2>&1; then
        tags_file="$(mktemp)"
        IMAGE_TAGS_OUT="$tags_file" scripts/build-images.sh reconciler
        RECONCILER_IMAGE_TAG="$(sed -n 's/^RECONCILER_IMAGE_TAG=//p' "$tags_file" | tail -n1)"
        rm -f "$tags_file"
    fi
    FLEET_NAME="${FLEET_NAME:-$(rc fleet sites --fleet /fleet --json | json_get fleet)}"
fi
STACK="${STACK:-$FLEET_NAME}"

# PURGE=1: the fleet's volumes go too (labelled by the stack, they outlive it and the swarm).
purge_volumes() {
    local volumes
    volumes="$(docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK")"
    if [ -n "$volumes" ]; then
        printf '%s\n' "$volumes" | xargs docker volume rm >/dev/null
        say "PURGE=1: removed the volumes of $STACK"
    fi
}

if [ "$(swarm_state)" != active ]; then
    say "this engine is in no swarm: nothing is deployed"
    rm -f "$SWARM_MARKER"
    [ "${PURGE:-0}" != 1 ] || purge_volumes
    exit 0
fi

if docker stack ls --format '{{.Name}}' | grep -qx "$STACK"; then
    say "removing stack $STACK"
    docker stack rm "$STACK" >&2
else
    say "no stack $STACK"
fi

waited=0
while [ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ]; do
    [ "$waited" -lt "$TIMEOUT" ] || die "containers of $STACK still there after ${TIMEOUT}s: docker ps -a --filter label=com.docker.stack.namespace=$STACK"
    sleep 1
    waited=$((waited + 1))
done
say "containers of $STACK gone (${waited}s)"

# Secrets: a removed service releases them a moment after its container is gone.
secrets="$(docker secret ls -q --filter "label=$FLEET_LABEL=$FLEET_NAME")"
if [ -n "$secrets" ]; then
    tries=0
    until printf '%s\n' "$secrets" | xargs docker secret rm >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -lt 20 ] || die "the secrets of $FLEET_NAME are still in use: docker secret ls"
        sleep 1
        secrets="$(docker secret ls -q --filter "label=$FLEET_LABEL=$FLEET_NAME")"
        [ -n "$secrets" ] || break
    done
    say "removed the Swarm secrets of $FLEET_NAME"
fi

if [ "${PURGE:-0}" = 1 ]; then
    purge_volumes
else
    say "volumes of $STACK kept (config, voicemail, logs, state); PURGE=1 removes them"
fi

if [ -f "$SWARM_MARKER" ]; then
    if [ -n "$(docker stack ls --format '{{.Name}}')" ]; then
        say "swarm kept: other stacks still run in it ($(docker stack ls --format '{{.Name}}' | tr '\n' ' '))"
    else
        say "leaving the swarm that make fleet-up initialised"
        docker swarm leave --force >/dev/null
        rm -f "$SWARM_MARKER"
    fi
else
    say "swarm kept: make fleet-up did not initialise it"
fi
say "fleet $STACK down"
