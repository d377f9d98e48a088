//! Parallel chunk copy. Each worker owns one source reader and one target writer joined by a
//! small channel; a chunk's rows reach the writer in batches while they are read, and the
//! writer loads them as they come, so the copy's last rows are on the target moments after
//! they left the source (over a VPN the reader is the slow side).
//!
//! Correctness (ARCHITECTURE.md, "Why the copy converges", and docs/design.md):
//! - every chunk is read inside its own short `START TRANSACTION WITH CONSISTENT SNAPSHOT`,
//!   whose binlog position is recorded with the chunk; the first chunk's position is the
//!   table's horizon (binlog events up to it are in every chunk of the copy);
//! - the table's definition is read before the snapshot opens and again under the metadata
//!   lock the chunk's SELECT holds: if they differ a DDL raced the read and the chunk is read
//!   again; if the definition is not the one the target table was created from, the table
//!   is created again under the new definition and copied again from its first row (a new
//!   horizon); a table that disappeared is dropped on the target and recorded as gone;
//! - tables whose rows change without binlog events (children of cascading foreign keys)
//!   and tables without a usable key are read in one consistent snapshot for the whole table;
//! - a chunk ends at `--chunk-bytes` of rows actually read, whatever the statistics say: the
//!   rest of the SELECT is cancelled (`KILL QUERY` of the reader's own statement);
//! - one round trip per chunk: the definition read under the previous chunk's lock, its
//!   commit, the next snapshot, its position and its SELECT go together (`read_chunk`);
//! - a chunk is written as "delete what follows lo, load the rows" in one target transaction,
//!   committed only once the reader confirms the chunk (rolled back if it is read again); the
//!   chunks of a table are written in order, so a retried or resumed chunk leaves exactly the
//!   rows of its last read, and what follows it is written again by the chunks to come.

use crate::config::Endpoint;
use crate::db::{self, consistent, quote, retry::Backoff, watchdog, watchdog::watch, Session};
use crate::error::{Error, Result};
use crate::obs::{metrics, progress::Progress};
use crate::schema::keyset as plan;
use crate::schema::{self, ddl, Table};
use crate::state::Store;
use crate::value::{decode, Value};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

pub struct CopyPlan {
    pub source: Endpoint,
    pub target: Endpoint,
    pub store: Arc<Store>,
    pub progress: Arc<Progress>,
    pub chunk_rows: u64,
    pub chunk_bytes: u64,
    /// Upper bound for one INSERT statement sent to the target.
    pub max_statement: usize,
    /// The target's max_allowed_packet.
    pub max_packet: usize,
    /// Write chunks with LOAD DATA LOCAL INFILE (else multi-row INSERT).
    pub load_data: bool,
    /// Create non-unique secondary indexes after a table's rows.
    pub defer_indexes: bool,
    /// Deferred `ALTER TABLE ... ADD KEY` by table full name, run by the writer right after
    /// the table's last chunk (overlapping the copy of other tables): (state step, SQL).
    pub deferred: Mutex<HashMap<String, (String, String)>>,
}

struct Chunk {
    table: Arc<Table>,
    seq: u64,
    lo: Option<Vec<Value>>,
    /// None for the last chunk (runs to the end of the table).
    hi: Option<Vec<Value>>,
    /// Delete the chunk's range on the target first (not for the later chunks of a table
    /// without a key, whose first chunk emptied it).
    delete: bool,
    rows: Vec<Vec<Value>>,
    bytes: u64,
    binlog: (String, u64),
}

/// A chunk whose rows reach the writer in batches while it is read: the writer loads them as
/// they come (LOAD DATA streamed inside one target transaction), then commits when `end`
/// confirms the chunk, or rolls back when it is dropped.
struct StreamChunk {
    table: Arc<Table>,
    seq: u64,
    lo: Option<Vec<Value>>,
    binlog: (String, u64),
    rows: mpsc::UnboundedReceiver<Vec<Vec<Value>>>,
    end: oneshot::Receiver<StreamEnd>,
    /// One of the worker's chunks in flight (`CHUNKS_IN_FLIGHT`), released once written.
    permit: OwnedSemaphorePermit,
}

/// What the reader knows of a streamed chunk once its rows are read.
struct StreamEnd {
    /// None for the table's last chunk.
    hi: Option<Vec<Value>>,
    bytes: u64,
}

/// What the reader hands to the writer, in order.
enum Msg {
    /// A chunk read whole (tables read in one snapshot).
    Chunk(Chunk),
    /// A chunk streamed while it is read.
    Stream(StreamChunk),
    /// The table's definition changed during the copy: create it again on the target under
    /// this definition; its copy starts over.
    Recreate(Arc<Table>, String),
    /// The table disappeared from the source (dropped or renamed) at or before this binlog
    /// position: drop it on the target.
    Gone(Arc<Table>, (String, u64)),
}

fn snapshot_position(rows: &[Vec<Option<String>>]) -> Result<(String, u64)> {
    let p = consistent::position_of(rows).map_err(|e| e.context("source"))?;
    Ok((p.file, p.offset))
}

