//! Streaming from a GTID position (notes/mariadb-binlog.md): `@mariadb_slave_capability=4`,
//! `@slave_connect_state`, strict mode, heartbeats, and a read timeout around every read.
//! Rows are buffered until their transaction ends (a transaction larger than `PART_BYTES` of
//! decoded changes is handed on in parts); a partial transaction is dropped on error, and the
//! caller reconnects from the last applied position.
//!
//! Every event type and every statement is either handled or stops the reader with an error
//! that names it: nothing is skipped unless it is outside the migrated selection, already in
//! the snapshot's copy (`Horizons`), or known to change nothing a replica must mirror.

use super::events;
use super::query::{self, QueryContext};
use super::route::{self, Route, Scope};
use super::{Change, Ddl, Transaction};
use crate::config::{Endpoint, Filter};
use crate::db::{self, quote, Session};
use crate::error::{Error, Result};
use crate::position::{horizon::Horizons, BinlogPlace, FilePos, Position};
use crate::schema::{self, Storage, Table};
use crate::sql::lexer::Mode;
use crate::sql::statement::{self, Statement};
use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData};
use mysql_async::binlog::EventType;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEARTBEAT: Duration = Duration::from_secs(1);
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A transaction holding more decoded changes than this is handed on in parts, so one huge
/// source transaction does not have to fit in memory.
pub const PART_BYTES: usize = 8 << 20;
/// utf8mb4_general_ci: the client character set of statements migrate writes itself.
const UTF8MB4_COLLATION: u16 = 45;

/// Table descriptions for decoding row events, read from the target (which mirrors the source
/// at the applied position). Cleared after each DDL.
pub struct SchemaCache {
    conn: Conn,
    tables: HashMap<(String, String), Arc<Table>>,
    charsets: HashMap<u16, String>,
}

