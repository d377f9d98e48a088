//! `cutover`: switch the application from the source to the target with writes stopped for
//! as short a time as possible, journaled step by step so a crash at any step resumes or rolls
//! back, and never with both servers writable.
//!
//! Steps (each recorded `started` before and `done` after it runs, in the state store's
//! `cutover_journal`):
//! 1. `freeze`: `read_only=ON` on the source (and on the target, which stays read-only for
//!    applications until the switch; the engine writes with READ ONLY ADMIN).
//! 2. `drain`: wait up to `--drain-timeout` for write transactions open on the source
//!    (`--kill-writers` kills the rest), then take the final GTID: the source's
//!    `gtid_binlog_pos` once it no longer moves. Nothing is written to the source.
//! 3. `catch_up`: the running follow applies exactly up to the final GTID and pauses there.
//! 4. `prove`: the rows at the keys changed on the target since the proof made just before
//!    the freeze (itself of the keys changed since the last full verify) are compared on both
//!    servers (`verify/touched.rs`); a difference aborts.
//! 5. `prepare`: triggers, AUTO_INCREMENT counters, sequences, events (`prepare.rs`).
//! 6. `switch`: `--switch-command` runs with the facts in its environment (the follower
//!    still paused); once it succeeds follow is told to stop for good and the target opens
//!    (`read_only=OFF`).
//!
//! Any failure (or SIGINT/SIGTERM, or the freeze outlasting `--max-downtime`) before the
//! switch aborts: prepare is undone, the source is writable again, follow resumes. After the
//! switch the target is the primary; the source stays read-only.

pub mod preflight;
pub mod prepare;
pub mod replica;
pub mod reverse;

use crate::db::{self, Session};
use crate::error::{Error, Result};
use crate::position::Position;
use crate::replication::control;
use crate::state::Store;
use crate::verify::touched;
use mysql_async::Conn;
use serde_json::json;
use std::time::{Duration, Instant};

/// Longer than InnoDB's `information_schema.INNODB_TRX` cache idle time (100 ms).
const TRX_CACHE_IDLE: Duration = Duration::from_millis(120);

pub const STEPS: &[&str] = &["freeze", "drain", "catch_up", "prove", "prepare", "switch"];

pub struct Options {
    pub drain_timeout: Duration,
    pub kill_writers: bool,
    pub max_downtime: Duration,
    pub switch_command: Option<String>,
    /// The target's native read replicas: the switch waits until they have what the target has.
    pub target_replicas: Vec<crate::config::Endpoint>,
    /// Set up the way back (target -> source) at the switch.
    pub reverse: bool,
    /// The forward state file's path (the reverse one lives next to it).
    pub state_path: std::path::PathBuf,
}

/// What the state store keeps of the cutover under way (meta keys `cutover.*`).
pub struct Cutover<'a> {
    pub store: &'a Store,
    pub id: String,
    pub dbs: Vec<String>,
    pub source_endpoint: &'a crate::config::Endpoint,
    pub target_endpoint: &'a crate::config::Endpoint,
    /// The migrated tables and those with changed keys, described before the freeze (the
    /// `prove` step reads them).
    pub tables: Vec<crate::schema::Table>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub cutover_id: String,
    pub outcome: String,
    /// Freeze of the source to the target open (the write-unavailability window).
    pub downtime_seconds: Option<f64>,
    /// How long the source was read-only (also when the cutover aborted).
    pub source_frozen_seconds: Option<f64>,
    pub final_gtid: Option<String>,
    /// The target's GTID position when it opened (where a way back would start).
    pub target_open_gtid: Option<String>,
    pub steps: Vec<(String, f64)>,
    /// Keys changed since the last full verify, proved equal on both servers (before the
    /// freeze and during it).
    pub rows_verified: Option<u64>,
    pub prepared: Option<prepare::Prepared>,
    pub error: Option<String>,
    /// The reverse follow started after the switch (`--reverse-follow spawn`).
    pub reverse_follow_pid: Option<u32>,
}

/// Test hook: `MIGRATE_CUTOVER_CRASH_AT=step:state` aborts the process right after the journal
/// records that state (the fault tests kill cutover at every step this way).
pub(crate) fn crash_point(step: &str, state: &str) {
    if let Ok(at) = std::env::var("MIGRATE_CUTOVER_CRASH_AT") {
        if at == format!("{step}:{state}") {
            tracing::warn!("MIGRATE_CUTOVER_CRASH_AT={at}: aborting here (test hook)");
            std::process::abort();
        }
    }
}

