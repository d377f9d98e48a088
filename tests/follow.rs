//! `follow` under a live write load: kill -9 repeatedly, cut connections, restart servers;
//! source and target end identical (compared with mariadb-dump).

mod support;
use std::process::Stdio;
use std::time::Duration;
use support::*;

fn snapshot(src_url: &str, dst_url: &str, state: &std::path::Path) {
    assert_ok(&migrate(
        src_url,
        dst_url,
        state,
        &[
            "snapshot",
            "--databases",
            "shop",
            "--threads",
            "2",
            "--chunk-rows",
            "500",
        ],
    ));
}

/// A source with the shop schema (and `extra` SQL run on it), copied to a new target.
struct Copied {
    src: Server,
    dst: Server,
    state: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn shop_copied(name: &str, extra: &str) -> Copied {
    let src = Server::source(&format!("{name}-src"));
    let dst = Server::target(&format!("{name}-dst"));
    src.script(load::SCHEMA.as_bytes());
    if !extra.is_empty() {
        src.sql(extra);
    }
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    snapshot(&src.url(), &dst.url(), &state);
    Copied {
        src,
        dst,
        state,
        _dir: dir,
    }
}

#[test]
fn kill_nine_during_load_converges() {
    let src = Server::source("f-src");
    let dst = Server::target("f-dst");
    src.script(load::SCHEMA.as_bytes());
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    // writes while the snapshot runs
    let src_port = src.port;
    let writer = std::thread::spawn(move || {
        let s = Server::attach("f-src-load", src_port);
        load::run(&s, 0, 40, 1);
    });
    snapshot(&src.url(), &dst.url(), &state);
    writer.join().expect("writer");

    let src_port = src.port;
    let writer = std::thread::spawn(move || {
        let s = Server::attach("f-src-load", src_port);
        load::run(&s, 40, 160, 2);
    });
    let mut rng = load::Rng::new(7);
    let mut kills = 0;
    while !writer.is_finished() {
        let mut child = migrate_cmd(
            &src.url(),
            &dst.url(),
            &state,
            &["follow", "--databases", "shop"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("follow");
        std::thread::sleep(Duration::from_millis(300 + rng.next(1200)));
        child.kill().expect("kill -9");
        let _ = child.wait();
        kills += 1;
    }
    writer.join().expect("writer");
    assert!(
        kills >= 2,
        "the load ended before follow could be killed twice"
    );
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "shop");
    // cascades happened on the target without triggers: no orphan items
    assert_eq!(dst.sql("SELECT COUNT(*) FROM shop.order_items i LEFT JOIN shop.orders o ON o.id = i.order_id WHERE o.id IS NULL"), "0");
    assert_eq!(
        dst.sql("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'"),
        "0"
    );
    let status = migrate(&src.url(), &dst.url(), &state, &["status", "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert!(j["follow"]["transactions_applied"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn dropped_connections_and_restarts_converge() {
    let mut src = Server::source("p-src");
    let mut dst = Server::target("p-dst");
    src.script(load::SCHEMA.as_bytes());
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let sp = proxy::Proxy::start(src.port);
    let tp = proxy::Proxy::start(dst.port);
    snapshot(&sp.url(), &tp.url(), &state);

    let metrics_port = free_port();
    let follower = migrate_cmd(
        &sp.url(),
        &tp.url(),
        &state,
        &["follow", "--databases", "shop"],
    )
    .env("MIGRATE_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("follow");
    let reconnects = |side: &str| -> f64 {
        let m = http_get(metrics_port, "/metrics");
        let series = format!("migrate_reconnects_total{{side=\"{side}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    load::run(&src, 0, 30, 3);
    sp.cut();
    load::run(&src, 30, 30, 4);
    std::thread::sleep(Duration::from_secs(1));
    let source_side = reconnects("source");
    assert!(
        source_side >= 1.0,
        "a cut source link counted no source reconnect"
    );
    assert_eq!(
        reconnects("target"),
        0.0,
        "a cut source link counted as target"
    );
    tp.cut();
    load::run(&src, 60, 20, 5);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        reconnects("target") >= 1.0,
        "a cut target link counted no target reconnect"
    );
    sp.outage(Duration::from_secs(2));
    tp.outage(Duration::from_secs(2));
    load::run(&src, 80, 20, 6);
    src.restart();
    load::run(&src, 100, 20, 7);
    dst.restart();
    load::run(&src, 120, 20, 8);
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM: finishes the current group and exits 0
    let log = terminate_follow(follower);
    assert!(
        log.contains("reconnecting"),
        "no reconnect was logged: {log}"
    );

    catch_up_and_compare(&sp.url(), &tp.url(), &state, &src, &dst, "shop");
}

/// Which link of follow's a test stalls.
#[derive(Clone, Copy, PartialEq)]
enum Link {
    Source,
    Target,
}

/// Follow runs under load with one link through a proxy (`?stall-timeout=2`); every connection
/// open on that link when its server next sends a byte goes silent for good (no reset reaches
/// either end). The running follower must catch up by itself, then exit 0 on SIGTERM.
fn follow_through_a_stalling(link: Link, name: &str, seed: u64) {
    let Copied {
        src,
        dst,
        state,
        _dir,
    } = shop_copied(name, "");
    let stalling = proxy::Proxy::start(if link == Link::Source {
        src.port
    } else {
        dst.port
    });
    let watched = format!("{}&stall-timeout=2", stalling.url());
    let (src_url, dst_url) = match link {
        Link::Source => (watched, dst.url()),
        Link::Target => (src.url(), watched),
    };
    let mut follower = migrate_cmd(
        &src_url,
        &dst_url,
        &state,
        &["follow", "--databases", "shop"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("follow");
    load::run(&src, 0, 20, seed);
    stalling.stall_after(1);
    load::run(&src, 20, 30, seed + 1);
    let started = std::time::Instant::now();
    while src.dump_data("shop") != dst.dump_data("shop") {
        if started.elapsed() > Duration::from_secs(90) {
            let target = format!(
                "target processlist:\n{}\ntarget transactions:\n{}",
                dst.sql("SELECT ID, COMMAND, TIME, STATE, LEFT(INFO, 200) FROM information_schema.PROCESSLIST"),
                dst.sql("SELECT * FROM information_schema.INNODB_TRX"),
            );
            let _ = follower.kill();
            let out = follower.wait_with_output().expect("wait");
            panic!(
                "the running follower did not catch up after the stall: {}\n{target}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(stalling.stalled() > 0, "the link never stalled");
    let log = terminate_follow(follower);
    if link == Link::Target {
        assert!(log.contains("the link stalled"), "no stall was seen: {log}");
    }
    assert_same(&src, &dst, "shop");
}

/// The VPN black-holes every open source connection while follow runs: the binlog stream
/// notices by its own read timeout (the time spent waiting for it, however often the follower
/// asks), the follower's other source statements by the stall watchdog.
#[test]
fn follow_recovers_from_a_stalled_link() {
    follow_through_a_stalling(Link::Source, "fs", 11);
}

/// The same with the link to the target: the applier's statements are watched; the follower
/// reconnects and goes on from its checkpoint. The test's own comparisons (`mariadb-dump`,
/// which takes `LOCK TABLES ... READ` on every table twice a second) stand for a backup
/// running on the target: the large group the follower applies after the stall loses
/// metadata-lock deadlocks (error 1213) to them, and the follower goes on only because groups
/// start again from one transaction after a lock conflict (`GroupLimit`).
#[test]
fn follow_recovers_from_a_stalled_target_link() {
    follow_through_a_stalling(Link::Target, "ft", 21);
}

/// A backup that locks the target's tables (`mariadb-dump` without `--single-transaction`:
/// `LOCK TABLES ... READ` on every table, here over and over) while follow applies a backlog:
/// the first large group loses a metadata-lock deadlock (error 1213) to it, and would lose
/// again on every retry; groups start again from one transaction (`GroupLimit`) and follow
/// gets through, with nothing lost.
#[test]
fn follow_gets_past_a_backup_that_locks_the_target() {
    let Copied {
        src,
        dst,
        state,
        _dir,
    } = shop_copied("lk", "");
    load::run(&src, 0, 60, 31);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let backup = {
        let (stop, port) = (stop.clone(), dst.port);
        std::thread::spawn(move || {
            let dst = Server::attach("lk-dst", port);
            let mut dumps = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                dst.dump_data("shop");
                dumps += 1;
            }
            dumps
        })
    };
    let mut follower = migrate_cmd(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--databases", "shop"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("follow");
    // read as it comes: a full pipe would stop the follower
    let mut stderr_pipe = follower.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr_pipe, &mut log);
        log
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = follower.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = follower.kill();
            break follower.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let dumps = backup.join().expect("backup thread");
    let log = reader.join().expect("log");
    assert!(
        status.success(),
        "follow did not get past the backup's locks: {log}"
    );
    assert!(
        log.contains("a lock conflict on the target"),
        "no lock conflict happened ({dumps} dumps ran): {log}"
    );
    assert_same(&src, &dst, "shop");
}

/// The stored place of the applied position in the source's binlog (`follow.binlog_place`).
fn stored_place(state: &std::path::Path) -> serde_json::Value {
    let db = rusqlite::Connection::open(state).expect("state file");
    let text: String = db
        .query_row(
            "SELECT value FROM meta WHERE key = 'follow.binlog_place'",
            [],
            |r| r.get(0),
        )
        .expect("a stored binlog place");
    serde_json::from_str(&text).expect("place json")
}

fn set_place(state: &std::path::Path, place: &serde_json::Value) {
    let db = rusqlite::Connection::open(state).expect("state file");
    db.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'follow.binlog_place'",
        [place.to_string()],
    )
    .expect("update place");
}

/// A follow that starts again reads from the file offset where the applied position ends
/// (no scan of the binlog file for the GTID on the source) whatever kind of transaction was
/// the last applied: rows, a DDL, a change outside the selection, a transaction applied in
/// parts. Nothing is applied twice (a keyless table would show it) or skipped. A place that
/// no longer matches the server falls back to the GTID; a purged binlog still stops follow.
#[test]
fn restarts_at_the_applied_binlog_place() {
    let Copied {
        src, dst, state, _dir
    } = shop_copied(
        "bp",
        "CREATE TABLE shop.ledger (n INT, note VARCHAR(20)) ENGINE=InnoDB; CREATE DATABASE other; CREATE TABLE other.t (id INT PRIMARY KEY, v INT)",
    );
    let follow = |expect_place: bool| {
        let out = migrate(
            &src.url(),
            &dst.url(),
            &state,
            &["follow", "--until-caught-up", "--databases", "shop"],
        );
        assert_ok(&out);
        let log = format!(
            "{}{}\nsource {} target {}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout),
            src.sql("SELECT @@gtid_binlog_pos"),
            dst.sql("SELECT * FROM _migrate.checkpoints")
        );
        assert_eq!(
            log.contains("(where it was applied up to)"),
            expect_place,
            "follow {} start at the stored place:\n{log}",
            if expect_place {
                "did not"
            } else {
                "should not"
            }
        );
        assert_same_multiset(&src, &dst, "shop");
    };
    // the first follow after the snapshot has no place yet: by GTID
    load::run(&src, 0, 10, 21);
    src.sql("INSERT INTO shop.ledger VALUES (1, 'first')");
    follow(false);
    let lasts = [
        "INSERT INTO shop.ledger VALUES (2, 'rows'), (3, 'rows')",
        "ALTER TABLE shop.ledger ADD COLUMN extra INT DEFAULT 7",
        "INSERT INTO other.t VALUES (1, 1)",
        "USE shop; INSERT INTO shop.big SELECT seq + 100000, REPEAT('p', 190) FROM seq_1_to_60000",
        "UPDATE shop.ledger SET note = 'updated'",
    ];
    for (i, last) in lasts.iter().enumerate() {
        load::run(&src, 10 + 5 * i as u64, 5, 22 + i as u64);
        src.sql("INSERT INTO shop.ledger (n, note) VALUES (10, 'between')");
        src.sql(last);
        follow(true);
        // the place is the last transaction's, which is the position's one GTID
        let place = stored_place(&state);
        assert_eq!(
            place["position"].as_str(),
            Some(src.sql("SELECT @@gtid_binlog_pos").as_str()),
            "{place}"
        );
    }
    // a place whose GTID event is not where it says (another binlog under the same name):
    // read by GTID instead
    let mut place = stored_place(&state);
    place["gtid_at"] = serde_json::json!(place["gtid_at"].as_u64().unwrap_or(0) + 1);
    set_place(&state, &place);
    src.sql("INSERT INTO shop.ledger (n, note) VALUES (20, 'moved')");
    follow(false);
    // a place whose end is not its transaction's end (moved back to the GTID event, or into
    // the middle of the last event): by GTID, nothing applied twice
    let mut place = stored_place(&state);
    place["end"] = place["gtid_at"].clone();
    set_place(&state, &place);
    src.sql("INSERT INTO shop.ledger (n, note) VALUES (20, 'end moved')");
    follow(false);
    let mut place = stored_place(&state);
    place["last_at"] = serde_json::json!(place["last_at"].as_u64().unwrap_or(0) + 2);
    set_place(&state, &place);
    src.sql("INSERT INTO shop.ledger (n, note) VALUES (20, 'last moved')");
    follow(false);
    // another server's place (a promoted replica has its own binlog): by GTID
    let mut place = stored_place(&state);
    place["server_id"] = serde_json::json!("424242");
    set_place(&state, &place);
    src.sql("INSERT INTO shop.ledger (n, note) VALUES (21, 'other server')");
    follow(false);
    // a place behind the target's checkpoint (the state file lost its last write): by GTID
    let behind = stored_place(&state);
    src.sql("INSERT INTO shop.ledger (n, note) VALUES (22, 'ahead')");
    follow(true);
    set_place(&state, &behind);
    src.sql("INSERT INTO shop.ledger (n, note) VALUES (23, 'after')");
    follow(false);
    src.sql("INSERT INTO shop.ledger (n, note) VALUES (24, 'again')");
    follow(true);

    // the place's file purged (and the GTID with it): follow stops, it does not skip
    src.sql("INSERT INTO shop.ledger (n, note) VALUES (25, 'x'); FLUSH BINARY LOGS; INSERT INTO shop.ledger (n, note) VALUES (26, 'y'); FLUSH BINARY LOGS;");
    purge_all_but_newest_binlog(&src);
    let out = migrate(
        &src.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up", "--databases", "shop"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("1236"), "{}", stderr(&out));
}

/// The source's `binlog_checksum` switched (each switch rotates the binlog), while follow
/// reads and while it is down. A follow that starts in a file written with the other setting
/// gets an artificial ROTATE carrying that file's checksum where the connection's setting
/// says none: it used to stop on a file name with 4 stray bytes.
#[test]
fn binlog_checksum_changes_while_following() {
    let c = shop_copied("cksum", "");
    let catch_up = || {
        assert_ok(&migrate(
            &c.src.url(),
            &c.dst.url(),
            &c.state,
            &["follow", "--until-caught-up", "--databases", "shop"],
        ))
    };
    // while follow is down: it starts in a CRC32 file with NONE set, then the other way
    load::run(&c.src, 0, 10, 11);
    c.src.sql("SET GLOBAL binlog_checksum = NONE");
    load::run(&c.src, 10, 10, 12);
    catch_up();
    load::run(&c.src, 20, 10, 13);
    c.src.sql("SET GLOBAL binlog_checksum = CRC32");
    load::run(&c.src, 30, 10, 14);
    catch_up();
    // while follow reads
    let follower = migrate_cmd(
        &c.src.url(),
        &c.dst.url(),
        &c.state,
        &["follow", "--databases", "shop"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("follow");
    for (i, checksum) in ["NONE", "CRC32", "NONE"].iter().enumerate() {
        c.src
            .sql(&format!("SET GLOBAL binlog_checksum = {checksum}"));
        load::run(&c.src, 40 + 10 * i as u64, 10, 15 + i as u64);
    }
    std::thread::sleep(Duration::from_secs(2));
    terminate_follow(follower);
    catch_up_and_compare(&c.src.url(), &c.dst.url(), &c.state, &c.src, &c.dst, "shop");
}

/// A target that restarts (a pod moved in the cluster) starts its MEMORY tables empty while
/// the source keeps their rows, and nothing in the binlog says so: follow used to go on with
/// them silently different. It now stops once after such a restart, naming the tables and
/// the repair; run again it goes on, and `verify --repair` copies their rows back. A snapshot
/// resumed after a restart copies its MEMORY tables again.
#[test]
fn a_target_restart_that_empties_memory_tables_stops_follow_once() {
    let src = Server::source("memr-src");
    let mut dst = Server::target("memr-dst");
    // the snapshot stops after copying the rows: a table of the target is in its view's way
    src.sql(
        "CREATE DATABASE m; CREATE TABLE m.cache (id INT PRIMARY KEY, v INT) ENGINE=MEMORY; \
         CREATE TABLE m.t (id INT PRIMARY KEY) ENGINE=InnoDB; \
         INSERT INTO m.cache VALUES (1, 1), (2, 2), (3, 3); INSERT INTO m.t VALUES (1); \
         CREATE VIEW m.v AS SELECT id FROM m.t",
    );
    dst.sql("CREATE DATABASE m; CREATE TABLE m.v (id INT)");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let snapshot = ["snapshot", "--databases", "m", "--reuse-target"];
    let out = migrate(&src.url(), &dst.url(), &state, &snapshot);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(dst.sql("SELECT COUNT(*) FROM m.cache"), "3");
    // a start is told apart from the one before by more than 2 s
    std::thread::sleep(Duration::from_secs(3));
    dst.restart();
    dst.sql("DROP TABLE m.v");
    // resumed, the snapshot copies the emptied MEMORY table again
    assert_ok(&migrate(&src.url(), &dst.url(), &state, &snapshot));
    assert_same(&src, &dst, "m");
    follow_caught_up(&src.url(), &dst.url(), &state, "m");
    std::thread::sleep(Duration::from_secs(3));
    dst.restart();
    assert_eq!(dst.sql("SELECT COUNT(*) FROM m.cache"), "0");
    src.sql("INSERT INTO m.t VALUES (2); UPDATE m.cache SET v = 20 WHERE id = 2");
    let err = follow_fails(&src.url(), &dst.url(), &state, "m");
    assert!(
        err.contains("the target restarted")
            && err.contains("m.cache")
            && err.contains("verify --repair --tables m.cache"),
        "{err}"
    );
    // once: the next follow goes on, and the repair copies the rows back
    follow_caught_up(&src.url(), &dst.url(), &state, "m");
    assert_ok(&migrate(
        &src.url(),
        &dst.url(),
        &state,
        &[
            "verify",
            "--databases",
            "m",
            "--repair",
            "--tables",
            "m.cache",
        ],
    ));
    assert_same(&src, &dst, "m");
}
