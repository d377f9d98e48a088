//! The engine's own rows on the target: `_migrate.checkpoints`, one row per migration (its id
//! is stored in the state file at snapshot), holding the applied GTID position (written in the
//! same transaction as the rows it covers), the DDL being applied, and what the migration
//! copies. Several migrations can write into one target side by side; one that would copy a
//! database another migration already receives is refused, and a state file whose migration
//! has no row on the target (another target, or a target that was reset) is refused too.

use crate::db::{self, quote};
use crate::error::{Error, Result};
use crate::position::Position;
use mysql_async::Conn;

pub const DB: &str = "_migrate";

fn table() -> String {
    format!("{}.checkpoints", quote::ident(DB))
}

/// Create the database and table if needed.
pub async fn ensure(conn: &mut Conn) -> Result<()> {
    for sql in [
        format!("CREATE DATABASE IF NOT EXISTS {}", quote::ident(DB)),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (migration_id VARCHAR(64) NOT NULL PRIMARY KEY, \
             gtid_pos VARCHAR(4096) NOT NULL DEFAULT '', source_ts BIGINT NOT NULL DEFAULT 0, \
             applied_at DATETIME(6) NULL, ddl_in_flight VARCHAR(64) NULL, \
             source_databases TEXT NOT NULL, state_file TEXT NOT NULL) ENGINE=InnoDB",
            table()
        ),
    ] {
        db::run(conn, &sql)
            .await
            .map_err(|e| e.context("target, _migrate.checkpoints"))?;
    }
    Ok(())
}

/// What a migration's row says.
pub struct Row {
    pub position: Option<Position>,
    pub ddl_in_flight: Option<String>,
}

pub async fn read(conn: &mut Conn, id: &str) -> Result<Option<Row>> {
    let rows = db::query_strings(
        conn,
        &format!(
            "SELECT gtid_pos, ddl_in_flight FROM {} WHERE migration_id = {}",
            table(),
            quote::string(id)
        ),
    )
    .await?;
    let Some(r) = rows.into_iter().next() else {
        return Ok(None);
    };
    let pos = r.first().cloned().flatten().unwrap_or_default();
    Ok(Some(Row {
        position: if pos.is_empty() {
            None
        } else {
            Some(Position::parse(&pos)?)
        },
        ddl_in_flight: r.get(1).cloned().flatten(),
    }))
}

/// The statement recording `pos` as applied (inside the group's transaction).
pub fn write_sql(id: &str, pos: &Position, source_ts: u32) -> String {
    format!(
        "UPDATE {} SET gtid_pos = {}, source_ts = {source_ts}, applied_at = UTC_TIMESTAMP(6), ddl_in_flight = NULL \
         WHERE migration_id = {}",
        table(),
        quote::string(&pos.to_string()),
        quote::string(id)
    )
}

/// The statement marking a DDL statement as started, or as refused (`interrupted::Mark`).
pub fn mark_ddl_sql(id: &str, mark: &str) -> String {
    format!(
        "UPDATE {} SET ddl_in_flight = {} WHERE migration_id = {}",
        table(),
        quote::string(mark),
        quote::string(id)
    )
}

/// The marker a `RENAME TABLE` carries on the target (`rename_marker`): created as `pending`
/// before the statement, renamed to `done` by the statement itself (one atomic RENAME), dropped
/// once the checkpoint past it is committed. A crash or a lost connection between the rename
/// and its checkpoint leaves `done`: the rename took effect and must not run again (a swap
/// run twice swaps back, without an error to tell).
pub struct RenameMarker {
    pub pending: String,
    pub done: String,
    /// `done` as a plain name, for information_schema.
    pub done_name: String,
}

fn short_hash(text: &str, bytes: usize) -> String {
    use sha2::{Digest as _, Sha256};
    super::interrupted::hex(&Sha256::digest(text.as_bytes()), bytes)
}

/// The start of every rename marker name of migration `id`.
fn marker_prefix(id: &str) -> String {
    format!("rename_{}_", short_hash(id, 4))
}

/// The marker of statement `index` of transaction `gtid` in migration `id`.
pub fn rename_marker(id: &str, gtid: &str, index: usize) -> RenameMarker {
    let hex = short_hash(&format!("{id}\n{gtid}\n{index}"), 10);
    let prefix = marker_prefix(id);
    let name = |state: &str| format!("{prefix}{hex}_{state}");
    RenameMarker {
        pending: quote::table(DB, &name("pending")),
        done: quote::table(DB, &name("done")),
        done_name: name("done"),
    }
}

