-- verify's progress: each table compared in the current verify (its rows, chunks and the
-- differences found, as JSON), so a killed verify continues with the tables not yet compared
-- and reaches the same verdict. Cleared when a new verify starts from the beginning.
CREATE TABLE verify_tables (
    db      TEXT NOT NULL,
    name    TEXT NOT NULL,
    rows    INTEGER NOT NULL,
    chunks  INTEGER NOT NULL,
    result  TEXT NOT NULL,      -- {"differences": [...], "keyless_differs": bool}
    PRIMARY KEY (db, name)
);
