//! `verify`: prove source and target identical at one GTID, name every differing row, and
//! optionally repair it.
//!
//! A round opens a consistent snapshot on the source at GTID G (no lock), brings the target to
//! exactly G with the replication loop (the follower's own applier: nothing else writes the
//! migrated tables before cutover), opens a consistent snapshot on the target, and compares a
//! run of key-range chunks by digests each server computes itself (`digest.rs`: only counts
//! and hashes cross the link). A chunk that differs is narrowed inside the same two snapshots
//! to per-row hashes compared here, then per-column encodings for the rows that differ. Repair
//! writes the source's row at G (or deletes an extra one) through a normal target session (so
//! the target's own binlog and replica get it) and re-checks each repaired row.

pub mod digest;
pub mod schema;
pub mod touched;

use crate::config::Endpoint;
use crate::db::retry::{Backoff, BOUNDED_ATTEMPTS};
use crate::db::{self, consistent, Session};
use crate::error::{Error, Result};
use crate::position::Position;
use crate::schema::Table;
use crate::state::Store;
use crate::value::decode;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub struct Options {
    /// Rows in a table's first chunk; later chunks adapt to `chunk_time`.
    pub chunk_rows: u64,
    /// The time a chunk's digest should take (pt-table-checksum's default is 0.5 s).
    pub chunk_time: Duration,
    /// Wait before each chunk while the source's Threads_running exceeds this.
    pub max_source_load: Option<u64>,
    /// Tables compared at the same time (each with its own pair of snapshots).
    pub workers: usize,
    /// Chunks compared per pair of snapshots (bounds how long the source snapshot stays open).
    pub round_chunks: usize,
    pub repair: bool,
    /// Continue the verify a kill interrupted: tables it already compared keep their result.
    pub resume: bool,
    /// The migration's selection, as the source names things (`commands::verify::describe`):
    /// the schema comparison leaves out objects of tables and views it excludes.
    pub filter: crate::config::Filter,
}

/// What the state store keeps of a compared table.
#[derive(Serialize, Deserialize, Default)]
struct TableResult {
    differences: Vec<RowDiff>,
    keyless_differs: bool,
}

