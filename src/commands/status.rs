//! `migrate status`: reads the state store only; safe while another verb runs. `--json` prints
//! the schema documented in docs/operations.md ("status --json"): stable field names, numbers
//! as numbers (0, never null, where a figure is known to be zero), times as RFC 3339 strings.

use super::Context;
use crate::cli::StatusArgs;
use crate::error::Result;
use crate::obs::progress::human_bytes;
use crate::state::{self, Outcome, Run};
use serde_json::{json, Value};

/// The version of the JSON schema (bumped when a field changes meaning or goes away).
pub const SCHEMA_VERSION: u64 = 1;

fn run_json(run: Option<&Run>) -> Value {
    match run {
        None => Value::Null,
        Some(r) => json!({
            "pid": r.pid,
            "started_at": state::rfc3339(r.started_at),
            "ended_at": r.ended_at.map(state::rfc3339),
            "outcome": if r.died() { "killed" } else {
                match r.outcome {
                    Outcome::Running => "running",
                    Outcome::Ok => "ok",
                    Outcome::Interrupted => "interrupted",
                    Outcome::Failed => "failed",
                }
            },
            "last_error": r.last_error,
        }),
    }
}

/// The state a verb is in, from its last run: never_ran, running, killed (marked running, but
/// its process is gone), interrupted, failed, or `finished`.
fn verb_state(run: Option<&Run>, finished: &'static str) -> &'static str {
    match run {
        None => "never_ran",
        Some(r) if r.died() => "killed",
        Some(r) => match r.outcome {
            Outcome::Running => "running",
            Outcome::Ok => finished,
            Outcome::Interrupted => "interrupted",
            Outcome::Failed => "failed",
        },
    }
}

pub async fn run(ctx: &Context, args: &StatusArgs) -> Result<i32> {
    if !ctx.state_path.exists() {
        return Err(crate::error::Error::usage(
            format!("no state file at {}", ctx.state_path.display()),
            "pass --state PATH of a migration (or run `migrate snapshot` first)",
        ));
    }
    let store = ctx.store()?;
    let tables = store.tables()?;
    let follow = store.follow_status()?;
    let runs = store.runs()?;
    let snap_run = runs.iter().find(|r| r.verb == "snapshot");
    let follow_run = runs.iter().find(|r| r.verb == "follow");
    let get = |k: &str| store.get(k).ok().flatten();
    let consistent = get("snapshot.gtid_consistent");
    let snapshot_state = match verb_state(snap_run, "done") {
        "done" if consistent.is_some() => "consistent",
        "done" => "copied",
        s => s,
    };
    let rows_done: u64 = tables.iter().map(|t| t.rows_done).sum();
    let rows_est: u64 = tables.iter().map(|t| t.rows_est.max(t.rows_done)).sum();
    let bytes_done: u64 = tables.iter().map(|t| t.bytes_done).sum();
    let copied = tables
        .iter()
        .filter(|t| t.status == state::TableState::Copied)
        .count();
    let events: Vec<Value> = store
        .source_events()?
        .into_iter()
        .map(|(db, name, status)| json!({"db": db, "name": name, "source_status": status}))
        .collect();
    let exclude: Vec<String> = get("filter.exclude")
        .and_then(|e| serde_json::from_str(&e).ok())
        .unwrap_or_default();
    let databases: Vec<String> = get("filter.databases")
        .map(|d| {
            d.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let now = state::unix_now();
    let follow_json = match &follow {
        None => json!({ "state": verb_state(follow_run, "stopped"), "run": run_json(follow_run) }),
        Some(f) => {
            let updated = f.updated_at.parse::<f64>().unwrap_or(0.0);
            json!({
                "state": verb_state(follow_run, "stopped"),
                "run": run_json(follow_run),
                "applied_gtid": f.applied_gtid,
                "lag_seconds": f.lag_seconds.unwrap_or(0.0),
                // false until follow has looked at the source once (lag_seconds is then 0)
                "lag_known": f.lag_seconds.is_some(),
                "last_applied_commit_at": f.last_commit.map(state::rfc3339),
                "events_behind": f.events_behind.unwrap_or(0),
                "bytes_behind": f.bytes_behind.unwrap_or(0),
                "transactions_applied": f.trx_applied,
                "rows_applied": f.rows_applied,
                "reconnects": f.reconnects,
                "updated_at": state::rfc3339(updated),
                "seconds_since_update": (now - updated).max(0.0),
            })
        }
    };
    let out = json!({
        "schema_version": SCHEMA_VERSION,
        "state_file": ctx.state_path.display().to_string(),
        "migration_id": get("migration.id"),
        "source": get("source"),
        "target": get("target"),
        "selection": { "databases": databases, "exclude": exclude },
        "snapshot": {
            "state": snapshot_state,
            "run": run_json(snap_run),
            "gtid_low": get("snapshot.gtid_low"),
            "gtid_high": get("snapshot.gtid_high"),
            "gtid_consistent": consistent,
            "tables_total": tables.len(),
            "tables_copied": copied,
            "rows_done": rows_done,
            "rows_estimate": rows_est,
            "bytes_done": bytes_done,
            "tables": tables.iter().map(|t| json!({
                "db": t.db, "name": t.name, "state": t.status.as_str(),
                "rows_done": t.rows_done, "rows_estimate": t.rows_est.max(t.rows_done),
                "bytes_done": t.bytes_done, "chunks_done": t.chunks_done,
            })).collect::<Vec<_>>(),
        },
        "follow": follow_json,
        "verify": get("verify.last")
            .and_then(|v| serde_json::from_str::<Value>(&v).ok())
            .unwrap_or(Value::Null),
        "verify_progress": verify_progress(&store, get("verify.in_progress").as_deref())?,
        "cutover": cutover_json(&store)?,
        "cutover_readiness": readiness(&follow_json, get("verify.last_full").as_deref(), get("cutover.state").as_deref()),
        "events_disabled_until_cutover": events,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(0);
    }
    let line = |k: &str, v: String| println!("{k:<26} {v}");
    for k in ["migration_id", "source", "target"] {
        if let Some(v) = out[k].as_str() {
            line(k, v.to_string());
        }
    }
    let run_text = |r: Option<&Run>| match r {
        None => String::new(),
        Some(r) if r.died() => format!(" (pid {} is gone: killed or crashed)", r.pid),
        Some(r) if r.outcome == Outcome::Running => format!(" (pid {})", r.pid),
        Some(r) => match &r.last_error {
            Some(e) => format!(" at {}: {e}", state::rfc3339(r.ended_at.unwrap_or(0.0))),
            None => format!(" at {}", state::rfc3339(r.ended_at.unwrap_or(0.0))),
        },
    };
    line(
        "snapshot",
        format!("{snapshot_state}{}", run_text(snap_run)),
    );
    for k in ["gtid_low", "gtid_high", "gtid_consistent"] {
        if let Some(v) = out["snapshot"][k].as_str() {
            line(&format!("snapshot {k}"), v.to_string());
        }
    }
    line(
        "snapshot tables",
        format!(
            "{copied}/{} copied, {rows_done}/{rows_est} rows, {}",
            tables.len(),
            human_bytes(bytes_done)
        ),
    );
    for t in tables
        .iter()
        .filter(|t| t.status == state::TableState::Copying)
    {
        println!("  copying {}.{}: {} rows", t.db, t.name, t.rows_done);
    }
    if !events.is_empty() {
        line(
            "events",
            format!("{} on the target, DISABLED until cutover", events.len()),
        );
    }
    line(
        "follow",
        format!(
            "{}{}",
            out["follow"]["state"].as_str().unwrap_or(""),
            run_text(follow_run)
        ),
    );
    if let Some(f) = follow {
        line("follow applied GTID", f.applied_gtid.clone());
        line(
            "follow lag",
            format!("{:.2} s", f.lag_seconds.unwrap_or(0.0)),
        );
        line(
            "follow behind",
            format!(
                "{} transactions, {}",
                f.events_behind.unwrap_or(0),
                human_bytes(f.bytes_behind.unwrap_or(0))
            ),
        );
        line(
            "follow applied",
            format!(
                "{} transactions, {} rows, {} reconnects",
                f.trx_applied, f.rows_applied, f.reconnects
            ),
        );
        let age = out["follow"]["seconds_since_update"]
            .as_f64()
            .unwrap_or(0.0);
        line(
            "follow last update",
            format!(
                "{age:.0} s ago{}",
                if age > 10.0 && verb_state(follow_run, "stopped") == "running" {
                    ": stalled?"
                } else {
                    ""
                }
            ),
        );
    }
    let r = &out["cutover_readiness"];
    if !r.is_null() {
        line(
            "safe to cut over",
            format!(
                "{}{}; predicted downtime {:.2} s (from this state file; `cutover --dry-run` also checks the servers)",
                if r["safe"] == true { "yes" } else { "no" },
                r["why_not"]
                    .as_array()
                    .filter(|w| !w.is_empty())
                    .map(|w| format!(
                        ": {}",
                        w.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("; ")
                    ))
                    .unwrap_or_default(),
                r["predicted_downtime_seconds"].as_f64().unwrap_or(0.0)
            ),
        );
    }
    let c = &out["cutover"];
    if !c.is_null() {
        let last = c["journal"]
            .as_array()
            .and_then(|j| j.last())
            .map(|e| {
                format!(
                    "{} {}",
                    e["step"].as_str().unwrap_or(""),
                    e["state"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default();
        line(
            "cutover",
            format!(
                "{} (last step: {last}){}",
                c["state"].as_str().unwrap_or("?"),
                c["downtime_seconds"]
                    .as_str()
                    .map(|d| format!(", writes unavailable {d} s"))
                    .unwrap_or_default()
            ),
        );
    }
    let p = &out["verify_progress"];
    if !p.is_null() {
        line(
            "verify running",
            format!(
                "{} table(s) compared, {} in progress, {} rows so far",
                p["tables_done"], p["tables_in_progress"], p["rows_compared"]
            ),
        );
    }
    let v = &out["verify"];
    if !v.is_null() {
        line(
            "verify",
            format!(
                "{} at {} (GTID {}): {} rows in {} tables, {} differing row(s), {} repaired",
                if v["identical"] == true {
                    "identical"
                } else {
                    "DIFFERENT"
                },
                v["at"].as_str().unwrap_or(""),
                v["gtid"].as_str().unwrap_or(""),
                v["rows"],
                v["tables"],
                v["differences_total"],
                v["repaired"]
            ),
        );
    }
    Ok(0)
}

/// A verify under way (or interrupted, to be continued): what it has compared so far.
fn verify_progress(store: &crate::state::Store, in_progress: Option<&str>) -> Result<Value> {
    if in_progress != Some("1") {
        return Ok(Value::Null);
    }
    let tables = store.verify_tables()?;
    Ok(json!({
        "tables_done": tables.iter().filter(|t| t.cursor.is_none()).count(),
        "tables_in_progress": tables.iter().filter(|t| t.cursor.is_some()).count(),
        "rows_compared": tables.iter().map(|t| t.rows).sum::<u64>(),
    }))
}

/// The last cutover: its state and journal (the audit trail).
fn cutover_json(store: &crate::state::Store) -> Result<Value> {
    let Some(id) = store.get("cutover.id")? else {
        return Ok(Value::Null);
    };
    let journal = store.journal_of(&id)?;
    Ok(json!({
        "id": id,
        "state": store.get("cutover.state")?,
        "final_gtid": store.get("cutover.final_gtid")?,
        "downtime_seconds": store.get("cutover.downtime_seconds")?,
        "target_open_gtid": store.get("cutover.target_open_gtid")?,
        "journal": journal.iter().map(|e| json!({
            "step": e.step, "state": e.state, "at": state::rfc3339(e.at), "actor": e.actor,
        })).collect::<Vec<_>>(),
    }))
}

/// Whether a cutover could start now, from what the state file knows (follow running and
/// caught up, a recent clean verify), and its predicted downtime: the backlog (lag) plus the
/// freeze's fixed costs (the drain's 0.12 s InnoDB cache wait and the pause handshake).
/// `cutover --dry-run` adds the checks that need the servers (accounts, grants, read_only).
fn readiness(follow: &Value, verify_last: Option<&str>, cutover_state: Option<&str>) -> Value {
    if matches!(
        cutover_state,
        Some("switched") | Some("completed") | Some("rolled_back_after_switch")
    ) {
        return Value::Null;
    }
    let mut why = Vec::new();
    if follow["state"] != "running" {
        why.push("follow is not running".to_string());
    }
    let lag = follow["lag_seconds"].as_f64().unwrap_or(0.0);
    if follow["lag_known"] != true {
        why.push("follow's lag is not known yet".into());
    } else if lag > 1.0 {
        why.push(format!("lag {lag:.1} s is above 1 s"));
    }
    if follow["seconds_since_update"].as_f64().unwrap_or(0.0) > 10.0 {
        why.push("follow has not reported for over 10 s".into());
    }
    let verify: Option<Value> = verify_last.and_then(|v| serde_json::from_str(v).ok());
    match verify {
        None => why.push("no verify has run".into()),
        Some(v) if v["identical"] != true => why.push("the last verify found differences".into()),
        Some(v) => {
            let age = state::unix_now() - v["at_unix"].as_f64().unwrap_or(0.0);
            if age > 24.0 * 3600.0 {
                why.push(format!("the last verify is {:.0} h old", age / 3600.0));
            }
        }
    }
    json!({
        "safe": why.is_empty(),
        "why_not": why,
        "predicted_downtime_seconds": lag + 0.12 + 0.05,
    })
}
