-- The call records' table, created by the entrypoint before Asterisk opens master.db (the
-- module would create it with untyped columns and no index). AcctId is what cdr_sqlite3_custom
-- probes for. Idempotent: an existing table is kept as it is.
CREATE TABLE IF NOT EXISTS cdr (
    AcctId INTEGER PRIMARY KEY,
    calldate TEXT,
    src TEXT,
    dst TEXT,
    dcontext TEXT,
    channel TEXT,
    dstchannel TEXT,
    lastapp TEXT,
    duration INTEGER,
    billsec INTEGER,
    disposition TEXT,
    uniqueid TEXT,
    target TEXT,
    provider TEXT,
    dialled TEXT
);
CREATE INDEX IF NOT EXISTS cdr_calldate ON cdr (calldate);
