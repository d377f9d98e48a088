//! `migrate cutover`: readiness (`--dry-run`), the journaled switch, `--resume`, `--rollback`
//! (before the switch) and `--complete`. Exit 0 switched (or ready, for --dry-run), 1 not ready,
//! 2 aborted or failed (the source writable again, follow resumed).

use super::Context;
use crate::cli::CutoverArgs;
use crate::cutover::{self, preflight, Cutover};
use crate::error::{Error, Result};
use crate::state::Outcome;
use std::time::Duration;

fn seconds(name: &str, v: f64) -> Result<Duration> {
    if v.is_finite() && v >= 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(Error::usage(
            format!("--{name} {v}: not a number of seconds"),
            format!("give e.g. --{name} 5"),
        ))
    }
}

pub async fn run(ctx: &Context, args: &CutoverArgs) -> Result<i32> {
    let (source, target) = (ctx.source()?, ctx.target()?);
    let store = ctx.store()?;
    if store.get("snapshot.gtid_consistent")?.is_none() {
        return Err(Error::usage(
            format!(
                "state file {} has no finished snapshot",
                ctx.state_path.display()
            ),
            "run `migrate snapshot` and `migrate follow` first (with the same --state)",
        ));
    }
    let dbs: Vec<String> = {
        let mut d: Vec<String> = store.tables()?.into_iter().map(|t| t.db).collect();
        d.sort();
        d.dedup();
        d
    };
    let mut opts = cutover::Options {
        drain_timeout: seconds("drain-timeout", args.drain_timeout)?,
        kill_writers: args.kill_writers,
        max_downtime: seconds("max-downtime", args.max_downtime)?,
        switch_command: args.switch_command.clone(),
        target_replicas: args
            .target_replica
            .iter()
            .map(|u| {
                let mut e = crate::config::Endpoint::parse("target-replica", u)?;
                let inherited = std::env::var("MIGRATE_TARGET_REPLICA_PASSWORD")
                    .ok()
                    .or_else(|| target.password.clone());
                e.resolve_password(inherited, None)?;
                Ok(e)
            })
            .collect::<Result<Vec<_>>>()?,
        reverse: false,
        state_path: ctx.state_path.clone(),
    };
    let state = store.get("cutover.state")?;
    let (mut src, mut tgt) = cutover::connect(source, target).await?;

    if args.dry_run {
        let plan =
            preflight::check(&store, &mut src, &mut tgt, &dbs, &limits(args, &opts)?).await?;
        print_plan(&plan);
        return Ok(if plan.ready() { 0 } else { 1 });
    }
    if args.complete {
        if state.as_deref() != Some("switched") {
            return Err(Error::usage(
                "cutover --complete: no switched cutover in this state file",
                "run `migrate cutover` first",
            ));
        }
        let id = store.get("migration.id")?.unwrap_or_default();
        crate::db::run(
            &mut tgt,
            &format!(
                "DELETE FROM `_migrate`.`checkpoints` WHERE migration_id = {}",
                crate::db::quote::string(&id)
            ),
        )
        .await
        .map_err(|e| e.context("target, _migrate.checkpoints"))?;
        let left = crate::db::query_one(&mut tgt, "SELECT COUNT(*) FROM `_migrate`.`checkpoints`")
            .await?
            .unwrap_or_default();
        if left == "0" {
            crate::db::run(&mut tgt, "DROP DATABASE IF EXISTS `_migrate`")
                .await
                .map_err(|e| e.context("target"))?;
        }
        // the way back is over too: its follower stops (the old source keeps its state)
        let reverse = cutover::reverse::state_path(&ctx.state_path);
        if reverse.exists() {
            let rev = crate::state::Store::open(&reverse)?;
            crate::replication::control::request_stop(&rev)?;
            println!(
                "the reverse follow ({}) is told to stop; the old source keeps its data, with its triggers dropped and events disabled",
                reverse.display()
            );
        }
        store.set("cutover.state", "completed")?;
        println!("cutover completed: the engine's objects are removed from the target");
        return Ok(0);
    }
    let id = match (&state, args.resume || args.rollback) {
        (Some(s), true) if s == "running" => store.get("cutover.id")?.unwrap_or_default(),
        (Some(s), false) if s == "running" => {
            return Err(Error::usage(
                "a cutover is under way or was interrupted (cutover.state = running)",
                "run `migrate cutover --resume` to continue it or `--rollback` to undo it",
            ))
        }
        (Some(s), _) if s == "switched" && args.rollback => {
            let id = store.get("cutover.id")?.unwrap_or_default();
            store.start_run("cutover")?;
            crate::replication::install_signal_handlers();
            let r = cutover::reverse::Rollback {
                forward: &store,
                forward_path: &ctx.state_path,
                id: &id,
                drain_timeout: opts.drain_timeout,
                max_downtime: opts.max_downtime,
                rollback_command: args.rollback_command.as_deref(),
                source,
            };
            return match cutover::reverse::rollback(&r, &mut src, &mut tgt).await {
                Ok(downtime) => {
                    store.end_run("cutover", Outcome::Ok, None)?;
                    crate::obs::result(
                        "cutover_rollback",
                        serde_json::json!({ "downtime_seconds": downtime }),
                        &format!("rolled back to the source: writes unavailable for {downtime:.3} s; the target is read-only, the source open"),
                    );
                    Ok(0)
                }
                Err(e) => {
                    store.end_run("cutover", Outcome::Failed, Some(&e.to_string()))?;
                    Err(e)
                }
            };
        }
        (Some(s), _) if s == "switched" || s == "completed" || s == "rolled_back_after_switch" => {
            return Err(Error::usage(
                format!("the cutover already switched (state {s})"),
                "nothing to do; `migrate cutover --complete` removes the engine's objects",
            ));
        }
        (_, true) => {
            return Err(Error::usage(
                "no interrupted cutover to resume or roll back",
                "run `migrate cutover` to start one",
            ))
        }
        _ => {
            let id = format!("{}-{}", std::process::id(), crate::state::unix_now() as u64);
            store.set("cutover.id", &id)?;
            id
        }
    };
    let mut c = Cutover {
        store: &store,
        id: id.clone(),
        dbs: dbs.clone(),
        source_endpoint: source,
        tables: Vec::new(),
        target_endpoint: target,
    };
    store.start_run("cutover")?;
    if args.rollback {
        let frozen = cutover::undo(&c, &mut src, &mut tgt, "--rollback", &ctx.state_path).await?;
        store.set("cutover.state", "rolled_back")?;
        store.end_run("cutover", Outcome::Ok, None)?;
        println!(
            "cutover rolled back: the source is writable again (it was frozen {:.1} s), follow resumes",
            frozen.unwrap_or(0.0)
        );
        return Ok(0);
    }
    if !args.resume && args.verify {
        // verify now, with the defaults of `migrate verify` (exit 1: differences)
        let v = crate::cli::VerifyArgs {
            tables: Vec::new(),
            chunk_rows: 10_000,
            chunk_time: 0.5,
            round_chunks: 20,
            max_source_load: None,
            workers: 2,
            repair: false,
            report: None,
            max_report_rows: 1000,
            restart: true,
        };
        if super::verify::entry(ctx, &v).await? != 0 {
            store.end_run("cutover", Outcome::Failed, Some("verify found differences"))?;
            return Err(Error::definite(
                "cutover --verify: the copies differ (listed above); nothing was frozen",
                "run `migrate verify --repair`, then cut over again",
            ));
        }
    }
    if !args.resume {
        // a fresh cutover: readiness first
        let plan =
            preflight::check(&store, &mut src, &mut tgt, &dbs, &limits(args, &opts)?).await?;
        store.journal(
            &id,
            "preflight",
            "done",
            &serde_json::to_string(&plan).unwrap_or_default(),
        )?;
        if args.copy_users && !plan.missing_accounts_exec.is_empty() {
            let n = plan.missing_accounts_exec.len();
            for (i, sql) in plan.missing_accounts_exec.iter().enumerate() {
                // named by its place only: the statement holds the account's password hash
                let what = format!("target, --copy-users statement {} of {n}", i + 1);
                crate::db::run_raw(&mut tgt, sql.as_bytes(), &what)
                    .await
                    .map_err(|e| e.context(&what))?;
            }
            println!(
                "created {} account statement(s) on the target",
                plan.missing_accounts_exec.len()
            );
        }
        let plan = if args.copy_users {
            preflight::check(&store, &mut src, &mut tgt, &dbs, &limits(args, &opts)?).await?
        } else {
            plan
        };
        if !plan.ready() {
            print_plan(&plan);
            store.end_run("cutover", Outcome::Failed, Some("not ready"))?;
            return Ok(1);
        }
        for f in plan.findings.iter().filter(|f| !f.blocker) {
            tracing::warn!("risk: {} ({})", f.what, f.fix);
        }
        tracing::info!(
            "ready; predicted write downtime {:.2} s",
            plan.predicted_downtime_seconds
        );
        crate::replication::control::clear_stop(&store)?;
        c.tables = prove_before_freeze(ctx, &store, target, args).await?;
        store.set("cutover.state", "running")?;
        for k in [
            "frozen_at",
            "final_gtid",
            "source_read_only_before",
            "target_read_only_before",
            "downtime_seconds",
            "target_open_gtid",
        ] {
            store.delete(&format!("cutover.{k}"))?;
        }
    }
    if args.resume {
        c.tables = describe_for_proof(ctx, &store).await?;
    }
    // the way back: on unless told otherwise or impossible (then said, before anything moves)
    if !args.no_reverse {
        match cutover::reverse::possible(&mut src, &mut tgt).await? {
            None => opts.reverse = true,
            Some(why) => {
                tracing::warn!("no way back after the switch: {why} (--no-reverse silences this)")
            }
        }
    }
    crate::replication::install_signal_handlers();
    let result = cutover::run(&c, &mut src, &mut tgt, &opts).await;
    let mut report = match result {
        Ok(r) => r,
        Err(e) => {
            let switched = c.steps_done()?.iter().any(|s| s == "switch");
            if switched {
                store.end_run("cutover", Outcome::Failed, Some(&e.to_string()))?;
                return Err(e);
            }
            tracing::error!("cutover aborted: {e}");
            // new connections: the error may have been a lost one
            let undone = match cutover::connect(source, target).await {
                Ok((mut s, mut t)) => {
                    cutover::undo(&c, &mut s, &mut t, &e.to_string(), &ctx.state_path).await
                }
                Err(e2) => Err(e2),
            };
            store.end_run("cutover", Outcome::Failed, Some(&e.to_string()))?;
            return match undone {
                Ok(frozen) => Err(Error::definite(
                    format!(
                        "cutover aborted: {}; the source is writable again after {:.2} s frozen and follow resumes",
                        e.what,
                        frozen.unwrap_or(0.0)
                    ),
                    e.hint.unwrap_or_else(|| "run `migrate cutover --dry-run` to see what is not ready".into()),
                )),
                Err(u) => Err(Error::definite(
                    format!("cutover aborted ({}) and undoing it failed: {u}", e.what),
                    "run `migrate cutover --rollback` (the source may still be read-only)",
                )),
            };
        }
    };
    store.end_run("cutover", Outcome::Ok, None)?;
    report.outcome = "switched".into();
    if opts.reverse {
        let reverse = cutover::reverse::state_path(&ctx.state_path);
        if args.reverse_follow == "spawn" {
            match spawn_reverse_follow(ctx).await {
                Ok(pid) => {
                    println!(
                        "the way back runs: `migrate follow --reverse` (pid {pid}, log {}.log, state {})",
                        reverse.display(),
                        reverse.display()
                    );
                    report.reverse_follow_pid = Some(pid);
                }
                Err(e) => tracing::error!(
                    "the reverse follow did not start: {e}; start it yourself: migrate follow --reverse (same --state), or the source falls behind the target"
                ),
            }
        } else {
            println!(
                "start the way back now: migrate follow --reverse (same --state; it keeps {} current)",
                reverse.display()
            );
        }
    }
    let fields = serde_json::to_value(&report).unwrap_or_default();
    if let Some(path) = &args.report {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&fields).unwrap_or_default(),
        )
        .map_err(|e| {
            Error::usage(
                format!("--report {}: {e}", path.display()),
                "give a writable file path",
            )
        })?;
    }
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|(s, t)| format!("{s} {t:.3} s"))
        .collect();
    let text = format!(
        "cutover switched at final GTID {}: writes unavailable for {:.3} s ({}); the target opened at GTID {}",
        report.final_gtid.as_deref().unwrap_or(""),
        report.downtime_seconds.unwrap_or(0.0),
        steps.join(", "),
        report.target_open_gtid.as_deref().unwrap_or("")
    );
    crate::obs::result("cutover", fields, &text);
    Ok(0)
}

