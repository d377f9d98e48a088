//! The source binlog: connect as a MariaDB GTID replica, read events, assemble whole
//! transactions of decoded row changes. Never writes anything anywhere.

pub mod events;
pub mod query;
pub mod route;
pub mod rows;
pub mod stream;

use crate::position::{FilePos, Gtid};
use crate::schema::Table;
use crate::sql::statement;
use crate::value::Value;
use query::QueryContext;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Change {
    /// Insert (`before` None) or update whose key did not change (`before` is the old image).
    Upsert {
        table: Arc<Table>,
        before: Option<Vec<Value>>,
        row: Vec<Value>,
    },
    /// Update that changed the key: delete `before`'s key, then upsert `after`.
    Rekey {
        table: Arc<Table>,
        before: Vec<Value>,
        after: Vec<Value>,
    },
    Delete {
        table: Arc<Table>,
        row: Vec<Value>,
    },
    /// `SAVEPOINT name` inside the transaction (the name as the binlog has it).
    Savepoint(Vec<u8>),
    /// `ROLLBACK TO name`: on the source, the transactional changes made since the savepoint
    /// were undone (non-transactional ones stay); the applier does the same on the target.
    RollbackTo(Vec<u8>),
    /// The following changes were made with `foreign_key_checks` off (false) or on again
    /// (true): their rows event carries NO_FOREIGN_KEY_CHECKS, so on the source InnoDB ran no
    /// CASCADE / SET NULL for them, and the applier must not either. Only emitted around
    /// changes of tables that have such actions.
    ForeignKeyChecks(bool),
    /// A change of a table whose copy already holds it (the event is before the table's
    /// horizon), kept only for the foreign-key actions it ran on the source in child tables
    /// whose copies are older (their horizon is before the event): the applier performs those
    /// actions, not the change. Only during the snapshot's catch-up.
    CascadeOnly(Box<Change>),
}

impl Change {
    /// The table of a row change (None for savepoint markers).
    pub fn table(&self) -> Option<&Arc<Table>> {
        match self {
            Change::Upsert { table, .. }
            | Change::Rekey { table, .. }
            | Change::Delete { table, .. } => Some(table),
            Change::CascadeOnly(c) => c.table(),
            Change::Savepoint(_) | Change::RollbackTo(_) | Change::ForeignKeyChecks(_) => None,
        }
    }
    /// Whether applying this change on the source fired a foreign-key cascade, which the
    /// binlog does not carry (only the parent's change is logged).
    pub fn may_cascade(&self) -> bool {
        match self {
            Change::Upsert { before: None, .. } => false,
            c => c.table().is_some_and(|t| t.has_cascades()),
        }
    }
    /// Approximate decoded size in bytes, for memory accounting.
    pub fn size(&self) -> usize {
        let row = |r: &[Value]| r.iter().map(Value::size).sum::<usize>() + 16;
        match self {
            Change::Upsert { before, row: r, .. } => row(r) + before.as_deref().map_or(0, row),
            Change::Rekey { before, after, .. } => row(before) + row(after),
            Change::Delete { row: r, .. } => row(r),
            Change::Savepoint(n) | Change::RollbackTo(n) => n.len() + 16,
            Change::ForeignKeyChecks(_) => 16,
            Change::CascadeOnly(c) => c.size(),
        }
    }
}

/// A DDL statement to run on the target, with the source session's context.
#[derive(Debug, Clone)]
pub struct Ddl {
    /// The event's default database.
    pub schema: String,
    /// The statement as the source sent it (bytes in the session's character_set_client).
    pub sql: Vec<u8>,
    /// A UTF-8 rendering for logs and errors.
    pub text: String,
    pub ctx: QueryContext,
    /// What it is (each statement of a rewrite classified as itself).
    pub statement: statement::Ddl,
}

/// One committed source transaction (or one DDL statement), or a part of a transaction too
/// large to hold in memory (`partial`: more parts follow; the last part is not partial).
#[derive(Debug, Clone)]
pub struct Transaction {
    pub gtid: Gtid,
    /// Commit time on the source (binlog header, whole seconds).
    pub timestamp: u32,
    pub changes: Vec<Change>,
    /// DDL statements to run on the target, in order (usually one).
    pub ddl: Vec<Ddl>,
    /// Binlog file position after this transaction.
    pub end: FilePos,
    /// Offset of its GTID event in `end.file`.
    pub start: u64,
    /// Offset of its last event (XID, COMMIT, ROLLBACK, the DDL) in `end.file`.
    pub last_at: u64,
    pub bytes: u64,
    /// When the reader received the transaction's first event (unix seconds).
    pub seen_at: f64,
    /// Ended with ROLLBACK on the source: only its non-transactional changes happened.
    pub rolled_back: bool,
    /// A part of a large transaction; more parts follow.
    pub partial: bool,
    /// A part of a large transaction that is not its first part.
    pub continued: bool,
}

impl Transaction {
    pub fn new(gtid: Gtid, timestamp: u32, seen_at: f64) -> Transaction {
        Transaction {
            gtid,
            timestamp,
            changes: Vec::new(),
            ddl: Vec::new(),
            end: FilePos::new("", 0),
            start: 0,
            last_at: 0,
            bytes: 0,
            seen_at,
            rolled_back: false,
            partial: false,
            continued: false,
        }
    }
    /// Same GTID, time and position, no changes.
    pub fn clone_header(&self) -> Transaction {
        Transaction {
            changes: Vec::new(),
            ddl: Vec::new(),
            bytes: 0,
            ..self.clone_meta()
        }
    }
    fn clone_meta(&self) -> Transaction {
        Transaction {
            gtid: self.gtid,
            timestamp: self.timestamp,
            changes: Vec::new(),
            ddl: Vec::new(),
            end: self.end.clone(),
            start: self.start,
            last_at: self.last_at,
            bytes: self.bytes,
            seen_at: self.seen_at,
            rolled_back: self.rolled_back,
            partial: self.partial,
            continued: self.continued,
        }
    }
    /// Best estimate of the source commit time: the binlog header has whole seconds; a
    /// reader that is caught up receives the transaction within milliseconds of its commit.
    pub fn commit_estimate(&self) -> f64 {
        let ts = self.timestamp as f64;
        self.seen_at.clamp(ts, ts + 1.0)
    }
    /// Must be applied change by change, in order, inside the group's target transaction:
    /// a foreign-key action has to run between changes, a savepoint or rollback has to be
    /// honoured, a keyless table's rows cannot be collapsed, or it is one part of many.
    /// Whether applying the transaction sets a savepoint on the target (its own, or the one
    /// the applier sets to undo a transaction that ends in ROLLBACK or arrives in parts): it
    /// must then open its own target transaction, as on the source (a SAVEPOINT fails once a
    /// table of an engine without savepoints, e.g. Aria, was changed in the transaction: 1178).
    pub fn sets_savepoint(&self) -> bool {
        self.rolled_back
            || self.partial
            || self
                .changes
                .iter()
                .any(|c| matches!(c, Change::Savepoint(_)))
    }
    pub fn needs_exact_apply(&self) -> bool {
        self.rolled_back
            || self.partial
            || self.continued
            || self.changes.iter().any(|c| {
                c.may_cascade()
                    || c.table().is_none()
                    || c.table().is_some_and(|t| !t.has_key() && !t.sequence)
            })
    }
}
