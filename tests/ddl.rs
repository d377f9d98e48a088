//! DDL in the binlog while following: every kind the follow issue lists, applied in order, with
//! rows before and after each; a snapshot of "all databases" also follows new databases.

mod support;
use support::*;

#[test]
fn ddl_of_every_kind_is_applied_in_order() {
    let src = Server::source("d-src");
    let dst = Server::target("d-dst");
    src.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO app.t VALUES (1, 'a'), (2, 'b');
         CREATE TABLE app.gone (id INT PRIMARY KEY); INSERT INTO app.gone VALUES (1);",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    // no --databases: every non-system database, now and later
    assert_ok(&migrate(&src.url(), &dst.url(), &state, &["snapshot"]));
    src.sql(
        "INSERT INTO app.t VALUES (3, 'c');
         ALTER TABLE app.t ADD COLUMN w INT NOT NULL DEFAULT 7, MODIFY v VARCHAR(20);
         INSERT INTO app.t VALUES (4, 'dddddddddddddd', 8);
         RENAME TABLE app.t TO app.t2;
         UPDATE app.t2 SET w = w + 1 WHERE id = 1;
         CREATE TABLE app.tmp (id INT PRIMARY KEY); INSERT INTO app.tmp VALUES (1), (2);
         TRUNCATE TABLE app.tmp; INSERT INTO app.tmp VALUES (3);
         DROP TABLE app.gone;
         CREATE VIEW app.v AS SELECT id, w FROM app.t2;
         CREATE PROCEDURE app.p() SELECT 1;
         CREATE FUNCTION app.f(x INT) RETURNS INT DETERMINISTIC RETURN x + 1;
         CREATE DATABASE newdb; CREATE TABLE newdb.n (id INT PRIMARY KEY, s VARCHAR(10)); INSERT INTO newdb.n VALUES (1, '새');
         CREATE DATABASE dropme; CREATE TABLE dropme.x (id INT PRIMARY KEY); DROP DATABASE dropme;
         ALTER TABLE app.t2 DROP COLUMN v;
         INSERT INTO app.t2 VALUES (5, 9);",
    );
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    ));
    assert_same(&src, &dst, "app");
    assert_same(&src, &dst, "newdb");
    assert!(dst.try_sql("USE dropme").is_err());
    assert!(dst.try_sql("SELECT 1 FROM app.gone").is_err());
    assert_eq!(dst.sql("SELECT COUNT(*) FROM app.v"), "5");
    assert_eq!(dst.sql("SELECT app.f(1)"), "2");
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'app'"),
        "2"
    );
}

/// ADD COLUMN on the source while the snapshot is copying that table: the catch-up replays the
/// ALTER at its place in the binlog and the copy converges.
#[test]
fn add_column_during_the_copy_converges() {
    let src = Server::source("dc-src");
    let dst = Server::target("dc-dst");
    src.sql(
        "CREATE DATABASE dd; USE dd; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_300000;",
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
            "dd",
            "--chunk-rows",
            "300",
            "--threads",
            "1",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("snapshot");
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(
        snap.try_wait().expect("wait").is_none(),
        "the snapshot finished before the ALTER"
    );
    src.sql("ALTER TABLE dd.t ADD COLUMN w INT NOT NULL DEFAULT 5; UPDATE dd.t SET w = 6 WHERE id IN (1, 299999); INSERT INTO dd.t VALUES (300001, 'new', 9);");
    let out = snap.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "dd");
}

