//! The one replication loop: binlog reader -> grouped batches -> applier, with an optional
//! stop position. `follow`, the snapshot's catch-up (and later verify's pause-at-GTID and
//! cutover's drain) all run it. Transient errors on either side reconnect with backoff and
//! resume from the checkpoint stored on the target, forever; definite ones are returned.

use crate::apply::{batch::Batch, ddl::SourceDefaults, Applier};
use crate::binlog::stream::{Item, Reader, SchemaCache};
use crate::binlog::{Ddl, Transaction};
use crate::config::{Endpoint, Filter};
use crate::db::{self, monitor, Session};
use crate::error::{Error, Result};
use crate::obs::{metrics, progress};
use crate::position::{BinlogPlace, FilePos, Gtid, Position};
use crate::state::{FollowStatus, Store};
use crate::verify::touched::Touched;

pub mod control;
pub mod restarts;
mod watch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use watch::SourceView;

#[derive(Clone, Debug)]
pub enum Until {
    Forever,
    /// Everything the source had when follow first reached it.
    CaughtUp,
    Gtid(Gtid),
    Position(Position),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnDdl {
    Exec,
    Stop,
    Ignore,
}

pub struct Options {
    /// The migration's id (its row in the target's `_migrate.checkpoints`).
    pub migration: String,
    pub until: Until,
    pub on_ddl: OnDdl,
    pub server_id: u32,
    pub group_size: usize,
    pub max_source_load: Option<u64>,
    pub live_line: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);
/// Whether SIGINT/SIGTERM asked the loop to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

pub fn install_signal_handlers() {
    tokio::spawn(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("stop requested: finishing the current group");
        STOP.store(true, Ordering::SeqCst);
    });
}
/// Counters kept across reconnects.
struct Live {
    status: FollowStatus,
    goal: Option<Position>,
    started: Instant,
    last_status: Instant,
    /// Last plain progress line (not on a terminal).
    last_line: Instant,
    bar: Option<indicatif::ProgressBar>,
    /// The source as the watcher last saw it.
    view: Arc<std::sync::Mutex<SourceView>>,
    /// Where the reader is in the source's binlog (file, offset).
    reader_at: Arc<std::sync::Mutex<(String, u64)>>,
    /// The applied position (also while reconnecting).
    applied: Position,
    /// Where `applied` ends in the source's binlog, if known; and the one last written to
    /// the state store (`follow.binlog_place`).
    place: Option<BinlogPlace>,
    place_stored: Option<BinlogPlace>,
    /// Connected and applying (metric `migrate_up`).
    up: bool,
    warned_oldest: bool,
    /// The watcher's looks at the source not yet fully applied: (unix time, source position),
    /// oldest first; and whether the oldest is the first look of this follow.
    samples: std::collections::VecDeque<(f64, Position)>,
    first_sample_pending: bool,
    /// How many source transactions a target transaction takes now.
    group_limit: GroupLimit,
}

/// Target errors that say another session's locks got in the way: a deadlock (including a
/// metadata-lock one, e.g. with the `LOCK TABLES` of a backup on the target) or a lock wait
/// timeout. Not the link's fault, and the largest group is the likeliest victim again.
const LOCK_CONFLICT_CODES: [u16; 2] = [1213, 1205];

/// The most source transactions one target transaction takes: `--group-size`, or after a lock
/// conflict one, doubling with each commit back to `--group-size`. A group that takes long
/// to apply would otherwise lose to a session that locks the target's tables again and again
/// (a native replica, which applies one transaction at a time, would get through).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupLimit {
    now: usize,
    max: usize,
}

impl GroupLimit {
    fn new(max: usize) -> Self {
        GroupLimit { now: max, max }
    }
    /// After a failed group: back to one transaction if `e` is a lock conflict.
    fn failed(&mut self, e: &Error) {
        if e.code().is_some_and(|c| LOCK_CONFLICT_CODES.contains(&c)) {
            if self.now > 1 {
                tracing::info!("a lock conflict on the target: groups start again from one source transaction and grow back to --group-size");
            }
            self.now = 1;
        }
    }
    fn committed(&mut self) {
        self.now = self.now.saturating_mul(2).min(self.max);
    }
}

fn done(pos: &Position, until: &Until, goal: &Option<Position>) -> bool {
    match until {
        Until::Forever => false,
        Until::CaughtUp => goal.as_ref().is_some_and(|g| pos.contains(g)),
        Until::Gtid(g) => pos.includes(g),
        Until::Position(p) => pos.contains(p),
    }
}

