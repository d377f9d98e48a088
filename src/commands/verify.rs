//! `migrate verify`: compare every migrated table (or `--tables`) at one GTID per round, name
//! the rows that differ, `--repair` them. Exit 0 identical, 1 differences, 2 error.

use super::Context;
use crate::cli::VerifyArgs;
use crate::config::Endpoint;
use crate::config::Filter;
use crate::db::{self, Session};
use crate::error::{Error, Result};
use crate::position::Position;
use crate::replication::{self, control, OnDdl, Until};
use crate::state::Store;
use crate::verify::{self, TargetSync};

/// Brings the target to a GTID with the replication loop (verify holds the state file's lock,
/// so no follow runs meanwhile and nothing else moves the target).
struct Replay<'a> {
    source: &'a Endpoint,
    target: &'a Endpoint,
    filter: &'a Filter,
    store: &'a Store,
    start: Position,
    migration: String,
    server_id: u32,
    /// Reads the target's checkpoint between rounds.
    checkpoint_conn: tokio::sync::Mutex<Option<mysql_async::Conn>>,
}

impl Replay<'_> {
    /// The position the target's checkpoint row records (no DDL in flight).
    async fn applied(&self) -> Result<Option<Position>> {
        let mut guard = self.checkpoint_conn.lock().await;
        if guard.is_none() {
            *guard = Some(
                db::connect(self.target, Session::Meta)
                    .await
                    .map_err(|e| e.context("target"))?,
            );
        }
        let Some(conn) = guard.as_mut() else {
            return Ok(None);
        };
        match crate::apply::checkpoint::read(conn, &self.migration).await {
            Ok(Some(row)) if row.ddl_in_flight.is_none() => Ok(row.position),
            Ok(_) => Ok(None),
            Err(_) => {
                // a dropped connection: the replay below reconnects on its own
                *guard = None;
                Ok(None)
            }
        }
    }
}

impl TargetSync for Replay<'_> {
    async fn hold(&self) -> Result<()> {
        Ok(())
    }
    async fn release(&self) -> Result<()> {
        Ok(())
    }
    async fn to(&self, pos: &Position) -> Result<bool> {
        // already there (nothing was written since the last round): no replay to start
        if let Some(at) = self.applied().await? {
            if at.contains(pos) && pos.contains(&at) {
                return Ok(true);
            }
        }
        let opts = replication::Options {
            migration: self.migration.clone(),
            until: Until::Position(pos.clone()),
            on_ddl: OnDdl::Exec,
            server_id: self.server_id,
            group_size: 20_000,
            max_source_load: None,
            live_line: false,
        };
        replication::follow(
            self.source,
            self.target,
            self.filter,
            self.store,
            self.start.clone(),
            &opts,
        )
        .await?;
        Ok(true)
    }
}

/// A follow running in another process, paused through the state store.
pub(crate) struct PauseFollow<'a> {
    pub store: &'a Store,
}

const PAUSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl TargetSync for PauseFollow<'_> {
    async fn hold(&self) -> Result<()> {
        control::pause(self.store, None, PAUSE_TIMEOUT).await?;
        Ok(())
    }
    async fn to(&self, pos: &Position) -> Result<bool> {
        let p = control::pause(self.store, Some(pos), PAUSE_TIMEOUT).await?;
        Ok(!p.passed)
    }
    async fn release(&self) -> Result<()> {
        control::release(self.store)
    }
}

/// `migrate verify`: with follow running (another process), pause it through the state store
/// for each round; otherwise lock the state file and replay to each round's GTID itself.
pub async fn entry(ctx: &Context, args: &VerifyArgs) -> Result<i32> {
    if ctx.state_path.exists() {
        let store = ctx.store()?;
        let follow_running = store.runs()?.iter().any(|r| {
            r.verb == "follow" && r.outcome == crate::state::Outcome::Running && !r.died()
        });
        if follow_running {
            store.start_run("verify")?;
            let res = run(ctx, args, Some(&PauseFollow { store: &store })).await;
            let (outcome, err) = match &res {
                Ok(_) => (crate::state::Outcome::Ok, None),
                Err(e) => (crate::state::Outcome::Failed, Some(e.to_string())),
            };
            store.end_run("verify", outcome, err.as_deref())?;
            return res;
        }
    }
    super::tracked(ctx, "verify", false, run(ctx, args, None)).await
}

