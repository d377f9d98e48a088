//! Foreign-key actions the binlog does not carry. On the source, InnoDB runs ON DELETE/UPDATE
//! CASCADE and SET NULL inside the engine and logs only the parent's row change; the target
//! applier runs with foreign_key_checks=0 (intermediate states may violate foreign keys), so
//! it performs those actions itself, right after the parent's change, in source order, and
//! recursively: a child row deleted, moved to a new key or set to NULL is itself a change that
//! its own children react to (a -> b -> c, like InnoDB).
//!
//! During the snapshot's catch-up a child table's copy may already hold the effect of a
//! parent change (the copy was read after it): a cascade into a table whose horizon covers
//! the event is not performed (see docs/design.md, "cascades and the copy").

use super::pipe::Pipe;
use crate::db::quote;
use crate::error::{Error, Result};
use crate::position::{horizon::Horizons, FilePos};
use crate::schema::keyset as plan;
use crate::schema::{self, ChildFk, Table};
use crate::value::{decode, encode, Value};
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

/// A change whose foreign-key consequences are to be performed.
pub enum Effect {
    Deleted(Arc<Table>, Vec<Vec<Value>>),
    /// (before, after) images.
    Updated(Arc<Table>, Vec<(Vec<Value>, Vec<Value>)>),
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
                    encode::comparable(&mut lit, v, &child.columns[ci]);
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

/// `row` with the child's foreign-key columns set to `values` (NULL when None).
fn with_fk(child: &Table, fk: &ChildFk, row: &[Value], values: Option<&[Value]>) -> Vec<Value> {
    let mut r = row.to_vec();
    for (n, c) in fk.child_columns.iter().enumerate() {
        if let Some(i) = child.column_index(c) {
            r[i] = values.map_or(Value::Null, |v| v[n].clone());
        }
    }
    r
}

/// The rows of `t` matching `cond` (the applier's session reads results as binary).
async fn read_rows(pipe: &mut Pipe<'_>, t: &Table, cond: &str) -> Result<Vec<Vec<Value>>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {cond}",
        plan::select_list(t),
        t.quoted()
    );
    let raw = pipe.rows(sql).await?;
    raw.into_iter()
        .map(|r| decode::text_row(&t.columns, r.unwrap()))
        .collect()
}

/// Whether the updates of `pairs` can be carried to `fk`'s children together: the referenced
/// values are integers (their equality is the server's), each changed, and none is both an old
/// and a new value within the batch (no chain X -> Y, Y -> Z).
fn batchable(parent: &Table, fk: &ChildFk, pairs: &[(Vec<Value>, Vec<Value>)]) -> bool {
    let mut olds = Vec::new();
    let mut news = Vec::new();
    for (b, a) in pairs {
        let (Some(old), Some(new)) = (referenced(parent, fk, b), referenced(parent, fk, a)) else {
            return false;
        };
        if !old
            .iter()
            .chain(&new)
            .all(|v| matches!(v, Value::Int(_) | Value::UInt(_)))
        {
            return false;
        }
        olds.push(old);
        news.push(new);
    }
    !olds.iter().any(|o| news.contains(o))
}

