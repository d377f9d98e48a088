//! The SQL both servers run to digest rows, pure and unit-tested. Each column is encoded
//! canonically (independent of the connection's charset, time zone — both sessions use UTC —
//! and sql_mode): strings and binary values by their stored bytes prefixed with their length,
//! numbers by their exact text (FLOAT widened to DOUBLE, which prints its exact value), BIT as
//! a number, temporal values as text with their fractional digits; a NULL is `N`, so NULL and
//! '' differ and no two rows share an encoding (`column_parts`). A row's
//! hash is 64 bits: CRC32 and CRC32C of the encoding side by side. A chunk's digest is its row
//! count and the XOR of its row hashes, and for a keyless table also their SUM (which keeps
//! duplicate rows from cancelling out).

use crate::db::quote;
use crate::schema::{Column, Kind, Table};
use crate::value::{encode, Value};

/// A column's exact text (NULL when the value is).
fn column_text(c: &Column) -> String {
    let q = quote::ident(&c.name);
    match c.kind {
        Kind::Float => format!("CAST({q} AS DOUBLE)"),
        Kind::Bit => format!("({q} + 0)"),
        Kind::Int { .. } | Kind::Decimal | Kind::Double | Kind::Year => q,
        Kind::Date | Kind::Time | Kind::DateTime | Kind::Timestamp => q,
        // the stored bytes, prefixed by their length (no separator can be ambiguous)
        Kind::Text
        | Kind::Binary { .. }
        | Kind::Enum
        | Kind::Set
        | Kind::Geometry
        | Kind::Inet4
        | Kind::Inet6
        | Kind::Uuid => format!("CONCAT(LENGTH({q}), ':', CAST({q} AS BINARY))"),
    }
}

fn is_byte_string(c: &Column) -> bool {
    !matches!(
        c.kind,
        Kind::Float
            | Kind::Bit
            | Kind::Int { .. }
            | Kind::Decimal
            | Kind::Double
            | Kind::Year
            | Kind::Date
            | Kind::Time
            | Kind::DateTime
            | Kind::Timestamp
    )
}

/// The canonical text of one column, never NULL (`N` for NULL, `=` before a value): used to
/// name the columns of a differing row.
pub fn column_encoding(c: &Column) -> String {
    format!("IFNULL(CONCAT('=', {}), 'N')", column_text(c))
}

/// The parts of one column in the row's flat encoding. A number or temporal value is its text
/// and a comma (its text never holds a comma or an `N`); a byte string is `length:bytes`
/// (its length says where it ends); a NULL (only in a column the source declares nullable) is
/// `N`, which neither can start with. Reading the encoding left to right with the source's
/// column list gives back every value: no two rows share one. A flat CONCAT costs a third of
/// nesting a NULL-safe CONCAT per column (measured: docs/design.md, verify).
fn column_parts(c: &Column) -> String {
    let q = quote::ident(&c.name);
    match (is_byte_string(c), c.nullable) {
        (true, true) => format!("IFNULL({}, 'N')", column_text(c)),
        (true, false) => format!("LENGTH({q}), ':', CAST({q} AS BINARY)"),
        (false, true) => format!("IFNULL({}, 'N'), ','", column_text(c)),
        (false, false) => format!("{}, ','", column_text(c)),
    }
}

/// The whole row's canonical text. It is NULL only where the target holds NULL in a column the
/// source declares NOT NULL: the row's hash is then NULL, which the chunk's XOR and SUM leave
/// out, so the chunk differs (the schema comparison names the column's nullability).
pub fn row_encoding(t: &Table) -> String {
    let cols: Vec<String> = t.columns.iter().map(column_parts).collect();
    format!("CONCAT({})", cols.join(", "))
}

/// A row's 64-bit hash.
pub fn row_hash(t: &Table) -> String {
    let x = row_encoding(t);
    format!("(CRC32({x}) | (CRC32C({x}) << 32))")
}

