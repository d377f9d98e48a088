//! Applying one source transaction change by change, in source order, inside the group's
//! open target transaction. Used when collapsing would be wrong:
//! - foreign-key cascades must run between changes (`cascade`);
//! - `SAVEPOINT` / `ROLLBACK TO` in the transaction are executed on the target too, so the
//!   target undoes exactly what the source undid (transactional tables) and keeps what it
//!   kept (non-transactional ones); a group that ended in `ROLLBACK` is wrapped in a
//!   savepoint and rolled back to it, which leaves only its non-transactional changes;
//! - a table without a usable key has no key to collapse on: its rows are inserted as they
//!   are (duplicates stay duplicates), and deleted or updated one row at a time by a
//!   byte-exact, NULL-safe match of the whole before-image (`LIMIT 1`);
//! - a transaction too large for memory arrives in parts.
//!
//! Consecutive writes of one kind go in one statement, across transactions of the group too:
//! upserts of a table into one multi-row REPLACE, deletes of a table into one `DELETE … IN`
//! (their cascades together), and key changes of a table keyed by integers (the common
//! `UPDATE orders SET id = …`) into one batch whose children are read, moved and written in one
//! statement each, as long as no change in the batch chains onto another (a key that is both
//! left and taken in it).

use super::cascade::{self, Children, Effect};
use crate::binlog::{Change, Transaction};
use crate::db::quote;
use crate::error::Result;
use crate::position::{horizon::Horizons, FilePos};
use crate::schema::keyset as plan;
use crate::schema::Table;
use crate::value::{encode, Value};
use std::sync::Arc;

const WHOLE: &str = "`migrate_transaction`";

fn savepoint_name(name: &[u8]) -> String {
    let mut s = String::from("sp_");
    for b in name {
        s.push_str(&format!("{b:02x}"));
    }
    quote::ident(&s)
}

/// Consecutive writes that can go in one statement.
#[derive(Default)]
pub enum Run {
    #[default]
    None,
    /// Multi-row REPLACE into a keyed table (no cascade involved).
    Replace(Arc<Table>, String),
    /// Multi-row INSERT into a keyless table.
    Insert(Arc<Table>, String),
    /// Deletes of a keyed table: their rows (cascades run for all of them at once).
    Delete(Arc<Table>, Vec<Vec<Value>>),
    /// Key changes of a table keyed by integers: (before, after) images.
    Rekey(Arc<Table>, Vec<(Vec<Value>, Vec<Value>)>),
}

/// The writes not yet sent, kept across the transactions of a group, and the binlog position
/// of the transaction they came from (for the cascades' horizon checks).
#[derive(Default)]
pub struct Pending {
    run: Run,
    end: Option<FilePos>,
    /// Between `ForeignKeyChecks(false)` and `(true)`: no foreign-key actions.
    no_fk_actions: bool,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        matches!(self.run, Run::None)
    }
}

pub struct Exact<'a> {
    /// The applier's connection, writes queued several per round trip.
    pub pipe: super::pipe::Pipe<'a>,
    pub children: &'a mut Children,
    pub horizons: &'a Horizons,
    pub max_statement: usize,
    pub pending: &'a mut Pending,
}

/// Whether key changes of `t` can be batched: an integer key, and every cascading foreign key
/// that references `t` references exactly that key (so children are found by key values whose
/// equality the applier can judge itself).
fn rekey_batchable(t: &Table) -> bool {
    use crate::schema::Kind;
    let int_key = !t.key.is_empty()
        && t.key
            .iter()
            .all(|&i| matches!(t.columns[i].kind, Kind::Int { .. }));
    let key_names: Vec<&str> = t.key.iter().map(|&i| t.columns[i].name.as_str()).collect();
    int_key
        && t.children.iter().all(|fk| {
            fk.parent_columns
                .iter()
                .map(String::as_str)
                .eq(key_names.iter().copied())
        })
}

fn key_of(t: &Table, row: &[Value]) -> Vec<Value> {
    t.key.iter().map(|&i| row[i].clone()).collect()
}

