"""Call records: the CDR table Asterisk writes, read back for `reconciler calls`, /metrics and the
dashboard.

Asterisk (asterisk/conf/cdr_sqlite3_custom.conf) writes one row per call leg into table `cdr` of
`master.db` in its log directory; the entrypoint creates the table (asterisk/cdr-schema.sql).
`CDR_COLUMNS` names the columns in their order, a unit test keeps both files equal to it.
`calldate` is UTC text, `YYYY-MM-DD HH:MM:SS`, so a time filter is a text comparison.

Reading goes through the same executor as every other read (`docker exec` in the container, or
`sh -c` beside Asterisk in the sidecar, which shares the log volume): `sqlite3 -readonly -json`,
a bounded LIMIT, and the time filter as a bound parameter whose value this module formats from a
datetime (never text a user typed). A missing database file means no call was recorded yet.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.errors import ReconcilerError

CDR_DB_NAME = "master.db"  # cdr_sqlite3_custom's category [master]: master.db in the log directory
CDR_TABLE = "cdr"
CDR_COLUMNS = (
    "calldate",
    "src",
    "dst",
    "dcontext",
    "channel",
    "dstchannel",
    "lastapp",
    "duration",
    "billsec",
    "disposition",
    "uniqueid",
    "target",
    "provider",
    "dialled",
)
# What the CDR engine writes as a disposition (cdr.conf: unanswered and congestion are logged).
DISPOSITIONS = ("ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
DASHBOARD_CALLS = 10
SQL_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
BUSY_TIMEOUT_MS = 2000  # Asterisk may be writing a record: wait for it instead of failing
NO_CALLS_NOTE = "no calls recorded yet"

# Markers of the query step's output (the first line), then sqlite3's own output.
_NO_DB = "gitops-calls: no-db"
_RC = re.compile(r"^gitops-calls: rc=(\d+)$")
_NO_TABLE = re.compile(r"no such table", re.I)
_RELATIVE = re.compile(r"^(\d{1,6})\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SQL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_SELECT = ", ".join(CDR_COLUMNS)


class SinceError(ValueError):
    """A --since value that is neither a duration (30m, 1h, 2d) nor an ISO 8601 time."""


class CallsUnavailable(ReconcilerError):
    """The call records exist but could not be read (sqlite3 failed)."""


@dataclass(frozen=True)
class CallRecord:
    """One row of the CDR table, as `reconciler calls --json` shows it."""

    time: str  # ISO 8601 UTC, e.g. 2026-12-02T10:23:43Z ("" when the row has no valid calldate)
    caller: str  # CDR src: the caller ID number
    dialled: str  # CDR(gitops_dialled): what the caller dialled (a DID, 600); else CDR dst
    target: str  # CDR(gitops_target), e.g. ring_group:600 ("" when the dialplan did not set it)
    provider: str  # CDR(gitops_provider), for calls out
    duration_s: int
    billsec_s: int
    disposition: str
    uniqueid: str

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "from": self.caller,
            "dialled": self.dialled,
            "target": self.target,
            "provider": self.provider,
            "duration_s": self.duration_s,
            "billsec_s": self.billsec_s,
            "disposition": self.disposition,
            "uniqueid": self.uniqueid,
        }


@dataclass(frozen=True)
class CallsRead:
    """What one read found: the records (newest first) and whether the database exists at all."""

    records: tuple[CallRecord, ...]
    recorded: bool  # False: no CDR database (or table) yet, nothing was ever recorded
    counts: Mapping[str, int] = field(default_factory=dict)  # disposition → rows (with_counts)

    @property
    def note(self) -> str | None:
        """Why the list is empty (None when it is not)."""
        return None if self.records else NO_CALLS_NOTE


# --- --since -------------------------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30m`, `1h`, `2d`, `45s`, `1w` before `now`, or an ISO 8601 date/time (a time without an
    offset is UTC, as the records are), as an aware UTC datetime. Raises SinceError."""
    value = text.strip()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    relative = _RELATIVE.match(value.lower())
    if relative:
        try:
            return now - timedelta(seconds=int(relative[1]) * _UNIT_S[relative[2]])
        except OverflowError as exc:  # 999999w: before year 1
            raise SinceError(_since_message(text)) from exc
    if len(value) > 40 or not value[:1].isdigit():
        raise SinceError(_since_message(text))
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise SinceError(_since_message(text)) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _since_message(text: str) -> str:
    shown = text if len(text) <= 40 and text.isprintable() else repr(text[:40])
    return (
        f"--since {shown!s}: not a duration or a time; use e.g. 30m, 1h, 2d, 1w, "
        "2026-12-02 or 2026-12-02T09:00 (UTC unless it has an offset)"
    )