impl Cutover<'_> {
    fn get(&self, k: &str) -> Result<Option<String>> {
        self.store.get(&format!("cutover.{k}"))
    }
    fn set(&self, k: &str, v: &str) -> Result<()> {
        self.store.set(&format!("cutover.{k}"), v)
    }
    fn started(&self, step: &str) -> Result<()> {
        self.store.journal(&self.id, step, "started", "")?;
        crate::obs::metrics::set(
            "migrate_cutover_step",
            &[],
            (STEPS.iter().position(|s| *s == step).unwrap_or(0) + 1) as f64,
        );
        crash_point(step, "started");
        Ok(())
    }
    fn done(&self, step: &str, detail: serde_json::Value) -> Result<()> {
        self.store
            .journal(&self.id, step, "done", &detail.to_string())?;
        crate::obs::notify::send(
            "cutover_step",
            &format!("cutover {}: step {step} done {detail}", self.id),
            json!({ "cutover_id": self.id, "step": step, "detail": detail }),
        );
        crash_point(step, "done");
        Ok(())
    }
    /// Steps done so far in this cutover.
    pub fn steps_done(&self) -> Result<Vec<String>> {
        Ok(self
            .store
            .journal_of(&self.id)?
            .into_iter()
            .filter(|e| e.state == "done")
            .map(|e| e.step)
            .collect())
    }
}

fn stopping() -> bool {
    crate::replication::stop_requested()
}

/// A frozen server's write-unavailability window: since when, and how long it may last
/// before the cutover (or rollback) gives up and opens it again.
#[derive(Clone, Copy)]
pub struct Freeze {
    /// Unix time of the freeze.
    pub at: f64,
    pub max: Duration,
}

impl Freeze {
    /// Seconds frozen so far.
    pub fn seconds(&self) -> f64 {
        crate::state::unix_now() - self.at
    }
    /// What is left of `max` (at least 100 ms, for a last handshake).
    pub fn remaining(&self) -> Duration {
        self.max
            .saturating_sub(Duration::from_secs_f64(self.seconds().max(0.0)))
            .max(Duration::from_millis(100))
    }
    /// An error when a stop was requested or the freeze outlasted `max`, during `what`.
    pub fn check(&self, what: &str) -> Result<()> {
        if stopping() {
            return Err(Error::definite(
                format!("stop requested during {what}"),
                "run the same command again when ready",
            ));
        }
        if self.seconds() > self.max.as_secs_f64() {
            return Err(Error::definite(
                format!(
                    "frozen {:.1} s during {what}, above --max-downtime {:.1} s",
                    self.seconds(),
                    self.max.as_secs_f64()
                ),
                "find what was slow (drain: long transactions, or --kill-writers; catch_up: a backlog), then run it again, or raise --max-downtime",
            ));
        }
        Ok(())
    }
}

