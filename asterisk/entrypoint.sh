#!/bin/sh
# Write the RTP port range from the environment, then become Asterisk (PID 1, foreground).
# `core restart` re-executes Asterisk in place, so the container survives it.
#
#   entrypoint.sh            the PBX (default)
#   entrypoint.sh carrier    the sandbox carrier: the same Asterisk plus the two dialplan functions
#                            its rendered config uses (FILE() for the calls log, TIMEOUT() to bound
#                            a call); `reconciler carrier apply` writes its pjsip/extensions.conf
#   entrypoint.sh CMD...     runs CMD instead of Asterisk
set -eu

ROLE=pbx
if [ "${1:-}" = carrier ]; then
    ROLE=carrier
    shift
fi

RTP_START="${RTP_START:-10000}"
RTP_END="${RTP_END:-10999}"
case "$RTP_START$RTP_END" in
    *[!0-9]*) echo "entrypoint: RTP_START/RTP_END must be numbers (got '$RTP_START'-'$RTP_END')" >&2; exit 64 ;;
esac
if [ "$RTP_START" -ge "$RTP_END" ]; then
    echo "entrypoint: RTP_START ($RTP_START) must be below RTP_END ($RTP_END)" >&2
    exit 64
fi

cat > /etc/asterisk/rtp.conf <<CONF
; Written by the container entrypoint from RTP_START/RTP_END; do not edit.
[general]
rtpstart = $RTP_START
rtpend = $RTP_END
CONF
chown root:asterisk /etc/asterisk/rtp.conf
chmod 0640 /etc/asterisk/rtp.conf

# A named volume mounted over the managed dir starts root-owned: Asterisk must be able to read it.
chown asterisk:asterisk /etc/asterisk/managed /var/log/asterisk /var/spool/asterisk
mkdir -p /var/run/asterisk && chown asterisk:asterisk /var/run/asterisk

# /etc/asterisk/{pjsip,extensions,voicemail,queues,musiconhold}.conf are symlinks into the managed
# dir. Until the reconciler writes the real files, empty ones let Asterisk boot with no endpoints,
# no dialplan and no queues (pbx_config and app_queue would decline to load without their file
# and never come back on reload).
placeholder() {
    [ -e "/etc/asterisk/managed/$1" ] && return 0
    printf '; No configuration applied yet: the reconciler replaces this file.\n%s' "$2" \
        > "/etc/asterisk/managed/$1"
    chown asterisk:asterisk "/etc/asterisk/managed/$1"
}
placeholder pjsip.conf ""
placeholder extensions.conf "[general]
static = yes
writeprotect = yes
"
placeholder voicemail.conf "[general]
"
placeholder queues.conf "[general]
"
# Music on hold works before the first apply: the default class plays the Debian opsound files.
placeholder musiconhold.conf "[default]
mode = files
directory = moh
"

# The call records (cdr_sqlite3_custom.conf): the table created with its types and index before
# Asterisk opens master.db, as the asterisk user (it writes the file and its -journal).
CDR_DB=/var/log/asterisk/master.db
if [ -e "$CDR_DB" ]; then chown asterisk:asterisk "$CDR_DB"; fi
setpriv --reuid=asterisk --regid=asterisk --init-groups \
    sqlite3 -bail "$CDR_DB" < /usr/local/share/asterisk-gitops/cdr-schema.sql > /dev/null
# A table made by an earlier image lacks the columns added since (CREATE TABLE IF NOT EXISTS keeps
# it): without them every insert would fail and the calls go unrecorded.
for column in dialled; do
    if [ -z "$(sqlite3 "$CDR_DB" "SELECT 1 FROM pragma_table_info('cdr') WHERE name = '$column'")" ]; then
        setpriv --reuid=asterisk --regid=asterisk --init-groups \
            sqlite3 -bail "$CDR_DB" "ALTER TABLE cdr ADD COLUMN $column TEXT" > /dev/null
    fi
done
chmod 0640 "$CDR_DB"

# The realtime store (extensions as rows, see res_config_sqlite3.conf): created with its schema when
# absent, as the asterisk user (Asterisk must own the -wal/-shm files), before Asterisk opens it (it
# would create an empty file). An existing store is only ever written in place: Asterisk keeps the
# inode it opened. The schema is idempotent, so an older store gains missing tables.
STORE_DB=/etc/asterisk/managed/store/realtime.sqlite3
mkdir -p "$(dirname "$STORE_DB")"
chown asterisk:asterisk "$(dirname "$STORE_DB")"
chmod 0770 "$(dirname "$STORE_DB")"
for f in "$STORE_DB" "$STORE_DB-wal" "$STORE_DB-shm"; do
    if [ -e "$f" ]; then chown asterisk:asterisk "$f"; fi
done
setpriv --reuid=asterisk --regid=asterisk --init-groups \
    sqlite3 -bail "$STORE_DB" < /usr/local/share/asterisk-gitops/realtime-schema.sql > /dev/null
# It holds passwords: Asterisk's user only (SQLite gives -wal/-shm the mode of the database file).
chmod 0600 "$STORE_DB"

# modules.conf `#tryinclude`s role-modules.conf: empty for the PBX, which never loads FILE().
if [ "$ROLE" = carrier ]; then
    printf '; Written by the container entrypoint (role: carrier); do not edit.\nload = func_env.so\nload = func_timeout.so\n'
else
    printf '; Written by the container entrypoint (role: pbx): no extra modules.\n'
fi > /etc/asterisk/role-modules.conf
chown root:asterisk /etc/asterisk/role-modules.conf
chmod 0640 /etc/asterisk/role-modules.conf

# The AMI control channel (manager.conf, its generated secret): one script owns it.
/usr/local/bin/ami-setup.sh "$ROLE"

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
exec /usr/sbin/asterisk -f -U asterisk -G asterisk
