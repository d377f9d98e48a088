//! A small Prometheus text endpoint (`--metrics-addr`, `snapshot` and `follow` only). Every
//! metric family is declared here with its HELP and TYPE; series are created at 0 before their
//! first increment (so `increase()` sees the first one), and labelled series are created at 0
//! for every label value as soon as one of them is known (a table's three row kinds at once).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
}

/// (name, type, help) of every family the engine exposes.
pub const FAMILIES: &[(&str, Type, &str)] = &[
    ("migrate_build_info", Type::Gauge, "Build of this migrate binary (value 1)."),
    ("migrate_up", Type::Gauge, "1 while the verb runs and its connections work, 0 while it is reconnecting."),
    ("migrate_phase", Type::Gauge, "1 for the phase the verb is in (snapshot_copy, catch_up, follow, stopped)."),
    ("migrate_follow_lag_seconds", Type::Gauge, "Seconds between the source commit of the last applied transaction and now; grows while follow cannot apply."),
    ("migrate_follow_last_applied_timestamp_seconds", Type::Gauge, "Unix time of the source commit of the last applied transaction."),
    ("migrate_follow_events_behind", Type::Gauge, "Source transactions not applied on the target yet."),
    ("migrate_follow_bytes_behind", Type::Gauge, "Source binlog bytes the reader has not received yet."),
    ("migrate_transactions_applied_total", Type::Counter, "Source transactions applied on the target (row groups and DDL)."),
    ("migrate_rows_applied_total", Type::Counter, "Row changes applied on the target, by table and kind (upsert, delete, update_key)."),
    ("migrate_ddl_applied_total", Type::Counter, "DDL statements from the binlog handled on the target."),
    ("migrate_reconnects_total", Type::Counter, "Reconnections of follow after a lost connection, by side."),
    ("migrate_retries_total", Type::Counter, "Retried snapshot reads and writes, by side."),
    ("migrate_stalls_total", Type::Counter, "Connections found stalled (silent for stall-timeout while the server was not working on their statement) and reconnected, by side."),
    ("migrate_snapshot_rows_total", Type::Counter, "Rows copied by the snapshot, by table."),
    ("migrate_snapshot_bytes_total", Type::Counter, "Bytes copied by the snapshot, by table."),
    ("migrate_verify_chunks_total", Type::Counter, "Chunks compared by verify."),
    ("migrate_verify_differences_total", Type::Counter, "Differing rows found by verify."),
    ("migrate_verify_rows_total", Type::Counter, "Rows compared by verify."),
    ("migrate_verify_pause_seconds_total", Type::Counter, "Seconds the target was held at a verify round's GTID (the follower's pause)."),
    ("migrate_cutover_step", Type::Gauge, "Cutover step: 0 none, 1 freeze, 2 drain, 3 catch_up, 4 prove, 5 prepare, 6 switch, 7 switched."),
    ("migrate_throttled", Type::Gauge, "1 while follow pauses reading because the source is busy (--max-source-load)."),
];

/// The row kinds of `migrate_rows_applied_total`.
pub const ROW_KINDS: &[&str] = &["upsert", "delete", "update_key"];

static SERIES: OnceLock<Mutex<BTreeMap<String, f64>>> = OnceLock::new();

fn series() -> &'static Mutex<BTreeMap<String, f64>> {
    SERIES.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn label_escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `name{k="v",...}`
pub fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let l: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", label_escape(v)))
        .collect();
    format!("{name}{{{}}}", l.join(","))
}

pub fn set(name: &str, labels: &[(&str, &str)], v: f64) {
    if let Ok(mut s) = series().lock() {
        s.insert(key(name, labels), v);
    }
}

pub fn add(name: &str, labels: &[(&str, &str)], v: f64) {
    if let Ok(mut s) = series().lock() {
        *s.entry(key(name, labels)).or_insert(0.0) += v;
    }
}

/// Create a series at 0 if it does not exist yet.
pub fn init(name: &str, labels: &[(&str, &str)]) {
    if let Ok(mut s) = series().lock() {
        s.entry(key(name, labels)).or_insert(0.0);
    }
}

