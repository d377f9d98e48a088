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

use crate::config::Endpoint;
use crate::db::{self, consistent, Session};
use crate::error::{Error, Result};
use crate::position::Position;
use crate::schema::Table;
use crate::state::Store;
use crate::value::decode;
use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

pub struct Options {
    pub chunk_rows: u64,
    /// Chunks compared per pair of snapshots (bounds how long the source snapshot stays open).
    pub round_chunks: usize,
    pub repair: bool,
    /// Continue the verify a kill interrupted: tables it already compared keep their result.
    pub resume: bool,
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
    let rows: Vec<mysql_async::Row> = conn.query(sql).await?;
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

/// (key values, hash) of every row in a range.
async fn row_hashes(
    conn: &mut Conn,
    t: &Table,
    lo: Option<&[crate::value::Value]>,
    hi: Option<&[crate::value::Value]>,
) -> Result<Vec<(Vec<crate::value::Value>, String)>> {
    let keys: Vec<crate::schema::Column> = t.key.iter().map(|&i| t.columns[i].clone()).collect();
    let mut out = Vec::new();
    for mut r in raw_rows(conn, &digest::row_hashes(t, lo, hi)).await? {
        let h = r.pop().map(|v| v.as_sql(true)).unwrap_or_default();
        out.push((decode::text_row(&keys, r)?, h));
    }
    Ok(out)
}

/// The rows of a differing chunk that differ, found inside the two open snapshots.
async fn narrow(
    src: &mut Conn,
    tgt: &mut Conn,
    t: &Table,
    lo: Option<&[crate::value::Value]>,
    hi: Option<&[crate::value::Value]>,
) -> Result<Vec<(Vec<crate::value::Value>, DiffKind, Vec<String>)>> {
    let (a, b) = tokio::join!(row_hashes(src, t, lo, hi), row_hashes(tgt, t, lo, hi));
    let (a, b) = (a?, b?);
    let lit = |k: &[crate::value::Value]| format!("{:?}", key_text(t, k));
    let bmap: BTreeMap<String, (&Vec<crate::value::Value>, &String)> =
        b.iter().map(|(k, h)| (lit(k), (k, h))).collect();
    let amap: BTreeMap<String, &String> = a.iter().map(|(k, h)| (lit(k), h)).collect();
    let mut out = Vec::new();
    for (k, h) in &a {
        match bmap.get(&lit(k)) {
            None => out.push((k.clone(), DiffKind::Missing, Vec::new())),
            Some((_, th)) if *th != h => {
                let sql = digest::row_columns(t, k);
                let sa = db::query_strings(src, &sql).await?;
                let sb = db::query_strings(tgt, &sql).await?;
                let (ra, rb) = (
                    sa.into_iter().next().unwrap_or_default(),
                    sb.into_iter().next().unwrap_or_default(),
                );
                let cols = t
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ra.get(*i) != rb.get(*i))
                    .map(|(_, c)| c.name.clone())
                    .collect();
                out.push((k.clone(), DiffKind::Different, cols));
            }
            Some(_) => {}
        }
    }
    for (k, _) in &b {
        if !amap.contains_key(&lit(k)) {
            out.push((k.clone(), DiffKind::Extra, Vec::new()));
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
    w.query_drop("BEGIN").await?;
    for (key, kind, _) in rows {
        let del = format!(
            "DELETE FROM {} WHERE {}",
            t.quoted(),
            digest::key_equals(t, key)
        );
        w.query_drop(&del)
            .await
            .map_err(|e| Error::from(e).context(format!("target, repair of {}", t.full_name())))?;
        if *kind != DiffKind::Extra {
            let got = raw_rows(src, &digest::read_row(t, key)).await?;
            if let Some(raw) = got.into_iter().next() {
                let row = decode::text_row(&t.columns, raw)?;
                let mut sql = crate::schema::keyset::insert_prefix(t);
                crate::schema::keyset::push_row(&mut sql, t, &row);
                w.query_drop(&sql).await.map_err(|e| {
                    Error::from(e).context(format!("target, repair of {}", t.full_name()))
                })?;
            }
        }
    }
    w.query_drop("COMMIT").await?;
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
    let mut src = db::connect(source, Session::SourceReader)
        .await
        .map_err(|e| e.context("source"))?;
    let mut tgt = db::connect(target, Session::SourceReader)
        .await
        .map_err(|e| e.context("target"))?;
    // the schema, with the target held at the source's GTID (information_schema is not
    // versioned: a DDL on the source while it is read makes the round start again)
    let mut dbs: Vec<String> = tables.iter().map(|t| t.db.clone()).collect();
    dbs.dedup();
    for attempt in 0.. {
        sync.hold().await?;
        let (before, g) = consistent::open(&mut src, "source").await?;
        consistent::close(&mut src).await?;
        let at_g = match sync.to(&g).await {
            Ok(at) => at,
            Err(e) => {
                let _ = sync.release().await;
                return Err(e);
            }
        };
        let compared = if at_g {
            Some(schema::compare(&mut src, &mut tgt, &dbs).await)
        } else {
            None
        };
        sync.release().await?;
        let Some(compared) = compared else { continue };
        let (diffs, triggers) = compared?;
        let after = crate::snapshot::copy::binlog_now(&mut src).await?;
        if attempt < 10
            && crate::snapshot::copy::schema_may_have_changed(
                &mut src,
                &(before.file.clone(), before.offset),
                &after,
            )
            .await?
        {
            continue;
        }
        out.schema_differences = diffs;
        out.triggers_pending = triggers;
        break;
    }
    if !opts.resume {
        store.verify_reset()?;
    }
    let done = store.verify_tables_done()?;
    store.set("verify.in_progress", "1")?;
    for t in tables {
        if let Some(d) = done.iter().find(|d| d.db == t.db && d.name == t.name) {
            // compared before the kill: its result stands
            let r: TableResult = serde_json::from_str(&d.result).unwrap_or_default();
            out.rows += d.rows;
            out.chunks += d.chunks;
            out.repaired += r.differences.iter().filter(|d| d.repaired).count() as u64;
            if r.keyless_differs {
                out.keyless_tables_differing.push(t.full_name());
            }
            out.differences.extend(r.differences);
            tracing::info!(
                "{}: compared before the interruption; skipped",
                t.full_name()
            );
            continue;
        }
        let (diffs_before, chunks_before) = (out.differences.len(), out.chunks);
        let keyless_before = out.keyless_tables_differing.len();
        let started = Instant::now();
        let mut lo: Option<Vec<crate::value::Value>> = None;
        let mut table_rows = 0u64;
        let mut done = false;
        while !done {
            // one round: a pair of snapshots at the same GTID; the target is held from before
            // the source snapshot until its own snapshot is open
            let t0 = Instant::now();
            sync.hold().await?;
            let (_, g) = consistent::open(&mut src, "source").await?;
            let at_g = match sync.to(&g).await {
                Ok(at) => at,
                Err(e) => {
                    let _ = sync.release().await;
                    return Err(e);
                }
            };
            if !at_g {
                consistent::close(&mut src).await?;
                sync.release().await?;
                continue;
            }
            let opened = consistent::open(&mut tgt, "target").await;
            sync.release().await?;
            opened?;
            let paused = t0.elapsed().as_secs_f64();
            out.sync_seconds_total += paused;
            out.sync_seconds_max = out.sync_seconds_max.max(paused);
            out.rounds += 1;
            out.last_gtid = g.to_string();
            if !t.has_key() {
                // a multiset: the whole table at once
                let sql = digest::chunk_digest(t, None, None);
                let (a, b) = tokio::join!(
                    digest(&mut src, &sql, "source", t),
                    digest(&mut tgt, &sql, "target", t)
                );
                let (a, b) = (a?, b?);
                out.chunks += 1;
                table_rows += a.0;
                if a != b {
                    out.keyless_tables_differing.push(t.full_name());
                }
                done = true;
            }
            let mut n = 0;
            while !done && n < opts.round_chunks {
                n += 1;
                let keys: Vec<crate::schema::Column> =
                    t.key.iter().map(|&i| t.columns[i].clone()).collect();
                let hi = match raw_rows(
                    &mut src,
                    &digest::boundary(t, lo.as_deref(), opts.chunk_rows),
                )
                .await?
                .into_iter()
                .next()
                {
                    Some(raw) => Some(decode::text_row(&keys, raw)?),
                    None => None,
                };
                let sql = digest::chunk_digest(t, lo.as_deref(), hi.as_deref());
                // both servers digest at the same time
                let (a, b) = tokio::join!(
                    digest(&mut src, &sql, "source", t),
                    digest(&mut tgt, &sql, "target", t)
                );
                let (a, b) = (a?, b?);
                out.chunks += 1;
                table_rows += a.0;
                crate::obs::metrics::add("migrate_verify_chunks_total", &[], 1.0);
                if a != b {
                    let rows = narrow(&mut src, &mut tgt, t, lo.as_deref(), hi.as_deref()).await?;
                    let fixed = if opts.repair && !rows.is_empty() {
                        repair(&mut src, target, t, &rows).await?
                    } else {
                        vec![false; rows.len()]
                    };
                    for ((key, kind, columns), ok) in rows.into_iter().zip(fixed) {
                        crate::obs::metrics::add("migrate_verify_differences_total", &[], 1.0);
                        if opts.repair {
                            if ok {
                                out.repaired += 1;
                            } else {
                                out.repair_failed += 1;
                            }
                        }
                        out.differences.push(RowDiff {
                            database: t.db.clone(),
                            table: t.name.clone(),
                            key: key_text(t, &key),
                            kind,
                            columns,
                            repaired: ok,
                        });
                    }
                }
                if hi.is_none() {
                    done = true;
                }
                lo = hi;
            }
            consistent::close(&mut tgt).await?;
            consistent::close(&mut src).await?;
        }
        out.rows += table_rows;
        let result = TableResult {
            differences: out.differences[diffs_before..].to_vec(),
            keyless_differs: out.keyless_tables_differing.len() > keyless_before,
        };
        store.verify_table_done(
            &t.db,
            &t.name,
            table_rows,
            out.chunks - chunks_before,
            &serde_json::to_string(&result).unwrap_or_default(),
        )?;
        tracing::info!(
            table = %t.full_name(),
            rows = table_rows,
            "verified {} ({table_rows} rows) in {:.1?}",
            t.full_name(),
            started.elapsed()
        );
    }
    store.set("verify.in_progress", "0")?;
    Ok(out)
}
