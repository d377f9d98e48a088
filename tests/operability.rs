//! Running migrate for a week (issue 7): migrations isolated from each other on one target, a
//! locked state file, lag that grows while follow cannot apply, Prometheus-conventional metrics,
//! runs recorded after a crash, grants scoped per database, JSON logs, config files.

mod support;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The value of the first series of the metrics text starting with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(secs), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_json(src: &Server, dst: &Server, state: &Path) -> serde_json::Value {
    let out = migrate(&src.url(), &dst.url(), state, &["status", "--json"]);
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).expect("status --json")
}

fn spawn_follow(src: &Server, dst: &Server, state: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["follow"];
    args.extend_from_slice(extra);
    migrate_cmd(&src.url(), &dst.url(), state, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("follow")
}

fn term(child: Child) -> String {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "SIGTERM must end follow with 0: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Two migrations (a rehearsal of `shop`, the real `bigshop`) into one target server, each
/// with its own state file: they run side by side and neither moves the other's position; one
/// that overlaps is refused, and so is a state file pointed at a target without its row. A
/// second engine on one state file is refused with the first one's pid.
#[test]
fn migrations_into_one_target_are_isolated() {
    let src = Server::source("iso-src");
    let dst = Server::target("iso-dst");
    src.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.o (id INT PRIMARY KEY, v INT);
         CREATE DATABASE bigshop; CREATE TABLE bigshop.o (id INT PRIMARY KEY, v INT);
         INSERT INTO shop.o SELECT seq, seq FROM shop.seq_1_to_100; INSERT INTO bigshop.o SELECT seq, seq FROM shop.seq_1_to_100;",
    );
    let dir = tempdir();
    let (s1, s2) = (
        dir.path().join("shop.sqlite"),
        dir.path().join("big.sqlite"),
    );
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &s1,
        &["snapshot", "--databases", "shop"],
    ));
    src.sql("UPDATE shop.o SET v = v + 1000 WHERE id <= 10");
    // the second snapshot must not reset the first migration's position
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &s2,
        &["snapshot", "--databases", "bigshop"],
    ));
    src.sql("UPDATE bigshop.o SET v = v + 2000 WHERE id <= 20; DELETE FROM shop.o WHERE id = 50;");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &s2,
        &["follow", "--until-caught-up"],
    ));
    // bigshop's follow moved only its own row; shop still replays its writes
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &s1,
        &["follow", "--until-caught-up"],
    ));
    assert_same(&src, &dst, "shop");
    assert_same(&src, &dst, "bigshop");
    assert_eq!(dst.sql("SELECT COUNT(*) FROM _migrate.checkpoints"), "2");

    // both running at once, with writes to both
    let f1 = spawn_follow(&src, &dst, &s1, &[]);
    let f2 = spawn_follow(&src, &dst, &s2, &[]);
    for i in 0..30 {
        src.sql(&format!(
            "UPDATE shop.o SET v = v + 1 WHERE id = {0}; UPDATE bigshop.o SET v = v + 1 WHERE id = {0}; INSERT INTO bigshop.o VALUES ({1}, 0);",
            i + 1,
            1000 + i
        ));
    }
    // a second follow on the same state file: refused at once, naming the running one
    let out = migrate(&src.url(), &dst.url(), &s1, &["follow"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("already running") && e.contains(&format!("pid {}", f1.id())),
        "{e}"
    );
    let pos = src.sql("SELECT @@gtid_binlog_pos");
    for (s, name) in [(&s1, "shop"), (&s2, "bigshop")] {
        wait_until(&format!("{name} caught up"), 60, || {
            status_json(&src, &dst, s)["follow"]["applied_gtid"] == pos.as_str()
        });
    }
    term(f1);
    term(f2);
    assert_same(&src, &dst, "shop");
    assert_same(&src, &dst, "bigshop");

    // a third migration of shop into the same target is refused (it would fight the first)
    let s3 = dir.path().join("again.sqlite");
    src.sql("CREATE DATABASE fresh; CREATE TABLE fresh.t (id INT PRIMARY KEY)");
    let out = migrate(
        &src.url(),
        &dst.url(),
        &s3,
        &["snapshot", "--databases", "fresh,shop", "--reuse-target"],
    );
    assert_ok(&out);
    assert!(stderr(&out).contains("replaces it"), "{}", stderr(&out));
    // ... --reuse-target took shop over: the first migration's follow is refused clearly
    let out = migrate(
        &src.url(),
        &dst.url(),
        &s1,
        &["follow", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("_migrate.checkpoints"),
        "{}",
        stderr(&out)
    );
    let s4 = dir.path().join("overlap.sqlite");
    let out = migrate(
        &src.url(),
        &dst.url(),
        &s4,
        &["snapshot", "--databases", "bigshop"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    // a state file pointed at another target (which has no row for it) is refused
    let other = Server::target("iso-other");
    let out = migrate(
        &src.url(),
        &other.url(),
        &s2,
        &["follow", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("_migrate.checkpoints") && stderr(&out).contains("state file"),
        "{}",
        stderr(&out)
    );
    assert!(
        other.try_sql("USE bigshop").is_err(),
        "nothing may be written"
    );
}

/// While the target is down, lag and "behind" grow (status and metrics), `up` is 0 and the
/// last applied timestamp stays put; `MIGRATE_METRICS_ADDR` in the environment does not make
/// `status` or `check` bind it; after the outage the backoff starts over, so one later killed
/// connection costs well under a second, not the outage's 30 s backoff.
#[test]
fn lag_grows_while_follow_cannot_apply() {
    let src = Server::source("lag-src");
    let mut dst = Server::target("lag-dst");
    src.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT); INSERT INTO app.t SELECT seq, 0 FROM app.seq_1_to_10;");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "app"],
    ));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = migrate_cmd(&src.url(), &dst.url(), &state, &["follow"])
        .env("MIGRATE_METRICS_ADDR", &addr)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("follow");
    // every series from the start, with HELP and TYPE
    wait_until("metrics served", 30, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let m = http_get(port, "/metrics");
    for name in [
        "migrate_transactions_applied_total",
        "migrate_rows_applied_total",
        "migrate_follow_lag_seconds",
        "migrate_follow_last_applied_timestamp_seconds",
        "migrate_up",
        "migrate_reconnects_total",
    ] {
        assert!(
            m.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{m}"
        );
        assert!(
            m.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}:\n{m}"
        );
    }
    assert!(m.contains("migrate_build_info{version=\""), "{m}");
    assert!(
        m.contains("migrate_rows_applied_total{table=\"app.t\",kind=\"delete\"} 0"),
        "counters start at 0:\n{m}"
    );
    src.sql("UPDATE app.t SET v = 1 WHERE id = 1; DELETE FROM app.t WHERE id = 10;");
    wait_until("caught up", 30, || {
        metric(
            &http_get(port, "/metrics"),
            "migrate_rows_applied_total{table=\"app.t\",kind=\"delete\"}",
        ) == Some(1.0)
    });
    let m = http_get(port, "/metrics");
    assert_eq!(metric(&m, "migrate_up"), Some(1.0), "{m}");
    let last_ts =
        metric(&m, "migrate_follow_last_applied_timestamp_seconds").expect("last applied");
    assert!(last_ts > 1.7e9, "{m}");

    // status and check run while follow holds the address from the environment
    for verb in [&["status"][..], &["check", "--databases", "app"][..]] {
        let out = migrate_cmd(&src.url(), &dst.url(), &state, verb)
            .env("MIGRATE_METRICS_ADDR", &addr)
            .output()
            .expect("run");
        assert!(
            !stderr(&out).contains("address"),
            "{verb:?} must not bind the metrics address: {}",
            stderr(&out)
        );
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{verb:?}: {}",
            stderr(&out)
        );
    }

    // the target goes away; the source moves on
    dst.stop();
    for i in 0..50 {
        src.sql(&format!(
            "UPDATE app.t SET v = v + 1 WHERE id = {}",
            i % 9 + 1
        ));
    }
    std::thread::sleep(Duration::from_secs(6));
    let j = status_json(&src, &dst, &state);
    let lag = j["follow"]["lag_seconds"].as_f64().expect("lag");
    assert!(lag >= 4.0, "lag must grow during the outage: {j}");
    assert!(
        j["follow"]["events_behind"].as_u64().unwrap_or(0) >= 50,
        "{j}"
    );
    let m = http_get(port, "/metrics");
    assert!(
        metric(&m, "migrate_follow_lag_seconds").unwrap_or(0.0) >= 4.0,
        "{m}"
    );
    assert_eq!(metric(&m, "migrate_up"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "migrate_follow_last_applied_timestamp_seconds"),
        Some(last_ts),
        "{m}"
    );
    std::thread::sleep(Duration::from_secs(6));
    // by now the backoff has grown to several seconds
    dst.restart();
    wait_until("caught up after the outage", 60, || {
        dst.try_sql("SELECT SUM(v) FROM app.t").ok().as_deref()
            == src.try_sql("SELECT SUM(v) FROM app.t").ok().as_deref()
    });
    wait_until("lag back to 0", 30, || {
        status_json(&src, &dst, &state)["follow"]["lag_seconds"].as_f64() == Some(0.0)
    });
    // one killed connection later: a fresh backoff (200 ms), not the outage's
    std::thread::sleep(Duration::from_secs(1));
    let ids = dst.sql("SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND USER = 'root'");
    assert!(!ids.is_empty(), "the applier's connection is on the target");
    for id in ids.lines() {
        let _ = dst.try_sql(&format!("KILL {id}"));
    }
    src.sql("UPDATE app.t SET v = 777 WHERE id = 2");
    let t = Instant::now();
    wait_until("applied after a killed connection", 30, || {
        dst.try_sql("SELECT v FROM app.t WHERE id = 2")
            .ok()
            .as_deref()
            == Some("777")
    });
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the reconnect after a single killed connection took {:?}: the backoff did not start over",
        t.elapsed()
    );
    let log = term(child);
    assert!(log.contains("target"), "{log}");
    assert!(
        !log.contains("mysql://"),
        "connection messages name the side, not a URL: {log}"
    );
}