/// Whether the source logged anything but row changes and transaction control between two
/// binlog positions (a DDL, which may change the set of tables). A rotation in between counts
/// as a change too.
pub async fn schema_may_have_changed(
    conn: &mut Conn,
    from: &(String, u64),
    to: &(String, u64),
) -> Result<bool> {
    if from.0 != to.0 {
        return Ok(true);
    }
    if from.1 >= to.1 {
        return Ok(false);
    }
    let rows = db::query_strings(
        conn,
        &format!(
            "SHOW BINLOG EVENTS IN {} FROM {} LIMIT 100000",
            crate::db::quote::string(&from.0),
            from.1
        ),
    )
    .await?;
    for r in rows {
        let pos: u64 = r
            .get(1)
            .cloned()
            .flatten()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pos >= to.1 {
            break;
        }
        let kind = r.get(2).cloned().flatten().unwrap_or_default();
        let info = r.get(5).cloned().flatten().unwrap_or_default();
        if kind == "Query" {
            let head = info.trim_start().to_ascii_uppercase();
            if !["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT"]
                .iter()
                .any(|w| head.starts_with(w))
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The source's current binlog file position (`SHOW MASTER STATUS`).
pub async fn binlog_now(conn: &mut Conn) -> Result<(String, u64)> {
    binlog_from(&db::query_strings(conn, "SHOW MASTER STATUS").await?)
}

/// The binlog file position in the rows of `SHOW MASTER STATUS`.
pub fn binlog_from(rows: &[Vec<Option<String>>]) -> Result<(String, u64)> {
    let r = rows.first().cloned().unwrap_or_default();
    match (
        r.first().cloned().flatten(),
        r.get(1).cloned().flatten().and_then(|p| p.parse().ok()),
    ) {
        (Some(f), Some(p)) => Ok((f, p)),
        _ => Err(Error::definite(
            "source: SHOW MASTER STATUS is empty (binary log is off)",
            "enable log_bin=ON and binlog_format=ROW on the source, then restart it",
        )),
    }
}

/// How a table's read ended.
enum Read {
    /// A chunk's rows, streamed to the writer; its snapshot is still open.
    Rows {
        count: u64,
        last: Option<Vec<Value>>,
        bytes: u64,
        /// The rows stopped at the byte budget (more follow).
        cut: bool,
        /// Confirms the chunk to the writer (see `Held`).
        end: oneshot::Sender<StreamEnd>,
    },
    /// The last chunk's rows are confirmed (its definition checked, its snapshot closed).
    Confirmed,
    /// The definition is not the target's: (new definition).
    Changed(String),
    /// The table no longer exists: the binlog position after it was found missing.
    Gone((String, u64)),
    /// The writer has stopped (its error is reported).
    WriterStopped,
}

fn missing(e: &Error) -> bool {
    matches!(e.code(), Some(1146) | Some(1049))
}

/// A multi-statement read returned fewer result sets than statements: one failed without the
/// driver reporting it (seen when the table is renamed at that moment). Ask again on its own:
/// Some(position) if the table is gone, else None (read again).
async fn stopped_early(r: &mut SourceReader, t: &Table) -> Result<Option<(String, u64)>> {
    let _ = r.run("ROLLBACK").await;
    // (the helpers watch for a stalled link; a connection found stalled is not used again)
    match ddl::create_table(&mut r.conn, &t.db, &t.name).await {
        Err(e) if missing(&e) => Ok(Some(binlog_now(&mut r.conn).await?)),
        _ => Ok(None),
    }
}

/// A source reader connection, with a control connection to cancel its statement.
struct SourceReader {
    source: Endpoint,
    conn: Conn,
    control: Option<Conn>,
}

impl SourceReader {
    async fn connect(source: &Endpoint) -> Result<SourceReader> {
        Ok(SourceReader {
            source: source.clone(),
            conn: db::connect(source, Session::SourceReader).await?,
            control: None,
        })
    }

    /// Statements separated by `;` in one round trip; the result sets, in order.
    async fn multi(&mut self, sql: &str) -> Result<Vec<Vec<Vec<Option<String>>>>> {
        db::query_sets(&mut self.conn, sql).await
    }

    /// One statement without a result (COMMIT, ROLLBACK), watched (`db::run`).
    async fn run(&mut self, sql: &str) -> Result<()> {
        db::run(&mut self.conn, sql).await
    }

    /// Stop the statement running on the reader connection (the rest of a chunk's SELECT).
    async fn cancel(&mut self, id: u32) -> Result<()> {
        if self.control.is_none() {
            self.control = Some(db::connect(&self.source, Session::Meta).await?);
        }
        if let Some(c) = self.control.as_mut() {
            let control = c.id();
            let kill = async { Ok(c.query_drop(format!("KILL QUERY {id}")).await?) };
            if let Err(e) = watch(&self.source, control, "cancelling a read", kill).await {
                // a stalled control connection is opened again next time
                self.control = None;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Send `sql`: `lead` statements whose result sets are collected, then one SELECT whose
    /// rows are read until `budget` bytes. `between` runs on the collected sets before the
    /// rows are read (the server is streaming them meanwhile) and says where the rows go:
    /// kept and returned, or sent on in batches; an error or a halt stops the read there (the
    /// rest of the SELECT is cancelled).
    async fn rows<B>(
        &mut self,
        t: &Table,
        sql: &str,
        lead: usize,
        budget: u64,
        between: impl FnOnce(&[Sets]) -> B,
    ) -> std::result::Result<Streamed, (Stage, Error)>
    where
        B: std::future::Future<Output = Result<Flow>>,
    {
        let id = self.conn.id();
        let mut rows = Vec::new();
        let mut count = 0u64;
        let mut last = None;
        let mut bytes = 0u64;
        let mut cut = false;
        let mut failed = None;
        let mut kill = false;
        let mut halted = None;
        let mut sets = Vec::with_capacity(lead);
        let mut sink = None;
        {
            let what = t.full_name();
            let ep = &self.source;
            let send = async { Ok(self.conn.query_iter(sql).await?) };
            let mut result = match watch(ep, id, &what, send).await {
                Ok(r) => r,
                Err(e) => return Err((Stage::Lead, e)),
            };
            while sets.len() < lead {
                let set = async { Ok(result.collect::<mysql_async::Row>().await?) };
                let set = match watch(ep, id, &what, set).await {
                    Ok(x) => x,
                    Err(e) => return Err((Stage::Lead, e)),
                };
                sets.push(set.into_iter().map(db::row_strings).collect::<Sets>());
                if result.is_empty() {
                    break;
                }
            }
            if sets.len() < lead || result.is_empty() {
                // a statement failed without the driver reporting it (seen when the table is
                // renamed at that moment, and when the SELECT names a column a DDL dropped);
                // its error is still pending on the connection and would answer the next
                // command in that one's place: take it now
                drop(result);
                let take = async { Ok(self.conn.query_drop("DO 0").await?) };
                let _ = watch(ep, id, "DO 0", take).await;
                return Ok(Streamed::StoppedEarly(sets));
            }
            match between(&sets).await {
                Ok(Flow::Keep) => {}
                Ok(Flow::Send(tx)) => sink = Some(tx),
                Ok(Flow::Halt(h)) => {
                    halted = Some(h);
                    kill = true;
                }
                Err(e) => {
                    failed = Some(e);
                    kill = true;
                }
            }
            let mut batch_bytes = 0u64;
            while !kill {
                let row = async { Ok(result.next().await?) };
                let row = match watch(ep, id, &what, row).await {
                    Ok(Some(row)) => row,
                    Ok(None) => break,
                    Err(e) => return Err((Stage::Rows, e)),
                };
                match decode::text_row(&t.columns, row.unwrap()) {
                    Ok(r) => {
                        let size = r.iter().map(|v| v.size() as u64).sum::<u64>();
                        bytes += size;
                        batch_bytes += size;
                        count += 1;
                        rows.push(r);
                    }
                    Err(e) => {
                        failed = Some(e);
                        kill = true;
                    }
                }
                if bytes >= budget {
                    cut = true;
                    kill = true;
                }
                if let Some(tx) = &sink {
                    if !kill && (rows.len() >= BATCH_ROWS || batch_bytes >= BATCH_BYTES) {
                        last = rows.last().cloned();
                        batch_bytes = 0;
                        if tx.send(std::mem::take(&mut rows)).is_err() {
                            halted = Some(Halt::WriterStopped);
                            kill = true;
                        }
                    }
                }
            }
        }
        if kill {
            // The reader connection still has the rest of the result pending: cancel it from
            // the control connection, then let the driver drain what is left (an
            // "interrupted" error ends it).
            self.cancel(id).await.map_err(|e| (Stage::Rows, e))?;
            match self.run("DO 0").await {
                Ok(()) => {}
                Err(e) if e.code() == Some(1317) => {}
                Err(e) => return Err((Stage::Rows, e)),
            }
        }
        if let Some(e) = failed {
            return Err((Stage::Rows, e.context(t.full_name())));
        }
        if let Some(h) = halted {
            return Ok(Streamed::Halted(h));
        }
        if let Some(tx) = sink {
            if !rows.is_empty() {
                last = rows.last().cloned();
                if tx.send(std::mem::take(&mut rows)).is_err() {
                    return Ok(Streamed::Halted(Halt::WriterStopped));
                }
            }
        } else {
            last = rows.last().cloned();
        }
        Ok(Streamed::Rows {
            rows,
            count,
            last,
            bytes,
            cut,
        })
    }

    /// Rows of one SELECT until `budget` bytes: (rows, bytes, cut short).
    async fn select(
        &mut self,
        t: &Table,
        sql: &str,
        budget: u64,
    ) -> Result<(Vec<Vec<Value>>, u64, bool)> {
        match self
            .rows(t, sql, 0, budget, |_| async { Ok(Flow::Keep) })
            .await
            .map_err(|(_, e)| e)?
        {
            Streamed::Rows {
                rows, bytes, cut, ..
            } => Ok((rows, bytes, cut)),
            _ => Err(Error::transient(format!(
                "{}: read interrupted; reading again",
                t.full_name()
            ))),
        }
    }
}

/// Rows per batch sent to the writer while a chunk is read (or fewer, at `BATCH_BYTES`).
const BATCH_ROWS: usize = 1000;
const BATCH_BYTES: u64 = 512 << 10;

/// Where the rows of a read go (`SourceReader::rows`).
enum Flow {
    /// Kept and returned.
    Keep,
    /// Sent on in batches (never waiting: the reader must not hold the source's SELECT
    /// open while the writer is busy; `CHUNKS_IN_FLIGHT` bounds what is queued).
    Send(mpsc::UnboundedSender<Vec<Vec<Value>>>),
    /// Not read.
    Halt(Halt),
}

/// Result sets of metadata statements: rows of optional strings.
type Sets = Vec<Vec<Option<String>>>;

/// Where a chunk's round trip failed.
enum Stage {
    /// In the statements before the SELECT.
    Lead,
    /// In the SELECT's rows.
    Rows,
}

/// Why a read stopped after its leading statements.
enum Halt {
    Changed(String),
    WriterStopped,
}

/// What `SourceReader::rows` read.
enum Streamed {
    Rows {
        /// The rows kept (`Flow::Keep`); empty when they were sent on.
        rows: Vec<Vec<Value>>,
        count: u64,
        /// The last row read.
        last: Option<Vec<Value>>,
        bytes: u64,
        cut: bool,
    },
    Halted(Halt),
    /// The SELECT, or a leading statement, failed unreported: the sets collected.
    StoppedEarly(Vec<Sets>),
}

/// What a reader reads next for a table.
enum Next<'a> {
    /// The chunk after `lo` (from the start if None), at most `limit` rows, with its place
    /// among the worker's chunks in flight.
    Chunk {
        lo: Option<&'a [Value]>,
        limit: u64,
        permit: OwnedSemaphorePermit,
    },
    /// Only confirm the held chunk and close its snapshot: the table's last chunk, or the
    /// writer is behind (no snapshot stays open on the source while it catches up).
    Confirm,
}

/// A chunk sent to the writer while it is read, its snapshot still open on the reader: the
/// next round trip confirms it (`end` is sent), and dropping it discards what the writer
/// holds of it (the chunk is read again, or its table copied again or dropped).
struct Held {
    lo: Option<Vec<Value>>,
    seq: u64,
    end: oneshot::Sender<StreamEnd>,
    info: StreamEnd,
}

impl Held {
    fn confirm(self) {
        // a writer that stopped has its own error to report
        let _ = self.end.send(self.info);
    }
}

/// One round trip of a table's copy (see the module comment): confirm the chunk held from
/// the previous round trip, if any, and read the next one in its own consistent snapshot,
/// its rows streamed to the writer as they arrive.
///
/// `held` is the previous chunk, read in a transaction still open on `r`. Its definition is
/// read again under that transaction's metadata lock, the transaction committed, and the
/// next snapshot opened, all in this round trip: the one definition read confirms the held
/// chunk (before the next chunk's rows are read) and is the next chunk's "before". Over a
/// VPN this is one round trip per chunk instead of three.
#[allow(clippy::too_many_arguments)]
async fn read_chunk(
    r: &mut SourceReader,
    t: &Arc<Table>,
    definition: &str,
    next: Next<'_>,
    seq: u64,
    budget: u64,
    held: &mut Option<Held>,
    tx: &mpsc::Sender<Msg>,
) -> Result<Read> {
    let show = format!("SHOW CREATE TABLE {}", t.quoted());
    let (lo, limit, permit) = match next {
        Next::Chunk { lo, limit, permit } => (lo, limit, permit),
        Next::Confirm => {
            let sets = r.multi(&format!("{show}; COMMIT")).await?;
            let after = definition_of(&sets, 0);
            if ddl::normalize_definition(&after) != ddl::normalize_definition(definition) {
                held.take();
                return Ok(Read::Changed(after));
            }
            if let Some(h) = held.take() {
                h.confirm();
            }
            return Ok(Read::Confirmed);
        }
    };
    let open = held.is_some();
    let lead = if open { 4 } else { 3 };
    let sql = format!(
        "{show}; {}{}; {}",
        if open { "COMMIT; " } else { "" },
        consistent::START,
        plan::read_chunk(t, lo, limit)
    );
    let mut end_slot = None;
    let slot = &mut end_slot;
    let confirm = |sets: &[Sets]| {
        let before = definition_of(sets, 0);
        let changed = ddl::normalize_definition(&before) != ddl::normalize_definition(definition);
        let position = snapshot_position(sets.last().map(Vec::as_slice).unwrap_or_default());
        // a held chunk the definition does not confirm stays held until the table's copy
        // starts over: an error before that reads it again
        let h = if changed { None } else { held.take() };
        let lo = lo.map(<[Value]>::to_vec);
        async move {
            if changed {
                return Ok(Flow::Halt(Halt::Changed(before)));
            }
            if let Some(h) = h {
                h.confirm();
            }
            let (rows_tx, rows_rx) = mpsc::unbounded_channel();
            let (end_tx, end_rx) = oneshot::channel();
            let chunk = StreamChunk {
                table: t.clone(),
                seq,
                lo,
                binlog: position?,
                rows: rows_rx,
                end: end_rx,
                permit,
            };
            if tx.send(Msg::Stream(chunk)).await.is_err() {
                return Ok(Flow::Halt(Halt::WriterStopped));
            }
            *slot = Some(end_tx);
            Ok(Flow::Send(rows_tx))
        }
    };
    let streamed = match r.rows(t, &sql, lead, budget, confirm).await {
        Ok(x) => x,
        Err((Stage::Lead, e)) if missing(&e) => {
            let _ = r.run("ROLLBACK").await;
            let at = binlog_now(&mut r.conn).await?;
            held.take();
            return Ok(Read::Gone(at));
        }
        Err((Stage::Rows, e)) if matches!(e.code(), Some(1054) | Some(1146)) => {
            // a column or the table went away between the statements
            let _ = r.run("ROLLBACK").await;
            return Err(Error::transient(format!(
                "{}: changed while reading ({})",
                t.full_name(),
                e.what
            )));
        }
        Err((_, e)) => return Err(e),
    };
    match streamed {
        Streamed::StoppedEarly(sets) => {
            if sets.len() == lead {
                // every statement before the SELECT answered: a definition that changed since
                // the target's is why the SELECT failed (a column renamed or dropped)
                let before = definition_of(&sets, 0);
                if ddl::normalize_definition(&before) != ddl::normalize_definition(definition) {
                    let _ = r.run("ROLLBACK").await;
                    held.take();
                    return Ok(Read::Changed(before));
                }
            }
            match stopped_early(r, t).await? {
                Some(at) => {
                    held.take();
                    Ok(Read::Gone(at))
                }
                // the held chunk stays held: the retry reads it again
                None => Err(Error::transient(format!(
                    "{}: read interrupted; reading again",
                    t.full_name()
                ))),
            }
        }
        Streamed::Halted(Halt::WriterStopped) => Ok(Read::WriterStopped),
        Streamed::Halted(Halt::Changed(def)) => {
            r.run("COMMIT").await?;
            held.take();
            Ok(Read::Changed(def))
        }
        Streamed::Rows {
            count,
            last,
            bytes,
            cut,
            ..
        } => match end_slot {
            Some(end) => Ok(Read::Rows {
                count,
                last,
                bytes,
                cut,
                end,
            }),
            None => Ok(Read::WriterStopped),
        },
    }
}

fn definition_of(sets: &[Vec<Vec<Option<String>>>], set: usize) -> String {
    sets.get(set)
        .and_then(|s| s.first())
        .and_then(|r| r.get(1).cloned().flatten())
        .unwrap_or_default()
}

/// Write a chunk: plain INSERT (fastest); if a stale row under another unique key collides
/// (error 1062), roll back and write it again with REPLACE, whose semantics the convergence
/// argument assumes.
async fn write_once(
    conn: &mut Conn,
    c: &Chunk,
    limits: (usize, usize),
    load_data: bool,
    buf: &mut bytes::BytesMut,
) -> Result<()> {
    if c.table.sequence {
        // one row; a sequence cannot be deleted from, and REPLACE sets it
        return write_with(conn, c, limits, &plan::replace_prefix(&c.table)).await;
    }
    if load_data && !has_zero_auto_increment(&c.table, &c.rows) {
        return write_load_data(conn, c, buf, limits.1).await;
    }
    match write_with(conn, c, limits, &plan::insert_prefix(&c.table)).await {
        Err(e) if e.code() == Some(1062) && c.table.has_key() => {
            db::run(conn, "ROLLBACK").await?;
            tracing::debug!(
                "{} chunk {}: duplicate under a unique key, writing with REPLACE",
                c.table.full_name(),
                c.seq
            );
            write_with(conn, c, limits, &plan::replace_prefix(&c.table)).await
        }
        other => other,
    }
}

/// LOAD DATA turns 0 in an AUTO_INCREMENT column into a new id even with
/// NO_AUTO_VALUE_ON_ZERO (measured on 10.11): such chunks go through INSERT.
fn has_zero_auto_increment(t: &Table, rows: &[Vec<Value>]) -> bool {
    let zero = |v: &Value| matches!(v, Value::Int(0) | Value::UInt(0));
    t.columns
        .iter()
        .enumerate()
        .filter(|(_, col)| col.auto_increment)
        .any(|(i, _)| rows.iter().any(|r| zero(&r[i])))
}

/// The streamed half of `write_streamed`: open the chunk's target transaction, delete what
/// follows its start, and LOAD DATA its rows as their batches arrive. Every batch is moved to
/// `kept` as soon as it is received, before the load may fail. A batch holding a 0 in an
/// AUTO_INCREMENT column (LOAD DATA would turn it into a new id) or a row larger than the
/// target's packet ends the stream with an error.
async fn load_streamed(
    conn: &mut Conn,
    t: &Arc<Table>,
    lo: Option<&[Value]>,
    rows: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<Vec<Value>>>>>,
    kept: Arc<Mutex<Vec<Vec<Value>>>>,
    max_packet: usize,
) -> Result<()> {
    db::run(conn, "BEGIN").await?;
    db::run(conn, &plan::delete_range(t, lo, None)).await?;
    let first = rows.lock().await.recv().await;
    let Some(first) = first else {
        return Ok(()); // no rows
    };
    let first = keep(t, first, &kept, max_packet);
    if let Err(e) = &first {
        return Err(Error::transient(e.to_string()));
    }
    let table = t.clone();
    // the statement is watched only while it waits on the target: from when it is sent, and
    // from each batch handed to the driver until the driver asks for the next one (or, after
    // the last, until the answer); not while the source's rows are awaited
    let waiting: watchdog::WaitingOnServer = Arc::new(Mutex::new(Some(Instant::now())));
    let stream = futures_util::stream::unfold(
        (Some(first), rows, kept, table, false, waiting.clone()),
        move |(first, rows, kept, t, stopped, waiting)| async move {
            if stopped {
                watchdog::waiting_on_server(&waiting, true);
                return None;
            }
            let item = match first {
                Some(item) => item,
                None => {
                    watchdog::waiting_on_server(&waiting, false);
                    let batch = rows.lock().await.recv().await;
                    watchdog::waiting_on_server(&waiting, true);
                    keep(&t, batch?, &kept, max_packet)
                }
            };
            let stopped = item.is_err();
            Some((item, (None, rows, kept, t, stopped, waiting)))
        },
    );
    conn.set_infile_handler(async move {
        let s: mysql_async::InfileData = Box::pin(stream);
        Ok(s)
    });
    let statement = super::load::statement(t);
    let on = watchdog::of(conn);
    let load = async { Ok(conn.query_drop(statement).await?) };
    match on {
        Some((ep, id)) => {
            let what = format!("LOAD DATA into {}", t.full_name());
            watchdog::watch_streaming(&ep, id, &what, waiting, load).await
        }
        None => load.await,
    }
}

/// A batch as LOAD DATA lines (or why the stream cannot carry it), the batch moved to `kept`.
fn keep(
    t: &Table,
    batch: Vec<Vec<Value>>,
    kept: &Mutex<Vec<Vec<Value>>>,
    max_packet: usize,
) -> std::io::Result<bytes::Bytes> {
    let mut out = bytes::BytesMut::with_capacity(batch.len() * 64);
    let problem = if has_zero_auto_increment(t, &batch) {
        Some("a 0 in an AUTO_INCREMENT column")
    } else if push_lines(&mut out, t, &batch, max_packet).is_err() {
        Some("a row larger than the target's packet")
    } else {
        None
    };
    if let Ok(mut k) = kept.lock() {
        k.extend(batch);
    }
    match problem {
        Some(p) => Err(std::io::Error::other(p)),
        None => Ok(out.freeze()),
    }
}

/// `rows` as LOAD DATA lines appended to `out`; a row larger than the target's packet is an
/// error naming the fix.
fn push_lines(
    out: &mut bytes::BytesMut,
    t: &Table,
    rows: &[Vec<Value>],
    max_packet: usize,
) -> Result<()> {
    for row in rows {
        let before = out.len();
        super::load::push_row(out, t, row);
        db::check_packet(
            out.len() - before,
            max_packet,
            format!("target table {}", t.full_name()),
        )?;
    }
    Ok(())
}

async fn delete_range(conn: &mut Conn, c: &Chunk) -> Result<()> {
    if !c.delete || c.table.sequence || c.table.storage() != crate::schema::Storage::Here {
        return Ok(());
    }
    let sql = if c.table.has_key() {
        plan::delete_range(&c.table, c.lo.as_deref(), c.hi.as_deref())
    } else {
        // the first chunk of a table without a key empties it; the others only insert
        format!("DELETE FROM {}", c.table.quoted())
    };
    db::run(conn, &sql).await?;
    Ok(())
}

/// Delete the chunk's range and LOAD DATA its rows (REPLACE semantics), in one transaction.
async fn write_load_data(
    conn: &mut Conn,
    c: &Chunk,
    buf: &mut bytes::BytesMut,
    max_packet: usize,
) -> Result<()> {
    let t = &c.table;
    db::run(conn, "BEGIN").await?;
    delete_range(conn, c).await?;
    if !c.rows.is_empty() {
        // One buffer per writer, reclaimed once the previous chunk's bytes are released:
        // fresh multi-MiB allocations per chunk cost more in page faults than the copy itself.
        buf.clear();
        buf.reserve(c.bytes as usize + c.rows.len() * 8);
        push_lines(buf, t, &c.rows, max_packet)?;
        let bytes = buf.split().freeze();
        conn.set_infile_handler(async move {
            let s: mysql_async::InfileData =
                Box::pin(futures_util::stream::once(async move { Ok(bytes) }));
            Ok(s)
        });
        db::run(conn, &super::load::statement(t)).await?;
    }
    db::run(conn, "COMMIT").await?;
    Ok(())
}

async fn write_with(
    conn: &mut Conn,
    c: &Chunk,
    (max_statement, max_packet): (usize, usize),
    prefix: &str,
) -> Result<()> {
    let t = &c.table;
    db::run(conn, "BEGIN").await?;
    delete_range(conn, c).await?;
    let mut sql = String::with_capacity(max_statement.min(16 << 20));
    for row in &c.rows {
        if sql.is_empty() {
            sql.push_str(prefix);
        } else {
            sql.push_str(", ");
        }
        plan::push_row(&mut sql, t, row);
        db::check_packet(
            sql.len(),
            max_packet,
            format!("target table {}", t.full_name()),
        )?;
        if sql.len() >= max_statement {
            db::run(conn, &std::mem::take(&mut sql)).await?;
        }
    }
    if !sql.is_empty() {
        db::run(conn, &sql).await?;
    }
    db::run(conn, "COMMIT").await?;
    Ok(())
}

/// Source reader connections opened ahead of the copy (while the schema is read and
/// created: each connection costs several round trips over a VPN). A worker takes one, or
/// connects itself when none is left or one failed (its error then comes with the retries).
pub struct Readers {
    pending: Mutex<Vec<tokio::task::JoinHandle<Result<SourceReader>>>>,
}

impl Readers {
    pub fn open(source: &Endpoint, n: usize) -> Readers {
        let pending = (0..n)
            .map(|_| {
                let source = source.clone();
                tokio::spawn(async move { SourceReader::connect(&source).await })
            })
            .collect();
        Readers {
            pending: Mutex::new(pending),
        }
    }

    pub fn none() -> Readers {
        Readers {
            pending: Mutex::new(Vec::new()),
        }
    }

    async fn take(&self) -> Option<SourceReader> {
        let handle = self.pending.lock().ok()?.pop()?;
        match handle.await {
            Ok(Ok(r)) => Some(r),
            _ => None,
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        if let Ok(p) = self.pending.lock() {
            for h in p.iter() {
                h.abort();
            }
        }
    }
}

struct Worker<'a> {
    plan: &'a CopyPlan,
    queue: &'a Mutex<VecDeque<Arc<Table>>>,
    readers: &'a Readers,
    /// The worker's streamed chunks in flight (`CHUNKS_IN_FLIGHT`).
    in_flight: Arc<Semaphore>,
}

/// Streamed chunks a worker has in flight: one being written, one being read. The reader
/// takes a place before it opens a chunk's snapshot, so it never waits for the writer with a
/// snapshot (or a SELECT) open on the source; memory is these chunks' rows.
const CHUNKS_IN_FLIGHT: usize = 2;

/// Rows per chunk for the next read, from the bytes per row of the last one.
fn next_limit(plan: &CopyPlan, rows: usize, bytes: u64, prev: u64) -> u64 {
    if rows == 0 || bytes == 0 {
        return prev;
    }
    let per_row = (bytes / rows as u64).max(1);
    (plan.chunk_bytes / per_row).clamp(1, plan.chunk_rows)
}

impl Worker<'_> {
    async fn reconnect(&self) -> Result<SourceReader> {
        let mut backoff = Backoff::bounded();
        loop {
            match SourceReader::connect(&self.plan.source).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    backoff
                        .retry_after(e.context("source"), "connecting")
                        .await?
                }
            }
        }
    }

    async fn reader(&self, tx: mpsc::Sender<Msg>) -> Result<()> {
        let mut r = match self.readers.take().await {
            Some(r) => r,
            None => self.reconnect().await?,
        };
        loop {
            let next = self.queue.lock().ok().and_then(|mut q| q.pop_front());
            let Some(t) = next else { return Ok(()) };
            match self.read_table(&mut r, t, &tx).await {
                Ok(true) => {}
                Ok(false) => return Ok(()), // writer stopped; its error is reported
                Err(e) => return Err(e),
            }
        }
    }

    /// The table's definition on the target, from the state store.
    fn definition(&self, t: &Table) -> Result<String> {
        Ok(self
            .plan
            .store
            .tables()?
            .into_iter()
            .find(|p| p.db == t.db && p.name == t.name)
            .and_then(|p| p.definition)
            .unwrap_or_default())
    }

    /// Read every chunk of `t` (again from the start whenever its definition changes).
    /// Returns false when the writer has stopped.
    async fn read_table(
        &self,
        r: &mut SourceReader,
        mut t: Arc<Table>,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<bool> {
        let mut definition = self.definition(&t)?;
        // a copy started over (the writer resets the table's progress when it gets Recreate,
        // which may be after this reader's next read)
        let mut fresh = false;
        'copy: loop {
            if t.needs_single_snapshot() {
                tracing::info!(
                    "{}: {}; reading it in one consistent snapshot",
                    t.full_name(),
                    if !t.has_key() {
                        "no primary or NOT NULL unique key"
                    } else {
                        "its rows change through cascading foreign keys, which the binlog does not carry"
                    }
                );
                let mut backoff = Backoff::bounded();
                loop {
                    match self.read_whole(r, &t, &definition, tx).await {
                        Ok(Whole::Done) => return Ok(true),
                        Ok(Whole::WriterStopped) => return Ok(false),
                        Ok(Whole::Changed(def)) => {
                            let (nt, ndef) = redescribe(r, &t, def).await?;
                            t = nt;
                            definition = ndef.clone();
                            if tx.send(Msg::Recreate(t.clone(), ndef)).await.is_err() {
                                return Ok(false);
                            }
                            continue 'copy;
                        }
                        Ok(Whole::Gone(at)) => {
                            return Ok(tx.send(Msg::Gone(t.clone(), at)).await.is_ok());
                        }
                        Err(e) => {
                            let e = e.context(format!("source table {}", t.full_name()));
                            backoff.retry_after(e, "reading").await?;
                            // the table's single snapshot is gone: read it again from the start
                            self.plan.store.reset_table(&t.db, &t.name)?;
                            metrics::add("migrate_retries_total", &[("side", "source")], 1.0);
                            *r = self.reconnect().await?;
                        }
                    }
                }
            }
            let (mut seq, mut lo) = if fresh {
                (0, None)
            } else {
                self.resume_point(&t)?
            };
            let stats_limit =
                (self.plan.chunk_bytes / t.avg_row_length.max(1)).clamp(1, self.plan.chunk_rows);
            let mut limit = stats_limit;
            // the chunk read by the previous round trip: its snapshot is still open on `r`
            // until the next round trip confirms it and sends it to the writer
            let mut held: Option<Held> = None;
            let mut finishing = false;
            loop {
                let mut backoff = Backoff::bounded();
                let read = loop {
                    let next = if finishing {
                        Next::Confirm
                    } else {
                        match self.in_flight.clone().try_acquire_owned() {
                            Ok(permit) => Next::Chunk {
                                lo: lo.as_deref(),
                                limit,
                                permit,
                            },
                            // the writer is behind: close the held chunk's snapshot first,
                            // then wait with nothing open on the source
                            Err(_) if held.is_some() => Next::Confirm,
                            Err(_) => Next::Chunk {
                                lo: lo.as_deref(),
                                limit,
                                permit: self.in_flight.clone().acquire_owned().await.map_err(
                                    |_| {
                                        Error::definite("the copy's writer is gone", "report a bug")
                                    },
                                )?,
                            },
                        }
                    };
                    match read_chunk(
                        r,
                        &t,
                        &definition,
                        next,
                        seq,
                        self.plan.chunk_bytes,
                        &mut held,
                        tx,
                    )
                    .await
                    {
                        Ok(x) => break x,
                        Err(e) => {
                            let e = e.context(format!("source table {}", t.full_name()));
                            backoff.retry_after(e, "reading").await?;
                            metrics::add("migrate_retries_total", &[("side", "source")], 1.0);
                            *r = self.reconnect().await?;
                            // the held chunk's snapshot went with the connection: read it again
                            if let Some(h) = held.take() {
                                lo = h.lo;
                                seq = h.seq;
                                finishing = false;
                            }
                        }
                    }
                };
                let (count, last_row, bytes, cut, end) = match read {
                    Read::Rows {
                        count,
                        last,
                        bytes,
                        cut,
                        end,
                    } => (count, last, bytes, cut, end),
                    Read::Confirmed if finishing => return Ok(true),
                    Read::Confirmed => continue,
                    Read::WriterStopped => return Ok(false),
                    Read::Changed(def) => {
                        tracing::info!(
                            "{}: its definition changed during the copy; copying it again under the new one",
                            t.full_name()
                        );
                        let (nt, ndef) = redescribe(r, &t, def).await?;
                        t = nt;
                        definition = ndef.clone();
                        fresh = true;
                        if tx.send(Msg::Recreate(t.clone(), ndef)).await.is_err() {
                            return Ok(false);
                        }
                        continue 'copy;
                    }
                    Read::Gone(at) => {
                        tracing::info!(
                            "{}: no longer on the source (dropped or renamed); dropping it on the target",
                            t.full_name()
                        );
                        return Ok(tx.send(Msg::Gone(t.clone(), at)).await.is_ok());
                    }
                };
                let last = !cut && count < limit;
                limit = next_limit(self.plan, count as usize, bytes, limit);
                let hi = if last {
                    None
                } else {
                    last_row.map(|r| plan::key_of(&t, &r))
                };
                let next_lo = hi.clone();
                held = Some(Held {
                    lo: lo.take(),
                    seq,
                    end,
                    info: StreamEnd { hi, bytes },
                });
                if last {
                    finishing = true;
                } else {
                    lo = next_lo;
                    seq += 1;
                }
            }
        }
    }

    /// A whole table in one consistent snapshot: keyset chunks inside one transaction, or for
    /// a table without a key, one streamed SELECT cut into chunks.
    async fn read_whole(
        &self,
        r: &mut SourceReader,
        t: &Arc<Table>,
        definition: &str,
        tx: &mpsc::Sender<Msg>,
    ) -> Result<Whole> {
        self.plan.store.reset_table(&t.db, &t.name)?;
        let show = format!("SHOW CREATE TABLE {}", t.quoted());
        let sets = match r
            .multi(&format!(
                "SET SESSION net_write_timeout = 3600; {show}; {}",
                consistent::START
            ))
            .await
        {
            Ok(s) => s,
            Err(e) if missing(&e) => return Ok(Whole::Gone(binlog_now(&mut r.conn).await?)),
            Err(e) => return Err(e),
        };
        if sets.len() < 4 {
            return match stopped_early(r, t).await? {
                Some(at) => Ok(Whole::Gone(at)),
                None => Err(Error::transient(format!(
                    "{}: read interrupted; reading again",
                    t.full_name()
                ))),
            };
        }
        let before = definition_of(&sets, 1);
        let binlog = snapshot_position(sets.get(3).map(Vec::as_slice).unwrap_or_default())?;
        if ddl::normalize_definition(&before) != ddl::normalize_definition(definition) {
            r.run("COMMIT").await?;
            return Ok(Whole::Changed(before));
        }
        let mut seq = 0;
        if !t.has_key() {
            // one SELECT, cut into chunks as the rows stream in
            let mut rows = Vec::new();
            let mut bytes = 0u64;
            let (id, what) = (r.conn.id(), t.full_name());
            let select = plan::read_all(t);
            let send = async { Ok(r.conn.query_iter(select).await?) };
            let mut result = watch(&r.source, id, &what, send).await?;
            loop {
                let row = async { Ok(result.next().await?) };
                let row = watch(&r.source, id, &what, row).await?;
                let done = row.is_none();
                if let Some(row) = row {
                    let v = decode::text_row(&t.columns, row.unwrap())
                        .map_err(|e| e.context(t.full_name()))?;
                    bytes += v.iter().map(|x| x.size() as u64).sum::<u64>();
                    rows.push(v);
                }
                if done || bytes >= self.plan.chunk_bytes {
                    let chunk = Chunk {
                        table: t.clone(),
                        seq,
                        lo: None,
                        hi: if done { None } else { Some(Vec::new()) },
                        delete: seq == 0,
                        rows: std::mem::take(&mut rows),
                        bytes,
                        binlog: binlog.clone(),
                    };
                    bytes = 0;
                    seq += 1;
                    if tx.send(Msg::Chunk(chunk)).await.is_err() {
                        return Ok(Whole::WriterStopped);
                    }
                }
                if done {
                    break;
                }
            }
            drop(result);
        } else {
            let mut lo: Option<Vec<Value>> = None;
            let mut limit =
                (self.plan.chunk_bytes / t.avg_row_length.max(1)).clamp(1, self.plan.chunk_rows);
            loop {
                let sql = plan::read_chunk(t, lo.as_deref(), limit);
                let (rows, bytes, cut) = r.select(t, &sql, self.plan.chunk_bytes).await?;
                let last = !cut && (rows.len() as u64) < limit;
                limit = next_limit(self.plan, rows.len(), bytes, limit);
                let hi = if last {
                    None
                } else {
                    rows.last().map(|row| plan::key_of(t, row))
                };
                let chunk = Chunk {
                    table: t.clone(),
                    seq,
                    lo: lo.take(),
                    hi: hi.clone(),
                    delete: true,
                    rows,
                    bytes,
                    binlog: binlog.clone(),
                };
                seq += 1;
                if tx.send(Msg::Chunk(chunk)).await.is_err() {
                    return Ok(Whole::WriterStopped);
                }
                if last {
                    break;
                }
                lo = hi;
            }
        }
        r.run("COMMIT").await?;
        Ok(Whole::Done)
    }

    fn resume_point(&self, t: &Table) -> Result<(u64, Option<Vec<Value>>)> {
        let done = self
            .plan
            .store
            .tables()?
            .into_iter()
            .find(|p| p.db == t.db && p.name == t.name);
        Ok(match done {
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

    async fn writer(&self, mut rx: mpsc::Receiver<Msg>) -> Result<()> {
        let mut conn = connect_retry(&self.plan.target, Session::TargetWriter).await?;
        let mut buf = bytes::BytesMut::new();
        while let Some(msg) = rx.recv().await {
            // a streamed chunk's place in flight is given back once it is recorded (and, for
            // a table's last, its deferred indexes added)
            let (c, _place) = match msg {
                Msg::Chunk(c) => {
                    self.write_buffered(&mut conn, &c, &mut buf).await?;
                    (c, None)
                }
                Msg::Stream(s) => match self.write_streamed(&mut conn, s, &mut buf).await? {
                    Some((c, place)) => (c, Some(place)),
                    None => continue,
                },
                Msg::Recreate(t, definition) => {
                    self.plan.progress.table_restarted(&t.full_name());
                    self.retrying(&mut conn, &Action::Recreate(t, definition))
                        .await?;
                    continue;
                }
                Msg::Gone(t, (file, pos)) => {
                    self.retrying(&mut conn, &Action::Drop(t.clone())).await?;
                    self.plan.store.mark_gone(&t.db, &t.name, &file, pos)?;
                    continue;
                }
            };
            self.written(&mut conn, &c).await?;
        }
        Ok(())
    }

    /// Write a whole chunk ("delete its range, insert its rows" in one transaction),
    /// reconnecting and retrying transient failures.
    async fn write_buffered(
        &self,
        conn: &mut Conn,
        c: &Chunk,
        buf: &mut bytes::BytesMut,
    ) -> Result<()> {
        let mut backoff = Backoff::bounded();
        loop {
            match write_once(
                conn,
                c,
                (self.plan.max_statement, self.plan.max_packet),
                self.plan.load_data,
                buf,
            )
            .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let e = e.context(format!("target table {}", c.table.full_name()));
                    backoff
                        .retry_after(e, &format!("writing chunk {}", c.seq))
                        .await?;
                    metrics::add("migrate_retries_total", &[("side", "target")], 1.0);
                    *conn = connect_retry(&self.plan.target, Session::TargetWriter).await?;
                }
            }
        }
    }

    /// Write a streamed chunk: its rows are loaded as they arrive, in one target transaction
    /// that deletes what the target holds after the chunk's start first (the chunks of a
    /// table are written in order, so what follows is written again by the chunks to come);
    /// committed once the reader confirms the chunk, rolled back if it discards it. Whatever
    /// stops the stream (a lost connection, a row LOAD DATA cannot carry exactly) leaves the
    /// chunk to `write_buffered`, from the rows kept. Returns the chunk written with its place
    /// in flight, or None when it was discarded.
    async fn write_streamed(
        &self,
        conn: &mut Conn,
        s: StreamChunk,
        buf: &mut bytes::BytesMut,
    ) -> Result<Option<(Chunk, OwnedSemaphorePermit)>> {
        let StreamChunk {
            table,
            seq,
            lo,
            binlog,
            rows,
            end,
            permit,
        } = s;
        let rows = Arc::new(tokio::sync::Mutex::new(rows));
        let kept: Arc<Mutex<Vec<Vec<Value>>>> = Arc::default();
        let mut open = false;
        if self.plan.load_data && !table.sequence {
            match load_streamed(
                conn,
                &table,
                lo.as_deref(),
                rows.clone(),
                kept.clone(),
                self.plan.max_packet,
            )
            .await
            {
                Ok(()) => open = true,
                Err(e) => {
                    // a lost or stalled link is news; a batch the stream cannot carry is not
                    if e.is_transient() {
                        tracing::warn!(
                            "{} chunk {seq}: streamed load stopped ({e}); writing it whole",
                            table.full_name()
                        );
                    } else {
                        tracing::debug!(
                            "{} chunk {seq}: streamed load stopped ({e}); writing it whole",
                            table.full_name()
                        );
                    }
                    self.roll_back(conn).await?;
                }
            }
        }
        // the rows the stream did not take (all of them when it did not run)
        {
            let mut rows = rows.lock().await;
            while let Some(batch) = rows.recv().await {
                if let Ok(mut k) = kept.lock() {
                    k.extend(batch);
                }
            }
        }
        let Ok(end) = end.await else {
            // discarded: the chunk is read again, or its table copied again or dropped
            if open {
                self.roll_back(conn).await?;
            }
            return Ok(None);
        };
        let rows = kept
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default();
        let chunk = Chunk {
            table,
            seq,
            lo,
            hi: end.hi,
            delete: true,
            rows,
            bytes: end.bytes,
            binlog,
        };
        if open {
            match db::run(conn, "COMMIT").await {
                Ok(()) => return Ok(Some((chunk, permit))),
                Err(e) => {
                    // committed or not, writing it whole again leaves exactly its rows
                    tracing::debug!(
                        "{} chunk {seq}: commit failed ({e}); writing it whole",
                        chunk.table.full_name()
                    );
                    *conn = connect_retry(&self.plan.target, Session::TargetWriter).await?;
                }
            }
        }
        self.write_buffered(conn, &chunk, buf).await?;
        Ok(Some((chunk, permit)))
    }

    /// Roll back the writer's transaction; if the connection cannot, the transaction goes
    /// with it and a new one is opened.
    async fn roll_back(&self, conn: &mut Conn) -> Result<()> {
        if db::run(conn, "ROLLBACK").await.is_err() {
            *conn = connect_retry(&self.plan.target, Session::TargetWriter).await?;
        }
        Ok(())
    }

    /// Record a written chunk: resume point, progress, metrics, and the table's deferred
    /// indexes after its last chunk.
    async fn written(&self, conn: &mut Conn, c: &Chunk) -> Result<()> {
        let finished = c.hi.is_none();
        // The last chunk marks the table copied; earlier ones record where to resume.
        let last_key = match &c.hi {
            Some(k) if !k.is_empty() => Some(
                serde_json::to_string(k)
                    .map_err(|e| Error::definite(e.to_string(), "report a bug"))?,
            ),
            _ => None,
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
        if c.seq == 0 {
            self.plan
                .progress
                .table_started(&c.table.full_name(), c.table.rows_estimate);
        }
        self.plan
            .progress
            .add(&c.table.full_name(), c.rows.len() as u64, c.bytes);
        if finished {
            self.plan.progress.table_done(&c.table.full_name());
        }
        let tname = c.table.full_name();
        let deferred = self
            .plan
            .deferred
            .lock()
            .ok()
            .and_then(|d| d.get(&tname).cloned());
        if let (true, Some((step, alter))) = (finished, deferred) {
            tracing::info!("{tname}: adding deferred indexes");
            if let Err(e) =
                super::exec_step(&self.plan.store, conn, &step, std::slice::from_ref(&alter)).await
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
        Ok(())
    }

    /// Run `a` on the target, reconnecting and retrying transient failures.
    async fn retrying(&self, conn: &mut Conn, a: &Action) -> Result<()> {
        let mut backoff = Backoff::bounded();
        loop {
            let r = match a {
                Action::Recreate(t, def) => recreate(self.plan, conn, t, def).await,
                Action::Drop(t) => {
                    db::run(conn, &format!("DROP TABLE IF EXISTS {}", t.quoted())).await
                }
            };
            match r {
                Ok(()) => return Ok(()),
                Err(e) => {
                    backoff.retry_after(e.context("target"), "writing").await?;
                    *conn = connect_retry(&self.plan.target, Session::TargetWriter).await?;
                }
            }
        }
    }
}

enum Action {
    Recreate(Arc<Table>, String),
    Drop(Arc<Table>),
}

enum Whole {
    Done,
    WriterStopped,
    Changed(String),
    Gone((String, u64)),
}

/// Describe `t` again on the source under its new definition: (table, definition), read
/// so that the description and the definition are of the same moment.
async fn redescribe(
    r: &mut SourceReader,
    t: &Table,
    _hint: String,
) -> Result<(Arc<Table>, String)> {
    // (the helpers watch for a stalled link)
    let (nt, def) = super::describe_stable(&mut r.conn, &t.db, &t.name).await?;
    Ok((Arc::new(nt), def))
}

/// Create `t` again on the target under `definition` (its copy starts over).
async fn recreate(plan: &CopyPlan, conn: &mut Conn, t: &Table, definition: &str) -> Result<()> {
    let (create, alter) = if plan.defer_indexes {
        ddl::split_secondary_indexes(definition, &t.quoted(), t.referenced_by_fk)
    } else {
        (definition.to_string(), None)
    };
    db::run(conn, &format!("USE {}", quote::ident(&t.db))).await?;
    db::run(conn, &format!("DROP TABLE IF EXISTS {}", t.quoted())).await?;
    if let Err(e) = db::run(conn, &create).await {
        // the split form is not accepted for this shape: keep the indexes in the CREATE
        tracing::debug!(
            "{}: deferred-index form refused ({e}); creating it whole",
            t.full_name()
        );
        db::run(conn, definition).await?;
        if let Ok(mut d) = plan.deferred.lock() {
            d.remove(&t.full_name());
        }
    } else if let Some(a) = alter {
        let step = format!("index:{}", t.full_name());
        plan.store.unmark_step(&step)?;
        if let Ok(mut d) = plan.deferred.lock() {
            d.insert(t.full_name(), (step, a));
        }
    } else if let Ok(mut d) = plan.deferred.lock() {
        d.remove(&t.full_name());
    }
    plan.store.reset_table(&t.db, &t.name)?;
    plan.store
        .ensure_table(&t.db, &t.name, t.rows_estimate, t.bytes_estimate)?;
    plan.store
        .set_table_definition(&t.db, &t.name, definition)?;
    Ok(())
}

async fn connect_retry(ep: &Endpoint, s: Session) -> Result<Conn> {
    db::connect_retry(ep, s, crate::db::retry::BOUNDED_ATTEMPTS).await
}

/// Copy the rows of `tables` with `threads` workers, resuming from the state store.
pub async fn copy_tables(
    plan: &CopyPlan,
    tables: Vec<Arc<Table>>,
    threads: usize,
    readers: &Readers,
) -> Result<()> {
    let queue = Mutex::new(tables.into_iter().collect::<VecDeque<_>>());
    let workers = (0..threads.max(1)).map(|_| {
        let w = Worker {
            plan,
            queue: &queue,
            readers,
            in_flight: Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT)),
        };
        async move {
            let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT + 2);
            let (r, wr) = tokio::join!(w.reader(tx), w.writer(rx));
            wr.and(r)
        }
    });
    for r in futures_util::future::join_all(workers).await {
        r?;
    }
    Ok(())
}

#[allow(dead_code)]
fn _assert_send() {
    fn s<T: Send>() {}
    s::<Chunk>();
    let _ = schema::list_tables;
}