/// Brings the target to exactly a GTID position and holds it there while the target's
/// snapshot is opened: either verify's own replay (no follow running), or a running follow
/// paused through the state store.
#[allow(async_fn_in_trait)]
pub trait TargetSync {
    /// Stop the target from moving (before the source snapshot is taken).
    async fn hold(&self) -> Result<()>;
    /// Bring the target to exactly `pos`. False: it was already past `pos` (retry the round).
    async fn to(&self, pos: &Position) -> Result<bool>;
    /// Let the target move again (after its snapshot is open).
    async fn release(&self) -> Result<()>;
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// Same key, different values (`columns` names them).
    Different,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RowDiff {
    pub database: String,
    pub table: String,
    /// Key column -> value (as SQL literal text).
    pub key: BTreeMap<String, String>,
    pub kind: DiffKind,
    pub columns: Vec<String>,
    pub repaired: bool,
}

#[derive(Default, Debug, Serialize)]
pub struct Outcome {
    pub tables: usize,
    pub chunks: u64,
    pub rows: u64,
    pub differences: Vec<RowDiff>,
    /// Tables without a usable key whose rows differ as a multiset (no row-level narrowing).
    pub keyless_tables_differing: Vec<String>,
    pub repaired: u64,
    pub repair_failed: u64,
    pub rounds: u64,
    /// Time spent bringing the target to each round's GTID (the follower's pause).
    pub sync_seconds_total: f64,
    pub sync_seconds_max: f64,
    pub last_gtid: String,
    /// Schema objects that differ (compared at one GTID, before the rows).
    pub schema_differences: Vec<schema::SchemaDiff>,
    /// The source's triggers: created on the target at cutover.
    pub triggers_pending: Vec<String>,
}

impl Outcome {
    pub fn identical(&self) -> bool {
        self.differences.iter().all(|d| d.repaired)
            && self.keyless_tables_differing.is_empty()
            && self.schema_differences.is_empty()
    }
}

type Digest = (u64, String, String);

async fn digest(conn: &mut Conn, sql: &str, side: &str, t: &Table) -> Result<Digest> {
    let row = db::query_strings(conn, sql)
        .await
        .map_err(|e| e.context(format!("{side}, digest of {}", t.full_name())))?
        .into_iter()
        .next()
        .unwrap_or_default();
    let g = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Ok((g(0).parse().unwrap_or(0), g(1), g(2)))
}

/// Rows of a text query as raw cells.
async fn raw_rows(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<mysql_async::Value>>> {
    let rows = db::query_rows(conn, sql).await?;
    Ok(rows.into_iter().map(mysql_async::Row::unwrap).collect())
}

fn key_text(t: &Table, key: &[crate::value::Value]) -> BTreeMap<String, String> {
    t.key
        .iter()
        .zip(key)
        .map(|(&i, v)| {
            let c = &t.columns[i];
            let mut s = String::new();
            crate::value::encode::literal(&mut s, v, c);
            (c.name.clone(), s)
        })
        .collect()
}

/// One row of a small differing range: its key, the SHA-256 of its canonical encoding
/// (computed here, on the bastion) and each column's encoding (to name the differing ones).
struct RowImage {
    key: Vec<crate::value::Value>,
    hash: [u8; 32],
    columns: Vec<Vec<u8>>,
}

/// Every row of a range with each column's canonical encoding, in key order.
async fn row_images(conn: &mut Conn, t: &Table, sql: &str) -> Result<Vec<RowImage>> {
    use sha2::{Digest as _, Sha256};
    let keys: Vec<crate::schema::Column> = t.key.iter().map(|&i| t.columns[i].clone()).collect();
    let mut out = Vec::new();
    for mut r in raw_rows(conn, sql).await? {
        let columns: Vec<Vec<u8>> = r
            .split_off(keys.len().min(r.len()))
            .into_iter()
            .map(|v| match v {
                mysql_async::Value::Bytes(b) => b,
                other => other.as_sql(true).into_bytes(),
            })
            .collect();
        let mut h = Sha256::new();
        for c in &columns {
            h.update((c.len() as u64).to_le_bytes());
            h.update(c);
        }
        out.push(RowImage {
            key: decode::text_row(&keys, r)?,
            hash: h.finalize().into(),
            columns,
        });
    }
    Ok(out)
}

/// The rows of a differing range that differ, found inside the two open snapshots: each
/// server sends every row's column encodings (a range here has at most `NARROW_ROWS` rows),
/// rows are matched by key and compared by SHA-256 here, and the columns of a differing row
/// are those whose encodings differ.
async fn narrow(
    src: &mut Conn,
    tgt: &mut Conn,
    t: &Table,
    images_sql: &str,
) -> Result<Vec<(Vec<crate::value::Value>, DiffKind, Vec<String>)>> {
    let (a, b) = tokio::join!(
        row_images(src, t, images_sql),
        row_images(tgt, t, images_sql)
    );
    let (a, b) = (a?, b?);
    let lit = |k: &[crate::value::Value]| format!("{:?}", key_text(t, k));
    let bmap: BTreeMap<String, &RowImage> = b.iter().map(|r| (lit(&r.key), r)).collect();
    let amap: BTreeMap<String, &RowImage> = a.iter().map(|r| (lit(&r.key), r)).collect();
    let mut out = Vec::new();
    for ra in &a {
        match bmap.get(&lit(&ra.key)) {
            None => out.push((ra.key.clone(), DiffKind::Missing, Vec::new())),
            Some(rb) if rb.hash != ra.hash => {
                let cols = t
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ra.columns.get(*i) != rb.columns.get(*i))
                    .map(|(_, c)| c.name.clone())
                    .collect();
                out.push((ra.key.clone(), DiffKind::Different, cols));
            }
            Some(_) => {}
        }
    }
    for rb in &b {
        if !amap.contains_key(&lit(&rb.key)) {
            out.push((rb.key.clone(), DiffKind::Extra, Vec::new()));
        }
    }
    Ok(out)
}

/// Make the target's rows at these keys the source's (read in the source's open snapshot),
/// then re-check each against the source's hash. Returns which keys now match.
async fn repair(
    src: &mut Conn,
    target: &Endpoint,
    t: &Table,
    rows: &[(Vec<crate::value::Value>, DiffKind, Vec<String>)],
) -> Result<Vec<bool>> {
    let mut w = db::connect(target, Session::TargetWriter)
        .await
        .map_err(|e| e.context("target"))?;
    let repair_of = |e: Error| e.context(format!("target, repair of {}", t.full_name()));
    db::run(&mut w, "BEGIN").await.map_err(repair_of)?;
    for (key, kind, _) in rows {
        let del = format!(
            "DELETE FROM {} WHERE {}",
            t.quoted(),
            digest::key_equals(t, key)
        );
        db::run(&mut w, &del).await.map_err(repair_of)?;
        if *kind != DiffKind::Extra {
            let got = raw_rows(src, &digest::read_row(t, key)).await?;
            if let Some(raw) = got.into_iter().next() {
                let row = decode::text_row(&t.columns, raw)?;
                let mut sql = crate::schema::keyset::insert_prefix(t);
                crate::schema::keyset::push_row(&mut sql, t, &row);
                db::run(&mut w, &sql).await.map_err(repair_of)?;
            }
        }
    }
    db::run(&mut w, "COMMIT").await.map_err(repair_of)?;
    // re-check: the target as committed now, against the source's snapshot
    let mut ok = Vec::new();
    for (key, _, _) in rows {
        let q = format!(
            "SELECT {} FROM {} WHERE {}",
            digest::row_hash(t),
            t.quoted(),
            digest::key_equals(t, key)
        );
        let a = db::query_one(src, &q).await?;
        let b = db::query_one(&mut w, &q).await?;
        ok.push(a == b);
    }
    Ok(ok)
}

/// Smallest and largest chunk the adaptation chooses.
const MIN_CHUNK_ROWS: u64 = 1_000;
const MAX_CHUNK_ROWS: u64 = 2_000_000;
/// A differing range with at most this many rows is compared row by row; a larger one is
/// split into `NARROW_PARTS` sub-ranges first, and only the differing ones are looked into.
const NARROW_ROWS: u64 = 5_000;
const NARROW_PARTS: u64 = 16;

type Key = Vec<crate::value::Value>;

/// A table being compared: how far, and what was found.
struct Progress<'a> {
    table: &'a Table,
    rows: u64,
    chunks: u64,
    result: TableResult,
    /// The last key compared (None: from the start).
    lo: Option<Key>,
    /// Rows in the next chunk (adapted to `Options::chunk_time`).
    chunk_rows: u64,
    /// When this run compared its first chunk.
    started: Option<Instant>,
}

