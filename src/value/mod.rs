//! The one row-value representation shared by snapshot (text-protocol rows), binlog apply
//! (row events) and verify. A value knows nothing about its column; the column's `Kind`
//! (from `schema`) says how to decode it and how to write it back.
//!
//! Canonical forms, chosen so both sources produce the same value for the same cell:
//! - integers, BIT, YEAR, ENUM (index) and SET (bitmask): `Int`/`UInt`
//! - DECIMAL: exact text as the server prints it
//! - FLOAT/DOUBLE: the IEEE value itself
//! - strings in a character set: `Text` holding the bytes in that charset (never re-encoded)
//! - binary strings, BLOB, GEOMETRY (SRID + WKB), INET6/UUID (16 bytes): `Bytes`
//! - DATE, DATETIME, TIMESTAMP (UTC), TIME: `Temporal` text `YYYY-MM-DD[ HH:MM:SS[.ffffff]]`,
//!   `[-]HHH:MM:SS[.ffffff]`

pub mod decode;
pub mod encode;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f32),
    Double(f64),
    Decimal(String),
    Text(Vec<u8>),
    Bytes(Vec<u8>),
    Temporal(String),
}

impl Value {
    /// Approximate size in bytes, for progress and memory accounting.
    pub fn size(&self) -> usize {
        match self {
            Value::Null => 1,
            Value::Int(_) | Value::UInt(_) | Value::Double(_) => 8,
            Value::Float(_) => 4,
            Value::Decimal(s) | Value::Temporal(s) => s.len(),
            Value::Text(b) | Value::Bytes(b) => b.len(),
        }
    }
}
