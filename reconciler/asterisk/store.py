"""The realtime store: each extension's endpoint, auth, aor and mailbox as rows of one SQLite file
that Asterisk reads through `res_config_sqlite3` + `res_sorcery_realtime` (see asterisk/conf/).

One definition of the store: its path in the container, its tables and their columns, the schema,
the rows an extension becomes, and the SQL texts the transaction exec runs with
`sqlite3 -bail` as the asterisk user:

- `delta_sql(changed rows, token)`: ONE `BEGIN IMMEDIATE … COMMIT` that first copies the current
  rows of exactly the changed ids into `gitops_undo_*` (O(changed)), then deletes and inserts them;
- `undo_sql(token)`: puts those saved rows back, only if the last delta is `token` (idempotent: a
  second run, or a run after a delta that never committed, changes nothing);
- `rewrite_sql(rows, token)`: the heal: every store table rewritten from the desired rows (O(n),
  itself undoable);
- `DIGEST_COMMAND`: `.sha3sum` over the store tables, computed in C inside the container; only the
  hash crosses the exec;
- `read_rows_sql(ids, limit)`: a bounded read of the rows of some ids (JSON), for diagnosis.

Every SQL value passes one function, `sql_quote`. Nothing here runs anything: pure text + parsing.
Asterisk keeps the DB file's inode open: the file is only ever written in place, never replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from reconciler.desired.model import DesiredState, Extension, SecretRef
from reconciler.desired.render import mailbox_pin, target_destination
from reconciler.errors import ReconcilerError

MANAGED_DIR = "/etc/asterisk/managed"
STORE_DIR = "store"  # relative to the managed dir: the store persists with the managed volume
DB_FILE = "realtime.sqlite3"
DB_PATH = posixpath.join(MANAGED_DIR, STORE_DIR, DB_FILE)  # also in asterisk/conf/res_config_sqlite3.conf
DB_USER = "asterisk"  # -wal/-shm must belong to Asterisk's uid: every writer runs as this user
BUSY_TIMEOUT_MS = 2000
VOICEMAIL_CONTEXT = "default"

ENDPOINTS = "ps_endpoints"
AUTHS = "ps_auths"
AORS = "ps_aors"
VOICEMAIL = "ps_voicemail"  # the `voicemail` realtime family (extconfig.conf) maps to this table
# The `call_features` realtime family: an extension's do-not-disturb, forwards (as the dialplan's
# `context,exten` of the target) and pickup group, read by the dialplan with REALTIME_FIELD().
FEATURES = "ps_call_features"
APPLIED = "gitops_applied"  # number → keyed hash of its rows as last applied (not in the digest)
UNDO_IDS = "gitops_undo_ids"
META = "gitops_meta"
UNDO_PREFIX = "gitops_undo_"
# `.sha3sum` takes one LIKE pattern: every store table, and nothing else, starts with `ps_`.
DIGEST_PATTERN = "ps_%"

# Columns per table: the key column first. Taken from Asterisk's own schema
# (contrib/ast-db-manage/config/versions/4da0c5f79a9c_create_tables.py and later migrations),
# limited to what the rows set. A NULL column is not passed to Asterisk (its default applies).
COLUMNS: dict[str, tuple[str, ...]] = {
    ENDPOINTS: (
        "id",
        "context",
        "disallow",
        "allow",
        "auth",
        "aors",
        "callerid",
        "mailboxes",
        "dtmf_mode",
        "direct_media",
        "rtp_symmetric",
        "force_rport",
        "rewrite_contact",
        "media_address",
        "bind_rtp_to_media_address",
    ),
    AUTHS: ("id", "auth_type", "username", "password"),
    AORS: ("id", "max_contacts", "remove_existing", "qualify_frequency"),
    # app_voicemail updates a mailbox by `uniqueid`: the extension number (digits) serves.
    VOICEMAIL: ("mailbox", "uniqueid", "context", "password", "fullname", "email"),
    FEATURES: ("id", "dnd", "fwd_always", "fwd_busy", "fwd_noanswer", "pickup_group"),
    APPLIED: ("id", "hash"),
}
KEY: dict[str, str] = {
    ENDPOINTS: "id",
    AUTHS: "id",
    AORS: "id",
    VOICEMAIL: "mailbox",
    FEATURES: "id",
    APPLIED: "id",
}

TABLES: tuple[str, ...] = tuple(COLUMNS)

Row = dict[str, str]
Rows = dict[str, dict[str, Row]]  # table → key → row


class StoreValueRefused(ReconcilerError):
    """A value cannot be written into the store (a NUL character)."""


# --- quoting ----------------------------------------------------------------------------------

_PLAIN = re.compile(r"[^\x00-\x1f\x7f]*\Z")


def sql_quote(value: str) -> str:
    """`value` as one SQLite string literal that no character can leave: `'…'` with `'` doubled
    when it is printable, `CAST(X'<utf-8 hex>' AS TEXT)` when it holds a line break or another
    control character (the sqlite3 shell reads its input line by line: a literal never spans
    lines). NUL is refused: Asterisk reads values as C strings."""
    if "\x00" in value:
        raise StoreValueRefused(
            "a value for the realtime store contains a NUL character",
            "remove it from the desired state (validation should have refused it)",
        )
    if _PLAIN.match(value):
        return "'" + value.replace("'", "''") + "'"
    return f"CAST(X'{value.encode('utf-8').hex().upper()}' AS TEXT)"


def _values(row: Mapping[str, str], columns: Sequence[str]) -> str:
    return "(" + ",".join(sql_quote(row[c]) if row.get(c) is not None else "NULL" for c in columns) + ")"


def _in_list(keys: Iterable[str]) -> str:
    return "(" + ",".join(sql_quote(k) for k in keys) + ")"


# --- schema -----------------------------------------------------------------------------------


def schema_sql() -> str:
    """The DDL of the store (idempotent: `CREATE … IF NOT EXISTS`), WAL journal included. The
    entrypoint runs it (as the asterisk user) before Asterisk opens the file; every delta also
    starts with it, so a store made by an older image gains a missing table."""
    lines = ["PRAGMA journal_mode=WAL;"]
    for table, columns in COLUMNS.items():
        key = KEY[table]
        cols = ", ".join(f"{c} TEXT PRIMARY KEY NOT NULL" if c == key else f"{c} TEXT" for c in columns)
        # WITHOUT ROWID: rows are kept in key order, so the digest depends on the content only
        # (not on the order rows were written: an undo re-inserts them).
        lines.append(f"CREATE TABLE IF NOT EXISTS {table} ({cols}) WITHOUT ROWID;")
        lines.append(f"CREATE TABLE IF NOT EXISTS {UNDO_PREFIX}{table} ({cols}) WITHOUT ROWID;")
    lines.append(f"CREATE TABLE IF NOT EXISTS {UNDO_IDS} (tbl TEXT NOT NULL, id TEXT);")
    lines.append(f"CREATE TABLE IF NOT EXISTS {META} (k TEXT PRIMARY KEY NOT NULL, v TEXT);")
    return "\n".join(lines) + "\n"


# --- rows -------------------------------------------------------------------------------------


def _secret(value: str | SecretRef, secrets: Mapping[str, str]) -> str:
    if isinstance(value, SecretRef):
        return secrets[value.name]
    return value


def auth_id(number: str) -> str:
    return f"{number}-auth"


def rows_for(ext: Extension, state: DesiredState, secrets: Mapping[str, str]) -> dict[str, Row]:
    """table → row for one extension: the settings the file template gave an extension."""
    pbx = state.pbx
    n = ext.number
    endpoint: Row = {
        "id": n,
        "context": "internal",
        "disallow": "all",
        "allow": ",".join(ext.codecs or pbx.codecs),
        "auth": auth_id(n),
        "aors": n,
        "callerid": f'"{ext.name}" <{n}>',
        "dtmf_mode": "rfc4733",
        "direct_media": "no",
        "rtp_symmetric": "yes",
        "force_rport": "yes",
        "rewrite_contact": "yes",
    }
    if ext.has_voicemail:
        endpoint["mailboxes"] = f"{n}@{VOICEMAIL_CONTEXT}"
    if pbx.media_address:
        endpoint["media_address"] = pbx.media_address
        endpoint["bind_rtp_to_media_address"] = "yes"
    rows: dict[str, Row] = {
        ENDPOINTS: endpoint,
        AUTHS: {
            "id": auth_id(n),
            "auth_type": "userpass",
            "username": n,
            "password": _secret(ext.password, secrets),
        },
        AORS: {
            "id": n,
            "max_contacts": str(ext.devices),
            "remove_existing": "yes",
            "qualify_frequency": "30",
        },
    }
    features = call_features_row(ext)
    if features is not None:
        rows[FEATURES] = features
    box = ext.mailbox
    if box is not None:
        mailbox: Row = {
            "mailbox": n,
            "uniqueid": n,
            "context": VOICEMAIL_CONTEXT,
            "password": mailbox_pin(ext, secrets),
            "fullname": ext.name,
        }
        if box.email:
            mailbox["email"] = box.email
        rows[VOICEMAIL] = mailbox
    return rows


def keys_for(number: str) -> dict[str, str]:
    """table → key of every row an extension `number` may have (whether or not it has them)."""
    return {
        ENDPOINTS: number,
        AUTHS: auth_id(number),
        AORS: number,
        VOICEMAIL: number,
        FEATURES: number,
        APPLIED: number,
    }


def call_features_row(ext: Extension) -> Row | None:
    """The `call_features` row of `ext`, or None when it sets none of them (no row: the defaults)."""
    row: Row = {"id": ext.number}
    if ext.dnd:
        row["dnd"] = "on"
    if ext.forward is not None:
        for name, column in (("always", "fwd_always"), ("busy", "fwd_busy"), ("no_answer", "fwd_noanswer")):
            target = getattr(ext.forward, name)
            if target is not None:
                row[column] = target_destination(target)
    if ext.pickup_group is not None:
        row["pickup_group"] = ext.pickup_group
    return row if len(row) > 1 else None


def row_hash(rows: Mapping[str, Row], key: bytes) -> str:
    """A keyed hash of an extension's rows: equal rows, equal hash; no value can be read from it."""
    text = json.dumps(rows, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()[:32]


def desired_rows(state: DesiredState, secrets: Mapping[str, str], key: bytes) -> Rows:
    """Every row of the desired store: table → key → row, with each extension's `gitops_applied`
    row holding the keyed hash of its other rows."""
    out: Rows = {t: {} for t in TABLES}
    for ext in state.extensions:
        rows = rows_for(ext, state, secrets)
        rows[APPLIED] = {"id": ext.number, "hash": row_hash(rows, key)}
        for table, row in rows.items():
            out[table][row[KEY[table]]] = row
    return out


def changed_numbers(desired: Rows, applied: Mapping[str, str]) -> list[str]:
    """The extensions whose rows differ between `desired` and the `applied` hashes (number → hash,
    as `parse_read` returns them): added, changed and removed ones. O(n) dict lookups."""
    want = {n: r["hash"] for n, r in desired[APPLIED].items()}
    out = [n for n, h in want.items() if applied.get(n) != h]
    out += [n for n in applied if n not in want]
    return sorted(out)


# --- the rows as a file: `render --out` writes them, `plan --against` compares them ---------------

EXPORT_FILE = "store.json"  # beside the rendered .conf files; holds passwords like them (0600)
# How a changed column reads in a plan: the auth's password and the mailbox are one word each.
_CHANGED_AS: dict[str, str] = {f"{AUTHS}.password": "password", f"{VOICEMAIL}.password": "voicemail pin"}
_TABLE_AS: dict[str, str] = {VOICEMAIL: "voicemail", FEATURES: "call features"}


def extension_rows(state: DesiredState, secrets: Mapping[str, str]) -> dict[str, dict[str, Row]]:
    """number → table → row of every desired extension (no applied hashes)."""
    return {ext.number: rows_for(ext, state, secrets) for ext in state.extensions}


def export_rows(rows: Mapping[str, Mapping[str, Row]]) -> str:
    """`extension_rows` as the text of `EXPORT_FILE`."""
    return json.dumps({"extensions": rows}, indent=1, sort_keys=True) + "\n"


def parse_export(text: str | None) -> dict[str, dict[str, Row]] | None:
    """The rows in an `EXPORT_FILE` text; None when absent or not such a file."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    rows = data.get("extensions") if isinstance(data, dict) else None
    return rows if isinstance(rows, dict) else None


def _changed_columns(before: Mapping[str, Row], after: Mapping[str, Row]) -> list[str]:
    names: set[str] = set()
    for table in sorted(set(before) | set(after)):
        old, new = before.get(table), after.get(table)
        if old is None or new is None:
            names.add(_TABLE_AS.get(table, table))
            continue
        for column in sorted(set(old) | set(new)):
            if old.get(column) != new.get(column):
                names.add(_CHANGED_AS.get(f"{table}.{column}", _TABLE_AS.get(table, column)))
    return sorted(names)


def row_changes(
    before: Mapping[str, Mapping[str, Row]] | None, after: Mapping[str, Mapping[str, Row]]
) -> list[str]:
    """What the store would do, extension by extension, in number order: `extension N added`,
    `extension N removed`, `extension N password, callerid changed` (column names, never values).
    O(n) dict compares."""
    old = before or {}
    out: list[str] = []
    for number in sorted(set(old) | set(after), key=lambda n: (len(n), n)):
        if number not in old:
            out.append(f"extension {number} added")
        elif number not in after:
            out.append(f"extension {number} removed")
        elif old[number] != after[number]:
            out.append(
                f"extension {number} {', '.join(_changed_columns(old[number], after[number]))} changed"
            )
    return out


# --- the SQL texts ----------------------------------------------------------------------------


def _token_guard(token: str) -> str:
    return f"EXISTS (SELECT 1 FROM {META} WHERE k='delta' AND v={sql_quote(token)})"


def _prologue() -> str:
    return f".timeout {BUSY_TIMEOUT_MS}\n{schema_sql()}BEGIN IMMEDIATE;\n"


def _clear_undo() -> list[str]:
    return [f"DELETE FROM {UNDO_IDS};"] + [f"DELETE FROM {UNDO_PREFIX}{t};" for t in TABLES]


def _key_line(key: bytes | None) -> list[str]:
    if key is None:
        return []
    return [f"INSERT OR REPLACE INTO {META}(k,v) VALUES ('key',{sql_quote(key.hex())});"]


def delta_sql(
    numbers: Iterable[str], rows: Mapping[str, Mapping[str, Row]], token: str, key: bytes | None = None
) -> str:
    """The one transaction that makes the store hold, for the extensions `numbers`, exactly the
    rows in `rows` (table → key → row; an extension absent there is removed). The current rows of
    those ids are saved first, so `undo_sql(token)` can put them back. O(len(numbers))."""
    keys: dict[str, list[str]] = {t: [] for t in TABLES}
    for number in sorted(set(numbers)):
        for table, row_key in keys_for(number).items():
            keys[table].append(row_key)
    lines = _clear_undo()
    for table in TABLES:
        if not keys[table]:
            continue
        key_col, ids = KEY[table], _in_list(keys[table])
        lines.append(
            f"INSERT INTO {UNDO_IDS}(tbl,id) VALUES "
            + ",".join(f"({sql_quote(table)},{sql_quote(k)})" for k in keys[table])
            + ";"
        )
        lines.append(f"INSERT INTO {UNDO_PREFIX}{table} SELECT * FROM {table} WHERE {key_col} IN {ids};")
        lines.append(f"DELETE FROM {table} WHERE {key_col} IN {ids};")
        new = [rows.get(table, {}).get(k) for k in keys[table]]
        lines += _inserts(table, [r for r in new if r is not None])
    lines += _key_line(key)
    lines.append(f"INSERT OR REPLACE INTO {META}(k,v) VALUES ('delta',{sql_quote(token)});")
    return _prologue() + "\n".join(lines) + "\nCOMMIT;\n"


def rewrite_sql(rows: Mapping[str, Mapping[str, Row]], token: str, key: bytes | None = None) -> str:
    """The heal: every store table holds exactly `rows` afterwards; the whole previous content is
    saved for `undo_sql(token)`. O(n): for drift, and for the first apply onto a store."""
    lines = _clear_undo()
    for table in TABLES:
        lines.append(f"INSERT INTO {UNDO_IDS}(tbl,id) VALUES ({sql_quote(table)},NULL);")
        lines.append(f"INSERT INTO {UNDO_PREFIX}{table} SELECT * FROM {table};")
        lines.append(f"DELETE FROM {table};")
        lines += _inserts(table, [rows.get(table, {})[k] for k in sorted(rows.get(table, {}))])
    lines += _key_line(key)
    lines.append(f"INSERT OR REPLACE INTO {META}(k,v) VALUES ('delta',{sql_quote(token)});")
    return _prologue() + "\n".join(lines) + "\nCOMMIT;\n"


def _inserts(table: str, rows: Sequence[Mapping[str, str]], per_statement: int = 200) -> list[str]:
    columns = COLUMNS[table]
    out = []
    for i in range(0, len(rows), per_statement):
        chunk = rows[i : i + per_statement]
        out.append(
            f"INSERT INTO {table}({','.join(columns)}) VALUES "
            + ",".join(_values(r, columns) for r in chunk)
            + ";"
        )
    return out


def undo_sql(token: str) -> str:
    """Put back the rows the delta (or rewrite) `token` saved; nothing when the last delta is
    another one (or none committed). Idempotent."""
    guard = _token_guard(token)
    lines = []
    for table in TABLES:
        key_col = KEY[table]
        mine = f"{UNDO_IDS} WHERE tbl={sql_quote(table)}"
        lines.append(
            f"DELETE FROM {table} WHERE {guard} AND ({key_col} IN (SELECT id FROM {mine}) "
            f"OR EXISTS (SELECT 1 FROM {mine} AND id IS NULL));"
        )
        lines.append(f"INSERT INTO {table} SELECT * FROM {UNDO_PREFIX}{table} WHERE {guard};")
    lines.append(f"DELETE FROM {META} WHERE k='delta' AND v={sql_quote(token)};")
    return f".timeout {BUSY_TIMEOUT_MS}\nBEGIN IMMEDIATE;\n" + "\n".join(lines) + "\nCOMMIT;\n"


def settle_sql(token: str) -> str:
    """Forget the saved rows of delta `token` once it is recorded (it can no longer be undone)."""
    guard = _token_guard(token)
    lines = [f"DELETE FROM {UNDO_IDS} WHERE {guard};"]
    lines += [f"DELETE FROM {UNDO_PREFIX}{t} WHERE {guard};" for t in TABLES]
    lines.append(f"DELETE FROM {META} WHERE k='delta' AND v={sql_quote(token)};")
    return f".timeout {BUSY_TIMEOUT_MS}\nBEGIN IMMEDIATE;\n" + "\n".join(lines) + "\nCOMMIT;\n"


DIGEST_COMMAND = f".timeout {BUSY_TIMEOUT_MS}\n.sha3sum {DIGEST_PATTERN}\n"
# What the read exec asks: the digest, the hash key and each extension's applied hash.
READ_COMMAND = (
    DIGEST_COMMAND
    + f"SELECT 'key '||v FROM {META} WHERE k='key';\n"
    + f"SELECT 'applied '||id||' '||hash FROM {APPLIED};\n"
)


@dataclass(frozen=True)
class StoreRead:
    """What the read exec learnt of the store: its digest (None: no store or unreadable), the key
    of the applied hashes and the applied hash per extension number."""

    digest: str | None
    key: bytes | None
    applied: dict[str, str]


def parse_read(text: str) -> StoreRead:
    key: bytes | None = None
    applied: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("key "):
            with contextlib.suppress(ValueError):
                key = bytes.fromhex(line[4:].strip())
        elif line.startswith("applied "):
            parts = line.split(" ")
            if len(parts) == 3:
                applied[parts[1]] = parts[2]
    return StoreRead(parse_digest(text), key, applied)


NO_STORE = "no-store"


def read_rows_sql(numbers: Iterable[str], limit: int = 50) -> str:
    """A bounded read (JSON lines) of the rows of the extensions `numbers`: at most `limit` ids."""
    picked = sorted(set(numbers))[:limit]
    parts = [f".timeout {BUSY_TIMEOUT_MS}", ".mode json"]
    for table in TABLES:
        keys = [keys_for(n)[table] for n in picked]
        if keys:
            parts.append(
                f"SELECT {sql_quote(table)} AS tbl, * FROM {table} WHERE {KEY[table]} IN {_in_list(keys)};"
            )
    return "\n".join(parts) + "\n"


def parse_rows(text: str) -> Rows:
    """The output of `read_rows_sql` → table → key → row (NULL columns dropped)."""
    out: Rows = {t: {} for t in TABLES}
    for chunk in re.split(r"(?<=\])\s*(?=\[)", text.strip()):
        if not chunk:
            continue
        try:
            items = json.loads(chunk)
        except ValueError:
            continue
        for item in items if isinstance(items, list) else []:
            table = item.pop("tbl", None)
            if table in out:
                row = {k: str(v) for k, v in item.items() if v is not None}
                out[table][row.get(KEY[table], "")] = row
    return out


def parse_digest(text: str) -> str | None:
    """One hash for what `DIGEST_COMMAND` printed (a `<sha3>|<table>` line per store table), or
    None when it printed no such line (no store, or an error)."""
    lines = sorted(ln.strip() for ln in text.splitlines() if _DIGEST_LINE.fullmatch(ln.strip()))
    if not lines:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


_DIGEST_LINE = re.compile(r"[0-9a-f]{40,128}\|[A-Za-z0-9_]+")


# --- running it (shell text for the transaction exec) -----------------------------------------


def sqlite_step(sql_path: str, bail: bool = True) -> str:
    """Shell: run the SQL file `sql_path` against the store as the asterisk user."""
    flags = "-bail " if bail else ""
    return (
        f"setpriv --reuid={DB_USER} --regid={DB_USER} --init-groups "
        f"sqlite3 {flags}{shlex.quote(DB_PATH)} < {shlex.quote(sql_path)}"
    )


# Asterisk keeps the DB open, so the WAL is never removed, and it shrinks only when truncated: left
# alone it grows to the autocheckpoint size (1000 pages, ~4 MB), beyond what a small managed
# volume holds. Each committed store transaction is followed by a TRUNCATE checkpoint.
CHECKPOINT_SQL = f".timeout {BUSY_TIMEOUT_MS}\nPRAGMA wal_checkpoint(TRUNCATE);\n"


def checkpoint_step() -> str:
    """Shell: copy the WAL into the DB file and truncate it, as the asterisk user. Never fails:
    the transaction before it committed, whatever the checkpoint does (busy, a full volume)."""
    return (
        f"printf %s {shlex.quote(CHECKPOINT_SQL)} | setpriv --reuid={DB_USER} --regid={DB_USER} "
        f"--init-groups sqlite3 {shlex.quote(DB_PATH)} >/dev/null 2>&1; true"
    )


def digest_step(command: str = DIGEST_COMMAND) -> str:
    """Shell: print the live store digest (or `no-store` when the DB file is absent); with
    `READ_COMMAND`, also the key and the applied hashes."""
    cmd = shlex.quote(command)
    return (
        f"if [ -f {shlex.quote(DB_PATH)} ]; then printf %s {cmd} | "
        f"setpriv --reuid={DB_USER} --regid={DB_USER} --init-groups sqlite3 -bail {shlex.quote(DB_PATH)} "
        f"2>&1; else echo {NO_STORE}; fi"
    )


# --- verification sized to the change: one object at a time ------------------------------------

VERIFY_CAP = 20  # at most this many changed extensions are asked about one by one
_ENDPOINT_QUERY = "pjsip show endpoint "
_AOR_QUERY = "pjsip show aor "
_NOT_FOUND = re.compile(r"Unable to find object|No objects found", re.I)


def endpoint_query(object_id: str) -> str:
    return _ENDPOINT_QUERY + object_id


def aor_query(object_id: str) -> str:
    return _AOR_QUERY + object_id


def is_endpoint_query(query: str) -> bool:
    return query.startswith(_ENDPOINT_QUERY)


def queried_id(query: str) -> str:
    return query.rsplit(" ", 1)[-1]


def endpoint_found(out: str) -> bool:
    """Whether `pjsip show endpoint X` (or `pjsip show aor X`) found the object."""
    return bool(out.strip()) and not _NOT_FOUND.search(out) and ("Endpoint:" in out or "Aor:" in out)


def _field(out: str, name: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(name)}\s*:\s*(.*?)\s*$", out, re.M)
    return m[1] if m else None


_CONTACT_PREFIX = "/registrar/contact/"  # astdb key of a registered contact: <prefix><aor>;@<hash>
# Asterisk's control socket reads a remote command into a 512-byte buffer (main/asterisk.c,
# netconsole): a longer `asterisk -rx` command is cut into pieces. One unregister command stays
# below this, so one per 40-odd removed extensions (not one exec step each).
CLI_COMMAND_MAX_BYTES = 400


def unregister_commands(numbers: Iterable[str]) -> list[str]:
    """The CLI commands that drop the registered contacts of the extensions `numbers` (deleting
    their store rows leaves the contacts live until they expire): few numbers per command, each
    command under CLI_COMMAND_MAX_BYTES."""
    picked = sorted(set(numbers), key=lambda n: (len(n), n))
    for number in picked:
        if not number.isdigit():
            raise ValueError(f"not an extension number: {number!r}")
    start = len(_CONTACT_PREFIX) + 1
    head = (
        f"database query \"DELETE FROM astdb WHERE key LIKE '{_CONTACT_PREFIX}%;@%' AND "
        f"substr(key,{start},instr(key,';@')-{start}) IN ("
    )
    out: list[str] = []
    chunk: list[str] = []
    for number in picked:
        if chunk and len(head) + len(",".join([*chunk, f"'{number}'"])) + 3 > CLI_COMMAND_MAX_BYTES:
            out.append(head + ",".join(chunk) + ')"')
            chunk = []
        chunk.append(f"'{number}'")
    if chunk:
        out.append(head + ",".join(chunk) + ')"')
    return out


@dataclass(frozen=True)
class StoreCheck:
    name: str
    ok: bool
    detail: str = ""


def verification_plan(present: Iterable[str], absent: Iterable[str]) -> tuple[list[str], list[str], int]:
    """(queries, the numbers they check, how many changed extensions were left unchecked): the
    first VERIFY_CAP changed extensions are asked about, endpoint then aor each."""
    todo = [(n, True) for n in sorted(present)] + [(n, False) for n in sorted(absent)]
    picked = todo[:VERIFY_CAP]
    queries: list[str] = []
    for n, _ in picked:
        queries += [endpoint_query(n), aor_query(n)]
    return queries, [f"{'+' if want else '-'}{n}" for n, want in picked], len(todo) - len(picked)


def judge(checked: Sequence[str], outputs: Sequence[str], skipped: int) -> list[StoreCheck]:
    """The answers to `verification_plan`'s queries, two per checked extension."""
    checks = []
    for i, tag in enumerate(checked):
        want, n = tag[0] == "+", tag[1:]
        ep, aor = outputs[2 * i], outputs[2 * i + 1]
        if want:
            problems = []
            if not endpoint_found(ep):
                problems.append("endpoint not found")
            else:
                if _field(ep, "context") != "internal":
                    problems.append(f"context {_field(ep, 'context')!r}")
                if _field(ep, "auth") != auth_id(n):
                    problems.append(f"auth {_field(ep, 'auth')!r}")
            if not endpoint_found(aor):
                problems.append("aor not found")
            checks.append(StoreCheck(f"extension {n} live in the store", not problems, "; ".join(problems)))
        else:
            gone = not endpoint_found(ep) and not endpoint_found(aor)
            checks.append(StoreCheck(f"extension {n} removed", gone, "" if gone else "still found"))
    if skipped:
        checks.append(StoreCheck(f"{skipped} more changed extension(s) not asked about one by one", True))
    return checks