/// Wait until no write transaction is open on the frozen server `conn` (killing the writers
/// after `timeout` if `kill_writers`), then return its final GTID position: `gtid_binlog_pos`
/// once two reads agree. Fails when the freeze outlasts its budget.
pub async fn drain(
    conn: &mut Conn,
    timeout: Duration,
    kill_writers: bool,
    freeze: Freeze,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        // InnoDB refreshes information_schema.INNODB_TRX only when nobody has read it for
        // 100 ms (its cache): a faster poll would keep seeing the same, stale list
        tokio::time::sleep(TRX_CACHE_IDLE).await;
        let open = db::query_strings(
            conn,
            "SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX WHERE trx_rows_modified > 0 OR trx_state = 'LOCK WAIT'",
        )
        .await?;
        if open.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let ids: Vec<String> = open
                .iter()
                .filter_map(|r| r.first().cloned().flatten())
                .collect();
            if !kill_writers {
                return Err(Error::definite(
                    format!("{} write transaction(s) still open after --drain-timeout {timeout:?} (connections {})", ids.len(), ids.join(", ")),
                    "let them finish, raise --drain-timeout, or pass --kill-writers to roll them back",
                ));
            }
            for id in &ids {
                tracing::warn!("killing writer connection {id} (--kill-writers)");
                let kill = format!("KILL CONNECTION {}", id.parse::<u64>().unwrap_or(0));
                let _ = db::run(conn, &kill).await;
            }
        }
        freeze.check("the drain")?;
    }
    // the final GTID: the binlog position no longer moves (a commit already past its
    // read-only check may still be writing)
    let mut last_pos = String::new();
    loop {
        let p = db::query_one(conn, "SELECT @@global.gtid_binlog_pos")
            .await?
            .unwrap_or_default();
        if p == last_pos {
            return Ok(p);
        }
        last_pos = p;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Run the cutover's steps from the first not done. Returns the report (outcome "switched").
pub async fn run(
    c: &Cutover<'_>,
    src: &mut Conn,
    tgt: &mut Conn,
    opts: &Options,
) -> Result<Report> {
    let mut report = Report {
        cutover_id: c.id.clone(),
        ..Default::default()
    };
    let done = c.steps_done()?;
    let is_done = |s: &str| done.iter().any(|d| d == s);
    let mut last = Instant::now();
    let mut timed = |report: &mut Report, step: &str| {
        report
            .steps
            .push((step.to_string(), last.elapsed().as_secs_f64()));
        last = Instant::now();
    };

    // the target's replicas, connected before anything freezes
    let mut replicas = Vec::new();
    if !is_done("switch") {
        for r in &opts.target_replicas {
            replicas.push(replica::connect(r).await?);
        }
    }
    // the connections the proof reads with, opened before anything freezes
    let mut readers = if is_done("prove") {
        None
    } else {
        Some(readers(c).await?)
    };

    // 1. freeze
    if !is_done("freeze") {
        c.started("freeze")?;
        if c.get("source_read_only_before")?.is_none() {
            let s = db::query_one(src, "SELECT @@global.read_only")
                .await?
                .unwrap_or_default();
            let t = db::query_one(tgt, "SELECT @@global.read_only")
                .await?
                .unwrap_or_default();
            c.set("source_read_only_before", &s)?;
            c.set("target_read_only_before", &t)?;
        }
        db::run(tgt, "SET GLOBAL read_only = ON")
            .await
            .map_err(|e| e.context("target, read_only"))?;
        c.set("frozen_at", &crate::state::unix_now().to_string())?;
        db::run(src, "SET GLOBAL read_only = ON")
            .await
            .map_err(|e| e.context("source, read_only"))?;
        tracing::info!("source frozen (read_only=ON)");
        c.done("freeze", json!({}))?;
        timed(&mut report, "freeze");
    }
    let frozen_at: f64 = c
        .get("frozen_at")?
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(crate::state::unix_now);
    let freeze = Freeze {
        at: frozen_at,
        max: opts.max_downtime,
    };
    let frozen_for = || freeze.seconds();

    // 2. drain
    if !is_done("drain") {
        c.started("drain")?;
        let final_gtid = drain(src, opts.drain_timeout, opts.kill_writers, freeze)
            .await
            .map_err(|e| e.context("source"))?;
        c.set("final_gtid", &final_gtid)?;
        tracing::info!("drained; final GTID {final_gtid}");
        c.done("drain", json!({ "final_gtid": final_gtid }))?;
        timed(&mut report, "drain");
    }
    let final_gtid = c.get("final_gtid")?.unwrap_or_default();
    report.final_gtid = Some(final_gtid.clone());
    let final_pos = Position::parse(&final_gtid)?;

    // 3. catch_up: the follower applies exactly up to the final GTID and pauses there
    if !is_done("catch_up") {
        c.started("catch_up")?;
        freeze.check("catch_up")?;
        let paused = control::pause(c.store, Some(&final_pos), freeze.remaining())
            .await
            .map_err(|e| Error::definite(format!("catch_up: {e}"), "check that `migrate follow` is running and healthy (migrate status), then run cutover again"))?;
        if paused.passed {
            return Err(Error::definite(
                format!("the follower applied past the final GTID {final_gtid} (at {}): something wrote to the source through read_only", paused.at),
                "find the writer with READ ONLY ADMIN (cutover --dry-run lists them), verify, and run cutover again",
            ));
        }
        tracing::info!("follow paused at the final GTID {}", paused.at);
        c.done("catch_up", json!({ "applied": paused.at }))?;
        timed(&mut report, "catch_up");
    } else {
        // resumed: hold the follower there again (it resumed when our predecessor died)
        let budget = opts.max_downtime.max(Duration::from_secs(10));
        let paused = control::pause(c.store, Some(&final_pos), budget).await?;
        if paused.passed {
            return Err(Error::definite(
                format!("the follower applied past the final GTID {final_gtid}"),
                "something wrote to the source through read_only: verify before going on",
            ));
        }
    }

    // 4. prove: the rows at the keys changed since the proof before the freeze are the
    // source's (both servers are still now: no snapshots needed)
    if !is_done("prove") {
        c.started("prove")?;
        freeze.check("prove")?;
        let detail = match c.get("proved_seq")?.and_then(|v| v.parse::<i64>().ok()) {
            None => json!({ "skipped": "no clean full verify (--no-verify-check)" }),
            Some(from) => {
                if c.store.touched_ddl_seq()? > from {
                    return Err(Error::definite(
                        "a DDL was applied on the target since the last verify: its effect cannot be proved by keys",
                        "run `migrate cutover --verify`",
                    ));
                }
                let touched = c.store.touched_between(from, i64::MAX)?;
                let (rs, rt) = match readers.as_mut() {
                    Some(r) => (&mut r.0, &mut r.1),
                    None => {
                        return Err(Error::definite(
                            "internal: no proof connections",
                            "report this bug",
                        ))
                    }
                };
                let proof = touched::prove(rs, rt, &c.tables, &touched)
                    .await
                    .map_err(|e| e.context("prove"))?;
                if !proof.identical() {
                    return Err(Error::definite(
                        format!(
                            "rows changed just before the freeze differ between source and target: {}",
                            proof.summary()
                        ),
                        "run `migrate verify --repair`, then cut over again",
                    ));
                }
                let before: u64 = c
                    .get("proved_keys_before_freeze")?
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                json!({ "keys": proof.keys, "tables": proof.tables, "keys_before_freeze": before })
            }
        };
        tracing::info!("proved during the freeze: {detail}");
        c.done("prove", detail.clone())?;
        report.rows_verified = Some(
            detail["keys"].as_u64().unwrap_or(0)
                + detail["keys_before_freeze"].as_u64().unwrap_or(0),
        );
        timed(&mut report, "prove");
    }

    // 5. prepare
    if !is_done("prepare") {
        c.started("prepare")?;
        freeze.check("prepare")?;
        let p = prepare::run(src, tgt, &c.dbs).await?;
        tracing::info!(
            "target prepared: {} trigger(s), {} AUTO_INCREMENT counter(s), {} sequence(s), {} event(s) enabled",
            p.triggers.len(), p.auto_increments.len(), p.sequences.len(), p.events_enabled.len()
        );
        c.done("prepare", serde_json::to_value(&p).unwrap_or_default())?;
        report.prepared = Some(p);
        timed(&mut report, "prepare");
    }

    // 6. switch
    if !is_done("switch") {
        c.started("switch")?;
        freeze.check("switch")?;
        if opts.reverse {
            // the way back, set up while nothing writes either server: it starts at the GTID
            // the target has now (nothing writes it until it opens)
            let at = db::query_one(tgt, "SELECT @@global.gtid_binlog_pos")
                .await?
                .unwrap_or_default();
            let path = reverse::setup(c.store, &opts.state_path, src, &c.dbs, &at).await?;
            tracing::info!(
                "way back prepared from target GTID {at}: run `migrate follow --reverse` ({})",
                path.display()
            );
        }
        if !replicas.is_empty() {
            // the target's own replicas have everything it has (the last rows, the prepared
            // triggers and counters) before the application reaches the target
            let at = db::query_one(tgt, "SELECT @@global.gtid_binlog_pos")
                .await?
                .unwrap_or_default();
            for (conn, ep) in replicas.iter_mut().zip(&opts.target_replicas) {
                replica::wait(conn, ep, &at, freeze.remaining()).await?;
            }
            tracing::info!(
                "the target's {} replica(s) reached GTID {at}",
                replicas.len()
            );
        }
        if let Some(cmd) = &opts.switch_command {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("MIGRATE_CUTOVER_ID", &c.id)
                .env("MIGRATE_FINAL_GTID", &final_gtid)
                .env("MIGRATE_TARGET_HOST", &c.target_endpoint.host)
                .env("MIGRATE_TARGET_PORT", c.target_endpoint.port.to_string())
                .env("MIGRATE_FREEZE_SECONDS", format!("{:.3}", frozen_for()))
                .status()
                .await
                .map_err(|e| {
                    Error::definite(
                        format!("--switch-command: cannot run it: {e}"),
                        "give a command `sh -c` can run",
                    )
                })?;
            if !status.success() {
                return Err(Error::definite(
                    format!("--switch-command failed ({status})"),
                    "fix the hook (it must exit 0 once the application points at the target), then run cutover again",
                ));
            }
        }
        // the application points at the target now: the follower (paused at the final GTID
        // since catch_up) must never apply anything again; the stop request is durable and
        // outranks any resume, so no follower applies after the target opens
        control::request_stop(c.store)?;
        db::run(tgt, "SET GLOBAL read_only = OFF")
            .await
            .map_err(|e| e.context("target, opening it"))?;
        let downtime = frozen_for();
        let open_gtid = db::query_one(tgt, "SELECT @@global.gtid_binlog_pos")
            .await?
            .unwrap_or_default();
        c.set("target_open_gtid", &open_gtid)?;
        c.set("downtime_seconds", &format!("{downtime:.3}"))?;
        c.set("state", "switched")?;
        c.done(
            "switch",
            json!({ "downtime_seconds": downtime, "target_open_gtid": open_gtid }),
        )?;
        timed(&mut report, "switch");
        tracing::info!("target open; writes were unavailable for {downtime:.3} s");
    }
    report.outcome = "switched".into();
    report.downtime_seconds = c.get("downtime_seconds")?.and_then(|v| v.parse().ok());
    report.source_frozen_seconds = Some(frozen_for());
    report.target_open_gtid = c.get("target_open_gtid")?;
    crate::obs::metrics::set("migrate_cutover_step", &[], (STEPS.len() + 1) as f64);
    Ok(report)
}

/// Put everything back as before the cutover (allowed only before the switch): the target's
/// triggers dropped and events disabled again, both servers' read_only as they were, follow
/// resumed. Returns how long the source was frozen.
pub async fn undo(
    c: &Cutover<'_>,
    src: &mut Conn,
    tgt: &mut Conn,
    why: &str,
    state_path: &std::path::Path,
) -> Result<Option<f64>> {
    c.store.journal(
        &c.id,
        "abort",
        "started",
        &json!({ "why": why }).to_string(),
    )?;
    reverse::discard(state_path, src)
        .await
        .map_err(|e| e.context("source, undoing the way back"))?;
    prepare::undo(tgt, &c.dbs)
        .await
        .map_err(|e| e.context("target, undoing prepare"))?;
    let target_before = c
        .get("target_read_only_before")?
        .unwrap_or_else(|| "1".into());
    db::run(
        tgt,
        &format!(
            "SET GLOBAL read_only = {}",
            if target_before == "0" { "OFF" } else { "ON" }
        ),
    )
    .await
    .map_err(|e| e.context("target, read_only"))?;
    let source_before = c
        .get("source_read_only_before")?
        .unwrap_or_else(|| "0".into());
    db::run(
        src,
        &format!(
            "SET GLOBAL read_only = {}",
            if source_before == "1" { "ON" } else { "OFF" }
        ),
    )
    .await
    .map_err(|e| e.context("source, read_only"))?;
    let frozen = c
        .get("frozen_at")?
        .and_then(|v| v.parse::<f64>().ok())
        .map(|t| crate::state::unix_now() - t);
    control::clear_stop(c.store)?;
    control::release(c.store)?;
    c.set("state", "aborted")?;
    c.store.journal(
        &c.id,
        "abort",
        "done",
        &json!({ "source_frozen_seconds": frozen }).to_string(),
    )?;
    Ok(frozen)
}

/// Connect both servers for cutover work (its own sessions: `read_only` and the drain need
/// no snapshot).
/// Connections reading rows as verify does (for the `prove` step).
async fn readers(c: &Cutover<'_>) -> Result<(Conn, Conn)> {
    let src = db::connect_retry(
        c.source_endpoint,
        Session::SourceReader,
        db::retry::BOUNDED_ATTEMPTS,
    )
    .await
    .map_err(|e| e.context("source"))?;
    let tgt = db::connect_retry(
        c.target_endpoint,
        Session::SourceReader,
        db::retry::BOUNDED_ATTEMPTS,
    )
    .await
    .map_err(|e| e.context("target"))?;
    Ok((src, tgt))
}

pub async fn connect(
    source: &crate::config::Endpoint,
    target: &crate::config::Endpoint,
) -> Result<(Conn, Conn)> {
    let src = db::connect_retry(source, Session::Meta, db::retry::BOUNDED_ATTEMPTS)
        .await
        .map_err(|e| e.context("source"))?;
    let tgt = db::connect_retry(target, Session::TargetWriter, db::retry::BOUNDED_ATTEMPTS)
        .await
        .map_err(|e| e.context("target"))?;
    Ok((src, tgt))
}
