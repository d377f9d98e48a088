//! Telling, after a crash or a lost connection, whether the DDL statement that was running on
//! the target took effect. DDL is not transactional: it commits before the checkpoint past it
//! can, so a restart finds the checkpoint before it and runs it again. Most DDL says so itself
//! ("already exists", "does not exist": `ddl::already_applied`), but some runs again without
//! an error and undoes itself: an `ALTER TABLE` that swaps two columns or two index names, an
//! `EXCHANGE PARTITION`, `COALESCE PARTITION`, `ADD PARTITION PARTITIONS n`. So before each
//! statement runs, the checkpoint row records which statement of which transaction it is and a
//! fingerprint of what it changes (the definitions of the tables it names, the checksum of the
//! table an `EXCHANGE PARTITION` swaps with); on replay a different fingerprint means it ran.
//! A RENAME TABLE is told by its marker instead (`checkpoint::rename_marker`).

use crate::binlog::Ddl;
use crate::db::{self, quote};
use crate::error::Result;
use crate::sql::statement::{Object, Verb};
use mysql_async::Conn;
use sha2::{Digest as _, Sha256};

/// What `_migrate.checkpoints.ddl_in_flight` holds (at most 64 characters):
/// `gtid#index|statement|fingerprint`, or, written by an older version, the GTID alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub gtid: String,
    /// Which statement of the transaction (a rewritten DDL can be several); `None`: every
    /// statement of the transaction may have run (the older form).
    pub index: Option<usize>,
    /// A short hash of the statement's text, so a mark is only read for its own statement.
    pub statement: String,
    /// A hash of what the statement changes, taken before it ran; empty when not taken.
    pub fingerprint: String,
}

const WIDTH: usize = 64;

impl Mark {
    /// The mark of a statement the target refused.
    pub fn refused(gtid: &str, index: usize, d: &Ddl) -> Mark {
        Mark::new(gtid, index, d, Some(REFUSED))
    }

    pub fn new(gtid: &str, index: usize, d: &Ddl, fingerprint: Option<&str>) -> Mark {
        Mark {
            gtid: gtid.to_string(),
            index: Some(index),
            statement: statement_hash(d),
            fingerprint: fingerprint.unwrap_or_default().to_string(),
        }
    }

    /// The column value: the fingerprint is shortened to fit (a GTID is at most 42 characters).
    pub fn stored(&self) -> String {
        let head = match self.index {
            Some(i) => format!("{}#{i}|{}|", self.gtid, self.statement),
            None => return self.gtid.clone(),
        };
        let room = WIDTH.saturating_sub(head.len());
        format!(
            "{head}{}",
            &self.fingerprint[..self.fingerprint.len().min(room)]
        )
    }

    pub fn parse(s: &str) -> Mark {
        let Some((gtid, rest)) = s.split_once('#') else {
            return Mark {
                gtid: s.to_string(),
                index: None,
                statement: String::new(),
                fingerprint: String::new(),
            };
        };
        let mut parts = rest.splitn(3, '|');
        let index = parts.next().and_then(|i| i.parse().ok());
        Mark {
            gtid: gtid.to_string(),
            index,
            statement: parts.next().unwrap_or_default().to_string(),
            fingerprint: parts.next().unwrap_or_default().to_string(),
        }
    }
}

/// What is known, for statement `index` of transaction `gtid`, of an interrupted run.
#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// Not interrupted: run it.
    No,
    /// A later statement of the same transaction was marked: this one finished.
    Finished,
    /// This statement was running; compare its fingerprint (if one was taken).
    This { fingerprint: String },
    /// Marked by an older version: only its errors can tell.
    Unknown,
}

/// The fingerprint a refused statement's mark carries.
const REFUSED: &str = "refused";

pub fn replay_of(mark: Option<&Mark>, gtid: &str, index: usize, d: &Ddl) -> Replay {
    let Some(m) = mark.filter(|m| m.gtid == gtid) else {
        return Replay::No;
    };
    match m.index {
        None => Replay::Unknown,
        Some(i) if index < i => Replay::Finished,
        // refused last time, so it did not run (earlier statements of its transaction did):
        // as new, its errors are real
        Some(i) if index == i && m.statement == statement_hash(d) && m.fingerprint == REFUSED => {
            Replay::No
        }
        Some(i) if index == i && m.statement == statement_hash(d) => Replay::This {
            fingerprint: m.fingerprint.clone(),
        },
        Some(i) if index == i => Replay::Unknown,
        Some(_) => Replay::No,
    }
}

/// The fingerprint of what an `ALTER TABLE` (or CREATE/DROP INDEX) changes: the definitions
/// of its tables as the target has them (AUTO_INCREMENT left out), and for a table it
/// exchanges a partition with, that table's checksum. `None` for other DDL or a table the
/// target does not have.
pub async fn fingerprint(conn: &mut Conn, d: &Ddl) -> Result<Option<String>> {
    let s = &d.statement;
    if !(s.verb == Verb::Alter && matches!(s.object, Object::Table | Object::Index)) {
        return Ok(None);
    }
    let mut h = Sha256::new();
    for n in s.names.iter().chain(&s.uses) {
        let table = quote::table(&n.db, &n.name);
        let row: Option<mysql_async::Row> =
            match db::query_rows(conn, &format!("SHOW CREATE TABLE {table}")).await {
                Ok(rows) => rows.into_iter().next(),
                Err(e) if matches!(e.code(), Some(1146 | 1049)) => return Ok(None),
                Err(e) => return Err(e.context(format!("target, {table}"))),
            };
        let Some(create) = row
            .and_then(|r| r.get_opt::<Vec<u8>, _>(1))
            .and_then(|c| c.ok())
        else {
            return Ok(None);
        };
        h.update(without_auto_increment(&create));
        h.update([0u8]);
    }
    for n in &s.uses {
        // EXCHANGE PARTITION moves rows, not definitions
        let table = quote::table(&n.db, &n.name);
        let row: Option<mysql_async::Row> =
            db::query_rows(conn, &format!("CHECKSUM TABLE {table}"))
                .await
                .map_err(|e| e.context(format!("target, CHECKSUM TABLE {table}")))?
                .into_iter()
                .next();
        let sum = row
            .and_then(|r| r.get_opt::<u64, _>(1))
            .and_then(|c| c.ok())
            .unwrap_or(0);
        h.update(sum.to_le_bytes());
    }
    Ok(Some(hex(&h.finalize(), 12)))
}

