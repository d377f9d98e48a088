//! Cases where the target used to end up different from the source with exit 0 (issue 6),
//! each against real servers: statement classification, the DDL session context,
//! statement-format changes, XA and INCIDENT events, tables without a key, foreign-key
//! cascades (two levels, and during the snapshot's catch-up), every key type, events, and
//! the small fixes found by reading.

mod support;
use std::process::Stdio;
use std::time::Duration;
use support::*;

fn snapshot(src: &Server, dst: &Server, state: &std::path::Path, extra: &[&str]) {
    let mut args = vec!["snapshot"];
    args.extend_from_slice(extra);
    assert_ok(&migrate(&src.url(), &dst.url(), state, &args));
}

fn tables_of(s: &Server, db: &str) -> String {
    s.sql(&format!(
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' ORDER BY TABLE_NAME"
    ))
}

/// Item 1: TRUNCATE without TABLE, savepoints, ROLLBACK of a mixed transaction, DROP and
/// RENAME across the selection, modifiers and comments; a RENAME into the selection stops.
#[test]
fn statements_are_classified_by_their_tokens() {
    let src = Server::source("cls-src");
    let dst = Server::target("cls-dst");
    src.sql(
        "CREATE DATABASE app; CREATE DATABASE other; USE app;
         CREATE TABLE a (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;
         CREATE TABLE i (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;
         CREATE TABLE m (id INT PRIMARY KEY, v INT) ENGINE=MyISAM;
         CREATE TABLE d1 (id INT PRIMARY KEY); CREATE TABLE other.d2 (id INT PRIMARY KEY);
         CREATE TABLE mv (id INT PRIMARY KEY);
         CREATE TABLE ar (id INT PRIMARY KEY, v INT) ENGINE=Aria;
         INSERT INTO a VALUES (1, 1), (2, 2); INSERT INTO d1 VALUES (1); INSERT INTO mv VALUES (1);",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &["--databases", "app"]);
    src.sql(
        "USE app;
         TRUNCATE a;
         INSERT INTO a VALUES (3, 3), (4, 4);
         /* leading comment */ TRUNCATE /* inside */ TABLE `a`;
         INSERT INTO a VALUES (5, 5);
         BEGIN; INSERT INTO i VALUES (1, 1); INSERT INTO m VALUES (1, 1); SAVEPOINT s1;
           INSERT INTO i VALUES (2, 2); INSERT INTO m VALUES (2, 2); ROLLBACK TO SAVEPOINT s1;
           INSERT INTO i VALUES (3, 3); COMMIT;
         BEGIN; INSERT INTO i VALUES (10, 1); SAVEPOINT s2; UPDATE i SET v = 99 WHERE id = 1;
           ROLLBACK TO s2; RELEASE SAVEPOINT s2; COMMIT;
         CREATE TRIGGER tm AFTER INSERT ON i FOR EACH ROW INSERT INTO m VALUES (NEW.id + 100, 0);
         BEGIN; INSERT INTO i VALUES (20, 1); ROLLBACK;
         BEGIN; INSERT INTO m VALUES (30, 1); INSERT INTO i VALUES (31, 1); SAVEPOINT s3;
           INSERT INTO i VALUES (32, 1); ROLLBACK TO s3; COMMIT;
         DROP TRIGGER tm;
         INSERT INTO ar VALUES (1, 1);
         BEGIN; INSERT INTO i VALUES (50, 1); SAVEPOINT s4; UPDATE ar SET v = 2;
           INSERT INTO i VALUES (51, 1); ROLLBACK TO s4; COMMIT;
         INSERT INTO ar VALUES (2, 2);
         BEGIN; INSERT INTO i VALUES (60, 1); UPDATE ar SET v = 3 WHERE id = 2; ROLLBACK;
         DROP TABLE d1, other.d2;
         RENAME TABLE mv TO other.mv;
         ALTER ONLINE IGNORE TABLE i ADD COLUMN w INT NOT NULL DEFAULT 5;
         CREATE OR REPLACE TABLE n (id INT PRIMARY KEY); INSERT INTO n VALUES (1);
         CREATE OR REPLACE ALGORITHM=MERGE DEFINER=CURRENT_USER SQL SECURITY INVOKER VIEW vi AS SELECT id FROM i;
         INSERT INTO i VALUES (40, 4, 4);",
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "app");
    assert_eq!(tables_of(&src, "app"), tables_of(&dst, "app"));
    assert!(dst.try_sql("USE other").is_err(), "`other` is not migrated");
    // moving a table the target never received into the selection stops with its name
    src.sql("CREATE TABLE other.x (id INT PRIMARY KEY); INSERT INTO other.x VALUES (1); RENAME TABLE other.x TO app.x;");
    let err = follow_fails(&src.url(), &dst.url(), &state, "app");
    assert!(
        err.contains("other.x") && err.contains("not migrated"),
        "{err}"
    );
}

/// Item 2: DDL replayed with the source session's time zone, timestamp, sql_mode, character
/// sets, collation_server and auto-increment settings.
#[test]
fn ddl_runs_in_the_source_session_context() {
    let src = Server::source("ctx-src");
    let dst = Server::target("ctx-dst");
    src.sql(
        "CREATE DATABASE ctx; USE ctx;
         CREATE TABLE t (id INT PRIMARY KEY, a VARCHAR(10), b VARCHAR(10)) CHARACTER SET utf8mb4;
         INSERT INTO t VALUES (1, 'x', 'y'), (2, 'p', 'q');
         CREATE TABLE u (v INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO u VALUES (1), (2), (3);",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &[]);
    // a default written by an euckr client: '한글' in euckr bytes
    let mut script = b"SET NAMES euckr; USE ctx; ALTER TABLE t ADD k VARCHAR(10) CHARACTER SET utf8mb4 DEFAULT '".to_vec();
    script.extend_from_slice(&[0xC7, 0xD1, 0xB1, 0xDB]);
    script.extend_from_slice(b"';\n");
    src.script(&script);
    src.sql(
        "USE ctx; SET time_zone = '+09:00'; SET timestamp = 1700000000;
         ALTER TABLE t ADD c DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, ADD ts TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP;
         SET timestamp = DEFAULT;
         SET sql_mode = 'PIPES_AS_CONCAT';
         ALTER TABLE t ADD g VARCHAR(30) AS (a || b) STORED;
         CREATE VIEW v AS SELECT id, a || b AS ab FROM t;
         CREATE PROCEDURE p() SELECT 'a' || 'b';
         SET sql_mode = '';
         SET collation_server = euckr_korean_ci; CREATE DATABASE ctx2; SET collation_server = DEFAULT;
         SET auto_increment_increment = 5, auto_increment_offset = 2;
         ALTER TABLE u ADD id INT NOT NULL AUTO_INCREMENT UNIQUE;
         SET auto_increment_increment = 1, auto_increment_offset = 1;
         INSERT INTO t (id, a, b) VALUES (3, 'm', 'n');",
    );
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    ));
    assert_same(&src, &dst, "ctx");
    for q in [
        "SHOW CREATE VIEW ctx.v",
        "SHOW CREATE DATABASE ctx2",
        "SELECT SQL_MODE, ROUTINE_DEFINITION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'ctx'",
        "SELECT HEX(k), c, UNIX_TIMESTAMP(ts), g FROM ctx.t ORDER BY id",
        "SELECT id FROM ctx.u ORDER BY id",
    ] {
        assert_eq!(src.sql(q), dst.sql(q), "{q}");
    }
    assert_eq!(
        src.sql("SELECT HEX(k) FROM ctx.t WHERE id = 1"),
        "ED959CEAB880"
    );
}

/// Item 3: a statement-format change, an XA transaction and an INCIDENT event on migrated
/// tables stop follow with an error that names them; a statement-format change elsewhere
/// does not.
#[test]
fn statement_format_xa_and_incident_stop() {
    let mut src = Server::source("sf-src");
    let dst = Server::target("sf-dst");
    src.sql(
        "CREATE DATABASE s1; CREATE TABLE s1.t (id INT PRIMARY KEY, v INT); INSERT INTO s1.t VALUES (1, 1);
         CREATE DATABASE s2; CREATE TABLE s2.t (id INT PRIMARY KEY, v INT); INSERT INTO s2.t VALUES (1, 1);
         CREATE DATABASE s3; CREATE TABLE s3.t (id INT PRIMARY KEY, v INT); INSERT INTO s3.t VALUES (1, 1);",
    );
    let dir = tempdir();
    let (st1, st2, st3) = (
        dir.path().join("1.sqlite"),
        dir.path().join("2.sqlite"),
        dir.path().join("3.sqlite"),
    );
    // check explains that a session can override binlog_format
    let out = migrate(
        &src.url(),
        &dst.url(),
        &st1,
        &["check", "--databases", "s1", "--json"],
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(j["findings"]
        .as_array()
        .expect("array")
        .iter()
        .any(|f| f["subject"] == "binlog_format"
            && f["message"].as_str().unwrap_or("").contains("session")));
    snapshot(&src, &dst, &st1, &["--databases", "s1"]);
    src.sql("SET SESSION binlog_format = 'STATEMENT'; UPDATE s1.t SET v = v + 1;");
    let err = follow_fails(&src.url(), &dst.url(), &st1, "s1");
    assert!(
        err.contains("as a statement") && err.contains("UPDATE"),
        "{err}"
    );

    snapshot(&src, &dst, &st2, &["--databases", "s2"]);
    src.sql(
        "SET SESSION binlog_format = 'STATEMENT'; UPDATE s1.t SET v = v + 1; SET SESSION binlog_format = 'ROW';
         XA START 'x1'; INSERT INTO s2.t VALUES (2, 2); XA END 'x1'; XA PREPARE 'x1'; XA COMMIT 'x1';",
    );
    let err = follow_fails(&src.url(), &dst.url(), &st2, "s2");
    assert!(err.contains("XA"), "{err}");

    snapshot(&src, &dst, &st3, &["--databases", "s3"]);
    src.sql("INSERT INTO s3.t VALUES (2, 2);");
    let file = src
        .sql("SHOW MASTER STATUS")
        .split('\t')
        .next()
        .unwrap_or_default()
        .to_string();
    src.stop();
    append_incident(&src.dir.join("data").join(&file));
    src.restart();
    src.sql("INSERT INTO s3.t VALUES (3, 3);");
    let err = follow_fails(&src.url(), &dst.url(), &st3, "s3");
    assert!(err.contains("INCIDENT"), "{err}");
}

/// Append an INCIDENT (LOST_EVENTS) event to a binlog file of a stopped server.
fn append_incident(path: &std::path::Path) {
    use std::io::Write;
    let len = std::fs::metadata(path).expect("binlog").len() as u32;
    let msg = b"test: lost events";
    let mut body = Vec::new();
    body.extend_from_slice(&1u16.to_le_bytes()); // LOST_EVENTS
    body.push(msg.len() as u8);
    body.extend_from_slice(msg);
    let size = 19 + body.len() as u32 + 4;
    let mut ev = Vec::new();
    ev.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    ev.push(26); // INCIDENT_EVENT
    ev.extend_from_slice(&1u32.to_le_bytes());
    ev.extend_from_slice(&size.to_le_bytes());
    ev.extend_from_slice(&(len + size).to_le_bytes());
    ev.extend_from_slice(&0u16.to_le_bytes());
    ev.extend_from_slice(&body);
    let crc = crc32(&ev);
    ev.extend_from_slice(&crc.to_le_bytes());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open binlog");
    f.write_all(&ev).expect("append");
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Item 4: tables without a key are copied in one snapshot and followed without collapsing
/// rows: duplicates, byte-exact matching ('a' vs 'A'), NULLs, FLOAT; CREATE TABLE ... SELECT
/// and a plain CREATE TABLE without a key during follow.
#[test]
fn tables_without_a_key_keep_every_row() {
    let src = Server::source("kl-src");
    let dst = Server::target("kl-dst");
    src.sql(
        "CREATE DATABASE kl; USE kl;
         CREATE TABLE log (msg VARCHAR(20) COLLATE utf8mb4_general_ci, n INT, f FLOAT, d DECIMAL(10,2)) ENGINE=InnoDB;
         INSERT INTO log VALUES ('a', 1, 1.1, 1.00), ('a', 1, 1.1, 1.00), ('A', 1, 1.1, 1.00), (NULL, NULL, NULL, NULL), ('b', 2, 0.3, 2.50);
         CREATE TABLE bulk (a INT, b VARCHAR(20)) ENGINE=InnoDB;
         INSERT INTO bulk SELECT seq % 100, 'x' FROM seq_1_to_30000;",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    // small chunks: the keyless table is streamed in many chunks of one snapshot
    snapshot(
        &src,
        &dst,
        &state,
        &["--databases", "kl", "--chunk-bytes", "65536"],
    );
    assert_same_multiset(&src, &dst, "kl");
    src.sql(
        "USE kl;
         INSERT INTO log VALUES ('a', 1, 1.1, 1.00);
         DELETE FROM log WHERE BINARY msg = 'a' LIMIT 1;
         UPDATE log SET n = 5 WHERE BINARY msg = 'A';
         DELETE FROM log WHERE msg IS NULL;
         UPDATE log SET f = 2.2 WHERE msg = 'b';
         CREATE TABLE ctas AS SELECT msg, n FROM log;
         CREATE TABLE plain (x INT, y VARCHAR(5));
         INSERT INTO plain VALUES (1, 'p'), (1, 'p'), (2, 'q');
         DELETE FROM plain WHERE x = 1 LIMIT 1;
         UPDATE plain SET y = 'r' WHERE x = 2;
         UPDATE ctas SET n = 7 WHERE BINARY msg = 'b';
         DELETE FROM bulk WHERE a = 5 LIMIT 3; UPDATE bulk SET b = 'y' WHERE a = 6 LIMIT 2;",
    );
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--databases", "kl"],
    ));
    assert_same_multiset(&src, &dst, "kl");
    assert_eq!(dst.sql("SELECT COUNT(*) FROM kl.log"), "4");
    assert_eq!(dst.sql("SELECT COUNT(*) FROM kl.plain"), "2");
}

/// Item 5: a two-level ON UPDATE CASCADE and a three-level ON DELETE CASCADE / SET NULL.
#[test]
fn cascades_recurse() {
    let src = Server::source("cr-src");
    let dst = Server::target("cr-dst");
    src.sql(
        "CREATE DATABASE fk; USE fk;
         CREATE TABLE a (id INT PRIMARY KEY, code INT NOT NULL, UNIQUE KEY (code));
         CREATE TABLE b (id INT PRIMARY KEY, acode INT, KEY (acode),
           FOREIGN KEY (acode) REFERENCES a (code) ON UPDATE CASCADE ON DELETE CASCADE);
         CREATE TABLE c (id INT PRIMARY KEY, bacode INT, KEY (bacode),
           FOREIGN KEY (bacode) REFERENCES b (acode) ON UPDATE CASCADE ON DELETE CASCADE);
         CREATE TABLE d (id INT PRIMARY KEY, cid INT, KEY (cid),
           FOREIGN KEY (cid) REFERENCES c (id) ON DELETE SET NULL);
         INSERT INTO a VALUES (1, 10), (2, 20), (3, 30);
         INSERT INTO b VALUES (1, 10), (2, 10), (3, 20), (4, 30);
         INSERT INTO c VALUES (1, 10), (2, 20), (3, 30);
         INSERT INTO d VALUES (1, 1), (2, 2), (3, 3);",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &["--databases", "fk"]);
    src.sql(
        "USE fk;
         UPDATE a SET code = 100 WHERE id = 1;
         DELETE FROM a WHERE id = 3;
         UPDATE a SET code = 200 WHERE id = 2;",
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "fk");
    assert_eq!(dst.sql("SELECT bacode FROM fk.c WHERE id = 1"), "100");
    assert_eq!(dst.sql("SELECT cid IS NULL FROM fk.d WHERE id = 3"), "1");

    // a session with foreign_key_checks=0: InnoDB runs no CASCADE / SET NULL for its changes
    // (the rows event says so), and neither may the applier; a cascading change after it in
    // the same transaction, with checks on again, cascades
    src.sql(
        "USE fk; INSERT INTO a VALUES (4, 40); INSERT INTO b VALUES (5, 40); INSERT INTO c VALUES (4, 40);
         INSERT INTO d VALUES (4, 4);
         SET foreign_key_checks = 0;
         UPDATE a SET code = 400 WHERE id = 4;
         DELETE FROM c WHERE id = 4;
         BEGIN; UPDATE a SET code = 2000 WHERE id = 2; SET foreign_key_checks = 1;
           UPDATE a SET code = 1000 WHERE id = 1; COMMIT;",
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "fk");
    assert_eq!(dst.sql("SELECT acode FROM fk.b WHERE id = 5"), "40");
    assert_eq!(dst.sql("SELECT cid FROM fk.d WHERE id = 4"), "4");
    assert_eq!(dst.sql("SELECT acode FROM fk.b WHERE id = 1"), "1000");
}

/// Item 5: parent key changes X->Y, Z->X and a parent delete while the snapshot copies the
/// parent, before it reads the child: the catch-up must not apply those cascades again to
/// child rows that already carry them.
#[test]
fn cascades_during_the_copy_are_not_applied_twice() {
    let src = Server::source("cc-src");
    let dst = Server::target("cc-dst");
    src.sql(
        "CREATE DATABASE cc; USE cc;
         CREATE TABLE p (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL, pad CHAR(100) NOT NULL DEFAULT '', UNIQUE KEY (code));
         CREATE TABLE q (id INT PRIMARY KEY, pcode VARCHAR(10), KEY (pcode),
           FOREIGN KEY (pcode) REFERENCES p (code) ON UPDATE CASCADE ON DELETE CASCADE);
         INSERT INTO p (id, code) SELECT seq, CONCAT('c', seq) FROM seq_1_to_200000;
         INSERT INTO q VALUES (1, 'c1'), (2, 'c1'), (3, 'c2'), (4, 'c2'), (5, 'c3'), (6, 'c4');",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let mut snap = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "cc",
            "--threads",
            "1",
            "--chunk-rows",
            "500",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("snapshot");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        snap.try_wait().expect("wait").is_none(),
        "the snapshot finished before the parent changes"
    );
    src.sql(
        "USE cc;
         UPDATE p SET code = 'Y' WHERE code = 'c1';
         UPDATE p SET code = 'c1' WHERE code = 'c2';
         DELETE FROM p WHERE code = 'c3';
         UPDATE p SET code = 'c3' WHERE code = 'c4';",
    );
    let out = snap.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "cc");
    assert_eq!(
        dst.sql("SELECT GROUP_CONCAT(id, ':', pcode ORDER BY id) FROM cc.q"),
        "1:Y,2:Y,3:c1,4:c1,6:c3"
    );
}

/// Item 5: runs of consecutive parent deletes and key changes (batched by the applier) keep the
/// source's order: chains (X -> Y, then Y -> Z), a freed key taken again, deletes between, and
/// grandchildren that move with their parents.
#[test]
fn cascade_batches_keep_the_source_order() {
    let src = Server::source("cb-src");
    let dst = Server::target("cb-dst");
    src.sql(
        "CREATE DATABASE cb; USE cb;
         CREATE TABLE o (id BIGINT PRIMARY KEY, t INT);
         CREATE TABLE i (oid BIGINT NOT NULL, line INT NOT NULL, PRIMARY KEY (oid, line),
           FOREIGN KEY (oid) REFERENCES o (id) ON UPDATE CASCADE ON DELETE CASCADE);
         CREATE TABLE n (id INT PRIMARY KEY, oid BIGINT, line INT, KEY (oid, line),
           FOREIGN KEY (oid, line) REFERENCES i (oid, line) ON UPDATE CASCADE ON DELETE SET NULL);
         INSERT INTO o SELECT seq, seq FROM seq_1_to_400;
         INSERT INTO i SELECT o.id, l.seq FROM o JOIN seq_1_to_2 l;
         INSERT INTO n SELECT seq, 1 + seq % 400, 1 + seq % 2 FROM seq_1_to_600;",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &["--databases", "cb"]);
    let mut sql = String::from(
        "USE cb;
",
    );
    for k in 1..=100 {
        sql.push_str(&format!(
            "UPDATE o SET id = id + 1000 WHERE id = {k};
"
        ));
    }
    for k in 1..=50 {
        // chains onto the keys just taken
        sql.push_str(&format!(
            "UPDATE o SET id = id + 1000 WHERE id = {};
",
            k + 1000
        ));
    }
    for k in 101..=150 {
        sql.push_str(&format!(
            "DELETE FROM o WHERE id = {k};
"
        ));
    }
    for k in 151..=200 {
        // a key freed above taken again, then moved on
        sql.push_str(&format!(
            "UPDATE o SET id = {} WHERE id = {k};
",
            k - 50
        ));
        sql.push_str(&format!(
            "UPDATE o SET id = -id WHERE id = {};
",
            k - 50
        ));
    }
    sql.push_str(
        "UPDATE o SET id = id * 100000 WHERE id BETWEEN 201 AND 260;
",
    );
    src.sql(&sql);
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "cb");
}

/// Item 6: every key type round-trips through the literal the applier writes: update,
/// delete and key change of rows keyed by each type.
#[test]
fn every_key_type_updates_deletes_and_moves() {
    let src = Server::source("key-src");
    let dst = Server::target("key-dst");
    // (name, column type, three key values, a new key value)
    let kinds: &[(&str, &str, [&str; 3], &str)] = &[
        ("ti", "TINYINT", ["-128", "0", "127"], "5"),
        ("tiu", "TINYINT UNSIGNED", ["0", "1", "255"], "7"),
        ("mi", "MEDIUMINT", ["-8388608", "0", "8388607"], "9"),
        (
            "bi",
            "BIGINT",
            ["-9223372036854775808", "0", "9223372036854775807"],
            "1",
        ),
        (
            "biu",
            "BIGINT UNSIGNED",
            ["0", "1", "18446744073709551615"],
            "2",
        ),
        ("de", "DECIMAL(10,3)", ["-1.5", "0", "99.999"], "3.125"),
        ("fl", "FLOAT", ["1.1", "0.3", "3.4e38"], "-2.7"),
        (
            "fls",
            "FLOAT",
            ["1e-45", "-1.17549435e-38", "123456.7"],
            "0.1",
        ),
        ("do", "DOUBLE", ["0.1", "1e308", "-2.5"], "0.3"),
        ("bt", "BIT(8)", ["b'1'", "b'101'", "b'11111111'"], "b'10'"),
        ("yr", "YEAR", ["1901", "2000", "2155"], "1999"),
        (
            "da",
            "DATE",
            ["'2020-01-01'", "'0000-00-00'", "'9999-12-31'"],
            "'2021-02-03'",
        ),
        (
            "tm",
            "TIME(1)",
            ["'-838:59:59.0'", "'00:00:00.5'", "'838:59:59.0'"],
            "'-00:00:01.5'",
        ),
        (
            "dt",
            "DATETIME(6)",
            [
                "'2020-01-01 00:00:00.000001'",
                "'0000-00-00 00:00:00'",
                "'9999-12-31 23:59:59.999999'",
            ],
            "'2001-01-01 01:01:01.5'",
        ),
        (
            "ts",
            "TIMESTAMP(6)",
            [
                "'2020-01-01 09:00:00.5'",
                "'1970-01-01 09:00:01'",
                "'2038-01-19 12:14:07.999999'",
            ],
            "'2000-01-01 00:00:00'",
        ),
        (
            "ch",
            "CHAR(5) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
            ["'a'", "'B '", "'가'"],
            "'c'",
        ),
        (
            "ek",
            "VARCHAR(10) CHARACTER SET euckr",
            [
                "CONVERT('한' USING euckr)",
                "'x'",
                "CONVERT('글자' USING euckr)",
            ],
            "CONVERT('새' USING euckr)",
        ),
        (
            "l1",
            "VARCHAR(10) CHARACTER SET latin1",
            ["CONVERT('é' USING latin1)", "'x'", "'y'"],
            "CONVERT('ü' USING latin1)",
        ),
        ("vb", "VARBINARY(8)", ["x'00'", "x'00ff'", "''"], "x'ff00'"),
        (
            "bn",
            "BINARY(4)",
            ["x'01'", "x'0201'", "x'00000000'"],
            "x'02'",
        ),
        ("en", "ENUM('x','y','z')", ["'x'", "'y'", "'z'"], "''"),
        ("se", "SET('a','b','c')", ["''", "'a,c'", "'a,b,c'"], "'b'"),
        ("i6", "INET6", ["'::1'", "'::'", "'fe80::1'"], "'10.0.0.1'"),
        (
            "uu",
            "UUID",
            [
                "'00000000-0000-0000-0000-000000000000'",
                "'123e4567-e89b-12d3-a456-426614174000'",
                "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            ],
            "'00000000-0000-0000-0000-000000000001'",
        ),
    ];
    let mut setup = String::from("CREATE DATABASE keyed; USE keyed; SET time_zone = '+09:00';\n");
    for (name, ty, vals, _) in kinds {
        setup.push_str(&format!(
            "CREATE TABLE k_{name} (k {ty} NOT NULL PRIMARY KEY, v INT NOT NULL);\n"
        ));
        for (n, v) in vals.iter().enumerate() {
            setup.push_str(&format!("INSERT INTO k_{name} VALUES ({v}, {n});\n"));
        }
    }
    setup.push_str("CREATE TABLE k_comp (f FLOAT NOT NULL, s VARCHAR(5) NOT NULL, v INT NOT NULL, PRIMARY KEY (f, s));\n");
    setup.push_str("INSERT INTO k_comp VALUES (1.1, 'a', 0), (1.1, 'b', 1), (0.3, 'a', 2);\n");
    src.sql(&setup);
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &["--databases", "keyed"]);
    assert_same(&src, &dst, "keyed");
    let mut changes = String::from("USE keyed; SET time_zone = '+09:00';\n");
    for (name, _, vals, new) in kinds {
        changes.push_str(&format!(
            "UPDATE k_{name} SET v = v + 10 WHERE k = {};\nDELETE FROM k_{name} WHERE k = {};\nUPDATE k_{name} SET k = {new} WHERE k = {};\n",
            vals[0], vals[1], vals[2]
        ));
    }
    changes.push_str("UPDATE k_comp SET v = 9 WHERE f = CAST(1.1 AS FLOAT) AND s = 'a';\nDELETE FROM k_comp WHERE f = CAST(1.1 AS FLOAT) AND s = 'b';\nUPDATE k_comp SET f = 2.5 WHERE s = 'a' AND f < 1;\n");
    src.sql(&changes);
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "keyed");
}

/// Item 7: events created or enabled during follow stay DISABLED on the target (an event
/// scheduler runs there), and the status the source asked for is recorded for cutover.
#[test]
fn events_stay_disabled_until_cutover() {
    let src = Server::source("ev-src");
    let dst = Server::start("ev-dst", &["--log-bin=mysql-bin", "--event-scheduler=ON"]);
    src.sql(
        "CREATE DATABASE ev; USE ev;
         CREATE TABLE hits (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME);
         CREATE EVENT old ON SCHEDULE EVERY 1 SECOND DO INSERT INTO hits (at) VALUES (NOW());",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &["--databases", "ev"]);
    src.sql(
        "USE ev;
         CREATE EVENT tick ON SCHEDULE EVERY 1 SECOND ENABLE DO INSERT INTO hits (at) VALUES (NOW());
         ALTER EVENT old ENABLE;
         CREATE EVENT off ON SCHEDULE EVERY 1 DAY DISABLE DO SELECT 1;
         CREATE EVENT gone ON SCHEDULE EVERY 1 DAY DO SELECT 1; DROP EVENT gone;
         CREATE EVENT moved ON SCHEDULE EVERY 1 DAY DO SELECT 1; ALTER EVENT moved RENAME TO moved2;",
    );
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--databases", "ev"],
    ));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM ev.hits"),
        "0",
        "an event ran on the target"
    );
    assert_eq!(
        dst.sql("SELECT GROUP_CONCAT(EVENT_NAME, ':', STATUS ORDER BY EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'ev'"),
        "moved2:DISABLED,off:DISABLED,old:DISABLED,tick:DISABLED"
    );
    let status = migrate(&src.url(), &dst.url(), &state, &["status", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    let events = j["events_disabled_until_cutover"].to_string();
    assert!(
        events.contains("\"name\":\"tick\",\"source_status\":\"ENABLED\""),
        "{events}"
    );
    assert!(
        events.contains("\"name\":\"old\",\"source_status\":\"ENABLED\""),
        "{events}"
    );
    assert!(
        events.contains("\"name\":\"off\",\"source_status\":\"DISABLED\""),
        "{events}"
    );
}

/// Item 12: a DDL whose default database is not on the target runs without one (it used to
/// run in whatever database the applier had used before); a stored --exclude that cannot be
/// read stops follow instead of replicating excluded tables.
#[test]
fn ddl_default_database_and_stored_exclude() {
    let src = Server::source("sm-src");
    let dst = Server::target("sm-dst");
    src.sql(
        "CREATE DATABASE app; CREATE DATABASE elsewhere;
         CREATE TABLE app.t (id INT PRIMARY KEY); CREATE TABLE elsewhere.t (id INT PRIMARY KEY, x INT);
         CREATE TABLE app.skip_me (id INT PRIMARY KEY);",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(
        &src,
        &dst,
        &state,
        &["--databases", "app", "--exclude", "app.skip_*"],
    );
    // a state file whose stored exclude filter is unreadable
    let state2 = dir.path().join("s2.sqlite");
    let dst2 = Server::target("sm-dst2");
    snapshot(
        &src,
        &dst2,
        &state2,
        &["--databases", "app", "--exclude", "app.skip_*"],
    );
    {
        let c = rusqlite::Connection::open(&state2).expect("open state");
        c.execute(
            "UPDATE meta SET value = '[not json' WHERE key = 'filter.exclude'",
            [],
        )
        .expect("corrupt");
    }
    let out = migrate(
        &src.url(),
        &dst2.url(),
        &state2,
        &["follow", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("exclude"), "{}", stderr(&out));

    // the view's unqualified `t` is elsewhere.t, which is not migrated: follow must stop, not
    // create the view over app.t
    src.sql(
        "USE app; ALTER TABLE t ADD v INT; USE elsewhere; CREATE VIEW app.v AS SELECT x FROM t;",
    );
    let err = follow_fails(&src.url(), &dst.url(), &state, "app");
    assert!(err.contains("app.v") || err.contains("VIEW"), "{err}");
    assert!(dst.try_sql("SELECT * FROM app.v").is_err());
}

/// A parent change that the parent's copy already holds (it was read after the change) but that
/// cascaded into a child table copied *before* it: the child's copy still has the rows the
/// cascade deleted or moved. The catch-up must perform the cascade alone (found by the demo:
/// order_items rows left behind by orders deleted during the snapshot).
#[test]
fn cascades_into_a_child_copied_before_its_parent() {
    let src = Server::source("cb-src");
    let dst = Server::target("cb-dst");
    // tables are copied in name order: the child `a_items` (read in one snapshot) first
    src.sql(
        "CREATE DATABASE cb; USE cb;
         CREATE TABLE b_orders (id INT PRIMARY KEY, note CHAR(50) NOT NULL DEFAULT '') ENGINE=InnoDB;
         CREATE TABLE a_items (id INT PRIMARY KEY, order_id INT NOT NULL, pad CHAR(100) NOT NULL DEFAULT '', KEY (order_id),
           FOREIGN KEY (order_id) REFERENCES b_orders (id) ON DELETE CASCADE ON UPDATE CASCADE) ENGINE=InnoDB;
         INSERT INTO b_orders (id) SELECT seq FROM seq_1_to_3000;
         INSERT INTO a_items (id, order_id) SELECT seq, 1 + seq % 3000 FROM seq_1_to_400000;",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let snap = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "cb", "--threads", "1"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("snapshot");
    // while the child is being read (its first rows are on the target, so its snapshot is
    // open; the parent is read after it): parents deleted and re-keyed
    let t = std::time::Instant::now();
    while dst
        .try_sql("SELECT COUNT(*) > 0 FROM cb.a_items")
        .ok()
        .as_deref()
        != Some("1")
    {
        assert!(
            t.elapsed().as_secs() < 30,
            "the child's copy was never seen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    src.sql(
        "USE cb; DELETE FROM b_orders WHERE id IN (1, 2);
         UPDATE b_orders SET id = 90003 WHERE id = 3;",
    );
    let out = snap.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "cb");
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM cb.a_items WHERE order_id IN (1, 2, 3)"),
        "0"
    );
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM cb.a_items WHERE order_id = 90003"),
        src.sql("SELECT COUNT(*) FROM cb.a_items WHERE order_id = 90003")
    );
}

/// A table with AUTO_INCREMENT copied while rows are inserted: SHOW CREATE TABLE's
/// AUTO_INCREMENT=N moves with every insert, which is not a definition change (each chunk was
/// read again, with backoff, for as long as the inserts went on: found by the demo).
#[test]
fn inserts_during_the_copy_do_not_make_chunks_read_again() {
    let src = Server::source("ai-src");
    let dst = Server::target("ai-dst");
    src.sql(
        "CREATE DATABASE ai; USE ai;
         CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, v CHAR(100) NOT NULL DEFAULT '') ENGINE=InnoDB;
         INSERT INTO t (v) SELECT 'x' FROM seq_1_to_100000;",
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (port, stop) = (src.port, stop.clone());
        std::thread::spawn(move || {
            let s = Server::attach("ai-writer", port);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = s.try_sql("INSERT INTO ai.t (v) VALUES ('new')");
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "ai",
            "--chunk-rows",
            "2000",
            "--threads",
            "2",
        ],
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = writer.join();
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("definition changed"), "{log}");
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "ai");
}

/// Views, routines and events copied by the snapshot keep the creating session's character
/// set and connection collation: created in the target's utf8mb4 session they used to get
/// `utf8mb4` / `utf8mb4_general_ci`, so an euckr view's literal `'사과'` had another collation
/// and `SHOW CREATE VIEW` differed (found by the soak). Each is created from its text in its
/// own character set (read so from the source), in a session with its own settings.
#[test]
fn objects_keep_their_session_character_set() {
    let src = Server::source("ocs-src");
    let dst = Server::target("ocs-dst");
    // euckr bytes of '사과'
    let apple = [0xBBu8, 0xE7, 0xB0, 0xFA];
    let mut script = b"CREATE DATABASE k CHARACTER SET utf8mb4; USE k; \
        CREATE TABLE items (id INT PRIMARY KEY, note VARCHAR(20)) ENGINE=InnoDB; \
        INSERT INTO items VALUES (1, 'a'); SET NAMES euckr; "
        .to_vec();
    let lit = |s: &mut Vec<u8>| {
        s.push(b'\'');
        s.extend_from_slice(&apple);
        s.push(b'\'');
    };
    script.extend_from_slice(b"CREATE VIEW v_k AS SELECT id, ");
    lit(&mut script);
    script.extend_from_slice(
        b" AS label FROM items; CREATE FUNCTION f_k() RETURNS VARCHAR(10) DETERMINISTIC RETURN ",
    );
    lit(&mut script);
    script.extend_from_slice(
        b"; CREATE EVENT e_k ON SCHEDULE EVERY 1 DAY DO UPDATE items SET note = ",
    );
    lit(&mut script);
    script.extend_from_slice(
        b" WHERE id = 0; SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci; \
          CREATE VIEW v_u AS SELECT id, '\xEA\xB0\x80' AS label FROM items; \
          CREATE VIEW `\xEB\xB7\xB0` AS SELECT id FROM items; \
          SET NAMES euckr; CREATE VIEW v_a AS SELECT id FROM `\xBA\xE4`;",
    );
    src.script(&script);
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &["--databases", "k"]);
    for show in [
        "SHOW CREATE VIEW k.v_k",
        "SHOW CREATE VIEW k.v_u",
        // v_a is created after the Korean-named view it reads (listed after it, in euckr)
        "SHOW CREATE VIEW k.v_a",
        "SHOW CREATE VIEW k.`뷰`",
        "SHOW CREATE FUNCTION k.f_k",
        "SELECT HEX(label), COLLATION(label) FROM k.v_k",
        "SELECT HEX(label), COLLATION(label) FROM k.v_u",
        "SELECT HEX(k.f_k()), COLLATION(k.f_k())",
        "SELECT EVENT_DEFINITION, CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.EVENTS WHERE EVENT_NAME = 'e_k'",
    ] {
        assert_eq!(src.sql(show), dst.sql(show), "{show}");
    }
    assert!(
        dst.sql("SHOW CREATE VIEW k.v_k")
            .contains("euckr_korean_ci"),
        "{}",
        dst.sql("SHOW CREATE VIEW k.v_k")
    );
}

/// Every migrate session sets its own sql_mode (`db::SESSION_SQL_MODE`). A global one used
/// to reach its statements: with ANSI_QUOTES the snapshot's `CREATE DATABASE "gm"` (as SHOW
/// CREATE DATABASE printed it) failed on the target; NO_TABLE_OPTIONS / NO_KEY_OPTIONS /
/// NO_FIELD_OPTIONS strip SHOW CREATE TABLE (a table created without its engine, charset,
/// AUTO_INCREMENT, comments), NO_BACKSLASH_ESCAPES and EMPTY_STRING_IS_NULL change string
/// literals, PAD_CHAR_TO_FULL_LENGTH what a CHAR reads as; a global autocommit=0 or
/// max_statement_time reached them too, a global sql_select_limit cut results short without
/// an error (the database list, a table without a key), max_join_size and sql_safe_updates
/// refused reads and row-matched changes, a DDL's `CHARACTER SET utf8` from a source whose
/// old_mode makes it utf8mb4 became utf8mb3, and a target's explicit_defaults_for_timestamp=OFF
/// gave a `TIMESTAMP NOT NULL` column created from SHOW CREATE TABLE text a DEFAULT and ON
/// UPDATE current_timestamp(). Here both servers run such a global mode (the target strict
/// as well), autocommit=0 and a 1 ms max_statement_time, through snapshot (one row per chunk, so string
/// keys '' and 'a\b' are chunk bounds), follow (rows and a DDL written in that mode) and
/// verify.
#[test]
fn a_servers_global_settings_change_nothing() {
    let src = Server::source("gmode-src");
    let dst = Server::target("gmode-dst");
    src.sql(
        "SET NAMES utf8mb4; CREATE DATABASE gm DEFAULT CHARSET euckr; \
         CREATE TABLE gm.t (k VARCHAR(20) COLLATE euckr_bin NOT NULL PRIMARY KEY, c CHAR(10), \
           v VARCHAR(10) DEFAULT 'x' COMMENT 'column', n INT UNSIGNED AUTO_INCREMENT UNIQUE, \
           d DATE DEFAULT '0000-00-00', KEY ic (c) COMMENT 'index') \
           ENGINE=InnoDB ROW_FORMAT=DYNAMIC COMMENT='table' AUTO_INCREMENT=100; \
         SET SESSION explicit_defaults_for_timestamp = 1; \
         CREATE TABLE gm.ts (id INT PRIMARY KEY, a TIMESTAMP NOT NULL, b TIMESTAMP NULL) ENGINE=InnoDB; \
         INSERT INTO gm.ts VALUES (1, '2020-01-01 00:00:00', NULL); \
         CREATE TABLE gm.p (k CHAR(5) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL PRIMARY KEY, v INT) ENGINE=Aria; \
         INSERT INTO gm.t (k, c, v) VALUES ('', 'a', 'b'), ('a\\\\b', 'c ', ''), ('z', NULL, NULL), ('b', 'x', 'y'); \
         INSERT INTO gm.p VALUES ('', 1), ('a', 2), ('a b', 3), ('b', 4); \
         CREATE TABLE gm.nk (v INT, w VARCHAR(5)) ENGINE=InnoDB; \
         INSERT INTO gm.nk VALUES (1, 'a'), (2, ''), (3, NULL), (3, NULL), (5, 'e')",
    );
    let odd = "NO_TABLE_OPTIONS,NO_KEY_OPTIONS,NO_FIELD_OPTIONS,PAD_CHAR_TO_FULL_LENGTH,\
               NO_BACKSLASH_ESCAPES,EMPTY_STRING_IS_NULL,ANSI_QUOTES";
    // and autocommit off, statements limited to 1 ms, results to 2 rows, joins to 3 rows,
    // updates to keyed ones (the test's own sessions opt out)
    let limits = "autocommit = 0, max_statement_time = 0.001, sql_select_limit = 2, \
                  max_join_size = 3, sql_safe_updates = 1";
    // and on the source, `utf8` means utf8mb4 (old_mode without UTF8_IS_UTF8MB3)
    src.sql(&format!(
        "SET GLOBAL sql_mode = '{odd}', {limits}, old_mode = ''"
    ));
    dst.sql(&format!(
        "SET GLOBAL sql_mode = '{odd},STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE', {limits}, \
         explicit_defaults_for_timestamp = 0"
    ));
    let dir = tempdir();
    let state = dir.path().join("state.sqlite");
    snapshot(
        &src,
        &dst,
        &state,
        &["--databases", "gm", "--chunk-rows", "1"],
    );
    // written in the odd mode: "..." is a name, '\' is a plain character, '' is NULL
    src.sql(
        "SET SESSION autocommit = 1, max_statement_time = 0, sql_safe_updates = 0; \
         UPDATE gm.nk SET v = v + 100 WHERE v = 3 LIMIT 1; DELETE FROM gm.nk WHERE v = 2; \
         INSERT INTO \"gm\".\"t\" (k, c, v) VALUES ('c\\d', 'w ', 'e'); \
         UPDATE gm.t SET v = 'q' WHERE k = 'a\\b'; DELETE FROM gm.t WHERE k = 'z'; \
         ALTER TABLE \"gm\".\"t\" ADD COLUMN \"e\" VARCHAR(5) DEFAULT 'x\\y' COMMENT 'added'; \
         INSERT INTO gm.p VALUES ('c', 5); UPDATE gm.p SET v = 9 WHERE k = 'a'; \
         CREATE TABLE gm.u8 (id INT PRIMARY KEY, c VARCHAR(5) CHARACTER SET utf8); \
         SET NAMES utf8mb4; INSERT INTO gm.u8 VALUES (1, '한😀')",
    );
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--databases", "gm"],
    );
    assert_ok(&out);
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["verify", "--databases", "gm"],
    );
    assert_ok(&out);
    let defaults = "SET GLOBAL sql_mode = DEFAULT, autocommit = 1, max_statement_time = 0, \
                    explicit_defaults_for_timestamp = DEFAULT, sql_select_limit = DEFAULT, \
                    max_join_size = DEFAULT, sql_safe_updates = DEFAULT, old_mode = DEFAULT";
    src.sql(defaults);
    dst.sql(defaults);
    assert_same_multiset(&src, &dst, "gm");
    assert_eq!(dst.sql("SELECT e FROM gm.t WHERE k = 'c\\\\d'"), "x\\\\y");
    assert_eq!(
        dst.sql("SELECT ENGINE, TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'gm' AND TABLE_NAME = 't'"),
        "InnoDB\ttable"
    );
}

