//! Applies source transactions to the target, idempotently (ARCHITECTURE.md):
//! an insert or update is a REPLACE of the full after-image, a delete removes the key, a
//! key-changing update deletes the old key and replaces the new. Many source transactions are
//! grouped into one target transaction, ending only on source transaction boundaries; within
//! a group, changes to the same key collapse to the last one (`batch`), and transactions that
//! must not be collapsed are applied change by change in place (`exact`). The applied GTID
//! position is written to `_migrate.checkpoints` (this migration's row, `checkpoint`) in the
//! same target transaction as the rows.
//! DDL runs in the source session's context on its own connection (`ddl`).

pub mod batch;
pub mod cascade;
pub mod checkpoint;
pub mod ddl;
pub mod exact;
pub mod interrupted;
pub mod pipe;

use crate::binlog::{Ddl, Transaction};
use crate::config::Endpoint;
use crate::db::{self, Session};
use crate::error::{Error, Result};
use crate::position::{horizon::Horizons, Position};
use batch::Batch;
use mysql_async::Conn;
use std::sync::Arc;

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
    /// This migration's id (its row in `_migrate.checkpoints`).
    migration: String,
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
    /// The position this migration's row held at connect.
    position: Option<Position>,
    /// The DDL statement a crash interrupted, from the checkpoint table (`interrupted::Mark`).
    ddl_in_flight: Option<String>,
    /// Rename markers (`checkpoint::rename_marker`) to drop once the next checkpoint commits.
    markers: Vec<String>,
}

impl Applier {
    /// Connect the applier of migration `migration`. Its row must exist on the target
    /// (`checkpoint::register` at snapshot): a state file pointed at another target, or at a
    /// target that was reset, is refused rather than replayed from the wrong place.
    pub async fn connect(
        target: &Endpoint,
        migration: &str,
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
        let target_folds = db::preflight::lower_case_table_names(&mut conn).await?;
        db::preflight::names_fold_alike(source.lower_case_table_names, target_folds)?;
        checkpoint::ensure(&mut conn).await?;
        let row = checkpoint::read(&mut conn, migration).await?.ok_or_else(|| {
            Error::definite(
                format!("target has no row for migration {migration} in _migrate.checkpoints: the state file belongs to another target, or the target was reset"),
                "point --target at the server this migration's snapshot copied into, or take a new snapshot with a new --state",
            )
        })?;
        if row.ddl_in_flight.is_none() {
            checkpoint::drop_stale_markers(&mut conn, migration).await?;
        }
        // rows read back for foreign-key actions arrive as the bytes they are
        db::run(&mut conn, "SET character_set_results = binary")
            .await
            .map_err(|e| e.context("target"))?;
        Ok(Applier {
            conn,
            migration: migration.to_string(),
            target: target.clone(),
            max_statement: (packet / 4).clamp(64 << 10, 4 << 20),
            max_packet: packet,
            children: Default::default(),
            horizons,
            source,
            open: false,
            pending: Default::default(),
            queued: String::new(),
            ddl_in_flight: row.ddl_in_flight,
            position: row.position,
            markers: Vec::new(),
        })
    }

    /// Replace the horizons (none apply once the snapshot's last read is applied).
    pub fn set_horizons(&mut self, horizons: Arc<Horizons>) {
        self.horizons = horizons;
    }

    /// The position stored by the last applied group, if any.
    pub fn checkpoint(&self) -> Option<Position> {
        self.position.clone()
    }

