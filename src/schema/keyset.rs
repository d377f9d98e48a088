//! Keyset chunk SQL, pure and unit-tested. A chunk is the rows with key in (lo, hi]:
//! `lo` is the last key of the previous chunk (none for the first), `hi` the last key read
//! (none for the last chunk, which runs to the end of the table). The same builder serves
//! the reader (SELECT ... LIMIT n) and the writer (DELETE the range, then REPLACE the rows),
//! which makes a chunk written twice leave the same rows as written once.

use crate::db::quote;
use crate::schema::{Kind, Table};
use crate::value::{encode, Value};

/// The select expression for each column, in table order (see value::decode::from_text).
pub fn select_list(t: &Table) -> String {
    t.columns
        .iter()
        .map(column_select)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How one column is selected for `value::decode::from_text`.
pub fn column_select(c: &crate::schema::Column) -> String {
    let q = quote::ident(&c.name);
    match c.kind {
        Kind::Float => format!("CAST({q} AS DOUBLE)"),
        Kind::Bit | Kind::Enum | Kind::Set => format!("({q} + 0)"),
        Kind::Inet4 | Kind::Inet6 | Kind::Uuid => {
            format!(
                "CAST({q} AS BINARY({}))",
                c.kind.native_binary_width().unwrap_or(16)
            )
        }
        _ => q,
    }
}

/// `key > lo` spelled out for composite keys: `a > x OR (a = x AND b > y)`, which
/// MariaDB turns into index ranges. `strict` false gives `>=`... not needed; `<=` via `upper`.
fn compare(t: &Table, bound: &[Value], op_last: &str, op_prefix: &str) -> String {
    let mut ors = Vec::new();
    for i in 0..t.key.len() {
        let mut ands = Vec::new();
        for (j, v) in bound.iter().enumerate().take(i + 1) {
            let col = &t.columns[t.key[j]];
            let mut lit = String::new();
            encode::comparable(&mut lit, v, col);
            let op = if j == i {
                if i + 1 == t.key.len() {
                    op_last
                } else {
                    op_prefix
                }
            } else {
                "="
            };
            ands.push(format!("{} {op} {lit}", quote::ident(&col.name)));
        }
        ors.push(format!("({})", ands.join(" AND ")));
    }
    format!("({})", ors.join(" OR "))
}

pub fn after(t: &Table, lo: &[Value]) -> String {
    compare(t, lo, ">", ">")
}

pub fn at_or_before(t: &Table, hi: &[Value]) -> String {
    compare(t, hi, "<=", "<")
}

fn order_by(t: &Table) -> String {
    t.key
        .iter()
        .map(|&i| quote::ident(&t.columns[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

fn force_index(t: &Table) -> String {
    match &t.key_name {
        Some(k) => format!(
            " FORCE INDEX ({})",
            if k == "PRIMARY" {
                "PRIMARY".to_string()
            } else {
                quote::ident(k)
            }
        ),
        None => String::new(),
    }
}

/// Read up to `limit` rows after `lo`, in key order.
pub fn read_chunk(t: &Table, lo: Option<&[Value]>, limit: u64) -> String {
    let mut sql = format!(
        "SELECT {} FROM {}{}",
        select_list(t),
        t.quoted(),
        force_index(t)
    );
    if let Some(lo) = lo {
        sql.push_str(" WHERE ");
        sql.push_str(&after(t, lo));
    }
    let limit = if copies_rows(t) { limit } else { 0 };
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", order_by(t)));
    sql
}

/// A MERGE or FEDERATED table's rows are not its own to copy (`Storage`): its reads read none.
fn copies_rows(t: &Table) -> bool {
    t.storage() == super::Storage::Here
}

/// Every row of a table without a key, in one streamed read.
pub fn read_all(t: &Table) -> String {
    format!(
        "SELECT {} FROM {}{}",
        select_list(t),
        t.quoted(),
        if copies_rows(t) { "" } else { " LIMIT 0" }
    )
}

/// Delete what the target holds in (lo, hi]. For a table whose rows are not its own
/// (`copies_rows`) a statement that touches nothing: a FEDERATED table would delete them on
/// its remote server.
pub fn delete_range(t: &Table, lo: Option<&[Value]>, hi: Option<&[Value]>) -> String {
    if !copies_rows(t) {
        return "DO 0".into();
    }
    let mut conds = Vec::new();
    if let Some(lo) = lo {
        conds.push(after(t, lo));
    }
    if let Some(hi) = hi {
        conds.push(at_or_before(t, hi));
    }
    let mut sql = format!("DELETE FROM {}", t.quoted());
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql
}

/// `REPLACE INTO t (writable cols) VALUES` prefix.
pub fn replace_prefix(t: &Table) -> String {
    write_prefix(t, "REPLACE")
}

/// `INSERT INTO t (writable cols) VALUES` prefix (the snapshot's fast path: its chunk range
/// was just emptied, so only a stale row under another unique key can collide).
pub fn insert_prefix(t: &Table) -> String {
    write_prefix(t, "INSERT")
}

fn write_prefix(t: &Table, verb: &str) -> String {
    let cols: Vec<String> = t.writable().map(|(_, c)| quote::ident(&c.name)).collect();
    format!("{verb} INTO {} ({}) VALUES ", t.quoted(), cols.join(", "))
}

/// Append `(v1, v2, ...)` for the writable columns of `row`.
pub fn push_row(sql: &mut String, t: &Table, row: &[Value]) {
    sql.push('(');
    let mut first = true;
    for (i, c) in t.writable() {
        if !first {
            sql.push_str(", ");
        }
        first = false;
        encode::literal(sql, &row[i], c);
    }
    sql.push(')');
}

/// A condition true for exactly the rows equal to `row` in every written column, NULL-safe
/// and byte-exact (a case-insensitive collation must not match 'a' to 'A'): how changes to a
/// table without a usable key find their row.
pub fn row_match(t: &Table, row: &[Value]) -> String {
    let mut conds = Vec::new();
    for (i, c) in t.writable() {
        let q = quote::ident(&c.name);
        let mut lit = String::new();
        let cond = match (&c.kind, &row[i]) {
            (_, Value::Null) => format!("{q} IS NULL"),
            (Kind::Text | Kind::Geometry, Value::Text(b) | Value::Bytes(b)) => {
                encode::literal(&mut lit, &Value::Bytes(b.clone()), &binary_column());
                format!("CAST({q} AS BINARY) = {lit}")
            }
            (Kind::Inet4 | Kind::Inet6 | Kind::Uuid, v) => {
                encode::literal(&mut lit, v, c);
                let n = c.kind.native_binary_width().unwrap_or(16);
                format!("CAST({q} AS BINARY({n})) = {lit}")
            }
            (_, v) => {
                encode::comparable(&mut lit, v, c);
                format!("{q} = {lit}")
            }
        };
        conds.push(cond);
    }
    if conds.is_empty() {
        "1".into()
    } else {
        conds.join(" AND ")
    }
}

fn binary_column() -> crate::schema::Column {
    crate::schema::Column {
        name: String::new(),
        kind: Kind::Binary { pad: None },
        charset: None,
        nullable: true,
        generated: false,
        auto_increment: false,
        fsp: 0,
        column_type: String::new(),
        octet_length: None,
    }
}

/// `SET col = value, ...` over the written columns of `row`.
pub fn set_list(t: &Table, row: &[Value]) -> String {
    t.writable()
        .map(|(i, c)| {
            let mut s = format!("{} = ", quote::ident(&c.name));
            encode::literal(&mut s, &row[i], c);
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Key values of a row.
pub fn key_of(t: &Table, row: &[Value]) -> Vec<Value> {
    t.key.iter().map(|&i| row[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let int = Kind::Int {
            unsigned: false,
            bytes: 4,
        };
        Table::for_test(
            "shop",
            "order items",
            &[
                ("order_id", int.clone()),
                ("line", int),
                ("이름", Kind::Text),
                ("f", Kind::Float),
            ],
            &[0, 1],
        )
    }

    #[test]
    fn chunk_sql() {
        let t = table();
        assert_eq!(
            read_chunk(&t, None, 10),
            "SELECT `order_id`, `line`, `이름`, CAST(`f` AS DOUBLE) FROM `shop`.`order items` FORCE INDEX (PRIMARY) ORDER BY `order_id`, `line` LIMIT 10"
        );
        let lo = [Value::Int(5), Value::Int(2)];
        assert_eq!(
            after(&t, &lo),
            "((`order_id` > 5) OR (`order_id` = 5 AND `line` > 2))"
        );
        let hi = [Value::Int(9), Value::Int(1)];
        assert_eq!(
            delete_range(&t, Some(&lo), Some(&hi)),
            "DELETE FROM `shop`.`order items` WHERE ((`order_id` > 5) OR (`order_id` = 5 AND `line` > 2)) AND ((`order_id` < 9) OR (`order_id` = 9 AND `line` <= 1))"
        );
        let mut s = replace_prefix(&t);
        push_row(
            &mut s,
            &t,
            &[
                Value::Int(1),
                Value::Int(2),
                Value::Text("가".as_bytes().to_vec()),
                Value::Null,
            ],
        );
        assert_eq!(s, "REPLACE INTO `shop`.`order items` (`order_id`, `line`, `이름`, `f`) VALUES (1, 2, _utf8mb4 X'EAB080', NULL)");
        assert_eq!(
            row_match(
                &t,
                &[
                    Value::Int(1),
                    Value::Null,
                    Value::Text(b"a".to_vec()),
                    Value::Float(0.5)
                ]
            ),
            "`order_id` = 1 AND `line` IS NULL AND CAST(`이름` AS BINARY) = X'61' AND `f` = CAST(5e-1 AS FLOAT)"
        );
        let lo = [Value::Int(1), Value::Int(2)];
        let ft = Table::for_test("s", "f", &[("f", Kind::Float)], &[0]);
        assert_eq!(
            after(&ft, &[Value::Float(1.1)]),
            "((`f` > CAST(1.1e0 AS FLOAT)))"
        );
        let _ = lo;
    }
}
