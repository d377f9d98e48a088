-- The keys the follower changed on the target, for cutover's proof of what changed since the
-- last full verify. Recorded before the target transaction that changes them commits (so the
-- set is never smaller than what was applied), each with the sequence number of the group
-- that last touched it. `key` is the JSON of the key's values; '' stands for the whole table
-- (a table without a key). A DDL applied since a verify is `meta` 'touched.ddl_seq'.
CREATE TABLE touched_keys (
    db   TEXT NOT NULL,
    tbl  TEXT NOT NULL,
    key  TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (db, tbl, key)
) WITHOUT ROWID;
CREATE INDEX touched_keys_seq ON touched_keys(seq);
