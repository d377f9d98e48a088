//! MariaDB GTID positions: a list of `domain-server-seq`, at most one per domain; binlog file
//! positions; and the horizons of copied tables (`horizon`).

pub mod horizon;

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

impl Gtid {
    pub fn parse(s: &str) -> Result<Gtid> {
        let bad = || {
            Error::usage(
                format!("'{s}' is not a MariaDB GTID"),
                "write it as domain-server-seq, e.g. 0-1-42",
            )
        };
        let mut it = s.trim().split('-');
        let (d, sv, sq) = (
            it.next().ok_or_else(bad)?,
            it.next().ok_or_else(bad)?,
            it.next().ok_or_else(bad)?,
        );
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(Gtid {
            domain: d.parse().map_err(|_| bad())?,
            server: sv.parse().map_err(|_| bad())?,
            seq: sq.parse().map_err(|_| bad())?,
        })
    }
}

/// A GTID position (what `@@gtid_binlog_pos` or `@slave_connect_state` hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Position {
    by_domain: BTreeMap<u32, Gtid>,
}

impl Position {
    pub fn parse(s: &str) -> Result<Position> {
        let mut p = Position::default();
        for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
            p.advance(Gtid::parse(part)?);
        }
        Ok(p)
    }
    /// Record that `g` is applied (replaces its domain's entry).
    pub fn advance(&mut self, g: Gtid) {
        self.by_domain.insert(g.domain, g);
    }
    /// True if every transaction of `other` is contained in `self` (per-domain seq_no).
    pub fn contains(&self, other: &Position) -> bool {
        other.by_domain.values().all(|g| {
            self.by_domain
                .get(&g.domain)
                .is_some_and(|m| m.seq >= g.seq)
        })
    }
    /// True if `g` is at or before this position.
    pub fn includes(&self, g: &Gtid) -> bool {
        self.by_domain
            .get(&g.domain)
            .is_some_and(|m| m.seq >= g.seq)
    }
    pub fn gtids(&self) -> impl Iterator<Item = &Gtid> {
        self.by_domain.values()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.by_domain.values().map(|g| g.to_string()).collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Where an applied position ends in one server's binlog, when the position has a single
/// domain: its one GTID's event is at `file:gtid_at`, the transaction's last event (XID, COMMIT,
/// ROLLBACK or the DDL itself) at `file:last_at`, and the transaction ends at `file:end`.
/// A reconnect to that server starts its dump at `end` after checking that the GTID is still
/// there, instead of sending the GTID and making the server read the binlog file from its start
/// to find it (up to `max_binlog_size`, 1 GiB by default, on every reconnect).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BinlogPlace {
    /// The applied position (one GTID).
    pub position: String,
    /// `@@server_id` of the server whose binlog this is.
    pub server_id: String,
    pub file: String,
    pub gtid_at: u64,
    pub last_at: u64,
    pub end: u64,
}

impl BinlogPlace {
    /// The offsets are in file order past the file header; out of order they are not offsets
    /// of one transaction (the event header's 32-bit position wrapped in a file past 4 GiB).
    pub fn ordered(&self) -> bool {
        4 <= self.gtid_at && self.gtid_at < self.last_at && self.last_at < self.end
    }
}

/// A binlog file position, comparable across files by the file's numeric suffix.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FilePos {
    pub file_number: u64,
    pub offset: u64,
    pub file: String,
}

impl FilePos {
    pub fn new(file: &str, offset: u64) -> FilePos {
        let file_number = file
            .rsplit('.')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        FilePos {
            file_number,
            offset,
            file: file.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parse_compare() {
        let a = Position::parse("0-1-10,1-2-5").unwrap();
        let b = Position::parse("0-1-9").unwrap();
        assert!(a.contains(&b));
        assert!(!b.contains(&a));
        assert_eq!(a.to_string(), "0-1-10,1-2-5");
        assert!(Position::parse("x-1").is_err());
        assert!(FilePos::new("mysql-bin.000010", 4) > FilePos::new("mysql-bin.000009", 900));
    }
}