fn limits(args: &CutoverArgs, opts: &cutover::Options) -> Result<preflight::Limits> {
    Ok(preflight::Limits {
        target_replicas: opts.target_replicas.clone(),
        max_lag: args.max_lag,
        verify_max_age: seconds("verify-max-age-hours", args.verify_max_age_hours * 3600.0)?,
        verify_check: !args.no_verify_check,
    })
}

fn print_plan(plan: &preflight::Plan) {
    println!(
        "safe to cut over: {}",
        if plan.ready() { "yes" } else { "no" }
    );
    for f in &plan.findings {
        println!(
            "  {} {} (fix: {})",
            if f.blocker { "BLOCKER" } else { "risk   " },
            f.what,
            f.fix
        );
    }
    if !plan.missing_accounts_sql.is_empty() {
        println!("  accounts to create on the target (or pass --copy-users):");
        for s in &plan.missing_accounts_sql {
            println!("    {s};");
        }
    }
    println!(
        "predicted write downtime: {:.2} s ({})",
        plan.predicted_downtime_seconds,
        plan.prediction
            .iter()
            .map(|(k, v)| format!("{k} {v:.3} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Prove, while the source still runs, that the rows at every key changed on the target since
/// the last full verify are the source's (one pair of snapshots at one GTID); during the freeze
/// the cutover's `prove` step proves the few keys changed after this. Differences stop the
/// cutover before anything is frozen.
async fn prove_before_freeze(
    ctx: &Context,
    store: &crate::state::Store,
    target: &crate::config::Endpoint,
    args: &CutoverArgs,
) -> Result<Vec<crate::schema::Table>> {
    let source = ctx.source()?;
    store.delete("cutover.proved_seq")?;
    let baseline = store
        .get("verify.last_full")?
        .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
        .filter(|v| v["identical"] == true)
        .and_then(|v| v["touched_from"].as_i64());
    let Some(baseline) = baseline else {
        if args.no_verify_check {
            tracing::warn!(
                "no clean full verify: the rows changed since are not proved (--no-verify-check)"
            );
            return Ok(Vec::new());
        }
        return Err(Error::definite(
            "no clean verify of every table to prove the changes since",
            "run `migrate verify` (or `migrate cutover --verify`)",
        ));
    };
    if store.get("follow.records_keys")?.is_none() {
        return Err(Error::definite(
            "the running follow does not record the keys it changes (an older migrate?)",
            "restart `migrate follow` with this version, run `migrate verify`, then cut over",
        ));
    }
    let upto = store.touched_seq()?;
    if store.touched_ddl_seq()? > baseline {
        return Err(Error::definite(
            "a DDL was applied on the target since the last verify (its effect cannot be proved by keys); nothing was frozen",
            "run `migrate verify` again (or `migrate cutover --verify`)",
        ));
    }
    let touched = store.touched_between(baseline, upto)?;
    // described now, after any --verify: a DDL from here on is recorded after `upto` and
    // stops the cutover at its `prove` step
    let tables = describe_for_proof(ctx, store).await?;
    let started = std::time::Instant::now();
    let sync = super::verify::PauseFollow { store };
    let (proof, at) =
        crate::verify::touched::prove_at_one_gtid(source, target, &tables, &touched, &sync).await?;
    if !proof.identical() {
        return Err(Error::definite(
            format!(
                "rows changed since the last verify differ between source and target at GTID {at}: {}; nothing was frozen",
                proof.summary()
            ),
            "run `migrate verify --repair`, then cut over again",
        ));
    }
    tracing::info!(
        "proved the {} key(s) changed since the last verify in {} table(s) at GTID {at} ({:.2} s)",
        proof.keys,
        proof.tables,
        started.elapsed().as_secs_f64()
    );
    store.set("cutover.proved_seq", &upto.to_string())?;
    store.set("cutover.proved_keys_before_freeze", &proof.keys.to_string())?;
    Ok(tables)
}

/// The migrated tables as the source has them now, those created after the snapshot included
/// (every table with a recorded changed key is one of them); sequences are left out (prepare
/// sets them). Verify's own listing, retried like it.
async fn describe_for_proof(
    ctx: &Context,
    store: &crate::state::Store,
) -> Result<Vec<crate::schema::Table>> {
    let filter = super::follow::selection(ctx, store)?;
    let mut backoff = crate::db::retry::Backoff::bounded();
    loop {
        match super::verify::describe(ctx.source()?, store, &filter, &[]).await {
            Ok((t, _)) => return Ok(t),
            Err(e) => {
                backoff
                    .retry_after(e, "cutover: describing the tables")
                    .await?
            }
        }
    }
}

/// Start `migrate follow --reverse` in the background (its own process group, so it outlives
/// this cutover and a Ctrl-C in its terminal), with the same global options passed through the
/// environment (passwords stay off every command line), its log in `<reverse state>.log`.
/// Returns its pid once its run is recorded as running in the reverse state file.
async fn spawn_reverse_follow(ctx: &Context) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let reverse = cutover::reverse::state_path(&ctx.state_path);
    let log_path = std::path::PathBuf::from(format!("{}.log", reverse.display()));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| {
            Error::definite(
                format!("cannot open {}: {e}", log_path.display()),
                "make the state file's directory writable",
            )
        })?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::definite(format!("cannot find this binary: {e}"), "run it yourself"))?;
    let g = &ctx.global;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["follow", "--reverse"]);
    for pattern in &g.exclude {
        cmd.arg("--exclude").arg(pattern);
    }
    let vars: [(&str, Option<std::ffi::OsString>); 9] = [
        // the way back's phase changes and errors reach the same webhook
        ("MIGRATE_NOTIFY_URL", g.notify_url.clone().map(Into::into)),
        ("MIGRATE_SOURCE", g.source.clone().map(Into::into)),
        ("MIGRATE_TARGET", g.target.clone().map(Into::into)),
        (
            "MIGRATE_SOURCE_PASSWORD_FILE",
            g.source_password_file.clone().map(Into::into),
        ),
        (
            "MIGRATE_TARGET_PASSWORD_FILE",
            g.target_password_file.clone().map(Into::into),
        ),
        ("MIGRATE_STATE", Some(ctx.state_path.clone().into())),
        ("MIGRATE_CONFIG", g.config.clone().map(Into::into)),
        ("MIGRATE_LOG_FORMAT", g.log_format.clone().map(Into::into)),
        (
            "MIGRATE_DATABASES",
            (!g.databases.is_empty()).then(|| g.databases.join(",").into()),
        ),
    ];
    for (k, v) in vars {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    // the forward follow may still hold the metrics port while it stops
    cmd.env_remove("MIGRATE_METRICS_ADDR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::definite(format!("cannot start it: {e}"), "run it yourself"))?;
    let pid = child.id();
    // reap it if it ends while we wait (then say why); otherwise leave it running
    let started = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail.lines().last().unwrap_or("").to_string();
            return Err(Error::definite(
                format!("it exited ({status}): {last}"),
                "start it yourself once the cause is fixed",
            ));
        }
        if let Ok(rev) = crate::state::Store::open(&reverse) {
            let running = rev.runs()?.iter().any(|r| {
                r.verb == "follow" && r.outcome == crate::state::Outcome::Running && !r.died()
            });
            if running {
                return Ok(pid);
            }
        }
        if started.elapsed() > std::time::Duration::from_secs(15) {
            return Ok(pid);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
