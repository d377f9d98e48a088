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

    /// The child rows a parent's change reaches through a cascading foreign key (CASCADE or SET
    /// NULL; the target's applier performs these, the binlog does not carry them): recorded by
    /// the child's foreign-key columns and the parent's values (`{"fk": [...], "v": [...]}`),
    /// before and after the change. One level: grandchildren are left to the full verify.
    fn cascades(&mut self, t: &Table, before: Option<&[Value]>, after: Option<&[Value]>) {
        for fk in &t.children {
            let values = |row: &[Value]| -> Option<Vec<Value>> {
                fk.parent_columns
                    .iter()
                    .map(|c| {
                        t.columns
                            .iter()
                            .position(|col| &col.name == c)
                            .and_then(|i| row.get(i).cloned())
                    })
                    .collect()
            };
            let (old, new) = (before.and_then(values), after.and_then(values));
            // an insert reaches no child; an update that keeps the referenced values neither
            let reached: Vec<Vec<Value>> = match (old, new) {
                (Some(o), None) => vec![o],
                (Some(o), Some(n)) if o != n => vec![o, n],
                _ => Vec::new(),
            };
            for v in reached {
                if v.iter().any(|x| matches!(x, Value::Null)) {
                    continue;
                }
                let key = serde_json::json!({ "fk": fk.child_columns, "v": v }).to_string();
                self.tables
                    .entry((fk.db.clone(), fk.table.clone()))
                    .or_default()
                    .insert(key);
            }
        }
    }

    fn change(&mut self, c: &Change) {
        match c {
            Change::Upsert { table, row, before } => {
                self.key(table, row);
                if let Some(b) = before {
                    self.cascades(table, Some(b), Some(row));
                }
            }
            Change::Delete { table, row } => {
                self.key(table, row);
                self.cascades(table, Some(row), None);
            }
            Change::Rekey {
                table,
                before,
                after,
            } => {
                self.key(table, before);
                self.key(table, after);
                self.cascades(table, Some(before), Some(after));
            }
            // the change itself is in the copy already; the child rows its foreign-key
            // actions change are the children's (compared as the parent's keys are not)
            Change::CascadeOnly(inner) => self.change(inner),
            Change::Savepoint(_) | Change::RollbackTo(_) | Change::ForeignKeyChecks(_) => {}
        }
    }
}

/// Child rows reached by a parent's cascade: the child's foreign-key columns and the values.
#[derive(serde::Deserialize)]
struct ByForeignKey {
    fk: Vec<String>,
    v: Vec<Value>,
}

impl ByForeignKey {
    /// `(c1 = v1 AND ...)` on table `t` (the child).
    fn condition(&self, t: &Table) -> Result<String> {
        let mut parts = Vec::new();
        for (name, v) in self.fk.iter().zip(&self.v) {
            let col = t.columns.iter().find(|c| &c.name == name).ok_or_else(|| {
                Error::definite(
                    format!("{}: foreign-key column `{name}` is gone", t.full_name()),
                    "run `migrate cutover --verify` (a full verify) instead",
                )
            })?;
            let mut lit = String::new();
            crate::value::encode::comparable(&mut lit, v, col);
            parts.push(format!("{} = {lit}", crate::db::quote::ident(name)));
        }
        Ok(format!("({})", parts.join(" AND ")))
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
        // the table's own keys, and the rows a parent's cascade reached (by foreign key): one
        // condition each
        let mut conditions: Vec<String> = Vec::new();
        for k in keys {
            let bad = |e: serde_json::Error| {
                Error::definite(
                    format!("state file: a touched key of {}: {e}", t.full_name()),
                    "run `migrate cutover --verify` (a full verify) instead",
                )
            };
            if k.starts_with('{') {
                let fk: ByForeignKey = serde_json::from_str(k).map_err(bad)?;
                conditions.push(fk.condition(t)?);
            } else {
                let key: Vec<Value> = serde_json::from_str(k).map_err(bad)?;
                conditions.push(format!("({})", digest::key_equals(t, &key)));
            }
        }
        proof.keys += conditions.len() as u64;
        for chunk in conditions.chunks(KEYS_PER_READ) {
            let sql = digest::row_images_where(t, &format!(" WHERE {}", chunk.join(" OR ")));
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
    use crate::db::consistent;
    let mut pairs = [super::Pair::connect(source, target).await?];
    let mut gtids = consistent::Gtids::default();
    let (at, _) = super::open_round(&mut pairs, &mut gtids, sync).await?;
    let [p] = &mut pairs;
    let proof = prove(&mut p.src, &mut p.tgt, tables, touched).await;
    let _ = consistent::close(&mut p.src).await;
    let _ = consistent::close(&mut p.tgt).await;
    Ok((proof?, at))
}
