//! Observability: log set-up, progress display, Prometheus metrics.

pub mod metrics;
pub mod notify;
pub mod progress;

use std::io::IsTerminal;
use std::sync::OnceLock;

static JSON: OnceLock<bool> = OnceLock::new();

/// Logs (and result lines) are JSON.
pub fn json() -> bool {
    JSON.get().copied().unwrap_or(false)
}

/// Install the tracing subscriber: `text` (human) or `json`, to stderr. RUST_LOG overrides the
/// level. Colours only when stderr is a terminal (journald and files keep no escape codes).
pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let _ = JSON.set(format == "json");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| progress::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// A verb's result on stdout: `text` as a line, or with `--log-format json` the fields as one
/// JSON object (`{"result": kind, ...}`), so machine-read output is never mixed with text.
pub fn result(kind: &str, fields: serde_json::Value, text: &str) {
    notify::send("result", text, fields.clone());
    if json() {
        let mut obj = serde_json::Map::new();
        obj.insert("result".into(), serde_json::Value::String(kind.into()));
        if let serde_json::Value::Object(m) = fields {
            obj.extend(m);
        }
        println!("{}", serde_json::Value::Object(obj));
    } else {
        println!("{text}");
    }
}
