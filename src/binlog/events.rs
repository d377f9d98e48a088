//! MariaDB-specific events (mysql_common returns them as unknown) and classification of the
//! statements found in QUERY events.

use crate::error::{Error, Result};
use crate::position::Gtid;

pub const GTID_EVENT: u8 = 162;
pub const GTID_LIST_EVENT: u8 = 163;
pub const BINLOG_CHECKPOINT_EVENT: u8 = 161;
pub const ANNOTATE_ROWS_EVENT: u8 = 160;
pub const START_ENCRYPTION_EVENT: u8 = 164;

/// GTID event body: `u64 seq_no, u32 domain_id, u8 flags2, ...`; server id is in the header.
pub struct GtidEvent {
    pub gtid: Gtid,
    /// No BEGIN/COMMIT: the next QUERY event is the whole transaction (DDL).
    pub standalone: bool,
}

pub fn parse_gtid(body: &[u8], server_id: u32) -> Result<GtidEvent> {
    if body.len() < 13 {
        return Err(Error::definite(
            "binlog: truncated GTID event",
            "report this with the source version",
        ));
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().unwrap_or_default());
    let domain = u32::from_le_bytes(body[8..12].try_into().unwrap_or_default());
    let flags2 = body[12];
    Ok(GtidEvent {
        gtid: Gtid {
            domain,
            server: server_id,
            seq,
        },
        standalone: flags2 & 0x01 != 0,
    })
}

/// What a QUERY event's statement is, for the applier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    Begin,
    Commit,
    Rollback,
    /// DDL on an object in `db` (and `table`, for table-level statements).
    Ddl {
        db: String,
        table: Option<String>,
    },
    /// A trigger: never applied to the target before cutover.
    Trigger,
    /// Anything else (GRANT, FLUSH, temporary tables, ...): not replicated.
    Other,
}

