//! Bytes from the server -> Value, driven by the column's Kind.
//! Text-protocol rows (snapshot, verify) come through `from_text`; binlog row images through
//! `from_binlog`. Both give the canonical forms described in `value/mod.rs`.

use super::Value;
use crate::error::{Error, Result};
use crate::schema::{Column, Kind};

fn bad(col: &Column, raw: &[u8]) -> Error {
    Error::definite(
        format!(
            "column `{}`: cannot read value {:?}",
            col.name,
            String::from_utf8_lossy(raw)
        ),
        "report this as a bug with the column type",
    )
}

fn parse<T: std::str::FromStr>(col: &Column, raw: &[u8]) -> Result<T> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(col, raw))
}

fn text(col: &Column, raw: Vec<u8>) -> Result<String> {
    String::from_utf8(raw).map_err(|e| bad(col, e.as_bytes()))
}

/// A text-protocol cell, as selected by `snapshot::plan::select_list` (FLOAT as DOUBLE,
/// BIT/ENUM/SET as numbers, INET6/UUID as BINARY(16)).
pub fn from_text(col: &Column, raw: Option<Vec<u8>>) -> Result<Value> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    Ok(match &col.kind {
        Kind::Int {
            unsigned: false, ..
        } => Value::Int(parse(col, &raw)?),
        Kind::Int { unsigned: true, .. } | Kind::Bit | Kind::Year | Kind::Enum | Kind::Set => {
            Value::UInt(parse(col, &raw)?)
        }
        Kind::Decimal => Value::Decimal(text(col, raw)?),
        Kind::Float => Value::Float(parse::<f64>(col, &raw)? as f32),
        Kind::Double => Value::Double(parse(col, &raw)?),
        Kind::Date | Kind::Time | Kind::DateTime | Kind::Timestamp => {
            Value::Temporal(text(col, raw)?)
        }
        Kind::Text => Value::Text(raw),
        Kind::Binary { .. } | Kind::Geometry | Kind::Inet6 | Kind::Uuid => Value::Bytes(raw),
    })
}

/// A whole text-protocol row (as selected by `select_list`), column by column.
pub fn text_row(columns: &[Column], raw: Vec<mysql_async::Value>) -> Result<Vec<Value>> {
    let mut row = Vec::with_capacity(raw.len());
    for (v, col) in raw.into_iter().zip(columns) {
        let cell = match v {
            mysql_async::Value::NULL => None,
            mysql_async::Value::Bytes(b) => Some(b),
            other => Some(other.as_sql(true).into_bytes()),
        };
        row.push(from_text(col, cell)?);
    }
    Ok(row)
}