/// The engine dies right after a DDL ran on the target and before its checkpoint, for every
/// DDL that runs again without an error and undoes itself (a table swap by RENAME, a column
/// swap, EXCHANGE PARTITION, COALESCE PARTITION, ADD PARTITION PARTITIONS n), and for a plain rename: on restart each is
/// known to have run and is not run again.
#[test]
fn a_ddl_interrupted_before_its_checkpoint_runs_once() {
    let src = Server::source("dr-src");
    let dst = Server::target("dr-dst");
    src.sql(
        "CREATE DATABASE rn; USE rn;
         CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO a VALUES (1, 'was a');
         CREATE TABLE b (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO b VALUES (1, 'was b');
         CREATE TABLE c (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO c VALUES (1, 'was c');
         CREATE TABLE d LIKE c; INSERT INTO d VALUES (1, 'was d'); CREATE TABLE e LIKE c; INSERT INTO e VALUES (1, 'was e');
         CREATE TABLE f LIKE c; INSERT INTO f VALUES (1, 'was f'); CREATE TABLE g LIKE c; INSERT INTO g VALUES (1, 'was g');
         CREATE DATABASE rn_out; USE rn;
         CREATE TABLE cols (id INT PRIMARY KEY, v VARCHAR(10), w VARCHAR(10)); INSERT INTO cols VALUES (1, 'v', 'w');
         CREATE TABLE pt (id INT PRIMARY KEY, v VARCHAR(10)) PARTITION BY RANGE (id)
           (PARTITION p0 VALUES LESS THAN (100), PARTITION p1 VALUES LESS THAN MAXVALUE);
         INSERT INTO pt VALUES (1, 'in p0'), (2, 'in p0'), (500, 'in p1');
         CREATE TABLE ex (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO ex VALUES (7, 'in ex');
         CREATE TABLE hp (id INT PRIMARY KEY, v INT) PARTITION BY HASH (id) PARTITIONS 4;
         INSERT INTO hp SELECT seq, seq FROM seq_1_to_20;",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "rn"],
    ));
    let follow_aborting_after = |text: &str| {
        let out = migrate_cmd(
            &src.url(),
            &dst.url(),
            &state,
            &["follow", "--until-caught-up", "--databases", "rn"],
        )
        .env("MIGRATE_TEST_ABORT_AFTER_DDL", text)
        .output()
        .expect("follow");
        assert!(
            !out.status.success() && stderr(&out).contains("aborting here (test hook)"),
            "the hook did not abort at {text}: {}",
            stderr(&out)
        );
    };
    // each restart first meets the DDL the last run was killed after
    for (sql, hook) in [
        ("RENAME TABLE a TO sw_tmp, b TO a, sw_tmp TO b; INSERT INTO a VALUES (2, 'after');", "sw_tmp"),
        ("ALTER TABLE cols CHANGE v w VARCHAR(10), CHANGE w v VARCHAR(10); INSERT INTO cols VALUES (2, 'v2', 'w2');", "CHANGE v w"),
        ("ALTER TABLE pt EXCHANGE PARTITION p0 WITH TABLE ex; INSERT INTO ex VALUES (3, 'after');", "EXCHANGE"),
        ("ALTER TABLE hp COALESCE PARTITION 1; INSERT INTO hp VALUES (21, 21);", "COALESCE"),
        ("ALTER TABLE hp ADD PARTITION PARTITIONS 2; INSERT INTO hp VALUES (22, 22);", "PARTITIONS 2"),
        ("RENAME TABLE c TO c2; INSERT INTO c2 VALUES (2, 'after');", "TO c2"),
        // rewritten in two statements (d leaves the selection, e takes its name): killed
        // after the first, then after the second
        ("RENAME TABLE d TO rn_out.d, e TO d; INSERT INTO d VALUES (2, 'after');", "`rn`.`e` TO"),
        ("RENAME TABLE f TO rn_out.f, g TO f; INSERT INTO f VALUES (2, 'after');", "DROP TABLE IF EXISTS `rn`.`_migrate_discarded"),
    ] {
        src.sql(&format!("USE rn; {sql}"));
        follow_aborting_after(hook);
    }
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "rn");
    assert_eq!(dst.sql("SELECT v FROM rn.d WHERE id = 1"), "was e");
    // a DDL the target refuses (it drifted), repaired by hand as the error says: the restart
    // runs it (the mark of the refused statement does not pass for its effect)
    dst.sql("ALTER TABLE rn.b ADD INDEX drift (v)");
    src.sql("ALTER TABLE rn.b ADD INDEX drift (v)");
    let refused = follow_fails(&src.url(), &dst.url(), &state, "rn");
    assert!(refused.contains("drift"), "{refused}");
    // not repaired yet: refused again (its "already exists" is not taken for its effect)
    let again = follow_fails(&src.url(), &dst.url(), &state, "rn");
    assert!(again.contains("drift"), "{again}");
    dst.sql("ALTER TABLE rn.b DROP INDEX drift");
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "rn");
    for t in ["a", "b", "cols", "pt", "ex", "hp", "c2", "d", "f"] {
        let show = |s: &Server| s.sql(&format!("SHOW CREATE TABLE rn.{t}"));
        assert_eq!(show(&src), show(&dst), "definition of {t}");
    }
    assert_eq!(dst.sql("SELECT v FROM rn.a WHERE id = 1"), "was b");
    // the rename markers are gone once their checkpoints committed
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '_migrate' AND TABLE_NAME LIKE 'rename%'"),
        "0"
    );
}

