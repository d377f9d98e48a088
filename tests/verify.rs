//! `migrate verify` (issue 8): planted differences of every kind are found and named, repaired,
//! and a rerun passes; under a live write load repeated verifies find no false difference.

mod support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::*;

const SCHEMA: &str = r#"
SET NAMES utf8mb4; SET time_zone = '+09:00';
CREATE DATABASE v; USE v;
CREATE TABLE t (id INT PRIMARY KEY, d DECIMAL(12,4), dt DATETIME(6), ts TIMESTAMP(3) NULL, f FLOAT, db DOUBLE,
  b BLOB, vc VARCHAR(20), ch CHAR(10), kr VARCHAR(20) CHARACTER SET euckr, e VARCHAR(10), bits BIT(9), j JSON,
  g INT AS (id * 2) STORED, inv INT INVISIBLE DEFAULT 7) ENGINE=InnoDB;
INSERT INTO t (id, d, dt, ts, f, db, b, vc, ch, kr, e, bits, j, inv)
  SELECT seq, seq / 7, '2024-01-01 00:00:00.000001' + INTERVAL seq SECOND, '2024-06-01 00:00:00.5' + INTERVAL seq MINUTE,
         seq / 3, seq / 9, UNHEX(REPEAT('ab', seq % 5 + 1)), CONCAT('v', seq), CONCAT('c', seq), CONVERT(CONCAT('한글', seq) USING euckr),
         IF(seq % 2 = 0, '', NULL), seq % 512, JSON_OBJECT('n', seq), seq
  FROM seq_1_to_3000;
CREATE TABLE `주문 항목` (`지역` CHAR(2) NOT NULL, n INT NOT NULL, v VARCHAR(10), PRIMARY KEY (`지역`, n)) ENGINE=InnoDB;
INSERT INTO `주문 항목` SELECT ELT(1 + seq % 3, 'KR', 'JP', 'US'), seq, CONCAT('x', seq) FROM seq_1_to_500;
CREATE TABLE nokey (a INT, b VARCHAR(10)) ENGINE=InnoDB;
INSERT INTO nokey SELECT seq % 10, 'dup' FROM seq_1_to_100;
CREATE TABLE parent (id INT PRIMARY KEY, code INT NOT NULL UNIQUE) ENGINE=InnoDB;
CREATE TABLE child (id INT PRIMARY KEY, pcode INT, KEY (pcode),
  FOREIGN KEY (pcode) REFERENCES parent (code) ON UPDATE CASCADE ON DELETE CASCADE) ENGINE=InnoDB;
INSERT INTO parent SELECT seq, seq * 10 FROM seq_1_to_200;
INSERT INTO child SELECT seq, (seq % 200 + 1) * 10 FROM seq_1_to_600;
CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;
INSERT INTO big SELECT seq, CONCAT('b', seq) FROM seq_1_to_12000;
CREATE EVENT ev ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO UPDATE t SET d = d WHERE id = 0;
CREATE TRIGGER trg BEFORE INSERT ON nokey FOR EACH ROW SET NEW.b = NEW.b;
"#;

fn verify(
    src: &Server,
    dst: &Server,
    state: &std::path::Path,
    extra: &[&str],
) -> (i32, serde_json::Value, String) {
    let report = state.with_extension("report.json");
    let mut args = vec!["verify", "--chunk-rows", "400", "--report"];
    let r = report.display().to_string();
    args.push(&r);
    args.extend_from_slice(extra);
    let out = migrate(&src.url(), &dst.url(), state, &args);
    let code = out.status.code().unwrap_or(-1);
    let j = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    (
        code,
        j,
        format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out)),
    )
}