/// A binlog cell as mysql_common decodes it, with the fix-ups of notes/mariadb-binlog.md.
pub fn from_binlog(col: &Column, v: mysql_async::Value) -> Result<Value> {
    use mysql_async::Value as M;
    Ok(match (&col.kind, v) {
        (_, M::NULL) => Value::Null,
        (Kind::Int { unsigned, bytes }, M::Int(i)) => int_fixup(*unsigned, *bytes, i as u64),
        (Kind::Int { unsigned, bytes }, M::UInt(u)) => int_fixup(*unsigned, *bytes, u),
        // YEAR 0000 arrives as 1900 (1901..2155 are the real years)
        (Kind::Year, M::Int(y)) => Value::UInt(if y == 1900 { 0 } else { y as u64 }),
        (Kind::Year, M::UInt(y)) => Value::UInt(if y == 1900 { 0 } else { y }),
        (Kind::Year, M::Bytes(b)) => {
            let y: u64 = parse(col, &b)?;
            Value::UInt(if y == 1900 { 0 } else { y })
        }
        (Kind::Enum | Kind::Set | Kind::Bit, M::Int(i)) => Value::UInt(i as u64),
        (Kind::Enum | Kind::Set | Kind::Bit, M::UInt(u)) => Value::UInt(u),
        // ENUM index and SET bitmask: little-endian bytes
        (Kind::Enum | Kind::Set, M::Bytes(b)) => {
            Value::UInt(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
        }
        // BIT: big-endian bytes
        (Kind::Bit, M::Bytes(b)) => {
            Value::UInt(b.iter().fold(0u64, |acc, &x| (acc << 8) | x as u64))
        }
        (Kind::Decimal, M::Bytes(b)) => Value::Decimal(text(col, b)?),
        (Kind::Float, M::Float(f)) => Value::Float(f),
        (Kind::Float, M::Double(d)) => Value::Float(d as f32),
        (Kind::Double, M::Double(d)) => Value::Double(d),
        (Kind::Double, M::Float(f)) => Value::Double(f as f64),
        (Kind::Date, M::Date(y, m, d, ..)) => Value::Temporal(format!("{y:04}-{m:02}-{d:02}")),
        (Kind::DateTime, M::Date(y, m, d, h, mi, s, us)) => {
            Value::Temporal(datetime(y, m, d, h, mi, s, us))
        }
        (Kind::Time, M::Time(neg, days, h, m, s, us)) => {
            let hours = days * 24 + h as u32;
            let sign = if neg { "-" } else { "" };
            Value::Temporal(format!("{sign}{hours:02}:{m:02}:{s:02}.{us:06}"))
        }
        (Kind::Timestamp, M::Bytes(b)) => Value::Temporal(timestamp_utc(col, &b)?),
        (Kind::Timestamp, M::Date(y, m, d, h, mi, s, us)) => {
            Value::Temporal(datetime(y, m, d, h, mi, s, us))
        }
        (Kind::Text, M::Bytes(b)) => Value::Text(b),
        (Kind::Binary { pad }, M::Bytes(mut b)) => {
            if let Some(n) = pad {
                b.resize((*n).max(b.len()), 0);
            }
            Value::Bytes(b)
        }
        (Kind::Inet6 | Kind::Uuid, M::Bytes(mut b)) => {
            b.resize(16.max(b.len()), 0);
            Value::Bytes(b)
        }
        (Kind::Geometry, M::Bytes(b)) => Value::Bytes(b),
        (k, other) => {
            return Err(Error::definite(
                format!(
                    "column `{}` ({k:?}): unexpected binlog value {other:?}",
                    col.name
                ),
                "report this as a bug with the column type",
            ))
        }
    })
}

fn int_fixup(unsigned: bool, bytes: u8, raw: u64) -> Value {
    let bits = bytes as u32 * 8;
    let mask = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let v = raw & mask;
    if unsigned {
        Value::UInt(v)
    } else if bits == 64 {
        Value::Int(v as i64)
    } else {
        // sign-extend from `bits`
        let shift = 64 - bits;
        Value::Int(((v << shift) as i64) >> shift)
    }
}

fn datetime(y: u16, m: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> String {
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
}

/// TIMESTAMP in a binlog row: `epoch[.frac]` text; "0" is the zero timestamp.
fn timestamp_utc(col: &Column, raw: &[u8]) -> Result<String> {
    let s = std::str::from_utf8(raw).map_err(|_| bad(col, raw))?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = sec.parse().map_err(|_| bad(col, raw))?;
    if secs == 0 && frac.trim_matches('0').is_empty() {
        return Ok("0000-00-00 00:00:00".to_string());
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Ok(out)
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ints_sign_extend() {
        assert_eq!(int_fixup(false, 3, 8_388_608), Value::Int(-8_388_608));
        assert_eq!(int_fixup(true, 1, (-1i64) as u64), Value::UInt(255));
        assert_eq!(int_fixup(false, 8, u64::MAX), Value::Int(-1));
    }
    #[test]
    fn timestamps() {
        let c = Column {
            name: "t".into(),
            kind: Kind::Timestamp,
            charset: None,
            nullable: true,
            generated: false,
            auto_increment: false,
        };
        assert_eq!(timestamp_utc(&c, b"0").unwrap(), "0000-00-00 00:00:00");
        assert_eq!(
            timestamp_utc(&c, b"1577836800.500000").unwrap(),
            "2020-01-01 00:00:00.500000"
        );
        assert_eq!(
            timestamp_utc(&c, b"2147483647").unwrap(),
            "2038-01-19 03:14:07"
        );
    }
}
