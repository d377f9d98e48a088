//! Parallel chunk copy. Each worker owns one source reader and one target writer joined by a
//! small channel, so reading chunk n+1 overlaps writing chunk n.
//!
//! Correctness (ARCHITECTURE.md, "Why the copy converges"): every chunk is read inside its own
//! short `START TRANSACTION WITH CONSISTENT SNAPSHOT`, and the binlog position of that
//! snapshot is recorded with the chunk. MyISAM/Aria tables are read after the position is
//! taken, so their rows are at or after it. A chunk is written as "delete (lo, hi], replace the
//! rows" in one target transaction, so a retried or resumed chunk leaves exactly the rows of
//! its last read. Replaying the binlog from the lowest recorded position converges the rest.

use super::plan;
use crate::config::Endpoint;
use crate::db::{self, Session};
use crate::error::{Error, Result};
use crate::obs::{metrics, progress::Progress};
use crate::schema::Table;
use crate::state::Store;
use crate::value::{decode, Value};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

pub struct CopyPlan {
    pub source: Endpoint,
    pub target: Endpoint,
    pub store: Arc<Store>,
    pub progress: Arc<Progress>,
    pub chunk_rows: u64,
    pub chunk_bytes: u64,
    /// Upper bound for one INSERT statement sent to the target.
    pub max_statement: usize,
    /// Write chunks with LOAD DATA LOCAL INFILE (else multi-row INSERT).
    pub load_data: bool,
    /// Deferred `ALTER TABLE ... ADD KEY` by table full name, run by the writer right after
    /// the table's last chunk (overlapping the copy of other tables): (state step, SQL).
    pub deferred: std::collections::HashMap<String, (String, String)>,
}

struct Chunk {
    table: Arc<Table>,
    seq: u64,
    lo: Option<Vec<Value>>,
    /// None for the last chunk (runs to the end of the table).
    hi: Option<Vec<Value>>,
    rows: Vec<Vec<Value>>,
    bytes: u64,
    binlog: (String, u64),
}

/// Retry `f` on transient errors with backoff, reconnecting through `reconnect`.
const MAX_ATTEMPTS: u32 = 40;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(6)).min(10_000))
}

async fn binlog_snapshot_position(conn: &mut Conn) -> Result<(String, u64)> {
    let rows = db::query_strings(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let mut file = None;
    let mut pos = None;
    for r in rows {
        match r[0].as_deref() {
            Some("Binlog_snapshot_file") => file = r[1].clone(),
            Some("Binlog_snapshot_position") => pos = r[1].as_deref().and_then(|p| p.parse().ok()),
            _ => {}
        }
    }
    match (file, pos) {
        (Some(f), Some(p)) if !f.is_empty() => Ok((f, p)),
        _ => Err(Error::definite(
            "source: no binlog position for the snapshot (binary log is off)",
            "enable log_bin=ON and binlog_format=ROW on the source, then restart it",
        )),
    }
}

/// Open a consistent snapshot and return the binlog position it corresponds to.
async fn open_snapshot(conn: &mut Conn) -> Result<(String, u64)> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await?;
    binlog_snapshot_position(conn).await
}

/// Read up to `limit` rows after `lo` inside the open transaction.
async fn read_rows(
    conn: &mut Conn,
    t: &Table,
    lo: Option<&[Value]>,
    limit: u64,
) -> Result<(Vec<Vec<Value>>, u64)> {
    let sql = plan::read_chunk(t, lo, limit);
    let mut result = conn.query_iter(sql).await?;
    // decode as rows arrive, into a vector sized once (growing large vectors re-faults memory)
    let mut rows = Vec::with_capacity(limit.min(100_000) as usize);
    let mut bytes = 0u64;
    let mut failed = None;
    result
        .for_each(|row| {
            if failed.is_some() {
                return;
            }
            match decode::text_row(&t.columns, row.unwrap()) {
                Ok(r) => {
                    bytes += r.iter().map(|v| v.size() as u64).sum::<u64>();
                    rows.push(r);
                }
                Err(e) => failed = Some(e),
            }
        })
        .await?;
    drop(result);
    if let Some(e) = failed {
        return Err(e.context(t.full_name()));
    }
    Ok((rows, bytes))
}

