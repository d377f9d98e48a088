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
    /// Insert or the after-image of an update whose key did not change.
    Upsert { table: Arc<Table>, row: Vec<Value> },
    /// Update that changed the key: delete `before`'s key, then upsert `after`.
    KeyChange { table: Arc<Table>, before: Vec<Value>, after: Vec<Value> },
    Delete { table: Arc<Table>, row: Vec<Value> },
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
}