/// Create the series of a long-running verb at 0 (and `migrate_build_info`).
pub fn init_verb(verb: &str) {
    set(
        "migrate_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("verb", verb)],
        1.0,
    );
    set("migrate_up", &[], 1.0);
    for (name, ty, _) in FAMILIES {
        if *ty == Type::Counter
            && !matches!(
                *name,
                "migrate_rows_applied_total"
                    | "migrate_snapshot_rows_total"
                    | "migrate_snapshot_bytes_total"
                    | "migrate_reconnects_total"
                    | "migrate_retries_total"
                    | "migrate_stalls_total"
            )
        {
            init(name, &[]);
        }
    }
    for side in ["source", "target"] {
        init("migrate_reconnects_total", &[("side", side)]);
        init("migrate_retries_total", &[("side", side)]);
        init("migrate_stalls_total", &[("side", side)]);
    }
    if verb == "follow" {
        for g in [
            "migrate_follow_lag_seconds",
            "migrate_follow_events_behind",
            "migrate_follow_bytes_behind",
            "migrate_follow_last_applied_timestamp_seconds",
            "migrate_throttled",
        ] {
            init(g, &[]);
        }
    }
}

/// Set the phase gauge: 1 for `phase`, 0 for the others.
pub fn phase(phase: &str) {
    super::notify::phase(phase);
    for p in ["snapshot_copy", "catch_up", "follow", "stopped"] {
        set(
            "migrate_phase",
            &[("phase", p)],
            if p == phase { 1.0 } else { 0.0 },
        );
    }
}

/// Create `table`'s row counters (every kind) at 0.
pub fn init_table(table: &str) {
    for k in ROW_KINDS {
        init(
            "migrate_rows_applied_total",
            &[("table", table), ("kind", k)],
        );
    }
}

/// Count row changes of `table`, creating its other kinds at 0.
pub fn rows_applied(table: &str, kind: &str, n: f64) {
    init_table(table);
    add(
        "migrate_rows_applied_total",
        &[("table", table), ("kind", kind)],
        n,
    );
}

/// The exposition text: every family's HELP and TYPE, then its series.
pub fn render() -> String {
    let s = match series().lock() {
        Ok(s) => s.clone(),
        Err(_) => return String::new(),
    };
    let mut out = String::new();
    for (name, ty, help) in FAMILIES {
        let lines: Vec<(&String, &f64)> = s
            .iter()
            .filter(|(k, _)| {
                k.as_str() == *name || (k.starts_with(name) && k[name.len()..].starts_with('{'))
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("# HELP {name} {help}\n"));
        out.push_str(&format!(
            "# TYPE {name} {}\n",
            if *ty == Type::Counter {
                "counter"
            } else {
                "gauge"
            }
        ));
        for (k, v) in lines {
            out.push_str(&format!("{k} {v}\n"));
        }
    }
    out
}

/// The series' current values (a copy), for the probes.
fn snapshot() -> BTreeMap<String, f64> {
    series().lock().map(|s| s.clone()).unwrap_or_default()
}

/// The phase whose `migrate_phase` series is 1, if any.
fn current_phase(series: &BTreeMap<String, f64>) -> Option<&'static str> {
    ["snapshot_copy", "catch_up", "follow", "stopped"]
        .into_iter()
        .find(|p| series.get(&key("migrate_phase", &[("phase", p)])) == Some(&1.0))
}

/// `/healthz`: live while `migrate_up` is 1 (the verb runs and its connections work); not
/// while it is 0 (follow reconnecting after a lost connection). The liveness probe's
/// failureThreshold decides how long an outage may last before the pod is restarted.
/// (ok, one-line reason)
pub fn health(series: &BTreeMap<String, f64>) -> (bool, String) {
    match series.get("migrate_up") {
        Some(v) if *v == 1.0 => (true, "ok".into()),
        Some(_) => (
            false,
            "migrate_up 0: reconnecting to the source or target".into(),
        ),
        None => (false, "migrate_up not set: the verb has not started".into()),
    }
}