    async fn begin(&mut self) -> Result<()> {
        if !self.open {
            db::run(&mut self.conn, "BEGIN").await?;
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
        async {
            // what exactly-applied transactions before these left pending goes first
            self.flush_exact().await?;
            self.begin().await?;
            for sql in batch.statements(self.max_statement) {
                db::check_packet(sql.len(), self.max_packet, "target")?;
                db::run(&mut self.conn, &sql).await?;
            }
            Ok::<_, Error>(())
        }
        .await
        .map_err(|e| e.context("target"))?;
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
        let checkpoint = checkpoint::write_sql(&self.migration, pos, source_ts);
        async {
            self.flush_exact().await?;
            self.begin().await?;
            db::run(&mut self.conn, &checkpoint).await?;
            db::run(&mut self.conn, "COMMIT").await
        }
        .await
        .map_err(|e| e.context("target"))?;
        self.open = false;
        self.ddl_in_flight = None;
        self.position = Some(pos.clone());
        for m in std::mem::take(&mut self.markers) {
            // its rename is behind the checkpoint now; one left behind is only a stray table
            if let Err(e) = db::run(&mut self.conn, &format!("DROP TABLE IF EXISTS {m}")).await {
                tracing::warn!("target: could not drop the rename marker {m}: {e}");
            }
        }
        Ok(())
    }

    /// Mark a DDL statement as started (committed before it runs; `interrupted::Mark`): after
    /// a crash, its fingerprint tells whether it ran, and its "already exists" errors are
    /// known to come from itself.
    async fn mark_ddl(&mut self, mark: &str) -> Result<()> {
        db::run(
            &mut self.conn,
            &checkpoint::mark_ddl_sql(&self.migration, mark),
        )
        .await
        .map_err(|e| e.context("target, _migrate.checkpoints"))
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
        let _ = before;
        let interrupted = self.ddl_in_flight.as_deref().map(interrupted::Mark::parse);
        let mut statuses = Vec::new();
        for (i, d) in ddls.iter().enumerate() {
            let asked = self
                .run_marked(gtid, i, d, interrupted.as_ref())
                .await
                .map_err(|e| e.context(format!("GTID {gtid}")))?;
            crash_point_after_ddl(&d.text);
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

    /// Run statement `index` of DDL transaction `gtid` unless an interrupted run of it took
    /// effect (`interrupted`): mark it first, with the fingerprint of what it changes.
    async fn run_marked(
        &mut self,
        gtid: &str,
        index: usize,
        d: &Ddl,
        mark: Option<&interrupted::Mark>,
    ) -> Result<Option<&'static str>> {
        use interrupted::Replay;
        let replay = interrupted::replay_of(mark, gtid, index, d);
        if replay == Replay::Finished {
            tracing::info!("DDL {gtid} took effect before the interruption: {}", d.text);
            return Ok(None);
        }
        let fingerprint = interrupted::fingerprint(&mut self.conn, d).await?;
        if let (
            Replay::This {
                fingerprint: before,
            },
            Some(now),
        ) = (&replay, &fingerprint)
        {
            if !now.starts_with(before.as_str()) {
                tracing::info!(
                    "DDL {gtid} took effect before the interruption (its tables changed): {}",
                    d.text
                );
                return Ok(None);
            }
            if !before.is_empty() && interrupted::renames_columns_in_place(d) {
                return Err(Error::definite(
                    format!("the engine was interrupted while `{}` ran on the target, and whether it took effect cannot be told: it renames several columns, and the table's definition can read the same either way", d.text),
                    format!("compare that table on the target with the source; if the statement took effect, undo it on the target by hand; then run `UPDATE _migrate.checkpoints SET ddl_in_flight = NULL WHERE migration_id = '{}'` on the target and restart", self.migration),
                ));
            }
        }
        let mark = interrupted::Mark::new(gtid, index, d, fingerprint.as_deref()).stored();
        self.mark_ddl(&mark).await?;
        let result = self.run_one(gtid, index, d, &replay).await;
        if let Err(e) = &result {
            if !e.is_transient() {
                // refused by the target, so it did not run: a restart after a repair by hand
                // runs it as new (not taking a changed table for its effect, nor its errors
                // for "already applied"); the statements before it in its transaction did run
                let refused = interrupted::Mark::refused(gtid, index, d).stored();
                if let Err(mark) = self.mark_ddl(&refused).await {
                    tracing::warn!("target: could not mark the refused DDL: {mark}");
                }
            }
        }
        result
    }

    /// Run statement `index` of DDL transaction `gtid`. A RENAME TABLE renames a marker in
    /// the same statement, so a replay after a crash can tell whether it took effect (a swap
    /// replayed would swap back without an error); other DDL tells by its "already exists /
    /// does not exist" error (`ddl::already_applied`).
    async fn run_one(
        &mut self,
        gtid: &str,
        index: usize,
        d: &Ddl,
        replay: &interrupted::Replay,
    ) -> Result<Option<&'static str>> {
        use crate::sql::statement::{Object, Verb};
        use interrupted::Replay;
        if !(d.statement.verb == Verb::Rename && d.statement.object == Object::Table) {
            let replaying = *replay != Replay::No;
            let asked = ddl::run(&self.target, d, &self.source, replaying, None).await?;
            tracing::info!("applied DDL {gtid}: {}", d.text);
            return Ok(asked);
        }
        let m = checkpoint::rename_marker(&self.migration, gtid, index);
        if *replay != Replay::No && checkpoint::marker_done(&mut self.conn, &m).await? {
            tracing::info!("DDL {gtid} took effect before the interruption: {}", d.text);
            self.markers.push(m.done);
            return Ok(None);
        }
        db::run(
            &mut self.conn,
            &format!(
                "CREATE TABLE IF NOT EXISTS {} (marker INT NOT NULL PRIMARY KEY) ENGINE=InnoDB",
                m.pending
            ),
        )
        .await
        .map_err(|e| e.context("target, _migrate rename marker"))?;
        // the marker says whether it ran, so its errors are not "already applied"; but a
        // rename interrupted under an older version had no marker: its errors tell
        let pairs = format!("{} TO {}", m.pending, m.done);
        let legacy = *replay == Replay::Unknown;
        let asked = ddl::run(&self.target, d, &self.source, legacy, Some(&pairs)).await?;
        self.markers.push(m.done);
        tracing::info!("applied DDL {gtid}: {}", d.text);
        Ok(asked)
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

/// Test hook: `MIGRATE_TEST_ABORT_AFTER_DDL=text` aborts the process right after a DDL whose
/// text contains `text` ran on the target, before its checkpoint (the fault tests replay it).
fn crash_point_after_ddl(text: &str) {
    if let Ok(at) = std::env::var("MIGRATE_TEST_ABORT_AFTER_DDL") {
        if !at.is_empty() && text.contains(&at) {
            tracing::warn!("MIGRATE_TEST_ABORT_AFTER_DDL={at}: aborting here (test hook)");
            std::process::abort();
        }
    }
}