pub async fn follow(
    source: &Endpoint,
    target: &Endpoint,
    filter: &Filter,
    store: &Store,
    start: Position,
    opts: &Options,
) -> Result<Position> {
    let bar = if opts.live_line {
        progress::spinner()
    } else {
        None
    };
    let view = Arc::new(std::sync::Mutex::new(SourceView::default()));
    let watcher = tokio::spawn(watch::watch(
        source.clone(),
        view.clone(),
        opts.max_source_load,
    ));
    let mut live = Live {
        status: store.follow_status()?.unwrap_or_default(),
        goal: None,
        started: Instant::now(),
        last_status: Instant::now(),
        last_line: Instant::now(),
        bar,
        view,
        reader_at: Arc::new(std::sync::Mutex::new((String::new(), 0u64))),
        applied: start.clone(),
        place: stored_place(store)?,
        place_stored: None,
        up: false,
        warned_oldest: false,
        samples: Default::default(),
        first_sample_pending: true,
        group_limit: GroupLimit::new(opts.group_size),
    };
    live.status.pid = Some(std::process::id());
    metrics::phase(if matches!(opts.until, Until::Position(_)) {
        "catch_up"
    } else {
        "follow"
    });
    let mut backoff = crate::db::retry::Backoff::forever();
    let result = loop {
        let applied_before = live.status.trx_applied;
        match follow_once(source, target, filter, store, &start, opts, &mut live).await {
            Ok(pos) => {
                write_status(store, &mut live, &pos, true)?;
                break Ok(pos);
            }
            Err(e) if e.is_transient() && !STOP.load(Ordering::SeqCst) => {
                // a connection that worked for a while starts the backoff over
                if live.status.trx_applied > applied_before {
                    backoff.reset();
                }
                let delay = backoff.delay(&e).unwrap_or(Duration::from_secs(10));
                live.group_limit.failed(&e);
                if live.up || live.status.reconnects == 0 {
                    crate::obs::notify::send(
                        "error",
                        &format!("connection lost, reconnecting: {e}"),
                        serde_json::json!({ "error": e.what, "transient": true }),
                    );
                }
                live.up = false;
                metrics::set("migrate_up", &[], 0.0);
                live.status.reconnects += 1;
                // the side the error names; else the binlog stream's (its errors carry none)
                let side = e.side.unwrap_or("source");
                metrics::add("migrate_reconnects_total", &[("side", side)], 1.0);
                tracing::warn!(
                    side,
                    attempt = live.status.reconnects,
                    "{e}; reconnecting in {delay:?} (attempt {})",
                    live.status.reconnects
                );
                // lag and "behind" keep being measured and reported while waiting
                let until = Instant::now() + delay;
                while Instant::now() < until && !STOP.load(Ordering::SeqCst) {
                    let pos = live.applied.clone();
                    refresh_behind(&mut live);
                    write_status(store, &mut live, &pos, false)?;
                    tokio::time::sleep(Duration::from_millis(250).min(delay)).await;
                }
            }
            Err(e) => break Err(e),
        }
    };
    watcher.abort();
    if let Some(b) = &live.bar {
        progress::spinner_done(b);
    }
    metrics::phase("stopped");
    result
}

/// Update "behind" and lag from the watcher's looks at the source. Lag is 0 when nothing is
/// behind; otherwise the time since the oldest look at the source that showed a transaction
/// still not applied (it keeps growing while follow cannot apply: an outage, a stalled target);
/// when follow has been behind since its first look, the age of the last applied transaction's
/// commit (a backlog from before follow started).
fn refresh_behind(live: &mut Live) {
    let view = live.view.lock().map(|v| v.clone()).unwrap_or_default();
    let now = crate::binlog::stream::unix_now();
    if let Some(p) = &view.position {
        if live
            .samples
            .back()
            .is_none_or(|(t, q)| q != p || now - t >= 2.0)
        {
            live.samples.push_back((now, p.clone()));
        }
    }
    while live
        .samples
        .front()
        .is_some_and(|(_, p)| live.applied.contains(p))
    {
        live.samples.pop_front();
        live.first_sample_pending = false;
    }
    if let Some(trx) = view.behind(&live.applied) {
        live.status.events_behind = Some(trx);
        let at = live.reader_at.lock().map(|a| a.clone()).unwrap_or_default();
        let (bytes, oldest) = view.bytes_after(&at);
        live.status.bytes_behind = bytes.or(live.status.bytes_behind);
        if oldest && !live.warned_oldest {
            live.warned_oldest = true;
            tracing::warn!("follow is reading the source's oldest binlog file {}: purging it now would lose the position", at.0);
        }
        let since_look = live.samples.front().map(|(t, _)| (now - t).max(0.0));
        live.status.lag_seconds = Some(if trx == 0 {
            0.0
        } else if live.first_sample_pending {
            live.status
                .last_commit
                .map(|c| (now - c).max(0.0))
                .or(since_look)
                .unwrap_or(0.0)
        } else {
            since_look.unwrap_or(0.0)
        });
    }
}

