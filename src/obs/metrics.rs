//! A small Prometheus text endpoint (`--metrics-addr`). Series are keyed by their full
//! name with labels, e.g. `migrate_rows_applied_total{table="shop.orders",kind="insert"}`.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

pub fn render() -> String {
    let s = match series().lock() {
        Ok(s) => s.clone(),
        Err(_) => return String::new(),
    };
    let mut out = String::new();
    for (k, v) in s {
        out.push_str(&format!("{k} {v}\n"));
    }
    out
}

/// Serve `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: &str) -> crate::error::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::error::Error::usage(
            format!("--metrics-addr {addr}: {e}"),
            "pick a free host:port, e.g. 127.0.0.1:9187",
        )
    })?;
    tracing::info!("metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                let body = render();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(())
}
