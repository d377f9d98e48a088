//! `--notify-url` (issue 10): a Slack-compatible webhook receives phase changes, verify
//! verdicts, every cutover step, results and errors, from real runs against real servers; a
//! webhook that is down does not fail the migration.

mod support;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

/// A local webhook: answers 200 to every POST and keeps the JSON bodies.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://127.0.0.1:{}/services/T0/B0/secret",
            listener.local_addr().expect("addr").port()
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let keep = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut len = 0usize;
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                assert!(first.starts_with("POST /services/T0/B0/secret "), "{first}");
                if let Ok(v) = serde_json::from_slice(&body) {
                    keep.lock().unwrap().push(v);
                }
                let mut s = reader.into_inner();
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        });
        Hook { url, bodies }
    }

    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| b["text"].as_str().unwrap_or("").to_string())
            .collect()
    }

    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b["migrate"]["event"] == event)
            .cloned()
            .collect()
    }
}

fn run(
    src: &Server,
    dst: &Server,
    state: &std::path::Path,
    hook: &str,
    args: &[&str],
) -> std::process::Output {
    migrate_cmd(&src.url(), &dst.url(), state, args)
        .env("MIGRATE_NOTIFY_URL", hook)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("migrate")
}

#[test]
fn the_webhook_hears_phases_verdicts_cutover_steps_and_errors() {
    let hook = Hook::start();
    let src = Server::source("nt-src");
    let dst = Server::start("nt-dst", &["--log-bin=mysql-bin"]);
    src.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(20)); \
         INSERT INTO shop.orders VALUES (1, 'a'), (2, 'b')",
    );
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    let out = run(
        &src,
        &dst,
        &state,
        &hook.url,
        &["snapshot", "--databases", "shop"],
    );
    assert_ok(&out);
    // a second snapshot into the non-empty target is refused: the error reaches the webhook
    let other = dir.path().join("other.sqlite");
    let out = run(
        &src,
        &dst,
        &other,
        &hook.url,
        &["snapshot", "--databases", "shop"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let texts = hook.texts();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("migrate snapshot on ") && t.contains("phase snapshot_copy")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("snapshot consistent at GTID")),
        "{texts:?}"
    );
    let errors = hook.events("error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0]["migrate"]["fields"]["fix"].is_string(),
        "{errors:?}"
    );

    // follow (phase), verify (verdict), cutover (every step, the result)
    let mut follow = migrate_cmd(&src.url(), &dst.url(), &state, &["follow"])
        .env("MIGRATE_NOTIFY_URL", &hook.url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("follow");
    src.sql("INSERT INTO shop.orders VALUES (3, 'c')");
    let t = Instant::now();
    while dst.sql("SELECT COUNT(*) FROM shop.orders") != "3" {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "follow did not apply"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(&src, &dst, &state, &hook.url, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let verdicts = hook.events("result");
    assert!(
        verdicts.iter().any(
            |v| v["migrate"]["verb"] == "verify" && v["migrate"]["fields"]["identical"] == true
        ),
        "{verdicts:?}"
    );
    dst.sql("SET GLOBAL read_only = ON");
    let t = Instant::now();
    let out = loop {
        let out = run(
            &src,
            &dst,
            &state,
            &hook.url,
            &[
                "cutover",
                "--switch-command",
                "true",
                "--reverse-follow",
                "manual",
            ],
        );
        // follow may not have reported its lag yet
        if out.status.code() != Some(1) || t.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    let _ = follow.wait();
    let steps: Vec<String> = hook
        .events("cutover_step")
        .iter()
        .map(|e| {
            e["migrate"]["fields"]["step"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(
        steps,
        ["freeze", "drain", "catch_up", "prove", "prepare", "switch"],
        "{:?}",
        hook.texts()
    );
    assert!(
        hook.texts()
            .iter()
            .any(|t| t.starts_with("migrate follow on ") && t.contains("phase follow")),
        "{:?}",
        hook.texts()
    );
    assert!(
        hook.texts()
            .iter()
            .any(|t| t.contains("cutover switched at final GTID")),
        "{:?}",
        hook.texts()
    );
}

/// A webhook nobody answers: the verb still succeeds (after a short wait at exit).
#[test]
fn a_dead_webhook_does_not_fail_the_migration() {
    let src = Server::source("nd-src");
    let dst = Server::start("nd-dst", &[]);
    src.sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1)");
    let dir = tempdir();
    let state = dir.path().join("s.sqlite");
    // a port with nothing listening
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let out = run(
        &src,
        &dst,
        &state,
        &format!("http://127.0.0.1:{port}/x"),
        &["snapshot", "--databases", "shop"],
    );
    assert_ok(&out);
    assert!(stderr(&out).contains("--notify-url"), "{}", stderr(&out));
    assert_eq!(dst.sql("SELECT COUNT(*) FROM shop.t"), "1");
}