impl Progress<'_> {
    fn record(&self, store: &Store, done: bool) -> Result<()> {
        store.verify_table_progress(&crate::state::VerifiedTable {
            db: self.table.db.clone(),
            name: self.table.name.clone(),
            rows: self.rows,
            chunks: self.chunks,
            result: serde_json::to_string(&self.result).unwrap_or_default(),
            cursor: if done {
                None
            } else {
                Some(serde_json::to_string(&self.lo).unwrap_or_default())
            },
        })
    }
}

/// The next chunk's size: what `chunk_time` takes at the rate just measured, growing at most
/// 4x and shrinking at most 4x per chunk (a cold page or a busy moment must not swing it).
fn adapt(rows_now: u64, rows_done: u64, took: Duration, chunk_time: Duration) -> u64 {
    if rows_done == 0 {
        return rows_now;
    }
    let rate = rows_done as f64 / took.as_secs_f64().max(0.001);
    let want = (rate * chunk_time.as_secs_f64()) as u64;
    want.clamp(rows_now / 4, rows_now.saturating_mul(4))
        .clamp(MIN_CHUNK_ROWS, MAX_CHUNK_ROWS)
}

/// The key `n` rows after `lo` on `conn`, within `(lo, hi]` (None: fewer rows remain).
async fn boundary(
    conn: &mut Conn,
    t: &Table,
    lo: Option<&[crate::value::Value]>,
    hi: Option<&[crate::value::Value]>,
    n: u64,
) -> Result<Option<Key>> {
    let keys: Vec<crate::schema::Column> = t.key.iter().map(|&i| t.columns[i].clone()).collect();
    match raw_rows(conn, &digest::boundary(t, lo, hi, n))
        .await
        .map_err(|e| e.context(format!("chunk boundary of {}", t.full_name())))?
        .into_iter()
        .next()
    {
        Some(raw) => Ok(Some(decode::text_row(&keys, raw)?)),
        None => Ok(None),
    }
}

type Found = Vec<(Key, DiffKind, Vec<String>)>;

