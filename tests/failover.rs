//! Source failover (issue 10): the on-prem primary fails over to its replica while follow runs
//! under load; `follow --source NEW` resumes by GTID on the promoted replica and the target
//! ends identical to it. A server that lacks transactions the target already applied (a replica
//! that was behind) is refused with an error naming them.

mod support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn replica_of(name: &str, primary: &Server) -> Server {
    let mut args = SOURCE_ARGS.to_vec();
    args.push("--log-slave-updates");
    let r = Server::start(name, &args);
    r.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_USE_GTID=slave_pos; START SLAVE",
        primary.port
    ));
    r
}

fn caught_up(replica: &Server, gtid: &str) {
    assert_eq!(
        replica.sql(&format!("SELECT MASTER_GTID_WAIT('{gtid}', 60)")),
        "0",
        "{}: {}",
        replica.name,
        replica.sql("SHOW SLAVE STATUS")
    );
}

/// Orders and stock updates, one transaction each, on the server at `port` until stopped.
fn load(port: u16, from: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let s = Server::attach("load", port);
        let mut id = from;
        while !stop.load(Ordering::SeqCst) {
            id += 1;
            s.sql(&format!(
                "BEGIN; INSERT INTO shop.orders VALUES ({id}, 'o{id}', NOW(6)); \
                 UPDATE shop.stock SET n = n - 1 WHERE id = {}; COMMIT",
                id % 10
            ));
        }
        id
    })
}

/// A source with the shop the load writes to: `orders` (with `rows` rows of `width`-byte
/// references already) and `stock`.
fn shop_source(name: &str, rows: u64, width: u32) -> Server {
    let primary = Server::source(name);
    primary.sql(&format!(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id BIGINT PRIMARY KEY, ref VARCHAR(250), at DATETIME(6)); \
         CREATE TABLE shop.stock (id INT PRIMARY KEY, n INT); \
         INSERT INTO shop.stock SELECT seq, 1000 FROM shop.seq_0_to_9; \
         INSERT INTO shop.orders SELECT seq + 1000000, REPEAT('x', {width}), NOW(6) \
           FROM shop.seq_1_to_{rows} WHERE {rows} > 0"
    ));
    primary
}

