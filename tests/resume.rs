//! `snapshot` killed with SIGKILL at random points, while the source takes writes, resumes
//! and ends with the same target as an uninterrupted run.

mod support;
use std::process::Stdio;
use std::time::Duration;
use support::*;

const SNAPSHOT: &[&str] = &[
    "snapshot",
    "--databases",
    "shop",
    "--threads",
    "2",
    "--chunk-rows",
    "700",
];

#[test]
fn snapshot_resumes_after_kill_nine() {
    let src = Server::source("r-src");
    let dst = Server::target("r-dst");
    src.script(load::SCHEMA.as_bytes());
    src.sql(
        "USE shop; CREATE TABLE shop.wide (a INT NOT NULL, b VARCHAR(20) CHARACTER SET utf8mb4 NOT NULL, pad CHAR(200), PRIMARY KEY (a, b)) ENGINE=InnoDB;
         INSERT INTO shop.wide SELECT seq % 1000, CONCAT('키', seq), REPEAT('x', 200) FROM seq_1_to_150000;",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let src_port = src.port;
    let writer =
        std::thread::spawn(move || load::run(&Server::attach("r-load", src_port), 0, 80, 11));

    let mut rng = load::Rng::new(42);
    let mut kills = 0;
    for _ in 0..6 {
        let mut child = migrate_cmd(&src.url(), &dst.url(), &state, SNAPSHOT)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("snapshot");
        std::thread::sleep(Duration::from_millis(80 + rng.next(320)));
        if child.try_wait().expect("wait").is_none() {
            child.kill().expect("kill -9");
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(
        kills >= 2,
        "snapshot finished too fast to be interrupted ({kills} kills)"
    );
    let out = migrate(&src.url(), &dst.url(), &state, SNAPSHOT);
    assert_ok(&out);
    writer.join().expect("writer");
    // the snapshot is consistent at its GTID; after the writes stop, follow brings the rest
    catch_up_and_compare(&src.url(), &dst.url(), &state, &src, &dst, "shop");

    // and an uninterrupted run into a fresh target gives the same data
    let dst2 = Server::target("r-dst2");
    let out = migrate(
        &src.url(),
        &dst2.url(),
        &dir.path().join("s2.sqlite"),
        &["snapshot", "--databases", "shop"],
    );
    assert_ok(&out);
    assert_eq!(dst.dump_data("shop"), dst2.dump_data("shop"));
}

/// Connections to both servers cut in the middle of the copy: the chunk in flight is retried
/// on a new connection and the snapshot completes with the same rows.
#[test]
fn snapshot_survives_dropped_connections() {
    let src = Server::source("rc-src");
    let dst = Server::target("rc-dst");
    src.sql(
        "CREATE DATABASE big; USE big; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), KEY (v));
         INSERT INTO t SELECT seq, CONCAT('값 ', seq) FROM seq_1_to_100000;",
    );
    let sp = proxy::Proxy::start(src.port);
    let tp = proxy::Proxy::start(dst.port);
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let snap = migrate_cmd(
        &sp.url(),
        &tp.url(),
        &state,
        &[
            "snapshot",
            "--databases",
            "big",
            "--chunk-rows",
            "300",
            "--threads",
            "2",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("snapshot");
    std::thread::sleep(Duration::from_millis(600));
    sp.cut();
    std::thread::sleep(Duration::from_millis(300));
    tp.cut();
    std::thread::sleep(Duration::from_millis(300));
    sp.outage(Duration::from_secs(1));
    let out = snap.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("trying again"), "no retry was logged: {log}");
    assert_same(&src, &dst, "big");
}

/// The VPN black-holes its packets in the middle of the copy: no reset reaches either end,
/// the open connections just go silent (an IPsec rekey that failed, an expired NAT entry).
/// A reader that hears nothing for `stall-timeout` asks the server over a new connection,
/// finds its connection blocked sending (or idle), kills it on the server (its snapshot ends
/// there) and reads the chunk again on a new connection. Without that the readers would wait
/// for TCP keepalive, about twelve minutes, and `migrate` here gives up after five.
#[test]
fn snapshot_recovers_from_a_stalled_link() {
    // after about a third of the rows
    let (src, _dst, log) =
        snapshot_through_a_stalling(true, "st", 100_000, Bytes::FromServer(1 << 20), &[]);
    assert!(log.contains("the link stalled"), "no stall was seen: {log}");
    // the stalled reads were killed on the source: none is left holding its snapshot
    assert_eq!(
        src.sql(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'Writing to net'"
        )
        .trim(),
        "0"
    );
}

/// The link to the target black-holed in the middle of the copy, rows written with INSERT
/// (`--no-load-data`): the writer's statements are watched too; the chunk in flight is written
/// again on a new connection.
#[test]
fn snapshot_recovers_from_a_stalled_target_link() {
    // the target answers each statement with a few bytes: stall after about a hundred
    let (_, _, log) = snapshot_through_a_stalling(
        false,
        "stt",
        60_000,
        Bytes::FromServer(3_000),
        &["--no-load-data"],
    );
    assert!(log.contains("the link stalled"), "no stall was seen: {log}");
}

/// The same with the rows streamed by `LOAD DATA LOCAL` (the default): the statement is
/// watched while it waits on the target (a batch not taken, or the answer after the last),
/// not while it waits for the source's rows.
#[test]
fn snapshot_recovers_from_a_stalled_target_link_while_streaming() {
    let (_, _, log) =
        snapshot_through_a_stalling(false, "sts", 60_000, Bytes::FromClient(300_000), &[]);
    assert!(
        log.contains("LOAD DATA into big.t: nothing") && log.contains("the link stalled"),
        "no stall of a streamed load was seen: {log}"
    );
}

/// When the proxy stalls: after the servers, or the clients, have sent that many bytes more.
enum Bytes {
    FromServer(u64),
    FromClient(u64),
}

/// A snapshot of `rows` rows with the source's link (`source`) or the target's through a
/// proxy that stalls every open connection once its server has sent `after` bytes; the
/// snapshot must end identical well before TCP keepalive would have noticed. The servers and
/// the snapshot's log.
fn snapshot_through_a_stalling(
    source: bool,
    name: &str,
    rows: u64,
    after: Bytes,
    extra: &[&str],
) -> (Server, Server, String) {
    let src = Server::source(&format!("{name}-src"));
    let dst = Server::target(&format!("{name}-dst"));
    src.sql(&format!(
        "CREATE DATABASE big; USE big; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), KEY (v));
         INSERT INTO t SELECT seq, CONCAT('값 ', seq) FROM seq_1_to_{rows};"
    ));
    let stalling = proxy::Proxy::start(if source { src.port } else { dst.port });
    match after {
        Bytes::FromServer(n) => stalling.stall_after(n),
        Bytes::FromClient(n) => stalling.stall_after_client(n),
    }
    let watched = format!("{}&stall-timeout=2", stalling.url());
    let (src_url, dst_url) = if source {
        (watched, dst.url())
    } else {
        (src.url(), watched)
    };
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let mut args = vec![
        "snapshot",
        "--databases",
        "big",
        "--chunk-rows",
        "300",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    let started = std::time::Instant::now();
    let out = migrate(&src_url, &dst_url, &state, &args);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(stalling.stalled() > 0, "the link never stalled: {log}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}: {log}",
        started.elapsed()
    );
    assert_same(&src, &dst, "big");
    (src, dst, log)
}

/// The other side of the stall watchdog: a read that is silent because the server is still
/// working on it (here, waiting for a table lock held 10 s, longer than `stall-timeout`) is waited
/// for, not killed.
#[test]
fn a_lock_wait_longer_than_the_stall_timeout_is_waited_out() {
    let src = Server::source("lw-src");
    let dst = Server::target("lw-dst");
    src.sql(
        "CREATE DATABASE big; USE big; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40));
         INSERT INTO t SELECT seq, CONCAT('값 ', seq) FROM seq_1_to_2000;",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let out = std::thread::scope(|s| {
        let locker = s.spawn(|| {
            src.sql("LOCK TABLES big.t WRITE; SELECT SLEEP(10); UNLOCK TABLES;");
        });
        std::thread::sleep(Duration::from_millis(500));
        let out = migrate(
            &format!("{}&stall-timeout=2", src.url()),
            &dst.url(),
            &state,
            &["snapshot", "--databases", "big"],
        );
        locker.join().expect("locker");
        out
    });
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("still working on the statement (Waiting for table metadata lock)"),
        "the watchdog did not look at the lock wait: {log}"
    );
    assert!(!log.contains("the link stalled"), "{log}");
    assert_same(&src, &dst, "big");
}

/// The target's connections killed again and again while the rows are streamed to it: in the
/// middle of a streamed LOAD DATA, and while a chunk's transaction waits for the reader to
/// confirm it. Every chunk so broken is written again whole from the rows the writer kept;
/// the snapshot ends with exactly the source's rows.
#[test]
fn target_connections_killed_while_rows_stream() {
    let src = Server::source("tk-src");
    let dst = Server::target("tk-dst");
    src.sql(
        "CREATE DATABASE big; USE big; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), KEY (v));
         INSERT INTO t SELECT seq, CONCAT('값 ', seq) FROM seq_1_to_60000;
         CREATE TABLE u (id BIGINT UNSIGNED PRIMARY KEY, b BLOB);
         INSERT INTO u SELECT seq, REPEAT(CHAR(seq % 256), seq % 700) FROM seq_1_to_20000;",
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
            "big",
            "--chunk-rows",
            "2000",
            "--threads",
            "2",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("snapshot");
    // alternately: connections running LOAD DATA, and connections with an open transaction
    let loading = "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'LOAD DATA%' AND ID <> CONNECTION_ID()";
    let waiting = "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id <> CONNECTION_ID()";
    let mut kills = 0;
    let mut round = 0;
    while snap.try_wait().expect("wait").is_none() && kills < 12 {
        let which = if round % 2 == 0 { loading } else { waiting };
        round += 1;
        for id in dst.try_sql(which).unwrap_or_default().lines() {
            if dst.try_sql(&format!("KILL {id}")).is_ok() {
                kills += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let out = snap.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    eprintln!("{kills} target connections killed during the copy");
    assert!(
        kills >= 2,
        "{kills} target connections killed: the copy ended before the test could test it"
    );
    assert_same(&src, &dst, "big");
}