/// Rows the source holds although a CHECK constraint says otherwise (the constraint added with
/// check_constraint_checks=0 over rows that break it, or rows written by a session with it
/// off, which a native replica applies too) are copied and followed: the snapshot used to
/// stop on error 4025.
#[test]
fn rows_that_break_a_check_constraint_are_copied() {
    let src = Server::source("chk-src");
    let dst = Server::target("chk-dst");
    src.sql(
        "CREATE DATABASE chk; CREATE TABLE chk.t (id INT PRIMARY KEY, v INT); \
         INSERT INTO chk.t VALUES (1, 0), (2, 5); \
         SET check_constraint_checks = 0; ALTER TABLE chk.t ADD CONSTRAINT pos CHECK (v > 0)",
    );
    let dir = tempdir();
    for (state, extra) in [
        ("load.sqlite", None),
        ("insert.sqlite", Some("--no-load-data")),
    ] {
        let mut args = vec!["snapshot", "--databases", "chk", "--reuse-target"];
        args.extend(extra);
        snapshot(&src, &dst, &dir.path().join(state), &args[1..]);
        assert_same(&src, &dst, "chk");
    }
    let state = dir.path().join("insert.sqlite");
    src.sql(
        "SET check_constraint_checks = 0; INSERT INTO chk.t VALUES (3, -1); \
         UPDATE chk.t SET v = -5 WHERE id = 2",
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "chk");
    assert_eq!(dst.sql("SELECT COUNT(*) FROM chk.t WHERE v <= 0"), "3");
}