/// The rows of a differing range `(lo, hi]` (at most `rows` on either side) that differ:
/// sub-ranges compared by digest first, then row hashes, all inside the two open snapshots.
async fn narrow_range(
    src: &mut Conn,
    tgt: &mut Conn,
    t: &Table,
    lo: Option<Key>,
    hi: Option<Key>,
    rows: (u64, u64),
) -> Result<Found> {
    let mut out = Vec::new();
    let mut work = vec![(lo, hi, rows)];
    while let Some((lo, hi, (na, nb))) = work.pop() {
        if na.max(nb) <= NARROW_ROWS {
            out.extend(
                narrow(
                    src,
                    tgt,
                    t,
                    &digest::row_images(t, lo.as_deref(), hi.as_deref()),
                )
                .await?,
            );
            continue;
        }
        // split by the side with more rows (an extra block on the target is split too)
        let step = na.max(nb).div_ceil(NARROW_PARTS);
        let mut cuts = Vec::new();
        let mut at = lo.clone();
        for _ in 1..NARROW_PARTS {
            let side = if na >= nb { &mut *src } else { &mut *tgt };
            // the server compares keys (in their collation); None: the rest fits in one part
            let Some(b) = boundary(side, t, at.as_deref(), hi.as_deref(), step).await? else {
                break;
            };
            cuts.push(Some(b.clone()));
            at = Some(b);
        }
        cuts.push(hi.clone());
        let mut from = lo.clone();
        for to in cuts {
            let sql = digest::chunk_digest(t, from.as_deref(), to.as_deref());
            let (a, b) = tokio::join!(
                digest(src, &sql, "source", t),
                digest(tgt, &sql, "target", t)
            );
            let (a, b) = (a?, b?);
            if a != b {
                work.push((from.clone(), to.clone(), (a.0, b.0)));
            }
            from = to;
        }
    }
    Ok(out)
}

/// Both servers digest one chunk of `p`'s table at the same time.
async fn digest_both(
    src: &mut Conn,
    tgt: &mut Conn,
    t: &Table,
    sql: &str,
) -> Result<(Digest, Digest, Duration)> {
    let started = Instant::now();
    let (a, b) = tokio::join!(digest(src, sql, "source", t), digest(tgt, sql, "target", t));
    let (a, b) = (a?, b?);
    Ok((a, b, started.elapsed()))
}

/// A chunk of `rows` source rows is compared for good (a chunk whose round failed before
/// this, e.g. while narrowing, is compared again and counted once).
fn count(p: &mut Progress<'_>, rows: u64, bar: &crate::obs::progress::Progress) {
    let t = p.table;
    p.chunks += 1;
    p.rows += rows;
    bar.add(&t.full_name(), rows, rows * t.avg_row_length);
    crate::obs::metrics::add("migrate_verify_chunks_total", &[], 1.0);
    crate::obs::metrics::add("migrate_verify_rows_total", &[], rows as f64);
}

/// Compare the next chunk of `p`'s table. True when the table is done.
async fn compare_chunk(
    src: &mut Conn,
    tgt: &mut Conn,
    target: &Endpoint,
    p: &mut Progress<'_>,
    opts: &Options,
    bar: &crate::obs::progress::Progress,
) -> Result<bool> {
    let t = p.table;
    p.started.get_or_insert_with(Instant::now);
    if !t.has_key() {
        // a multiset: the whole table at once
        let (a, b, _) = digest_both(src, tgt, t, &digest::chunk_digest(t, None, None)).await?;
        if a != b {
            p.result.keyless_differs = true;
            crate::obs::metrics::add("migrate_verify_differences_total", &[], 1.0);
        }
        count(p, a.0, bar);
        return Ok(true);
    }
    let hi = boundary(src, t, p.lo.as_deref(), None, p.chunk_rows).await?;
    let sql = digest::chunk_digest(t, p.lo.as_deref(), hi.as_deref());
    let (a, b, took) = digest_both(src, tgt, t, &sql).await?;
    p.chunk_rows = adapt(p.chunk_rows, a.0.max(b.0), took, opts.chunk_time);
    if a != b {
        let rows = narrow_range(src, tgt, t, p.lo.clone(), hi.clone(), (a.0, b.0)).await?;
        let fixed = if opts.repair && !rows.is_empty() {
            repair(src, target, t, &rows).await?
        } else {
            vec![false; rows.len()]
        };
        for ((key, kind, columns), ok) in rows.into_iter().zip(fixed) {
            crate::obs::metrics::add("migrate_verify_differences_total", &[], 1.0);
            p.result.differences.push(RowDiff {
                database: t.db.clone(),
                table: t.name.clone(),
                key: key_text(t, &key),
                kind,
                columns,
                repaired: ok,
            });
        }
    }
    count(p, a.0, bar);
    let finished = hi.is_none();
    p.lo = hi;
    Ok(finished)
}

