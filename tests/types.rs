//! The type matrix travels both paths: snapshot (text-protocol reads) and binlog (row events),
//! and the two sides are compared with mariadb-dump, not with migrate's own code.

mod support;
use support::*;

const DB: &str = "types db";

const BINLOG_CHANGES: &str = r#"
SET time_zone = '+09:00'; SET sql_mode = 'NO_AUTO_VALUE_ON_ZERO'; SET NAMES utf8mb4;
USE `types db`;
CREATE TEMPORARY TABLE tn AS SELECT * FROM nums; UPDATE tn SET id = id + 100; INSERT INTO nums SELECT * FROM tn;
CREATE TEMPORARY TABLE tt AS SELECT * FROM times; UPDATE tt SET id = id + 100; INSERT INTO times SELECT * FROM tt;
CREATE TEMPORARY TABLE ts AS SELECT * FROM strs; UPDATE ts SET id = id + 100; INSERT INTO strs SELECT * FROM ts;
INSERT INTO special (id, g, p, ip, uu, hidden) SELECT id + 100, g, p, ip, uu, hidden FROM special;
UPDATE strs SET u4v = CONCAT(IFNULL(u4v, ''), '!'), ekv = CONCAT(IFNULL(ekv, ''), CONVERT('!' USING euckr));
UPDATE nums SET ti = ti WHERE id < 100;
UPDATE times SET id = id + 1000 WHERE id = 5;
UPDATE special SET ip = '::1', uu = '00000000-0000-0000-0000-000000000001' WHERE id = 1;
DELETE FROM nums WHERE id = 3;
UPDATE `주문 항목``s "q'` SET `select` = 'z' WHERE `order` = 1 AND `select` = 'a';
UPDATE ukey SET qty = qty + 1;
INSERT INTO legacy_myisam VALUES (3, CONVERT('세종' USING euckr)); UPDATE legacy_myisam SET v = NULL WHERE id = 1;
INSERT INTO legacy_aria VALUES (2, 'b');
ALTER TABLE counters ADD COLUMN extra VARCHAR(10) CHARACTER SET utf8mb4 DEFAULT 'x';
INSERT INTO counters (v, extra) VALUES (5, '한');
INSERT INTO nums (id) VALUES (0) ON DUPLICATE KEY UPDATE ti = 99;
REPLACE INTO ukey VALUES ('c', 'kr', 10);
INSERT INTO addrs VALUES ('10.0.0.2', '8.8.8.8', NULL); UPDATE addrs SET a = '10.0.0.3', b = '0.0.0.0' WHERE a = '10.0.0.1'; DELETE FROM addrs WHERE a = '0.0.0.0';
UPDATE addrs_nokey SET n = 9 WHERE a = '0.0.0.0'; UPDATE addrs_nokey SET a = '4.3.2.1' WHERE n = 1; DELETE FROM addrs_nokey WHERE a IS NULL; INSERT INTO addrs_nokey VALUES ('255.255.255.255', 4);
"#;

#[test]
fn type_matrix_through_snapshot_and_binlog() {
    let src = Server::source("types-src");
    let dst = Server::target("types-dst");
    src.script(include_bytes!("fixtures/types.sql"));
    let dir = tempdir();
    let state = dir.path().join("state.sqlite");

    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--threads", "2", "--databases", DB],
    );
    assert_ok(&out);
    assert_same(&src, &dst, DB);

    // schema objects: views (one depends on the other), routines, events disabled, no triggers
    assert_eq!(dst.sql("SELECT COUNT(*) FROM `types db`.a_top"), "3");
    assert_eq!(dst.sql("SELECT `types db`.twice(21)"), "42");
    assert_eq!(
        dst.sql(
            "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'types db'"
        ),
        "2"
    );
    assert_eq!(
        dst.sql("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'types db'"),
        "DISABLED"
    );
    assert_eq!(
        dst.sql(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'types db'"
        ),
        "0"
    );
    // AUTO_INCREMENT counter kept, id 0 kept
    assert_eq!(dst.sql("SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'types db' AND TABLE_NAME = 'counters'"), "1001");
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM `types db`.nums WHERE id = 0"),
        "1"
    );
    // the 20 MiB row arrived byte for byte
    assert_eq!(
        dst.sql("SELECT LENGTH(lb), SHA2(lb, 256) FROM `types db`.strs WHERE id = 5"),
        src.sql("SELECT LENGTH(lb), SHA2(lb, 256) FROM `types db`.strs WHERE id = 5")
    );
    let status = migrate(&src.url(), &dst.url(), &state, &["status", "--json"]);
    assert_ok(&status);
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(s["snapshot"]["state"], "consistent");

    // the multi-row INSERT writer (used where LOAD DATA is off) gives the same bytes
    let dst2 = Server::target("types-dst2");
    let out = migrate(
        &src.url(),
        &dst2.url(),
        &dir.path().join("s2.sqlite"),
        &["snapshot", "--databases", DB, "--no-load-data"],
    );
    assert_ok(&out);
    assert_same(&src, &dst2, DB);
    drop(dst2);

    // every type again through the binlog
    src.script(BINLOG_CHANGES.as_bytes());
    follow_caught_up(&src.url(), &dst.url(), &state, DB);
    assert_same(&src, &dst, DB);
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM `types db`.strs WHERE id = 105 AND LENGTH(lb) = 20971520"),
        "1"
    );
    // the trigger did not fire on the target (rows carry the source's values)
    assert_eq!(
        dst.sql(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'types db'"
        ),
        "0"
    );
}

