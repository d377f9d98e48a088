//! The keys changed on the target since the last full verify, and their proof.
//!
//! The follower records every key a group of source transactions is about to change on the
//! target (`Touched::add`, then `Store::touch` before the target transaction commits, so the
//! record is never smaller than what was applied). A full verify notes the record's sequence
//! number when it starts: every change recorded before then has a GTID at or before each of
//! its rounds' GTIDs, so it was compared. Cutover proves the rest: the keys recorded after it,
//! read at exactly these keys on both servers and compared row by row (`prove`), once before
//! the freeze (inside a pair of snapshots at one GTID) and once more during it for the few
//! keys changed since. A table without a key is recorded whole and compared whole. A DDL
//! applied since the verify cannot be proved by keys: cutover asks for a new verify.

use super::{digest, key_text, narrow, DiffKind, RowDiff};
use crate::binlog::{Change, Transaction};
use crate::error::{Error, Result};
use crate::schema::Table;
use crate::value::Value;
use mysql_async::Conn;
use std::collections::{BTreeMap, BTreeSet};

/// The key of a whole table (one without a usable key).
pub const WHOLE_TABLE: &str = "";

/// Keys per statement when reading rows by key.
const KEYS_PER_READ: usize = 500;

/// Keys changed, by (database, table): each the JSON of the key's values, or `WHOLE_TABLE`.
#[derive(Default, Debug)]
pub struct Touched {
    pub tables: BTreeMap<(String, String), BTreeSet<String>>,
    /// A DDL is about to be applied.
    pub ddl: bool,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && !self.ddl
    }

    pub fn clear(&mut self) {
        self.tables.clear();
        self.ddl = false;
    }

    fn key(&mut self, t: &Table, row: &[Value]) {
        if t.sequence {
            // one row, set to the source's at cutover's prepare step and compared by verify's
            // schema comparison
            return;
        }
        let k = if t.has_key() {
            let key: Vec<&Value> = t.key.iter().filter_map(|&i| row.get(i)).collect();
            serde_json::to_string(&key).unwrap_or_default()
        } else {
            WHOLE_TABLE.to_string()
        };
        self.tables
            .entry((t.db.clone(), t.name.clone()))
            .or_default()
            .insert(k);
    }

    /// The keys a transaction (or part) changes; a DDL marks `ddl`.
    pub fn add(&mut self, t: &Transaction) {
        if !t.ddl.is_empty() {
            self.ddl = true;
        }
        for c in &t.changes {
            self.change(c);
        }
    }

    fn change(&mut self, c: &Change) {
        match c {
            Change::Upsert { table, row, .. } | Change::Delete { table, row } => {
                self.key(table, row)
            }
            Change::Rekey {
                table,
                before,
                after,
            } => {
                self.key(table, before);
                self.key(table, after);
            }
            // the change itself is in the copy already; the child rows its foreign-key
            // actions change are the children's (compared as the parent's keys are not)
            Change::CascadeOnly(inner) => self.change(inner),
            Change::Savepoint(_) | Change::RollbackTo(_) | Change::ForeignKeyChecks(_) => {}
        }
    }
}

/// What a proof compared and found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Proof {
    pub tables: usize,
    pub keys: u64,
    pub differences: Vec<RowDiff>,
    /// Tables without a key (compared whole) whose rows differ.
    pub whole_tables_differing: Vec<String>,
}

impl Proof {
    pub fn identical(&self) -> bool {
        self.differences.is_empty() && self.whole_tables_differing.is_empty()
    }