/// One chunk in its own short snapshot transaction, or (`shared` given) inside the table's
/// single open snapshot.
async fn read_once(
    conn: &mut Conn,
    t: &Table,
    lo: Option<&[Value]>,
    limit: u64,
    shared: &mut Option<(String, u64)>,
) -> Result<(Vec<Vec<Value>>, u64, (String, u64))> {
    if t.key_moved_by_cascade {
        let pos = match shared.clone() {
            Some(p) => p,
            None => {
                let p = open_snapshot(conn).await?;
                *shared = Some(p.clone());
                p
            }
        };
        let (rows, bytes) = read_rows(conn, t, lo, limit).await?;
        if (rows.len() as u64) < limit {
            conn.query_drop("COMMIT").await?;
            *shared = None;
        }
        return Ok((rows, bytes, pos));
    }
    let pos = open_snapshot(conn).await?;
    let (rows, bytes) = read_rows(conn, t, lo, limit).await?;
    conn.query_drop("COMMIT").await?;
    Ok((rows, bytes, pos))
}

/// Write a chunk: plain INSERT (fastest); if a stale row under another unique key collides
/// (error 1062), roll back and write it again with REPLACE, whose semantics the convergence
/// argument assumes.
async fn write_once(
    conn: &mut Conn,
    c: &Chunk,
    max_statement: usize,
    load_data: bool,
    buf: &mut bytes::BytesMut,
) -> Result<()> {
    if load_data && !has_zero_auto_increment(c) {
        return write_load_data(conn, c, buf).await;
    }
    match write_with(conn, c, max_statement, &plan::insert_prefix(&c.table)).await {
        Err(e) if e.code() == Some(1062) => {
            conn.query_drop("ROLLBACK").await?;
            tracing::debug!(
                "{} chunk {}: duplicate under a unique key, writing with REPLACE",
                c.table.full_name(),
                c.seq
            );
            write_with(conn, c, max_statement, &plan::replace_prefix(&c.table)).await
        }
        other => other,
    }
}

/// LOAD DATA turns 0 in an AUTO_INCREMENT column into a new id even with
/// NO_AUTO_VALUE_ON_ZERO (measured on 10.11): such chunks go through INSERT.
fn has_zero_auto_increment(c: &Chunk) -> bool {
    let zero = |v: &Value| matches!(v, Value::Int(0) | Value::UInt(0));
    c.table
        .columns
        .iter()
        .enumerate()
        .filter(|(_, col)| col.auto_increment)
        .any(|(i, _)| c.rows.iter().any(|r| zero(&r[i])))
}

/// Delete the chunk's range and LOAD DATA its rows (REPLACE semantics), in one transaction.
async fn write_load_data(conn: &mut Conn, c: &Chunk, buf: &mut bytes::BytesMut) -> Result<()> {
    let t = &c.table;
    conn.query_drop("BEGIN").await?;
    conn.query_drop(plan::delete_range(t, c.lo.as_deref(), c.hi.as_deref()))
        .await?;
    if !c.rows.is_empty() {
        // One buffer per writer, reclaimed once the previous chunk's bytes are released:
        // fresh multi-MiB allocations per chunk cost more in page faults than the copy itself.
        buf.clear();
        buf.reserve(c.bytes as usize + c.rows.len() * 8);
        for row in &c.rows {
            super::load::push_row(buf, t, row);
        }
        let bytes = buf.split().freeze();
        conn.set_infile_handler(async move {
            let s: mysql_async::InfileData =
                Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
            Ok(s)
        });
        conn.query_drop(super::load::statement(t)).await?;
    }
    conn.query_drop("COMMIT").await?;
    Ok(())
}

