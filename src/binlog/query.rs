//! The session context a QUERY event carries in its status variables (MariaDB's
//! `Query_log_event`): the source session's sql_mode, character sets, time zone, timestamp,
//! auto-increment settings, locale and option flags. A DDL statement replayed without them
//! computes different values (defaults filled in another time zone, literals read in another
//! character set, views parsed under another sql_mode), so the applier sets every one of them
//! for each statement, exactly as MariaDB's own replica does.

use crate::error::{Error, Result};

/// Flags2 bits (MariaDB `OPTION_*`, the ones written to the binlog).
pub const OPTION_AUTO_IS_NULL: u32 = 1 << 14;
pub const OPTION_NO_CHECK_CONSTRAINT_CHECKS: u32 = 1 << 15;
pub const OPTION_EXPLICIT_DEF_TIMESTAMP: u32 = 1 << 24;
pub const OPTION_NO_FOREIGN_KEY_CHECKS: u32 = 1 << 26;
pub const OPTION_RELAXED_UNIQUE_CHECKS: u32 = 1 << 27;
pub const OPTION_IF_EXISTS: u32 = 1 << 28;
pub const OPTION_INSERT_HISTORY: u32 = 1 << 30;

/// Q_GTID_FLAGS3 bits for `binlog_alter_two_phase` (START/COMMIT/ROLLBACK ALTER).
pub const FL_START_ALTER: u8 = 2;
pub const FL_COMMIT_ALTER: u8 = 4;
pub const FL_ROLLBACK_ALTER: u8 = 8;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryContext {
    /// Binlog header time (seconds) and, with Q_HRNOW, its microseconds.
    pub when: u32,
    pub when_usec: Option<u32>,
    pub flags2: Option<u32>,
    pub sql_mode: Option<u64>,
    pub auto_increment: Option<(u16, u16)>,
    /// character_set_client, collation_connection, collation_server (collation ids).
    pub charset: Option<(u16, u16, u16)>,
    pub time_zone: Option<String>,
    pub lc_time_names: Option<u16>,
    pub charset_database: Option<u16>,
    pub gtid_flags3: Option<u8>,
}

impl QueryContext {
    /// The client character set's collation id (33 = utf8mb3_general_ci when absent).
    pub fn client_collation(&self) -> u16 {
        self.charset.map_or(33, |c| c.0)
    }
}

fn take<'a>(b: &'a [u8], i: &mut usize, n: usize) -> Result<&'a [u8]> {
    let end = *i + n;
    let s = b.get(*i..end).ok_or_else(|| {
        Error::definite(
            "binlog: truncated status variables in a QUERY event",
            "report this with the source version",
        )
    })?;
    *i = end;
    Ok(s)
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64)
}

/// Parse the status-variable block of a QUERY event (`status_vars_raw`). Unknown codes end
/// the parse, like the server does (codes are written in increasing order).
pub fn parse(raw: &[u8], when: u32) -> Result<QueryContext> {
    let mut c = QueryContext {
        when,
        ..Default::default()
    };
    let mut i = 0;
    while i < raw.len() {
        let code = raw[i];
        i += 1;
        match code {
            0 => c.flags2 = Some(le(take(raw, &mut i, 4)?) as u32),
            1 => c.sql_mode = Some(le(take(raw, &mut i, 8)?)),
            2 => {
                // Q_CATALOG_CODE (5.0.0-5.0.3): len, name, trailing zero
                let n = take(raw, &mut i, 1)?[0] as usize;
                take(raw, &mut i, n + 1)?;
            }
            3 => {
                let b = take(raw, &mut i, 4)?;
                c.auto_increment = Some((le(&b[0..2]) as u16, le(&b[2..4]) as u16));
            }
            4 => {
                let b = take(raw, &mut i, 6)?;
                c.charset = Some((
                    le(&b[0..2]) as u16,
                    le(&b[2..4]) as u16,
                    le(&b[4..6]) as u16,
                ));
            }
            5 => {
                let n = take(raw, &mut i, 1)?[0] as usize;
                let tz = take(raw, &mut i, n)?;
                c.time_zone = Some(String::from_utf8_lossy(tz).into_owned());
            }
            6 => {
                let n = take(raw, &mut i, 1)?[0] as usize;
                take(raw, &mut i, n)?;
            }
            7 => c.lc_time_names = Some(le(take(raw, &mut i, 2)?) as u16),
            8 => c.charset_database = Some(le(take(raw, &mut i, 2)?) as u16),
            9 => {
                take(raw, &mut i, 8)?;
            }
            10 => {
                take(raw, &mut i, 4)?;
            }
            11 => {
                // Q_INVOKER: user, host
                let n = take(raw, &mut i, 1)?[0] as usize;
                take(raw, &mut i, n)?;
                let n = take(raw, &mut i, 1)?[0] as usize;
                take(raw, &mut i, n)?;
            }
            12 => {
                // Q_UPDATED_DB_NAMES (MySQL): count, NUL-terminated names
                let n = take(raw, &mut i, 1)?[0] as usize;
                if n < 254 {
                    for _ in 0..n {
                        while take(raw, &mut i, 1)?[0] != 0 {}
                    }
                }
            }
            13 | 128 => c.when_usec = Some(le(take(raw, &mut i, 3)?) as u32),
            129 => {
                take(raw, &mut i, 8)?;
            }
            130 => {
                let f = take(raw, &mut i, 1)?[0];
                c.gtid_flags3 = Some(f);
                if f & (FL_COMMIT_ALTER | FL_ROLLBACK_ALTER) != 0 {
                    take(raw, &mut i, 8)?;
                }
            }
            _ => break,
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_mariadb_status_vars() {
        // flags2, sql_mode, catalog "std", auto_increment 3/1, charset 33/33/19, tz "+09:00",
        // lc_time_names 31, xid, hrnow 123456
        let mut raw = vec![0];
        raw.extend((1u32 << 24 | 1 << 26).to_le_bytes());
        raw.push(1);
        raw.extend(2u64.to_le_bytes());
        raw.extend([6, 3, b's', b't', b'd']);
        raw.extend([3, 3, 0, 1, 0]);
        raw.extend([4, 33, 0, 33, 0, 19, 0]);
        raw.extend([5, 6]);
        raw.extend(b"+09:00");
        raw.extend([7, 31, 0]);
        raw.push(129);
        raw.extend(7u64.to_le_bytes());
        raw.extend([128, 0x40, 0xe2, 0x01]);
        let c = parse(&raw, 1700000000).unwrap();
        assert_eq!(c.flags2, Some(1 << 24 | 1 << 26));
        assert_eq!(c.sql_mode, Some(2));
        assert_eq!(c.auto_increment, Some((3, 1)));
        assert_eq!(c.charset, Some((33, 33, 19)));
        assert_eq!(c.time_zone.as_deref(), Some("+09:00"));
        assert_eq!(c.lc_time_names, Some(31));
        assert_eq!(c.when_usec, Some(123456));
        assert!(parse(&[0, 1, 2], 0).is_err());
    }
}
