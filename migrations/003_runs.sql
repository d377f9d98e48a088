-- The last run of each verb that changes something (snapshot, follow): its process, when it
-- started and ended, and how (`status` tells a clean stop from a crash: a run still marked
-- running whose process is gone was killed).
CREATE TABLE runs (
    verb       TEXT PRIMARY KEY,
    pid        INTEGER NOT NULL,
    started_at REAL NOT NULL,   -- unix time
    ended_at   REAL,
    outcome    TEXT NOT NULL,   -- running | ok | interrupted | failed
    last_error TEXT
);
-- Source commit time of the last applied transaction (lag grows from it while follow cannot
-- apply).
ALTER TABLE follow_status ADD COLUMN last_commit REAL;