/// One worker's connections: a snapshot on each side, opened at the same GTID.
struct Pair {
    src: Conn,
    tgt: Conn,
    /// The table this worker is in the middle of (continued next round).
    current: Option<usize>,
}

impl Pair {
    /// A source and a target connection reading rows as verify does.
    async fn connect(source: &Endpoint, target: &Endpoint) -> Result<Pair> {
        Ok(Pair {
            src: db::connect(source, Session::SourceReader)
                .await
                .map_err(|e| e.context("source"))?,
            tgt: db::connect(target, Session::SourceReader)
                .await
                .map_err(|e| e.context("target"))?,
            current: None,
        })
    }
}

/// New connections for every pair (after a lost one); each keeps the table it was in.
async fn reconnect(pairs: &mut [Pair], source: &Endpoint, target: &Endpoint) -> Result<()> {
    for p in pairs {
        p.src = db::connect_retry(source, Session::SourceReader, BOUNDED_ATTEMPTS)
            .await
            .map_err(|e| e.context("source"))?;
        p.tgt = db::connect_retry(target, Session::SourceReader, BOUNDED_ATTEMPTS)
            .await
            .map_err(|e| e.context("target"))?;
    }
    Ok(())
}

/// Open a round: on each pair, a consistent snapshot on the source at its GTID G and one on
/// the target at exactly G (the target is held from before the first source snapshot until
/// the last target snapshot is open). Returns the last G and how long the target was held.
async fn open_round(
    pairs: &mut [Pair],
    gtids: &mut consistent::Gtids,
    sync: &impl TargetSync,
) -> Result<(Position, f64)> {
    'again: loop {
        let t0 = Instant::now();
        sync.hold().await?;
        let mut last = None;
        for i in 0..pairs.len() {
            let opened = match consistent::open(&mut pairs[i].src, "source").await {
                Ok(at) => gtids.at(&mut pairs[i].src, &at).await,
                Err(e) => Err(e),
            };
            let g = match opened {
                Ok(g) => g,
                Err(e) => {
                    let _ = sync.release().await;
                    return Err(e);
                }
            };
            let at_g = match sync.to(&g).await {
                Ok(at) => at,
                Err(e) => {
                    let _ = sync.release().await;
                    return Err(e);
                }
            };
            if !at_g {
                // the target was already past G: start the round again
                for p in pairs[..=i].iter_mut() {
                    let _ = consistent::close(&mut p.src).await;
                    let _ = consistent::close(&mut p.tgt).await;
                }
                sync.release().await?;
                continue 'again;
            }
            if let Err(e) = consistent::open(&mut pairs[i].tgt, "target").await {
                let _ = sync.release().await;
                return Err(e);
            }
            last = Some(g);
        }
        sync.release().await?;
        let g = last.unwrap_or_default();
        return Ok((g, t0.elapsed().as_secs_f64()));
    }
}

/// Compare the schema with the target held at the source's GTID (information_schema is not
/// versioned: a DDL on the source while it is read makes the comparison start again).
async fn compare_schema(
    src: &mut Conn,
    tgt: &mut Conn,
    tables: &[Table],
    filter: &crate::config::Filter,
    gtids: &mut consistent::Gtids,
    sync: &impl TargetSync,
) -> Result<(Vec<schema::SchemaDiff>, Vec<String>)> {
    let mut dbs: Vec<String> = tables.iter().map(|t| t.db.clone()).collect();
    dbs.sort();
    dbs.dedup();
    for attempt in 0.. {
        sync.hold().await?;
        let before = consistent::open(src, "source").await?;
        let g = gtids.at(src, &before).await?;
        consistent::close(src).await?;
        let at_g = match sync.to(&g).await {
            Ok(at) => at,
            Err(e) => {
                let _ = sync.release().await;
                return Err(e);
            }
        };
        let compared = if at_g {
            Some(
                schema::compare(src, tgt, &dbs, |db, table| filter.includes_table(db, table)).await,
            )
        } else {
            None
        };
        sync.release().await?;
        let Some(compared) = compared else { continue };
        let found = compared?;
        let after = crate::snapshot::copy::binlog_now(src).await?;
        if attempt < 10
            && crate::snapshot::copy::schema_may_have_changed(
                src,
                &(before.file.clone(), before.offset),
                &after,
            )
            .await?
        {
            continue;
        }
        return Ok(found);
    }
    unreachable!("the loop returns")
}

