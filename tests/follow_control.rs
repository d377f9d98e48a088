//! follow's stop conditions, its observability while running, and its non-recoverable errors.

mod support;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn until_gtid_metrics_status_ddl_stop_and_purged_binlog() {
    let src = Server::source("c-src");
    let dst = Server::target("c-dst");
    src.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT); INSERT INTO app.t VALUES (1, 0);");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "app"],
    ));

    // ten transactions; --until-gtid stops exactly after the fifth
    for i in 1..=10 {
        src.sql(&format!("UPDATE app.t SET v = {i} WHERE id = 1"));
    }
    let pos = src.sql("SELECT @@gtid_binlog_pos");
    let (prefix, last) = pos.rsplit_once('-').expect("gtid");
    let last: u64 = last.parse().expect("seq");
    let fifth = format!("{prefix}-{}", last - 5);
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--databases", "app", "--until-gtid", &fifth],
    );
    assert_ok(&out);
    assert_eq!(dst.sql("SELECT v FROM app.t"), "5");
    assert_eq!(dst.sql("SELECT gtid_pos FROM _migrate.checkpoints"), fifth);

    // while follow runs: status reads the state file, metrics are served
    let metrics_port = free_port();
    let mut child = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--databases", "app"],
    )
    .arg("--metrics-addr")
    .arg(format!("127.0.0.1:{metrics_port}"))
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("follow");
    let t = Instant::now();
    loop {
        if dst.sql("SELECT v FROM app.t") == "10" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "follow did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let out = migrate(&src.url(), &dst.url(), &state, &["status", "--json"]);
    assert_ok(&out);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(j["follow"]["applied_gtid"], pos);
    assert!(j["follow"]["lag_seconds"].as_f64().is_some());
    let m = http_get(metrics_port, "/metrics");
    for name in [
        "migrate_follow_lag_seconds",
        "migrate_transactions_applied_total",
        "migrate_rows_applied_total{table=\"app.t\",kind=\"upsert\"}",
    ] {
        assert!(m.contains(name), "{name} missing from metrics:\n{m}");
    }
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    assert!(child.wait().expect("wait").success(), "SIGINT must exit 0");

    // a bare `follow` replicates what the snapshot selected: another database is left alone
    src.sql("CREATE DATABASE other; CREATE TABLE other.x (id INT PRIMARY KEY); INSERT INTO other.x VALUES (1);");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    ));
    assert_eq!(dst.sql("SELECT v FROM app.t"), "10");
    assert!(
        dst.try_sql("USE other").is_err(),
        "an unselected database reached the target"
    );

    // --max-source-load: while the source is busier than allowed, follow waits (never drops)
    src.sql("UPDATE app.t SET v = 100");
    let mut child = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "follow",
            "--databases",
            "app",
            "--until-caught-up",
            "--max-source-load",
            "0",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("follow");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "a throttled follow must not finish"
    );
    assert_eq!(dst.sql("SELECT v FROM app.t"), "10");
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().expect("wait");
    assert!(String::from_utf8_lossy(&out.stderr).contains("pausing reads"));
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--databases", "app", "--until-caught-up"],
    ));
    assert_eq!(dst.sql("SELECT v FROM app.t"), "100");

    // --on-ddl stop: exit 2 before the DDL, nothing applied past it
    src.sql("ALTER TABLE app.t ADD COLUMN w INT; UPDATE app.t SET v = 11;");
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "follow",
            "--databases",
            "app",
            "--until-caught-up",
            "--on-ddl",
            "stop",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DDL"), "{}", stderr(&out));
    assert_eq!(dst.sql("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 't'"), "2");
    // CREATE TABLE ... SELECT: DDL and rows in one transaction
    src.sql("CREATE TABLE app.c (PRIMARY KEY (id)) SELECT id, v FROM app.t; INSERT INTO app.c VALUES (2, 2);");
    // default exec applies it and the rows after it
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--databases", "app", "--until-caught-up"],
    );
    assert_ok(&out);
    assert_same(&src, &dst, "app");

    // the binlog the follower needs is purged: a clear error, exit 2, no retry loop
    let state2 = dir.path().join("s2.sqlite");
    let dst2 = Server::target("c-dst2");
    assert_ok(&migrate(
        &src.url(),
        &dst2.url(),
        &state2,
        &["snapshot", "--databases", "app"],
    ));
    src.sql(
        "UPDATE app.t SET v = 12; FLUSH BINARY LOGS; UPDATE app.t SET v = 13; FLUSH BINARY LOGS;",
    );
    purge_all_but_newest_binlog(&src);
    let t = Instant::now();
    let out = migrate(
        &src.url(),
        &dst2.url(),
        &state2,
        &["follow", "--databases", "app", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1236") && stderr(&out).contains("snapshot"),
        "{}",
        stderr(&out)
    );
    assert!(t.elapsed() < Duration::from_secs(30));
}
