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

    let follower = migrate_cmd(
        &sp.url(),
        &tp.url(),
        &state,
        &["follow", "--databases", "shop"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("follow");
    load::run(&src, 0, 30, 3);
    sp.cut();
    load::run(&src, 30, 30, 4);
    tp.cut();
    load::run(&src, 60, 20, 5);
    sp.outage(Duration::from_secs(2));
    tp.outage(Duration::from_secs(2));
    load::run(&src, 80, 20, 6);
    src.restart();
    load::run(&src, 100, 20, 7);
    dst.restart();
    load::run(&src, 120, 20, 8);
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM: finishes the current group and exits 0
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(follower.id().to_string())
        .status();
    let out = follower.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "follow did not exit 0 on SIGTERM: {log}"
    );
    assert!(
        log.contains("reconnecting"),
        "no reconnect was logged: {log}"
    );

    catch_up_and_compare(&sp.url(), &tp.url(), &state, &src, &dst, "shop");
}