/// Tokens of SQL: identifiers/words (backticks removed), with comments skipped.
fn tokens(sql: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < b.len() && out.len() < max {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            // `/*!40000 ... */` version comments hold real SQL: keep their inside
            if b.get(i + 2) == Some(&'!') {
                i += 3;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            } else {
                i += 2;
                while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                    i += 1;
                }
                i += 2;
            }
        } else if c == '*' && b.get(i + 1) == Some(&'/') {
            i += 2;
        } else if c == '-' && b.get(i + 1) == Some(&'-') || c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '`' {
            let mut s = String::new();
            i += 1;
            while i < b.len() {
                if b[i] == '`' {
                    if b.get(i + 1) == Some(&'`') {
                        s.push('`');
                        i += 2;
                        continue;
                    }
                    break;
                }
                s.push(b[i]);
                i += 1;
            }
            i += 1;
            out.push(format!("`{s}"));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '$') {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

fn word(t: &str) -> String {
    t.to_ascii_uppercase()
}

fn name(t: &str) -> String {
    t.strip_prefix('`').unwrap_or(t).to_string()
}

/// `[db .] name` starting at `i`; returns (db, name).
fn qualified(toks: &[String], i: usize, default_db: &str) -> Option<(String, String)> {
    let first = toks.get(i)?;
    if toks.get(i + 1).map(String::as_str) == Some(".") {
        Some((name(first), name(toks.get(i + 2)?)))
    } else {
        Some((default_db.to_string(), name(first)))
    }
}

/// Classify a QUERY event's statement. `default_db` is the event's schema.
pub fn classify(sql: &str, default_db: &str) -> Statement {
    let toks = tokens(sql, 40);
    let w: Vec<String> = toks.iter().map(|t| word(t)).collect();
    let Some(first) = w.first() else {
        return Statement::Other;
    };
    match first.as_str() {
        "BEGIN" => return Statement::Begin,
        "COMMIT" => return Statement::Commit,
        "ROLLBACK" => return Statement::Rollback,
        "XA" => return Statement::Other,
        "CREATE" | "ALTER" | "DROP" | "RENAME" | "TRUNCATE" => {}
        _ => return Statement::Other,
    }
    // Skip modifiers up to the object keyword.
    let mut i = 1;
    while i < w.len() {
        match w[i].as_str() {
            "OR" | "REPLACE" | "ONLINE" | "IGNORE" | "SQL" | "SECURITY" | "DEFINER" | "INVOKER"
            | "ALGORITHM" | "UNDEFINED" | "MERGE" | "TEMPTABLE" | "AGGREGATE" | "NONBLOCKING"
            | "=" | "@" | "(" | ")" | "'" => i += 1,
            // DEFINER=`user`@`host` and quoted parts
            s if s.starts_with('`') || s.starts_with('\'') => i += 1,
            "CURRENT_USER" => i += 1,
            _ => break,
        }
    }
    let Some(kind) = w.get(i).cloned() else {
        return Statement::Other;
    };
    i += 1;
    // IF [NOT] EXISTS
    if w.get(i).map(String::as_str) == Some("IF") {
        i += if w.get(i + 1).map(String::as_str) == Some("NOT") {
            3
        } else {
            2
        };
    }
    match kind.as_str() {
        "TEMPORARY" => Statement::Other,
        "TRIGGER" => Statement::Trigger,
        "DATABASE" | "SCHEMA" => match toks.get(i) {
            Some(t) => Statement::Ddl {
                db: name(t),
                table: None,
            },
            None => Statement::Other,
        },
        "TABLE" | "TABLES" => match qualified(&toks, i, default_db) {
            Some((db, t)) => Statement::Ddl { db, table: Some(t) },
            None => Statement::Other,
        },
        "INDEX" | "UNIQUE" | "FULLTEXT" | "SPATIAL" => {
            // CREATE [UNIQUE] INDEX name ON [db.]table / DROP INDEX name ON [db.]table
            match w.iter().skip(i).position(|x| x == "ON") {
                Some(p) => match qualified(&toks, i + p + 1, default_db) {
                    Some((db, t)) => Statement::Ddl { db, table: Some(t) },
                    None => Statement::Other,
                },
                None => Statement::Other,
            }
        }
        "VIEW" | "FUNCTION" | "PROCEDURE" | "EVENT" | "SEQUENCE" => {
            match qualified(&toks, i, default_db) {
                Some((db, _)) => Statement::Ddl { db, table: None },
                None => Statement::Other,
            }
        }
        _ => Statement::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn classifies() {
        assert_eq!(classify("BEGIN", "x"), Statement::Begin);
        assert_eq!(
            classify("ALTER TABLE `상점`.`order items` ADD c INT", "x"),
            Statement::Ddl {
                db: "상점".into(),
                table: Some("order items".into())
            }
        );
        assert_eq!(
            classify("DROP TABLE IF EXISTS `t` /* generated by server */", "shop"),
            Statement::Ddl {
                db: "shop".into(),
                table: Some("t".into())
            }
        );
        assert_eq!(
            classify("CREATE DATABASE IF NOT EXISTS `a``b`", ""),
            Statement::Ddl {
                db: "a`b".into(),
                table: None
            }
        );
        assert_eq!(
            classify("CREATE DEFINER=`root`@`localhost` TRIGGER trg BEFORE INSERT ON t FOR EACH ROW SET @x=1", "s"),
            Statement::Trigger
        );
        assert_eq!(
            classify("CREATE OR REPLACE ALGORITHM=UNDEFINED DEFINER=`root`@`%` SQL SECURITY DEFINER VIEW `v` AS select 1", "s"),
            Statement::Ddl { db: "s".into(), table: None }
        );
        assert_eq!(
            classify("CREATE INDEX i ON shop.t (a)", "x"),
            Statement::Ddl {
                db: "shop".into(),
                table: Some("t".into())
            }
        );
        assert_eq!(
            classify("DROP TEMPORARY TABLE IF EXISTS `t`", "s"),
            Statement::Other
        );
        assert_eq!(classify("GRANT ALL ON *.* TO x", "s"), Statement::Other);
        assert_eq!(
            classify("TRUNCATE TABLE t", "s"),
            Statement::Ddl {
                db: "s".into(),
                table: Some("t".into())
            }
        );
    }
}
