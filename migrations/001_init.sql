-- State store of migrate: one SQLite file (WAL), readable by `migrate status` while another verb runs.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Schema objects created on the target, by step name ("table:db.t", "view:db.v", ...).
CREATE TABLE schema_steps (
    step    TEXT PRIMARY KEY,
    done_at TEXT NOT NULL
);
-- One row per table being copied.
CREATE TABLE tables (
    db          TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,          -- pending | copying | copied | indexed
    rows_est    INTEGER NOT NULL DEFAULT 0,
    bytes_est   INTEGER NOT NULL DEFAULT 0,
    rows_done   INTEGER NOT NULL DEFAULT 0,
    bytes_done  INTEGER NOT NULL DEFAULT 0,
    chunks_done INTEGER NOT NULL DEFAULT 0,
    last_key    TEXT,                   -- JSON of the key values of the last copied row
    PRIMARY KEY (db, name)
);
-- Finished chunks with the binlog position their read was consistent at.
CREATE TABLE chunks (
    db          TEXT NOT NULL,
    name        TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    rows        INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    binlog_file TEXT NOT NULL,
    binlog_pos  INTEGER NOT NULL,
    done_at     TEXT NOT NULL,
    PRIMARY KEY (db, name, seq)
);
-- Live figures of `follow` (one row).
CREATE TABLE follow_status (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    applied_gtid   TEXT NOT NULL,
    lag_seconds    REAL,
    events_behind  INTEGER,
    bytes_behind   INTEGER,
    rows_applied   INTEGER NOT NULL DEFAULT 0,
    trx_applied    INTEGER NOT NULL DEFAULT 0,
    reconnects     INTEGER NOT NULL DEFAULT 0,
    pid            INTEGER,
    updated_at     TEXT NOT NULL
);