async fn write_with(conn: &mut Conn, c: &Chunk, max_statement: usize, prefix: &str) -> Result<()> {
    let t = &c.table;
    conn.query_drop("BEGIN").await?;
    conn.query_drop(plan::delete_range(t, c.lo.as_deref(), c.hi.as_deref()))
        .await?;
    let mut sql = String::with_capacity(max_statement.min(16 << 20));
    for row in &c.rows {
        if sql.is_empty() {
            sql.push_str(prefix);
        } else {
            sql.push_str(", ");
        }
        plan::push_row(&mut sql, t, row);
        if sql.len() >= max_statement {
            conn.query_drop(std::mem::take(&mut sql)).await?;
        }
    }
    if !sql.is_empty() {
        conn.query_drop(sql).await?;
    }
    conn.query_drop("COMMIT").await?;
    Ok(())
}

struct Worker<'a> {
    plan: &'a CopyPlan,
    queue: &'a Mutex<VecDeque<Arc<Table>>>,
}

impl Worker<'_> {
    async fn reader(&self, tx: mpsc::Sender<Chunk>) -> Result<()> {
        let mut conn =
            db::connect_retry(&self.plan.source, Session::SourceReader, MAX_ATTEMPTS).await?;
        loop {
            let next = self.queue.lock().ok().and_then(|mut q| q.pop_front());
            let Some(t) = next else { return Ok(()) };
            let (mut seq, mut lo) = self.resume_point(&t)?;
            let limit =
                (self.plan.chunk_bytes / t.avg_row_length.max(1)).clamp(1, self.plan.chunk_rows);
            let mut shared = None;
            if t.key_moved_by_cascade {
                tracing::info!(
                    "{}: an ON UPDATE CASCADE foreign key changes its key; reading it in one consistent snapshot",
                    t.full_name()
                );
            }
            loop {
                let mut attempt = 0;
                let (rows, bytes, binlog) = loop {
                    match read_once(&mut conn, &t, lo.as_deref(), limit, &mut shared).await {
                        Ok(r) => break r,
                        Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                            attempt += 1;
                            if t.key_moved_by_cascade {
                                // the table's single snapshot is gone: read it again from the start
                                shared = None;
                                seq = 0;
                                lo = None;
                                self.plan.store.reset_table(&t.db, &t.name)?;
                            }
                            tracing::warn!("reading {}: {e}; retry {attempt}", t.full_name());
                            metrics::add("migrate_retries_total", &[("side", "source")], 1.0);
                            tokio::time::sleep(backoff(attempt)).await;
                            conn = db::connect_retry(
                                &self.plan.source,
                                Session::SourceReader,
                                MAX_ATTEMPTS,
                            )
                            .await?;
                        }
                        Err(e) => return Err(e.context(format!("source table {}", t.full_name()))),
                    }
                };
                let last = (rows.len() as u64) < limit;
                let hi = if last {
                    None
                } else {
                    rows.last().map(|r| plan::key_of(&t, r))
                };
                let next_lo = hi.clone();
                let chunk = Chunk {
                    table: t.clone(),
                    seq,
                    lo: lo.take(),
                    hi,
                    rows,
                    bytes,
                    binlog,
                };
                if tx.send(chunk).await.is_err() {
                    return Ok(()); // writer stopped; its error is reported
                }
                if last {
                    break;
                }
                lo = next_lo;
                seq += 1;
            }
        }
    }

    fn resume_point(&self, t: &Table) -> Result<(u64, Option<Vec<Value>>)> {
        let done = self
            .plan
            .store
            .tables()?
            .into_iter()
            .find(|p| p.db == t.db && p.name == t.name);
        Ok(match done {
            // read again from the start: its chunks must come from one snapshot
            Some(p) if p.chunks_done > 0 && t.key_moved_by_cascade && p.status != "copied" => {
                self.plan.store.reset_table(&t.db, &t.name)?;
                (0, None)
            }
            Some(p) if p.chunks_done > 0 => {
                let lo = match p.last_key.as_deref() {
                    Some(k) => Some(serde_json::from_str(k).map_err(|e| {
                        Error::definite(
                            format!("state store: bad resume key for {}: {e}", t.full_name()),
                            "start over with a new --state file",
                        )
                    })?),
                    None => None,
                };
                (p.chunks_done, lo)
            }
            _ => (0, None),
        })
    }

    async fn writer(&self, mut rx: mpsc::Receiver<Chunk>) -> Result<()> {
        let mut conn =
            db::connect_retry(&self.plan.target, Session::TargetWriter, MAX_ATTEMPTS).await?;
        let mut buf = bytes::BytesMut::new();
        while let Some(c) = rx.recv().await {
            let mut attempt = 0;
            loop {
                match write_once(
                    &mut conn,
                    &c,
                    self.plan.max_statement,
                    self.plan.load_data,
                    &mut buf,
                )
                .await
                {
                    Ok(()) => break,
                    Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                        attempt += 1;
                        tracing::warn!(
                            "writing {} chunk {}: {e}; retry {attempt}",
                            c.table.full_name(),
                            c.seq
                        );
                        metrics::add("migrate_retries_total", &[("side", "target")], 1.0);
                        tokio::time::sleep(backoff(attempt)).await;
                        conn = db::connect_retry(
                            &self.plan.target,
                            Session::TargetWriter,
                            MAX_ATTEMPTS,
                        )
                        .await?;
                    }
                    Err(e) => {
                        return Err(e.context(format!("target table {}", c.table.full_name())))
                    }
                }
            }
            let finished = c.hi.is_none();
            // The last chunk marks the table copied; earlier ones record where to resume.
            let last_key = match &c.hi {
                Some(k) => Some(
                    serde_json::to_string(k)
                        .map_err(|e| Error::definite(e.to_string(), "report a bug"))?,
                ),
                None => None,
            };
            self.plan.store.record_chunk(
                &c.table.db,
                &c.table.name,
                c.seq,
                c.rows.len() as u64,
                c.bytes,
                (&c.binlog.0, c.binlog.1),
                last_key.as_deref(),
                finished,
            )?;
            self.plan.progress.add(c.rows.len() as u64, c.bytes);
            let tname = c.table.full_name();
            if let (true, Some((step, alter))) = (finished, self.plan.deferred.get(&tname)) {
                tracing::info!("{tname}: adding deferred indexes");
                if let Err(e) = super::exec_step(
                    &self.plan.store,
                    &mut conn,
                    step,
                    std::slice::from_ref(alter),
                )
                .await
                {
                    // left for the pass after the copy
                    tracing::warn!("{tname}: deferred indexes not added yet: {e}");
                }
            }
            metrics::add(
                "migrate_snapshot_rows_total",
                &[("table", &tname)],
                c.rows.len() as f64,
            );
            metrics::add(
                "migrate_snapshot_bytes_total",
                &[("table", &tname)],
                c.bytes as f64,
            );
        }
        Ok(())
    }
}

/// Copy the rows of `tables` with `threads` workers, resuming from the state store.
pub async fn copy_tables(plan: &CopyPlan, tables: Vec<Arc<Table>>, threads: usize) -> Result<()> {
    let queue = Mutex::new(tables.into_iter().collect::<VecDeque<_>>());
    let workers = (0..threads.max(1)).map(|_| {
        let w = Worker {
            plan,
            queue: &queue,
        };
        async move {
            let (tx, rx) = mpsc::channel(2);
            let (r, wr) = tokio::join!(w.reader(tx), w.writer(rx));
            wr.and(r)
        }
    });
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok(())
}
