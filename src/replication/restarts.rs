//! A target that restarted has emptied its MEMORY tables (MariaDB starts them empty), while
//! the source still holds their rows: nothing in the binlog says so, and follow would go on
//! with those tables silently different (in a cluster a pod restarts whenever it is moved).
//! The snapshot and every follow (re)connect note when the target started; when it started
//! again since, follow stops once, naming the migrated MEMORY tables and the repair.

use crate::config::{Endpoint, Filter};
use crate::db::{self, Session};
use crate::error::{Error, Result};
use crate::state::Store;
use mysql_async::Conn;

/// The state file's key: when the server at `address` last started (unix seconds); per
/// address, as the way back after a cutover follows into the other server.
fn started_key(address: &str) -> String {
    format!("target.started_at {address}")
}
/// Uptime is whole seconds and read a round trip apart from the clock: a start time that
/// moved by less than this is the same start.
const SAME_START_S: i64 = 2;

/// When the server on `conn` started (unix seconds).
async fn started_at(conn: &mut Conn) -> Result<i64> {
    db::query_one(
        conn,
        "SELECT UNIX_TIMESTAMP() - VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'UPTIME'",
    )
    .await?
    .and_then(|v| v.parse().ok())
    .ok_or_else(|| {
        Error::definite(
            "target: its uptime could not be read",
            "report this with the target's version",
        )
    })
}

/// Whether the target started again since the last start noted (none noted: no), noting
/// this one.
pub async fn restarted(conn: &mut Conn, target: &Endpoint, store: &Store) -> Result<bool> {
    let started = started_at(conn).await.map_err(|e| e.on("target"))?;
    let key = started_key(&target.address());
    let before = store.get(&key)?.and_then(|v| v.parse::<i64>().ok());
    store.set(&key, &started.to_string())?;
    Ok(before.is_some_and(|b| (started - b).abs() > SAME_START_S))
}

/// The MEMORY tables of the target that `filter` migrates, as `db.name`.
pub async fn memory_tables(conn: &mut Conn, filter: &Filter) -> Result<Vec<(String, String)>> {
    let rows = db::query_strings(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE ENGINE = 'MEMORY' \
         AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys', '_migrate') \
         ORDER BY TABLE_SCHEMA, TABLE_NAME",
    )
    .await
    .map_err(|e| e.context("target"))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let mut r = r.into_iter().flatten();
            Some((r.next()?, r.next()?))
        })
        .filter(|(d, t)| filter.includes_db(d) && filter.includes_table(d, t))
        .collect())
}

/// Compare when the target started with the last start noted, and note this one. A restart
/// since, with migrated MEMORY tables on the target, is an error naming them (once: the next
/// follow goes on from the start noted now).
pub async fn check(target: &Endpoint, store: &Store, filter: &Filter) -> Result<()> {
    let mut conn = db::connect(target, Session::Meta)
        .await
        .map_err(|e| e.context("target"))?;
    if !restarted(&mut conn, target, store).await? {
        return Ok(());
    }
    let emptied: Vec<String> = memory_tables(&mut conn, filter)
        .await?
        .into_iter()
        .map(|(d, t)| format!("{d}.{t}"))
        .collect();
    if emptied.is_empty() {
        tracing::info!(
            "the target restarted since follow last connected (no migrated MEMORY tables)"
        );
        return Ok(());
    }
    Err(Error::definite(
        format!(
            "the target restarted since follow last connected: MariaDB started its MEMORY tables {} empty, while the source still holds their rows",
            emptied.join(", ")
        ),
        format!(
            "run follow again (it goes on), then copy their rows back with `migrate verify --repair --tables {}`",
            emptied.join(",")
        ),
    ))
}
