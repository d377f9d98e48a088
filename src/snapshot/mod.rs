//! `migrate snapshot`: schema, then rows in key-range chunks, then deferred indexes and the
//! other schema objects, then the GTID range of the chunks (and, with `follow`, the catch-up
//! replay that makes the target consistent at one GTID).

pub mod copy;
pub mod load;

use crate::config::{Endpoint, Filter};
use crate::db::{self, quote, Session};
use crate::error::{Error, Result};
use crate::obs::progress::Progress;
use crate::position::FilePos;
use crate::schema::{self, ddl, Table};
use crate::state::Store;
use mysql_async::Conn;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct Options {
    pub threads: usize,
    pub chunk_rows: u64,
    pub chunk_bytes: u64,
    /// Add non-unique secondary indexes after the rows; None: when the source is near
    /// (`db::FAR_RTT`).
    pub defer_indexes: Option<bool>,
    pub reuse_target: bool,
    /// Write with LOAD DATA LOCAL INFILE when the target allows it.
    pub load_data: bool,
    /// The state file, recorded on the target with the migration's row.
    pub state_path: String,
}

/// The selected tables of the source, described, each with its definition. Databases named
/// in --databases must exist.
pub async fn discover(src: &mut Conn, filter: &Filter) -> Result<Vec<(Table, String)>> {
    let all = schema::list_databases(src).await?;
    discover_in(src, &all, filter).await
}

/// The selected tables of the source databases `all`, each described together with its
/// definition (`describe_all`). Databases named in --databases must exist.
pub async fn discover_in(
    src: &mut Conn,
    all: &[String],
    filter: &Filter,
) -> Result<Vec<(Table, String)>> {
    for d in &filter.databases {
        if !all.contains(d) {
            return Err(Error::definite(
                format!("source: database `{d}` does not exist"),
                format!("check --databases; the source has: {}", all.join(", ")),
            ));
        }
    }
    let names = selected_tables(src, all, filter).await?;
    describe_all(src, &names).await
}

/// (database, table) of every table in `databases` (the server's) that `filter` selects.
pub async fn selected_tables(
    src: &mut Conn,
    databases: &[String],
    filter: &Filter,
) -> Result<Vec<(String, String)>> {
    let dbs: Vec<String> = databases
        .iter()
        .filter(|d| filter.includes_db(d))
        .cloned()
        .collect();
    Ok(schema::list_tables(src, &dbs)
        .await?
        .into_iter()
        .filter(|(d, t)| filter.includes_table(d, t))
        .collect())
}

/// MERGE tables of the selected databases that `--exclude` leaves out. A change made through
/// one is logged against it alone, not against the table that holds the row: follow would
/// skip it with the MERGE table and its underlying tables would miss it.
pub async fn excluded_merge_tables(
    src: &mut Conn,
    all: &[String],
    filter: &Filter,
) -> Result<Vec<(String, String, String)>> {
    let dbs: Vec<String> = all
        .iter()
        .filter(|d| filter.includes_db(d))
        .map(|d| quote::string(d))
        .collect();
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db::query_strings(
        src,
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE ENGINE = 'MRG_MyISAM' AND TABLE_SCHEMA IN ({})",
            dbs.join(", ")
        ),
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let mut r = r.into_iter().flatten();
            Some((r.next()?, r.next()?))
        })
        .filter(|(d, t)| !filter.includes_table(d, t))
        .map(|(d, t)| {
            let name = format!("{d}.{t}");
            (
                name.clone(),
                "is a MERGE table left out by --exclude: a change made through it is logged against it alone, so the tables it unions would miss that change on the target".into(),
                format!("migrate {name} too (no --exclude for it), or drop it on the source"),
            )
        })
        .collect())
}

