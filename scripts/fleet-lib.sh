# Functions shared by scripts/fleet-up.sh and scripts/fleet-down.sh (sourced, not run).
# shellcheck shell=bash

say() { printf '[%s] %s\n' "${LOG_PREFIX:-fleet}" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${LOG_PREFIX:-fleet}" "$*" >&2; exit 1; }

# FLEET_DIR: the fleet's absolute path; SWARM_MARKER: the file that says fleet-up initialised the
# swarm (so fleet-down leaves it, and only then).
fleet_resolve() {
    FLEET="${FLEET:-examples/fleet}"
    [ -f "$FLEET/fleet.yaml" ] || die "no fleet.yaml in $FLEET (FLEET=DIR names a fleet directory)"
    FLEET_DIR="$(cd "$FLEET" && pwd)"
    SWARM_MARKER="$FLEET_DIR/.secrets/swarm-initialised-by-fleet-up"
    export FLEET FLEET_DIR SWARM_MARKER
}

# One-off reconciler runs from the reconciler image: the fleet read-only at /fleet, host network
# (the sites' status on 127.0.0.1), the Docker socket (Swarm secrets, the carriers' containers).
rc_with() {
    local work="$1"
    shift
    local extra=()
    [ -z "$work" ] || extra=(-v "$work:/work")
    docker run --rm -i --network host \
        -v "$FLEET_DIR:/fleet:ro" "${extra[@]}" \
        -v /var/run/docker.sock:/var/run/docker.sock \
        -w /tmp \
        "asterisk-gitops/reconciler:${RECONCILER_IMAGE_TAG:-latest}" reconciler "$@"
}
rc() { rc_with "" "$@"; }

json_get() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

swarm_state() { docker info --format '{{.Swarm.LocalNodeState}}'; }

# The running container of a stack's service on this node (its single task).
task_container() {
    docker ps -q --filter "label=com.docker.swarm.service.name=${1}_$2" --filter status=running | head -n1
}

# Wait (bounded, one line per change) until every service of stack $1 runs all its replicas.
wait_services() {
    local stack="$1" timeout="$2" started now line last=""
    started=$(date +%s)
    while true; do
        line="$(docker service ls --filter "label=com.docker.stack.namespace=$stack" --format '{{.Name}} {{.Replicas}}' | sort)"
        if [ "$line" != "$last" ]; then
            printf '%s\n' "$line" | sed "s/^/[${LOG_PREFIX:-fleet}]     $(($(date +%s) - started))s /" >&2
            last="$line"
        fi
        if [ -n "$line" ] && ! printf '%s\n' "$line" | awk '{split($2, r, "/"); if (r[1] != r[2] || r[2] == 0) bad = 1} END {exit !bad}'; then
            return 0
        fi
        now=$(date +%s)
        [ $((now - started)) -lt "$timeout" ] || die "services of $stack not all running after ${timeout}s: docker service ps $stack"
        sleep 2
    done
}
