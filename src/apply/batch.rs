//! A group of source transactions turned into the fewest statements that leave the same rows:
//! per table, an ordered list of operations where a later change to the same key replaces the
//! earlier one (moving to its position); consecutive deletes become one `DELETE ... IN`,
//! consecutive replaces one multi-row `REPLACE`. Only tables with a key (and sequences, whose
//! single row is the last image written) are collapsed; everything else is applied change by
//! change (`exact`). Statements are produced one at a time, so a large group never exists
//! twice in memory.

use crate::binlog::{Change, Transaction};
use crate::db::quote;
use crate::schema::keyset as plan;
use crate::schema::Table;
use crate::value::{encode, Value};
use std::collections::HashMap;
use std::sync::Arc;

enum Op {
    Replace(Vec<Value>),
    Delete,
}

struct TableOps {
    table: Arc<Table>,
    /// (key literal, op); None where a later op on the same key superseded it.
    ops: Vec<Option<(String, Op)>>,
    index: HashMap<String, usize>,
}

#[derive(Default)]
pub struct Batch {
    tables: Vec<TableOps>,
    by_name: HashMap<(String, String), usize>,
    pub transactions: usize,
    pub rows: usize,
    pub bytes: u64,
    pub last_ts: u32,
    /// Estimated source commit time of the last transaction (unix seconds).
    pub last_commit: f64,
    /// Rows changed per (table, kind), for metrics.
    pub counts: HashMap<(String, &'static str), u64>,
}

fn key_literal(t: &Table, row: &[Value]) -> String {
    let mut s = String::new();
    if t.key.len() > 1 {
        s.push('(');
    }
    for (n, &i) in t.key.iter().enumerate() {
        if n > 0 {
            s.push_str(", ");
        }
        encode::comparable(&mut s, &row[i], &t.columns[i]);
    }
    if t.key.len() > 1 {
        s.push(')');
    }
    s
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.transactions == 0
    }

    fn push(&mut self, table: &Arc<Table>, row: &[Value], op: Op) {
        let k = (table.db.clone(), table.name.clone());
        let idx = *self.by_name.entry(k).or_insert_with(|| {
            self.tables.push(TableOps {
                table: table.clone(),
                ops: Vec::new(),
                index: HashMap::new(),
            });
            self.tables.len() - 1
        });
        let t = &mut self.tables[idx];
        let key = key_literal(&t.table, row);
        if let Some(old) = t.index.insert(key.clone(), t.ops.len()) {
            t.ops[old] = None;
        }
        t.ops.push(Some((key, op)));
    }

    /// Record a transaction applied outside the batch (exact apply, DDL) in the group's figures.
    pub fn count(&mut self, tx: &Transaction) {
        if !tx.partial {
            self.transactions += 1;
        }
        self.bytes += tx.bytes;
        self.last_ts = tx.timestamp;
        self.last_commit = tx.commit_estimate();
        for c in &tx.changes {
            if let Some(t) = c.table() {
                self.rows += 1;
                let kind = match c {
                    Change::Upsert { .. } => "upsert",
                    Change::Delete { .. } => "delete",
                    _ => "update_key",
                };
                *self.counts.entry((t.full_name(), kind)).or_default() += 1;
            }
        }
    }

    /// Whether there are row operations not yet turned into statements.
    pub fn has_ops(&self) -> bool {
        self.tables
            .iter()
            .any(|t| t.ops.iter().any(Option::is_some))
    }

    /// Forget the row operations (they were written), keep the group's figures.
    pub fn clear_ops(&mut self) {
        self.tables.clear();
        self.by_name.clear();
    }

    pub fn add(&mut self, tx: Transaction) {
        self.transactions += 1;
        self.bytes += tx.bytes;
        self.last_ts = tx.timestamp;
        self.last_commit = tx.commit_estimate();
        for c in tx.changes {
            self.rows += 1;
            match c {
                // markers; a CascadeOnly change always goes to the exact applier
                // (Transaction::needs_exact_apply), which performs its foreign-key actions
                Change::Savepoint(_)
                | Change::RollbackTo(_)
                | Change::ForeignKeyChecks(_)
                | Change::CascadeOnly(_) => {
                    self.rows -= 1;
                }
                Change::Upsert { table, row, .. } => {
                    *self
                        .counts
                        .entry((table.full_name(), "upsert"))
                        .or_default() += 1;
                    self.push(&table, &row, Op::Replace(row.clone()));
                }
                Change::Delete { table, row } => {
                    *self
                        .counts
                        .entry((table.full_name(), "delete"))
                        .or_default() += 1;
                    self.push(&table, &row, Op::Delete);
                }
                Change::Rekey {
                    table,
                    before,
                    after,
                } => {
                    *self
                        .counts
                        .entry((table.full_name(), "update_key"))
                        .or_default() += 1;
                    self.push(&table, &before, Op::Delete);
                    self.push(&table, &after, Op::Replace(after.clone()));
                }
            }
        }
    }

