//! Applies source transactions to the target, idempotently (ARCHITECTURE.md):
//! an insert or update is a REPLACE of the full after-image, a delete removes the key, a
//! key-changing update deletes the old key and replaces the new. Many source transactions are
//! grouped into one target transaction, ending only on source transaction boundaries; within
//! a group, changes to the same key collapse to the last one (`batch`), and transactions that
//! must not be collapsed are applied change by change in place (`exact`). The applied GTID
//! position is written to `_migrate.checkpoint` in the same target transaction as the rows.
//! DDL runs in the source session's context on its own connection (`ddl`).

pub mod batch;
pub mod cascade;
pub mod ddl;
pub mod exact;
pub mod pipe;

use crate::binlog::{Ddl, Transaction};
use crate::config::Endpoint;
use crate::db::{self, quote, Session};
use crate::error::{Error, Result};
use crate::position::{horizon::Horizons, Position};
use batch::Batch;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::sync::Arc;

pub const CHECKPOINT_DB: &str = "_migrate";

/// What a DDL did to an event, for the state store (cutover enables events by it).
#[derive(Debug, Clone)]
pub enum EventNote {
    /// CREATE/ALTER EVENT asked for this status on the source.
    Status(crate::sql::statement::Name, &'static str),
    Dropped(crate::sql::statement::Name),
    Renamed(crate::sql::statement::Name, crate::sql::statement::Name),
}

pub struct Applier {
    conn: Conn,
    target: Endpoint,
    max_statement: usize,
    max_packet: usize,
    children: cascade::Children,
    horizons: Arc<Horizons>,
    source: Arc<ddl::SourceDefaults>,
    /// A target transaction is open (rows written, checkpoint not yet).
    open: bool,
    /// Writes of exactly-applied transactions not sent yet (joined across transactions).
    pending: exact::Pending,
    /// Statements queued to be sent several per round trip (`pipe`).
    queued: String,
    /// The DDL a crash interrupted (its GTID), from the checkpoint table: only its
    /// "already exists" errors mean "already applied".
    ddl_in_flight: Option<String>,
}

impl Applier {
    pub async fn connect(
        target: &Endpoint,
        horizons: Arc<Horizons>,
        source: Arc<ddl::SourceDefaults>,
    ) -> Result<Applier> {
        let mut conn = db::connect(target, Session::TargetWriter)
            .await
            .map_err(|e| e.context("target"))?;
        let packet: usize = db::variable(&mut conn, "max_allowed_packet")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(16 << 20);
        let cp = quote::ident(CHECKPOINT_DB);
        for sql in [
            format!("CREATE DATABASE IF NOT EXISTS {cp}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {cp}.checkpoint (id TINYINT PRIMARY KEY, gtid_pos VARCHAR(4096) NOT NULL, \
                 source_ts BIGINT NOT NULL, applied_at DATETIME(6) NOT NULL, ddl_in_flight VARCHAR(64) NULL) ENGINE=InnoDB"
            ),
            format!("ALTER TABLE {cp}.checkpoint ADD COLUMN IF NOT EXISTS ddl_in_flight VARCHAR(64) NULL"),
        ] {
            conn.query_drop(sql)
                .await
                .map_err(|e| Error::from(e).context("target checkpoint table"))?;
        }
        // rows read back for foreign-key actions arrive as the bytes they are
        conn.query_drop("SET character_set_results = binary")
            .await
            .map_err(|e| Error::from(e).context("target"))?;
        let ddl_in_flight = db::query_one(
            &mut conn,
            &format!("SELECT ddl_in_flight FROM {cp}.checkpoint WHERE id = 1"),
        )
        .await?;
        Ok(Applier {
            conn,
            target: target.clone(),
            max_statement: (packet / 4).clamp(64 << 10, 4 << 20),
            max_packet: packet,
            children: Default::default(),
            horizons,
            source,
            open: false,
            pending: Default::default(),
            queued: String::new(),
            ddl_in_flight,
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
            "REPLACE INTO {}.checkpoint VALUES (1, {}, {source_ts}, UTC_TIMESTAMP(6), NULL)",
            quote::ident(CHECKPOINT_DB),
            quote::string(&pos.to_string())
        )
    }

    async fn begin(&mut self) -> Result<()> {
        if !self.open {
            self.conn.query_drop("BEGIN").await?;
            self.open = true;
        }
        Ok(())
    }

    /// Write the collapsed operations of `batch` inside the open group transaction and
    /// forget them (the group's figures stay).
    pub async fn write_batch(&mut self, batch: &mut Batch) -> Result<()> {
        if !batch.has_ops() {
            return Ok(());
        }
        // what exactly-applied transactions before these left pending goes first
        self.flush_exact().await?;
        self.begin().await?;
        for sql in batch.statements(self.max_statement) {
            db::check_packet(sql.len(), self.max_packet, "target")?;
            self.conn.query_drop(sql).await?;
        }
        batch.clear_ops();
        Ok(())
    }

    fn exact(&mut self) -> exact::Exact<'_> {
        exact::Exact {
            pipe: pipe::Pipe::new(
                &mut self.conn,
                &mut self.queued,
                self.max_statement.max(1 << 20),
                self.max_packet,
            ),
            children: &mut self.children,
            horizons: &self.horizons,
            max_statement: self.max_statement,
            pending: &mut self.pending,
        }
    }