/// The state-store key of the applied position's place in the source's binlog.
const PLACE_KEY: &str = "follow.binlog_place";

/// The place stored by the last follow (used only if it is the target's checkpoint's, on the
/// same server, with its GTID still there: `Reader::open`).
fn stored_place(store: &Store) -> Result<Option<BinlogPlace>> {
    Ok(store
        .get(PLACE_KEY)?
        .and_then(|t| serde_json::from_str(&t).ok()))
}

/// Where transaction `t` ends in the binlog of source `server_id`, when the position after
/// it, `after`, is its one GTID (a single domain) and its offsets are in order
/// (`BinlogPlace::ordered`); else a reconnect goes by GTID.
fn place_of(server_id: &str, t: &TrxMarks, after: &Position) -> Option<BinlogPlace> {
    let mut gtids = after.gtids();
    let only = gtids.next()?;
    if gtids.next().is_some() || *only != t.gtid || t.end.file.is_empty() || server_id.is_empty() {
        return None;
    }
    Some(BinlogPlace {
        position: after.to_string(),
        server_id: server_id.to_string(),
        file: t.end.file.clone(),
        gtid_at: t.start,
        last_at: t.last_at,
        end: t.end.offset,
    })
    .filter(BinlogPlace::ordered)
}

/// A transaction's GTID and offsets in the source's binlog (what `place_of` needs of it).
struct TrxMarks {
    gtid: Gtid,
    start: u64,
    last_at: u64,
    end: FilePos,
}

impl TrxMarks {
    fn of(t: &Transaction) -> TrxMarks {
        TrxMarks {
            gtid: t.gtid,
            start: t.start,
            last_at: t.last_at,
            end: t.end.clone(),
        }
    }
}

fn write_status(store: &Store, live: &mut Live, pos: &Position, force: bool) -> Result<()> {
    if !force && live.last_status.elapsed() < Duration::from_secs(1) {
        return Ok(());
    }
    live.last_status = Instant::now();
    live.status.applied_gtid = pos.to_string();
    live.status.updated_at = crate::state::now();
    store.write_follow_status(&live.status)?;
    if live.place != live.place_stored {
        let text = live
            .place
            .as_ref()
            .and_then(|p| serde_json::to_string(p).ok())
            .unwrap_or_default();
        store.set(PLACE_KEY, &text)?;
        live.place_stored = live.place.clone();
    }
    let lag = live.status.lag_seconds.unwrap_or(0.0);
    metrics::set("migrate_follow_lag_seconds", &[], lag);
    if let Some(c) = live.status.last_commit {
        metrics::set("migrate_follow_last_applied_timestamp_seconds", &[], c);
    }
    metrics::set("migrate_up", &[], if live.up { 1.0 } else { 0.0 });
    metrics::set(
        "migrate_throttled",
        &[],
        if live.view.lock().map(|v| v.busy).unwrap_or(false) {
            1.0
        } else {
            0.0
        },
    );
    metrics::set(
        "migrate_follow_events_behind",
        &[],
        live.status.events_behind.unwrap_or(0) as f64,
    );
    metrics::set(
        "migrate_follow_bytes_behind",
        &[],
        live.status.bytes_behind.unwrap_or(0) as f64,
    );
    let rate = live.status.rows_applied as f64 / live.started.elapsed().as_secs_f64().max(0.001);
    let line = format!(
        "applied {pos}  lag {lag:.0} s  behind {} trx / {}  {} trx, {} rows ({rate:.0} rows/s)",
        live.status.events_behind.unwrap_or(0),
        progress::human_bytes(live.status.bytes_behind.unwrap_or(0)),
        live.status.trx_applied,
        live.status.rows_applied
    );
    match &live.bar {
        Some(b) => b.set_message(line),
        None if live.last_line.elapsed() >= Duration::from_secs(5) => {
            live.last_line = Instant::now();
            tracing::info!(
                gtid = %pos,
                lag_s = lag,
                events_behind = live.status.events_behind.unwrap_or(0),
                bytes_behind = live.status.bytes_behind.unwrap_or(0),
                transactions = live.status.trx_applied,
                rows = live.status.rows_applied,
                "{line}"
            );
        }
        None => {}
    }
    Ok(())
}
/// What the reader task hands to the apply loop.
enum Msg {
    Trx(Transaction, OwnedSemaphorePermit),
    /// One part of a transaction too large to hold; more parts or the final `Trx` follow.
    Part(Transaction, OwnedSemaphorePermit),
    /// A DDL transaction: the reader waits for the ack before decoding further rows, because
    /// later row events must be decoded with the changed table.
    Ddl(Transaction, oneshot::Sender<()>),
    /// A DDL inside a transaction (CREATE TABLE ... SELECT), applied before its rows are
    /// decoded; the transaction itself follows as `Trx`. (GTID of the transaction, DDL)
    EarlyDdl(String, Ddl, oneshot::Sender<()>),
    /// No event arrived for a moment: apply what is pending.
    Idle,
    Failed(Error),
}

