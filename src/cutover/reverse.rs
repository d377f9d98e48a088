//! The way back: after the switch the same engine replicates target -> source, so the team
//! can return to the old server without losing an order placed on the new one.
//!
//! At the switch (`setup`, before the target opens): a second state file next to the first
//! (`<state>.reverse.sqlite`) describes the reverse migration — its own id, starting at the GTID
//! the target has when it opens, the same databases —; the source gets a checkpoint row for it
//! (`_migrate.checkpoints`), and its triggers are dropped and its enabled events disabled while
//! it is a replica (rows applied from the target's binlog already carry what the target's
//! triggers did; the definitions are kept in the reverse state file). `migrate follow --reverse`
//! then runs the ordinary replication loop with the two servers swapped.
//!
//! `cutover --rollback` after the switch (`rollback`): the target frozen and drained, the
//! reverse follower applies exactly up to the target's final GTID and stops, the source's
//! triggers and events come back, `--rollback-command` points the application at the source,
//! and the source opens. Every step is journaled like the forward cutover.

use super::prepare::{self, TriggerDef};
use crate::config::Endpoint;
use crate::error::{Error, Result};
use crate::position::Position;
use crate::replication::control;
use crate::state::Store;
use mysql_async::Conn;
use std::path::{Path, PathBuf};

/// The reverse migration's state file, next to `state`.
pub fn state_path(state: &Path) -> PathBuf {
    let stem = state
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "migrate-state".into());
    state.with_file_name(format!("{stem}.reverse.sqlite"))
}

/// Whether the way back can be set up: the target's binlog must carry full row images (the
/// engine reads it) and the engine's source account must write through read_only.
pub async fn possible(src: &mut Conn, tgt: &mut Conn) -> Result<Option<String>> {
    let fmt = crate::db::query_one(tgt, "SELECT CONCAT(@@global.log_bin, ' ', @@global.binlog_format, ' ', @@global.binlog_row_image)")
        .await?
        .unwrap_or_default();
    if fmt != "1 ROW FULL" && fmt != "ON ROW FULL" {
        return Ok(Some(format!(
            "the target's binlog is not log_bin=ON, binlog_format=ROW, binlog_row_image=FULL (it is {fmt:?})"
        )));
    }
    let (_, _, g) = crate::db::preflight::account_grants(src).await?;
    if !crate::db::grants::writes_through_read_only(&g) {
        return Ok(Some(
            "the engine's source account lacks READ ONLY ADMIN (it would write the read-only source)".into(),
        ));
    }
    Ok(None)
}

/// Set up the reverse migration (idempotent: `--resume` may run it again).
pub async fn setup(
    forward: &Store,
    forward_path: &Path,
    src: &mut Conn,
    dbs: &[String],
    target_gtid: &str,
) -> Result<PathBuf> {
    let path = state_path(forward_path);
    let rev = Store::open(&path)?;
    if rev.get("migration.id")?.is_none() {
        let id = format!("{:016x}", rand::random::<u64>());
        rev.set("migration.id", &id)?;
    }
    let id = rev.get("migration.id")?.unwrap_or_default();
    rev.set("snapshot.gtid_consistent", target_gtid)?;
    rev.set("filter.databases", &dbs.join(","))?;
    if let Some(e) = forward.get("filter.exclude")? {
        rev.set("filter.exclude", &e)?;
    }
    rev.set("reverse.of", &forward_path.display().to_string())?;
    // the source as a replica: no triggers firing on applied rows, no events running
    if rev.get("reverse.source_triggers")?.is_none() {
        let triggers = prepare::drop_triggers(src, dbs)
            .await
            .map_err(|e| e.context("source"))?;
        let events = prepare::disable_events(src, dbs)
            .await
            .map_err(|e| e.context("source"))?;
        rev.set(
            "reverse.source_triggers",
            &serde_json::to_string(&triggers).unwrap_or_default(),
        )?;
        rev.set(
            "reverse.source_events",
            &serde_json::to_string(&events).unwrap_or_default(),
        )?;
    }
    crate::apply::checkpoint::register(
        src,
        &id,
        &crate::apply::checkpoint::selection(dbs),
        &path.display().to_string(),
        true,
    )
    .await
    .map_err(|e| e.context("source"))?;
    Ok(path)
}

/// Give the source its triggers and events back (after a rollback, or an abort before the
/// switch that had set the way back up). Idempotent.
pub async fn restore_source(forward_path: &Path, src: &mut Conn) -> Result<()> {
    let path = state_path(forward_path);
    if !path.exists() {
        return Ok(());
    }
    let rev = Store::open(&path)?;
    if let Some(t) = rev.get("reverse.source_triggers")? {
        let triggers: Vec<TriggerDef> = serde_json::from_str(&t).unwrap_or_default();
        prepare::create_triggers(src, &triggers)
            .await
            .map_err(|e| e.context("source"))?;
    }
    if let Some(e) = rev.get("reverse.source_events")? {
        let events: Vec<(String, String)> = serde_json::from_str(&e).unwrap_or_default();
        prepare::enable_events(src, &events)
            .await
            .map_err(|e| e.context("source"))?;
    }
    rev.delete("reverse.source_triggers")?;
    rev.delete("reverse.source_events")?;
    Ok(())
}

