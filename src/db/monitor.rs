//! Read-only figures from the source for follow: GTID position, binlog files, load.

use crate::db::{query_one, query_strings};
use crate::error::Result;
use crate::position::Position;
use mysql_async::Conn;

/// Source GTID position now (`@@gtid_binlog_pos`).
pub async fn source_position(conn: &mut Conn) -> Result<Position> {
    Position::parse(
        &query_one(conn, "SELECT @@GLOBAL.gtid_binlog_pos")
            .await?
            .unwrap_or_default(),
    )
}

/// `SHOW BINARY LOGS`: (file, size) oldest first.
pub async fn binlog_files(conn: &mut Conn) -> Result<Vec<(String, u64)>> {
    Ok(query_strings(conn, "SHOW BINARY LOGS")
        .await?
        .into_iter()
        .map(|r| {
            let name = r.first().cloned().flatten().unwrap_or_default();
            let size = r
                .get(1)
                .cloned()
                .flatten()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            (name, size)
        })
        .collect())
}

/// The source's `Threads_running`.
pub async fn threads_running(conn: &mut Conn) -> Result<u64> {
    let rows = query_strings(conn, "SHOW GLOBAL STATUS LIKE 'Threads_running'").await?;
    Ok(rows
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}
