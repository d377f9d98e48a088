//! The source binlog: connect as a MariaDB GTID replica, read events, assemble whole
//! transactions of decoded row changes. Never writes anything anywhere.

pub mod events;
pub mod stream;

use crate::position::Gtid;
use crate::schema::Table;
use crate::value::Value;
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
}

impl Change {
    pub fn table(&self) -> &Arc<Table> {
        match self {
            Change::Upsert { table, .. }
            | Change::Rekey { table, .. }
            | Change::Delete { table, .. } => table,
        }
    }
    /// Whether applying this change on the source fired a foreign-key cascade, which the
    /// binlog does not carry (only the parent's change is logged).
    pub fn may_cascade(&self) -> bool {
        match self {
            Change::Upsert { before: None, .. } => false,
            c => c.table().has_cascades(),
        }
    }
}

/// One committed source transaction (or one DDL statement).
#[derive(Debug, Clone)]
pub struct Transaction {
    pub gtid: Gtid,
    /// Commit time on the source (binlog header, whole seconds).
    pub timestamp: u32,
    pub changes: Vec<Change>,
    /// A DDL statement to run on the target: (default schema, SQL).
    pub ddl: Option<(String, String)>,
    /// Binlog file position after this transaction.
    pub end_pos: u64,
    pub bytes: u64,
    /// When the reader received the transaction's first event (unix seconds).
    pub seen_at: f64,
}

impl Transaction {
    /// Same GTID, time and position, no changes.
    pub fn clone_header(&self) -> Transaction {
        Transaction {
            gtid: self.gtid,
            timestamp: self.timestamp,
            changes: Vec::new(),
            ddl: None,
            end_pos: self.end_pos,
            bytes: 0,
            seen_at: self.seen_at,
        }
    }
    /// Best estimate of the source commit time: the binlog header has whole seconds; a
    /// reader that is caught up receives the transaction within milliseconds of its commit.
    pub fn commit_estimate(&self) -> f64 {
        let ts = self.timestamp as f64;
        self.seen_at.clamp(ts, ts + 1.0)
    }
    /// Must be applied change by change (a foreign-key action has to run between changes).
    pub fn needs_exact_apply(&self) -> bool {
        self.changes.iter().any(Change::may_cascade)
    }
}
