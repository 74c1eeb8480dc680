#!/usr/bin/env bash
# Make sure a Docker engine answers and `docker compose` (v2) works.
#
#   docker info works            -> nothing to do (quiet)
#   Debian + root                -> apt-get install docker.io (and Compose v2 from trixie if missing),
#                                   start dockerd in the background, wait until it answers
#   anything else                -> exit 1 with instructions
#
# Our scripts always call `docker compose` (the CLI plugin), never the `docker-compose` binary.
# Set ENSURE_DOCKER_LIB=1 to source this file for its functions without running main.
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_WAIT="${DOCKERD_WAIT:-60}"
TRIXIE_SOURCES="${TRIXIE_SOURCES:-/etc/apt/sources.list.d/asterisk-gitops-trixie.sources}"
TRIXIE_PIN="${TRIXIE_PIN:-/etc/apt/preferences.d/asterisk-gitops-trixie}"
PLUGIN_DIR="${PLUGIN_DIR:-/usr/libexec/docker/cli-plugins}"
APT_UPDATED=0

say() { printf '[docker] %s\n' "$*" >&2; }
die() { printf '[docker] ERROR: %s\n' "$*" >&2; exit 1; }

engine_answers() { docker info >/dev/null 2>&1; }
compose_works() { docker compose version >/dev/null 2>&1; }
is_root() { [ "$(id -u)" = 0 ]; }
is_debian() { [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; }

how_to_install() {
    cat >&2 <<'MSG'
[docker] No Docker engine answers and this script only installs one on Debian as root.
[docker] Install Docker Engine with the Compose v2 plugin, start it, then re-run:
[docker]   Debian/Ubuntu (root):  apt-get install docker.io docker-compose   (Compose >= 2 needed)
[docker]   other Linux:           https://docs.docker.com/engine/install/
[docker]   macOS / Windows:       Docker Desktop, https://docs.docker.com/desktop/
[docker] Check with: docker info && docker compose version
MSG
}

apt_update_once() {
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
}

apt_install() {
    apt_update_once
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_engine() {
    command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 && return 0
    apt_install docker.io
}

# Debian releases before trixie ship Compose v1 (python) or none; trixie's docker-compose is v2 and
# depends only on libc. The trixie source is pinned at 100 so nothing else ever upgrades from it.
add_trixie_source() {
    [ -f "$TRIXIE_SOURCES" ] && return 0
    say "adding Debian trixie apt source (pinned to priority 100) for Compose v2"
    cat >"$TRIXIE_SOURCES" <<'SRC'
# Added by asterisk-gitops scripts/ensure-docker.sh: only for docker-compose v2.
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat >"$TRIXIE_PIN" <<'PIN'
# Never upgrade anything from trixie unless asked for by name (asterisk-gitops ensure-docker.sh).
Package: *
Pin: release n=trixie
Pin-Priority: 100
PIN
    APT_UPDATED=0
}

# The Compose v2 binary is also a Docker CLI plugin; make the client find it whatever path the
# package used.
link_compose_plugin() {
    compose_works && return 0
    local candidate
    for candidate in /usr/libexec/docker/cli-plugins/docker-compose /usr/lib/docker/cli-plugins/docker-compose \
        "$(command -v docker-compose 2>/dev/null || true)"; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        "$candidate" version 2>/dev/null | grep -q 'v2\|version 2' || continue
        mkdir -p "$PLUGIN_DIR"
        ln -sf "$candidate" "$PLUGIN_DIR/docker-compose"
        compose_works && return 0
    done
    return 1
}

install_compose() {
    compose_works && return 0
    link_compose_plugin && return 0
    apt_update_once
    if apt-cache policy docker-compose 2>/dev/null | grep -q 'Candidate: 2\.'; then
        apt_install docker-compose
    else
        add_trixie_source
        apt_update_once
        say "apt-get install docker-compose/trixie"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose/trixie >/dev/null
    fi
    link_compose_plugin || die "docker-compose was installed but 'docker compose version' still fails"
}

launch_dockerd() {
    nohup dockerd >>"$DOCKERD_LOG" 2>&1 &
}

start_dockerd() {
    engine_answers && return 0
    say "starting dockerd (log: $DOCKERD_LOG)"
    launch_dockerd
    wait_for_engine "$DOCKERD_WAIT"
}

wait_for_engine() {
    local limit="$1" waited=0
    until engine_answers; do
        if [ "$waited" -ge "$limit" ]; then
            die "dockerd did not answer within ${limit}s; see $DOCKERD_LOG"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "engine answers after ${waited}s"
}

main() {
    if engine_answers && compose_works; then
        return 0
    fi
    if ! is_debian || ! is_root; then
        if engine_answers; then
            die "the Docker engine runs but 'docker compose' (Compose v2) is missing: install the compose plugin (https://docs.docker.com/compose/install/linux/)"
        fi
        how_to_install
        exit 1
    fi
    if ! engine_answers; then
        install_engine
    fi
    install_compose
    start_dockerd
    say "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null) with $(docker compose version --short 2>/dev/null) ready"
}

if [ "${ENSURE_DOCKER_LIB:-0}" != 1 ]; then
    main "$@"
fi