/// Carry many parent updates to `fk`'s children: one read of them all (when their own children
/// need their images), one UPDATE per moved value, all sent in one round trip. Returns the
/// children's own changes (for their children).
async fn update_many(
    pipe: &mut Pipe<'_>,
    parent: &Table,
    child: &Arc<Table>,
    fk: &ChildFk,
    pairs: &[(Vec<Value>, Vec<Value>)],
) -> Result<Option<Effect>> {
    let mut moves: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
    for (b, a) in pairs {
        if let (Some(old), Some(new)) = (referenced(parent, fk, b), referenced(parent, fk, a)) {
            if old != new {
                moves.push((old, new));
            }
        }
    }
    let moving = match fk.on_update.as_str() {
        "CASCADE" => true,
        "SET NULL" => false,
        _ => return Ok(None),
    };
    let olds: Vec<Vec<Value>> = moves.iter().map(|(o, _)| o.clone()).collect();
    let Some(all) = match_condition(child, fk, &olds) else {
        return Ok(None);
    };
    let rows = if child.has_cascades() {
        read_rows(pipe, child, &all).await?
    } else {
        Vec::new()
    };
    let name = child.full_name();
    for (old, new) in &moves {
        let Some(cond) = match_condition(child, fk, std::slice::from_ref(old)) else {
            continue;
        };
        let set: Vec<String> = fk
            .child_columns
            .iter()
            .enumerate()
            .filter_map(|(n, c)| {
                let i = child.column_index(c)?;
                let mut s = format!("{} = ", quote::ident(c));
                if moving {
                    encode::literal(&mut s, &new[n], &child.columns[i]);
                } else {
                    s.push_str("NULL");
                }
                Some(s)
            })
            .collect();
        pipe.write(
            format!(
                "UPDATE {} SET {} WHERE {cond}",
                child.quoted(),
                set.join(", ")
            ),
            &name,
        )
        .await?;
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let cols: Vec<usize> = fk
        .child_columns
        .iter()
        .filter_map(|c| child.column_index(c))
        .collect();
    let out = rows
        .into_iter()
        .map(|r| {
            let value: Vec<Value> = cols.iter().map(|&i| r[i].clone()).collect();
            let new = moves
                .iter()
                .find(|(o, _)| *o == value)
                .map(|(_, n)| n.clone());
            let moved = with_fk(child, fk, &r, if moving { new.as_deref() } else { None });
            (r, moved)
        })
        .collect();
    Ok(Some(Effect::Updated(child.clone(), out)))
}

/// More actions than InnoDB could ever run for one change (it stops at 15 levels): a cycle.
const MAX_EFFECTS: usize = 100_000;

/// Perform the foreign-key actions of `first` (a change already applied or about to be), and
/// of everything they change in turn. `end` is the binlog position of the source transaction.
pub async fn propagate(
    pipe: &mut Pipe<'_>,
    children: &mut Children,
    horizons: &Horizons,
    end: &FilePos,
    first: Effect,
) -> Result<()> {
    let mut work = vec![first];
    let mut done = 0usize;
    while let Some(effect) = work.pop() {
        done += 1;
        if done > MAX_EFFECTS {
            return Err(Error::definite(
                "foreign-key cascades do not terminate (a cycle of ON UPDATE CASCADE?)",
                "report this with the foreign keys involved",
            ));
        }
        match effect {
            Effect::Deleted(t, rows) => {
                for fk in &t.children {
                    let child = children.get(pipe.conn, fk).await?;
                    if horizons.covers_table(&child.db, &child.name, end) {
                        continue; // the child's copy was read after this change
                    }
                    let name = child.full_name();
                    let tuples: Vec<Vec<Value>> =
                        rows.iter().filter_map(|r| referenced(&t, fk, r)).collect();
                    let Some(cond) = match_condition(&child, fk, &tuples) else {
                        continue;
                    };
                    match fk.on_delete.as_str() {
                        "CASCADE" => {
                            if child.has_cascades() {
                                let gone = read_rows(pipe, &child, &cond).await?;
                                work.push(Effect::Deleted(child.clone(), gone));
                            }
                            pipe.write(
                                format!("DELETE FROM {} WHERE {cond}", child.quoted()),
                                &name,
                            )
                            .await?;
                        }
                        "SET NULL" => {
                            if child.has_cascades() {
                                let before = read_rows(pipe, &child, &cond).await?;
                                let pairs = before
                                    .into_iter()
                                    .map(|b| {
                                        let a = with_fk(&child, fk, &b, None);
                                        (b, a)
                                    })
                                    .collect();
                                work.push(Effect::Updated(child.clone(), pairs));
                            }
                            pipe.write(set_null(&child, fk, &cond), &name).await?
                        }
                        _ => {}
                    }
                }
            }
            Effect::Updated(t, pairs) => {
                for fk in &t.children {
                    if pairs.len() > 1 && batchable(&t, fk, &pairs) {
                        let child = children.get(pipe.conn, fk).await?;
                        if horizons.covers_table(&child.db, &child.name, end) {
                            continue;
                        }
                        if let Some(next) = update_many(pipe, &t, &child, fk, &pairs).await? {
                            work.push(next);
                        }
                        continue;
                    }
                    for (before, after) in &pairs {
                        let (Some(old), new) =
                            (referenced(&t, fk, before), referenced(&t, fk, after))
                        else {
                            continue;
                        };
                        if new.as_ref() == Some(&old) {
                            continue;
                        }
                        let child = children.get(pipe.conn, fk).await?;
                        if horizons.covers_table(&child.db, &child.name, end) {
                            tracing::debug!(
                                "cascade into {} at {end:?} is in its copy",
                                child.full_name()
                            );
                            continue;
                        }
                        let name = child.full_name();
                        let Some(cond) = match_condition(&child, fk, std::slice::from_ref(&old))
                        else {
                            continue;
                        };
                        let moving = match (fk.on_update.as_str(), &new) {
                            ("CASCADE", Some(_)) => true,
                            ("CASCADE", None) | ("SET NULL", _) => false,
                            _ => continue,
                        };
                        let target = if moving { new.as_deref() } else { None };
                        // the children's images are needed only for their own children
                        let rows = if child.has_cascades() {
                            read_rows(pipe, &child, &cond).await?
                        } else {
                            Vec::new()
                        };
                        // the child table mirrors the source here (its copy is past its
                        // horizon), so the rows move exactly as InnoDB moved them
                        let set: Vec<String> = fk
                            .child_columns
                            .iter()
                            .enumerate()
                            .filter_map(|(n, c)| {
                                let i = child.column_index(c)?;
                                let mut s = format!("{} = ", quote::ident(c));
                                match target {
                                    Some(v) => encode::literal(&mut s, &v[n], &child.columns[i]),
                                    None => s.push_str("NULL"),
                                }
                                Some(s)
                            })
                            .collect();
                        pipe.write(
                            format!(
                                "UPDATE {} SET {} WHERE {cond}",
                                child.quoted(),
                                set.join(", ")
                            ),
                            &name,
                        )
                        .await?;
                        let moved: Vec<Vec<Value>> = rows
                            .iter()
                            .map(|r| with_fk(&child, fk, r, target))
                            .collect();
                        if child.has_cascades() {
                            work.push(Effect::Updated(
                                child.clone(),
                                rows.into_iter().zip(moved).collect(),
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
