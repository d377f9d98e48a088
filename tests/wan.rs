//! Through `scripts/wan-proxy.py`, the team's VPN (20 ms round trip, 200 Mbit/s): snapshot and
//! follow under a write load while the link drops every connection. Follow's binlog stream
//! compresses itself over such a link and each reconnect reads from where the applied position
//! ends in the source's binlog; the link drops while the snapshot copies too; a snapshot with
//! `?compress=true` is exact too. Source and target
//! end identical.

mod support;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The simulated VPN in front of a server.
struct Link {
    child: Child,
    port: u16,
}

impl Link {
    fn start(upstream: u16) -> Link {
        Link::start_with(upstream, "200")
    }
    fn start_with(upstream: u16, mbit: &str) -> Link {
        let port = free_port();
        let child = Command::new("python3")
            .arg(root().join("scripts/wan-proxy.py"))
            .args([
                &port.to_string(),
                &format!("127.0.0.1:{upstream}"),
                "--rtt-ms",
                "20",
                "--mbit",
                mbit,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 scripts/wan-proxy.py");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "wan-proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Link { child, port }
    }
    fn url(&self, options: &str) -> String {
        format!(
            "mysql://root@127.0.0.1:{}?ssl-mode=disabled{options}",
            self.port
        )
    }
    /// A VPN drop: every open connection is cut (new ones work).
    fn drop_connections(&self) {
        let ok = Command::new("kill")
            .args(["-USR1", &self.child.id().to_string()])
            .status()
            .expect("kill -USR1");
        assert!(ok.success());
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn snapshot_and_follow_through_a_dropping_vpn() {
    let src = Server::source("w-src");
    let dst = Server::target("w-dst");
    src.script(load::SCHEMA.as_bytes());
    let link = Link::start(src.port);
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let src_port = src.port;
    let writer = std::thread::spawn(move || {
        load::run(&Server::attach("w-load", src_port), 0, 30, 31);
    });
    let snapshot = [
        "snapshot",
        "--databases",
        "shop",
        "--threads",
        "2",
        "--chunk-rows",
        "500",
    ];
    // the link drops while the snapshot copies: its readers reconnect
    let copier = migrate_cmd(&link.url(""), &dst.url(), &state, &snapshot)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("snapshot");
    // (schema ≈ 0.5 s over the link, then ≥ 18 chunk round trips per reader)
    std::thread::sleep(Duration::from_millis(800));
    link.drop_connections();
    let out = copier.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "snapshot failed: {log}");
    assert!(
        log.contains("connection lost"),
        "the drop did not hit the snapshot (it ended first?): {log}"
    );
    writer.join().expect("writer");

    let follower = migrate_cmd(
        &link.url(""),
        &dst.url(),
        &state,
        &["follow", "--databases", "shop"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("follow");
    let writer = std::thread::spawn(move || {
        load::run(&Server::attach("w-load", src_port), 30, 120, 32);
    });
    // the VPN drops three times while the load runs (and the follower reads)
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        link.drop_connections();
    }
    writer.join().expect("writer");
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &follower.id().to_string()])
        .status();
    let out = follower.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "follow failed: {log}");
    assert!(
        log.contains("compressing the binlog stream"),
        "the stream was not compressed over a 20 ms link: {log}"
    );
    assert!(
        log.contains("reconnecting"),
        "no reconnect was logged: {log}"
    );
    assert!(
        log.contains("(where it was applied up to)"),
        "no reconnect read from the applied place: {log}"
    );
    catch_up_and_compare(&link.url(""), &dst.url(), &state, &src, &dst, "shop");

    // the snapshot's own reads compressed (`?compress=true`): the same rows
    let dst2 = Server::target("w-dst2");
    let state2 = dir.path().join("s2.sqlite");
    assert_ok(&migrate(
        &link.url("&compress=true"),
        &dst2.url(),
        &state2,
        &snapshot,
    ));
    assert_same(&src, &dst2, "shop");
}

/// The other side of watching the streamed `LOAD DATA`: a source so slow (10 KB/s) that each
/// batch of rows takes seconds to arrive, against a target whose `stall-timeout` is 1 s. The
/// load waits on the source, not on the target, so nothing is taken for a stall.
#[test]
fn a_slow_source_does_not_make_the_streamed_load_look_stalled() {
    let src = Server::source("slow-src");
    let dst = Server::target("slow-dst");
    src.sql(
        "CREATE DATABASE big; USE big; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_6000;",
    );
    let link = Link::start_with(src.port, "0.08");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let out = migrate(
        &link.url(""),
        &format!("{}&stall-timeout=1", dst.url()),
        &state,
        &[
            "snapshot",
            "--databases",
            "big",
            "--threads",
            "1",
            "--chunk-rows",
            "3000",
        ],
    );
    let log = stderr(&out);
    assert_ok(&out);
    assert!(
        !log.contains("the link stalled"),
        "a slow source was taken for a stalled target: {log}"
    );
    assert!(!log.contains("streamed load stopped"), "{log}");
    assert_same(&src, &dst, "big");
}
