//! `migrate cutover` (issue 9) against real servers: a switch under a continuous write load
//! loses or doubles no committed transaction; every abort path leaves the source writable and
//! follow running; a crash at every journal step leaves never both servers writable, and
//! `--rollback` / `--resume` reach a consistent outcome.

mod support;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const SCHEMA: &str = "
CREATE DATABASE shop; USE shop;
CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB;
CREATE TABLE stock (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB;
INSERT INTO stock VALUES (1, 0);
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40)) ENGINE=InnoDB;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('order ', NEW.id));
CREATE SEQUENCE ticket START WITH 100;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO DELETE FROM audit WHERE id < 0;
CREATE USER app@'%' IDENTIFIED BY 'app-pw';
GRANT SELECT, INSERT, UPDATE, DELETE ON shop.* TO app@'%';
";

/// The application: one transaction per order (insert it, count it in stock) through the
/// `app` account, on whichever server `switched` names; it logs the orders that committed.
struct App {
    stop: Arc<AtomicBool>,
    committed: Arc<Mutex<Vec<u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn app_sql(port: u16, sql: &str) -> bool {
    Command::new("mariadb")
        .args(["--no-defaults", "-uapp", "-h127.0.0.1", "-N", "-B"])
        .arg(format!("-P{port}"))
        .env("MYSQL_PWD", "app-pw")
        .arg("-e")
        .arg(sql)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

impl App {
    fn start(source_port: u16, switched: PathBuf) -> App {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, committed) = (stop.clone(), committed.clone());
            std::thread::spawn(move || {
                let mut id = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    id += 1;
                    let port = std::fs::read_to_string(&switched)
                        .ok()
                        .and_then(|p| p.trim().parse().ok())
                        .unwrap_or(source_port);
                    let ok = app_sql(
                        port,
                        &format!(
                            "BEGIN; INSERT INTO shop.orders VALUES ({id}, 'order'); \
                             UPDATE shop.stock SET n = n + 1 WHERE id = 1; COMMIT;"
                        ),
                    );
                    if ok {
                        committed.lock().unwrap().push(id);
                    }
                }
            })
        };
        App {
            stop,
            committed,
            thread: Some(thread),
        }
    }
    fn finish(mut self) -> Vec<u64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let v = self.committed.lock().unwrap().clone();
        v
    }
}

struct Setup {
    src: Server,
    dst: Server,
    _dir: tempfile::TempDir,
    state: PathBuf,
    follow: Child,
    follow_log: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        // a failed assertion must not leave follow running
        let _ = self.follow.kill();
        let _ = self.follow.wait();
    }
}