impl SchemaCache {
    pub async fn new(target: &Endpoint) -> Result<SchemaCache> {
        Ok(SchemaCache {
            conn: db::connect(target, Session::Meta)
                .await
                .map_err(|e| e.context("target"))?,
            tables: HashMap::new(),
            charsets: HashMap::new(),
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

    /// `sql` (in the character set of collation `collation`) as UTF-8, for classification
    /// and messages. Conversion of non-UTF-8 text is done by the target server itself.
    pub async fn utf8_text(&mut self, sql: &[u8], collation: u16) -> Result<String> {
        if sql.is_ascii() {
            return Ok(String::from_utf8_lossy(sql).into_owned());
        }
        let charset = match self.charsets.get(&collation) {
            Some(c) => c.clone(),
            None => {
                let c = db::query_one(
                    &mut self.conn,
                    &format!(
                        "SELECT CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID = {collation}"
                    ),
                )
                .await?
                .unwrap_or_else(|| "binary".into());
                self.charsets.insert(collation, c.clone());
                c
            }
        };
        if charset.starts_with("utf8") || charset == "binary" {
            return Ok(String::from_utf8_lossy(sql).into_owned());
        }
        let mut convert = format!("SELECT CONVERT(_{charset} ");
        crate::value::encode::push_hex(&mut convert, sql);
        convert.push_str(" USING utf8mb4)");
        let converted = db::query_one(&mut self.conn, &convert).await?;
        Ok(converted.unwrap_or_else(|| String::from_utf8_lossy(sql).into_owned()))
    }
}

pub struct Reader {
    stream: BinlogStream,
    filter: Filter,
    horizons: Arc<Horizons>,
    /// Transaction being assembled.
    current: Option<Transaction>,
    /// Decoded bytes of `current.changes`.
    current_bytes: usize,
    /// `current` already handed on some parts.
    streaming: bool,
    standalone: bool,
    pub file: String,
    pub pos: u64,
    ready: VecDeque<Item>,
    warned: HashSet<String>,
    /// The reader is past every horizon: no event is in a copy any more.
    past_horizons: bool,
    /// The source writes CRC32 checksums into its binlog events.
    checksum: bool,
    /// A format description has been read on this connection (checksums are known).
    seen_format: bool,
    /// The source's `@@server_id`.
    pub server_id: String,
    /// Time spent waiting for the stream since it last delivered anything (an event or a
    /// heartbeat).
    silent: Duration,
    /// Offset of the event being handled (`pos` is its end).
    event_at: u64,
    /// The dump started at a stored place (not by GTID).
    by_place: bool,
}

/// What `Reader::next` yields.
pub enum Item {
    Transaction(Transaction),
    /// One part of a transaction too large to hold; the rest follows.
    Part(Transaction),
    /// No event for a while between transactions (flush what you have).
    Idle,
    /// A DDL inside a transaction (CREATE TABLE ... SELECT): apply it, then keep reading
    /// the same transaction.
    /// The DDL and the GTID of the transaction it opens.
    EarlyDdl(String, Ddl),
}

/// The source must have every transaction the target already applied (after a failover to a
/// replica that had not received all of them, the target is ahead of it): otherwise an error
/// naming the missing GTIDs.
pub fn ensure_source_has(has: &Position, source: &Endpoint, applied: &Position) -> Result<()> {
    if has.contains(applied) {
        return Ok(());
    }
    let missing: Vec<String> = applied
        .gtids()
        .filter(|g| !has.includes(g))
        .map(|g| g.to_string())
        .collect();
    Err(Error::definite(
        format!(
            "source {}: its binlog ends at {has}, but the target already applied {applied} (missing here: {}): this server lacks transactions the target has",
            source.address(),
            missing.join(", ")
        ),
        "point --source at a server that has them (after a failover: a replica that was fully caught up); if they were lost with the old primary, take a new snapshot with a new --state",
    ))
}

/// A connection to the source made ready for reading its binlog (`Reader::open`), before the
/// position to read from is known.
pub struct Opened {
    conn: Conn,
    seen: Seen,
}

/// What `inspect` found on a binlog connection.
struct Seen {
    checksum: bool,
    server_id: String,
    /// The stored place of the applied position, checked on this server.
    place: Option<BinlogPlace>,
}

impl Reader {
    /// Connect for reading the binlog and read the source's settings; follow runs this while it
    /// sets up everything else (each round trip costs tens of ms over a VPN). Over a slow link
    /// (a round trip of `db::FAR_RTT` or more) the stream is compressed unless the URL says
    /// otherwise: follow's catch-up there is bound by the link (bench.sh wan). `place`, the
    /// stored place of the applied position, is checked here (`inspect`).
    pub async fn open(source: &Endpoint, place: Option<&BinlogPlace>) -> Result<Opened> {
        let auto = source.compress_auto && source.compress.is_none();
        let mut ep = source.clone();
        if auto {
            // connected compressed, then measured: a near source costs a second connection
            // (about a millisecond), a far one saves one (three round trips)
            ep.compress = Some(crate::config::COMPRESS_DEFAULT_LEVEL);
        }
        let mut conn = db::connect(&ep, Session::Meta).await?;
        let (mut seen, rtt) = inspect(&mut conn, place).await?;
        if auto {
            if rtt >= db::FAR_RTT {
                tracing::info!(
                    "source round trip {:.1} ms: compressing the binlog stream (?compress=false to turn it off)",
                    rtt.as_secs_f64() * 1000.0
                );
            } else {
                // the server and the place are checked again on the connection that dumps:
                // behind a load balancer or a moved address it may be another server
                conn = db::connect(source, Session::Meta).await?;
                seen = inspect(&mut conn, place).await?.0;
            }
        }
        Ok(Opened { conn, seen })
    }

    /// Start the dump on `opened` from `start` (follow checked that the source has it:
    /// `ensure_source_has`): at the stored place when it is `start`'s, else by GTID.
    pub async fn start(
        opened: Opened,
        start: &Position,
        server_id: u32,
        filter: Filter,
        horizons: Arc<Horizons>,
    ) -> Result<Reader> {
        let Opened {
            mut conn,
            seen:
                Seen {
                    checksum,
                    server_id: source_server_id,
                    place,
                },
        } = opened;
        let place = place.filter(|p| p.position == start.to_string());
        let mut setup = vec!["SET @mariadb_slave_capability = 4".to_string()];
        if place.is_none() {
            setup.extend([
                format!(
                    "SET @slave_connect_state = {}",
                    quote::string(&start.to_string())
                ),
                "SET @slave_gtid_strict_mode = 1".to_string(),
                "SET @slave_gtid_ignore_duplicates = 0".to_string(),
            ]);
        }
        setup.extend([
            format!("SET @master_heartbeat_period = {}", HEARTBEAT.as_nanos()),
            "SET @master_binlog_checksum = @@global.binlog_checksum".to_string(),
        ]);
        crate::db::run(&mut conn, &setup.join("; "))
            .await
            .map_err(|e| e.context("source binlog set-up"))?;
        let request = match &place {
            Some(p) => {
                tracing::info!(
                    "reading the source binlog from {start} at {}:{} (where it was applied up to)",
                    p.file,
                    p.end
                );
                BinlogStreamRequest::new(server_id)
                    .with_filename(p.file.as_bytes())
                    .with_pos(p.end)
            }
            None => {
                tracing::info!("reading the source binlog from {start} as server_id {server_id}");
                BinlogStreamRequest::new(server_id)
                    .with_filename(b"")
                    .with_pos(4u64)
            }
        };
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| Error::from(e).context("source binlog request"))?;
        Ok(Reader {
            stream,
            filter,
            horizons,
            current: None,
            current_bytes: 0,
            streaming: false,
            standalone: false,
            file: String::new(),
            pos: 0,
            ready: VecDeque::new(),
            warned: HashSet::new(),
            past_horizons: false,
            checksum,
            seen_format: false,
            server_id: source_server_id,
            silent: Duration::ZERO,
            event_at: 0,
            by_place: place.is_some(),
        })
    }

    /// Next whole transaction (or part, or early DDL), or Idle after `idle` without events
    /// between transactions.
    pub async fn next(&mut self, cache: &mut SchemaCache, idle: Duration) -> Result<Item> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(item);
            }
            // the read timeout counts the waiting since the last thing heard, across Idle
            // returns: a stream that went silent (a VPN that black-holes its packets) ends here
            // however often the caller asks in between
            // (only time spent waiting here counts: the caller may pause between asks)
            let left = READ_TIMEOUT.saturating_sub(self.silent);
            let wait = if self.current.is_none() {
                idle.min(left)
            } else {
                left
            };
            let asked = Instant::now();
            let got = tokio::time::timeout(wait, self.stream.next()).await;
            if got.is_err() {
                self.silent += asked.elapsed();
            }
            let ev = match got {
                Err(_) if self.silent >= READ_TIMEOUT => {
                    return Err(Error::transient(format!(
                        "source binlog: no event or heartbeat for {} s",
                        READ_TIMEOUT.as_secs()
                    )))
                }
                Err(_) if self.current.is_none() => return Ok(Item::Idle),
                Err(_) => continue,
                Ok(None) => {
                    return Err(Error::transient(
                        "source binlog: stream closed by the server",
                    ))
                }
                Ok(Some(Err(e))) => {
                    let e = Error::from(e).context("source binlog");
                    // the place's file purged between its check and the dump: the next
                    // attempt finds it gone and reads by GTID
                    if self.by_place && !self.seen_format && e.code() == Some(1236) {
                        return Err(Error::transient(format!(
                            "{} (at the stored place; reading by GTID next)",
                            e.what
                        )));
                    }
                    return Err(e);
                }
                Ok(Some(Ok(ev))) => {
                    self.silent = Duration::ZERO;
                    ev
                }
            };
            self.handle(ev, cache).await?;
        }
    }

    fn here(&self) -> FilePos {
        FilePos::new(&self.file, self.pos)
    }

    fn finish(&mut self, rolled_back: bool) {
        self.standalone = false;
        if !self.past_horizons && !self.file.is_empty() {
            self.past_horizons = self.horizons.last().is_none_or(|h| self.here() > *h);
        }
        let Some(mut t) = self.current.take() else {
            return;
        };
        t.end = self.here();
        t.last_at = self.event_at;
        t.rolled_back = rolled_back;
        t.continued = self.streaming;
        self.streaming = false;
        self.current_bytes = 0;
        self.ready.push_back(Item::Transaction(t));
    }

    fn push_change(&mut self, c: Change) -> Result<()> {
        let size = c.size();
        let Some(t) = self.current.as_mut() else {
            return Err(Error::definite(
                "source binlog: row event outside a transaction",
                "report this with the source version",
            ));
        };
        t.changes.push(c);
        self.current_bytes += size;
        if self.current_bytes >= PART_BYTES && !self.standalone {
            let mut part = t.clone_header();
            part.changes = std::mem::take(&mut t.changes);
            // the memory this part holds, for the read-ahead budget
            part.bytes = self.current_bytes as u64;
            part.end = FilePos::new(&self.file, self.pos);
            part.partial = true;
            part.continued = self.streaming;
            self.streaming = true;
            self.current_bytes = 0;
            self.ready.push_back(Item::Part(part));
        }
        Ok(())
    }

    fn gtid_label(&self) -> String {
        self.current
            .as_ref()
            .map(|t| format!("GTID {}", t.gtid))
            .unwrap_or_else(|| format!("{}:{}", self.file, self.pos))
    }

    async fn handle(&mut self, ev: Event, cache: &mut SchemaCache) -> Result<()> {
        let header = ev.header();
        let raw_type = header.event_type_raw();
        let log_pos = header.log_pos() as u64;
        if log_pos > 0 {
            self.pos = log_pos;
            self.event_at = log_pos.saturating_sub(header.event_size() as u64);
        }
        if let Some(t) = self.current.as_mut() {
            t.bytes += header.event_size() as u64;
        }
        match raw_type {
            events::GTID_EVENT => {
                let g = events::parse_gtid(ev.data(), header.server_id())?;
                if self.current.is_some() {
                    return Err(Error::definite(
                        format!(
                            "source binlog: GTID {} starts inside an unfinished transaction",
                            g.gtid
                        ),
                        "report this with the source version",
                    ));
                }
                let mut t = Transaction::new(g.gtid, header.timestamp(), unix_now());
                t.bytes = header.event_size() as u64;
                t.start = self.event_at;
                self.current = Some(t);
                self.current_bytes = 0;
                self.streaming = false;
                self.standalone = g.standalone;
                if g.xa {
                    return Err(xa_error(&g.gtid.to_string()));
                }
                return Ok(());
            }
            events::GTID_LIST_EVENT
            | events::BINLOG_CHECKPOINT_EVENT
            | events::ANNOTATE_ROWS_EVENT => return Ok(()),
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
                // the artificial ROTATE a GTID connection starts with comes before the first
                // format description, so the library has not stripped its checksum yet
                let raw = r.name_raw();
                // a binlog file name: printable ASCII ending in `.` and 6 or more digits
                let numbered = |name: &[u8]| {
                    let digits = name.iter().rev().take_while(|b| b.is_ascii_digit()).count();
                    digits >= 6
                        && name.len() > digits
                        && name[name.len() - digits - 1] == b'.'
                        && name.iter().all(|b| (0x20..0x7f).contains(b))
                };
                // the artificial ROTATE carries the connection's checksum even after the source
                // turned binlog_checksum off (measured on 10.11: the file after the switch was
                // named "mysql-bin.000007" plus 4 checksum bytes), so a name that is not a binlog
                // file name but is one without its last 4 bytes had them stripped too
                let stray_checksum = log_pos == 0
                    && raw.len() > 4
                    && !numbered(raw)
                    && numbered(&raw[..raw.len() - 4]);
                self.file = if log_pos == 0 && self.checksum && !self.seen_format && raw.len() > 4
                    || stray_checksum
                {
                    binlog_file_name(&raw[..raw.len() - 4])
                } else {
                    binlog_file_name(raw)
                };
                self.pos = r.position();
                if FilePos::new(&self.file, 0).file_number == 0 {
                    return Err(Error::definite(
                        format!("source binlog: a ROTATE event names file {:?}, which has no .NNNNNN number", self.file),
                        "report this with the source version",
                    ));
                }
                tracing::debug!("binlog file {} from {}", self.file, self.pos);
                Ok(())
            }
            // Heartbeats, the format description, and the context events of statement-format
            // changes (whose statements stop the reader below when they touch the selection).
            Some(EventData::FormatDescriptionEvent(_)) => {
                self.seen_format = true;
                Ok(())
            }
            Some(EventData::HeartbeatEvent)
            | Some(EventData::StopEvent)
            | Some(EventData::IntvarEvent(_))
            | Some(EventData::RandEvent(_))
            | Some(EventData::UserVarEvent(_))
            | Some(EventData::BeginLoadQueryEvent(_))
            | Some(EventData::AppendBlockEvent(_))
            | Some(EventData::RowsQueryEvent(_))
            | Some(EventData::IgnorableEvent(_)) => Ok(()),
            Some(EventData::IncidentEvent(i)) => Err(Error::definite(
                format!(
                    "source binlog has an INCIDENT event at {}:{} ({:?}: {}): the source lost changes it could not log, so no replica can stay identical",
                    self.file,
                    log_pos,
                    i.incident_type(),
                    String::from_utf8_lossy(i.message_raw())
                ),
                "take a new snapshot (a native MariaDB replica stops here too)",
            )),
            Some(EventData::TableMapEvent(_)) => Ok(()), // kept by the stream (get_tme)
            Some(EventData::XidEvent(_)) => {
                self.finish(false);
                Ok(())
            }
            Some(EventData::QueryEvent(q)) => {
                let ctx = query::parse(q.status_vars_raw(), header.timestamp())?;
                let schema = q.schema().into_owned();
                self.query(q.query_raw().to_vec(), schema, ctx, cache).await
            }
            Some(EventData::ExecuteLoadQueryEvent(q)) => {
                let schema = q.schema().into_owned();
                if self.db_selected(&schema) {
                    return Err(statement_error(
                        "LOAD DATA",
                        &schema,
                        &self.gtid_label(),
                        &String::from_utf8_lossy(q.query_raw()),
                    ));
                }
                Ok(())
            }
            Some(EventData::LoadEvent(_))
            | Some(EventData::NewLoadEvent(_))
            | Some(EventData::CreateFileEvent(_))
            | Some(EventData::ExecLoadEvent(_))
            | Some(EventData::DeleteFileEvent(_)) => Err(statement_error(
                "LOAD DATA (old event format)",
                "",
                &self.gtid_label(),
                "",
            )),
            Some(EventData::RowsEvent(rows)) => self.rows(&rows, cache).await,
            Some(EventData::XaPrepareLogEvent(_)) => Err(xa_error(&self.gtid_label())),
            Some(other) => Err(Error::definite(
                format!(
                    "source binlog has an event migrate does not handle (type {raw_type}, {:?}) at {}:{}",
                    std::mem::discriminant(&other),
                    self.file,
                    log_pos
                ),
                "report this with the source version; migrate stops rather than skip it",
            )),
            None => Err(Error::definite(
                format!("source binlog has an event of unknown type {raw_type}"),
                "report this with the source version; migrate stops rather than skip it",
            )),
        }
    }

    fn db_selected(&self, db: &str) -> bool {
        !db.is_empty() && self.filter.includes_db(db)
    }

    fn end_standalone(&mut self) {
        if self.standalone {
            self.finish(false);
        }
    }

    /// The migrated FEDERATED table a `TRUNCATE` empties (`schema::Storage::Remote`), if it is one.
    async fn truncates_a_remote_table(
        &self,
        d: &statement::Ddl,
        cache: &mut SchemaCache,
    ) -> Option<String> {
        let [n] = &d.names[..] else { return None };
        if d.verb != statement::Verb::Truncate || !self.filter.includes_table(&n.db, &n.name) {
            return None;
        }
        let t = cache.get(&n.db, &n.name).await.ok()?;
        (t.storage() == Storage::Remote).then(|| t.full_name())
    }

    /// A QUERY event: transaction control, savepoints, DDL, or a statement-format change.
    async fn query(
        &mut self,
        sql: Vec<u8>,
        schema: String,
        ctx: QueryContext,
        cache: &mut SchemaCache,
    ) -> Result<()> {
        let text = cache.utf8_text(&sql, ctx.client_collation()).await?;
        if let Some(f) = ctx.gtid_flags3 {
            if f & (query::FL_START_ALTER | query::FL_COMMIT_ALTER | query::FL_ROLLBACK_ALTER) != 0
            {
                return Err(Error::definite(
                    format!(
                        "source binlog has a two-phase ALTER (binlog_alter_two_phase=ON) at {}: {text}",
                        self.gtid_label()
                    ),
                    "SET GLOBAL binlog_alter_two_phase=OFF on the source and take a new snapshot",
                ));
            }
        }
        let mode = Mode::from_sql_mode(ctx.sql_mode.unwrap_or(0));
        // a source with lower_case_table_names=1 stores and logs names in lowercase (the
        // table maps, the event's database) but its statements keep the case they were
        // written in: `ALTER TABLE Shop.Orders` is about `shop.orders`
        let fold = self.filter.fold_case;
        let unfoldable = std::sync::Mutex::new(None);
        let decode = |b: &[u8]| {
            let name = String::from_utf8_lossy(b).into_owned();
            if !fold {
                return name;
            }
            crate::config::fold_name(&name).unwrap_or_else(|e| {
                if let Ok(mut first) = unfoldable.lock() {
                    first.get_or_insert(e);
                }
                name
            })
        };
        let schema = if fold {
            crate::config::fold_name(&schema)?
        } else {
            schema
        };
        let stmt = statement::classify(text.as_bytes(), mode, &schema, &decode);
        let unfolded = unfoldable.lock().ok().and_then(|mut e| e.take());
        // a DDL whose every object is in a database that is not migrated is skipped whatever
        // its names' case: a name that cannot be folded cannot be a migrated one's (those
        // were folded), unless every database is migrated
        let elsewhere = match &stmt {
            Statement::Ddl(d) => d
                .names
                .iter()
                .chain(&d.uses)
                .chain(d.renames.iter().flat_map(|(a, b)| [a, b]))
                .all(|n| !n.db.is_empty() && !self.db_selected(&n.db)),
            _ => false,
        };
        if let Some(e) = unfolded.filter(|_| !elsewhere) {
            return Err(e.context(format!("{}: {text}", self.gtid_label())));
        }
        match stmt {
            Statement::Begin => Ok(()),
            Statement::Commit => {
                self.finish(false);
                Ok(())
            }
            // Only the non-transactional changes of this group happened on the source.
            Statement::Rollback => {
                self.finish(true);
                Ok(())
            }
            Statement::Savepoint(name) => self.push_change(Change::Savepoint(name)),
            Statement::RollbackTo(name) => self.push_change(Change::RollbackTo(name)),
            Statement::Release(_) => Ok(()),
            Statement::Xa(_) => Err(xa_error(&self.gtid_label())),
            Statement::Ddl(d) => {
                let remote = self.truncates_a_remote_table(&d, cache).await;
                let end = self.here();
                let scope = Scope {
                    filter: &self.filter,
                    horizons: &self.horizons,
                };
                let label = self.gtid_label();
                let routed = match remote {
                    Some(name) => Route::Skip(format!(
                        "{name} is a FEDERATED table: the source emptied its remote table itself, and the target's TRUNCATE would empty it again"
                    )),
                    None => route::route(&d, &scope, &end),
                };
                let ddls = match routed {
                    Route::Apply => vec![Ddl {
                        schema: schema.clone(),
                        sql,
                        text: text.clone(),
                        ctx,
                        statement: d,
                    }],
                    Route::Rewrite(stmts) => {
                        tracing::info!("{label}: {text} is applied as: {}", stmts.join("; "));
                        let mut utf8 = ctx.clone();
                        utf8.charset = Some((
                            UTF8MB4_COLLATION,
                            UTF8MB4_COLLATION,
                            ctx.charset.map_or(UTF8MB4_COLLATION, |c| c.2),
                        ));
                        stmts
                            .into_iter()
                            .map(|s| {
                                // each statement as what it is (a DROP of a rewritten RENAME
                                // is a DROP to the applier)
                                let own = match statement::classify(
                                    s.as_bytes(),
                                    Mode::default(),
                                    &schema,
                                    &decode,
                                ) {
                                    Statement::Ddl(own) => own,
                                    _ => d.clone(),
                                };
                                Ddl {
                                    schema: schema.clone(),
                                    sql: s.clone().into_bytes(),
                                    text: s,
                                    ctx: utf8.clone(),
                                    statement: own,
                                }
                            })
                            .collect()
                    }
                    Route::Skip(why) => {
                        tracing::info!("{label}: not applied ({why}): {}", short(&text));
                        Vec::new()
                    }
                    Route::Fail(what, hint) => {
                        return Err(Error::definite(
                            format!("{label}: {what}: {}", short(&text)),
                            hint,
                        ))
                    }
                };
                if self.standalone {
                    if let Some(t) = self.current.as_mut() {
                        t.ddl.extend(ddls);
                    }
                    self.finish(false);
                } else {
                    // DDL inside a transaction with rows (CREATE TABLE ... SELECT): it must
                    // reach the target before those rows can be decoded
                    let gtid = self
                        .current
                        .as_ref()
                        .map(|t| t.gtid.to_string())
                        .unwrap_or_default();
                    self.ready
                        .extend(ddls.into_iter().map(|d| Item::EarlyDdl(gtid.clone(), d)));
                }
                Ok(())
            }
            Statement::Global(kind) => {
                if self.warned.insert(kind.clone()) {
                    tracing::warn!(
                        "{}: {kind} is server-wide and not replicated (accounts, grants, plugins and servers are set up on the target separately): {}",
                        self.gtid_label(),
                        short(&text)
                    );
                }
                self.end_standalone();
                Ok(())
            }
            Statement::NoEffect(kind) => {
                tracing::debug!("{}: {kind} changes nothing to replicate", self.gtid_label());
                self.end_standalone();
                Ok(())
            }
            Statement::Dml {
                verb,
                qualified_dbs,
            } => {
                if self.db_selected(&schema) || qualified_dbs.iter().any(|d| self.db_selected(d)) {
                    return Err(statement_error(&verb, &schema, &self.gtid_label(), &text));
                }
                self.end_standalone();
                Ok(())
            }
            Statement::Unknown => {
                if self.db_selected(&schema) || self.filter.databases.is_empty() {
                    return Err(Error::definite(
                        format!(
                            "{}: unrecognised statement in the source binlog (default database `{schema}`): {}",
                            self.gtid_label(),
                            short(&text)
                        ),
                        "migrate stops rather than guess what it changes; report the statement",
                    ));
                }
                self.end_standalone();
                Ok(())
            }
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
        let covered = !self.past_horizons && self.horizons.covers_table(&db, &name, &self.here());
        let table = match cache.get(&db, &name).await {
            Ok(t) => t,
            // a covered event of a table the target no longer has (dropped or renamed later in
            // the copy): the copy already holds it, and nothing of it is left to cascade into
            Err(e) if covered && !e.is_transient() && e.what.contains("not found") => return Ok(()),
            // e.g. CREATE TABLE ... SELECT: the rows belong to a table that the DDL of the same
            // transaction creates, and the target does not have it yet
            Err(e) if !e.is_transient() && e.what.contains("not found") => {
                return Err(Error::definite(
                    format!("{db}.{name}: the binlog has rows for it but the target has no such table ({})", self.gtid_label()),
                    format!("create {db}.{name} on the target with the source's definition, or take a new snapshot"),
                ));
            }
            Err(e) => return Err(e),
        };
        match table.storage() {
            Storage::Here => {}
            Storage::Remote => {
                if self.warned.insert(format!("remote {db}.{name}")) {
                    tracing::warn!(
                        "{db}.{name} is a FEDERATED table: its rows are on the server its CONNECTION names, which the source changed itself; its row changes are not written again through the target's table"
                    );
                }
                return Ok(());
            }
            Storage::Union => {
                return Err(Error::definite(
                    format!(
                        "{db}.{name} is a MERGE table, and a change was made through it ({}): the binlog logs it against the MERGE table alone, not against the MyISAM table that holds the row, so it cannot be applied exactly once",
                        self.gtid_label()
                    ),
                    format!("make the application write to the tables {db}.{name} unions instead, then take a new snapshot (a new --state, with --reuse-target)"),
                ));
            }
            Storage::Unknown => {
                return Err(Error::definite(
                    format!(
                        "{db}.{name} uses the {} engine, and its rows changed ({}): migrate does not know where that engine keeps its rows",
                        table.engine,
                        self.gtid_label()
                    ),
                    format!("convert {db}.{name} to InnoDB on the source, or --exclude '{db}.{name}', then take a new snapshot"),
                ));
            }
        }
        // the copy of this table already holds the change; but a child table copied earlier
        // does not hold the cascade it ran on the source: keep the change for that alone
        let cascade_only = if covered {
            let here = self.here();
            let needed = table.has_cascades()
                && table
                    .children
                    .iter()
                    .any(|fk| !self.horizons.covers_table(&fk.db, &fk.table, &here));
            if !needed {
                return Ok(());
            }
            if table.columns.len() as u64 != tme.columns_count() {
                return Err(Error::definite(
                    format!(
                        "{db}.{name}: a change the copy already holds cascaded into a child table copied before it, but the table's columns changed since ({})",
                        self.gtid_label()
                    ),
                    "take the snapshot again while no DDL runs on tables with cascading foreign keys",
                ));
            }
            true
        } else {
            false
        };
        if !table.has_key() && !table.sequence && !table.transactional() {
            return Err(Error::definite(
                format!(
                    "{db}.{name}: changed in the binlog, but it has no primary or NOT NULL unique key and its engine ({}) is not transactional, so its changes cannot be applied exactly once",
                    table.engine
                ),
                format!("add a primary key to {db}.{name}, convert it to InnoDB, or --exclude '{db}.{name}' and take a new snapshot"),
            ));
        }
        if table.columns.len() as u64 != tme.columns_count() {
            return Err(Error::definite(
                format!(
                    "{db}.{name}: binlog has {} columns but the target table has {} ({})",
                    tme.columns_count(),
                    table.columns.len(),
                    self.gtid_label()
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
        let layout = super::rows::TableLayout::from_tme(tme)?;
        if let Err(drift) = layout.check_types(&table) {
            if cascade_only {
                return Err(Error::definite(
                    format!(
                        "{db}.{name}: a change the copy already holds cascaded into a child table copied before it, but the table's column types changed since ({})",
                        self.gtid_label()
                    ),
                    "take the snapshot again while no DDL runs on tables with cascading foreign keys",
                ));
            }
            return Err(drift.context(format!("source binlog at {}", self.gtid_label())));
        }
        let before_image = rows
            .columns_before_image()
            .map(|b| bitmap(b.len(), b.iter()));
        let after_image = rows
            .columns_after_image()
            .map(|b| bitmap(b.len(), b.iter()));
        let (before_bits, after_bits) = match kind {
            EventType::WRITE_ROWS_EVENT => (None, after_image),
            EventType::DELETE_ROWS_EVENT => (before_image, None),
            _ => (before_image, after_image),
        };
        let decoded = super::rows::decode_rows(
            &table,
            &layout,
            rows.rows_data(),
            before_bits.as_deref(),
            after_bits.as_deref(),
        )?;
        let mut changes = Vec::with_capacity(decoded.len());
        for (before, after) in decoded {
            let change = match (kind, before, after) {
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
                        // the before image is only needed to find a keyless row or to run
                        // foreign-key actions; dropping it halves a large update's memory
                        let keep = !table.has_key() || table.has_cascades() || table.sequence;
                        Change::Upsert {
                            table: table.clone(),
                            before: if keep { Some(b) } else { None },
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
            };
            changes.push(change);
        }
        // a session with foreign_key_checks=0: InnoDB ran no foreign-key actions for these rows
        let unchecked = table.has_cascades()
            && rows
                .flags()
                .contains(mysql_async::binlog::RowsEventFlags::NO_FOREIGN_KEY_CHECKS);
        if unchecked {
            self.push_change(Change::ForeignKeyChecks(false))?;
        }
        for c in changes {
            if cascade_only {
                if matches!(c, Change::Upsert { before: None, .. }) {
                    continue; // an insert runs no foreign-key action
                }
                self.push_change(Change::CascadeOnly(Box::new(c)))?;
            } else {
                self.push_change(c)?;
            }
        }
        if unchecked {
            self.push_change(Change::ForeignKeyChecks(true))?;
        }
        Ok(())
    }
}

/// A binlog file name from a ROTATE event's bytes.
fn binlog_file_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// A column bitmap of a rows event as bytes (bit i = column i).
fn bitmap<B: std::ops::Deref<Target = bool>>(len: usize, bits: impl Iterator<Item = B>) -> Vec<u8> {
    let mut v = vec![0u8; len.div_ceil(8)];
    for (i, set) in bits.enumerate() {
        if *set {
            v[i / 8] |= 1 << (i % 8);
        }
    }
    v
}

fn short(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}

fn xa_error(at: &str) -> Error {
    Error::definite(
        format!("source binlog has an XA transaction ({at}), which migrate does not replicate"),
        "finish or roll back XA transactions on the source and stop using XA while migrating (or exclude the tables they write), then take a new snapshot",
    )
}

fn statement_error(verb: &str, schema: &str, at: &str, text: &str) -> Error {
    Error::definite(
        format!(
            "{at}: the source logged a change to a migrated database as a statement ({verb} in `{schema}`), not as row events: {}",
            short(text)
        ),
        "a session ran with binlog_format=STATEMENT or MIXED (it needs SUPER or BINLOG ADMIN to do so): keep every session at ROW, then take a new snapshot of the affected tables",
    )
}

/// Read the source's binlog settings on `conn` (the one that will dump) and check `place`
/// there, in one round trip; the time it took is the round trip.
async fn inspect(conn: &mut Conn, place: Option<&BinlogPlace>) -> Result<(Seen, Duration)> {
    let mut queries = vec![
        "SELECT @@global.log_bin_compress, @@global.binlog_checksum, @@global.server_id"
            .to_string(),
    ];
    let place = place.filter(|p| p.ordered());
    if let Some(p) = place {
        for at in [p.gtid_at, p.last_at] {
            queries.push(format!(
                "SHOW BINLOG EVENTS IN {} FROM {at} LIMIT 1",
                quote::string(&p.file)
            ));
        }
    }
    let asked = Instant::now();
    let (sets, place) = match db::query_each(conn, &queries, "(binlog settings)").await {
        Ok(sets) => (sets, place),
        Err(e) if e.is_transient() || queries.len() == 1 => return Err(e),
        Err(e) => {
            // the place's file purged, no BINLOG MONITOR grant: read by GTID
            tracing::debug!("the stored binlog place is not usable ({e}); reading by GTID");
            (
                db::query_each(conn, &queries[..1], "(binlog settings)").await?,
                None,
            )
        }
    };
    let rtt = asked.elapsed();
    let first = |i: usize| sets.get(i).and_then(|set| set.first());
    let cell = |i: usize, j: usize| {
        first(i)
            .and_then(|row| row.get(j).cloned().flatten())
            .unwrap_or_default()
    };
    let compress = cell(0, 0);
    if compress == "1" || compress.eq_ignore_ascii_case("ON") {
        return Err(Error::definite(
            "source: log_bin_compress=ON: compressed binlog events cannot be read yet",
            "SET GLOBAL log_bin_compress=OFF on the source (events written while it was ON cannot be followed)",
        ));
    }
    let checksum = !cell(0, 1).eq_ignore_ascii_case("NONE") && !cell(0, 1).is_empty();
    let server_id = cell(0, 2);
    // SHOW BINLOG EVENTS columns: Log_name, Pos, Event_type, Server_id, End_log_pos, Info
    let place = place.filter(|p| {
        let gtid = crate::db::consistent::gtid_of_info(&cell(1, 5)).map(|g| g.to_string());
        p.server_id == server_id
            && cell(1, 1) == p.gtid_at.to_string()
            && cell(1, 2) == "Gtid"
            && gtid.as_deref() == Some(p.position.as_str())
            && cell(2, 1) == p.last_at.to_string()
            && matches!(cell(2, 2).as_str(), "Xid" | "Query")
            && cell(2, 4) == p.end.to_string()
    });
    Ok((
        Seen {
            checksum,
            server_id,
            place: place.cloned(),
        },
        rtt,
    ))
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