def sql_time(moment: datetime) -> str:
    """`moment` as the CDR table's calldate text (UTC, `YYYY-MM-DD HH:MM:SS`)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(SQL_TIME_FORMAT)


def iso_time(calldate: str) -> str:
    """A calldate (`YYYY-MM-DD HH:MM:SS`, UTC) as ISO 8601 with Z; "" when it is not one."""
    text = calldate.strip()
    if not _SQL_TIME.match(text):
        return ""
    return text.replace(" ", "T") + "Z"


# --- the query -----------------------------------------------------------------------------------


def cdr_db_path(log_path: str) -> str:
    """Where the CDR database is: `master.db` beside Asterisk's messages.log (its log directory)."""
    return posixpath.join(posixpath.dirname(log_path) or "/var/log/asterisk", CDR_DB_NAME)


def bounded_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


def records_sql(limit: int, with_since: bool) -> str:
    """The SELECT of the newest `limit` records (`@since`: a bound parameter, when filtering)."""
    where = " WHERE calldate >= @since" if with_since else ""
    return (
        f"SELECT {_SELECT} FROM {CDR_TABLE}{where} ORDER BY calldate DESC, AcctId DESC "
        f"LIMIT {bounded_limit(limit)};"
    )


COUNTS_SQL = f"SELECT disposition, COUNT(*) AS n FROM {CDR_TABLE} GROUP BY disposition;"


def query_step(db_path: str, sql: str, since: datetime | None = None) -> str:
    """A shell step: run `sql` read-only on the CDR database; its output starts with a marker
    line (no database, or sqlite3's exit code), then sqlite3's JSON (or its error)."""
    db = shlex.quote(db_path)
    args = ["sqlite3", "-readonly", "-json", "-cmd", f".timeout {BUSY_TIMEOUT_MS}", db_path]
    if since is not None:
        stamp = sql_time(since)
        if not _SQL_TIME.match(stamp):  # our own format: a safeguard, never user text
            raise SinceError(f"internal: bad time literal {stamp!r}")
        args.append(f".parameter set @since \"'{stamp}'\"")
    args.append(sql)
    command = " ".join(shlex.quote(a) for a in args)
    return (
        f'if [ ! -f {db} ]; then echo "{_NO_DB}"; else '
        f'out=$({command} 2>&1); rc=$?; echo "gitops-calls: rc=$rc"; printf "%s\\n" "$out"; fi'
    )


def _as_int(value: object) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def _as_text(value: object) -> str:
    return "" if value is None else str(value)


def record_from_row(row: Mapping[str, Any]) -> CallRecord:
    """One JSON row of sqlite3 (the CDR columns) as a CallRecord."""
    return CallRecord(
        time=iso_time(_as_text(row.get("calldate"))),
        caller=_as_text(row.get("src")),
        dialled=_as_text(row.get("dialled")) or _as_text(row.get("dst")),
        target=_as_text(row.get("target")),
        provider=_as_text(row.get("provider")),
        duration_s=_as_int(row.get("duration")),
        billsec_s=_as_int(row.get("billsec")),
        disposition=_as_text(row.get("disposition")),
        uniqueid=_as_text(row.get("uniqueid")),
    )


def parse_step_output(text: str) -> list[dict[str, Any]] | None:
    """The rows a `query_step` printed; None when there is no database or no table yet (nothing
    recorded). Raises CallsUnavailable when sqlite3 failed otherwise."""
    first, _, rest = text.lstrip("\n").partition("\n")
    first = first.strip()
    if first == _NO_DB:
        return None
    match = _RC.match(first)
    if match is None:
        raise CallsUnavailable(
            f"unexpected answer reading the call records: {text.strip()[:200]!r}",
            "check that sqlite3 is installed beside Asterisk (the image has it)",
        )
    body = rest.strip()
    if match[1] != "0":
        if _NO_TABLE.search(body):
            return None
        raise CallsUnavailable(
            f"reading the call records failed (sqlite3 exit {match[1]}): {body[:300]}",
            "the CDR database may be busy or damaged; retry, then see the Asterisk log",
        )
    if not body:
        return []  # sqlite3 -json prints nothing for no rows
    try:
        rows = json.loads(body)
    except ValueError as exc:
        raise CallsUnavailable(
            f"the call records are not JSON: {body[:200]!r}", "retry; sqlite3 may have been interrupted"
        ) from exc
    if not isinstance(rows, list):
        raise CallsUnavailable(f"the call records are not a list: {body[:200]!r}", "retry")
    return [r for r in rows if isinstance(r, dict)]