#[test]
fn follow_resumes_on_a_promoted_replica() {
    let mut primary = shop_source("fo-pri", 1, 1);
    let replica = replica_of("fo-rep", &primary);
    let stale = replica_of("fo-stale", &primary);
    let dst = Server::target("fo-dst");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    assert_ok(&migrate(
        &primary.url(),
        &dst.url(),
        &state,
        &["snapshot", "--databases", "shop"],
    ));
    let mut follow = migrate_cmd(&primary.url(), &dst.url(), &state, &["follow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("follow");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = load(primary.port, 0, stop.clone());
    std::thread::sleep(Duration::from_millis(700));
    // the stale replica stops here: it will lack what follows
    stale.sql("STOP SLAVE");
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let last = writer.join().expect("load");
    // the planned failover: the replica has everything, the primary goes away
    let end = primary.sql("SELECT @@global.gtid_binlog_pos");
    caught_up(&replica, &end);
    let t = Instant::now();
    while dst
        .try_sql("SELECT COUNT(*) FROM shop.orders")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
        < last / 2
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "follow applies nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    primary.stop();
    replica.sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = OFF");
    let _ = std::process::Command::new("kill")
        .arg(follow.id().to_string())
        .status();
    let _ = follow.wait();
    // the application goes on against the new primary
    let stop = Arc::new(AtomicBool::new(false));
    let writer = load(replica.port, last + 1000, stop.clone());
    std::thread::sleep(Duration::from_millis(800));

    // a server that lacks transactions the target applied is refused, naming them
    let out = migrate(
        &stale.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lacks transactions the target has"),
        "{}",
        stderr(&out)
    );

    // the promoted replica has them: follow resumes there by GTID
    let mut follow = migrate_cmd(&replica.url(), &dst.url(), &state, &["follow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("follow on the new primary");
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("load");
    let out = migrate(&replica.url(), &dst.url(), &state, &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let _ = std::process::Command::new("kill")
        .arg(follow.id().to_string())
        .status();
    assert!(follow.wait().expect("follow").success());
    assert_eq!(replica.dump_data("shop"), dst.dump_data("shop"));
}

/// `--snapshot-source`: the snapshot reads a GTID replica of the source (with
/// log_slave_updates) while the source takes writes; the source serves none of the rows; follow
/// then continues on the source by GTID and the copy verifies identical. A replica without
/// log_slave_updates is reported by `check` and refused by `snapshot`.
#[test]
fn snapshot_from_a_replica_then_follow_the_source() {
    let primary = shop_source("sr-pri", 40000, 240);
    let replica = replica_of("sr-rep", &primary);
    let bare = Server::start("sr-bare", SOURCE_ARGS);
    bare.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_USE_GTID=slave_pos; START SLAVE",
        primary.port
    ));
    let pos = primary.sql("SELECT @@global.gtid_binlog_pos");
    caught_up(&replica, &pos);
    caught_up(&bare, &pos);
    let dst = Server::target("sr-dst");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");

    let bare_url = bare.url();
    let out = migrate(
        &primary.url(),
        &dst.url(),
        &state,
        &["check", "--snapshot-source", &bare_url],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("log_slave_updates is OFF"), "{text}");
    let out = migrate(
        &primary.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "shop",
            "--snapshot-source",
            &bare_url,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("log_slave_updates is OFF"),
        "{}",
        stderr(&out)
    );

    let sent = || -> u64 {
        primary
            .sql("SHOW GLOBAL STATUS LIKE 'Bytes_sent'")
            .split('\t')
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writer = load(primary.port, 0, stop.clone());
    let before = sent();
    let rep_url = replica.url();
    let out = migrate(
        &primary.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "shop",
            "--snapshot-source",
            &rep_url,
        ],
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("reading the snapshot from the replica"),
        "{}",
        stderr(&out)
    );
    let during = sent() - before;
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("load");
    // the rows (40000 x 250 bytes) came from the replica: the source sent far less
    assert!(
        during < 3_000_000,
        "the source sent {during} bytes during the snapshot"
    );
    let out = migrate(
        &primary.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    );
    assert_ok(&out);
    let out = migrate(&primary.url(), &dst.url(), &state, &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    assert_eq!(primary.dump_data("shop"), dst.dump_data("shop"));
}

/// While the snapshot's catch-up is unfinished (`--no-catch-up`), the horizons are binlog
/// positions of the server the snapshot read: follow refuses another server (its positions
/// cannot be compared with them), and `--snapshot-source` refuses `--no-catch-up`.
#[test]
fn an_unfinished_catch_up_is_not_continued_on_another_server() {
    // enough rows for a copy of hundreds of chunks: writes land between them even on a
    // loaded machine (with none, every chunk is read at one GTID and no horizon is in force)
    let primary = shop_source("uc-pri", 30000, 1);
    let replica = replica_of("uc-rep", &primary);
    caught_up(&replica, &primary.sql("SELECT @@global.gtid_binlog_pos"));
    let dst = Server::target("uc-dst");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let rep_url = replica.url();
    let out = migrate(
        &primary.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "shop",
            "--no-catch-up",
            "--snapshot-source",
            &rep_url,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--no-catch-up"), "{}", stderr(&out));
    // writes during a copy of many small chunks: the horizons spread over the binlog
    let stop = Arc::new(AtomicBool::new(false));
    let before = primary.sql("SELECT @@global.gtid_binlog_pos");
    let writer = load(primary.port, 0, stop.clone());
    let t = std::time::Instant::now();
    while primary.sql("SELECT @@global.gtid_binlog_pos") == before {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the load wrote nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ok(&migrate(
        &primary.url(),
        &dst.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "shop",
            "--no-catch-up",
            "--threads",
            "1",
            "--chunk-rows",
            "100",
        ],
    ));
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("load");
    caught_up(&replica, &primary.sql("SELECT @@global.gtid_binlog_pos"));
    let out = migrate(
        &rep_url,
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not the server the snapshot read"),
        "{}",
        stderr(&out)
    );
    // on the server it read, it finishes, and then any server with the GTIDs will do
    assert_ok(&migrate(
        &primary.url(),
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    ));
    primary.sql("UPDATE shop.stock SET n = n + 1");
    caught_up(&replica, &primary.sql("SELECT @@global.gtid_binlog_pos"));
    assert_ok(&migrate(
        &rep_url,
        &dst.url(),
        &state,
        &["follow", "--until-caught-up"],
    ));
    assert_eq!(primary.dump_data("shop"), dst.dump_data("shop"));
}