#[test]
fn planted_differences_are_named_and_repaired() {
    let src = Server::source("vf-src");
    let dst = Server::target("vf-dst");
    src.script(SCHEMA.as_bytes());
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "v"],
    ));
    src.sql("USE v; UPDATE t SET vc = 'moved' WHERE id = 5; DELETE FROM child WHERE id = 3; UPDATE parent SET code = 5000 WHERE id = 7;");
    let (code, j, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 0, "identical copies must pass: {log}");
    assert_eq!(j["identical"], true, "{j}");
    assert_eq!(
        j["triggers_pending_until_cutover"],
        serde_json::json!(["v.trg"]),
        "{j}"
    );

    // differences planted on the target only, outside its binlog
    dst.script(
        "SET NAMES utf8mb4; SET sql_log_bin = 0; USE v;
         UPDATE t SET d = d + 0.0001 WHERE id = 10;
         UPDATE t SET dt = dt + INTERVAL 1 MICROSECOND WHERE id = 11;
         UPDATE t SET f = f * (1 + 1e-7) WHERE id = 12;
         UPDATE t SET b = CONCAT(LEFT(b, 1), 'x') WHERE id = 13;
         UPDATE t SET vc = CONCAT(vc, ' ') WHERE id = 14;
         UPDATE t SET kr = CONVERT('한국' USING euckr) WHERE id = 15;
         UPDATE t SET e = '' WHERE id = 17;
         UPDATE t SET ts = ts + INTERVAL 1 SECOND WHERE id = 18;
         UPDATE t SET bits = bits ^ 256 WHERE id = 19;
         UPDATE t SET inv = 8 WHERE id = 20;
         DELETE FROM t WHERE id = 2999;
         INSERT INTO t (id, d) VALUES (5000, 1);
         UPDATE t SET id = 6000 WHERE id = 30;
         UPDATE `주문 항목` SET v = 'y' WHERE `지역` = 'JP' AND n = 4;
         DELETE FROM child WHERE id = 100;
         INSERT INTO nokey VALUES (1, 'dup');"
            .as_bytes(),
    );
    let (code, j, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 1, "{log}");
    let diffs = j["differences"].as_array().cloned().unwrap_or_default();
    let find = |table: &str, key: &str, kind: &str| {
        diffs.iter().find(|d| {
            d["table"] == table
                && d["kind"] == kind
                && d["key"]
                    .as_object()
                    .is_some_and(|k| k.values().any(|v| v == key))
        })
    };
    for (id, col) in [
        ("10", "d"),
        ("11", "dt"),
        ("12", "f"),
        ("13", "b"),
        ("14", "vc"),
        ("15", "kr"),
        ("17", "e"),
        ("18", "ts"),
        ("19", "bits"),
        ("20", "inv"),
    ] {
        let d = find("t", id, "different").unwrap_or_else(|| panic!("t id {id} not reported: {j}"));
        assert_eq!(d["columns"], serde_json::json!([col]), "{d}");
    }
    assert!(find("t", "2999", "missing").is_some(), "{j}");
    assert!(find("t", "5000", "extra").is_some(), "{j}");
    assert!(
        find("t", "30", "missing").is_some() && find("t", "6000", "extra").is_some(),
        "{j}"
    );
    assert!(find("주문 항목", "4", "different").is_some(), "{j}");
    assert!(find("child", "100", "missing").is_some(), "{j}");
    assert_eq!(
        j["keyless_tables_differing"],
        serde_json::json!(["v.nokey"]),
        "{j}"
    );
    assert_eq!(j["differences_total"], 16, "{j}");

    // --repair fixes every keyed row (the keyless table is reported, not repaired)
    dst.sql("SET sql_log_bin = 0; DELETE FROM v.nokey WHERE a = 1 LIMIT 1");
    let (code, j, log) = verify(&src, &dst, &state, &["--repair"]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(j["repaired"], 16, "{j}");
    let (code, _, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 0, "{log}");
    assert_same_multiset(&src, &dst, "v");
    // the repair went through the target's binlog (its replica gets it)
    assert!(dst.sql("SHOW BINLOG EVENTS").contains("v"));
    // a schema difference is reported as such (and fails the verify)
    dst.sql("SET sql_log_bin = 0; ALTER TABLE v.t MODIFY vc VARCHAR(21)");
    let (code, j, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 1, "{log}");
    assert_eq!(j["differences_total"], 0, "{j}");
    let objs: Vec<String> = j["schema_differences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| d["object"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(objs, vec!["column v.t.vc".to_string()], "{j}");
    dst.sql("SET sql_log_bin = 0; ALTER TABLE v.t MODIFY vc VARCHAR(20)");
    let (code, _, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 0, "{log}");
    // status shows the last verify
    let out = migrate(&src.url(), &dst.url(), &state, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status");
    assert_eq!(s["verify"]["identical"], true, "{s}");

    // large differing ranges: a block missing on the target, a block extra on it (both larger
    // than a row-by-row comparison takes: narrowed by sub-ranges, split by the side holding
    // more rows) and one changed value among thousands of equal rows
    dst.sql(
        "SET sql_log_bin = 0; USE v; DELETE FROM v.big WHERE id <= 5200;
         INSERT INTO v.big SELECT 100000 + seq, 'extra' FROM seq_1_to_5200;
         UPDATE v.big SET v = 'changed' WHERE id = 7000;",
    );
    let (code, j, log) = verify(&src, &dst, &state, &["--max-report-rows", "20000"]);
    assert_eq!(code, 1, "{log}");
    assert_eq!(j["differences_total"], 10401, "{log}");
    let diffs = j["differences"].as_array().cloned().unwrap_or_default();
    let has = |key: &str, kind: &str| {
        diffs
            .iter()
            .any(|d| d["table"] == "big" && d["kind"] == kind && d["key"]["id"] == key)
    };
    assert!(has("1", "missing") && has("5200", "missing"), "{log}");
    assert!(has("100001", "extra") && has("105200", "extra"), "{log}");
    assert!(has("7000", "different"), "{log}");
    assert!(
        !has("5201", "missing") && !has("6999", "different"),
        "{log}"
    );
    // --max-report-rows caps the listing, not the count
    let (code, j, _) = verify(&src, &dst, &state, &["--max-report-rows", "3"]);
    assert_eq!(code, 1);
    assert_eq!(j["differences_total"], 10401, "{j}");
    assert_eq!(j["differences"].as_array().map(Vec::len), Some(3), "{j}");

    // killed -9 in the middle of a table: the rerun continues after the last chunk compared and
    // reaches the same verdict
    let mut continued = false;
    for _attempt in 0..5 {
        let mut v = migrate_cmd(
            &src.url(),
            &dst.url(),
            &state,
            &[
                "verify",
                "--restart",
                "--workers",
                "1",
                "--round-chunks",
                "1",
                "--chunk-rows",
                "1000",
                "--chunk-time",
                "0.0001",
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("verify");
        let t = std::time::Instant::now();
        let mut seen = false;
        while t.elapsed().as_secs() < 60 && v.try_wait().ok().flatten().is_none() {
            if in_progress_tables(&state) > 0 {
                seen = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = v.kill();
        let _ = v.wait();
        if !seen {
            continue;
        }
        let (code, j, log) = verify(&src, &dst, &state, &["--max-report-rows", "20000"]);
        assert_eq!(code, 1, "{log}");
        assert!(
            log.contains("continuing after the last chunk compared"),
            "{log}"
        );
        assert_eq!(j["differences_total"], 10401, "{log}");
        continued = true;
        break;
    }
    assert!(continued, "verify never seen in the middle of a table");

    // connections dropped under it (a VPN that drops them): verify reconnects, compares the
    // interrupted chunks again in new snapshots, and reaches the same verdict
    let report = dir.path().join("dropped.json");
    let v = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "verify",
            "--restart",
            "--workers",
            "1",
            "--round-chunks",
            "1",
            "--chunk-rows",
            "1000",
            "--chunk-time",
            "0.0001",
            "--max-report-rows",
            "20000",
            "--report",
            &report.display().to_string(),
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("verify");
    // every connection verify holds, killed twice while it runs (the next use of each fails)
    let mut rounds_killed = 0;
    let t = std::time::Instant::now();
    while rounds_killed < 2 && t.elapsed().as_secs() < 60 {
        let ids = src.sql(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'root' AND ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump')",
        );
        let mut killed = 0;
        for id in ids.lines() {
            if src.try_sql(&format!("KILL CONNECTION {id}")).is_ok() {
                killed += 1;
            }
        }
        if killed >= 1 {
            rounds_killed += 1;
            std::thread::sleep(std::time::Duration::from_millis(150));
        } else {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let killed = rounds_killed;
    let out = v.wait_with_output().expect("verify");
    let log = stderr(&out);
    assert!(killed > 0, "no verify query seen to kill");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("trying again"), "{log}");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(j["differences_total"], 10401, "{log}");

    // repaired, then identical, and mariadb-dump of both sides equal
    let (code, j, log) = verify(&src, &dst, &state, &["--repair"]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(j["repaired"], 10401, "{j}");
    let (code, _, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 0, "{log}");
    assert_same_multiset(&src, &dst, "v");
}

/// Tables the state file shows verify in the middle of (a chunk cursor recorded).
fn in_progress_tables(state: &std::path::Path) -> i64 {
    rusqlite::Connection::open_with_flags(state, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM verify_tables WHERE cursor IS NOT NULL",
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

#[test]
fn no_false_difference_under_writes() {
    let src = Server::source("vw-src");
    let dst = Server::target("vw-dst");
    src.script(SCHEMA.as_bytes());
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "v"],
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (port, stop) = (src.port, stop.clone());
        std::thread::spawn(move || {
            let s = Server::attach("vw-writer", port);
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = i % 3000 + 1;
                let _ = s.try_sql(&format!(
                    "USE v; UPDATE t SET d = d + 1, dt = NOW(6) WHERE id IN (1, 2, 3);
                     BEGIN; DELETE FROM t WHERE id = {id}; INSERT INTO t (id, d, vc) VALUES ({id}, {i}, 'again'); COMMIT;
                     UPDATE parent SET code = code + 100000 WHERE id = {p};
                     UPDATE `주문 항목` SET v = '{i}' WHERE n = {n};
                     INSERT INTO nokey VALUES ({i} % 10, 'w');",
                    p = i % 200 + 1,
                    n = i % 500 + 1
                ));
            }
        })
    };
    for round in 0..3 {
        let (code, j, log) = verify(&src, &dst, &state, &[]);
        assert_eq!(
            code, 0,
            "round {round}: a false difference under writes: {j}\n{log}"
        );
    }
    // with follow running: verify pauses it at each round's GTID through the state store, and
    // follow goes on afterwards
    let follow_log = dir.path().join("follow.log");
    let follow = migrate_cmd(&src.url(), &dst.url(), &state, &["follow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&follow_log).expect("log"))
        .spawn()
        .expect("follow");
    let t = std::time::Instant::now();
    loop {
        let out = migrate(&src.url(), &dst.url(), &state, &["status", "--json"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if j["follow"]["state"] == "running" {
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "follow did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for round in 0..2 {
        let (code, j, log) = verify(&src, &dst, &state, &[]);
        assert_eq!(
            code,
            0,
            "round {round} with follow running: {j}\n{log}\nfollow: {}",
            std::fs::read_to_string(&follow_log).unwrap_or_default()
        );
        assert!(log.contains("pausing it"), "{log}");
        assert!(
            j["target_sync_seconds_max"]
                .as_f64()
                .is_some_and(|s| s < 30.0),
            "{j}"
        );
    }
    // verify killed -9 (perhaps while follow is paused for it): follow resumes by itself, a
    // rerun reaches the same verdict
    let report = dir.path().join("killed.json");
    let mut v = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "verify",
            "--chunk-rows",
            "50",
            "--report",
            &report.display().to_string(),
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("verify");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    v.kill().expect("kill -9");
    let _ = v.wait();
    src.sql("INSERT INTO v.t (id, d) VALUES (90001, 1)");
    let t = std::time::Instant::now();
    while dst
        .try_sql("SELECT COUNT(*) FROM v.t WHERE id = 90001")
        .ok()
        .as_deref()
        != Some("1")
    {
        assert!(
            t.elapsed().as_secs() < 20,
            "follow stayed paused after verify was killed: {}",
            std::fs::read_to_string(&follow_log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let finished = report.exists();
    // on a loaded machine the kill can land before the verify began comparing (nothing to
    // continue then)
    let began = rusqlite::Connection::open(&state)
        .and_then(|c| {
            c.query_row(
                "SELECT value FROM meta WHERE key = 'verify.in_progress'",
                [],
                |r| r.get::<_, String>(0),
            )
        })
        .is_ok_and(|v| v == "1");
    let (code, j, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 0, "after a killed verify: {j}\n{log}");
    if !finished && began {
        assert!(log.contains("continuing the verify"), "{log}");
    }
    let mut follow = follow;
    assert!(
        follow.try_wait().expect("wait").is_none(),
        "follow must keep running"
    );
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(follow.id().to_string())
        .status();
    let status = follow.wait().expect("follow");
    let flog = std::fs::read_to_string(&follow_log).unwrap_or_default();
    assert!(status.success(), "{flog}");
    assert!(
        flog.contains("paused at") && flog.contains("resumed at"),
        "{flog}"
    );
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    let (code, _, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 0, "{log}");
}

/// A table created on the source after the snapshot (follow created and filled it on the
/// target) is compared like the copied ones.
#[test]
fn a_table_created_after_the_snapshot_is_verified() {
    let src = Server::source("vn-src");
    let dst = Server::target("vn-dst");
    src.sql("CREATE DATABASE v; CREATE TABLE v.a (id INT PRIMARY KEY); INSERT INTO v.a VALUES (1)");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "v"],
    ));
    src.sql(
        "CREATE TABLE v.later (id INT PRIMARY KEY, note VARCHAR(20)); \
         INSERT INTO v.later SELECT seq, CONCAT('n', seq) FROM v.seq_1_to_300",
    );
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    ));
    let (code, j, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(j["tables"], 2, "{j}");
    dst.sql("SET sql_log_bin = 0; UPDATE v.later SET note = 'x' WHERE id = 7");
    let (code, _, log) = verify(&src, &dst, &state, &[]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("v.later (id=7): differs in note"), "{log}");
}

/// The link to the source black-holed in the middle of a verify (no reset reaches either
/// end): the stall watchdog (`?stall-timeout=`) finds the silent connection, kills it on the
/// source and the verify goes on over new connections to the same verdict.
#[test]
fn a_verify_through_a_stalling_link_reaches_its_verdict() {
    let src = Server::source("vs-src");
    let dst = Server::target("vs-dst");
    src.sql(
        "CREATE DATABASE v; USE v; CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;
         INSERT INTO big SELECT seq, CONCAT('b', seq) FROM seq_1_to_30000;",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "v"],
    ));
    dst.sql("SET sql_log_bin = 0; UPDATE v.big SET v = 'x' WHERE id = 20000");
    let report = dir.path().join("report.json");
    let report = report.display().to_string();
    let args = [
        "verify",
        "--chunk-rows",
        "500",
        "--restart",
        "--report",
        &report,
    ];
    // what a whole verify reads from the source, to stall the next one halfway
    let whole = proxy::Proxy::start(src.port);
    let out = migrate(&whole.url(), &dst.url(), &state, &args);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let sp = proxy::Proxy::start(src.port);
    sp.stall_after(whole.server_bytes() / 2);
    let out = migrate(
        &format!("{}&stall-timeout=2", sp.url()),
        &dst.url(),
        &state,
        &args,
    );
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(sp.stalled() > 0, "the link never stalled: {log}");
    assert!(log.contains("the link stalled"), "no stall was seen: {log}");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("v.big (id=20000): differs in v"), "{log}");
    // a chunk compared again after the stall is counted once
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    assert_eq!(j["rows"], 30000, "{j}");
}
