//! Value -> SQL literal for the target. Strings are sent as bytes tagged with their column's
//! charset (`_euckr X'..'`), so nothing passes through a UTF-8 conversion; plain ASCII is
//! sent as a quoted literal to halve the bytes on the wire.

use super::Value;
use crate::schema::{Column, Kind};
use std::fmt::Write;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Append `X'..'`, the hex literal of `bytes`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2 + 3);
    out.push_str("X'");
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out.push('\'');
}

fn plain_ascii(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'\'' && b != b'\\')
}

/// Append the literal for `v` in column `col` to `out`.
pub fn literal(out: &mut String, v: &Value, col: &Column) {
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        // `{:e}` prints the shortest text that reads back as the same f32 / f64.
        Value::Float(f) => {
            let _ = write!(out, "{f:e}");
        }
        Value::Double(d) => {
            let _ = write!(out, "{d:e}");
        }
        Value::Decimal(s) => {
            if s.bytes()
                .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
                && !s.is_empty()
            {
                out.push_str(s)
            } else {
                // never reached with server-produced decimals; quoted so it cannot inject
                out.push_str(&crate::db::quote::string(s))
            }
        }
        Value::Temporal(s) => {
            out.push('\'');
            out.push_str(s);
            out.push('\'');
        }
        Value::Text(b) => {
            let cs = col.charset.as_deref().unwrap_or("binary");
            // charset names come from information_schema and are [a-z0-9_]
            out.push('_');
            out.push_str(cs);
            if plain_ascii(b) {
                // plain_ascii excludes quote and backslash: the literal cannot be escaped from
                out.reserve(b.len() + 2);
                out.push('\'');
                out.extend(b.iter().map(|&c| c as char));
                out.push('\'');
            } else {
                out.push(' ');
                push_hex(out, b);
            }
        }
        Value::Bytes(b) => match col.kind {
            Kind::Text => {
                // A text column fed raw bytes (binlog path without charset): tag with its charset.
                literal(out, &Value::Text(b.clone()), col)
            }
            _ => push_hex(out, b),
        },
    }
}

/// Append the literal for `v` in column `col` for use in a comparison (`WHERE col = ...`,
/// `IN (...)`, key ranges). A FLOAT column holds an f32, and `col = 1.1e0` compares it with a
/// double that no f32 equals: the literal is cast to FLOAT so that it is the stored value.
pub fn comparable(out: &mut String, v: &Value, col: &Column) {
    match v {
        Value::Float(_) => {
            out.push_str("CAST(");
            literal(out, v, col);
            out.push_str(" AS FLOAT)");
        }
        _ => literal(out, v, col),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn col(kind: Kind, cs: Option<&str>) -> Column {
        Column {
            name: "c".into(),
            kind,
            charset: cs.map(str::to_string),
            nullable: true,
            generated: false,
            auto_increment: false,
            fsp: 0,
            column_type: String::new(),
            octet_length: None,
        }
    }
    fn lit(v: Value, c: &Column) -> String {
        let mut s = String::new();
        literal(&mut s, &v, c);
        s
    }
    #[test]
    fn literals() {
        let t = col(Kind::Text, Some("euckr"));
        assert_eq!(lit(Value::Text(vec![0xc7, 0xd1]), &t), "_euckr X'C7D1'");
        assert_eq!(lit(Value::Text(b"abc".to_vec()), &t), "_euckr'abc'");
        assert_eq!(lit(Value::Text(b"a'b".to_vec()), &t), "_euckr X'612762'");
        let b = col(Kind::Binary { pad: None }, None);
        assert_eq!(lit(Value::Bytes(vec![0, 255]), &b), "X'00FF'");
        assert_eq!(lit(Value::Float(1.0000001), &b), "1.0000001e0");
        assert_eq!(lit(Value::Int(-5), &b), "-5");
        assert_eq!(lit(Value::Null, &b), "NULL");
        let f = col(Kind::Float, None);
        let mut s = String::new();
        comparable(&mut s, &Value::Float(1.1), &f);
        assert_eq!(s, "CAST(1.1e0 AS FLOAT)");
    }
}
