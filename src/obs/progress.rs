//! Progress for long work: indicatif bars on a terminal, a plain line every few seconds
//! otherwise (CI, `| tee`). Counters are atomics shared by all workers.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Progress {
    pub phase: String,
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub total_rows: AtomicU64,
    pub total_bytes: AtomicU64,
    started: Instant,
    overall: Option<ProgressBar>,
}

pub fn is_terminal() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", units[i])
}

impl Progress {
    pub fn new(phase: &str, total_rows: u64, total_bytes: u64) -> Arc<Progress> {
        let overall = if is_terminal() {
            let bar = ProgressBar::with_draw_target(
                Some(total_rows.max(1)),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>9} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(phase.to_string());
            Some(bar)
        } else {
            None
        };
        let p = Arc::new(Progress {
            phase: phase.to_string(),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_rows: AtomicU64::new(total_rows),
            total_bytes: AtomicU64::new(total_bytes),
            started: Instant::now(),
            overall,
        });
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            let mut last_plain = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(p) = weak.upgrade() else { break };
                if p.overall.is_some() {
                    p.refresh();
                } else if last_plain.elapsed() >= Duration::from_secs(5) {
                    last_plain = Instant::now();
                    eprintln!("{}", p.line());
                }
            }
        });
        p
    }

    pub fn add(&self, rows: u64, bytes: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn rate(&self) -> f64 {
        self.rows.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64().max(0.001)
    }

    pub fn line(&self) -> String {
        let rows = self.rows.load(Ordering::Relaxed);
        let total = self.total_rows.load(Ordering::Relaxed).max(rows);
        let rate = self.rate();
        let eta = if rate > 0.0 {
            (total - rows) as f64 / rate
        } else {
            0.0
        };
        format!(
            "{}: {rows}/{total} rows ({:.0}%), {} of about {}, {:.0} rows/s, ETA {:.0} s",
            self.phase,
            100.0 * rows as f64 / total.max(1) as f64,
            human_bytes(self.bytes.load(Ordering::Relaxed)),
            human_bytes(
                self.total_bytes
                    .load(Ordering::Relaxed)
                    .max(self.bytes.load(Ordering::Relaxed))
            ),
            rate,
            eta
        )
    }

    fn refresh(&self) {
        if let Some(bar) = &self.overall {
            let rows = self.rows.load(Ordering::Relaxed);
            bar.set_length(self.total_rows.load(Ordering::Relaxed).max(rows).max(1));
            bar.set_position(rows);
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{} at {}/s",
                human_bytes(self.bytes.load(Ordering::Relaxed)),
                human_bytes((self.bytes.load(Ordering::Relaxed) as f64 / secs) as u64)
            ));
        }
    }

    pub fn finish(&self) {
        self.refresh();
        if let Some(bar) = &self.overall {
            bar.finish();
        }
        eprintln!(
            "{} done in {:.1} s: {}",
            self.phase,
            self.started.elapsed().as_secs_f64(),
            self.line()
        );
    }
}
