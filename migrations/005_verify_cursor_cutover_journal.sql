-- verify resumes inside a table: `cursor` is the last key compared (JSON of the key's values)
-- while the table is in progress, NULL once it is done.
ALTER TABLE verify_tables ADD COLUMN cursor TEXT;

-- cutover's journal: each step of a cutover, recorded before it runs ('started') and after
-- ('done' or 'failed'), with who ran it and when: a crashed cutover resumes or rolls back from
-- the last entry, and the rows are the change record's audit trail.
CREATE TABLE cutover_journal (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    cutover_id TEXT NOT NULL,
    step       TEXT NOT NULL,
    state      TEXT NOT NULL,      -- started | done | failed
    at         REAL NOT NULL,      -- unix time, seconds
    actor      TEXT NOT NULL,      -- OS user @ host, pid
    detail     TEXT                -- JSON: what the step found or did
);