/// Drop the rename markers migration `id` left behind (a crash after its checkpoint, a RENAME
/// the target refused). Only when no DDL of it is in flight: then none is still needed.
pub async fn drop_stale_markers(conn: &mut Conn, id: &str) -> Result<()> {
    let like = format!("{}%", marker_prefix(id).replace('_', "\\_"));
    let names = db::query_strings(
        conn,
        &format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME LIKE {}",
            quote::string(DB),
            quote::string(&like)
        ),
    )
    .await
    .map_err(|e| e.context("target, _migrate rename markers"))?;
    for n in names
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        db::run(
            conn,
            &format!("DROP TABLE IF EXISTS {}", quote::table(DB, &n)),
        )
        .await
        .map_err(|e| e.context("target, _migrate rename markers"))?;
    }
    Ok(())
}

/// Whether a marker's `done` table exists.
pub async fn marker_done(conn: &mut Conn, m: &RenameMarker) -> Result<bool> {
    let n = db::query_one(
        conn,
        &format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            quote::string(DB),
            quote::string(&m.done_name)
        ),
    )
    .await
    .map_err(|e| e.context("target, _migrate rename marker"))?;
    Ok(n.and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) > 0)
}

/// The selection as stored: a JSON array of the databases, or `["*"]` for every non-system
/// database (a database name may hold any character, so no separator would do).
pub fn selection(databases: &[String]) -> String {
    if databases.is_empty() {
        r#"["*"]"#.into()
    } else {
        serde_json::to_string(databases).unwrap_or_default()
    }
}

fn overlaps(a: &str, b: &str) -> bool {
    let parse =
        |s: &str| serde_json::from_str::<Vec<String>>(s).unwrap_or_else(|_| vec!["*".into()]);
    let (a, b) = (parse(a), parse(b));
    let all = |v: &[String]| v.iter().any(|x| x == "*");
    all(&a) || all(&b) || a.iter().any(|x| b.contains(x))
}

/// A new snapshot of migration `id`: refuse databases another migration receives (or, with
/// `take_over` — the user's `--reuse-target` — remove that migration's row, so its follow stops
/// with "no row"), then (re)create this migration's row with no position (the catch-up writes
/// the first).
pub async fn register(
    conn: &mut Conn,
    id: &str,
    databases: &str,
    state_file: &str,
    take_over: bool,
) -> Result<()> {
    ensure(conn).await?;
    let others = db::query_strings(
        conn,
        &format!(
            "SELECT migration_id, source_databases, state_file FROM {} WHERE migration_id <> {}",
            table(),
            quote::string(id)
        ),
    )
    .await?;
    for r in others {
        let g = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        if overlaps(&g(1), databases) && take_over {
            tracing::warn!(
                "target: migration {} (state file {}) copied {} into this target; --reuse-target replaces it",
                g(0),
                g(2),
                g(1)
            );
            db::run(
                conn,
                &format!(
                    "DELETE FROM {} WHERE migration_id = {}",
                    table(),
                    quote::string(&g(0))
                ),
            )
            .await
            .map_err(|e| e.context("target, _migrate.checkpoints"))?;
        } else if overlaps(&g(1), databases) {
            return Err(Error::definite(
                format!(
                    "target: migration {} (state file {}) already copies {} into this target, which overlaps this snapshot's {databases}",
                    g(0),
                    g(2),
                    g(1)
                ),
                "migrate different databases, or pass --reuse-target to replace that migration",
            ));
        }
    }
    db::run(
        conn,
        &format!(
            "REPLACE INTO {} (migration_id, gtid_pos, source_ts, source_databases, state_file) VALUES ({}, '', 0, {}, {})",
            table(),
            quote::string(id),
            quote::string(databases),
            quote::string(state_file)
        ),
    )
    .await
    .map_err(|e| e.context("target, _migrate.checkpoints"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlap() {
        use super::{overlaps, selection};
        let s = |v: &[&str]| selection(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert!(overlaps(&s(&["shop"]), &s(&["shop", "bigshop"])));
        assert!(!overlaps(&s(&["shop"]), &s(&["bigshop"])));
        assert!(!overlaps(&s(&["a,b"]), &s(&["a"])));
        assert!(overlaps(&s(&[]), &s(&["bigshop"])));
    }
}