/// Dates a session with ALLOW_INVALID_DATES stored (`2020-02-30`, `2021-04-31 10:00:00.5`) are
/// copied and followed as they are, in a key too (one row per chunk: they are chunk bounds),
/// and in a table without a key: written in migrate's own sql_mode they became 0000-00-00,
/// exit 0 (verify saw it).
#[test]
fn invalid_dates_the_source_holds_are_copied() {
    let src = Server::source("idate-src");
    let dst = Server::target("idate-dst");
    src.sql(
        "CREATE DATABASE idate; CREATE TABLE idate.t (d DATE NOT NULL PRIMARY KEY, dt DATETIME(3), z DATE); \
         CREATE TABLE idate.nk (d DATE, n INT) ENGINE=InnoDB; \
         SET sql_mode = 'ALLOW_INVALID_DATES'; \
         INSERT INTO idate.t VALUES ('2020-02-30', '2021-04-31 10:00:00.5', '2020-00-15'), \
           ('2020-02-28', '2021-02-29 00:00:00', '2020-01-00'), ('2020-02-31', NULL, '0000-00-00'), \
           ('2020-03-01', '2020-02-30 23:59:59.999', NULL); \
         INSERT INTO idate.nk VALUES ('2019-11-31', 1), ('2019-11-30', 2)",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(
        &src,
        &dst,
        &state,
        &["--databases", "idate", "--chunk-rows", "1"],
    );
    assert_same_multiset(&src, &dst, "idate");
    src.sql(
        "SET sql_mode = 'ALLOW_INVALID_DATES'; \
         INSERT INTO idate.t VALUES ('2019-06-31', '2019-09-31 01:02:03.4', '2019-00-00'); \
         UPDATE idate.t SET dt = '2022-06-31 12:00:00' WHERE d = '2020-02-30'; \
         DELETE FROM idate.t WHERE d = '2020-02-31'; \
         UPDATE idate.nk SET n = 9 WHERE d = '2019-11-31'",
    );
    follow_caught_up(&src.url(), &dst.url(), &state, "idate");
    assert_same_multiset(&src, &dst, "idate");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["verify", "--databases", "idate"],
    ));
    assert_eq!(
        dst.sql("SELECT dt FROM idate.t WHERE d = '2020-02-30'"),
        "2022-06-31 12:00:00.000"
    );
}

