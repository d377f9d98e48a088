//! `migrate snapshot`: schema, then rows in key-range chunks, then deferred indexes and the
//! other schema objects, then the GTID range of the chunks (and, with `follow`, the catch-up
//! replay that makes the target consistent at one GTID).

pub mod copy;
pub mod load;
pub mod plan;

use crate::config::{Endpoint, Filter};
use crate::db::{self, quote, Session};
use crate::error::{Error, Result};
use crate::obs::progress::Progress;
use crate::position::FilePos;
use crate::schema::{self, ddl, Table};
use crate::state::Store;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::sync::Arc;

pub struct Options {
    pub threads: usize,
    pub chunk_rows: u64,
    pub chunk_bytes: u64,
    pub defer_indexes: bool,
    pub reuse_target: bool,
    /// Write with LOAD DATA LOCAL INFILE when the target allows it.
    pub load_data: bool,
}

/// The selected tables of the source, described. Databases named in --databases must exist.
pub async fn discover(src: &mut Conn, filter: &Filter) -> Result<Vec<Table>> {
    let all = schema::list_databases(src).await?;
    for d in &filter.databases {
        if !all.contains(d) {
            return Err(Error::definite(
                format!("source: database `{d}` does not exist"),
                format!("check --databases; the source has: {}", all.join(", ")),
            ));
        }
    }
    let mut tables = Vec::new();
    for d in all.iter().filter(|d| filter.includes_db(d)) {
        for t in schema::list_tables(src, d).await? {
            if filter.includes_table(d, &t) {
                tables.push(schema::describe(src, d, &t).await?);
            }
        }
    }
    Ok(tables)
}

pub fn selected_databases(tables: &[Table], src_dbs: &[String], filter: &Filter) -> Vec<String> {
    let mut dbs: Vec<String> = src_dbs
        .iter()
        .filter(|d| filter.includes_db(d))
        .cloned()
        .collect();
    for t in tables {
        if !dbs.contains(&t.db) {
            dbs.push(t.db.clone());
        }
    }
    dbs
}

/// Databases of `dbs` that already exist on the target and hold at least one table.
pub async fn non_empty_on_target(tgt: &mut Conn, dbs: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for d in dbs {
        let n = db::query_one(
            tgt,
            &format!(
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {}",
                quote::string(d)
            ),
        )
        .await?;
        let exists = db::query_one(
            tgt,
            &format!(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                quote::string(d)
            ),
        )
        .await?;
        if exists.as_deref() != Some("0") && n.as_deref() != Some("0") {
            out.push(d.clone());
        }
    }
    Ok(out)
}

pub(crate) async fn exec_step(
    store: &Store,
    tgt: &mut Conn,
    step: &str,
    sqls: &[String],
) -> Result<()> {
    if store.step_done(step)? {
        return Ok(());
    }
    for sql in sqls {
        tgt.query_drop(sql.as_str())
            .await
            .map_err(|e| Error::from(e).context(format!("target, {step}")))?;
    }
    store.mark_step(step)
}

/// Databases and tables. Returns the deferred `ALTER TABLE ... ADD KEY` per table.
async fn copy_tables_schema(
    store: &Store,
    src: &mut Conn,
    tgt: &mut Conn,
    dbs: &[String],
    tables: &[Table],
    defer: bool,
) -> Result<Vec<(String, String)>> {
    for d in dbs {
        let create = ddl::create_database(src, d).await?;
        exec_step(store, tgt, &format!("database:{d}"), &[create]).await?;
    }
    let mut deferred = Vec::new();
    for t in tables {
        let create = ddl::create_table(src, &t.db, &t.name).await?;
        let (create, alter) = if defer {
            ddl::split_secondary_indexes(&create, &t.quoted())
        } else {
            (create, None)
        };
        exec_step(
            store,
            tgt,
            &format!("table:{}", t.full_name()),
            &[
                format!("USE {}", quote::ident(&t.db)),
                format!("DROP TABLE IF EXISTS {}", t.quoted()),
                create,
            ],
        )
        .await?;
        store.ensure_table(&t.db, &t.name, t.rows_estimate, t.bytes_estimate)?;
        if let Some(a) = alter {
            deferred.push((format!("index:{}", t.full_name()), a));
        }
    }
    Ok(deferred)
}