async fn run(ctx: &Context, args: &VerifyArgs, running: Option<&PauseFollow<'_>>) -> Result<i32> {
    let (source, target) = (ctx.source()?, ctx.target()?);
    let store = ctx.store()?;
    let start = store
        .get("snapshot.gtid_consistent")?
        .ok_or_else(|| {
            Error::usage(
                format!(
                    "state file {} has no finished snapshot",
                    ctx.state_path.display()
                ),
                "run `migrate snapshot` to the end first (with the same --state)",
            )
        })
        .and_then(|g| Position::parse(&g))?;
    let filter = super::follow::selection(ctx, &store)?;
    let wanted: Vec<&str> = args.tables.iter().map(String::as_str).collect();
    // the tables as the source has them now (a dropped connection is tried again)
    let mut backoff = crate::db::retry::Backoff::bounded();
    let (tables, source_filter) = loop {
        match describe(source, &store, &filter, &wanted).await {
            Ok(t) => break t,
            Err(e) => {
                backoff
                    .retry_after(e, "verify: describing the tables")
                    .await?
            }
        }
    };
    let sync = Replay {
        source,
        target,
        filter: &filter,
        store: &store,
        start,
        migration: store.migration_id()?,
        server_id: super::follow::server_id(&store, None)?,
        checkpoint_conn: Default::default(),
    };
    let opts = verify::Options {
        chunk_rows: args.chunk_rows.max(1),
        chunk_time: std::time::Duration::from_secs_f64(
            if args.chunk_time.is_finite() && args.chunk_time > 0.0 {
                args.chunk_time
            } else {
                return Err(Error::usage(
                    format!(
                        "--chunk-time {}: not a positive number of seconds",
                        args.chunk_time
                    ),
                    "give e.g. --chunk-time 0.5",
                ));
            },
        ),
        max_source_load: args.max_source_load,
        workers: args.workers.max(1),
        round_chunks: args.round_chunks.max(1),
        repair: args.repair,
        // a verify killed before its end continues (same selection), unless told to restart
        resume: !args.restart
            && store.get("verify.in_progress")?.as_deref() == Some("1")
            // a verify begun by an older migrate did not note where changed keys start
            && store.get("verify.touched_from")?.is_some()
            && store.get("verify.selection")?.as_deref() == Some(args.tables.join(",").as_str()),
        filter: source_filter,
    };
    if opts.resume {
        tracing::info!("continuing the verify that was interrupted (--restart to start over)");
    }
    store.set("verify.selection", &args.tables.join(","))?;
    if !opts.resume {
        // every key changed on the target before this moment is compared by this verify
        // (verify/touched.rs): cutover proves only those changed after
        store.set("verify.touched_from", &store.touched_seq()?.to_string())?;
    }
    let touched_from: i64 = store
        .get("verify.touched_from")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let out = match running {
        Some(p) => {
            tracing::info!("follow is running: pausing it at each round's GTID");
            verify::run(source, target, &tables, p, &store, &opts).await?
        }
        None => verify::run(source, target, &tables, &sync, &store, &opts).await?,
    };

    let identical = out.identical();
    let total = out.differences.len();
    let shown: Vec<&verify::RowDiff> = out.differences.iter().take(args.max_report_rows).collect();
    let summary = serde_json::json!({
        "at": crate::state::rfc3339(crate::state::unix_now()),
        "at_unix": crate::state::unix_now(),
        "gtid": out.last_gtid,
        "identical": identical,
        "tables": out.tables,
        "chunks": out.chunks,
        "rows": out.rows,
        "differences_total": total,
        "differences": shown,
        "keyless_tables_differing": out.keyless_tables_differing,
        "schema_differences": out.schema_differences,
        "triggers_pending_until_cutover": out.triggers_pending,
        "repaired": out.repaired,
        "repair_failed": out.repair_failed,
        "rounds": out.rounds,
        "target_sync_seconds_total": out.sync_seconds_total,
        "target_sync_seconds_max": out.sync_seconds_max,
        "full": args.tables.is_empty(),
        "touched_from": touched_from,
    });
    if let Some(path) = &args.report {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )
        .map_err(|e| {
            Error::usage(
                format!("--report {}: {e}", path.display()),
                "give a writable file path",
            )
        })?;
    }
    let mut last = summary.clone();
    if let Some(o) = last.as_object_mut() {
        o.remove("differences");
        o.remove("schema_differences");
        o.insert(
            "schema_differences_total".into(),
            out.schema_differences.len().into(),
        );
    }
    store.set("verify.last", &last.to_string())?;
    if args.tables.is_empty() {
        // cutover's baseline: the last verify of every table
        store.set("verify.last_full", &last.to_string())?;
        if identical {
            let verified: Vec<(String, String)> = tables
                .iter()
                .map(|t| (t.db.clone(), t.name.clone()))
                .collect();
            store.forget_touched(touched_from, &verified)?;
        }
    }
    for d in &shown {
        let key: Vec<String> = d.key.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let what = match d.kind {
            verify::DiffKind::Missing => "missing on the target".to_string(),
            verify::DiffKind::Extra => "extra on the target".to_string(),
            verify::DiffKind::Different => format!("differs in {}", d.columns.join(", ")),
        };
        println!(
            "{}.{} ({}): {what}{}",
            d.database,
            d.table,
            key.join(", "),
            if d.repaired { " — repaired" } else { "" }
        );
    }
    for d in &out.schema_differences {
        println!(
            "schema: {} differs: source {}, target {}",
            d.object,
            d.source.as_deref().unwrap_or("(none)"),
            d.target.as_deref().unwrap_or("(none)")
        );
    }
    if !out.triggers_pending.is_empty() {
        println!(
            "{} trigger(s) pending until cutover: {}",
            out.triggers_pending.len(),
            out.triggers_pending.join(", ")
        );
    }
    for t in &out.keyless_tables_differing {
        println!("{t}: rows differ (no key: compared as a multiset; not narrowed, not repaired)");
    }
    let text = format!(
        "verify at GTID {}: {} tables, {} rows, {} chunks: {}{} (target synced {} rounds, longest {:.2} s, total {:.2} s)",
        out.last_gtid,
        out.tables,
        out.rows,
        out.chunks,
        if identical {
            "identical".to_string()
        } else if out.schema_differences.is_empty() {
            "DIFFERENT".to_string()
        } else {
            format!("DIFFERENT ({} schema difference(s))", out.schema_differences.len())
        },
        if total > 0 {
            format!(
                "; {total} differing row(s){}",
                if args.repair {
                    format!(", {} repaired, {} not", out.repaired, out.repair_failed)
                } else {
                    String::new()
                }
            )
        } else {
            String::new()
        },
        out.rounds,
        out.sync_seconds_max,
        out.sync_seconds_total
    );
    crate::obs::result("verify", summary, &text);
    Ok(if identical { 0 } else { 1 })
}