/// `/readyz`: ready to be relied on, by verb.
/// - follow: `migrate_up` 1, phase follow (or catch_up, `--until-caught-up`), and
///   `migrate_follow_lag_seconds` below `max_lag` (`--ready-max-lag`);
/// - snapshot: `migrate_up` 1 and the copy running (phase snapshot_copy, or its catch_up
///   replay); not before the copy starts (schema) nor once it has stopped;
/// - verify, cutover: `migrate_up` 1 (no bound applies).
///
/// (ready, one-line reason)
pub fn readiness(verb: &str, series: &BTreeMap<String, f64>, max_lag: f64) -> (bool, String) {
    let (live, why) = health(series);
    if !live {
        return (false, why);
    }
    let phase = current_phase(series);
    match verb {
        "follow" => {
            if !matches!(phase, Some("follow" | "catch_up")) {
                return (
                    false,
                    format!("follow not streaming (phase {})", phase.unwrap_or("none")),
                );
            }
            let lag = series
                .get("migrate_follow_lag_seconds")
                .copied()
                .unwrap_or(0.0);
            if lag < max_lag {
                (true, format!("ready: lag {lag:.1} s < {max_lag} s"))
            } else {
                (
                    false,
                    format!("lag {lag:.1} s >= --ready-max-lag {max_lag} s"),
                )
            }
        }
        "snapshot" => match phase {
            Some(p @ ("snapshot_copy" | "catch_up")) => (true, format!("ready: {p}")),
            p => (
                false,
                format!("snapshot not copying (phase {})", p.unwrap_or("none")),
            ),
        },
        _ => (true, format!("ready: {verb} running")),
    }
}

/// What the metrics server answers to one request line: (status line, content type, body).
fn respond(request: &str, verb: &str, max_lag: f64) -> (&'static str, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut words = request.split_whitespace();
    let method = words.next().unwrap_or("");
    let path = words.next().unwrap_or("").split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", TEXT, "GET only\n".into());
    }
    let probe = |(ok, why): (bool, String)| {
        (
            if ok {
                "200 OK"
            } else {
                "503 Service Unavailable"
            },
            TEXT,
            format!("{why}\n"),
        )
    };
    match path {
        "/metrics" | "/" => ("200 OK", "text/plain; version=0.0.4", render()),
        "/healthz" => probe(health(&snapshot())),
        "/readyz" => probe(readiness(verb, &snapshot(), max_lag)),
        _ => (
            "404 Not Found",
            TEXT,
            "not found: /metrics, /healthz, /readyz\n".into(),
        ),
    }
}

