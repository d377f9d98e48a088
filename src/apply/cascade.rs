//! Foreign-key actions the binlog does not carry. On the source, InnoDB runs ON DELETE/UPDATE
//! CASCADE and SET NULL inside the engine and logs only the parent's row change; the target
//! applier runs with foreign_key_checks=0 (intermediate states may violate foreign keys), so
//! it performs those actions itself, right after the parent's change, in source order.

use crate::db::quote;
use crate::error::Result;
use crate::schema::{self, ChildFk, Table};
use crate::snapshot::plan;
use crate::value::{decode, encode, Value};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::HashMap;
use std::sync::Arc;

/// Child table descriptions, kept until the next DDL.
#[derive(Default)]
pub struct Children {
    tables: HashMap<(String, String), Arc<Table>>,
}

impl Children {
    async fn get(&mut self, conn: &mut Conn, fk: &ChildFk) -> Result<Arc<Table>> {
        let k = (fk.db.clone(), fk.table.clone());
        if let Some(t) = self.tables.get(&k) {
            return Ok(t.clone());
        }
        let t = Arc::new(schema::describe(conn, &fk.db, &fk.table).await?);
        self.tables.insert(k, t.clone());
        Ok(t)
    }
    pub fn clear(&mut self) {
        self.tables.clear();
    }
}

/// `(c1 = v1 AND c2 = v2) OR ...` over the child's columns for each parent value tuple.
fn match_condition(child: &Table, fk: &ChildFk, tuples: &[Vec<Value>]) -> Option<String> {
    let cols: Vec<usize> = fk
        .child_columns
        .iter()
        .filter_map(|c| child.column_index(c))
        .collect();
    if cols.len() != fk.child_columns.len() {
        return None;
    }
    let ors: Vec<String> = tuples
        .iter()
        .map(|vals| {
            let ands: Vec<String> = cols
                .iter()
                .zip(vals)
                .map(|(&ci, v)| {
                    let mut lit = String::new();
                    encode::literal(&mut lit, v, &child.columns[ci]);
                    format!("{} = {lit}", quote::ident(&child.columns[ci].name))
                })
                .collect();
            format!("({})", ands.join(" AND "))
        })
        .collect();
    if ors.is_empty() {
        None
    } else {
        Some(ors.join(" OR "))
    }
}

/// `UPDATE child SET fk columns = NULL WHERE cond`
fn set_null(child: &Table, fk: &ChildFk, cond: &str) -> String {
    let set: Vec<String> = fk
        .child_columns
        .iter()
        .map(|c| format!("{} = NULL", quote::ident(c)))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {cond}",
        child.quoted(),
        set.join(", ")
    )
}

/// Values of the referenced (parent) columns of `row`; None when any is NULL (no match).
fn referenced(parent: &Table, fk: &ChildFk, row: &[Value]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for c in &fk.parent_columns {
        let v = row.get(parent.column_index(c)?)?;
        if *v == Value::Null {
            return None;
        }
        out.push(v.clone());
    }
    Some(out)
}

async fn read_rows(conn: &mut Conn, t: &Table, cond: &str) -> Result<Vec<Vec<Value>>> {
    conn.query_drop("SET character_set_results = binary")
        .await?;
    let sql = format!(
        "SELECT {} FROM {} WHERE {cond}",
        plan::select_list(t),
        t.quoted()
    );
    let raw: Vec<mysql_async::Row> = conn.query(sql).await?;
    conn.query_drop("SET character_set_results = utf8mb4")
        .await?;
    raw.into_iter()
        .map(|r| decode::text_row(&t.columns, r.unwrap()))
        .collect()
}

/// After deleting `rows` of `parent`: delete or null their children, recursively.
pub async fn on_delete(
    conn: &mut Conn,
    children: &mut Children,
    parent: &Arc<Table>,
    rows: Vec<Vec<Value>>,
) -> Result<()> {
    let mut work = vec![(parent.clone(), rows)];
    while let Some((t, rows)) = work.pop() {
        for fk in &t.children {
            let tuples: Vec<Vec<Value>> =
                rows.iter().filter_map(|r| referenced(&t, fk, r)).collect();
            let child = children.get(conn, fk).await?;
            let Some(cond) = match_condition(&child, fk, &tuples) else {
                continue;
            };
            match fk.on_delete.as_str() {
                "CASCADE" => {
                    if child.has_cascades() {
                        let grandchildren = read_rows(conn, &child, &cond).await?;
                        work.push((child.clone(), grandchildren));
                    }
                    conn.query_drop(format!("DELETE FROM {} WHERE {cond}", child.quoted()))
                        .await?;
                }
                "SET NULL" => conn.query_drop(set_null(&child, fk, &cond)).await?,
                _ => {}
            }
        }
    }
    Ok(())
}

/// After changing `before` to `after` in `parent`: carry changed referenced values to children.
pub async fn on_update(
    conn: &mut Conn,
    children: &mut Children,
    parent: &Arc<Table>,
    before: &[Value],
    after: &[Value],
) -> Result<()> {
    for fk in &parent.children {
        let (Some(old), new) = (
            referenced(parent, fk, before),
            referenced(parent, fk, after),
        ) else {
            continue;
        };
        if new.as_ref() == Some(&old) {
            continue;
        }
        let child = children.get(conn, fk).await?;
        let Some(cond) = match_condition(&child, fk, std::slice::from_ref(&old)) else {
            continue;
        };
        match (fk.on_update.as_str(), new) {
            ("CASCADE", Some(new)) => {
                // Replace semantics, like every other write of the applier: the child rows
                // move to the new key and overwrite what a later chunk may have put there.
                let rows = read_rows(conn, &child, &cond).await?;
                if rows.is_empty() {
                    continue;
                }
                conn.query_drop(format!("DELETE FROM {} WHERE {cond}", child.quoted()))
                    .await?;
                let mut sql = plan::replace_prefix(&child);
                for (n, mut row) in rows.into_iter().enumerate() {
                    for (c, v) in fk.child_columns.iter().zip(&new) {
                        if let Some(i) = child.column_index(c) {
                            row[i] = v.clone();
                        }
                    }
                    if n > 0 {
                        sql.push_str(", ");
                    }
                    plan::push_row(&mut sql, &child, &row);
                }
                conn.query_drop(sql).await?;
            }
            ("CASCADE", None) | ("SET NULL", _) => {
                conn.query_drop(set_null(&child, fk, &cond)).await?
            }
            _ => {}
        }
    }
    Ok(())
}
