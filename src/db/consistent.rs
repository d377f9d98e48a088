//! The one consistent read, shared by snapshot and verify: `START TRANSACTION WITH CONSISTENT
//! SNAPSHOT` and the exact binlog position it sees — MariaDB reports the position of the
//! snapshot itself in `binlog_snapshot_file/position`, so no lock is needed to pair rows with
//! a position. Verify also needs the GTID position there: `Gtids` finds it by reading only the
//! binlog written since the last snapshot it resolved (BINLOG_GTID_POS scans the file from
//! its start, up to a gigabyte, on every call).

use crate::db::{query_one, query_strings, quote};
use crate::error::{Error, Result};
use crate::position::{FilePos, Gtid, Position};
use mysql_async::Conn;

/// The statements that open the snapshot and report its position (one round trip; callers
/// may send other statements before them in the same batch).
pub const START: &str =
    "START TRANSACTION WITH CONSISTENT SNAPSHOT; SHOW STATUS LIKE 'binlog_snapshot_%'";

/// The snapshot's binlog position from the rows of `SHOW STATUS LIKE 'binlog_snapshot_%'`.
pub fn position_of(rows: &[Vec<Option<String>>]) -> Result<FilePos> {
    let mut file = None;
    let mut pos = None;
    for r in rows {
        match r.first().and_then(|c| c.as_deref()) {
            Some("Binlog_snapshot_file") => file = r.get(1).cloned().flatten(),
            Some("Binlog_snapshot_position") => {
                pos = r
                    .get(1)
                    .and_then(|p| p.as_deref())
                    .and_then(|p| p.parse().ok())
            }
            _ => {}
        }
    }
    match (file, pos) {
        (Some(f), Some(p)) if !f.is_empty() => Ok(FilePos::new(&f, p)),
        _ => Err(Error::definite(
            "no binlog position for a consistent snapshot (binary log is off)",
            "enable log_bin=ON (and binlog_format=ROW on the source), then restart the server",
        )),
    }
}

/// Open a consistent snapshot on `conn` (a REPEATABLE READ session) and return its binlog
/// position.
pub async fn open(conn: &mut Conn, side: &str) -> Result<FilePos> {
    crate::db::run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(|e| e.context(format!("{side}, consistent snapshot")))?;
    let rows = query_strings(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    position_of(&rows).map_err(|e| e.context(side.to_string()))
}

/// End the snapshot.
pub async fn close(conn: &mut Conn) -> Result<()> {
    crate::db::run(conn, "COMMIT").await
}

/// Resolves binlog positions of one server to GTID positions, remembering the last one.
#[derive(Default)]
pub struct Gtids {
    last: Option<(FilePos, Position)>,
}

/// Events read per `SHOW BINLOG EVENTS` page while resolving.
const PAGE: u64 = 5_000;

impl Gtids {
    /// The GTID position at `at` (the state after every transaction before it), read on `conn`.
    pub async fn at(&mut self, conn: &mut Conn, at: &FilePos) -> Result<Position> {
        let pos = match self.last.take() {
            Some((from, p)) if from == *at => p,
            Some((from, p)) if from.file == at.file && from.offset < at.offset => {
                forward(conn, &from, p, at).await?
            }
            _ => {
                let gtid = query_one(
                    conn,
                    &format!(
                        "SELECT BINLOG_GTID_POS({}, {})",
                        quote::string(&at.file),
                        at.offset
                    ),
                )
                .await?
                .unwrap_or_default();
                Position::parse(&gtid)?
            }
        };
        self.last = Some((at.clone(), pos.clone()));
        Ok(pos)
    }
}

/// `p` (the GTID position at `from`) advanced by the GTIDs logged from `from` up to `to`.
async fn forward(
    conn: &mut Conn,
    from: &FilePos,
    mut p: Position,
    to: &FilePos,
) -> Result<Position> {
    let mut at = from.offset;
    'pages: loop {
        let rows = query_strings(
            conn,
            &format!(
                "SHOW BINLOG EVENTS IN {} FROM {at} LIMIT {PAGE}",
                quote::string(&from.file)
            ),
        )
        .await?;
        let n = rows.len() as u64;
        for r in rows {
            let cell = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let (pos, kind, end) = (
                cell(1).parse::<u64>().unwrap_or(u64::MAX),
                cell(2),
                cell(4).parse::<u64>().unwrap_or(u64::MAX),
            );
            if pos >= to.offset {
                break 'pages;
            }
            if kind == "Gtid" {
                // Info: "BEGIN GTID 0-1-386" or "GTID 0-1-387" (a DDL)
                let info = cell(5);
                match gtid_of_info(&info) {
                    Some(g) => p.advance(g),
                    None => {
                        return Err(Error::definite(
                            format!(
                                "binlog {} at {pos}: unexpected GTID event text {info:?}",
                                from.file
                            ),
                            "report this; run verify with a fresh state of the binlog",
                        ))
                    }
                }
            }
            at = end;
        }
        if n < PAGE {
            break;
        }
    }
    Ok(p)
}

/// The GTID of a `SHOW BINLOG EVENTS` Gtid row's Info: "BEGIN GTID 0-1-386" (a transaction),
/// "GTID 0-1-387" (a DDL), either perhaps followed by " cid=..." (group commit).
pub fn gtid_of_info(info: &str) -> Option<Gtid> {
    let mut words = info.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == "GTID")
        .and(words.next())
        .and_then(|t| Gtid::parse(t).ok())
}