/// A view renamed out of the selection (onto an excluded name) and a table renamed the same
/// way: both are dropped on the target (DROP TABLE leaves a view in place with only a note).
#[test]
fn views_and_tables_renamed_out_of_the_selection_are_dropped() {
    let src = Server::source("dv-src");
    let dst = Server::target("dv-dst");
    src.sql(
        "CREATE DATABASE vw; USE vw; CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1);
         CREATE TABLE u (id INT PRIMARY KEY); INSERT INTO u VALUES (1);",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "vw", "--exclude", "vw.old_*"],
    ));
    src.sql(
        "USE vw; CREATE VIEW v AS SELECT id FROM t; CREATE VIEW w AS SELECT id FROM u;
         RENAME TABLE v TO old_v, u TO old_u; RENAME TABLE w TO w2;",
    );
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    ));
    let listing = |s: &Server| {
        s.sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'vw' AND TABLE_NAME NOT LIKE 'old%' ORDER BY 1")
    };
    assert_eq!(listing(&dst), listing(&src));
    assert_eq!(listing(&dst).replace('\n', " "), "t w2");
}

/// An `ALTER TABLE ... ADD` column whose default is computed per row where the statement runs
/// (RAND(), UUID(), USER(), ...) used to fill the target's rows with other values than the
/// source's, exit 0 (measured: every row differed). Now follow stops before it with the fix,
/// unless the target's table is empty; repeatable defaults (a literal, the statement's
/// timestamp, AUTO_INCREMENT on a keyed table) are applied. The fix (a new snapshot, new
/// state file, --reuse-target) ends identical. AUTO_INCREMENT added to a table without a key
/// stops too.
#[test]
fn added_columns_with_unrepeatable_defaults_stop_follow() {
    let src = Server::source("unrep-src");
    let dst = Server::target("unrep-dst");
    src.sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT); \
         INSERT INTO app.t VALUES (1, 1), (2, 2); CREATE TABLE app.empty (id INT PRIMARY KEY); \
         CREATE TABLE app.nk (v INT) ENGINE=InnoDB; INSERT INTO app.nk VALUES (3), (1), (2)",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "app"],
    ));
    src.sql(
        "ALTER TABLE app.t ADD COLUMN c TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), ADD COLUMN k INT DEFAULT 7, \
           ADD COLUMN n INT NOT NULL AUTO_INCREMENT UNIQUE; \
         ALTER TABLE app.empty ADD COLUMN g CHAR(36) DEFAULT (UUID()); INSERT INTO app.empty (id) VALUES (1); \
         ALTER TABLE app.t ADD COLUMN r DOUBLE DEFAULT (RAND()); \
         INSERT INTO app.t (id, v) VALUES (3, 3)",
    );
    let err = follow_fails(&src.url(), &dst.url(), &state, "app");
    assert!(
        err.contains("RAND()") && err.contains("app.t") && err.contains("--reuse-target"),
        "{err}"
    );
    // what came before it was applied: the repeatable defaults, the empty table's column
    assert_eq!(
        dst.sql("SET time_zone = '+00:00'; SELECT id, c, k, n FROM app.t ORDER BY id"),
        src.sql("SET time_zone = '+00:00'; SELECT id, c, k, n FROM app.t WHERE id < 3 ORDER BY id")
    );
    assert_eq!(
        dst.sql("SELECT g FROM app.empty"),
        src.sql("SELECT g FROM app.empty")
    );
    // the fix
    let fresh = dir.path().join("fresh.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &fresh,
        &["snapshot", "--databases", "app", "--reuse-target"],
    ));
    src.sql("UPDATE app.t SET v = 9 WHERE id = 1");
    catch_up_and_compare(&src.url(), &dst.url(), &fresh, &src, &dst, "app");
    // AUTO_INCREMENT numbers existing rows in their stored order: for a table without a key,
    // InnoDB's hidden row order, which on the target follows the binlog, not the source
    src.sql("ALTER TABLE app.nk ADD COLUMN id INT AUTO_INCREMENT PRIMARY KEY");
    let err = follow_fails(&src.url(), &dst.url(), &fresh, "app");
    assert!(
        err.contains("AUTO_INCREMENT") && err.contains("app.nk") && err.contains("no primary"),
        "{err}"
    );
}