/// Views of the migrated databases that read a table (or view) that is not migrated (another
/// database, or `--exclude`): the target cannot create them (error 1146), and the snapshot
/// used to find that out only after copying every row. MariaDB stores a view's definition
/// with its names qualified (`db`.`table`, `db`.`table`.`column`), which is what is read.
pub async fn views_reading_outside(
    src: &mut Conn,
    all: &[String],
    filter: &Filter,
) -> Result<Vec<(String, String, String)>> {
    let dbs: Vec<String> = all
        .iter()
        .filter(|d| filter.includes_db(d))
        .map(|d| quote::string(d))
        .collect();
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db::query_strings(
        src,
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS \
             WHERE TABLE_SCHEMA IN ({}) ORDER BY TABLE_SCHEMA, TABLE_NAME",
            dbs.join(", ")
        ),
    )
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let g = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let (d, v, definition) = (g(0), g(1), g(2));
        if !filter.includes_table(&d, &v) {
            continue;
        }
        let outside = crate::sql::lexer::qualified_names(definition.as_bytes())
            .into_iter()
            .find(|(x, y)| {
                all.contains(x)
                    && !crate::config::SYSTEM_DATABASES.contains(&x.as_str())
                    && !(filter.includes_db(x) && filter.includes_table(x, y))
            });
        if let Some((x, y)) = outside {
            let name = format!("{d}.{v}");
            out.push((
                name.clone(),
                format!("is a view that reads {x}.{y}, which is not migrated: the target cannot create it (error 1146)"),
                format!("--exclude '{name}' (and create it on the target yourself), or migrate {x}.{y} too"),
            ));
        }
    }
    Ok(out)
}

/// Tables migrate refuses, with the reason and the fix: (table, reason, fix), from each
/// table's description and definition.
pub fn unsupported<'a>(
    tables: impl IntoIterator<Item = (&'a Table, &'a str)>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (t, definition) in tables {
        let name = t.full_name();
        if definition.contains(" WITHOUT OVERLAPS") {
            out.push((
                name.clone(),
                "has a WITHOUT OVERLAPS key: MariaDB refuses REPLACE and INSERT ... ON DUPLICATE KEY UPDATE on such a table (error 1235), and those are how migrate writes rows so that a retry cannot apply them twice".into(),
                format!("--exclude '{name}' and copy it another way (mariadb-dump, with writes to it stopped), or drop its WITHOUT OVERLAPS key on the source"),
            ));
        } else if t.versioned {
            out.push((
                name.clone(),
                "is a system-versioned table (WITH SYSTEM VERSIONING): its history rows cannot be copied or followed exactly".into(),
                format!("--exclude '{name}' and copy it with mariadb-dump --dump-history, or remove system versioning on the source"),
            ));
        } else if t.storage() == schema::Storage::Unknown {
            out.push((
                name.clone(),
                format!("uses the {} engine: migrate does not know where it keeps its rows, so it cannot copy them or follow their changes exactly", if t.engine.is_empty() { "(not loaded)" } else { &t.engine }),
                format!("--exclude '{name}' and create it on the target yourself, or convert it on the source (ALTER TABLE ... ENGINE=InnoDB)"),
            ));
        } else if t.storage() != schema::Storage::Here {
            // its rows are not copied (see `schema::Storage`): no key is needed
        } else if !t.has_key() && !t.sequence && !t.transactional() {
            out.push((
                name.clone(),
                format!("has no primary or NOT NULL unique key and its engine ({}) is not transactional: its changes cannot be applied exactly once", t.engine),
                format!("add a primary key, convert it to InnoDB, or --exclude '{name}'"),
            ));
        }
    }
    out
}

/// Describe `db.name` together with the definition it was described under: the definition
/// is read before and after the description until both agree (a DDL in between).
/// A table that no longer exists (dropped or renamed on the source since it was listed).
fn vanished(e: &Error) -> bool {
    e.code() == Some(1146) || (e.what.starts_with("table ") && e.what.ends_with(" not found"))
}

/// The statements of one stable description: definition, description, definition again.
fn stable_queries(db: &str, name: &str) -> Vec<String> {
    let mut queries = vec![ddl::create_table_sql(db, name)];
    queries.extend(schema::describe_queries(db, name));
    queries.push(ddl::create_table_sql(db, name));
    queries
}

/// The result sets of `stable_queries`: the table, its definition, and whether both
/// definitions agree (no DDL in between).
fn stable_from(
    db: &str,
    name: &str,
    mut sets: Vec<Vec<Vec<Option<String>>>>,
) -> Result<(Table, String, bool)> {
    let after = ddl::create_table_from(sets.pop().unwrap_or_default(), db, name)?;
    let before = ddl::create_table_from(std::mem::take(&mut sets[0]), db, name)?;
    let t = schema::describe_from(db, name, sets.split_off(1))?;
    let stable = before == after;
    Ok((t, after, stable))
}

