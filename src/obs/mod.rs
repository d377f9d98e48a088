//! Observability: log set-up, progress display, Prometheus metrics.

pub mod metrics;
pub mod progress;

/// Install the tracing subscriber: `text` (human) or `json`, to stderr. RUST_LOG overrides the level.
pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