fn status(s: &Setup) -> serde_json::Value {
    let out = migrate(&s.src.url(), &s.dst.url(), &s.state, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn start_follow(src: &Server, dst: &Server, state: &Path, log: &Path) -> Child {
    let child = migrate_cmd(&src.url(), &dst.url(), state, &["follow"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("follow");
    let t = Instant::now();
    loop {
        let out = migrate(&src.url(), &dst.url(), state, &["status", "--json"]);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if j["follow"]["state"] == "running" && j["follow"]["lag_known"] == true {
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "follow did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

fn setup(name: &str) -> Setup {
    setup_with(name, &["--log-bin=mysql-bin"])
}

fn setup_with(name: &str, target_args: &[&str]) -> Setup {
    let src = Server::source(&format!("{name}-src"));
    let dst = Server::start(&format!("{name}-dst"), target_args);
    src.script(SCHEMA.as_bytes());
    // a trigger created by an euckr client, with a Korean literal ('사과' in euckr bytes): the
    // cutover creates it on the target in its own character set and collation
    src.script(b"SET NAMES euckr; CREATE TRIGGER shop.stock_note BEFORE UPDATE ON shop.stock FOR EACH ROW SET @stock_note = '\xBB\xE7\xB0\xFA'; \
        CREATE EVENT shop.note_sweep ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DO SET @note = '\xBB\xE7\xB0\xFA';");
    migrated(src, dst)
}

/// Snapshot `src` (its `shop` database) into `dst`, make `dst` read-only for applications,
/// start follow and run a clean verify.
fn migrated(src: Server, dst: Server) -> Setup {
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "shop"],
    ));
    // the target stays read-only for applications until the switch (the engine writes with
    // READ ONLY ADMIN)
    dst.sql("SET GLOBAL read_only = ON");
    let follow_log = dir.path().join("follow.log");
    let follow = start_follow(&src, &dst, &state, &follow_log);
    let out = migrate(&src.url(), &dst.url(), &state, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    Setup {
        src,
        dst,
        _dir: dir,
        state,
        follow,
        follow_log,
    }
}

/// Every order the application committed is on `server` exactly once, no other, and the
/// stock counter equals the number of committed transactions.
fn assert_committed_once(server: &Server, committed: &[u64], context: &str) {
    let on_server: Vec<u64> = server
        .sql("SELECT id FROM shop.orders WHERE note = 'order' ORDER BY id")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let mut want = committed.to_vec();
    want.sort();
    assert_eq!(on_server, want, "{context}");
    assert_eq!(
        server.sql("SELECT n FROM shop.stock"),
        committed.len().to_string(),
        "{context}"
    );
}

fn read_only(s: &Server) -> bool {
    s.sql("SELECT @@global.read_only") == "1"
}

fn cutover(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    // the reverse follow is started by the tests that use it (a spawned one would outlive a
    // test that does not roll back)
    let mut a = vec!["cutover", "--copy-users", "--reverse-follow", "manual"];
    a.extend_from_slice(args);
    let mut c = migrate_cmd(&s.src.url(), &s.dst.url(), &s.state, &a);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("cutover")
}

/// A new source write reaches the target (follow runs and is not paused).
fn follow_applies(s: &Setup, id: u64) {
    s.src
        .sql(&format!("INSERT INTO shop.orders VALUES ({id}, 'probe')"));
    let t = Instant::now();
    while s
        .dst
        .try_sql(&format!("SELECT COUNT(*) FROM shop.orders WHERE id = {id}"))
        .ok()
        .as_deref()
        != Some("1")
    {
        assert!(
            t.elapsed().as_secs() < 20,
            "follow does not apply probe {id} after the abort: {}\nstatus: {}",
            std::fs::read_to_string(&s.follow_log).unwrap_or_default(),
            status(s)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cutover_under_load_loses_nothing() {
    let mut s = setup("co");
    let dir = s.state.parent().expect("dir").to_path_buf();
    let switched = dir.join("switched");
    let app = App::start(s.src.port, switched.clone());
    std::thread::sleep(Duration::from_millis(1500));

    // readiness: the app account is missing on the target (listed as SQL, hash hidden)
    let out = migrate(
        &s.src.url(),
        &s.dst.url(),
        &s.state,
        &["cutover", "--dry-run"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("safe to cut over: no"), "{text}");
    assert!(text.contains("account app@%"), "{text}");
    assert!(
        text.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON `shop`.*"),
        "{text}"
    );
    assert!(
        !text.contains("app-pw") && !text.contains("PASSWORD '*"),
        "{text}"
    );
    assert!(text.contains("predicted write downtime"), "{text}");

    let report = dir.join("cutover.json");
    let hook = format!(
        "echo \"$MIGRATE_TARGET_PORT\" > {} && echo \"$MIGRATE_FINAL_GTID\" > {}",
        switched.display(),
        dir.join("final").display()
    );
    let out = cutover(
        &s,
        &[
            "--switch-command",
            &hook,
            "--report",
            &report.display().to_string(),
        ],
        &[],
    );
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{log}");
    std::thread::sleep(Duration::from_millis(1500));
    let committed = app.finish();

    // the switch: source read-only, target open, the hook saw the final GTID
    assert!(read_only(&s.src) && !read_only(&s.dst), "{log}");
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report")).expect("json");
    let downtime = r["downtime_seconds"].as_f64().expect("downtime_seconds");
    assert!(downtime > 0.0 && downtime < 5.0, "{r}");
    let final_gtid = r["final_gtid"].as_str().unwrap_or("").to_string();
    assert!(!final_gtid.is_empty(), "{r}");
    assert_eq!(
        std::fs::read_to_string(dir.join("final"))
            .unwrap_or_default()
            .trim(),
        final_gtid
    );
    // every committed order exactly once on the target, before and after the switch, and
    // the stock counter agrees
    assert_committed_once(&s.dst, &committed, &log);
    let source_port = s.src.port.to_string();
    assert!(
        committed.len() > 5,
        "the load committed too little to mean anything: {} ({source_port})",
        committed.len()
    );
    // the target was prepared: the trigger fires there now, the event is enabled, the
    // sequence is where the source's was
    assert!(s
        .dst
        .sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_NAME = 'orders_audit'")
        .eq("1"));
    let euckr_trigger = "SELECT ACTION_STATEMENT, HEX(ACTION_STATEMENT), CHARACTER_SET_CLIENT, COLLATION_CONNECTION, SQL_MODE \
         FROM information_schema.TRIGGERS WHERE TRIGGER_NAME = 'stock_note'";
    assert_eq!(s.src.sql(euckr_trigger), s.dst.sql(euckr_trigger));
    assert!(s.dst.sql(euckr_trigger).contains("euckr_korean_ci"));
    // an euckr event enabled by the cutover keeps its character set (ALTER EVENT stores the
    // session's)
    let euckr_event = "SELECT EVENT_DEFINITION, CHARACTER_SET_CLIENT, COLLATION_CONNECTION \
         FROM information_schema.EVENTS WHERE EVENT_NAME = 'note_sweep'";
    assert_eq!(s.src.sql(euckr_event), s.dst.sql(euckr_event));
    assert!(s.dst.sql(euckr_event).contains("euckr_korean_ci"));
    assert_eq!(
        s.dst
            .sql("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_NAME = 'note_sweep'"),
        "ENABLED"
    );
    assert_eq!(
        s.dst
            .sql("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_NAME = 'nightly'"),
        "ENABLED"
    );
    // follow stopped for the cutover, cleanly, and will not start again
    let st = s.follow.wait().expect("follow");
    assert!(
        st.success(),
        "{}",
        std::fs::read_to_string(&s.follow_log).unwrap_or_default()
    );
    let out = migrate(
        &s.src.url(),
        &s.dst.url(),
        &s.state,
        &["follow", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("switched"), "{}", stderr(&out));
    // the journal and status keep the audit trail
    let j = status(&s);
    assert_eq!(j["cutover"]["state"], "switched", "{j}");
    let steps: Vec<String> = j["cutover"]["journal"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["step"].as_str().unwrap_or(""),
                e["state"].as_str().unwrap_or("")
            )
        })
        .collect();
    for step in [
        "preflight:done",
        "freeze:done",
        "drain:done",
        "catch_up:done",
        "prove:done",
        "prepare:done",
        "switch:done",
    ] {
        assert!(steps.contains(&step.to_string()), "{steps:?}");
    }
    // --complete removes the engine's objects from the target
    let out = migrate(
        &s.src.url(),
        &s.dst.url(),
        &s.state,
        &["cutover", "--complete"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        s.dst
            .sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '_migrate'"),
        "0"
    );
}

#[test]
fn aborts_leave_the_source_writable_and_follow_running() {
    let mut s = setup("ca");
    // the hook fails: abort
    let out = cutover(&s, &["--switch-command", "echo no >&2; exit 3"], &[]);
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains("--switch-command failed") && log.contains("writable again"),
        "{log}"
    );
    assert!(!read_only(&s.src), "the source stayed read-only");
    assert_eq!(
        s.dst
            .sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'"),
        "0",
        "prepare was not undone"
    );
    follow_applies(&s, 900001);

    // lag above --max-lag: refused before any freeze
    let out = cutover(&s, &["--switch-command", "true", "--max-lag=-1"], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("above --max-lag"), "{text}");
    assert!(!read_only(&s.src));

    // a follower that does not answer: refused before any freeze
    std::process::Command::new("kill")
        .arg("-STOP")
        .arg(s.follow.id().to_string())
        .status()
        .expect("kill");
    let out = cutover(
        &s,
        &["--switch-command", "true", "--max-downtime", "1"],
        &[],
    );
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_ne!(out.status.code(), Some(0), "{log}");
    assert!(!read_only(&s.src), "{log}");
    std::process::Command::new("kill")
        .arg("-CONT")
        .arg(s.follow.id().to_string())
        .status()
        .expect("kill");
    follow_applies(&s, 900003);

    // the follower dies in the middle of the cutover (after the freeze): abort, writable
    let out = cutover(
        &s,
        &["--switch-command", "true"],
        &[("MIGRATE_CUTOVER_CRASH_AT", "drain:done")],
    );
    assert!(
        out.status.code().is_none(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert!(read_only(&s.src));
    let _ = s.follow.kill();
    let _ = s.follow.wait();
    let out = cutover(
        &s,
        &[
            "--resume",
            "--switch-command",
            "true",
            "--max-downtime",
            "5",
        ],
        &[],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("writable again"), "{log}");
    assert!(!read_only(&s.src));

    s.follow = start_follow(&s.src, &s.dst, &s.state, &s.follow_log);
    follow_applies(&s, 900004);

    // a writer that will not finish
    let mut writer = Command::new("mariadb")
        .args(["--no-defaults", "-uapp", "-h127.0.0.1"])
        .arg(format!("-P{}", s.src.port))
        .env("MYSQL_PWD", "app-pw")
        .arg("-e")
        .arg("BEGIN; UPDATE shop.stock SET n = n + 1000 WHERE id = 1; SELECT SLEEP(30); COMMIT;")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("writer");
    std::thread::sleep(Duration::from_millis(500));
    let out = cutover(
        &s,
        &["--drain-timeout", "1", "--switch-command", "true"],
        &[],
    );
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("still open after --drain-timeout"), "{log}");
    assert!(!read_only(&s.src));
    follow_applies(&s, 900002);

    // and with the writer killed (--kill-writers): the cutover goes through
    let out = cutover(
        &s,
        &[
            "--verify",
            "--drain-timeout",
            "0.5",
            "--kill-writers",
            "--switch-command",
            "true",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // --verify compared the copies first (follow running, paused per round)
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("identical"), "{text}");
    let _ = writer.wait();
    // the killed writer's update rolled back: not on the target
    assert_eq!(s.dst.sql("SELECT n < 1000 FROM shop.stock"), "1");
    let _ = s.follow.wait();
}

/// Cutover proves the rows at every key changed since the last verify: a target row that
/// differs from the source's (planted here after follow applied it) stops the cutover before
/// the freeze, and one changed between that proof and the freeze is caught by the `prove` step
/// during it; both leave the source writable and name the row.
#[test]
fn rows_changed_since_the_verify_are_proved() {
    let s = setup("pv");
    follow_applies(&s, 500);
    s.dst
        .sql("UPDATE shop.orders SET note = 'tampered' WHERE id = 500");
    let out = cutover(&s, &["--switch-command", "true"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("shop.orders (id=500) differs in note"),
        "{err}"
    );
    assert!(err.contains("nothing was frozen"), "{err}");
    assert!(!read_only(&s.src));
    s.dst
        .sql("UPDATE shop.orders SET note = 'probe' WHERE id = 500");

    // a change after the proof before the freeze: the cutover is stopped right after that
    // proof (at the freeze's start), the row changed and planted, then resumed
    let out = cutover(
        &s,
        &["--switch-command", "true"],
        &[("MIGRATE_CUTOVER_CRASH_AT", "freeze:started")],
    );
    assert!(out.status.code().is_none(), "{}", stderr(&out));
    follow_applies(&s, 501);
    s.dst
        .sql("UPDATE shop.orders SET note = 'tampered' WHERE id = 501");
    let out = cutover(&s, &["--resume", "--switch-command", "true"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("just before the freeze"), "{err}");
    assert!(
        err.contains("shop.orders (id=501) differs in note"),
        "{err}"
    );
    assert!(!read_only(&s.src), "source left read-only: {err}");
    follow_applies(&s, 502);

    // repaired, the cutover goes through and reports the keys it proved
    s.dst
        .sql("UPDATE shop.orders SET note = 'probe' WHERE id = 501");
    let dir = tempdir();
    let report = dir.path().join("report.json");
    let report_arg = report.to_string_lossy().to_string();
    let out = cutover(
        &s,
        &["--switch-command", "true", "--report", &report_arg],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert!(r["rows_verified"].as_u64().unwrap_or(0) >= 3, "{r}");
    assert_same_multiset(&s.src, &s.dst, "shop");
}

#[test]
fn a_crash_at_every_step_rolls_back_or_resumes() {
    let mut s = setup("cc");
    let mut probe = 800000;
    for step in ["freeze", "drain", "catch_up", "prove", "prepare", "switch"] {
        for state in ["started", "done"] {
            if (step, state) == ("switch", "done") {
                continue;
            }
            let at = format!("{step}:{state}");
            let out = cutover(
                &s,
                &["--switch-command", "true"],
                &[("MIGRATE_CUTOVER_CRASH_AT", &at)],
            );
            assert!(
                out.status.code().is_none(),
                "{at}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            );
            // never both writable
            assert!(
                read_only(&s.src) || read_only(&s.dst),
                "{at}: both servers writable"
            );
            // a new cutover refuses while this one is unresolved
            let out = cutover(&s, &["--switch-command", "true"], &[]);
            assert_eq!(out.status.code(), Some(2), "{at}");
            assert!(stderr(&out).contains("--resume"), "{at}: {}", stderr(&out));
            let out = cutover(&s, &["--rollback"], &[]);
            assert_eq!(out.status.code(), Some(0), "{at}: {}", stderr(&out));
            assert!(
                !read_only(&s.src),
                "{at}: source still read-only after --rollback"
            );
            assert!(read_only(&s.dst) || s.dst.sql("SELECT 1") == "1");
            assert_eq!(
                s.dst.sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'"),
                "0",
                "{at}"
            );
            probe += 1;
            follow_applies(&s, probe);
        }
    }
    // crashed in the switch (after the follower was told to stop): --resume finishes it
    let out = cutover(
        &s,
        &["--switch-command", "true"],
        &[("MIGRATE_CUTOVER_CRASH_AT", "switch:started")],
    );
    assert!(out.status.code().is_none(), "{}", stderr(&out));
    let out = cutover(&s, &["--resume", "--switch-command", "true"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(read_only(&s.src) && !read_only(&s.dst));
    assert_same_multiset(&s.src, &s.dst, "shop");
    let _ = s.follow.wait();
    // after the switch there is no rollback without reverse replication: refused, clearly
    let out = cutover(&s, &["--rollback"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("reverse replication"),
        "{}",
        stderr(&out)
    );
}

/// The way back: after the switch the application writes to the target, `migrate follow
/// --reverse` carries those writes to the source, and `cutover --rollback` sends the
/// application back: every order committed on either side is on the source, both sides end
/// identical by mariadb-dump, and the source has its triggers and events again.
#[test]
fn rollback_after_the_switch_brings_back_the_targets_writes() {
    let s = setup_with(
        "cr",
        &[
            "--log-bin=mysql-bin",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
        ],
    );
    let dir = s.state.parent().expect("dir").to_path_buf();
    let switched = dir.join("switched");
    let app = App::start(s.src.port, switched.clone());
    std::thread::sleep(Duration::from_millis(1000));
    let hook = format!("echo \"$MIGRATE_TARGET_PORT\" > {}", switched.display());
    // the cutover starts the reverse follow itself
    let out = cutover(
        &s,
        &["--switch-command", &hook, "--reverse-follow", "spawn"],
        &[],
    );
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("the way back runs"), "{log}");
    let reverse_state = s.state.with_file_name("s.reverse.sqlite");
    let reverse_status = || -> serde_json::Value {
        let out = migrate(
            &s.src.url(),
            &s.dst.url(),
            &reverse_state,
            &["status", "--json"],
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| serde_json::Value::String(stderr(&out)))
    };
    assert_eq!(
        reverse_status()["follow"]["state"],
        "running",
        "{}",
        reverse_status()
    );
    // the source is a replica now: no triggers, events disabled
    assert_eq!(
        s.src
            .sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'"),
        "0"
    );
    let reverse_log = PathBuf::from(format!("{}.log", reverse_state.display()));
    // the application writes to the target for a while (and a DDL happens there)
    std::thread::sleep(Duration::from_millis(2500));
    s.dst
        .sql("ALTER TABLE shop.orders ADD COLUMN channel VARCHAR(10) NULL");
    std::thread::sleep(Duration::from_millis(1000));
    // back: the hook points the application at the source again
    let back = format!("echo \"$MIGRATE_SOURCE_PORT\" > {}", switched.display());
    let out = cutover(&s, &["--rollback", "--rollback-command", &back], &[]);
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{log}\nreverse: {}",
        std::fs::read_to_string(&reverse_log).unwrap_or_default()
    );
    assert!(!read_only(&s.src) && read_only(&s.dst), "{log}");
    std::thread::sleep(Duration::from_millis(1000));
    let committed = app.finish();
    // the spawned reverse follow was told to stop and ends cleanly
    let t = Instant::now();
    while reverse_status()["follow"]["state"] == "running" {
        assert!(
            t.elapsed().as_secs() < 20,
            "the reverse follow did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let runs = reverse_status();
    assert!(
        !std::fs::read_to_string(&reverse_log)
            .unwrap_or_default()
            .contains("ERROR"),
        "{runs}\n{}",
        std::fs::read_to_string(&reverse_log).unwrap_or_default()
    );
    // every committed order (source, then target, then source again) once on the source
    assert_committed_once(&s.src, &committed, &log);
    // the target's writes before the rollback are on the source exactly as on the target
    // (the orders after it are only on the source: compare what the target has)
    let target_orders = s.dst.sql("SELECT id, note FROM shop.orders ORDER BY id");
    let source_orders = s.src.sql(&format!(
        "SELECT id, note FROM shop.orders WHERE id <= {} ORDER BY id",
        s.dst.sql("SELECT MAX(id) FROM shop.orders")
    ));
    assert_eq!(target_orders, source_orders);
    assert_eq!(
        s.src.sql("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_NAME = 'orders' AND COLUMN_NAME = 'channel'"),
        "1",
        "the DDL on the target did not come back"
    );
    // the audit rows the target's trigger wrote came back once (the source's trigger did not
    // fire on applied rows), and the source's trigger and event are back
    let target_audit = s.dst.sql("SELECT COUNT(*) FROM shop.audit");
    let source_audit_upto = s.src.sql(&format!(
        "SELECT COUNT(*) FROM shop.audit WHERE id <= {}",
        s.dst.sql("SELECT IFNULL(MAX(id), 0) FROM shop.audit")
    ));
    assert_eq!(target_audit, source_audit_upto);
    assert_eq!(
        s.src
            .sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'"),
        "2"
    );
    assert_eq!(
        s.src
            .sql("SELECT STATUS FROM information_schema.EVENTS WHERE EVENT_NAME = 'nightly'"),
        "ENABLED"
    );
    // the euckr trigger and event came back in their own character set
    assert_eq!(
        s.src.sql("SELECT CONCAT(CHARACTER_SET_CLIENT, ' ', COLLATION_CONNECTION, ' ', HEX(ACTION_STATEMENT)) FROM information_schema.TRIGGERS WHERE TRIGGER_NAME = 'stock_note'"),
        "euckr euckr_korean_ci 534554204073746F636B5F6E6F7465203D2027EC82ACEAB3BC27"
    );
    assert_eq!(
        s.src.sql("SELECT CONCAT(STATUS, ' ', CHARACTER_SET_CLIENT, ' ', COLLATION_CONNECTION) FROM information_schema.EVENTS WHERE EVENT_NAME = 'note_sweep'"),
        "ENABLED euckr euckr_korean_ci"
    );
    let j = status(&s);
    assert_eq!(j["cutover"]["state"], "rolled_back_after_switch", "{j}");
    // the forward follow must not start again (it would apply the target's writes twice)
    let out = migrate(
        &s.src.url(),
        &s.dst.url(),
        &s.state,
        &["follow", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A rollback after the switch that fails (the reverse follow is not running) opens the target
/// again; then a rollback killed at each of its journal steps in turn never leaves both
/// servers writable, and `--rollback` run again continues it: the source ends with every
/// order, identical to the target by mariadb-dump.
#[test]
fn a_rollback_killed_at_every_step_continues() {
    let s = setup_with(
        "rk",
        &[
            "--log-bin=mysql-bin",
            "--binlog-format=ROW",
            "--binlog-row-image=FULL",
        ],
    );
    let dir = s.state.parent().expect("dir").to_path_buf();
    let switched = dir.join("switched");
    let app = App::start(s.src.port, switched.clone());
    std::thread::sleep(Duration::from_millis(800));
    let hook = format!("echo \"$MIGRATE_TARGET_PORT\" > {}", switched.display());
    let out = cutover(&s, &["--switch-command", &hook], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nfollow: {}",
        stderr(&out),
        std::fs::read_to_string(&s.follow_log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(1200));
    let committed = app.finish();
    let back = format!("echo \"$MIGRATE_SOURCE_PORT\" > {}", switched.display());
    let rollback = |env: &[(&str, &str)]| {
        cutover(
            &s,
            &[
                "--rollback",
                "--rollback-command",
                &back,
                "--max-downtime",
                "2",
            ],
            env,
        )
    };

    // no reverse follow yet: the rollback aborts and the target is the primary again
    let out = rollback(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("follow --reverse"),
        "{}",
        stderr(&out)
    );
    assert!(!read_only(&s.dst) && read_only(&s.src));

    let reverse_log = dir.join("reverse.log");
    let mut reverse = migrate_cmd(
        &s.src.url(),
        &s.dst.url(),
        &s.state,
        &["follow", "--reverse"],
    )
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&reverse_log).expect("log"))
    .spawn()
    .expect("reverse follow");
    for at in [
        "back_freeze:started",
        "back_freeze:done",
        "back_drain:started",
        "back_drain:done",
        "back_catch_up:started",
        "back_catch_up:done",
        "back_switch:started",
    ] {
        let out = rollback(&[("MIGRATE_CUTOVER_CRASH_AT", at)]);
        assert!(
            out.status.code().is_none(),
            "{at}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        assert!(
            read_only(&s.src) || read_only(&s.dst),
            "{at}: both servers writable"
        );
    }
    let out = rollback(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nreverse: {}",
        stderr(&out),
        std::fs::read_to_string(&reverse_log).unwrap_or_default()
    );
    assert!(!read_only(&s.src) && read_only(&s.dst));
    let st = reverse.wait().expect("reverse");
    assert!(
        st.success(),
        "{}",
        std::fs::read_to_string(&reverse_log).unwrap_or_default()
    );
    assert_committed_once(&s.src, &committed, "after the rollback");
    assert_eq!(s.src.dump_data("shop"), s.dst.dump_data("shop"));
    let j = status(&s);
    assert_eq!(j["cutover"]["state"], "rolled_back_after_switch", "{j}");
}

/// The target's own native read replica ends identical to the target after snapshot, follow
/// (rows, a DDL, a keyless table) and cutover: nothing the engine writes bypasses the target's
/// binlog (statement-or-row MIXED, the target's default). `--target-replica` is checked at
/// preflight (a stopped replica blocks) and waited for before the target opens.
#[test]
fn the_targets_replica_ends_identical_to_it() {
    let src = Server::source("tr-src");
    let dst = Server::start("tr-dst", &["--log-bin=mysql-bin"]);
    let rep = Server::start(
        "tr-rep",
        &[
            "--log-bin=mysql-bin",
            "--log-slave-updates",
            "--read-only=1",
        ],
    );
    rep.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_USE_GTID=slave_pos; START SLAVE",
        dst.port
    ));
    src.script(SCHEMA.as_bytes());
    src.sql(
        "CREATE TABLE shop.log (at DATETIME(6), what BLOB, amount DECIMAL(12,4)) ENGINE=InnoDB; \
         INSERT INTO shop.log VALUES ('2026-01-01 00:00:00.5', 0x00FF, 1.5), ('0000-00-00 00:00:00', NULL, -2.25)",
    );
    let s = migrated(src, dst);
    let switched = s.state.with_file_name("switched");
    let app = App::start(s.src.port, switched.clone());
    std::thread::sleep(Duration::from_millis(500));
    s.src.sql(
        "CREATE TABLE shop.notes (txt VARCHAR(20) CHARACTER SET euckr) ENGINE=InnoDB; \
         INSERT INTO shop.notes VALUES (X'C7D1B1DB'), (X'C7D1B1DB'); \
         UPDATE shop.log SET amount = amount * 2; DELETE FROM shop.log WHERE what IS NULL",
    );
    std::thread::sleep(Duration::from_millis(500));
    // a stopped replica blocks the cutover at preflight
    rep.sql("STOP SLAVE");
    let rep_url = rep.url();
    let out = cutover(&s, &["--dry-run", "--target-replica", &rep_url], &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("replication is stopped"), "{text}");
    rep.sql("START SLAVE");
    let hook = format!("echo \"$MIGRATE_TARGET_PORT\" > {}", switched.display());
    let out = cutover(
        &s,
        &[
            "--switch-command",
            &hook,
            "--target-replica",
            &rep_url,
            "--verify",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("replica(s) reached GTID"),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_millis(800));
    let committed = app.finish();
    assert_committed_once(&s.dst, &committed, "target");
    let at = s.dst.sql("SELECT @@global.gtid_binlog_pos");
    assert_eq!(
        rep.sql(&format!("SELECT MASTER_GTID_WAIT('{at}', 30)")),
        "0",
        "replica: {}",
        rep.sql("SHOW SLAVE STATUS")
    );
    assert_eq!(s.dst.dump_data("shop"), rep.dump_data("shop"));
    assert_eq!(s.dst.dump_schema("shop"), rep.dump_schema("shop"));
    assert_eq!(s.dst.dump_data("_migrate"), rep.dump_data("_migrate"));
}

/// The rows a parent's cascading foreign key reaches (the binlog does not carry them; the
/// target's applier performs the cascade) are proved too: a child row the cascade should have
/// deleted, planted back on the target after the verify, stops the cutover, named.
#[test]
fn rows_reached_by_a_cascade_since_the_verify_are_proved() {
    let src = Server::source("pc-src");
    let dst = Server::start("pc-dst", &["--log-bin=mysql-bin"]);
    src.script(SCHEMA.as_bytes());
    src.sql(
        "CREATE TABLE shop.cust (id INT PRIMARY KEY) ENGINE=InnoDB; \
         CREATE TABLE shop.cart (id INT PRIMARY KEY, cust INT, \
           FOREIGN KEY (cust) REFERENCES shop.cust (id) ON DELETE CASCADE) ENGINE=InnoDB; \
         INSERT INTO shop.cust VALUES (1), (2); \
         INSERT INTO shop.cart VALUES (10, 1), (11, 1), (20, 2)",
    );
    let s = migrated(src, dst);
    s.src.sql("DELETE FROM shop.cust WHERE id = 1");
    follow_applies(&s, 700);
    assert_eq!(s.dst.sql("SELECT COUNT(*) FROM shop.cart"), "1");
    s.dst
        .sql("SET foreign_key_checks = 0; INSERT INTO shop.cart VALUES (10, 1)");
    let out = cutover(&s, &["--switch-command", "true"], &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("shop.cart (id=10) extra on the target"),
        "{err}"
    );
    assert!(!read_only(&s.src));
    s.dst.sql("DELETE FROM shop.cart WHERE id = 10");
    let out = cutover(&s, &["--switch-command", "true"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_same_multiset(&s.src, &s.dst, "shop");
}
