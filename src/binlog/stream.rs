//! Streaming from a GTID position (notes/mariadb-binlog.md): `@mariadb_slave_capability=4`,
//! `@slave_connect_state`, strict mode, heartbeats, and a read timeout around every read.
//! Rows are buffered until their transaction ends; a partial transaction is dropped on error,
//! and the caller reconnects from the last applied position.

use super::events::{self, Statement};
use super::{Change, Transaction};
use crate::config::{Endpoint, Filter};
use crate::db::{self, quote, Session};
use crate::error::{Error, Result};
use crate::position::Position;
use crate::schema::{self, Table};
use crate::value::{decode, Value};
use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::binlog::EventType;
use mysql_async::prelude::*;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const HEARTBEAT: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Table descriptions for decoding row events, read from the target (which mirrors the source
/// at the applied position). Cleared after each DDL.
pub struct SchemaCache {
    conn: Conn,
    tables: HashMap<(String, String), Arc<Table>>,
}

impl SchemaCache {
    pub async fn new(target: &Endpoint) -> Result<SchemaCache> {
        Ok(SchemaCache {
            conn: db::connect_retry(target, Session::Meta, 40).await?,
            tables: HashMap::new(),
        })
    }
    pub async fn get(&mut self, db: &str, table: &str) -> Result<Arc<Table>> {
        let k = (db.to_string(), table.to_string());
        if let Some(t) = self.tables.get(&k) {
            return Ok(t.clone());
        }
        let t = Arc::new(
            schema::describe(&mut self.conn, db, table)
                .await
                .map_err(|e| e.context("target schema"))?,
        );
        self.tables.insert(k, t.clone());
        Ok(t)
    }
    pub fn clear(&mut self) {
        self.tables.clear();
    }
}

pub struct Reader {
    stream: BinlogStream,
    filter: Filter,
    /// Transaction being assembled.
    current: Option<Transaction>,
    standalone: bool,
    pub file: String,
    pub pos: u64,
    early_ddl: Option<(String, String)>,
}

/// What `Reader::next` yields.
pub enum Item {
    Transaction(Transaction),
    /// No event for a while between transactions (flush what you have).
    Idle,
    /// A DDL inside a transaction (CREATE TABLE ... SELECT): apply it, then keep reading
    /// the same transaction. (default schema, SQL)
    EarlyDdl((String, String)),
}

impl Reader {
    pub async fn connect(
        source: &Endpoint,
        start: &Position,
        server_id: u32,
        filter: Filter,
    ) -> Result<Reader> {
        let mut conn = db::connect(source, Session::Meta).await?;
        let compress = db::variable(&mut conn, "log_bin_compress")
            .await?
            .unwrap_or_default();
        if compress == "1" || compress.eq_ignore_ascii_case("ON") {
            return Err(Error::definite(
                "source: log_bin_compress=ON: compressed binlog events cannot be read yet",
                "SET GLOBAL log_bin_compress=OFF on the source (events written while it was ON cannot be followed)",
            ));
        }
        let setup = [
            "SET @mariadb_slave_capability = 4".to_string(),
            format!(
                "SET @slave_connect_state = {}",
                quote::string(&start.to_string())
            ),
            "SET @slave_gtid_strict_mode = 1".to_string(),
            "SET @slave_gtid_ignore_duplicates = 0".to_string(),
            format!("SET @master_heartbeat_period = {}", HEARTBEAT.as_nanos()),
            "SET @master_binlog_checksum = @@global.binlog_checksum".to_string(),
        ];
        for s in setup {
            conn.query_drop(s)
                .await
                .map_err(|e| Error::from(e).context("source binlog set-up"))?;
        }
        let stream = conn
            .get_binlog_stream(
                BinlogStreamRequest::new(server_id)
                    .with_filename(b"")
                    .with_pos(4u64),
            )
            .await
            .map_err(|e| Error::from(e).context("source binlog request"))?;
        Ok(Reader {
            stream,
            filter,
            current: None,
            standalone: false,
            early_ddl: None,
            file: String::new(),
            pos: 0,
        })
    }

    /// Next whole transaction, or Idle after `idle` without events between transactions.
    pub async fn next(&mut self, cache: &mut SchemaCache, idle: Duration) -> Result<Item> {
        loop {
            let wait = if self.current.is_none() {
                idle.min(READ_TIMEOUT)
            } else {
                READ_TIMEOUT
            };
            let ev = match tokio::time::timeout(wait, self.stream.next()).await {
                Err(_) if self.current.is_none() && wait < READ_TIMEOUT => return Ok(Item::Idle),
                Err(_) => {
                    return Err(Error::transient(
                        "source binlog: no event or heartbeat for 10 s",
                    ))
                }
                Ok(None) => {
                    return Err(Error::transient(
                        "source binlog: stream closed by the server",
                    ))
                }
                Ok(Some(Err(e))) => return Err(Error::from(e).context("source binlog")),
                Ok(Some(Ok(ev))) => ev,
            };
            let done = self.handle(ev, cache).await?;
            if let Some(ddl) = self.early_ddl.take() {
                return Ok(Item::EarlyDdl(ddl));
            }
            if let Some(t) = done {
                return Ok(Item::Transaction(t));
            }
        }
    }

    fn finish(&mut self, pos: u64) -> Option<Transaction> {
        self.standalone = false;
        let mut t = self.current.take()?;
        t.end_pos = pos;
        Some(t)
    }

    async fn handle(&mut self, ev: Event, cache: &mut SchemaCache) -> Result<Option<Transaction>> {
        let header = ev.header();
        let raw_type = header.event_type_raw();
        let log_pos = header.log_pos() as u64;
        if log_pos > 0 {
            self.pos = log_pos;
        }
        if let Some(t) = self.current.as_mut() {
            t.bytes += header.event_size() as u64;
        }
        match raw_type {
            events::GTID_EVENT => {
                let g = events::parse_gtid(ev.data(), header.server_id())?;
                self.current = Some(Transaction {
                    gtid: g.gtid,
                    timestamp: header.timestamp(),
                    changes: Vec::new(),
                    ddl: None,
                    end_pos: 0,
                    bytes: header.event_size() as u64,
                    seen_at: unix_now(),
                });
                self.standalone = g.standalone;
                return Ok(None);
            }
            events::GTID_LIST_EVENT | events::BINLOG_CHECKPOINT_EVENT | events::ANNOTATE_ROWS_EVENT => return Ok(None),
            events::START_ENCRYPTION_EVENT => {
                return Err(Error::definite(
                    "source binlog is encrypted (START_ENCRYPTION event)",
                    "the server decrypts for replicas; check the source's encrypt_binlog settings",
                ))
            }
            165..=171 => {
                return Err(Error::definite(
                    format!("source binlog has a compressed event (type {raw_type}) that migrate cannot read"),
                    "SET GLOBAL log_bin_compress=OFF on the source; take a new snapshot if these events are needed",
                ))
            }
            _ => {}
        }
        let data = ev.read_data().map_err(|e| {
            Error::definite(
                format!("source binlog: cannot decode event type {raw_type}: {e}"),
                "report this with the source version",
            )
        })?;
        match data {
            Some(EventData::RotateEvent(r)) => {
                self.file = r.name().into_owned();
                self.pos = r.position();
                Ok(None)
            }
            Some(EventData::FormatDescriptionEvent(_))
            | Some(EventData::HeartbeatEvent)
            | Some(EventData::StopEvent)
            | Some(EventData::IntvarEvent(_))
            | Some(EventData::RandEvent(_))
            | Some(EventData::UserVarEvent(_))
            | Some(EventData::IncidentEvent(_)) => Ok(None),
            Some(EventData::TableMapEvent(_)) => Ok(None), // kept by the stream (get_tme)
            Some(EventData::XidEvent(_)) => Ok(self.finish(log_pos)),
            Some(EventData::QueryEvent(q)) => {
                let sql = q.query().into_owned();
                let schema = q.schema().into_owned();
                match events::classify(&sql, &schema) {
                    Statement::Begin => Ok(None),
                    // A ROLLBACK in the binlog ends a group whose non-transactional changes
                    // did happen on the source: apply them like a commit.
                    Statement::Commit | Statement::Rollback => Ok(self.finish(log_pos)),
                    Statement::Ddl { db, table } => {
                        let selected = match &table {
                            Some(t) => self.filter.includes_table(&db, t),
                            None => self.filter.includes_db(&db),
                        };
                        if let Some(t) = self.current.as_mut() {
                            if selected && self.standalone {
                                t.ddl = Some((schema, sql));
                            } else if selected {
                                // DDL inside a transaction with rows (CREATE TABLE ... SELECT):
                                // it must reach the target before those rows can be decoded
                                self.early_ddl = Some((schema, sql));
                            }
                        }
                        Ok(if self.standalone {
                            self.finish(log_pos)
                        } else {
                            None
                        })
                    }
                    Statement::Trigger | Statement::Other => {
                        if matches!(events::classify(&sql, &schema), Statement::Trigger) {
                            tracing::info!(
                                "trigger DDL in the binlog is not applied before cutover: {sql}"
                            );
                        }
                        Ok(if self.standalone {
                            self.finish(log_pos)
                        } else {
                            None
                        })
                    }
                }
            }
            Some(EventData::RowsEvent(rows)) => {
                self.rows(&rows, cache).await?;
                Ok(None)
            }
            Some(EventData::XaPrepareLogEvent(_)) => Err(Error::definite(
                "source binlog has an XA PREPARE transaction, which migrate does not replicate yet",
                "finish XA transactions on the source, or exclude the tables they write",
            )),
            Some(other) => {
                tracing::debug!("ignoring binlog event {:?}", std::mem::discriminant(&other));
                Ok(None)
            }
            None => Err(Error::definite(
                format!("source binlog has an event of unknown type {raw_type}"),
                "report this with the source version; migrate stops rather than skip it",
            )),
        }
    }

    async fn rows(&mut self, rows: &RowsEventData<'_>, cache: &mut SchemaCache) -> Result<()> {
        let tme = self.stream.get_tme(rows.table_id()).ok_or_else(|| {
            Error::definite(
                "source binlog: rows event without its table map",
                "report this with the source version",
            )
        })?;
        let (db, name) = (
            tme.database_name().into_owned(),
            tme.table_name().into_owned(),
        );
        if !self.filter.includes_table(&db, &name) {
            return Ok(());
        }
        let table = match cache.get(&db, &name).await {
            Ok(t) => t,
            // e.g. CREATE TABLE ... SELECT: the rows belong to a table that the DDL of the same
            // transaction creates, and the target does not have it yet
            Err(e)
                if self.current.as_ref().is_some_and(|t| t.ddl.is_some()) && !e.is_transient() =>
            {
                return Err(Error::definite(
                    format!("{db}.{name}: DDL and row changes in one transaction (CREATE TABLE ... SELECT?): the target has no such table to decode the rows with"),
                    format!("create {db}.{name} on the target by hand with the source's definition (empty), then restart follow: the DDL is then skipped as already applied and the rows are applied"),
                ));
            }
            Err(e) => return Err(e),
        };
        if table.columns.len() as u64 != tme.columns_count() {
            return Err(Error::definite(
                format!(
                    "{db}.{name}: binlog has {} columns but the target table has {}",
                    tme.columns_count(),
                    table.columns.len()
                ),
                "the target schema drifted from the source: apply the missing DDL or take a new snapshot",
            ));
        }
        let kind = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
                EventType::WRITE_ROWS_EVENT
            }
            RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => {
                EventType::UPDATE_ROWS_EVENT
            }
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
                EventType::DELETE_ROWS_EVENT
            }
            _ => {
                return Err(Error::definite(
                    format!("{db}.{name}: unsupported rows event (partial JSON update)"),
                    "set binlog_row_image=FULL on the source",
                ))
            }
        };
        let mut changes = Vec::new();
        for r in rows.rows(tme) {
            let (before, after) = r.map_err(|e| {
                Error::definite(
                    format!("{db}.{name}: cannot decode a binlog row: {e}"),
                    "report this with the column types",
                )
            })?;
            let before = before.map(|b| convert(&table, b)).transpose()?;
            let after = after.map(|a| convert(&table, a)).transpose()?;
            changes.push(match (kind, before, after) {
                (EventType::WRITE_ROWS_EVENT, _, Some(a)) => Change::Upsert {
                    table: table.clone(),
                    before: None,
                    row: a,
                },
                (EventType::DELETE_ROWS_EVENT, Some(b), _) => Change::Delete {
                    table: table.clone(),
                    row: b,
                },
                (EventType::UPDATE_ROWS_EVENT, Some(b), Some(a)) => {
                    if table.key.iter().all(|&i| b[i] == a[i]) {
                        Change::Upsert {
                            table: table.clone(),
                            before: Some(b),
                            row: a,
                        }
                    } else {
                        Change::Rekey {
                            table: table.clone(),
                            before: b,
                            after: a,
                        }
                    }
                }
                _ => {
                    return Err(Error::definite(
                        format!("{db}.{name}: row event without the image it needs"),
                        "set binlog_row_image=FULL on the source",
                    ))
                }
            });
        }
        match self.current.as_mut() {
            Some(t) => t.changes.extend(changes),
            None => {
                return Err(Error::definite(
                    "source binlog: row event outside a transaction",
                    "report this with the source version",
                ))
            }
        }
        Ok(())
    }
}

fn convert(table: &Table, row: mysql_async::binlog::row::BinlogRow) -> Result<Vec<Value>> {
    use mysql_async::binlog::value::BinlogValue;
    let values = row.unwrap();
    if values.len() != table.columns.len() {
        return Err(Error::definite(
            format!(
                "{}: binlog image has {} of {} columns",
                table.full_name(),
                values.len(),
                table.columns.len()
            ),
            "set binlog_row_image=FULL on the source",
        ));
    }
    let mut out = Vec::with_capacity(values.len());
    for (v, col) in values.into_iter().zip(&table.columns) {
        let value = match v {
            BinlogValue::Value(v) => {
                decode::from_binlog(col, v).map_err(|e| e.context(table.full_name()))?
            }
            other => {
                return Err(Error::definite(
                    format!(
                        "{}: column `{}`: MySQL JSON binlog value {other:?} is not MariaDB's",
                        table.full_name(),
                        col.name
                    ),
                    "report this with the source version",
                ))
            }
        };
        out.push(value);
    }
    Ok(out)
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