/// kill -9 is recorded as killed; a clean stop as ok; `check` after the engine's own partial
/// snapshot is not blocked by the databases it created; JSON logs are JSON only; a config file
/// holds verb options and rejects unknown keys.
#[test]
fn runs_logs_and_config() {
    let src = Server::source("run-src");
    let dst = Server::target("run-dst");
    src.sql("CREATE DATABASE shop; CREATE TABLE shop.big (id INT PRIMARY KEY, pad VARCHAR(200)); INSERT INTO shop.big SELECT seq, REPEAT('x', 200) FROM shop.seq_1_to_200000;");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    // a snapshot killed -9 half-way
    let mut child = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "shop",
            "--threads",
            "1",
            "--chunk-rows",
            "2000",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("snapshot");
    wait_until("a few chunks copied", 60, || {
        dst.try_sql("SELECT COUNT(*) FROM shop.big")
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 4000)
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
    let j = status_json(&src, &dst, &state);
    assert_eq!(j["snapshot"]["run"]["outcome"], "killed", "{j}");
    assert_eq!(j["snapshot"]["state"], "killed", "{j}");
    let out = migrate(&src.url(), &dst.url(), &state, &["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("killed"));
    // check reads the state file: the partial copy is this migration's, not a blocker
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["check", "--databases", "shop", "--json"],
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check json");
    assert_eq!(c["blockers"], 0, "{c}");
    // ... while with another state file the same database is a blocker
    let out = migrate(
        &src.url(),
        &dst.url(),
        &dir.path().join("other.sqlite"),
        &["check", "--databases", "shop", "--json"],
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check json");
    assert_eq!(c["blockers"], 1, "{c}");

    // resumed from a config file holding a verb option, JSON logs on stderr
    let cfg = dir.path().join("migrate.toml");
    std::fs::write(
        &cfg,
        "log_format = \"json\"\ndatabases = [\"shop\"]\n\n[snapshot]\nthreads = 1\nchunk_rows = 5000\n",
    )
    .expect("config");
    let out = migrate_cmd(&src.url(), &dst.url(), &state, &["snapshot"])
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        !err.contains('\x1b'),
        "no colour codes when stderr is not a terminal"
    );
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() || v.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert_same(&src, &dst, "shop");
    let j = status_json(&src, &dst, &state);
    assert_eq!(j["snapshot"]["run"]["outcome"], "ok", "{j}");
    assert!(
        j["snapshot"]["run"]["started_at"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "{j}"
    );
    // a follow stopped with SIGTERM: ok, not killed
    let f = spawn_follow(&src, &dst, &state, &[]);
    wait_until("follow running", 30, || {
        status_json(&src, &dst, &state)["follow"]["state"] == "running"
    });
    term(f);
    let j = status_json(&src, &dst, &state);
    assert_eq!(j["follow"]["run"]["outcome"], "ok", "{j}");
    assert_eq!(j["follow"]["state"], "stopped", "{j}");

    // the documented example config holds every option and parses (status reads only the
    // state file, so its servers need not exist; its password files are overridden)
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "x\n").expect("pw");
    let out = Command::new(support::migrate_bin())
        .arg("--config")
        .arg(root().join("docs").join("migrate.example.toml"))
        .arg("--state")
        .arg(&state)
        .arg("--source-password-file")
        .arg(&pw)
        .arg("--target-password-file")
        .arg(&pw)
        .args(["status", "--json"])
        .output()
        .expect("run");
    assert_ok(&out);

    // a bounded follow (--until-caught-up) stopped by a signal before its goal is not a
    // success: exit 130, recorded as interrupted (a script's `follow --until-caught-up &&
    // next-step` must not go on)
    src.sql("UPDATE shop.big SET pad = 'y' WHERE id < 10");
    let mut f = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--max-source-load", "0"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("follow");
    std::thread::sleep(Duration::from_secs(3));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(f.id().to_string())
        .status();
    assert_eq!(f.wait().expect("wait").code(), Some(130));
    let j = status_json(&src, &dst, &state);
    assert_eq!(j["follow"]["run"]["outcome"], "interrupted", "{j}");

    // an unknown key in the config is an error naming it
    std::fs::write(&cfg, "[snapshot]\nthreds = 4\n").expect("config");
    let out = migrate_cmd(&src.url(), &dst.url(), &state, &["status"])
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("threds"), "{}", stderr(&out));
}

/// Grants scoped to the migrated databases are enough (check passes, snapshot and follow run
/// with exactly README's grants); objects of another DEFINER need SET USER, which check names
/// with the exact GRANT; without SELECT on mysql.proc, check says so and snapshot refuses
/// (information_schema would hide the routines).
#[test]
fn scoped_grants_and_definers() {
    let src = Server::source("gr-src");
    let dst = Server::target("gr-dst");
    src.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v INT); INSERT INTO shop.t VALUES (1, 1);
         CREATE DEFINER = root@localhost VIEW shop.v AS SELECT id FROM shop.t;
         CREATE DEFINER = root@localhost PROCEDURE shop.p() SELECT 1;
         CREATE DATABASE other; CREATE TABLE other.x (id INT PRIMARY KEY);
         CREATE USER mig@'127.0.0.1' IDENTIFIED BY 'pw-src';
         GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO mig@'127.0.0.1';
         GRANT SELECT, SHOW VIEW, EVENT ON `shop`.* TO mig@'127.0.0.1';",
    );
    let privs = "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER";
    dst.sql(&format!(
        "CREATE USER mig@'127.0.0.1' IDENTIFIED BY 'pw-dst';
         GRANT {privs} ON `shop`.* TO mig@'127.0.0.1'; GRANT {privs} ON `_migrate`.* TO mig@'127.0.0.1';"
    ));
    let dir = tempdir();
    let (spw, tpw) = (dir.path().join("s.pw"), dir.path().join("t.pw"));
    std::fs::write(&spw, "pw-src\n").expect("pw");
    std::fs::write(&tpw, "pw-dst\n").expect("pw");
    let su = format!("mysql://mig@127.0.0.1:{}?ssl-mode=disabled", src.port);
    let tu = format!("mysql://mig@127.0.0.1:{}?ssl-mode=disabled", dst.port);
    let state = dir.path().join("s.sqlite");
    let run = |args: &[&str]| {
        let mut c = migrate_cmd(&su, &tu, &state, args);
        c.env("MIGRATE_SOURCE_PASSWORD_FILE", &spw)
            .env("MIGRATE_TARGET_PASSWORD_FILE", &tpw);
        c.output().expect("run")
    };
    let fix = |out: &std::process::Output, server: &str| -> String {
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("check json");
        j["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["server"] == server && f["subject"] == "grants")
            .and_then(|f| f["fix"].as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let out = run(&["check", "--databases", "shop", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        fix(&out, "source"),
        "GRANT SELECT ON `mysql`.`proc` TO 'mig'@'127.0.0.1';"
    );
    // the source account cannot see root's procedure: snapshot refuses instead of leaving it out
    let out = run(&["snapshot", "--databases", "shop"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("mysql.proc"), "{}", stderr(&out));

    src.sql("GRANT SELECT ON mysql.proc TO mig@'127.0.0.1'");
    let out = run(&["check", "--databases", "shop", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(fix(&out, "source"), "");
    assert_eq!(
        fix(&out, "target"),
        "GRANT SET USER ON *.* TO 'mig'@'127.0.0.1';"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("view shop.v"));

    dst.sql("GRANT SET USER ON *.* TO mig@'127.0.0.1'");
    let out = run(&["check", "--databases", "shop", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // another database than the grants name is reported per database
    let out = run(&["check", "--databases", "shop,other", "--json"]);
    assert_eq!(
        fix(&out, "source"),
        "GRANT SELECT, SHOW VIEW, EVENT ON `other`.* TO 'mig'@'127.0.0.1';"
    );

    let out = run(&["snapshot", "--databases", "shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    src.sql("INSERT INTO shop.t VALUES (2, 2); CREATE DEFINER = root@localhost VIEW shop.v2 AS SELECT 2 AS x; ALTER TABLE shop.t ADD COLUMN w INT;");
    let out = run(&["follow", "--until-caught-up"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same(&src, &dst, "shop");
    assert_eq!(
        dst.sql("SELECT GROUP_CONCAT(ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'shop'"),
        "p"
    );
    assert_eq!(
        dst.sql("SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_NAME = 'v2'"),
        "root@localhost"
    );
}