impl Exact<'_> {
    /// Whether changes of `table` run its foreign-key actions now (not when the source session
    /// had foreign_key_checks off).
    fn fk_actions(&self, table: &Table) -> bool {
        table.has_cascades() && !self.pending.no_fk_actions
    }

    /// Send the pending writes.
    pub async fn flush(&mut self) -> Result<()> {
        let end = self
            .pending
            .end
            .take()
            .unwrap_or_else(|| FilePos::new("", 0));
        match std::mem::take(&mut self.pending.run) {
            Run::None => {}
            Run::Replace(table, sql) | Run::Insert(table, sql) => {
                self.pipe.write(sql, &table.full_name()).await?
            }
            Run::Delete(table, rows) => {
                if self.fk_actions(&table) {
                    cascade::propagate(
                        &mut self.pipe,
                        self.children,
                        self.horizons,
                        &end,
                        Effect::Deleted(table.clone(), rows.clone()),
                    )
                    .await?;
                }
                self.delete_keys(&table, &rows).await?;
            }
            Run::Rekey(table, pairs) => {
                if self.fk_actions(&table) {
                    cascade::propagate(
                        &mut self.pipe,
                        self.children,
                        self.horizons,
                        &end,
                        Effect::Updated(table.clone(), pairs.clone()),
                    )
                    .await?;
                }
                let befores: Vec<Vec<Value>> = pairs.iter().map(|(b, _)| b.clone()).collect();
                self.delete_keys(&table, &befores).await?;
                let mut sql = plan::replace_prefix(&table);
                for (n, (_, after)) in pairs.iter().enumerate() {
                    if n > 0 {
                        sql.push_str(", ");
                    }
                    plan::push_row(&mut sql, &table, after);
                }
                self.send(&table, sql).await?;
            }
        }
        Ok(())
    }

    /// Start a run (flushing what is pending) or check that `t` may join the pending one: a
    /// cascade's horizon check must give the same answer for every transaction of a run.
    async fn position(&mut self, t: &Transaction) -> Result<()> {
        let same_side = match (&self.pending.end, self.horizons.last()) {
            (_, None) => true,
            (Some(e), Some(h)) => (*e > *h) == (t.end > *h) && t.end > *h,
            (None, Some(_)) => true,
        };
        if !same_side {
            self.flush().await?;
        }
        if self.pending.end.is_none() {
            self.pending.end = Some(t.end.clone());
        }
        Ok(())
    }

    /// Replace the pending run by `run` (after sending it).
    async fn start(&mut self, run: Run, t: &Transaction) -> Result<()> {
        self.flush().await?;
        self.pending.end = Some(t.end.clone());
        self.pending.run = run;
        Ok(())
    }

    /// Queue one statement (refused if the target's max_allowed_packet cannot take it).
    async fn send(&mut self, table: &Table, sql: String) -> Result<()> {
        self.pipe.write(sql, &table.full_name()).await
    }

    /// `DELETE ... WHERE key IN (...)` for these rows (no foreign-key actions).
    async fn delete_keys(&mut self, table: &Table, rows: &[Vec<Value>]) -> Result<()> {
        let mut keys = Vec::new();
        for r in rows {
            let mut k = String::new();
            if table.key.len() > 1 {
                k.push('(');
            }
            for (n, &i) in table.key.iter().enumerate() {
                if n > 0 {
                    k.push_str(", ");
                }
                encode::comparable(&mut k, &r[i], &table.columns[i]);
            }
            if table.key.len() > 1 {
                k.push(')');
            }
            keys.push(k);
        }
        let cols: Vec<String> = table
            .key
            .iter()
            .map(|&i| quote::ident(&table.columns[i].name))
            .collect();
        let key_expr = if cols.len() > 1 {
            format!("({})", cols.join(", "))
        } else {
            cols.join("")
        };
        for chunk in keys.chunks(1000) {
            let sql = format!(
                "DELETE FROM {} WHERE {key_expr} IN ({})",
                table.quoted(),
                chunk.join(", ")
            );
            self.send(table, sql).await?;
        }
        Ok(())
    }

    /// Apply `t` (or one part of it) inside the open target transaction. Its last writes may
    /// stay pending (joined by the next transaction's); `flush` sends them.
    pub async fn apply(&mut self, t: &Transaction) -> Result<()> {
        self.position(t).await?;
        if !t.continued && (t.rolled_back || t.partial) {
            self.flush().await?;
            self.pipe
                .write(format!("SAVEPOINT {WHOLE}"), "target")
                .await?;
        }
        for c in &t.changes {
            match c {
                Change::Savepoint(name) => {
                    self.flush().await?;
                    self.pipe
                        .write(format!("SAVEPOINT {}", savepoint_name(name)), "target")
                        .await?;
                }
                Change::CascadeOnly(inner) => {
                    // the parent's copy holds the change; its cascade into older child copies
                    // is performed (cascade::propagate skips the children whose copy holds it)
                    self.flush().await?;
                    let effect = match &**inner {
                        Change::Delete { table, row } => {
                            Some(Effect::Deleted(table.clone(), vec![row.clone()]))
                        }
                        Change::Rekey {
                            table,
                            before,
                            after,
                        } => Some(Effect::Updated(
                            table.clone(),
                            vec![(before.clone(), after.clone())],
                        )),
                        Change::Upsert {
                            table,
                            before: Some(before),
                            row,
                        } => Some(Effect::Updated(
                            table.clone(),
                            vec![(before.clone(), row.clone())],
                        )),
                        _ => None,
                    };
                    if let Some(effect) = effect {
                        let table = inner.table().cloned();
                        if table.is_some_and(|t| self.fk_actions(&t)) {
                            cascade::propagate(
                                &mut self.pipe,
                                self.children,
                                self.horizons,
                                &t.end,
                                effect,
                            )
                            .await?;
                        }
                    }
                }
                Change::ForeignKeyChecks(on) => {
                    // pending writes keep the setting they were made under
                    self.flush().await?;
                    self.pending.no_fk_actions = !on;
                }
                Change::RollbackTo(name) => {
                    self.flush().await?;
                    self.pipe
                        .write(
                            format!("ROLLBACK TO SAVEPOINT {}", savepoint_name(name)),
                            "target",
                        )
                        .await?;
                }
                Change::Upsert { table, before, row } if table.has_key() || table.sequence => {
                    if before.is_some() && self.fk_actions(table) {
                        self.flush().await?;
                        cascade::propagate(
                            &mut self.pipe,
                            self.children,
                            self.horizons,
                            &t.end,
                            Effect::Updated(
                                table.clone(),
                                vec![(before.clone().unwrap_or_default(), row.clone())],
                            ),
                        )
                        .await?;
                    }
                    let max = self.max_statement;
                    match &mut self.pending.run {
                        Run::Replace(rt, sql) if Arc::ptr_eq(rt, table) && sql.len() < max => {
                            sql.push_str(", ");
                            plan::push_row(sql, table, row);
                            if sql.len() >= max {
                                self.flush().await?;
                            }
                        }
                        _ => {
                            let mut sql = plan::replace_prefix(table);
                            plan::push_row(&mut sql, table, row);
                            let full = sql.len() >= max;
                            self.start(Run::Replace(table.clone(), sql), t).await?;
                            if full {
                                self.flush().await?;
                            }
                        }
                    }
                }
                Change::Upsert {
                    table,
                    before: None,
                    row,
                } => {
                    let max = self.max_statement;
                    match &mut self.pending.run {
                        Run::Insert(rt, sql) if Arc::ptr_eq(rt, table) && sql.len() < max => {
                            sql.push_str(", ");
                            plan::push_row(sql, table, row);
                        }
                        _ => {
                            let mut sql = plan::insert_prefix(table);
                            plan::push_row(&mut sql, table, row);
                            self.start(Run::Insert(table.clone(), sql), t).await?;
                        }
                    }
                }
                Change::Upsert {
                    table,
                    before: Some(before),
                    row,
                } => {
                    // keyless update: one row equal to the before-image
                    self.flush().await?;
                    if self.fk_actions(table) {
                        cascade::propagate(
                            &mut self.pipe,
                            self.children,
                            self.horizons,
                            &t.end,
                            Effect::Updated(table.clone(), vec![(before.clone(), row.clone())]),
                        )
                        .await?;
                    }
                    let sql = format!(
                        "UPDATE {} SET {} WHERE {} LIMIT 1",
                        table.quoted(),
                        plan::set_list(table, row),
                        plan::row_match(table, before)
                    );
                    self.send(table, sql).await?;
                }
                Change::Delete { table, row } if table.has_key() => match &mut self.pending.run {
                    Run::Delete(rt, rows) if Arc::ptr_eq(rt, table) && rows.len() < 1000 => {
                        rows.push(row.clone());
                    }
                    _ => {
                        self.start(Run::Delete(table.clone(), vec![row.clone()]), t)
                            .await?
                    }
                },
                Change::Delete { table, row } => {
                    self.flush().await?;
                    if self.fk_actions(table) {
                        cascade::propagate(
                            &mut self.pipe,
                            self.children,
                            self.horizons,
                            &t.end,
                            Effect::Deleted(table.clone(), vec![row.clone()]),
                        )
                        .await?;
                    }
                    let sql = format!(
                        "DELETE FROM {} WHERE {} LIMIT 1",
                        table.quoted(),
                        plan::row_match(table, row)
                    );
                    self.send(table, sql).await?;
                }
                Change::Rekey {
                    table,
                    before,
                    after,
                } => {
                    let (b, a) = (key_of(table, before), key_of(table, after));
                    let joins = match &self.pending.run {
                        Run::Rekey(rt, pairs) if Arc::ptr_eq(rt, table) && pairs.len() < 1000 => {
                            // no key both left and taken within the batch
                            !pairs.iter().any(|(pb, pa)| {
                                let (pb, pa) = (key_of(table, pb), key_of(table, pa));
                                pb == b || pb == a || pa == b || pa == a
                            })
                        }
                        _ => false,
                    };
                    if joins {
                        if let Run::Rekey(_, pairs) = &mut self.pending.run {
                            pairs.push((before.clone(), after.clone()));
                        }
                    } else if rekey_batchable(table) {
                        self.start(
                            Run::Rekey(table.clone(), vec![(before.clone(), after.clone())]),
                            t,
                        )
                        .await?;
                    } else {
                        self.start(
                            Run::Rekey(table.clone(), vec![(before.clone(), after.clone())]),
                            t,
                        )
                        .await?;
                        self.flush().await?;
                    }
                }
            }
        }
        if !t.partial && t.rolled_back {
            self.flush().await?;
            self.pipe
                .write(format!("ROLLBACK TO SAVEPOINT {WHOLE}"), "target")
                .await?;
        }
        Ok(())
    }
}