    /// One line naming what differs (for an error).
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .differences
            .iter()
            .take(5)
            .map(|d| {
                let key: Vec<String> = d.key.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!(
                    "{}.{} ({}) {}",
                    d.database,
                    d.table,
                    key.join(", "),
                    match d.kind {
                        DiffKind::Missing => "missing on the target".to_string(),
                        DiffKind::Extra => "extra on the target".to_string(),
                        DiffKind::Different => format!("differs in {}", d.columns.join(", ")),
                    }
                )
            })
            .collect();
        if self.differences.len() > 5 {
            parts.push(format!("{} more", self.differences.len() - 5));
        }
        parts.extend(
            self.whole_tables_differing
                .iter()
                .map(|t| format!("{t} (no key) differs")),
        );
        parts.join("; ")
    }
}

/// Compare the rows at the touched keys on both servers, each read as it is now on the
/// connection given (inside an open snapshot, or with both servers still). `tables` holds the
/// description of every touched table; a touched table missing from it is an error (it was
/// created or renamed since the verify: a DDL, which the caller refuses before this).
pub async fn prove(
    src: &mut Conn,
    tgt: &mut Conn,
    tables: &[Table],
    touched: &Touched,
) -> Result<Proof> {
    let mut proof = Proof::default();
    for ((db, name), keys) in &touched.tables {
        let Some(t) = tables.iter().find(|t| &t.db == db && &t.name == name) else {
            return Err(Error::definite(
                format!("`{db}`.`{name}` was changed since the last verify but is not among the migrated tables now"),
                "run `migrate cutover --verify` (a full verify) instead",
            ));
        };
        proof.tables += 1;
        if keys.contains(WHOLE_TABLE) || !t.has_key() {
            proof.keys += 1;
            let sql = digest::chunk_digest(t, None, None);
            let (a, b) = tokio::join!(
                super::digest(src, &sql, "source", t),
                super::digest(tgt, &sql, "target", t)
            );
            if a? != b? {
                proof.whole_tables_differing.push(t.full_name());
            }
            continue;
        }
        let decoded: Vec<Vec<Value>> = keys
            .iter()
            .map(|k| {
                serde_json::from_str(k).map_err(|e| {
                    Error::definite(
                        format!("state file: a touched key of {}: {e}", t.full_name()),
                        "run `migrate cutover --verify` (a full verify) instead",
                    )
                })
            })
            .collect::<Result<_>>()?;
        for chunk in decoded.chunks(KEYS_PER_READ) {
            proof.keys += chunk.len() as u64;
            let sql = digest::row_images_at(t, chunk);
            for (key, kind, columns) in narrow(src, tgt, t, &sql)
                .await
                .map_err(|e| e.context(format!("proving the changed keys of {}", t.full_name())))?
            {
                proof.differences.push(RowDiff {
                    database: t.db.clone(),
                    table: t.name.clone(),
                    key: key_text(t, &key),
                    kind,
                    columns,
                    repaired: false,
                });
            }
        }
    }
    Ok(proof)
}

/// Prove the touched keys while the source keeps running: one pair of snapshots, the source's
/// at its GTID G and the target's at exactly G (`sync` brings the follower there), then the
/// rows at those keys compared inside them. Returns the proof and G.
pub async fn prove_at_one_gtid(
    source: &crate::config::Endpoint,
    target: &crate::config::Endpoint,
    tables: &[Table],
    touched: &Touched,
    sync: &impl super::TargetSync,
) -> Result<(Proof, crate::position::Position)> {
    use crate::db::{self, consistent, Session};
    let mut pairs = [super::Pair {
        src: db::connect(source, Session::SourceReader)
            .await
            .map_err(|e| e.context("source"))?,
        tgt: db::connect(target, Session::SourceReader)
            .await
            .map_err(|e| e.context("target"))?,
        current: None,
    }];
    let mut gtids = consistent::Gtids::default();
    let (at, _) = super::open_round(&mut pairs, &mut gtids, sync).await?;
    let [p] = &mut pairs;
    let proof = prove(&mut p.src, &mut p.tgt, tables, touched).await;
    let _ = consistent::close(&mut p.src).await;
    let _ = consistent::close(&mut p.tgt).await;
    Ok((proof?, at))
}
