//! Applies source transactions to the target, idempotently (ARCHITECTURE.md):
//! an insert or update is a REPLACE of the full after-image, a delete removes the key, a
//! key-changing update deletes the old key and replaces the new. Many source transactions are
//! grouped into one target transaction, ending only on source transaction boundaries; within
//! a group, changes to the same key collapse to the last one, kept at the position of its last
//! occurrence, so the order of changes to any one row is the source's. The applied GTID
//! position is written to `_migrate.checkpoint` in the same target transaction as the rows.

pub mod batch;
pub mod cascade;

use crate::binlog::Transaction;
use crate::config::Endpoint;
use crate::db::{self, quote, Session};
use crate::error::{Error, Result};
use crate::position::Position;
use batch::Batch;
use mysql_async::prelude::*;
use mysql_async::Conn;

pub const CHECKPOINT_DB: &str = "_migrate";

pub struct Applier {
    conn: Conn,
    max_statement: usize,
    children: cascade::Children,
}

/// Errors a DDL statement gives when it was already applied before a crash.
const ALREADY_APPLIED: &[u16] = &[
    1007, 1008, 1050, 1051, 1060, 1061, 1091, 1146, 1304, 1305, 1537, 1539, 4092,
];

impl Applier {
    pub async fn connect(target: &Endpoint) -> Result<Applier> {
        let mut conn = db::connect(target, Session::TargetWriter).await?;
        let packet: usize = db::variable(&mut conn, "max_allowed_packet")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(16 << 20);
        for sql in [
            format!("CREATE DATABASE IF NOT EXISTS {}", quote::ident(CHECKPOINT_DB)),
            format!(
                "CREATE TABLE IF NOT EXISTS {}.checkpoint (id TINYINT PRIMARY KEY, gtid_pos VARCHAR(4096) NOT NULL, \
                 source_ts BIGINT NOT NULL, applied_at DATETIME(6) NOT NULL) ENGINE=InnoDB",
                quote::ident(CHECKPOINT_DB)
            ),
        ] {
            conn.query_drop(sql).await.map_err(|e| Error::from(e).context("target checkpoint table"))?;
        }
        Ok(Applier {
            conn,
            max_statement: (packet / 4).clamp(64 << 10, 4 << 20),
            children: Default::default(),
        })
    }

    /// The position stored by the last applied group, if any.
    pub async fn checkpoint(&mut self) -> Result<Option<Position>> {
        let sql = format!(
            "SELECT gtid_pos FROM {}.checkpoint WHERE id = 1",
            quote::ident(CHECKPOINT_DB)
        );
        match db::query_one(&mut self.conn, &sql).await? {
            Some(p) => Ok(Some(Position::parse(&p)?)),
            None => Ok(None),
        }
    }

    /// Forget the stored position (a new snapshot starts over).
    pub async fn reset_checkpoint(target: &Endpoint) -> Result<()> {
        let mut conn = db::connect(target, Session::TargetWriter).await?;
        let exists = db::query_one(
            &mut conn,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = 'checkpoint'",
                quote::string(CHECKPOINT_DB)
            ),
        )
        .await?;
        if exists.as_deref() == Some("1") {
            conn.query_drop(format!(
                "DELETE FROM {}.checkpoint",
                quote::ident(CHECKPOINT_DB)
            ))
            .await?;
        }
        Ok(())
    }

    fn checkpoint_sql(pos: &Position, source_ts: u32) -> String {
        format!(
            "REPLACE INTO {}.checkpoint VALUES (1, {}, {source_ts}, UTC_TIMESTAMP(6))",
            quote::ident(CHECKPOINT_DB),
            quote::string(&pos.to_string())
        )
    }

    /// Apply a group of row transactions and the position after them, atomically.
    pub async fn apply(&mut self, batch: &Batch, pos: &Position) -> Result<()> {
        self.conn.query_drop("BEGIN").await?;
        for sql in batch.statements(self.max_statement) {
            self.conn.query_drop(sql).await?;
        }
        self.conn
            .query_drop(Self::checkpoint_sql(pos, batch.last_ts))
            .await?;
        self.conn.query_drop("COMMIT").await?;
        Ok(())
    }

    /// Apply one transaction change by change, in source order, performing the foreign-key
    /// actions the source ran without logging them (see `cascade`).
    pub async fn apply_exact(&mut self, t: &Transaction, pos: &Position) -> Result<()> {
        use crate::binlog::Change;
        self.conn.query_drop("BEGIN").await?;
        for c in &t.changes {
            let mut one = Batch::default();
            one.add(Transaction {
                changes: vec![c.clone()],
                ddl: None,
                ..t.clone_header()
            });
            match c {
                Change::Delete { table, row } => {
                    cascade::on_delete(&mut self.conn, &mut self.children, table, vec![row.clone()])
                        .await?
                }
                Change::Rekey {
                    table,
                    before,
                    after,
                } => {
                    cascade::on_update(&mut self.conn, &mut self.children, table, before, after)
                        .await?
                }
                Change::Upsert {
                    table,
                    before: Some(before),
                    row,
                } => {
                    cascade::on_update(&mut self.conn, &mut self.children, table, before, row)
                        .await?
                }
                Change::Upsert { .. } => {}
            }
            for sql in one.statements(self.max_statement) {
                self.conn.query_drop(sql).await?;
            }
        }
        self.conn
            .query_drop(Self::checkpoint_sql(pos, t.timestamp))
            .await?;
        self.conn.query_drop("COMMIT").await?;
        Ok(())
    }

    /// Run one DDL statement in its default schema. A DDL that fails because it was already
    /// applied before a crash (table exists, unknown column...) is logged and skipped.
    pub async fn exec_ddl(&mut self, label: &str, schema: &str, sql: &str) -> Result<()> {
        self.children.clear();
        if !schema.is_empty() {
            // The default schema may not exist on the target (not selected): ignore.
            let _ = self
                .conn
                .query_drop(format!("USE {}", quote::ident(schema)))
                .await;
        }
        match self.conn.query_drop(sql).await {
            Ok(()) => tracing::info!("applied DDL {label}: {sql}"),
            Err(mysql_async::Error::Server(e)) if ALREADY_APPLIED.contains(&e.code) => {
                tracing::warn!(
                    "DDL {label} looks already applied ({}), skipping: {sql}",
                    e.message
                )
            }
            Err(e) => {
                let mut err = Error::from(e);
                if !err.is_transient() {
                    err.hint = Some(
                        "apply it by hand on the target and restart follow, or use --on-ddl ignore"
                            .into(),
                    );
                }
                return Err(err.context(format!("target, DDL of {label}: {sql}")));
            }
        }
        Ok(())
    }

    /// Apply one DDL transaction, then record the position.
    pub async fn apply_ddl(&mut self, t: &Transaction, pos: &Position) -> Result<()> {
        if let Some((schema, sql)) = &t.ddl {
            self.exec_ddl(&t.gtid.to_string(), schema, sql).await?;
        }
        self.conn
            .query_drop(Self::checkpoint_sql(pos, t.timestamp))
            .await?;
        Ok(())
    }
}