/// `(lo, hi]` in key order; None is open.
pub fn range(t: &Table, lo: Option<&[Value]>, hi: Option<&[Value]>) -> String {
    let mut conds = Vec::new();
    if let Some(lo) = lo {
        conds.push(crate::schema::keyset::after(t, lo));
    }
    if let Some(hi) = hi {
        conds.push(crate::schema::keyset::at_or_before(t, hi));
    }
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// Count and XOR of the row hashes in a range; for a table without a key also their SUM (two
/// equal rows would cancel out of the XOR). The server evaluates the hash once per use of `h`
/// (the derived table is merged), so a keyed table, whose rows are distinct, skips the SUM.
pub fn chunk_digest(t: &Table, lo: Option<&[Value]>, hi: Option<&[Value]>) -> String {
    format!(
        "SELECT COUNT(*), COALESCE(BIT_XOR(h), 0){} FROM (SELECT {} AS h FROM {}{}) d",
        if t.has_key() {
            ""
        } else {
            ", COALESCE(SUM(h), 0)"
        },
        row_hash(t),
        t.quoted(),
        range(t, lo, hi)
    )
}

/// The key columns, selected as `schema::keyset::select_list` selects them (for decoding).
pub fn key_select(t: &Table) -> String {
    t.key
        .iter()
        .map(|&i| crate::schema::keyset::column_select(&t.columns[i]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn order_by(t: &Table) -> String {
    t.key
        .iter()
        .map(|&i| quote::ident(&t.columns[i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key `n` rows after `lo` (the upper bound of a chunk of `n` rows) in key order, within
/// `(lo, hi]`.
pub fn boundary(t: &Table, lo: Option<&[Value]>, hi: Option<&[Value]>, n: u64) -> String {
    format!(
        "SELECT {} FROM {}{} ORDER BY {} LIMIT 1 OFFSET {}",
        key_select(t),
        t.quoted(),
        range(t, lo, hi),
        order_by(t),
        n.saturating_sub(1)
    )
}

/// Every row's key and each column's canonical encoding in a range, in key order (narrowing a
/// small differing range: the rows are hashed and compared on the bastion).
pub fn row_images(t: &Table, lo: Option<&[Value]>, hi: Option<&[Value]>) -> String {
    row_images_where(t, &range(t, lo, hi))
}

/// Each row's key and column encodings where `filter` (` WHERE ...` or empty) holds, in key
/// order.
pub fn row_images_where(t: &Table, filter: &str) -> String {
    let cols: Vec<String> = t.columns.iter().map(column_encoding).collect();
    format!(
        "SELECT {}, {} FROM {}{filter} ORDER BY {}",
        key_select(t),
        cols.join(", "),
        t.quoted(),
        order_by(t)
    )
}

/// `k1 = v1 AND k2 = v2` for one key.
pub fn key_equals(t: &Table, key: &[Value]) -> String {
    t.key
        .iter()
        .zip(key)
        .map(|(&i, v)| {
            let c = &t.columns[i];
            let mut lit = String::new();
            encode::comparable(&mut lit, v, c);
            format!("{} = {lit}", quote::ident(&c.name))
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The whole row, as the snapshot reads it (for repair).
pub fn read_row(t: &Table, key: &[Value]) -> String {
    format!(
        "SELECT {} FROM {} WHERE {}",
        crate::schema::keyset::select_list(t),
        t.quoted(),
        key_equals(t, key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, kind: Kind) -> Column {
        Column {
            name: name.into(),
            kind,
            charset: None,
            nullable: true,
            generated: false,
            auto_increment: false,
            fsp: 0,
            column_type: String::new(),
            octet_length: None,
        }
    }

    #[test]
    fn row_encoding_is_flat_and_null_aware() {
        let mut t = Table::for_test(
            "d",
            "t",
            &[
                ("id", Kind::Decimal),
                ("s", Kind::Text),
                ("n", Kind::Text),
                ("f", Kind::Float),
            ],
            &[0],
        );
        t.columns[2].nullable = true;
        t.columns[3].nullable = true;
        assert_eq!(
            row_encoding(&t),
            "CONCAT(`id`, ',', LENGTH(`s`), ':', CAST(`s` AS BINARY), \
             IFNULL(CONCAT(LENGTH(`n`), ':', CAST(`n` AS BINARY)), 'N'), \
             IFNULL(CAST(`f` AS DOUBLE), 'N'), ',')"
        );
    }

    #[test]
    fn encodings_are_exact_and_null_safe() {
        assert_eq!(
            column_encoding(&col("f", Kind::Float)),
            "IFNULL(CONCAT('=', CAST(`f` AS DOUBLE)), 'N')"
        );
        assert_eq!(
            column_encoding(&col("s", Kind::Text)),
            "IFNULL(CONCAT('=', CONCAT(LENGTH(`s`), ':', CAST(`s` AS BINARY))), 'N')"
        );
        assert_eq!(
            column_encoding(&col("b", Kind::Bit)),
            "IFNULL(CONCAT('=', (`b` + 0)), 'N')"
        );
        assert_eq!(
            column_encoding(&col("주 `x", Kind::Decimal)),
            "IFNULL(CONCAT('=', `주 ``x`), 'N')"
        );
    }
}