pub async fn describe_stable(conn: &mut Conn, db: &str, name: &str) -> Result<(Table, String)> {
    let mut attempts = 0;
    loop {
        // definition, description, definition again: one round trip
        let queries = stable_queries(db, name);
        let sets = db::query_each(conn, &queries, &format!("describing {db}.{name}")).await?;
        let (t, definition, stable) = stable_from(db, name, sets)?;
        if stable || attempts >= 10 {
            return Ok((t, definition));
        }
        attempts += 1;
    }
}

/// Tables described per round trip by `describe_all` (seven statements each).
const DESCRIBE_BATCH: usize = 32;

/// `describe_stable` of each of `names`, many tables per round trip (over the VPN each round
/// trip costs tens of ms). A table renamed or dropped since it was listed is left out (the
/// snapshot's final listing, `reconcile`, copies whatever exists then).
pub async fn describe_all(
    conn: &mut Conn,
    names: &[(String, String)],
) -> Result<Vec<(Table, String)>> {
    let mut out = Vec::new();
    for batch in names.chunks(DESCRIBE_BATCH) {
        let queries: Vec<String> = batch
            .iter()
            .flat_map(|(d, n)| stable_queries(d, n))
            .collect();
        let per = queries.len() / batch.len();
        let mut pending: Vec<&(String, String)> = Vec::new();
        match db::query_each(conn, &queries, "describing tables").await {
            Ok(sets) => {
                let mut sets = sets.into_iter();
                for name in batch {
                    let own: Vec<_> = sets.by_ref().take(per).collect();
                    match stable_from(&name.0, &name.1, own)? {
                        (t, definition, true) => out.push((t, definition)),
                        // a DDL between the two definitions: this one again on its own
                        _ => pending.push(name),
                    }
                }
            }
            Err(e) if e.is_transient() => return Err(e),
            // one of them failed (gone since the listing, most likely): each on its own
            Err(_) => pending.extend(batch.iter()),
        }
        for (d, n) in pending {
            match describe_stable(conn, d, n).await {
                Ok(x) => out.push(x),
                Err(e) if vanished(&e) => {
                    tracing::info!("{d}.{n}: gone since it was listed; skipped");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(out)
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

/// Run `sqls` on the target as step `step` of the state store, unless it is done already.
pub(crate) async fn exec_step<S: AsRef<[u8]>>(
    store: &Store,
    tgt: &mut Conn,
    step: &str,
    sqls: &[S],
) -> Result<()> {
    if store.step_done(step)? {
        return Ok(());
    }
    for sql in sqls {
        db::run_bytes(tgt, sql.as_ref())
            .await
            .map_err(|e| e.context(format!("target, {step}")))?;
    }
    store.mark_step(step)
}

/// Create `t` on the target from `definition` (with its non-unique secondary indexes split
/// off when `defer`), recording the definition. Returns the deferred `ALTER TABLE ... ADD`.
async fn create_table(
    store: &Store,
    tgt: &mut Conn,
    t: &Table,
    definition: &str,
    defer: bool,
) -> Result<Option<String>> {
    let step = format!("table:{}", t.full_name());
    // indexes are added after the rows only where the rows are copied: an ALTER of a MERGE
    // or FEDERATED table would rebuild it, a FEDERATED one by copying its remote rows again
    let (create, alter) = if defer && t.storage() == schema::Storage::Here {
        ddl::split_secondary_indexes(definition, &t.quoted(), t.referenced_by_fk)
    } else {
        (definition.to_string(), None)
    };
    let prepare = [
        format!("USE {}", quote::ident(&t.db)),
        format!("DROP TABLE IF EXISTS {}", t.quoted()),
    ];
    let alter = if store.step_done(&step)? {
        alter
    } else {
        for sql in &prepare {
            db::run(tgt, sql)
                .await
                .map_err(|e| e.context(format!("target, {step}")))?;
        }
        match db::run(tgt, &create).await {
            Ok(()) => alter,
            Err(e) if alter.is_some() && !e.is_transient() => {
                // a shape the split form does not fit: create it with all its indexes
                tracing::info!(
                    "{}: creating it with its indexes (they cannot be added later for this shape)",
                    t.full_name()
                );
                db::run(tgt, definition)
                    .await
                    .map_err(|e| e.context(format!("target, {step}")))?;
                None
            }
            Err(e) => return Err(e.context(format!("target, {step}"))),
        }
    };
    store.ensure_table(&t.db, &t.name, t.rows_estimate, t.bytes_estimate)?;
    store.set_table_definition(&t.db, &t.name, definition)?;
    store.mark_step(&step)?;
    Ok(alter)
}

/// Databases and tables (sequences first: a column may default to NEXTVAL of one). Returns
/// the tables as described together with their definitions, and the deferred indexes.
async fn copy_tables_schema(
    store: &Store,
    src: &mut Conn,
    tgt: &mut Conn,
    dbs: &[String],
    tables: &[(Table, String)],
    defer: bool,
) -> Result<(Vec<Table>, HashMap<String, (String, String)>)> {
    for (d, create) in dbs.iter().zip(ddl::create_databases(src, dbs).await?) {
        exec_step(store, tgt, &format!("database:{d}"), &[create]).await?;
    }
    let mut ordered: Vec<&(Table, String)> = tables.iter().filter(|(t, _)| t.sequence).collect();
    ordered.extend(tables.iter().filter(|(t, _)| !t.sequence));
    let stored = store.tables()?;
    let mut deferred = HashMap::new();
    let mut described = Vec::new();
    for (t, described_as) in ordered {
        let step = format!("table:{}", t.full_name());
        let existing = stored
            .iter()
            .find(|p| p.db == t.db && p.name == t.name)
            .and_then(|p| p.definition.clone())
            .filter(|_| store.step_done(&step).unwrap_or(false));
        // created by an earlier run: the copy checks its definition chunk by chunk
        let (table, definition) = (t.clone(), existing.unwrap_or_else(|| described_as.clone()));
        if let Some(alter) = create_table(store, tgt, &table, &definition, defer).await? {
            deferred.insert(
                table.full_name(),
                (format!("index:{}", table.full_name()), alter),
            );
        }
        described.push(table);
    }
    Ok((described, deferred))
}

/// After the copy: make the target's set of databases and tables the source's. Tables and
/// databases that disappeared are dropped on the target and recorded as gone at the binlog
/// position read after they were found missing; new ones are created and copied. Repeated
/// until nothing changes.
async fn reconcile(
    plan: &copy::CopyPlan,
    src: &mut Conn,
    tgt: &mut Conn,
    filter: &Filter,
    threads: usize,
) -> Result<()> {
    for _round in 0..30 {
        // the listing between two binlog positions, in one round trip
        let mut sets = db::query_each(
            src,
            &[
                "SHOW MASTER STATUS".to_string(),
                schema::DATABASES_SQL.to_string(),
                schema::tables_sql(None),
                "SHOW MASTER STATUS".to_string(),
            ],
            "listing the source's tables",
        )
        .await?
        .into_iter();
        let mut next = || sets.next().unwrap_or_default();
        let (before, dbs, tables, after) = (next(), next(), next(), next());
        let before = copy::binlog_from(&before)?;
        let now_dbs: Vec<String> = schema::databases_from(dbs)
            .into_iter()
            .filter(|d| filter.includes_db(d))
            .collect();
        let now_tables: Vec<(String, String)> = schema::tables_from(tables, &now_dbs)
            .into_iter()
            .filter(|(d, t)| filter.includes_table(d, t))
            .collect();
        let (file, pos) = copy::binlog_from(&after)?;
        let mut changed = false;
        for p in plan.store.tables()? {
            if !now_tables.contains(&(p.db.clone(), p.name.clone())) {
                tracing::info!(
                    "{}.{}: gone from the source during the snapshot; dropping it on the target",
                    p.db,
                    p.name
                );
                db::run(
                    tgt,
                    &format!("DROP TABLE IF EXISTS {}", quote::table(&p.db, &p.name)),
                )
                .await
                .map_err(|e| e.context("target"))?;
                plan.store.mark_gone(&p.db, &p.name, &file, pos)?;
                changed = true;
            }
        }
        for d in plan.store.steps_with_prefix("database:")? {
            if !now_dbs.contains(&d) {
                tracing::info!("database {d}: gone from the source during the snapshot; dropping it on the target");
                db::run(
                    tgt,
                    &format!("DROP DATABASE IF EXISTS {}", quote::ident(&d)),
                )
                .await
                .map_err(|e| e.context("target"))?;
                plan.store.mark_gone(&d, "", &file, pos)?;
                plan.store.unmark_step(&format!("database:{d}"))?;
                changed = true;
            }
        }
        for d in &now_dbs {
            let step = format!("database:{d}");
            if !plan.store.step_done(&step)? {
                let create = ddl::create_database(src, d).await?;
                exec_step(&plan.store, tgt, &step, &[create]).await?;
                changed = true;
            }
        }
        let known: Vec<(String, String)> = plan
            .store
            .tables()?
            .into_iter()
            .map(|p| (p.db, p.name))
            .collect();
        let mut new_tables = Vec::new();
        for (d, n) in now_tables.iter().filter(|k| !known.contains(k)) {
            let (t, def) = match describe_stable(src, d, n).await {
                Ok(x) => x,
                Err(e) if e.what.contains("doesn't exist") || e.code() == Some(1146) => continue,
                Err(e) => return Err(e),
            };
            if let Some((name, why, fix)) = unsupported([(&t, def.as_str())]).into_iter().next() {
                return Err(Error::definite(
                    format!("source table {name} (created during the snapshot) {why}"),
                    fix,
                ));
            }
            tracing::info!(
                "{}: created on the source during the snapshot; copying it",
                t.full_name()
            );
            if let Some(alter) =
                create_table(&plan.store, tgt, &t, &def, plan.defer_indexes).await?
            {
                if let Ok(mut m) = plan.deferred.lock() {
                    m.insert(t.full_name(), (format!("index:{}", t.full_name()), alter));
                }
            }
            new_tables.push(Arc::new(t));
        }
        if !new_tables.is_empty() {
            changed = true;
            copy::copy_tables(plan, new_tables, threads, &copy::Readers::none()).await?;
        }
        if !changed {
            // the listing holds at `file:pos` only if no DDL ran while it was taken; else
            // list again
            if copy::schema_may_have_changed(src, &before, &(file.clone(), pos)).await? {
                continue;
            }
            plan.store
                .set("snapshot.listed_before", &format!("{file}:{pos}"))?;
            // a database's definition as the source has it now (an ALTER DATABASE logged
            // before the replay range would otherwise be lost; later ones are replayed after
            // this, in order)
            let (on_source, on_target) = (
                ddl::create_databases(src, &now_dbs).await?,
                ddl::create_databases(tgt, &now_dbs).await?,
            );
            for ((d, a), b) in now_dbs.iter().zip(on_source).zip(on_target) {
                if a != b {
                    let alter = a.replacen("CREATE DATABASE IF NOT EXISTS ", "ALTER DATABASE ", 1);
                    tracing::info!(
                        "database {d}: changed on the source during the snapshot: {alter}"
                    );
                    db::run(tgt, &alter)
                        .await
                        .map_err(|e| e.context("target"))?;
                }
            }
            return Ok(());
        }
    }
    Err(Error::definite(
        "the source's tables keep changing (created, dropped, renamed) while the snapshot reconciles them",
        "run snapshot again when DDL on the source is quieter",
    ))
}

/// Views, routines and events, created after the data (views `--exclude` names left out).
/// Views that depend on views not yet created are retried until no progress is made.
async fn copy_objects(
    store: &Store,
    src: &mut Conn,
    tgt: &mut Conn,
    dbs: &[String],
    filter: &Filter,
) -> Result<()> {
    let mut pending = Vec::new();
    for d in dbs {
        pending.extend(
            ddl::objects(src, d)
                .await?
                .into_iter()
                .filter(|o| o.kind != "view" || filter.includes_table(&o.db, &o.name)),
        );
    }
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut last_err = None;
        let before = pending.len();
        for o in pending {
            let mut sqls: Vec<Vec<u8>> = vec![format!("USE {}", quote::ident(&o.db)).into_bytes()];
            if let Some(m) = &o.sql_mode {
                sqls.push(format!("SET SESSION sql_mode = {}", quote::string(m)).into_bytes());
            }
            // an event's schedule is in the time zone of the session that created it
            if let Some(tz) = &o.time_zone {
                sqls.push(format!("SET SESSION time_zone = {}", quote::string(tz)).into_bytes());
            }
            let drop_kind = if o.kind == "view" {
                "VIEW"
            } else {
                &o.kind.to_uppercase()
            };
            sqls.push(
                format!(
                    "DROP {drop_kind} IF EXISTS {}",
                    quote::table(&o.db, &o.name)
                )
                .into_bytes(),
            );
            let ddl = if o.kind == "event" {
                // Events must not run on the target before cutover: created DISABLED (in the
                // statement itself, so it cannot fire in between); cutover restores the status
                // the source has.
                if let Some(status) = &o.status {
                    store.set_source_event(&o.db, &o.name, status)?;
                }
                crate::apply::ddl::disable_event(
                    o.ddl.as_bytes(),
                    crate::sql::lexer::Mode::default(),
                    crate::sql::statement::Verb::Create,
                )
                .0
            } else {
                o.ddl.clone().into_bytes()
            };
            // in the creating session's character set and connection collation, its text in
            // that character set: the object keeps them (SHOW CREATE shows them), and its
            // literals get that collation
            if !o.client.is_empty() && !o.collation.is_empty() {
                sqls.push(db::client_charset_sql(&o.client, &o.collation).into_bytes());
            }
            if o.client.is_empty() || db::is_utf8(&o.client) {
                sqls.push(ddl);
            } else {
                let text = String::from_utf8_lossy(&ddl);
                sqls.push(
                    db::text_in(tgt, &text, &o.client)
                        .await
                        .map_err(|e| e.context(format!("target, {}", o.step())))?,
                );
            }
            // the writer's own session again, after the object (or after its failure: a view
            // created later must not be read in this one's character set)
            let restore: [&[u8]; 3] = [
                b"SET NAMES utf8mb4",
                db::SESSION_SQL_MODE.as_bytes(),
                b"SET SESSION time_zone = '+00:00'",
            ];
            sqls.extend(restore.iter().map(|r| r.to_vec()));
            match exec_step(store, tgt, &o.step(), &sqls).await {
                Ok(()) => {}
                Err(e) if o.kind == "view" && !e.is_transient() => {
                    for r in restore {
                        db::run_raw(tgt, r, "restoring the session after a view")
                            .await
                            .map_err(|e| e.context("target"))?;
                    }
                    last_err = Some(e);
                    failed.push(o);
                }
                Err(e) => return Err(e),
            }
        }
        if failed.len() == before {
            let view = failed
                .first()
                .map(|o| format!("{}.{}", o.db, o.name))
                .unwrap_or_default();
            return Err(match last_err {
                // it reads a table or view the target does not have, and will not
                Some(e) if e.code() == Some(1146) => e.with_hint(format!(
                    "the view reads what is not migrated: add its database to --databases, or leave the view out with --exclude '{view}'"
                )),
                Some(e) => e,
                None => Error::definite("views could not be created", "check the view definitions"),
            });
        }
        pending = failed;
    }
    Ok(())
}

/// Whether secondary indexes are added after the rows: as `asked`, else when the source is
/// near (`round_trip`, a small query's) or its reads are `compressed`. Far and plain, the link
/// sets the pace and the target keeps the indexes as rows trickle in; compressed, the copy is
/// bound by CPU (the source's zlib, the target's inserts) and building each index once at the
/// end costs less (measured through the 20 ms / 200 Mbit link: 2.94-3.10 s deferred against
/// 3.11-3.46 s kept). Recorded with the first run: a resumed snapshot keeps it (tables created
/// with their indexes split off must get them back).
fn defer_indexes(
    store: &Store,
    asked: Option<bool>,
    round_trip: Duration,
    compressed: bool,
) -> Result<bool> {
    if let Some(v) = store.get("snapshot.defer_indexes")? {
        let recorded = v == "1";
        if asked.is_some_and(|a| a != recorded) {
            tracing::info!(
                "secondary indexes: keeping this snapshot's first choice ({}); a new --state starts over with another",
                if recorded { "deferred" } else { "with their tables" }
            );
        }
        return Ok(recorded);
    }
    // a snapshot an older binary started (its tables may exist) had no record: its default was
    // to defer
    let started = store.any_steps()?;
    let far = round_trip >= db::FAR_RTT;
    let defer = asked.unwrap_or(started || !far || compressed);
    if asked.is_none() && !started && far {
        if defer {
            tracing::info!(
                "source round trip {:.1} ms, reads compressed: secondary indexes are added after the rows (the copy is bound by CPU, not the link; --no-defer-indexes keeps them with their tables)",
                round_trip.as_secs_f64() * 1000.0
            );
        } else {
            tracing::info!(
                "source round trip {:.1} ms: secondary indexes are created with their tables (the link sets the pace; --defer-indexes adds them after the rows)",
                round_trip.as_secs_f64() * 1000.0
            );
        }
    }
    store.set("snapshot.defer_indexes", if defer { "1" } else { "0" })?;
    Ok(defer)
}

/// Where the snapshot's catch-up starts and ends, as GTID positions of the source.
struct GtidEnds {
    /// The lowest and highest chunk positions.
    low: String,
    high: String,
    /// The position past every horizon (positions of this server's binlog): once the target
    /// has it, follow compares no event with them (it may read another server by then).
    past_horizons: String,
    /// Which server the horizons are positions of: follow refuses another one until the
    /// target is past them (a promoted replica, the primary after --snapshot-source).
    server_id: String,
}

/// `GtidEnds`, read in one round trip (each BINLOG_GTID_POS scans the binlog file from its
/// start: a position is converted once however many ends it is).
async fn gtid_ends(store: &Store, src: &mut Conn) -> Result<GtidEnds> {
    let positions: Vec<FilePos> = store
        .chunk_position_range()?
        .iter()
        .map(|(f, p)| FilePos::new(f, *p))
        .collect();
    let horizon = store.horizons()?.last().cloned();
    let mut wanted: Vec<FilePos> = positions.iter().min().into_iter().cloned().collect();
    wanted.extend(positions.iter().max().cloned());
    wanted.extend(horizon.clone());
    wanted.sort();
    wanted.dedup();
    let mut queries = vec![
        "SELECT @@global.server_id".to_string(),
        "SELECT @@GLOBAL.gtid_binlog_pos".to_string(),
    ];
    queries.extend(wanted.iter().map(|p| {
        format!(
            "SELECT BINLOG_GTID_POS({}, {})",
            quote::string(&p.file),
            p.offset
        )
    }));
    let sets = db::query_each(src, &queries, "converting the snapshot's positions").await?;
    let first = |i: usize| -> Option<String> {
        sets.get(i)
            .and_then(|s| s.first())
            .and_then(|r| r.first().cloned().flatten())
    };
    let server_id = first(0).unwrap_or_default();
    let gtid_of = |p: &FilePos| -> Result<String> {
        let i = wanted.iter().position(|w| w == p).unwrap_or(usize::MAX);
        first(i.saturating_add(2)).ok_or_else(|| {
            Error::definite(
                format!(
                    "source: binlog file {} is gone, the snapshot cannot be made consistent",
                    p.file
                ),
                "raise binlog retention (expire_logs_days) and run snapshot again with a new --state",
            )
        })
    };
    let (low, high) = match (positions.iter().min(), positions.iter().max()) {
        (Some(lo), Some(hi)) => (gtid_of(lo)?, gtid_of(hi)?),
        // nothing copied: the current position is consistent
        _ => {
            let g = first(1).unwrap_or_default();
            (g.clone(), g)
        }
    };
    let past_horizons = match &horizon {
        Some(p) => gtid_of(p)?,
        None => high.clone(),
    };
    Ok(GtidEnds {
        low,
        high,
        past_horizons,
        server_id,
    })
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
    // both servers at once, and the copy's source readers while the schema is read (each
    // connection is several round trips over the VPN)
    let readers = copy::Readers::open(source, opts.threads);
    let (src, tgt) = tokio::join!(
        db::connect_retry(source, Session::Meta, 5),
        db::connect_retry(target, Session::TargetWriter, 5)
    );
    let (mut src, mut tgt) = (src?, tgt?);
    let asked = std::time::Instant::now();
    let filter = &filter.folded_if(db::preflight::name_folding(&mut src, &mut tgt).await?)?;
    // a target that restarted since an earlier run of this snapshot started its MEMORY tables
    // empty: those copied already are copied again
    if crate::replication::restarts::restarted(&mut tgt, target, &store).await? {
        for (d, t) in crate::replication::restarts::memory_tables(&mut tgt, filter).await? {
            tracing::info!(
                "{d}.{t}: a MEMORY table, emptied by the target's restart; copying it again"
            );
            store.reset_table(&d, &t)?;
        }
    }
    let src_dbs = schema::list_databases(&mut src).await?;
    let defer_indexes = defer_indexes(
        &store,
        opts.defer_indexes,
        asked.elapsed(),
        source.compress.is_some(),
    )?;
    let described = discover_in(&mut src, &src_dbs, filter).await?;
    let tables: Vec<Table> = described.iter().map(|(t, _)| t.clone()).collect();
    let refused = unsupported(described.iter().map(|(t, d)| (t, d.as_str())))
        .into_iter()
        .chain(excluded_merge_tables(&mut src, &src_dbs, filter).await?)
        .chain(views_reading_outside(&mut src, &src_dbs, filter).await?);
    if let Some((name, why, fix)) = refused.into_iter().next() {
        return Err(Error::definite(format!("source table {name} {why}"), fix));
    }
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
    // this migration's row on the target: a fresh snapshot starts it with no position (rows of
    // other migrations into the same target are left alone; one copying the same databases is
    // refused)
    let id = store.migration_id()?;
    if !store.any_steps()?
        || crate::apply::checkpoint::read(&mut tgt, &id)
            .await
            .ok()
            .flatten()
            .is_none()
    {
        crate::apply::checkpoint::register(
            &mut tgt,
            &id,
            &crate::apply::checkpoint::selection(&filter.databases),
            &opts.state_path,
            opts.reuse_target,
        )
        .await?;
    }
    store.set("source", &source.address())?;
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
    store.set("target", &target.address())?;
    store.set("snapshot.state", "running")?;
    let (tables, deferred) =
        copy_tables_schema(&store, &mut src, &mut tgt, &dbs, &described, defer_indexes).await?;

    let done = store.tables()?;
    // rows: the estimate of every table (or what was copied, if more); what an earlier run
    // already copied is shown as done
    let (mut rows_total, mut rows_done, mut bytes_done) = (0u64, 0u64, 0u64);
    let mut todo = Vec::new();
    for t in tables.iter() {
        let p = done.iter().find(|p| p.db == t.db && p.name == t.name);
        let (r, b) = p.map_or((0, 0), |p| (p.rows_done, p.bytes_done));
        rows_total += t.rows_estimate.max(r);
        rows_done += r;
        bytes_done += b;
        if p.is_some_and(|p| p.status == crate::state::TableState::Copied) {
            continue;
        }
        todo.push(Arc::new(t.clone()));
    }
    crate::obs::metrics::phase("snapshot_copy");
    let progress = Progress::new("snapshot", rows_total, rows_done, bytes_done);
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
        max_packet,
        load_data: local_infile && opts.load_data,
        defer_indexes,
        deferred: std::sync::Mutex::new(deferred),
    };
    copy::copy_tables(&plan, todo, opts.threads, &readers).await?;
    drop(readers);
    reconcile(&plan, &mut src, &mut tgt, filter, opts.threads).await?;
    progress.finish();

    let deferred: Vec<(String, String)> = plan
        .deferred
        .lock()
        .map(|d| d.values().cloned().collect())
        .unwrap_or_default();
    for (step, alter) in deferred {
        if plan
            .store
            .tables()?
            .iter()
            .any(|p| format!("index:{}.{}", p.db, p.name) == step)
        {
            exec_step(&store, &mut tgt, &step, &[alter]).await?;
        }
    }
    let dbs: Vec<String> = store.steps_with_prefix("database:")?;
    copy_objects(&store, &mut src, &mut tgt, &dbs, filter).await?;
    let ends = gtid_ends(&store, &mut src).await?;
    store.set("snapshot.gtid_low", &ends.low)?;
    store.set("snapshot.gtid_high", &ends.high)?;
    store.set("snapshot.gtid_past_horizons", &ends.past_horizons)?;
    store.set("snapshot.server_id", &ends.server_id)?;
    let (gtid_low, gtid_high) = (ends.low, ends.high);
    let all = store.tables()?;
    Ok(Outcome {
        gtid_low,
        gtid_high,
        tables: all.len(),
        rows: all.iter().map(|t| t.rows_done).sum(),
        bytes: all.iter().map(|t| t.bytes_done).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_deferred_unless_the_link_sets_the_pace() {
        let near = Duration::from_millis(1);
        let far = Duration::from_millis(20);
        for (asked, rtt, compressed, expected) in [
            (None, near, false, true),
            (None, far, false, false),
            (None, far, true, true),
            (Some(false), near, true, false),
            (Some(true), far, false, true),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(&dir.path().join("s.sqlite")).expect("store");
            let got = defer_indexes(&store, asked, rtt, compressed).expect("defer");
            assert_eq!(got, expected, "{asked:?} {rtt:?} compressed={compressed}");
            // a resumed snapshot keeps the first choice whatever it is asked now
            let again = defer_indexes(&store, Some(!expected), near, !compressed).expect("again");
            assert_eq!(again, expected);
        }
    }
}
