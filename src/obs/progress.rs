//! Progress for long work. On a terminal: an overall bar and one bar per table being copied
//! (indicatif), with log lines printed above the bars, never into them. Otherwise (CI, a pipe,
//! journald): a structured log line every 5 s (`phase`, `rows`, `rows_total`, `bytes`,
//! `rows_per_s`, `eta_s`), which `--log-format json` turns into JSON fields.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bars being drawn, if any: log lines are written above them.
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

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

/// The log writer: stderr, printed above the progress bars while they are drawn.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().ok().and_then(|a| a.clone());
        match active {
            Some(mp) => mp.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub struct Progress {
    pub phase: String,
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
    pub total_rows: AtomicU64,
    /// Rows done before this run (a resumed snapshot).
    resumed_rows: u64,
    started: Instant,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    tables: Mutex<HashMap<String, ProgressBar>>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    /// `total_rows` is the estimate for the whole work, `done_rows`/`done_bytes` what an earlier
    /// run already did (shown as done, not counted in the rate).
    pub fn new(phase: &str, total_rows: u64, done_rows: u64, done_bytes: u64) -> Arc<Progress> {
        let (multi, overall) = if is_terminal() {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let bar = mp.add(ProgressBar::new(total_rows.max(done_rows).max(1)));
            bar.set_style(style(
                "{prefix:>9} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows {msg} ETA {eta}",
            ));
            bar.set_prefix(phase.to_string());
            bar.set_position(done_rows);
            if let Ok(mut a) = ACTIVE.lock() {
                *a = Some(mp.clone());
            }
            (Some(mp), Some(bar))
        } else {
            (None, None)
        };
        let p = Arc::new(Progress {
            phase: phase.to_string(),
            rows: AtomicU64::new(done_rows),
            bytes: AtomicU64::new(done_bytes),
            total_rows: AtomicU64::new(total_rows.max(done_rows)),
            resumed_rows: done_rows,
            started: Instant::now(),
            multi,
            overall,
            tables: Mutex::new(HashMap::new()),
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
                    p.log_line("progress");
                }
            }
        });
        p
    }

    /// A table's copy starts: its own bar on a terminal.
    pub fn table_started(&self, table: &str, estimated_rows: u64) {
        if let Some(mp) = &self.multi {
            let bar = mp.add(ProgressBar::new(estimated_rows.max(1)));
            bar.set_style(style(
                "  {prefix:<40} {bar:30} {human_pos}/{human_len} rows {msg}",
            ));
            bar.set_prefix(table.to_string());
            if let Ok(mut t) = self.tables.lock() {
                if let Some(old) = t.insert(table.to_string(), bar) {
                    old.finish_and_clear();
                }
            }
        }
    }

    /// A table's copy starts over (its definition changed): its bar goes back to 0.
    pub fn table_restarted(&self, table: &str) {
        if let Ok(t) = self.tables.lock() {
            if let Some(bar) = t.get(table) {
                bar.set_position(0);
                bar.set_message("copying again (definition changed)");
            }
        }
    }

    pub fn add(&self, table: &str, rows: u64, bytes: u64) {
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let total = self.total_rows.load(Ordering::Relaxed);
        let now = self.rows.load(Ordering::Relaxed);
        if now > total {
            self.total_rows.store(now, Ordering::Relaxed);
        }
        if let Ok(t) = self.tables.lock() {
            if let Some(bar) = t.get(table) {
                bar.inc(rows);
                if bar.position() > bar.length().unwrap_or(0) {
                    bar.set_length(bar.position());
                }
            }
        }
    }

    pub fn table_done(&self, table: &str) {
        if let Ok(mut t) = self.tables.lock() {
            if let Some(bar) = t.remove(table) {
                bar.finish_and_clear();
            }
        }
    }

    fn rate(&self) -> f64 {
        let rows = self.rows.load(Ordering::Relaxed)
            - self.resumed_rows.min(self.rows.load(Ordering::Relaxed));
        rows as f64 / self.started.elapsed().as_secs_f64().max(0.001)
    }

    fn figures(&self) -> (u64, u64, u64, f64, f64) {
        let rows = self.rows.load(Ordering::Relaxed);
        let total = self.total_rows.load(Ordering::Relaxed).max(rows);
        let rate = self.rate();
        let eta = if rate > 0.0 {
            (total - rows) as f64 / rate
        } else {
            0.0
        };
        (rows, total, self.bytes.load(Ordering::Relaxed), rate, eta)
    }

    /// A log line with the figures as fields.
    fn log_line(&self, what: &str) {
        let (rows, total, bytes, rate, eta) = self.figures();
        tracing::info!(
            phase = %self.phase,
            rows,
            rows_total = total,
            bytes,
            rows_per_s = rate.round() as u64,
            eta_s = eta.round() as u64,
            "{} {what}: {rows}/{total} rows ({:.0}%), {} {}, {:.0} rows/s, ETA {:.0} s",
            self.phase,
            100.0 * rows as f64 / total.max(1) as f64,
            human_bytes(bytes),
            if self.phase == "verify" {
                "compared"
            } else {
                "copied"
            },
            rate,
            eta
        );
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
        if let Ok(mut t) = self.tables.lock() {
            for (_, bar) in t.drain() {
                bar.finish_and_clear();
            }
        }
        if let Some(bar) = &self.overall {
            bar.finish_and_clear();
        }
        if let Ok(mut a) = ACTIVE.lock() {
            *a = None;
        }
        self.log_line(&format!(
            "done in {:.1} s",
            self.started.elapsed().as_secs_f64()
        ));
    }
}

/// A spinner for follow and the catch-up on a terminal (None elsewhere), with log lines printed
/// above it.
pub fn spinner() -> Option<ProgressBar> {
    if !is_terminal() {
        return None;
    }
    let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let bar = mp.add(ProgressBar::new_spinner());
    bar.enable_steady_tick(Duration::from_millis(200));
    if let Ok(mut a) = ACTIVE.lock() {
        *a = Some(mp);
    }
    Some(bar)
}

/// The spinner is done.
pub fn spinner_done(bar: &ProgressBar) {
    bar.finish_and_clear();
    if let Ok(mut a) = ACTIVE.lock() {
        *a = None;
    }
}