/// Columns in MariaDB 5.3's fractional temporal format (created before 10.1.2, or with
/// `mysql56_temporal_format=OFF`; SHOW CREATE TABLE marks them `/* mariadb-5.3 */`) are
/// logged under the old type codes with no metadata: the binlog does not say how many
/// digits, nor that the bytes are not the old integer format. Read as the old format, a
/// DATETIME(6) arrived as 0000-00-00 (same width, no error): every width and sign here, in a
/// key too, through the snapshot and the binlog.
#[test]
fn mariadb_5_3_temporal_columns_through_snapshot_and_binlog() {
    let src = Server::source("old-temporal-src");
    let dst = Server::target("old-temporal-dst");
    let mut cols = String::from("id INT PRIMARY KEY");
    for n in 0..=6 {
        cols +=
            &format!(", t{n} TIME({n}) NULL, d{n} DATETIME({n}) NULL, s{n} TIMESTAMP({n}) NULL");
    }
    src.sql("SET GLOBAL mysql56_temporal_format = OFF");
    src.sql(&format!(
        "CREATE DATABASE old53; CREATE TABLE old53.t ({cols}); \
         CREATE TABLE old53.k (t TIME(3) NOT NULL, d DATETIME(6) NOT NULL, v INT, PRIMARY KEY (d, t)); \
         CREATE TABLE old53.d (id INT PRIMARY KEY, d DATETIME(6))"
    ));
    src.sql("SET GLOBAL mysql56_temporal_format = ON");
    assert!(
        src.sql("SHOW CREATE TABLE old53.k")
            .contains("/* mariadb-5.3 */"),
        "the source table is not in the old format"
    );
    let rows = |first: u32| {
        let values = [
            (
                "-838:59:59.999999",
                "0000-00-00 00:00:00",
                "1970-01-01 00:00:01.000001",
            ),
            (
                "838:59:59.999999",
                "9999-12-31 23:59:59.999999",
                "2038-01-19 03:14:07.999999",
            ),
            (
                "-00:00:00.5",
                "2020-02-29 12:34:56.654321",
                "2021-06-07 08:09:10.123456",
            ),
            ("-12:34:56.789012", "1000-01-01 00:00:00.000001", "NULL"),
            ("00:00:00", "2000-01-01 00:00:00.1", "1999-12-31 23:59:59.9"),
            ("-00:00:01", "0001-01-01 00:00:00", "2001-09-09 01:46:40.5"),
        ];
        let quote = |v: &str| {
            if v == "NULL" {
                v.to_string()
            } else {
                format!("'{v}'")
            }
        };
        values
            .iter()
            .enumerate()
            .map(|(i, (t, d, s))| {
                let mut row = format!("({}", first + i as u32);
                for _ in 0..=6 {
                    row += &format!(", {}, {}, {}", quote(t), quote(d), quote(s));
                }
                row + ")"
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    src.sql(&format!(
        "SET time_zone = '+00:00'; INSERT INTO old53.t VALUES {}; \
         INSERT INTO old53.k VALUES ('-01:02:03.456', '2020-01-01 00:00:00.000001', 1), \
         ('01:02:03.456', '2020-01-01 00:00:00.000001', 2), ('00:00:00', '0000-00-00 00:00:00', 3)",
        rows(1)
    ));
    let dir = tempdir();
    let state = dir.path().join("state.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "old53"],
    ));
    assert_same_but_format(&src, &dst);

    src.sql(&format!(
        "SET time_zone = '+09:00'; INSERT INTO old53.t VALUES {}; \
         UPDATE old53.t SET id = id + 100 WHERE id IN (1, 2, 3); DELETE FROM old53.t WHERE id = 14; \
         UPDATE old53.t SET t3 = '-00:00:00.001', d6 = '2024-12-31 23:59:59.000001', s2 = '2030-01-01 00:00:00.01' WHERE id = 5; \
         UPDATE old53.k SET v = v + 10, t = ADDTIME(t, '00:00:00.001'); \
         INSERT INTO old53.d VALUES (1, '2021-06-07 08:09:10.654321')",
        rows(11)
    ));
    follow_caught_up(&src.url(), &dst.url(), &state, "old53");
    assert_same_but_format(&src, &dst);
    assert_eq!(
        dst.sql("SELECT d6 FROM old53.t WHERE id = 13"),
        "2020-02-29 12:34:56.654321"
    );
    // the silent case: read as the old format, this row was 0000-00-00 with exit 0
    assert_eq!(
        dst.sql("SELECT d FROM old53.d WHERE id = 1"),
        "2021-06-07 08:09:10.654321"
    );
    // the target has the current format; verify does not count the format as a difference
    assert!(!dst.sql("SHOW CREATE TABLE old53.k").contains("mariadb-5.3"));
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["verify", "--databases", "old53"],
    );
    assert_ok(&out);
}

/// Same rows, and the same schema once the old format's marker is taken out (the target's
/// tables are in the current format).
fn assert_same_but_format(src: &Server, dst: &Server) {
    assert_eq!(
        src.dump_data("old53"),
        dst.dump_data("old53"),
        "data of old53 differs"
    );
    assert_eq!(
        src.dump_schema("old53").replace(" /* mariadb-5.3 */", ""),
        dst.dump_schema("old53"),
        "schema of old53 differs"
    );
}

/// MariaDB's `COMPRESSED` columns (10.3+) are logged as types 140/141 with their stored
/// (compressed) bytes; mysql_common does not know those types. Every kind that can be
/// compressed, values below the threshold (stored as is), compressible and incompressible
/// ones, with and without the zlib wrapper, in a table without a key too (its changes find
/// the row by matching every column), through the snapshot and the binlog.
#[test]
fn compressed_columns_through_snapshot_and_binlog() {
    let src = Server::source("compressed-src");
    let dst = Server::target("compressed-dst");
    src.sql(
        "CREATE DATABASE cz; \
         CREATE TABLE cz.t (id INT PRIMARY KEY, v VARCHAR(1000) COMPRESSED, w VARCHAR(50) CHARACTER SET utf8mb4 COMPRESSED, \
           vb VARBINARY(300) COMPRESSED, tt TINYTEXT COMPRESSED, tx TEXT CHARACTER SET euckr COMPRESSED, \
           mt MEDIUMTEXT CHARACTER SET utf8mb4 COMPRESSED, lt LONGTEXT COMPRESSED, b BLOB COMPRESSED, lb LONGBLOB COMPRESSED, n INT); \
         CREATE TABLE cz.nokey (v VARCHAR(500) COMPRESSED, b BLOB COMPRESSED, n INT) ENGINE=InnoDB",
    );
    // id, then the same value expression for every column (cast to each column's type)
    let insert = |first: u32, session: &str| {
        let values = [
            "''",
            "'short'",
            "REPEAT('가나다 abc ', 30)",
            "(SELECT GROUP_CONCAT(SHA2(seq, 256) SEPARATOR '') FROM seq_1_to_3)",
            "NULL",
        ];
        let rows: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let text = |cs: &str| format!("CONVERT({v} USING {cs})");
                format!(
                    "({}, LEFT({v}, 1000), LEFT({}, 50), LEFT(CAST({v} AS BINARY), 300), LEFT({v}, 255), {}, {}, {v}, CAST({v} AS BINARY), CAST(REPEAT({v}, 100) AS BINARY), {i})",
                    first + i as u32,
                    text("utf8mb4"),
                    text("euckr"),
                    text("utf8mb4"),
                )
            })
            .collect();
        src.sql(&format!(
            "SET NAMES utf8mb4; USE cz; {session} INSERT INTO cz.t VALUES {}; \
             INSERT INTO cz.nokey SELECT v, b, n + {first} FROM cz.t WHERE id >= {first} AND id < {}",
            rows.join(", "),
            first + values.len() as u32
        ));
    };
    insert(1, "");
    let dir = tempdir();
    let state = dir.path().join("state.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "cz"],
    ));
    assert_same_multiset(&src, &dst, "cz");

    insert(11, "");
    insert(
        21,
        "SET SESSION column_compression_zlib_wrap = ON, column_compression_threshold = 0;",
    );
    insert(31, "SET SESSION column_compression_zlib_level = 1, column_compression_zlib_strategy = 'HUFFMAN_ONLY';");
    src.sql(
        "SET NAMES utf8mb4; UPDATE cz.t SET v = CONCAT(v, REPEAT('x', 200)), b = REVERSE(b) WHERE id IN (2, 3, 13); \
         DELETE FROM cz.t WHERE id IN (4, 24); \
         UPDATE cz.nokey SET n = n + 1000 WHERE n IN (2, 13, 23, 33); DELETE FROM cz.nokey WHERE v = 'short'",
    );
    follow_caught_up(&src.url(), &dst.url(), &state, "cz");
    assert_same_multiset(&src, &dst, "cz");
    assert_eq!(
        dst.sql("SELECT COUNT(*), SUM(LENGTH(lb)) FROM cz.t"),
        src.sql("SELECT COUNT(*), SUM(LENGTH(lb)) FROM cz.t")
    );
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["verify", "--databases", "cz"],
    );
    assert_ok(&out);
}
