-- Where each copied table's binlog history starts on the target (docs/design.md, "horizons"),
-- the definition its target table was created with, and how it is read.
ALTER TABLE tables ADD COLUMN horizon_file TEXT;
ALTER TABLE tables ADD COLUMN horizon_pos INTEGER;
ALTER TABLE tables ADD COLUMN definition TEXT;
ALTER TABLE tables ADD COLUMN single_snapshot INTEGER NOT NULL DEFAULT 0;
-- Tables and databases that disappeared from the source while the snapshot copied them:
-- dropped on the target; binlog events on them up to this position are in the past.
CREATE TABLE gone (
    kind TEXT NOT NULL,   -- table | database
    db   TEXT NOT NULL,
    name TEXT NOT NULL,
    file TEXT NOT NULL,
    pos  INTEGER NOT NULL,
    PRIMARY KEY (kind, db, name)
);
-- Events: the status each has on the source (ENABLED, DISABLED, SLAVESIDE_DISABLED); on the
-- target they are DISABLED until cutover.
CREATE TABLE source_events (
    db     TEXT NOT NULL,
    name   TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (db, name)
);