/// A table option the source ignores (a KEY_BLOCK_SIZE left in the definition after its
/// ROW_FORMAT changed, kept by a server without innodb_strict_mode) is created the same way
/// on a strict target, by the snapshot and by a DDL from the binlog: the CREATE TABLE used to
/// fail there (errno 140, "Wrong create options").
#[test]
fn table_options_the_source_ignores_are_copied() {
    let src = Server::source("topt-src");
    let dst = Server::target("topt-dst");
    src.sql(
        "CREATE DATABASE topt; SET innodb_strict_mode = 0; \
         CREATE TABLE topt.t (id INT PRIMARY KEY, v VARCHAR(10)) ROW_FORMAT=DYNAMIC KEY_BLOCK_SIZE=8; \
         INSERT INTO topt.t VALUES (1, 'a')",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &["--databases", "topt"]);
    src.sql(
        "SET innodb_strict_mode = 0; \
         CREATE TABLE topt.u (id INT PRIMARY KEY) ROW_FORMAT=DYNAMIC KEY_BLOCK_SIZE=4; \
         INSERT INTO topt.u VALUES (1); ALTER TABLE topt.t KEY_BLOCK_SIZE=2",
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "topt");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["verify", "--databases", "topt"],
    ));
}

/// A column changed on the source without the binlog (`SET sql_log_bin=0; ALTER TABLE ...`)
/// or on the target leaves the table map describing another type than the target's column.
/// Written anyway, the value was converted with exit 0 (a BIGINT clamped into an INT, a
/// VARCHAR(20) truncated into a VARCHAR(10)). Follow now stops on each kind of change, naming
/// the column; making the target's column match lets it go on, and the data ends identical.
#[test]
fn a_column_changed_outside_the_binlog_stops_follow() {
    let src = Server::source("drift-src");
    let dst = Server::target("drift-dst");
    let members = |n: usize| {
        (0..n)
            .map(|i| format!("'m{i}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    src.sql(&format!(
        "CREATE DATABASE drift; CREATE TABLE drift.t (id INT PRIMARY KEY, \
           i INT, ti TINYINT, v VARCHAR(10) CHARACTER SET latin1, c CHAR(5) CHARACTER SET utf8mb4, \
           d DECIMAL(10,2), dt DATETIME, tx TEXT, f FLOAT, b BIT(3), e ENUM('m0','m1'), \
           s SET({}), ip INET4, tm TIME, bn BINARY(4), u VARCHAR(10) CHARACTER SET utf8mb4, \
           ts TIMESTAMP(2) NULL, tb TINYBLOB, ch CHAR(3) CHARACTER SET latin1); \
         INSERT INTO drift.t (id, i, v) VALUES (1, 1, 'a')",
        members(8)
    ));
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src, &dst, &state, &["--databases", "drift"]);
    // (column, its type after the change, a value only the new type holds)
    let changes: Vec<(&str, String, String)> = vec![
        ("i", "BIGINT".into(), "5000000000".into()),
        ("ti", "SMALLINT".into(), "1000".into()),
        (
            "v",
            "VARCHAR(20) CHARACTER SET latin1".into(),
            "'abcdefghijklmnopqrst'".into(),
        ),
        (
            "c",
            "CHAR(8) CHARACTER SET utf8mb4".into(),
            "'12345678'".into(),
        ),
        ("d", "DECIMAL(12,4)".into(), "12345678.1234".into()),
        (
            "dt",
            "DATETIME(6)".into(),
            "'2020-01-01 00:00:00.123456'".into(),
        ),
        ("tx", "MEDIUMTEXT".into(), "REPEAT('x', 70000)".into()),
        ("f", "DOUBLE".into(), "1.000000001".into()),
        ("b", "BIT(10)".into(), "b'1111111111'".into()),
        ("e", format!("ENUM({})", members(300)), "'m299'".into()),
        ("s", format!("SET({})", members(9)), "'m8'".into()),
        ("ip", "VARCHAR(15)".into(), "'1.2.3.4'".into()),
        ("tm", "TIME(3)".into(), "'12:00:00.123'".into()),
        ("bn", "BINARY(8)".into(), "'abcdefgh'".into()),
        (
            "u",
            "VARCHAR(10) CHARACTER SET latin1".into(),
            "'abc'".into(),
        ),
        (
            "ts",
            "TIMESTAMP(5) NULL".into(),
            "'2020-01-01 00:00:00.12345'".into(),
        ),
        ("tb", "BLOB".into(), "REPEAT('y', 300)".into()),
        (
            "ch",
            "VARCHAR(3) CHARACTER SET latin1".into(),
            "'abc'".into(),
        ),
    ];
    // every column changes on the source outside the binlog, then rows use the new types
    for (n, (column, new_type, value)) in changes.iter().enumerate() {
        src.sql(&format!(
            "SET SESSION sql_log_bin = 0; ALTER TABLE drift.t MODIFY {column} {new_type}; \
             SET SESSION sql_log_bin = 1; INSERT INTO drift.t (id, {column}) VALUES ({}, {value})",
            n + 10
        ));
    }
    // follow stops at each column in turn; the operator makes the target's column match.
    // One source transaction per group: the rows before a column's change are applied
    // (with the type the column had then) before the stop
    for (applied, (column, new_type, _)) in changes.iter().enumerate() {
        let out = migrate(
            &src.url(),
            &dst.url(),
            &state,
            &[
                "follow",
                "--until-caught-up",
                "--databases",
                "drift",
                "--group-size",
                "1",
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{column}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("column `{column}` is"))
                && err.contains("drifted")
                && err.contains("ALTER TABLE on the target"),
            "{column}: {err}"
        );
        assert_eq!(
            dst.sql("SELECT COUNT(*) FROM drift.t"),
            (applied + 1).to_string(),
            "{column}: only the rows before its change are on the target"
        );
        dst.sql(&format!("ALTER TABLE drift.t MODIFY {column} {new_type}"));
    }
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "drift");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["verify", "--databases", "drift"],
    ));
}

