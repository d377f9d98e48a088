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

use super::cascade::{self, Children, Effect};
use crate::binlog::{Change, Transaction};
use crate::db::quote;
use crate::error::Result;
use crate::position::horizon::Horizons;
use crate::schema::Table;
use crate::snapshot::plan;
use crate::value::{encode, Value};
use mysql_async::prelude::*;
use mysql_async::Conn;
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
enum Run {
    None,
    /// Multi-row REPLACE into a keyed table (no cascade involved).
    Replace(Arc<Table>, String),
    /// Multi-row INSERT into a keyless table.
    Insert(Arc<Table>, String),
    /// Deletes of a keyed table: their rows (cascades run for all of them at once).
    Delete(Arc<Table>, Vec<Vec<Value>>),
}

pub struct Exact<'a> {
    pub conn: &'a mut Conn,
    pub children: &'a mut Children,
    pub horizons: &'a Horizons,
    pub max_statement: usize,
    pub max_packet: usize,
}

impl Exact<'_> {
    async fn flush(&mut self, run: &mut Run, t: &Transaction) -> Result<()> {
        match std::mem::replace(run, Run::None) {
            Run::None => {}
            Run::Replace(table, sql) | Run::Insert(table, sql) => {
                crate::db::check_packet(
                    sql.len(),
                    self.max_packet,
                    format!("target table {}", table.full_name()),
                )?;
                self.conn.query_drop(sql).await?
            }
            Run::Delete(table, rows) => {
                if table.has_cascades() {
                    cascade::propagate(
                        self.conn,
                        self.children,
                        self.horizons,
                        &t.end,
                        Effect::Deleted(table.clone(), rows.clone()),
                    )
                    .await?;
                }
                self.delete_keys(&table, &rows).await?;
            }
        }
        Ok(())
    }

    /// Send one statement, refusing one the target's max_allowed_packet cannot take.
    async fn send(&mut self, table: &Table, sql: String) -> Result<()> {
        crate::db::check_packet(
            sql.len(),
            self.max_packet,
            format!("target table {}", table.full_name()),
        )?;
        self.conn.query_drop(sql).await?;
        Ok(())
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
            self.conn
                .query_drop(format!(
                    "DELETE FROM {} WHERE {key_expr} IN ({})",
                    table.quoted(),
                    chunk.join(", ")
                ))
                .await?;
        }
        Ok(())
    }

    /// Apply `t` (or one part of it) inside the open target transaction.
    pub async fn apply(&mut self, t: &Transaction) -> Result<()> {
        if !t.continued && (t.rolled_back || t.partial) {
            self.conn.query_drop(format!("SAVEPOINT {WHOLE}")).await?;
        }
        let mut run = Run::None;
        for c in &t.changes {
            match c {
                Change::Savepoint(name) => {
                    self.flush(&mut run, t).await?;
                    self.conn
                        .query_drop(format!("SAVEPOINT {}", savepoint_name(name)))
                        .await?;
                }
                Change::RollbackTo(name) => {
                    self.flush(&mut run, t).await?;
                    self.conn
                        .query_drop(format!("ROLLBACK TO SAVEPOINT {}", savepoint_name(name)))
                        .await?;
                }
                Change::Upsert { table, before, row } if table.has_key() || table.sequence => {
                    let cascades = before.is_some() && table.has_cascades();
                    if cascades {
                        self.flush(&mut run, t).await?;
                        cascade::propagate(
                            self.conn,
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
                    let same = matches!(&run, Run::Replace(rt, sql) if Arc::ptr_eq(rt, table) && sql.len() < self.max_statement);
                    if same {
                        if let Run::Replace(_, sql) = &mut run {
                            sql.push_str(", ");
                            plan::push_row(sql, table, row);
                        }
                    } else {
                        self.flush(&mut run, t).await?;
                        let mut sql = plan::replace_prefix(table);
                        plan::push_row(&mut sql, table, row);
                        run = Run::Replace(table.clone(), sql);
                    }
                }
                Change::Upsert {
                    table,
                    before: None,
                    row,
                } => {
                    let same = matches!(&run, Run::Insert(rt, sql) if Arc::ptr_eq(rt, table) && sql.len() < self.max_statement);
                    if same {
                        if let Run::Insert(_, sql) = &mut run {
                            sql.push_str(", ");
                            plan::push_row(sql, table, row);
                        }
                    } else {
                        self.flush(&mut run, t).await?;
                        let mut sql = plan::insert_prefix(table);
                        plan::push_row(&mut sql, table, row);
                        run = Run::Insert(table.clone(), sql);
                    }
                }
                Change::Upsert {
                    table,
                    before: Some(before),
                    row,
                } => {
                    // keyless update: one row equal to the before-image
                    self.flush(&mut run, t).await?;
                    if table.has_cascades() {
                        cascade::propagate(
                            self.conn,
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
                Change::Delete { table, row } if table.has_key() => {
                    let same = matches!(&run, Run::Delete(rt, rows) if Arc::ptr_eq(rt, table) && rows.len() < 1000);
                    if same {
                        if let Run::Delete(_, rows) = &mut run {
                            rows.push(row.clone());
                        }
                    } else {
                        self.flush(&mut run, t).await?;
                        run = Run::Delete(table.clone(), vec![row.clone()]);
                    }
                }
                Change::Delete { table, row } => {
                    self.flush(&mut run, t).await?;
                    if table.has_cascades() {
                        cascade::propagate(
                            self.conn,
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
                    self.flush(&mut run, t).await?;
                    if table.has_cascades() {
                        cascade::propagate(
                            self.conn,
                            self.children,
                            self.horizons,
                            &t.end,
                            Effect::Updated(table.clone(), vec![(before.clone(), after.clone())]),
                        )
                        .await?;
                    }
                    self.delete_keys(table, std::slice::from_ref(before))
                        .await?;
                    let mut sql = plan::replace_prefix(table);
                    plan::push_row(&mut sql, table, after);
                    run = Run::Replace(table.clone(), sql);
                }
            }
        }
        self.flush(&mut run, t).await?;
        if !t.partial && t.rolled_back {
            self.conn
                .query_drop(format!("ROLLBACK TO SAVEPOINT {WHOLE}"))
                .await?;
        }
        Ok(())
    }
}
