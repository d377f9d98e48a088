//! `migrate follow` and the snapshot's catch-up: set up the replication loop (`replication`)
//! with its start position, stop condition and selection.

use super::Context;
use crate::cli::FollowArgs;
use crate::config::Filter;
use crate::error::{Error, Result};
use crate::position::{Gtid, Position};
use crate::replication::{follow, install_signal_handlers, OnDdl, Options, Until};
use crate::state::Store;
use std::sync::Arc;

pub fn server_id(store: &Store, given: Option<u32>) -> Result<u32> {
    if let Some(id) = given {
        return Ok(id);
    }
    if let Some(id) = store.get("follow.server_id")?.and_then(|s| s.parse().ok()) {
        return Ok(id);
    }
    let id = rand::random::<u32>() % 1_000_000_000 + 1_000_000_000;
    store.set("follow.server_id", &id.to_string())?;
    Ok(id)
}

pub async fn run(ctx: &Context, args: &FollowArgs) -> Result<i32> {
    let (source, target) = (ctx.source()?, ctx.target()?);
    let store = ctx.store()?;
    let start = match store
        .get("snapshot.gtid_consistent")?
        .or(store.get("snapshot.gtid_low")?)
    {
        Some(g) => Position::parse(&g)?,
        None => {
            return Err(Error::usage(
                format!(
                    "state file {} has no snapshot position",
                    ctx.state_path.display()
                ),
                "run `migrate snapshot` first (with the same --state)",
            ))
        }
    };
    if matches!(
        store.get("cutover.state")?.as_deref(),
        Some("switched") | Some("completed") | Some("rolled_back_after_switch")
    ) {
        return Err(Error::usage(
            "the cutover switched the application (to the target, or back): following the source now would apply writes the target already has or never should",
            "nothing to follow; start a new migration (new --state) to copy again",
        ));
    }
    // every migrated table's row counters exist from the start, at 0
    for t in store.tables()? {
        crate::obs::metrics::init_table(&format!("{}.{}", t.db, t.name));
    }
    let until = match (&args.until_gtid, args.until_caught_up) {
        (Some(g), _) => Until::Gtid(Gtid::parse(g)?),
        (None, true) => Until::CaughtUp,
        (None, false) => Until::Forever,
    };
    let migration = store.get("migration.id")?.ok_or_else(|| {
        Error::usage(
            format!(
                "state file {} has no migration id",
                ctx.state_path.display()
            ),
            "run `migrate snapshot` first (with the same --state)",
        )
    })?;
    let opts = Options {
        migration,
        until,
        on_ddl: match args.on_ddl.as_str() {
            "stop" => OnDdl::Stop,
            "ignore" => OnDdl::Ignore,
            _ => OnDdl::Exec,
        },
        server_id: server_id(&store, args.server_id)?,
        group_size: args.group_size.max(1),
        max_source_load: args.max_source_load,
        live_line: true,
    };
    install_signal_handlers();
    let filter = selection(ctx, &store)?;
    let bounded = !matches!(opts.until, Until::Forever);
    let pos = follow(source, target, &filter, &store, start, &opts).await?;
    // a signal before --until-caught-up / --until-gtid was reached is not success: a script
    // running `follow --until-caught-up && next-step` must not go on
    let interrupted = bounded && crate::replication::stop_requested();
    crate::obs::result(
        "follow",
        serde_json::json!({ "stopped_at_gtid": pos.to_string(), "interrupted": interrupted }),
        &if interrupted {
            format!("follow interrupted at GTID {pos}, before its --until condition")
        } else {
            format!("follow stopped at GTID {pos}")
        },
    );
    Ok(if interrupted { 130 } else { 0 })
}

/// `--databases`/`--exclude` if given, else the snapshot's selection from the state file (so
/// a bare `migrate follow` replicates exactly what was copied).
pub fn selection(ctx: &Context, store: &Store) -> Result<Filter> {
    if !ctx.filter.databases.is_empty() || !ctx.filter.exclude.is_empty() {
        return Ok(ctx.filter.clone());
    }
    let dbs: Vec<String> = store
        .get("filter.databases")?
        .map(|d| {
            d.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let exclude: Vec<String> = match store.get("filter.exclude")? {
        Some(e) => serde_json::from_str(&e).map_err(|err| {
            Error::definite(
                format!(
                    "state file {}: the snapshot's stored --exclude filter cannot be read ({err})",
                    ctx.state_path.display()
                ),
                "pass --databases and --exclude explicitly, exactly as given to snapshot",
            )
        })?,
        None => Vec::new(),
    };
    Filter::new(&dbs, &exclude)
}

/// The snapshot's catch-up: replay from `low` to `high` (a target consistent at one GTID).
pub async fn catch_up(ctx: &Context, store: &Arc<Store>, low: &str, high: &str) -> Result<String> {
    let (source, target) = (ctx.source()?, ctx.target()?);
    let opts = Options {
        migration: store.migration_id()?,
        until: Until::Position(Position::parse(high)?),
        on_ddl: OnDdl::Exec,
        server_id: server_id(store, None)?,
        group_size: 20_000,
        max_source_load: None,
        live_line: true,
    };
    if Position::parse(low)?.contains(&Position::parse(high)?) {
        // every chunk was read at the same GTID position: the copy is consistent as it is
        tracing::info!("catch-up: nothing to replay (every chunk was read at {high})");
        return Ok(high.to_string());
    }
    tracing::info!("catch-up: replaying the binlog from {low} to {high}");
    let pos = follow(
        source,
        target,
        &ctx.filter,
        store,
        Position::parse(low)?,
        &opts,
    )
    .await?;
    Ok(pos.to_string())
}