/// An ALTER TABLE that renames more than one column (`CHANGE a b ..., CHANGE b a ...`,
/// `RENAME COLUMN`): it can swap columns' data while the definition reads the same, so an
/// unchanged fingerprint does not prove it did not run. Read from the text, conservatively.
pub fn renames_columns_in_place(d: &Ddl) -> bool {
    if d.statement.verb != Verb::Alter {
        return false;
    }
    let words: Vec<String> = d
        .text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let renames = words
        .iter()
        .zip(words.iter().skip(1).chain(std::iter::once(&String::new())))
        .filter(|(w, next)| *w == "CHANGE" || (*w == "RENAME" && *next == "COLUMN"))
        .count();
    renames > 1
}

fn without_auto_increment(create: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(create);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_ref();
    while let Some(at) = rest.find(" AUTO_INCREMENT=") {
        out.push_str(&rest[..at]);
        rest =
            rest[at + " AUTO_INCREMENT=".len()..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out.into_bytes()
}

/// The short hash that ties a mark to its statement.
fn statement_hash(d: &Ddl) -> String {
    hex(&Sha256::digest(&d.sql), 4)
}

/// The first `n` bytes of `bytes` in hex.
pub fn hex(bytes: &[u8], n: usize) -> String {
    bytes.iter().take(n).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_within_the_column() {
        let m = Mark {
            gtid: "4294967295-4294967295-18446744073709551615".into(),
            index: Some(12),
            statement: "abcdef01".into(),
            fingerprint: "0123456789abcdef01234567".into(),
        };
        let s = m.stored();
        assert!(s.len() <= WIDTH, "{s}");
        let back = Mark::parse(&s);
        assert_eq!(back.gtid, m.gtid);
        assert_eq!(back.index, Some(12));
        assert_eq!(back.statement, m.statement);
        assert!(m.fingerprint.starts_with(&back.fingerprint));
        let old = Mark::parse("0-1-5");
        assert_eq!((old.gtid.as_str(), old.index), ("0-1-5", None));
    }

    fn ddl(sql: &str) -> Ddl {
        use crate::sql::{lexer::Mode, statement};
        let decode = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let statement::Statement::Ddl(statement) =
            statement::classify(sql.as_bytes(), Mode::default(), "s", &decode)
        else {
            panic!("{sql}")
        };
        Ddl {
            schema: "s".into(),
            sql: sql.as_bytes().to_vec(),
            text: sql.into(),
            ctx: Default::default(),
            statement,
        }
    }

    #[test]
    fn column_renames_that_can_swap_data_are_seen() {
        assert!(renames_columns_in_place(&ddl(
            "ALTER TABLE t CHANGE b a INT AFTER id, CHANGE a b INT"
        )));
        assert!(renames_columns_in_place(&ddl(
            "alter table t rename column a to c, rename column b to a"
        )));
        assert!(!renames_columns_in_place(&ddl(
            "ALTER TABLE t CHANGE a b INT"
        )));
        assert!(!renames_columns_in_place(&ddl(
            "ALTER TABLE t ADD c INT, DROP d"
        )));
        assert!(!renames_columns_in_place(&ddl(
            "RENAME TABLE a TO b, b TO a"
        )));
    }

    #[test]
    fn replays_are_read_for_their_own_statement() {
        let d = ddl("ALTER TABLE t ADD c INT");
        let other = ddl("ALTER TABLE t ADD e INT");
        let m = Mark::parse(&Mark::new("0-1-9", 1, &d, Some("abc")).stored());
        assert_eq!(replay_of(Some(&m), "0-1-8", 1, &d), Replay::No);
        assert_eq!(replay_of(Some(&m), "0-1-9", 0, &other), Replay::Finished);
        assert_eq!(
            replay_of(Some(&m), "0-1-9", 1, &d),
            Replay::This {
                fingerprint: "abc".into()
            }
        );
        assert_eq!(replay_of(Some(&m), "0-1-9", 1, &other), Replay::Unknown);
        assert_eq!(replay_of(Some(&m), "0-1-9", 2, &d), Replay::No);
        let refused = Mark::parse(&Mark::refused("0-1-9", 1, &d).stored());
        assert_eq!(replay_of(Some(&refused), "0-1-9", 1, &d), Replay::No);
        assert_eq!(
            replay_of(Some(&refused), "0-1-9", 0, &other),
            Replay::Finished
        );
        assert_eq!(
            replay_of(Some(&Mark::parse("0-1-9")), "0-1-9", 0, &d),
            Replay::Unknown
        );
    }

    #[test]
    fn auto_increment_is_not_part_of_a_definition() {
        assert_eq!(
            without_auto_increment(b") ENGINE=InnoDB AUTO_INCREMENT=77 DEFAULT CHARSET=latin1"),
            b") ENGINE=InnoDB DEFAULT CHARSET=latin1".to_vec()
        );
    }
}
