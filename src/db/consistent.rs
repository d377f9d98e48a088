//! A consistent read: `START TRANSACTION WITH CONSISTENT SNAPSHOT` and the exact binlog
//! position (and GTID) it sees — MariaDB reports the position of the snapshot itself in
//! `binlog_snapshot_file/position`, so no lock is needed to pair rows with a position.

use crate::db::{query_one, query_strings, quote};
use crate::error::{Error, Result};
use crate::position::{FilePos, Position};
use mysql_async::prelude::*;
use mysql_async::Conn;

/// Open a consistent snapshot on `conn` (which must be a REPEATABLE READ session) and return
/// its binlog position and GTID position.
pub async fn open(conn: &mut Conn, side: &str) -> Result<(FilePos, Position)> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(|e| Error::from(e).context(format!("{side}, consistent snapshot")))?;
    let rows = query_strings(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let get = |name: &str| {
        rows.iter()
            .find(|r| r.first().cloned().flatten().as_deref() == Some(name))
            .and_then(|r| r.get(1).cloned().flatten())
    };
    let (Some(file), Some(pos)) = (
        get("Binlog_snapshot_file"),
        get("Binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
    ) else {
        return Err(Error::definite(
            format!("{side}: no binlog position for a consistent snapshot (binary log off)"),
            "enable log_bin on the server",
        ));
    };
    let gtid = query_one(
        conn,
        &format!("SELECT BINLOG_GTID_POS({}, {pos})", quote::string(&file)),
    )
    .await?
    .unwrap_or_default();
    Ok((FilePos::new(&file, pos), Position::parse(&gtid)?))
}

/// End the snapshot.
pub async fn close(conn: &mut Conn) -> Result<()> {
    conn.query_drop("COMMIT").await?;
    Ok(())
}