/// Both servers fold names (`lower_case_table_names=1`, common where applications were
/// written on Windows): stored and logged in lowercase (table maps, the event's database),
/// but statements keep the case they were written in. `--databases Shop`, `--exclude
/// 'Shop.Tmp*'`, and DDL that says `Shop.Orders` are about `shop.orders`: a statement whose
/// names were compared byte for byte would have been taken for one outside the selection.
#[test]
fn names_folded_on_both_servers() {
    let mut args: Vec<&str> = SOURCE_ARGS.to_vec();
    args.push("--lower-case-table-names=1");
    let src = Server::start("lcf-src", &args);
    let dst = Server::start(
        "lcf-dst",
        &["--log-bin=mysql-bin", "--lower-case-table-names=1"],
    );
    src.sql(
        "CREATE DATABASE Shop; USE Shop; CREATE TABLE Orders (Id INT PRIMARY KEY, v INT); \
         INSERT INTO Orders VALUES (1, 1); CREATE TABLE TmpA (id INT PRIMARY KEY); INSERT INTO TmpA VALUES (1); \
         CREATE VIEW Big AS SELECT Id FROM Orders WHERE v > 1",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let filter = ["--databases", "Shop", "--exclude", "Shop.Tmp*"];
    let mut check = vec!["check"];
    check.extend(filter);
    let out = migrate(&src.url(), &dst.url(), &state, &check);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let mut snap = vec!["snapshot"];
    snap.extend(filter);
    assert_ok(&migrate(&src.url(), &dst.url(), &state, &snap));
    assert_eq!(dst.sql("SHOW TABLES FROM shop"), "big\norders");
    src.sql(
        "USE Shop; INSERT INTO SHOP.ORDERS VALUES (2, 2); \
         ALTER TABLE Shop.Orders ADD COLUMN W INT DEFAULT 7; \
         CREATE TABLE Shop.Items (Id INT PRIMARY KEY, OrderId INT); INSERT INTO shop.items VALUES (1, 2); \
         RENAME TABLE Shop.Items TO Shop.Lines; \
         CREATE TABLE Shop.TmpB (id INT PRIMARY KEY); INSERT INTO TmpB VALUES (1); \
         ALTER TABLE Shop.TmpA ADD COLUMN x INT; DROP TABLE Shop.TmpB; \
         CREATE OR REPLACE VIEW Shop.Big AS SELECT Id, W FROM Shop.Orders; \
         UPDATE Orders SET W = 8 WHERE Id = 1; \
         CREATE DATABASE Other; CREATE TABLE Other.Été (id INT); INSERT INTO Other.Été VALUES (1); \
         CREATE TABLE Shop.Café (Id INT PRIMARY KEY); INSERT INTO Shop.Café VALUES (1)",
    );
    let mut follow = vec!["follow", "--until-caught-up"];
    follow.extend(filter);
    assert_ok(&migrate(&src.url(), &dst.url(), &state, &follow));
    // a name with a non-ASCII capital stops follow only where it is migrated; one with
    // lowercase non-ASCII letters folds as itself
    assert_eq!(dst.sql("SHOW TABLES FROM shop"), "big\ncafé\nlines\norders");
    assert_eq!(dst.sql("SELECT Id FROM shop.café"), "1");
    assert!(dst.try_sql("USE other").is_err(), "`other` is not migrated");
    assert_eq!(
        dst.sql("SELECT Id, v, W FROM shop.orders ORDER BY Id"),
        "1\t1\t8\n2\t2\t7"
    );
    assert_eq!(dst.sql("SELECT * FROM shop.lines"), "1\t2");
    let mut verify = vec!["verify"];
    verify.extend(filter);
    assert_ok(&migrate(&src.url(), &dst.url(), &state, &verify));
    // --tables as the application spells them
    verify.extend(["--tables", "Shop.Orders"]);
    let out = migrate(&src.url(), &dst.url(), &state, &verify);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 tables"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // a capital the server may fold otherwise than Unicode, in a migrated name: stops
    src.sql("CREATE TABLE Shop.Ärger (id INT)");
    let err = follow_fails(&src.url(), &dst.url(), &state, "Shop");
    assert!(
        err.contains("Ärger") && err.contains("lowercase form"),
        "{err}"
    );
}

/// A view that reads a database that is not migrated cannot be created on the target: the
/// snapshot stops with a fix that names `--exclude 'db.view'`, and `--exclude` leaves the
/// view out of the snapshot, of follow (its DDL skipped) and of verify's schema comparison
/// (it used to apply to tables only, so such a view could not be left out at all).
#[test]
fn views_can_be_excluded() {
    let src = Server::source("vx-src");
    let dst = Server::target("vx-dst");
    src.sql(
        "CREATE DATABASE va; CREATE DATABASE vb; CREATE TABLE vb.x (id INT PRIMARY KEY); \
         CREATE TABLE va.t (id INT PRIMARY KEY); CREATE VIEW va.v AS SELECT id FROM vb.x",
    );
    let dir = tempdir();
    // check names it as a blocker, and the snapshot refuses it before copying any row
    let out = migrate(
        &src.url(),
        &dst.url(),
        &dir.path().join("a.sqlite"),
        &["check", "--databases", "va"],
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("va.v") && text.contains("reads vb.x, which is not migrated"),
        "{text}"
    );
    let out = migrate(
        &src.url(),
        &dst.url(),
        &dir.path().join("a.sqlite"),
        &["snapshot", "--databases", "va"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--exclude 'va.v'"),
        "{}",
        stderr(&out)
    );
    assert!(
        dst.try_sql("SELECT 1 FROM va.t").is_err(),
        "nothing was copied"
    );
    // also a view of an excluded table of its own database
    let out = migrate(
        &src.url(),
        &dst.url(),
        &dir.path().join("a.sqlite"),
        &["check", "--databases", "va,vb", "--exclude", "vb.x"],
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(text.contains("reads vb.x, which is not migrated"), "{text}");
    let state = dir.path().join("b.sqlite");
    let filter = ["--databases", "va", "--exclude", "va.v"];
    let mut snap = vec!["snapshot", "--reuse-target"];
    snap.extend(filter);
    assert_ok(&migrate(&src.url(), &dst.url(), &state, &snap));
    src.sql(
        "CREATE OR REPLACE VIEW va.v AS SELECT id FROM vb.x WHERE id > 1; \
         CREATE VIEW va.w AS SELECT id FROM va.t; INSERT INTO va.t VALUES (1)",
    );
    let mut follow = vec!["follow", "--until-caught-up"];
    follow.extend(filter);
    assert_ok(&migrate(&src.url(), &dst.url(), &state, &follow));
    assert_eq!(
        dst.sql("SHOW FULL TABLES FROM va"),
        "t\tBASE TABLE\nw\tVIEW"
    );
    let mut verify = vec!["verify"];
    verify.extend(filter);
    assert_ok(&migrate(&src.url(), &dst.url(), &state, &verify));
}

/// `ALTER TABLE ... DISCARD TABLESPACE` then `IMPORT TABLESPACE` on the source (a table
/// restored from another server's .ibd file): its rows arrive without binlog events. Run on
/// the target, DISCARD deleted the target's rows and IMPORT failed with a hint about schema
/// drift. Follow now stops before the DISCARD, naming it and the fix, with the target's rows
/// intact; the fix (a new snapshot with --reuse-target) ends identical.
#[test]
fn a_tablespace_import_stops_follow() {
    let src = Server::source("ts-src");
    let dst = Server::target("ts-dst");
    src.sql(
        "CREATE DATABASE imp; CREATE TABLE imp.t (id INT PRIMARY KEY, v INT); \
         CREATE TABLE imp.other (id INT PRIMARY KEY); INSERT INTO imp.t VALUES (1, 1), (2, 2)",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "imp"],
    ));
    let data = src.dir.join("data").join("imp");
    let saved = dir.path().display().to_string();
    src.sql(&format!(
        "INSERT INTO imp.other VALUES (1); INSERT INTO imp.t VALUES (3, 3); \
         FLUSH TABLES imp.t FOR EXPORT; system cp {d}/t.ibd {d}/t.cfg {saved}/; UNLOCK TABLES; \
         UPDATE imp.t SET v = 30 WHERE id = 3; \
         ALTER TABLE imp.t DISCARD TABLESPACE; system cp {saved}/t.ibd {saved}/t.cfg {d}/; \
         ALTER TABLE imp.t IMPORT TABLESPACE",
        d = data.display()
    ));
    assert_eq!(src.sql("SELECT v FROM imp.t WHERE id = 3"), "3");
    let err = follow_fails(&src.url(), &dst.url(), &state, "imp");
    assert!(
        err.contains("DISCARD TABLESPACE on imp.t") && err.contains("--reuse-target"),
        "{err}"
    );
    // what came before it is applied; the table's rows are intact
    assert_eq!(dst.sql("SELECT COUNT(*) FROM imp.other"), "1");
    assert_eq!(
        dst.sql("SELECT * FROM imp.t ORDER BY id"),
        "1\t1\n2\t2\n3\t30"
    );
    // the fix
    let again = dir.path().join("again.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &again,
        &["snapshot", "--databases", "imp", "--reuse-target"],
    ));
    assert_same(&src, &dst, "imp");
}