/// Wait while the source is busier than `--max-source-load` (Threads_running).
async fn throttle(mon: &mut Option<Conn>, limit: Option<u64>) -> Result<()> {
    let (Some(conn), Some(limit)) = (mon.as_mut(), limit) else {
        return Ok(());
    };
    let mut waited = false;
    while crate::db::monitor::threads_running(conn).await? > limit {
        if !waited {
            tracing::info!("source busy (Threads_running above {limit}): verify waits");
            waited = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Verify `tables` (described on the source).
pub async fn run(
    source: &Endpoint,
    target: &Endpoint,
    tables: &[Table],
    sync: &impl TargetSync,
    store: &Store,
    opts: &Options,
) -> Result<Outcome> {
    let mut out = Outcome {
        tables: tables.len(),
        ..Default::default()
    };
    let mut pairs = Vec::new();
    for _ in 0..opts.workers.max(1) {
        pairs.push(Pair::connect(source, target).await?);
    }
    let mut gtids = consistent::Gtids::default();
    let mut mon = match opts.max_source_load {
        Some(_) => Some(
            db::connect(source, Session::Meta)
                .await
                .map_err(|e| e.context("source"))?,
        ),
        None => None,
    };
    let mut backoff = Backoff::bounded();
    loop {
        let Pair { src, tgt, .. } = &mut pairs[0];
        match compare_schema(src, tgt, tables, &opts.filter, &mut gtids, sync).await {
            Ok(found) => {
                (out.schema_differences, out.triggers_pending) = found;
                break;
            }
            Err(e) => {
                backoff
                    .retry_after(e, "verify: comparing the schema")
                    .await?;
                reconnect(&mut pairs, source, target).await?;
            }
        }
    }

    let recorded = if opts.resume {
        store.verify_tables()?
    } else {
        store.verify_reset()?;
        Vec::new()
    };
    store.set("verify.in_progress", "1")?;
    // every table's progress; `queue` holds the ones no worker has taken yet
    let mut progress: Vec<Progress> = Vec::new();
    let mut queue: VecDeque<usize> = VecDeque::new();
    for t in tables {
        let mut p = Progress {
            table: t,
            rows: 0,
            chunks: 0,
            result: TableResult::default(),
            lo: None,
            chunk_rows: opts.chunk_rows.max(1),
            started: None,
        };
        if let Some(r) = recorded.iter().find(|r| r.db == t.db && r.name == t.name) {
            p.rows = r.rows;
            p.chunks = r.chunks;
            p.result = serde_json::from_str(&r.result).unwrap_or_default();
            match &r.cursor {
                None => {
                    tracing::info!("{}: compared before the interruption", t.full_name());
                    fold(&mut out, p);
                    continue;
                }
                Some(c) => {
                    p.lo = serde_json::from_str(c).map_err(|e| {
                        Error::definite(
                            format!("state file: verify's position in {}: {e}", t.full_name()),
                            "run `migrate verify --restart`",
                        )
                    })?;
                    tracing::info!(
                        "{}: continuing after the last chunk compared",
                        t.full_name()
                    );
                }
            }
        }
        queue.push_back(progress.len());
        progress.push(p);
    }

    let bar = crate::obs::progress::Progress::new(
        "verify",
        tables.iter().map(|t| t.rows_estimate).sum(),
        out.rows + progress.iter().map(|p| p.rows).sum::<u64>(),
        0,
    );
    let progress: Vec<tokio::sync::Mutex<Progress>> =
        progress.into_iter().map(tokio::sync::Mutex::new).collect();
    let queue = std::sync::Mutex::new(queue);
    let finished = std::sync::Mutex::new(Vec::new());
    let mon = tokio::sync::Mutex::new(mon.take());
    let mut backoff = Backoff::bounded();
    loop {
        let waiting = queue.lock().map(|q| q.len()).unwrap_or(0);
        let busy = pairs.iter().filter(|p| p.current.is_some()).count();
        if waiting + busy == 0 {
            break;
        }
        // one round: a pair of snapshots per worker with work, at the same GTID when the source
        // is quiet; each worker compares up to --round-chunks chunks of one or more tables
        let active = pairs.len().min(waiting + busy);
        // workers in the middle of a table come first
        pairs.sort_by_key(|p| p.current.is_none());
        let (g, paused) = match open_round(&mut pairs[..active], &mut gtids, sync).await {
            Ok(x) => x,
            Err(e) => {
                backoff.retry_after(e, "verify: opening a round").await?;
                reconnect(&mut pairs, source, target).await?;
                continue;
            }
        };
        out.sync_seconds_total += paused;
        out.sync_seconds_max = out.sync_seconds_max.max(paused);
        crate::obs::metrics::add("migrate_verify_pause_seconds_total", &[], paused);
        out.rounds += 1;
        out.last_gtid = g.to_string();
        let work = pairs[..active].iter_mut().map(|pair| async {
            let mut n = 0;
            while n < opts.round_chunks.max(1) {
                let i = match pair.current {
                    Some(i) => i,
                    None => match queue.lock().ok().and_then(|mut q| q.pop_front()) {
                        Some(i) => {
                            let p = progress[i].lock().await;
                            bar.table_started(&p.table.full_name(), p.table.rows_estimate);
                            i
                        }
                        None => break,
                    },
                };
                pair.current = Some(i);
                n += 1;
                throttle(&mut *mon.lock().await, opts.max_source_load).await?;
                // the lock is this worker's alone: no other worker takes table i
                let mut p = progress[i].lock().await;
                if compare_chunk(&mut pair.src, &mut pair.tgt, target, &mut p, opts, &bar).await? {
                    p.record(store, true)?;
                    bar.table_done(&p.table.full_name());
                    tracing::info!(
                        table = %p.table.full_name(),
                        rows = p.rows,
                        "verified {} ({} rows, {} chunks) in {:.1?}",
                        p.table.full_name(),
                        p.rows,
                        p.chunks,
                        p.started.map(|s| s.elapsed()).unwrap_or_default()
                    );
                    pair.current = None;
                    if let Ok(mut f) = finished.lock() {
                        f.push(i);
                    }
                }
            }
            consistent::close(&mut pair.tgt).await?;
            consistent::close(&mut pair.src).await?;
            if let Some(i) = pair.current {
                progress[i].lock().await.record(store, false)?;
            }
            Ok::<(), Error>(())
        });
        match futures_util::future::try_join_all(work).await {
            Ok(_) => backoff.reset(),
            Err(e) => {
                // the chunks compared before the failure stand; the round's others are
                // compared again in a new pair of snapshots
                backoff.retry_after(e, "verify").await?;
                reconnect(&mut pairs, source, target).await?;
            }
        }
    }
    bar.finish();
    store.set("verify.in_progress", "0")?;
    let mut finished = finished.into_inner().unwrap_or_default();
    finished.sort();
    for (i, p) in progress.into_iter().enumerate() {
        if finished.binary_search(&i).is_ok() {
            fold(&mut out, p.into_inner());
        }
    }
    Ok(out)
}

/// Add a compared table's result to the outcome.
fn fold(out: &mut Outcome, p: Progress) {
    out.rows += p.rows;
    out.chunks += p.chunks;
    for d in &p.result.differences {
        if d.repaired {
            out.repaired += 1;
        }
    }
    if p.result.keyless_differs {
        out.keyless_tables_differing.push(p.table.full_name());
    }
    out.differences.extend(p.result.differences);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_adapt_to_the_time_per_chunk() {
        let half = Duration::from_millis(500);
        // 10k rows in 50 ms: 100k in 0.5 s, but at most 4x growth
        assert_eq!(
            adapt(10_000, 10_000, Duration::from_millis(50), half),
            40_000
        );
        // 40k rows in 0.4 s: 50k
        assert_eq!(
            adapt(40_000, 40_000, Duration::from_millis(400), half),
            50_000
        );
        // slow: 10k rows in 5 s shrinks to 2.5k (at most 4x), never under the minimum
        assert_eq!(adapt(10_000, 10_000, Duration::from_secs(5), half), 2_500);
        assert_eq!(
            adapt(2_000, 2_000, Duration::from_secs(5), half),
            MIN_CHUNK_ROWS
        );
        // an empty chunk says nothing about the rate
        assert_eq!(adapt(7_000, 0, Duration::from_millis(1), half), 7_000);
    }
}