/// Remove the way back before the switch happened (an abort): the source as it was, the
/// reverse state file gone.
pub async fn discard(forward_path: &Path, src: &mut Conn) -> Result<()> {
    restore_source(forward_path, src).await?;
    let path = state_path(forward_path);
    for p in [
        path.clone(),
        path.with_extension("sqlite-wal"),
        path.with_extension("sqlite-shm"),
    ] {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

pub struct Rollback<'a> {
    pub forward: &'a Store,
    pub forward_path: &'a Path,
    pub id: &'a str,
    pub drain_timeout: std::time::Duration,
    pub max_downtime: std::time::Duration,
    pub rollback_command: Option<&'a str>,
    pub source: &'a Endpoint,
}

fn step(r: &Rollback, name: &str, state: &str, detail: serde_json::Value) -> Result<()> {
    r.forward.journal(r.id, name, state, &detail.to_string())?;
    if state == "done" {
        crate::obs::notify::send(
            "cutover_step",
            &format!("rollback of cutover {}: step {name} done {detail}", r.id),
            serde_json::json!({ "cutover_id": r.id, "step": name, "detail": detail }),
        );
    }
    super::crash_point(name, state);
    Ok(())
}

/// Send the application back to the source. Returns the write downtime (target frozen to
/// source open).
pub async fn rollback(r: &Rollback<'_>, src: &mut Conn, tgt: &mut Conn) -> Result<f64> {
    let path = state_path(r.forward_path);
    if !path.exists() {
        return Err(Error::usage(
            "no way back was set up at the switch (reverse replication was off)",
            "keep the target as the primary",
        ));
    }
    let rev = Store::open(&path)?;
    // the steps done by the rollback under way: those after the last aborted one (an aborted
    // rollback opened the target again, so the next starts from its freeze)
    let journal = r.forward.journal_of(r.id)?;
    let since_abort = journal
        .iter()
        .rposition(|e| e.step == "back_abort")
        .map_or(0, |i| i + 1);
    let done: Vec<String> = journal[since_abort..]
        .iter()
        .filter(|e| e.state == "done")
        .map(|e| e.step.clone())
        .collect();
    let is_done = |s: &str| done.iter().any(|d| d == s);
    if !is_done("back_freeze") {
        step(r, "back_freeze", "started", serde_json::json!({}))?;
        r.forward.set(
            "cutover.back_frozen_at",
            &crate::state::unix_now().to_string(),
        )?;
        crate::db::run(tgt, "SET GLOBAL read_only = ON")
            .await
            .map_err(|e| e.context("target, read_only"))?;
        step(r, "back_freeze", "done", serde_json::json!({}))?;
    }
    let frozen_at: f64 = r
        .forward
        .get("cutover.back_frozen_at")?
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(crate::state::unix_now);
    let freeze = super::Freeze {
        at: frozen_at,
        max: r.max_downtime,
    };
    let result: Result<()> = async {
        if !is_done("back_drain") {
            step(r, "back_drain", "started", serde_json::json!({}))?;
            let g = super::drain(tgt, r.drain_timeout, false, freeze).await?;
            r.forward.set("cutover.back_final_gtid", &g)?;
            step(r, "back_drain", "done", serde_json::json!({ "final_gtid": g }))?;
        }
        let final_gtid = r.forward.get("cutover.back_final_gtid")?.unwrap_or_default();
        let final_pos = Position::parse(&final_gtid)?;
        if !is_done("back_catch_up") {
            step(r, "back_catch_up", "started", serde_json::json!({}))?;
            let p = control::pause(&rev, Some(&final_pos), freeze.remaining()).await.map_err(|e| {
                Error::definite(
                    format!("the reverse follow did not reach the target's final GTID: {e}"),
                    "start `migrate follow --reverse` (same --state) and let it catch up, then roll back again",
                )
            })?;
            if p.passed {
                return Err(Error::definite(
                    format!("the reverse follow applied past the target's final GTID {final_gtid}"),
                    "something wrote to the target through read_only: verify before rolling back",
                ));
            }
            step(r, "back_catch_up", "done", serde_json::json!({ "applied": p.at }))?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // the target stays the primary: open it again
        let _ = control::release(&rev);
        crate::db::run(tgt, "SET GLOBAL read_only = OFF").await?;
        r.forward.journal(
            r.id,
            "back_abort",
            "done",
            &serde_json::json!({ "why": e.to_string() }).to_string(),
        )?;
        return Err(e);
    }
    if !is_done("back_switch") {
        step(r, "back_switch", "started", serde_json::json!({}))?;
        control::request_stop(&rev)?;
        restore_source(r.forward_path, src).await?;
        if let Some(cmd) = r.rollback_command {
            let status = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("MIGRATE_SOURCE_HOST", &r.source.host)
                .env("MIGRATE_SOURCE_PORT", r.source.port.to_string())
                .env("MIGRATE_CUTOVER_ID", r.id)
                .status()
                .await
                .map_err(|e| {
                    Error::definite(
                        format!("--rollback-command: cannot run it: {e}"),
                        "give a command `sh -c` can run",
                    )
                })?;
            if !status.success() {
                return Err(Error::definite(
                    format!("--rollback-command failed ({status}); both servers are read-only now"),
                    "fix the hook and run `migrate cutover --rollback` again (it continues here)",
                ));
            }
        }
        crate::db::run(src, "SET GLOBAL read_only = OFF")
            .await
            .map_err(|e| e.context("source, opening it"))?;
        let downtime = crate::state::unix_now() - frozen_at;
        r.forward.set("cutover.state", "rolled_back_after_switch")?;
        r.forward
            .set("cutover.back_downtime_seconds", &format!("{downtime:.3}"))?;
        step(
            r,
            "back_switch",
            "done",
            serde_json::json!({ "downtime_seconds": downtime }),
        )?;
    }
    Ok(r.forward
        .get("cutover.back_downtime_seconds")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}