/// `ALTER IGNORE TABLE ... ADD UNIQUE` keeps, of the rows that share the new key, the first in
/// the table's stored order. For a table without a key that order is InnoDB's hidden row id:
/// on the source the order of the inserts, on the target the binlog's commit order. Two
/// transactions that commit in the other order than they inserted made the target keep the
/// other row, exit 0. Follow now stops before it (unless a key orders the table).
#[test]
fn deduplicating_alters_of_keyless_tables_stop_follow() {
    let src = Server::source("dedup-src");
    let dst = Server::target("dedup-dst");
    src.sql(
        "CREATE DATABASE app; CREATE TABLE app.nk (a INT, b CHAR(1)) ENGINE=InnoDB; \
         CREATE TABLE app.keyed (id INT PRIMARY KEY, a INT); INSERT INTO app.keyed VALUES (1, 1), (2, 1)",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "app"],
    ));
    // 'p' is inserted first, 'q' commits first
    std::thread::scope(|s| {
        let first = s.spawn(|| {
            src.sql("BEGIN; INSERT INTO app.nk VALUES (1, 'p'); DO SLEEP(1.5); COMMIT");
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        src.sql("INSERT INTO app.nk VALUES (1, 'q')");
        first.join().expect("first transaction");
    });
    // a keyed table orders its rows alike on both sides: applied
    src.sql("ALTER IGNORE TABLE app.keyed ADD UNIQUE KEY (a)");
    follow_caught_up(&src.url(), &dst.url(), &state, "app");
    assert_eq!(dst.sql("SELECT * FROM app.keyed"), "1\t1");
    src.sql("ALTER IGNORE TABLE app.nk ADD CONSTRAINT u UNIQUE (a)");
    assert_eq!(src.sql("SELECT b FROM app.nk"), "p");
    let err = follow_fails(&src.url(), &dst.url(), &state, "app");
    assert!(
        err.contains("app.nk")
            && err.contains("first in their stored order")
            && err.contains("--reuse-target"),
        "{err}"
    );
    assert_eq!(dst.sql("SELECT COUNT(*) FROM app.nk"), "2");
}