    /// Apply one transaction (or part) change by change inside the open group transaction
    /// (its last writes may stay pending until the next write or the commit).
    pub async fn apply_exact(&mut self, t: &Transaction) -> Result<()> {
        self.begin().await?;
        self.exact().apply(t).await
    }

    /// Send every write of exactly-applied transactions still pending or queued.
    async fn flush_exact(&mut self) -> Result<()> {
        if !self.pending.is_empty() || !self.queued.is_empty() {
            self.begin().await?;
            let mut e = self.exact();
            e.flush().await?;
            e.pipe.flush().await?;
        }
        Ok(())
    }

    /// Record `pos` and commit the group.
    pub async fn commit(&mut self, pos: &Position, source_ts: u32) -> Result<()> {
        self.flush_exact().await?;
        self.begin().await?;
        self.conn
            .query_drop(Self::checkpoint_sql(pos, source_ts))
            .await?;
        self.conn.query_drop("COMMIT").await?;
        self.open = false;
        self.ddl_in_flight = None;
        Ok(())
    }

    /// Mark `gtid`'s DDL as started (committed before it runs): after a crash, its
    /// "already exists" errors are then known to come from itself.
    async fn mark_ddl(&mut self, gtid: &str, pos: &Position) -> Result<()> {
        self.conn
            .query_drop(format!(
                "INSERT INTO {}.checkpoint VALUES (1, {}, 0, UTC_TIMESTAMP(6), {}) ON DUPLICATE KEY UPDATE ddl_in_flight = VALUES(ddl_in_flight)",
                quote::ident(CHECKPOINT_DB),
                quote::string(&pos.to_string()),
                quote::string(gtid)
            ))
            .await?;
        Ok(())
    }

    /// Run DDL statements of transaction `gtid` (the group must be committed first).
    /// Returns the event statuses the source asked for ((db, name), status) so the caller
    /// can record them for cutover.
    pub async fn exec_ddl(
        &mut self,
        gtid: &str,
        before: &Position,
        ddls: &[Ddl],
    ) -> Result<Vec<EventNote>> {
        if self.open {
            return Err(Error::definite(
                "internal: DDL while a group transaction is open",
                "report this as a bug",
            ));
        }
        self.children.clear();
        let replaying = self.ddl_in_flight.as_deref() == Some(gtid);
        self.mark_ddl(gtid, before).await?;
        let mut statuses = Vec::new();
        for d in ddls {
            let asked = ddl::run(&self.target, d, &self.source, replaying)
                .await
                .map_err(|e| e.context(format!("GTID {gtid}")))?;
            tracing::info!("applied DDL {gtid}: {}", d.text);
            if d.statement.object == crate::sql::statement::Object::Event {
                use crate::sql::statement::Verb;
                for n in &d.statement.names {
                    match (d.statement.verb, asked) {
                        (Verb::Drop, _) => statuses.push(EventNote::Dropped(n.clone())),
                        (_, Some(status)) => statuses.push(EventNote::Status(n.clone(), status)),
                        _ => {}
                    }
                }
                for (from, to) in &d.statement.renames {
                    statuses.push(EventNote::Renamed(from.clone(), to.clone()));
                }
            }
        }
        Ok(statuses)
    }

    /// Apply one DDL transaction and record the position.
    pub async fn apply_ddl(
        &mut self,
        t: &Transaction,
        before: &Position,
        after: &Position,
    ) -> Result<Vec<EventNote>> {
        let statuses = self.exec_ddl(&t.gtid.to_string(), before, &t.ddl).await?;
        self.commit(after, t.timestamp).await?;
        Ok(statuses)
    }

    /// A group transaction is open (rows written or pending, checkpoint not yet).
    pub fn is_open(&self) -> bool {
        self.open || !self.pending.is_empty() || !self.queued.is_empty()
    }
}