/// Views, routines and events, created after the data. Views that depend on views not yet
/// created are retried until no progress is made.
async fn copy_objects(store: &Store, src: &mut Conn, tgt: &mut Conn, dbs: &[String]) -> Result<()> {
    let mut pending = Vec::new();
    for d in dbs {
        pending.extend(ddl::objects(src, d).await?);
    }
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut last_err = None;
        let before = pending.len();
        for o in pending {
            let mut sqls = vec![format!("USE {}", quote::ident(&o.db))];
            if let Some(m) = &o.sql_mode {
                sqls.push(format!("SET SESSION sql_mode = {}", quote::string(m)));
            }
            let drop_kind = if o.kind == "view" {
                "VIEW"
            } else {
                &o.kind.to_uppercase()
            };
            sqls.push(format!(
                "DROP {drop_kind} IF EXISTS {}",
                quote::table(&o.db, &o.name)
            ));
            sqls.push(o.ddl.clone());
            if o.kind == "event" {
                // Events must not run on the target before cutover.
                sqls.push(format!(
                    "ALTER EVENT {} DISABLE",
                    quote::table(&o.db, &o.name)
                ));
            }
            sqls.push(
                "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'".into(),
            );
            match exec_step(store, tgt, &o.step(), &sqls).await {
                Ok(()) => {}
                Err(e) if o.kind == "view" && !e.is_transient() => {
                    last_err = Some(e);
                    failed.push(o);
                }
                Err(e) => return Err(e),
            }
        }
        if failed.len() == before {
            return Err(last_err.unwrap_or_else(|| {
                Error::definite("views could not be created", "check the view definitions")
            }));
        }
        pending = failed;
    }
    Ok(())
}

/// GTID positions (lowest, highest) of the recorded chunks, converted on the source.
async fn gtid_range(store: &Store, src: &mut Conn) -> Result<(String, String)> {
    let positions: Vec<FilePos> = store
        .chunk_position_range()?
        .iter()
        .map(|(f, p)| FilePos::new(f, *p))
        .collect();
    let (Some(lo), Some(hi)) = (positions.iter().min(), positions.iter().max()) else {
        // Nothing copied: the current position is consistent.
        let g = db::query_one(src, "SELECT @@GLOBAL.gtid_binlog_pos")
            .await?
            .unwrap_or_default();
        return Ok((g.clone(), g));
    };
    let conv = |p: &FilePos| {
        format!(
            "SELECT BINLOG_GTID_POS({}, {})",
            quote::string(&p.file),
            p.offset
        )
    };
    let low = db::query_one(src, &conv(lo)).await?;
    let high = db::query_one(src, &conv(hi)).await?;
    match (low, high) {
        (Some(l), Some(h)) => Ok((l, h)),
        _ => Err(Error::definite(
            format!(
                "source: binlog file {} is gone, the snapshot cannot be made consistent",
                lo.file
            ),
            "raise binlog retention (expire_logs_days) and run snapshot again with a new --state",
        )),
    }
}

pub struct Outcome {
    pub gtid_low: String,
    pub gtid_high: String,
    pub tables: usize,
    pub rows: u64,
    pub bytes: u64,
}

