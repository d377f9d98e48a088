//! `migrate snapshot`: copy, then (unless --no-catch-up) replay the binlog from the lowest to
//! the highest chunk position so the target is consistent at one GTID.

use super::Context;
use crate::cli::SnapshotArgs;
use crate::error::Result;
use crate::obs::progress::human_bytes;
use crate::snapshot::{self, Options};

pub async fn run(ctx: &Context, args: &SnapshotArgs) -> Result<i32> {
    // --snapshot-source: everything this verb reads (rows, schema, the catch-up's binlog) comes
    // from the replica; its GTIDs are the source's, so follow continues on the source
    let replica_ctx;
    let ctx = match &ctx.global.snapshot_source {
        Some(_) if args.no_catch_up => {
            return Err(crate::error::Error::usage(
                "--snapshot-source with --no-catch-up: the catch-up must read the replica the copy was read from",
                "drop --no-catch-up",
            ))
        }
        Some(url) => {
            let primary = ctx.source()?;
            let replica = crate::db::replica::endpoint(url, primary)?;
            crate::db::replica::connect_checked(&replica, primary, ctx.global.max_replica_lag)
                .await?;
            tracing::info!(
                "reading the snapshot from the replica {} (the source serves only the binlog to follow)",
                replica.address()
            );
            ctx.store()?.set("snapshot.read_from", &replica.address())?;
            replica_ctx = Context {
                source: Some(replica),
                ..ctx.clone()
            };
            &replica_ctx
        }
        None => ctx,
    };
    let (source, target) = (ctx.source()?, ctx.target()?);
    let store = ctx.store()?;
    let opts = Options {
        threads: args.threads,
        chunk_rows: args.chunk_rows,
        chunk_bytes: args.chunk_bytes,
        defer_indexes: match (args.defer_indexes, args.no_defer_indexes) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        },
        reuse_target: args.reuse_target,
        load_data: !args.no_load_data,
        state_path: ctx.state_path.display().to_string(),
    };
    // A connection lost outside a chunk (schema, indexes, views, positions) resumes the whole
    // verb from the state store: finished steps and chunks are skipped.
    let mut backoff = crate::db::retry::Backoff::bounded();
    let out = loop {
        match snapshot::run(source, target, &ctx.filter, store.clone(), &opts).await {
            Ok(out) => break out,
            Err(e) => backoff.retry_after(e, "snapshot (resuming it)").await?,
        }
    };
    let text = format!(
        "snapshot copied {} tables, {} rows, {}; chunk GTID range {} .. {}",
        out.tables,
        out.rows,
        human_bytes(out.bytes),
        if out.gtid_low.is_empty() {
            "(empty)"
        } else {
            &out.gtid_low
        },
        if out.gtid_high.is_empty() {
            "(empty)"
        } else {
            &out.gtid_high
        }
    );
    crate::obs::result(
        "snapshot_copy",
        serde_json::json!({ "tables": out.tables, "rows": out.rows, "bytes": out.bytes,
            "gtid_low": out.gtid_low, "gtid_high": out.gtid_high }),
        &text,
    );
    if !args.no_catch_up {
        // up to the last chunk, and past every horizon (a table listing or a table seen gone
        // after the last chunk): from there on no horizon applies, so follow may read another
        // server (the source after --snapshot-source, a promoted replica)
        let past = store
            .get("snapshot.gtid_past_horizons")?
            .unwrap_or_default();
        let until = match (
            crate::position::Position::parse(&past),
            crate::position::Position::parse(&out.gtid_high),
        ) {
            (Ok(p), Ok(h)) if !past.is_empty() && p.contains(&h) => past,
            _ => out.gtid_high.clone(),
        };
        let consistent = super::follow::catch_up(ctx, &store, &out.gtid_low, &until).await?;
        store.set("snapshot.gtid_consistent", &consistent)?;
        crate::obs::result(
            "snapshot",
            serde_json::json!({ "consistent_at_gtid": consistent }),
            &format!("snapshot consistent at GTID {consistent}"),
        );
    }
    store.set("snapshot.state", "done")?;
    Ok(0)
}