/// Memory the reader may run ahead of the applier, in KiB of binlog.
const READ_AHEAD_KIB: u32 = 32 * 1024;

/// The reader task: decodes while the applier writes (they overlap).
async fn read_ahead(
    mut reader: Reader,
    mut cache: SchemaCache,
    tx: mpsc::Sender<Msg>,
    budget: Arc<Semaphore>,
    at: Arc<std::sync::Mutex<(String, u64)>>,
) {
    let mut idle_sent = false;
    loop {
        let wait = if idle_sent {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(5)
        };
        let msg = match reader.next(&mut cache, wait).await {
            Ok(Item::Idle) => {
                idle_sent = true;
                Msg::Idle
            }
            Ok(Item::EarlyDdl(gtid, ddl)) => {
                let (ack, done) = oneshot::channel();
                if tx.send(Msg::EarlyDdl(gtid, ddl, ack)).await.is_err() || done.await.is_err() {
                    return;
                }
                cache.clear();
                continue;
            }
            Ok(Item::Part(t)) => {
                idle_sent = false;
                let kib = ((t.bytes / 1024) as u32).clamp(1, READ_AHEAD_KIB);
                let Ok(permit) = budget.clone().acquire_many_owned(kib).await else {
                    return;
                };
                Msg::Part(t, permit)
            }
            Ok(Item::Transaction(t)) => {
                idle_sent = false;
                if let Ok(mut a) = at.lock() {
                    *a = (reader.file.clone(), reader.pos);
                }
                if !t.ddl.is_empty() {
                    let (ack, done) = oneshot::channel();
                    if tx.send(Msg::Ddl(t, ack)).await.is_err() || done.await.is_err() {
                        return;
                    }
                    cache.clear();
                    continue;
                }
                let kib = ((t.bytes / 1024) as u32).clamp(1, READ_AHEAD_KIB);
                let Ok(permit) = budget.clone().acquire_many_owned(kib).await else {
                    return;
                };
                Msg::Trx(t, permit)
            }
            Err(e) => {
                let _ = tx.send(Msg::Failed(e)).await;
                return;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// What follow needs besides the binlog connection: the applier (and the position it
/// applied), the horizons in force, the target schema cache.
struct Ready {
    applier: Applier,
    pos: Position,
    horizons: Arc<crate::position::horizon::Horizons>,
    cache: SchemaCache,
    /// The source folds names (`lower_case_table_names=1`, the target too).
    fold_names: bool,
}

enum Prepared {
    Ready(Box<Ready>),
    /// The stop condition holds already, at this position.
    Done(Position),
}

async fn prepare(
    source: &Endpoint,
    target: &Endpoint,
    store: &Store,
    start: &Position,
    opts: &Options,
    live: &mut Live,
) -> Result<Prepared> {
    let mut mon = db::connect(source, Session::Meta)
        .await
        .map_err(|e| e.context("source"))?;
    let defaults = Arc::new(SourceDefaults::read(&mut mon).await?);
    let fold_names = defaults.lower_case_table_names == 1;
    let mut horizons = Arc::new(store.horizons()?);
    let mut applier = Applier::connect(target, &opts.migration, horizons.clone(), defaults).await?;
    let pos = applier.checkpoint().unwrap_or_else(|| start.clone());
    // the horizons are binlog positions of the server the snapshot read: once the target has
    // the GTID past the last of them, no event to come is in a copy, and positions of another
    // server (a promoted replica after a failover, the primary after a snapshot read from its
    // replica) must never be compared with them
    let past = store
        .get("snapshot.gtid_past_horizons")?
        .unwrap_or_default();
    if !past.is_empty() && pos.contains(&Position::parse(&past)?) {
        horizons = Arc::new(Default::default());
        applier.set_horizons(horizons.clone());
    } else if horizons.last().is_some() {
        // the horizons are still in force: only the server the snapshot read may be followed
        let snapshot_server = store.get("snapshot.server_id")?.unwrap_or_default();
        let here = db::query_one(&mut mon, "SELECT @@global.server_id")
            .await?
            .unwrap_or_default();
        if !snapshot_server.is_empty() && here != snapshot_server {
            return Err(Error::definite(
                format!(
                    "the snapshot's catch-up is not finished and {} (server_id {here}) is not the server the snapshot read (server_id {snapshot_server}): binlog positions of two servers cannot be compared",
                    source.address()
                ),
                "finish it against the server the snapshot read (`migrate snapshot` again with the same --state and --snapshot-source, or follow with that server as --source), then follow this one",
            ));
        }
    }
    // one look at the source's position: it must have what the target applied, and it is
    // the goal of --until-caught-up
    let now = monitor::source_position(&mut mon).await?;
    crate::binlog::stream::ensure_source_has(&now, source, &pos)?;
    if matches!(opts.until, Until::CaughtUp) && live.goal.is_none() {
        tracing::info!("following until caught up with {now}");
        live.goal = Some(now);
    }
    if done(&pos, &opts.until, &live.goal) {
        return Ok(Prepared::Done(pos));
    }
    let cache = SchemaCache::new(target).await?;
    Ok(Prepared::Ready(Box::new(Ready {
        applier,
        pos,
        horizons,
        cache,
        fold_names,
    })))
}

async fn follow_once(
    source: &Endpoint,
    target: &Endpoint,
    filter: &Filter,
    store: &Store,
    start: &Position,
    opts: &Options,
    live: &mut Live,
) -> Result<Position> {
    // the binlog connection is opened while the rest is set up: each round trip costs tens
    // of ms over a VPN
    let place = live.place.clone();
    let (ready, opened) = tokio::join!(
        prepare(source, target, store, start, opts, live),
        Reader::open(source, place.as_ref()),
    );
    let Ready {
        mut applier,
        mut pos,
        horizons,
        cache,
        fold_names,
    } = match ready? {
        Prepared::Ready(r) => *r,
        // nothing to read: what the binlog connection found does not matter
        Prepared::Done(pos) => return Ok(pos),
    };
    let opened = opened?;
    let filter = filter.folded_if(fold_names)?;
    restarts::check(target, store, &filter).await?;
    let reader = Reader::start(opened, &pos, opts.server_id, filter, horizons).await?;
    let server_id = reader.server_id.clone();
    let (tx, mut rx) = mpsc::channel(1024);
    let reader_at = live.reader_at.clone();
    let budget = Arc::new(Semaphore::new(READ_AHEAD_KIB as usize));
    let task = tokio::spawn(read_ahead(reader, cache, tx, budget, reader_at.clone()));
    if !live.up && live.status.reconnects > 0 {
        crate::obs::notify::send(
            "recovered",
            &format!(
                "reconnected after {} attempt(s); applying from {pos}",
                live.status.reconnects
            ),
            serde_json::json!({ "reconnects": live.status.reconnects }),
        );
    }
    live.up = true;
    live.applied = pos.clone();
    let mut group = Group {
        applier: &mut applier,
        store,
        touched: Touched::default(),
        recording: false,
        batch: Batch::default(),
        permits: Vec::new(),
        batch_pos: pos.clone(),
        in_part: false,
        server_id,
        last: None,
    };
    let result = apply_loop(&mut group, &mut rx, &mut pos, opts, live, store).await;
    if result.is_err() && task.is_finished() {
        if let Err(e) = task.await {
            if e.is_panic() {
                let msg = e
                    .into_panic()
                    .downcast::<String>()
                    .map(|s| *s)
                    .or_else(|p| p.downcast::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(Error::definite(
                    format!("internal error in the binlog reader: {msg}"),
                    "report this bug with the log; migrate stops rather than skip events",
                ));
            }
        }
        return result.map(|()| pos);
    }
    task.abort();
    result.map(|()| pos)
}

/// The group being assembled: collapsed operations not yet written, transactions already
/// written inside the open target transaction, and the position after them.
struct Group<'a> {
    applier: &'a mut Applier,
    store: &'a Store,
    /// The keys the group changes, recorded in the state store before it commits.
    touched: Touched,
    /// A verify has started (`verify.touched_from`): changed keys are recorded from then on
    /// (before, a verify still to come covers them). Refreshed in the same control poll that
    /// reads pause requests, so it is on before the first pause of that verify is seen.
    recording: bool,
    batch: Batch,
    permits: Vec<OwnedSemaphorePermit>,
    batch_pos: Position,
    /// Inside a transaction that arrives in parts: the group cannot commit before its end.
    in_part: bool,
    /// The source's `@@server_id`.
    server_id: String,
    /// The last transaction of the group (its place is taken at commit: `place_of`).
    last: Option<TrxMarks>,
}

impl Group<'_> {
    fn is_empty(&self) -> bool {
        self.batch.is_empty() && !self.applier.is_open()
    }
    /// Record (once recording) that a DDL is about to run, with the rows its transaction
    /// changes: the cutover's proof cannot cover a DDL by keys and asks for a new verify.
    fn touch_ddl(&self, t: Option<&Transaction>) -> Result<()> {
        if !self.recording {
            return Ok(());
        }
        let mut touched = Touched::default();
        if let Some(t) = t {
            touched.add(t);
        }
        touched.ddl = true;
        self.store.touch(&touched)
    }

    /// Write what is pending, record the position, commit.
    async fn commit(&mut self, pos: &mut Position, live: &mut Live) -> Result<()> {
        if self.is_empty() || self.in_part {
            return Ok(());
        }
        self.applier.write_batch(&mut self.batch).await?;
        if self.recording {
            self.store.touch(&self.touched)?;
        }
        self.touched.clear();
        self.applier
            .commit(&self.batch_pos, self.batch.last_ts)
            .await?;
        let batch = std::mem::take(&mut self.batch);
        record_applied(&batch, live);
        live.group_limit.committed();
        self.permits.clear();
        *pos = self.batch_pos.clone();
        live.applied = pos.clone();
        live.place = self
            .last
            .take()
            .and_then(|t| place_of(&self.server_id, &t, &self.batch_pos));
        Ok(())
    }
}

fn record_applied(batch: &Batch, live: &mut Live) {
    if batch.last_ts > 0 {
        live.status.last_commit = Some(batch.last_commit);
        metrics::set(
            "migrate_follow_last_applied_timestamp_seconds",
            &[],
            batch.last_commit,
        );
    }
    live.status.trx_applied += batch.transactions as u64;
    live.status.rows_applied += batch.rows as u64;
    metrics::add(
        "migrate_transactions_applied_total",
        &[],
        batch.transactions as f64,
    );
    for ((table, kind), n) in &batch.counts {
        metrics::rows_applied(table, kind, *n as f64);
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply_loop(
    g: &mut Group<'_>,
    rx: &mut mpsc::Receiver<Msg>,
    pos: &mut Position,
    opts: &Options,
    live: &mut Live,
    store: &Store,
) -> Result<()> {
    let mut last_control = Instant::now() - Duration::from_secs(1);
    let mut pause: Option<control::PauseRequest> = None;
    loop {
        refresh_behind(live);
        // a pause requested through the state store (verify, cutover): checked every 25 ms
        // (a read of the WAL-mode state file; cutover's write downtime waits on it)
        if last_control.elapsed() >= Duration::from_millis(25) {
            last_control = Instant::now();
            if !g.recording && store.get("verify.touched_from")?.is_some() {
                g.recording = true;
                // cutover checks that the follower records changed keys (an older one did not)
                store.set("follow.records_keys", &std::process::id().to_string())?;
            }
            pause = control::request(store)?.filter(|r| !r.orphaned());
            if control::stop_requested(store)? {
                tracing::info!("stop requested through the state store (cutover)");
                STOP.store(true, Ordering::SeqCst);
            }
        }
        let pause_at = match pause.as_ref().and_then(|p| p.at.as_deref()) {
            Some(a) => Some(Position::parse(a)?),
            None => None,
        };
        // stop taking transactions once the pause position is reached (never inside a
        // transaction that arrives in parts: its end must be read first)
        let hold = pause.is_some()
            && !g.in_part
            && pause_at.as_ref().is_none_or(|t| g.batch_pos.contains(t));
        let stop = STOP.load(Ordering::SeqCst) && !g.in_part;
        // while the source is busy (--max-source-load), reading pauses; status goes on
        let busy = live.view.lock().map(|v| v.busy).unwrap_or(false) && !g.in_part;
        let msg = if stop || hold {
            Msg::Idle
        } else if busy {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Msg::Idle
        } else {
            match tokio::time::timeout(Duration::from_millis(25), rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(Error::transient("binlog reader stopped")),
                Err(_) => Msg::Idle,
            }
        };
        let mut flush = matches!(msg, Msg::Idle);
        match msg {
            Msg::Failed(e) => return Err(e),
            Msg::Idle => {}
            Msg::EarlyDdl(gtid, ddl, ack) => {
                g.commit(pos, live).await?;
                g.touch_ddl(None)?;
                if g.in_part {
                    return Err(Error::definite(
                        format!("GTID {gtid}: DDL in the middle of a transaction larger than memory allows: {}", ddl.text),
                        "report this; as a workaround split the CREATE TABLE ... SELECT on the source",
                    ));
                }
                match opts.on_ddl {
                    OnDdl::Stop => {
                        return Err(Error::definite(
                            format!("DDL inside a transaction after {pos}: {}", ddl.text),
                            "apply it on the target yourself, then restart follow with --on-ddl ignore for this one",
                        ))
                    }
                    OnDdl::Exec => {
                        let statuses = g
                            .applier
                            .exec_ddl(&gtid, pos, std::slice::from_ref(&ddl))
                            .await?;
                        record_events(store, statuses)?;
                    }
                    OnDdl::Ignore => {}
                }
                let _ = ack.send(());
                metrics::add("migrate_ddl_applied_total", &[], 1.0);
            }
            Msg::Ddl(t, ack) => {
                g.commit(pos, live).await?;
                g.touch_ddl(Some(&t))?;
                let before = g.batch_pos.clone();
                let gtid = t.gtid;
                let (t_ts, t_commit) = (t.timestamp, t.commit_estimate());
                g.batch_pos.advance(gtid);
                let place = place_of(&g.server_id, &TrxMarks::of(&t), &g.batch_pos);
                match opts.on_ddl {
                    OnDdl::Stop => {
                        return Err(Error::definite(
                            format!(
                                "DDL at {gtid}: {}",
                                t.ddl.iter().map(|d| d.text.as_str()).collect::<Vec<_>>().join("; ")
                            ),
                            "apply it on the target yourself, then restart follow with --on-ddl ignore for this one",
                        ))
                    }
                    OnDdl::Exec => {
                        let statuses = g.applier.apply_ddl(&t, &before, &g.batch_pos).await?;
                        record_events(store, statuses)?;
                    }
                    OnDdl::Ignore => {
                        let mut t = t;
                        t.ddl.clear();
                        g.applier.apply_ddl(&t, &before, &g.batch_pos).await?;
                    }
                }
                let _ = ack.send(());
                *pos = g.batch_pos.clone();
                live.applied = pos.clone();
                live.place = place;
                if t_ts > 0 {
                    live.status.last_commit = Some(t_commit);
                    metrics::set(
                        "migrate_follow_last_applied_timestamp_seconds",
                        &[],
                        t_commit,
                    );
                }
                live.status.trx_applied += 1;
                metrics::add("migrate_ddl_applied_total", &[], 1.0);
                metrics::add("migrate_transactions_applied_total", &[], 1.0);
            }
            Msg::Part(t, permit) => {
                if !g.in_part {
                    // a transaction in parts starts its own target transaction: a SAVEPOINT in
                    // a later part must not follow another transaction's non-transactional
                    // changes (see `sets_savepoint`)
                    g.commit(pos, live).await?;
                }
                g.touched.add(&t);
                g.applier.write_batch(&mut g.batch).await?;
                // the batched transactions' rows are on the target now: their read-ahead
                // budget goes back to the reader (the group cannot commit before this
                // transaction's last part, which the reader must be able to read)
                g.permits.clear();
                g.applier
                    .apply_exact(&t)
                    .await
                    .map_err(|e| e.context(format!("target, applying GTID {}", t.gtid)))?;
                g.batch.count(&t);
                g.in_part = true;
                drop(permit);
            }
            Msg::Trx(t, permit) => {
                let gtid = t.gtid;
                let marks = TrxMarks::of(&t);
                g.touched.add(&t);
                if t.needs_exact_apply() {
                    if t.sets_savepoint() {
                        g.commit(pos, live).await?;
                    }
                    g.applier.write_batch(&mut g.batch).await?;
                    g.permits.clear();
                    g.applier
                        .apply_exact(&t)
                        .await
                        .map_err(|e| e.context(format!("target, applying GTID {}", t.gtid)))?;
                    g.batch.count(&t);
                    g.in_part = false;
                    drop(permit);
                } else {
                    g.batch.add(t);
                    g.permits.push(permit);
                }
                g.batch_pos.advance(gtid);
                g.last = Some(marks);
                if g.batch.transactions >= live.group_limit.now
                    || g.batch.rows >= 200_000
                    || g.batch.bytes >= 64 << 20
                {
                    flush = true;
                }
                if done(&g.batch_pos, &opts.until, &live.goal) {
                    flush = true;
                }
            }
        }
        if flush {
            g.commit(pos, live).await?;
        }
        let finished = (done(pos, &opts.until, &live.goal) || stop) && !g.in_part;
        if finished {
            g.commit(pos, live).await?;
            // final figures for `status`
            refresh_behind(live);
        }
        write_status(store, live, pos, finished)?;
        if finished {
            return Ok(());
        }
        if hold && !g.applier.is_open() && g.batch.is_empty() {
            if let Some(req) = pause.take() {
                // a new request that replaces this one (e.g. "now at P" becomes "at G") is
                // taken at once: moving on for a polling interval could pass G
                pause = wait_paused(&req, pause_at.as_ref(), pos, live, store).await?;
                last_control = Instant::now();
            }
        }
    }
}

/// Paused at `pos` for `req`: report it, keep status fresh, resume when the request goes or
/// is replaced (the replacement is returned).
async fn wait_paused(
    req: &control::PauseRequest,
    at: Option<&Position>,
    pos: &Position,
    live: &mut Live,
    store: &Store,
) -> Result<Option<control::PauseRequest>> {
    let passed = at.is_some_and(|t| !t.contains(pos));
    control::report(
        store,
        &control::Paused {
            id: req.id.clone(),
            at: pos.to_string(),
            passed,
        },
    )?;
    tracing::info!(
        "paused at {pos} on request{}",
        if passed {
            " (already past the requested position)"
        } else {
            ""
        }
    );
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        refresh_behind(live);
        write_status(store, live, pos, false)?;
        if STOP.load(Ordering::SeqCst) {
            return Ok(None);
        }
        if control::stop_requested(store)? {
            tracing::info!("stop requested through the state store (cutover): stopping at {pos}");
            STOP.store(true, Ordering::SeqCst);
            return Ok(None);
        }
        match control::request(store)? {
            Some(r) if r.orphaned() => {
                tracing::warn!(
                    "the process that paused follow (pid {}) is gone; resuming",
                    r.pid
                );
                control::release(store)?;
                return Ok(None);
            }
            Some(r) if r.id == req.id => {}
            next => {
                tracing::info!("resumed at {pos}");
                return Ok(next);
            }
        }
    }
}

/// Remember the status each event should have at cutover (the target's copy is DISABLED).
fn record_events(store: &Store, notes: Vec<crate::apply::EventNote>) -> Result<()> {
    use crate::apply::EventNote;
    for note in notes {
        match note {
            EventNote::Status(n, status) => store.set_source_event(&n.db, &n.name, status)?,
            EventNote::Dropped(n) => store.drop_source_event(&n.db, &n.name)?,
            EventNote::Renamed(from, to) => {
                store.rename_source_event(&from.db, &from.name, &to.db, &to.name)?
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_start_from_one_transaction_after_a_lock_conflict() {
        let mut limit = GroupLimit::new(20_000);
        limit.failed(&Error::transient("connection lost"));
        assert_eq!(limit.now, 20_000, "a lost link is not a lock conflict");
        for code in LOCK_CONFLICT_CODES {
            let mut e = Error::transient("target: server error");
            e.code = Some(code);
            let mut limit = GroupLimit::new(20_000);
            limit.failed(&e.context("target"));
            assert_eq!(limit.now, 1, "error {code}");
            let grown: Vec<usize> = (0..16)
                .map(|_| {
                    limit.committed();
                    limit.now
                })
                .collect();
            assert_eq!(&grown[..4], &[2, 4, 8, 16]);
            assert_eq!(grown[15], 20_000, "back to --group-size, never past it");
        }
    }
}