pub async fn run(
    source: &Endpoint,
    target: &Endpoint,
    filter: &Filter,
    store: Arc<Store>,
    opts: &Options,
) -> Result<Outcome> {
    let mut src = db::connect_retry(source, Session::Meta, 5).await?;
    let mut tgt = db::connect_retry(target, Session::TargetWriter, 5).await?;
    let tables = discover(&mut src, filter).await?;
    let keyless: Vec<String> = tables
        .iter()
        .filter(|t| !t.has_key())
        .map(|t| t.full_name())
        .collect();
    if !keyless.is_empty() {
        return Err(Error::definite(
            format!(
                "tables without a primary key or NOT NULL unique key: {}",
                keyless.join(", ")
            ),
            "add a primary key, or leave them out with --exclude",
        ));
    }
    let src_dbs = schema::list_databases(&mut src).await?;
    let dbs = selected_databases(&tables, &src_dbs, filter);
    if dbs.is_empty() {
        return Err(Error::definite(
            "no database selected on the source",
            "check --databases and --exclude",
        ));
    }
    if !store.any_steps()? && !opts.reuse_target {
        let busy = non_empty_on_target(&mut tgt, &dbs).await?;
        if !busy.is_empty() {
            return Err(Error::definite(
                format!("target already has tables in: {}", busy.join(", ")),
                "drop them on the target, or pass --reuse-target to overwrite the copied tables",
            ));
        }
    }
    if !store.any_steps()? {
        // A fresh snapshot: a checkpoint left by an earlier migration must not skip events.
        crate::apply::Applier::reset_checkpoint(target).await?;
    }
    store.set("source", &source.to_string())?;
    // follow uses the same selection unless told otherwise
    // (empty = every non-system database, including ones created later)
    store.set("filter.databases", &filter.databases.join(","))?;
    let exclude: Vec<String> = filter
        .exclude
        .iter()
        .map(|p| p.as_str().to_string())
        .collect();
    store.set(
        "filter.exclude",
        &serde_json::to_string(&exclude).unwrap_or_default(),
    )?;
    store.set("target", &target.to_string())?;
    store.set("snapshot.state", "running")?;
    let deferred = copy_tables_schema(
        &store,
        &mut src,
        &mut tgt,
        &dbs,
        &tables,
        opts.defer_indexes,
    )
    .await?;

    let done = store.tables()?;
    let (mut rows_left, mut bytes_left) = (0u64, 0u64);
    let mut todo = Vec::new();
    for t in tables.iter() {
        let p = done.iter().find(|p| p.db == t.db && p.name == t.name);
        if p.is_some_and(|p| p.status == "copied" || p.status == "indexed") {
            continue;
        }
        rows_left += t.rows_estimate.saturating_sub(p.map_or(0, |p| p.rows_done));
        bytes_left += t
            .bytes_estimate
            .saturating_sub(p.map_or(0, |p| p.bytes_done));
        todo.push(Arc::new(t.clone()));
    }
    let progress = Progress::new("snapshot", rows_left, bytes_left);
    let local_infile = db::variable(&mut tgt, "local_infile")
        .await?
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"));
    if !local_infile {
        tracing::info!("target has local_infile=OFF: writing with multi-row INSERT (slower)");
    }
    let max_packet: usize = db::variable(&mut tgt, "max_allowed_packet")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(16 << 20);
    let plan = copy::CopyPlan {
        source: source.clone(),
        target: target.clone(),
        store: store.clone(),
        progress: progress.clone(),
        chunk_rows: opts.chunk_rows,
        chunk_bytes: opts.chunk_bytes,
        max_statement: (max_packet / 4).clamp(64 << 10, 4 << 20),
        load_data: local_infile && opts.load_data,
        deferred: deferred
            .iter()
            .map(|(step, alter)| {
                (
                    step.trim_start_matches("index:").to_string(),
                    (step.clone(), alter.clone()),
                )
            })
            .collect(),
    };
    copy::copy_tables(&plan, todo, opts.threads).await?;
    progress.finish();

    for (step, alter) in deferred {
        exec_step(&store, &mut tgt, &step, &[alter]).await?;
    }
    copy_objects(&store, &mut src, &mut tgt, &dbs).await?;
    let (gtid_low, gtid_high) = gtid_range(&store, &mut src).await?;
    store.set("snapshot.gtid_low", &gtid_low)?;
    store.set("snapshot.gtid_high", &gtid_high)?;
    let all = store.tables()?;
    Ok(Outcome {
        gtid_low,
        gtid_high,
        tables: all.len(),
        rows: all.iter().map(|t| t.rows_done).sum(),
        bytes: all.iter().map(|t| t.bytes_done).sum(),
    })
}
