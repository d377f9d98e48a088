//! Watching the source while follow runs, independently of applying: every 2 s its GTID
//! position, its binlog files and (with `--max-source-load`) its `Threads_running`. It keeps
//! running while the target is down or the reader reconnects, so "events behind" and lag keep
//! growing during an outage instead of freezing at the last good figure.

use crate::config::Endpoint;
use crate::db::{self, monitor, Session};
use crate::position::Position;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct SourceView {
    /// `@@gtid_binlog_pos` at the last look.
    pub position: Option<Position>,
    /// `SHOW BINARY LOGS`: (file, size), oldest first.
    pub files: Vec<(String, u64)>,
    /// Above `--max-source-load`: reading pauses.
    pub busy: bool,
    pub threads_running: u64,
    /// The source could not be reached at the last look.
    pub unreachable: bool,
}

impl SourceView {
    /// Source transactions not in `applied` (per-domain seq_no difference).
    pub fn behind(&self, applied: &Position) -> Option<u64> {
        let src = self.position.as_ref()?;
        Some(
            src.gtids()
                .map(|g| {
                    let a = applied
                        .gtids()
                        .find(|a| a.domain == g.domain)
                        .map_or(0, |a| a.seq);
                    g.seq.saturating_sub(a)
                })
                .sum(),
        )
    }
    /// Binlog bytes after the reader's position, and whether it reads the oldest file.
    pub fn bytes_after(&self, reader_at: &(String, u64)) -> (Option<u64>, bool) {
        match self.files.iter().position(|(name, _)| *name == reader_at.0) {
            Some(i) => (
                Some(
                    self.files[i].1.saturating_sub(reader_at.1)
                        + self.files[i + 1..].iter().map(|(_, s)| s).sum::<u64>(),
                ),
                i == 0 && self.files.len() > 1,
            ),
            None => (None, false),
        }
    }
}

/// Watch `source` until the task is aborted.
pub async fn watch(source: Endpoint, view: Arc<Mutex<SourceView>>, max_load: Option<u64>) {
    let mut conn = None;
    loop {
        if conn.is_none() {
            match db::connect(&source, Session::Meta).await {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    if let Ok(mut v) = view.lock() {
                        v.unreachable = true;
                    }
                }
            }
        }
        if let Some(c) = conn.as_mut() {
            let pos = monitor::source_position(c).await;
            let files = monitor::binlog_files(c).await;
            let load = match max_load {
                Some(_) => monitor::threads_running(c).await.map(Some),
                None => Ok(None),
            };
            match (pos, files, load) {
                (Ok(p), Ok(f), Ok(l)) => {
                    if let Ok(mut v) = view.lock() {
                        v.position = Some(p);
                        v.files = f;
                        v.unreachable = false;
                        if let (Some(max), Some(running)) = (max_load, l) {
                            let busy = running > max;
                            if busy != v.busy {
                                if busy {
                                    tracing::info!(
                                        threads_running = running,
                                        max,
                                        "source Threads_running {running} > {max}: pausing reads"
                                    );
                                } else {
                                    tracing::info!(
                                        threads_running = running,
                                        max,
                                        "source Threads_running {running} <= {max}: reading again"
                                    );
                                }
                            }
                            v.busy = busy;
                            v.threads_running = running;
                        }
                    }
                }
                _ => {
                    conn = None;
                    if let Ok(mut v) = view.lock() {
                        v.unreachable = true;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