def parse_counts(rows: Sequence[Mapping[str, Any]] | None) -> dict[str, int]:
    """disposition → rows: every known disposition (0 when none), plus any other one seen."""
    counts = dict.fromkeys(DISPOSITIONS, 0)
    for row in rows or ():
        name = _as_text(row.get("disposition")).strip() or "UNKNOWN"
        counts[name] = counts.get(name, 0) + _as_int(row.get("n"))
    return counts


def read_calls(
    client: Any,
    *,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
    with_counts: bool = False,
) -> CallsRead:
    """The newest `limit` call records (since `since`), in ONE exec through `client`'s executor;
    with `with_counts` also the rows by disposition (for /metrics). Raises AsteriskUnavailable when
    Asterisk's container cannot be reached, CallsUnavailable when sqlite3 fails."""
    db_path = cdr_db_path(getattr(client, "log_path", "/var/log/asterisk/messages.log"))
    steps = [query_step(db_path, records_sql(limit, since is not None), since)]
    if with_counts:
        steps.append(query_step(db_path, COUNTS_SQL))
    outputs = client.run_steps(steps).outputs
    rows = parse_step_output(outputs[0])
    counts: dict[str, int] = {}
    if with_counts:
        counts = parse_counts(parse_step_output(outputs[1]))
    if rows is None:
        return CallsRead((), recorded=False, counts=counts)
    return CallsRead(tuple(record_from_row(r) for r in rows), recorded=True, counts=counts)


# --- formatting ----------------------------------------------------------------------------------


def format_duration(seconds: int) -> str:
    """`0:42`, `12:05`, `1:02:03`."""
    s = max(0, int(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def table_rows(records: Sequence[CallRecord]) -> list[tuple[str, ...]]:
    """(time, from, dialled, target, provider, duration, disposition) per record, for a table."""
    return [
        (
            r.time.replace("T", " ").removesuffix("Z") or "?",
            r.caller or "-",
            r.dialled or "-",
            r.target or "-",
            r.provider or "-",
            format_duration(r.duration_s),
            r.disposition or "?",
        )
        for r in records
    ]


TABLE_COLUMNS = ("time (UTC)", "from", "dialled", "target", "provider", "duration", "disposition")


# --- a short cache, for /metrics and the dashboard -----------------------------------------------


@dataclass
class CallsCache:
    """The last read (newest DASHBOARD_CALLS records and the counts by disposition), kept `ttl_s`:
    a scrape storm or many open dashboards cost one exec per `ttl_s`, not one per request."""

    ttl_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _value: CallsRead | None = field(default=None, init=False, repr=False)
    _error: ReconcilerError | None = field(default=None, init=False, repr=False)
    _at: float = field(default=float("-inf"), init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def get(self, client: Any) -> CallsRead:
        """The cached read, or a new one when older than `ttl_s`. A failed read is cached as well
        (and raised again) for `ttl_s`, so a broken PBX is not asked on every request."""
        with self._lock:
            if self.clock() - self._at < self.ttl_s:
                if self._error is not None:
                    raise self._error
                assert self._value is not None
                return self._value
            try:
                value = read_calls(client, limit=DASHBOARD_CALLS, with_counts=True)
            except ReconcilerError as exc:
                self._value, self._error, self._at = None, exc, self.clock()
                raise
            self._value, self._error, self._at = value, None, self.clock()
            return value


def calls_json(read: CallsRead) -> dict[str, Any]:
    """The `/api/calls` body: the records and, when there are none, why."""
    return {
        "calls": [r.as_json() for r in read.records],
        "recorded": read.recorded,
        "note": read.note,
    }