/// Serve `GET /metrics`, `/healthz` and `/readyz` on `addr` until the process ends; `verb` and
/// `max_lag` (`--ready-max-lag`) decide `/readyz` (see [`readiness`]).
pub async fn serve(addr: &str, verb: &'static str, max_lag: f64) -> crate::error::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::error::Error::usage(
            format!("--metrics-addr {addr}: {e}"),
            "pick a free host:port, e.g. 127.0.0.1:9187",
        )
    })?;
    tracing::info!("metrics on http://{addr}/metrics (probes /healthz, /readyz)");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let request = head.lines().next().unwrap_or("");
                let (status, ctype, body) = respond(request, verb, max_lag);
                let mut resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if !request.starts_with("HEAD ") {
                    resp.push_str(&body);
                }
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn help_type_and_zeroes() {
        init_verb("follow");
        rows_applied("shop.orders", "delete", 2.0);
        let text = render();
        assert!(text.contains("# HELP migrate_transactions_applied_total "));
        assert!(text.contains("# TYPE migrate_transactions_applied_total counter\nmigrate_transactions_applied_total 0\n"));
        assert!(
            text.contains("migrate_rows_applied_total{table=\"shop.orders\",kind=\"upsert\"} 0")
        );
        assert!(
            text.contains("migrate_rows_applied_total{table=\"shop.orders\",kind=\"delete\"} 2")
        );
        assert!(text.contains("# TYPE migrate_follow_lag_seconds gauge"));
        assert!(text.contains("migrate_build_info{version="));
        // every series belongs to a declared family
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(FAMILIES.iter().any(|(n, _, _)| *n == name), "{line}");
        }
    }

    fn values(up: f64, phase: Option<&str>, lag: f64) -> BTreeMap<String, f64> {
        let mut s = BTreeMap::new();
        s.insert("migrate_up".to_string(), up);
        for p in ["snapshot_copy", "catch_up", "follow", "stopped"] {
            let v = if Some(p) == phase { 1.0 } else { 0.0 };
            s.insert(key("migrate_phase", &[("phase", p)]), v);
        }
        s.insert("migrate_follow_lag_seconds".to_string(), lag);
        s
    }

    #[test]
    fn health_follows_up() {
        assert_eq!(
            health(&values(1.0, Some("follow"), 0.0)),
            (true, "ok".into())
        );
        let (ok, why) = health(&values(0.0, Some("follow"), 0.0));
        assert!(!ok && why.contains("reconnecting"), "{why}");
        let (ok, why) = health(&BTreeMap::new());
        assert!(!ok && why.contains("not started"), "{why}");
    }

    #[test]
    fn readiness_by_verb() {
        // follow: lag under the bound, up, streaming
        assert!(readiness("follow", &values(1.0, Some("follow"), 0.0), 10.0).0);
        assert!(readiness("follow", &values(1.0, Some("follow"), 9.9), 10.0).0);
        assert!(readiness("follow", &values(1.0, Some("catch_up"), 1.0), 10.0).0);
        let (ok, why) = readiness("follow", &values(1.0, Some("follow"), 10.0), 10.0);
        assert!(
            !ok && why.contains("lag 10.0 s >= --ready-max-lag 10 s"),
            "{why}"
        );
        let (ok, why) = readiness("follow", &values(0.0, Some("follow"), 0.0), 10.0);
        assert!(!ok && why.contains("migrate_up 0"), "{why}");
        let (ok, why) = readiness("follow", &values(1.0, Some("stopped"), 0.0), 10.0);
        assert!(!ok && why.contains("phase stopped"), "{why}");
        let (ok, why) = readiness("follow", &values(1.0, None, 0.0), 10.0);
        assert!(!ok && why.contains("phase none"), "{why}");
        // one line each
        assert!(!why.contains('\n'));
        // snapshot: while copying or replaying its catch-up, whatever the lag
        assert!(readiness("snapshot", &values(1.0, Some("snapshot_copy"), 99.0), 10.0).0);
        assert!(readiness("snapshot", &values(1.0, Some("catch_up"), 0.0), 10.0).0);
        assert!(!readiness("snapshot", &values(1.0, None, 0.0), 10.0).0);
        assert!(!readiness("snapshot", &values(1.0, Some("stopped"), 0.0), 10.0).0);
        assert!(!readiness("snapshot", &values(0.0, Some("snapshot_copy"), 0.0), 10.0).0);
        // verify, cutover: up is enough
        assert!(readiness("verify", &values(1.0, None, 50.0), 10.0).0);
        assert!(!readiness("cutover", &values(0.0, None, 0.0), 10.0).0);
    }

    #[test]
    fn routes() {
        let (st, ct, body) = respond("GET /metrics HTTP/1.1", "follow", 10.0);
        assert_eq!(st, "200 OK");
        assert!(ct.contains("version=0.0.4"));
        assert!(body.is_empty() || body.contains("# HELP"));
        assert_eq!(
            respond("GET /nope HTTP/1.1", "follow", 10.0).0,
            "404 Not Found"
        );
        assert_eq!(
            respond("POST /metrics HTTP/1.1", "follow", 10.0).0,
            "405 Method Not Allowed"
        );
        let (st, _, body) = respond("GET /healthz?x=1 HTTP/1.1", "follow", 10.0);
        assert!(st == "200 OK" || st == "503 Service Unavailable", "{st}");
        assert!(
            body.ends_with('\n') && body.lines().count() == 1,
            "{body:?}"
        );
        let (st, _, _) = respond("GET /readyz HTTP/1.1", "follow", 10.0);
        assert!(st == "200 OK" || st == "503 Service Unavailable", "{st}");
    }
}