/// Tables whose rows are not their own: a MERGE table (its rows are those of the MyISAM
/// tables it unions) and FEDERATED tables (their rows are on another server). The snapshot
/// used to copy a MERGE table's rows into it, which put them a second time into its last
/// table (exit 0), and wrote every FEDERATED row through the target's table into the remote
/// server again (migrate changing a third server). Now both are copied as definitions, follow
/// writes nothing through a FEDERATED table (nor replays a TRUNCATE of one), and a change made
/// through a MERGE table stops follow, as does leaving a MERGE table out with --exclude.
#[test]
fn tables_whose_rows_are_elsewhere_are_copied_as_definitions() {
    let remote = Server::source("fed-remote");
    let src = Server::source("fed-src");
    let dst = Server::target("fed-dst");
    for s in [&src, &dst] {
        s.sql("INSTALL SONAME 'ha_federatedx'; INSTALL SONAME 'ha_blackhole'");
    }
    remote.sql(
        "CREATE DATABASE rdb; CREATE TABLE rdb.r (id INT PRIMARY KEY, v INT); \
         CREATE TABLE rdb.k (id INT, v INT); \
         INSERT INTO rdb.r VALUES (1, 1), (2, 2); INSERT INTO rdb.k VALUES (5, 5), (5, 5)",
    );
    let at = |t: &str| {
        format!(
            "CONNECTION='mysql://root@127.0.0.1:{}/rdb/{t}'",
            remote.port
        )
    };
    src.sql(&format!(
        "CREATE DATABASE fed; USE fed; \
         CREATE TABLE t1 (id INT NOT NULL PRIMARY KEY, v INT) ENGINE=MyISAM; \
         CREATE TABLE t2 (id INT NOT NULL PRIMARY KEY, v INT) ENGINE=MyISAM; \
         CREATE TABLE mt (id INT NOT NULL, v INT, PRIMARY KEY (id)) ENGINE=MRG_MyISAM UNION=(t1,t2) INSERT_METHOD=LAST; \
         INSERT INTO t1 VALUES (1, 1), (2, 2); INSERT INTO t2 VALUES (3, 3); \
         CREATE TABLE fx (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v INT, KEY (v)) ENGINE=FEDERATED {}; \
         CREATE TABLE fk (id INT, v INT) ENGINE=FEDERATED {}; \
         CREATE TABLE bh (id INT PRIMARY KEY, v INT) ENGINE=BLACKHOLE; \
         CREATE TABLE i (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; INSERT INTO i VALUES (1, 1)",
        at("r"),
        at("k")
    ));
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let check = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["check", "--databases", "fed"],
    );
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );
    assert!(
        report.contains("fed.mt") && report.contains("MERGE table"),
        "{report}"
    );
    assert!(
        report.contains("fed.fx") && report.contains("FEDERATED table"),
        "{report}"
    );
    // leaving the MERGE table out would lose the changes made through it
    let out = migrate(
        &src.url(),
        &dst.url(),
        &dir.path().join("excluded.sqlite"),
        &["snapshot", "--databases", "fed", "--exclude", "fed.mt"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("MERGE table left out"),
        "{}",
        stderr(&out)
    );

    let remote_writes = || remote.sql("SELECT @@gtid_binlog_pos");
    let before = remote_writes();
    snapshot(
        &src,
        &dst,
        &state,
        &["--databases", "fed", "--defer-indexes"],
    );
    assert_eq!(
        remote_writes(),
        before,
        "the snapshot wrote to the FEDERATED tables' server: {}",
        remote.sql("SHOW BINLOG EVENTS")
    );
    let rows = |s: &Server, t: &str| s.sql(&format!("SELECT * FROM fed.{t} ORDER BY id, v"));
    for t in ["t1", "t2", "mt", "fx", "fk", "i"] {
        assert_eq!(rows(&src, t), rows(&dst, t), "{t}");
    }
    // the source changes the remote rows itself; follow must not change them again
    src.sql(
        "USE fed; INSERT INTO fx VALUES (3, 3); UPDATE fx SET v = 10 WHERE id = 1; \
         DELETE FROM fx WHERE id = 2; TRUNCATE fk; INSERT INTO fk VALUES (9, 9); \
         INSERT INTO t2 VALUES (4, 4); UPDATE t1 SET v = 20 WHERE id = 2; \
         INSERT INTO bh VALUES (1, 1); INSERT INTO i VALUES (2, 2)",
    );
    let changed = remote_writes();
    follow_caught_up(&src.url(), &dst.url(), &state, "fed");
    assert_eq!(
        remote_writes(),
        changed,
        "follow wrote to the FEDERATED tables' server"
    );
    assert_eq!(remote.sql("SELECT * FROM rdb.k"), "9\t9");
    for t in ["t1", "t2", "mt", "fx", "fk", "bh", "i"] {
        assert_eq!(rows(&src, t), rows(&dst, t), "{t}");
    }
    assert_eq!(src.dump_schema("fed"), dst.dump_schema("fed"));
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["verify", "--databases", "fed"],
    ));
    // a change made through the MERGE table stops follow, naming it
    src.sql("INSERT INTO fed.mt VALUES (5, 5)");
    let err = follow_fails(&src.url(), &dst.url(), &state, "fed");
    assert!(
        err.contains("fed.mt is a MERGE table") && err.contains("write to the tables"),
        "{err}"
    );
    assert_eq!(rows(&dst, "t2"), "3\t3\n4\t4");
}