    /// The statements, in order, produced one at a time. Each is at most about
    /// `max_statement` bytes (one row more).
    pub fn statements(&self, max_statement: usize) -> Statements<'_> {
        Statements {
            batch: self,
            max_statement,
            table: 0,
            op: 0,
        }
    }
}

/// Iterator over a batch's statements.
pub struct Statements<'a> {
    batch: &'a Batch,
    max_statement: usize,
    table: usize,
    op: usize,
}

impl Iterator for Statements<'_> {
    type Item = String;
    fn next(&mut self) -> Option<String> {
        loop {
            let t = self.batch.tables.get(self.table)?;
            // skip superseded operations
            while self.op < t.ops.len() && t.ops[self.op].is_none() {
                self.op += 1;
            }
            let Some(Some((_, first))) = t.ops.get(self.op) else {
                self.table += 1;
                self.op = 0;
                continue;
            };
            let table = &t.table;
            let is_delete = matches!(first, Op::Delete);
            let mut sql = if is_delete {
                let key_cols: Vec<String> = table
                    .key
                    .iter()
                    .map(|&i| quote::ident(&table.columns[i].name))
                    .collect();
                let key_expr = if key_cols.len() > 1 {
                    format!("({})", key_cols.join(", "))
                } else {
                    key_cols.join("")
                };
                format!("DELETE FROM {} WHERE {key_expr} IN (", table.quoted())
            } else {
                plan::replace_prefix(table)
            };
            let mut n = 0;
            while self.op < t.ops.len() && sql.len() < self.max_statement {
                match &t.ops[self.op] {
                    None => {}
                    Some((key, Op::Delete)) if is_delete => {
                        if n > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(key);
                        n += 1;
                    }
                    Some((_, Op::Replace(row))) if !is_delete => {
                        if n > 0 {
                            sql.push_str(", ");
                        }
                        plan::push_row(&mut sql, table, row);
                        n += 1;
                    }
                    Some(_) => break,
                }
                self.op += 1;
            }
            if is_delete {
                sql.push(')');
            }
            return Some(sql);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Gtid;
    use crate::schema::Kind;

    fn table() -> Arc<Table> {
        let int = Kind::Int {
            unsigned: false,
            bytes: 4,
        };
        Arc::new(Table::for_test(
            "s",
            "inv",
            &[("id", int.clone()), ("qty", int)],
            &[0],
        ))
    }

    fn tx(changes: Vec<Change>) -> Transaction {
        Transaction {
            changes,
            ..Transaction::new(
                Gtid {
                    domain: 0,
                    server: 1,
                    seq: 1,
                },
                0,
                0.0,
            )
        }
    }

    #[test]
    fn last_image_wins_in_order() {
        let t = table();
        let row = |id, q| vec![Value::Int(id), Value::Int(q)];
        let mut b = Batch::default();
        b.add(tx(vec![Change::Upsert {
            table: t.clone(),
            before: None,
            row: row(1, 10),
        }]));
        b.add(tx(vec![
            Change::Upsert {
                table: t.clone(),
                before: None,
                row: row(1, 9),
            },
            Change::Delete {
                table: t.clone(),
                row: row(2, 0),
            },
        ]));
        b.add(tx(vec![Change::Rekey {
            table: t.clone(),
            before: row(3, 1),
            after: row(4, 1),
        }]));
        b.add(tx(vec![Change::Upsert {
            table: t.clone(),
            before: None,
            row: row(1, 8),
        }]));
        assert_eq!(
            b.statements(1 << 20).collect::<Vec<_>>(),
            vec![
                "DELETE FROM `s`.`inv` WHERE `id` IN (2, 3)".to_string(),
                "REPLACE INTO `s`.`inv` (`id`, `qty`) VALUES (4, 1), (1, 8)".to_string(),
            ]
        );
        assert_eq!(b.transactions, 4);
        // delete then re-insert of the same key keeps only the re-insert
        let mut b = Batch::default();
        b.add(tx(vec![
            Change::Delete {
                table: t.clone(),
                row: row(5, 0),
            },
            Change::Upsert {
                table: t.clone(),
                before: None,
                row: row(5, 2),
            },
        ]));
        assert_eq!(
            b.statements(1 << 20).collect::<Vec<_>>(),
            vec!["REPLACE INTO `s`.`inv` (`id`, `qty`) VALUES (5, 2)".to_string()]
        );
    }
}