/// The migrated tables (or those of `--tables`, each of which must be one) described on the
/// source, and the selection as the source names things (folded when it folds names:
/// `lower_case_table_names=1` knows `Shop.Orders` as shop.orders); sequences are left to the
/// schema comparison.
pub(crate) async fn describe(
    source: &Endpoint,
    store: &Store,
    filter: &Filter,
    wanted: &[&str],
) -> Result<(Vec<crate::schema::Table>, Filter)> {
    let mut meta = db::connect(source, Session::Meta)
        .await
        .map_err(|e| e.context("source"))?;
    let folds = db::preflight::lower_case_table_names(&mut meta).await? == 1;
    let filter = filter.folded_if(folds)?;
    let wanted: Vec<String> = wanted
        .iter()
        .map(|w| {
            if folds {
                crate::config::fold_name(w)
            } else {
                Ok(w.to_string())
            }
        })
        .collect::<Result<_>>()?;
    // the migration's tables as the source has them now (listed before any round: a table
    // listed here was created at or before every round's GTID), also those created after the
    // snapshot; those the snapshot copied and the source no longer has are the schema
    // comparison's
    let mut names: Vec<(String, String)> = store
        .tables()?
        .into_iter()
        .map(|t| (t.db, t.name))
        .collect();
    let databases = crate::schema::list_databases(&mut meta).await?;
    names.extend(crate::snapshot::selected_tables(&mut meta, &databases, &filter).await?);
    names.sort();
    names.dedup();
    let mut tables = Vec::new();
    let mut known = Vec::new();
    for (db, name) in names {
        let full = format!("{db}.{name}");
        if !wanted.is_empty() && !wanted.contains(&full) {
            continue;
        }
        let t = match crate::schema::describe(&mut meta, &db, &name).await {
            Ok(t) => t,
            // dropped on the source since the snapshot
            Err(e) if e.what.ends_with(" not found") => continue,
            Err(e) => return Err(e.context("source")),
        };
        known.push(full);
        if t.sequence {
            continue; // one row, compared by the schema comparison
        }
        if t.storage() != crate::schema::Storage::Here {
            // a MERGE table's rows are its underlying tables', compared as those; a FEDERATED
            // table's are on another server, the same one for both
            tracing::info!(
                "{}: {} table, its rows are not its own: compared by its definition only",
                t.full_name(),
                t.engine
            );
            continue;
        }
        tables.push(t);
    }
    for w in &wanted {
        if !known.contains(w) {
            return Err(Error::usage(
                format!("--tables {w}: not a table this migration copied"),
                "name tables as db.table, as `migrate status` lists them",
            ));
        }
    }
    Ok((tables, filter))
}
