#!/bin/sh
# Called by entrypoint.sh (as root, before Asterisk starts) with the role as $1: writes
# /etc/asterisk/manager.conf, the AMI control channel the reconciler keeps one connection to.
#
#   AMI_BIND    address AMI listens on (default 127.0.0.1). With host networking every process of
#               the host reaches it: the secret and the loopback-only permit below are the guard.
#   AMI_PORT    TCP port (default 5038)
#   AMI_SECRET  the secret, when given (else /run/secrets/ami_secret, else generated once and kept
#               in the managed volume at /etc/asterisk/managed/.gitops/ami.secret, root-only 0600)
#   AMI_ENABLED set to "no" to keep AMI off (the carrier role keeps it off unless set to "yes")
#
# The user is `gitops`; its classes are only what the reconciler's actions need:
# system (CoreStatus/CoreSettings, `Command` needs command), reporting (PJSIPShow*), config/read.
set -eu

ROLE="${1:-pbx}"
CONF=/etc/asterisk/manager.conf
SECRET_DIR=/etc/asterisk/managed/.gitops
SECRET_FILE="$SECRET_DIR/ami.secret"
AMI_BIND="${AMI_BIND:-127.0.0.1}"
AMI_PORT="${AMI_PORT:-5038}"
DEFAULT_ENABLED=yes
[ "$ROLE" = carrier ] && DEFAULT_ENABLED=no
AMI_ENABLED="${AMI_ENABLED:-$DEFAULT_ENABLED}"

case "$AMI_PORT" in
    ''|*[!0-9]*) echo "ami-setup: AMI_PORT must be a number (got '$AMI_PORT')" >&2; exit 64 ;;
esac
case "$AMI_BIND" in
    ''|*[!0-9a-fA-F.:]*) echo "ami-setup: AMI_BIND must be an IP address (got '$AMI_BIND')" >&2; exit 64 ;;
esac

write_off() {
    printf '; Written by ami-setup.sh (role: %s): AMI is off.\n[general]\nenabled = no\n' "$ROLE" > "$CONF"
    chown root:asterisk "$CONF"
    chmod 0640 "$CONF"
}

if [ "$AMI_ENABLED" != yes ]; then
    write_off
    exit 0
fi

# The secret: given (environment, then a Docker/Swarm secret), or generated once and kept.
if [ -n "${AMI_SECRET:-}" ]; then
    SECRET="$AMI_SECRET"
elif [ -s /run/secrets/ami_secret ]; then
    SECRET=$(tr -d '\r\n' < /run/secrets/ami_secret)
else
    mkdir -p "$SECRET_DIR"
    if [ ! -s "$SECRET_FILE" ]; then
        umask 077
        # 32 random bytes as 64 hex characters: no character manager.conf could misread.
        od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$SECRET_FILE.tmp"
        mv "$SECRET_FILE.tmp" "$SECRET_FILE"
    fi
    chown root:root "$SECRET_FILE"
    chmod 0600 "$SECRET_FILE"
    SECRET=$(tr -d '\r\n' < "$SECRET_FILE")
fi
case "$SECRET" in
    *[!A-Za-z0-9._~+/=-]*) echo "ami-setup: the AMI secret may only contain letters, digits and ._~+/=-" >&2; exit 64 ;;
esac
if [ "${#SECRET}" -lt 16 ]; then
    echo "ami-setup: the AMI secret is too short (at least 16 characters)" >&2
    exit 64
fi

umask 027
cat > "$CONF.tmp" <<CONF
; Written by ami-setup.sh (role: $ROLE) at every container start; do not edit.
[general]
enabled = yes
bindaddr = $AMI_BIND
port = $AMI_PORT
webenabled = no
displayconnects = no
; a connection must log in within 5 s (the reconciler reconnects when Asterisk closes a session)
authtimeout = 5
authlimit = 10

[gitops]
secret = $SECRET
deny = 0.0.0.0/0.0.0.0
permit = 127.0.0.1/255.255.255.255
read = system,reporting,config,command
write = system,reporting,config,command
CONF
chown root:asterisk "$CONF.tmp"
chmod 0640 "$CONF.tmp"
mv "$CONF.tmp" "$CONF"
