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

/// A text-protocol cell, as selected by `schema::keyset::select_list` (FLOAT as DOUBLE,
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
        Kind::Binary { .. } | Kind::Geometry | Kind::Inet4 | Kind::Inet6 | Kind::Uuid => {
            Value::Bytes(raw)
        }
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

/// A TIMESTAMP's seconds since the epoch (and microseconds, with `fsp` digits) as UTC text;
/// 0 is the zero timestamp.
pub fn utc_text(secs: i64, usec: u32, fsp: u8) -> String {
    let frac = if fsp == 0 {
        String::new()
    } else {
        format!(".{}", &format!("{usec:06}")[..fsp.min(6) as usize])
    };
    if secs == 0 && usec == 0 {
        return format!("0000-00-00 00:00:00{frac}");
    }
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{frac}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
    fn timestamps() {
        assert_eq!(utc_text(0, 0, 0), "0000-00-00 00:00:00");
        assert_eq!(utc_text(0, 0, 3), "0000-00-00 00:00:00.000");
        assert_eq!(
            utc_text(1577836800, 500000, 6),
            "2020-01-01 00:00:00.500000"
        );
        assert_eq!(utc_text(2147483647, 0, 0), "2038-01-19 03:14:07");
    }
}
