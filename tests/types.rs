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
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--databases", DB],
    );
    assert_ok(&out);
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
