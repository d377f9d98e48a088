//! `migrate check`: preflight of both servers. Exit 1 when a blocker is found.

use super::Context;
use crate::cli::CheckArgs;
use crate::db::preflight::{self, Finding, Severity};
use crate::db::{self, Session};
use crate::error::Result;
use crate::obs::progress::human_bytes;
use crate::snapshot;

pub async fn run(ctx: &Context, args: &CheckArgs) -> Result<i32> {
    let mut findings: Vec<Finding> = Vec::new();
    let (source, target) = (ctx.source()?, ctx.target()?);
    let mut src = match db::connect(source, Session::Meta).await {
        Ok(c) => Some(c),
        Err(e) => {
            findings.push(Finding::new(
                Severity::Blocker,
                "source",
                "connection",
                e.what.clone(),
                e.hint.clone(),
            ));
            None
        }
    };
    let mut tgt = match db::connect(target, Session::Meta).await {
        Ok(c) => Some(c),
        Err(e) => {
            findings.push(Finding::new(
                Severity::Blocker,
                "target",
                "connection",
                e.what.clone(),
                e.hint.clone(),
            ));
            None
        }
    };
    if let (Some(url), Some(src)) = (&ctx.global.snapshot_source, src.as_mut()) {
        let replica = crate::db::replica::endpoint(url, source)?;
        match db::connect(&replica, Session::Meta).await {
            Ok(mut rep) => findings.extend(
                crate::db::replica::findings(&mut rep, src, ctx.global.max_replica_lag).await?,
            ),
            Err(e) => findings.push(Finding::new(
                Severity::Blocker,
                "snapshot-source",
                "connection",
                e.what.clone(),
                e.hint.clone(),
            )),
        }
    }
    let mut dbs = Vec::new();
    let mut total_bytes = 0;
    let mut source_version = String::new();
    let mut definers = Vec::new();
    let mut filter = ctx.filter.clone();
    let mut source_folds = None;
    if let Some(src) = src.as_mut() {
        let version = preflight::version(src).await?.unwrap_or_default();
        source_version = version.clone();
        findings.push(Finding::new(
            Severity::Info,
            "source",
            "version",
            version,
            None,
        ));
        findings.push(preflight::tls(src, source).await?);
        findings.extend(preflight::name_case(src, "source").await?);
        let folds = preflight::lower_case_table_names(src).await?;
        source_folds = Some(folds);
        filter = filter.folded_if(folds == 1)?;
        findings.extend(preflight::source_binlog(src).await?);
        match snapshot::discover(src, &filter).await {
            Ok(described) => {
                let refused = snapshot::unsupported(described.iter().map(|(t, d)| (t, d.as_str())));
                let tables: Vec<crate::schema::Table> =
                    described.into_iter().map(|(t, _)| t).collect();
                let src_dbs = crate::schema::list_databases(src).await?;
                dbs = snapshot::selected_databases(&tables, &src_dbs, &filter);
                let excluded_merge =
                    snapshot::excluded_merge_tables(src, &src_dbs, &filter).await?;
                let views = snapshot::views_reading_outside(src, &src_dbs, &filter).await?;
                for (name, why, fix) in refused.into_iter().chain(excluded_merge).chain(views) {
                    findings.push(Finding::new(
                        Severity::Blocker,
                        "source",
                        &name,
                        why,
                        Some(fix),
                    ));
                }
                for t in &tables {
                    let (why, fix) = match t.storage() {
                        crate::schema::Storage::Union => (
                            "is a MERGE table: its definition is copied, its rows are copied with the tables it unions, and a change made through it stops follow (the binlog logs it against the MERGE table alone)",
                            "make the application write to the underlying tables",
                        ),
                        crate::schema::Storage::Remote => (
                            "is a FEDERATED table: its definition is copied, connecting to the same server; its rows stay on that server (neither copied nor written by follow) and the target must reach it",
                            "check that the target reaches the server of its CONNECTION",
                        ),
                        _ => continue,
                    };
                    findings.push(Finding::new(
                        Severity::Warning,
                        "source",
                        &t.full_name(),
                        why,
                        Some(fix.to_string()),
                    ));
                }
                for t in tables
                    .iter()
                    .filter(|t| !t.has_key() && !t.sequence && t.transactional())
                {
                    findings.push(Finding::new(
                        Severity::Warning,
                        "source",
                        &t.full_name(),
                        "has no primary or NOT NULL unique key: copied in one consistent snapshot, and each update or delete of it finds its row on the target by comparing every column (slow on large tables)",
                        Some(format!("add a primary key to {} for speed", t.full_name())),
                    ));
                }
                let rows: u64 = tables.iter().map(|t| t.rows_estimate).sum();
                total_bytes = tables.iter().map(|t| t.bytes_estimate).sum();
                findings.push(Finding::new(
                    Severity::Info,
                    "source",
                    "size",
                    format!(
                        "{} databases, {} tables, about {rows} rows, {} to copy",
                        dbs.len(),
                        tables.len(),
                        human_bytes(total_bytes)
                    ),
                    None,
                ));
                for t in tables
                    .iter()
                    .filter(|t| t.has_key() && (t.key_moved_by_cascade || t.cascade_child))
                {
                    findings.push(Finding::new(
                        Severity::Warning,
                        "source",
                        &t.full_name(),
                        "a CASCADE or SET NULL foreign key changes this table's rows without binlog events: snapshot reads it in one consistent snapshot (one transaction for the whole table; a DDL on it waits until its copy ends)",
                        None,
                    ));
                }
                findings.extend(parents_left_out(src, &tables, &filter).await?);
                let non_innodb: Vec<String> = tables
                    .iter()
                    .filter(|t| !t.transactional())
                    .map(|t| format!("{} ({})", t.full_name(), t.engine))
                    .collect();
                if !non_innodb.is_empty() {
                    findings.push(Finding::new(
                        Severity::Warning,
                        "source",
                        "engines",
                        format!(
                            "non-transactional tables converge only through the binlog replay: {}",
                            non_innodb.join(", ")
                        ),
                        None,
                    ));
                }
            }
            Err(e) => findings.push(Finding::new(
                Severity::Blocker,
                "source",
                "schema",
                e.what.clone(),
                e.hint.clone(),
            )),
        }
        // grants are checked on every database asked for, also one the account cannot see
        let mut grant_dbs = dbs.clone();
        for d in &filter.databases {
            if !grant_dbs.contains(d) {
                grant_dbs.push(d.clone());
            }
        }
        findings.push(preflight::source_grants(src, source, &grant_dbs).await?);
        definers = preflight::definers(src, &dbs).await?;
        let copy_seconds = total_bytes / (args.assume_mib_per_sec.max(1) << 20);
        findings.extend(preflight::retention(src, copy_seconds).await?);
    }
    if let Some(tgt) = tgt.as_mut() {
        let version = preflight::version(tgt).await?.unwrap_or_default();
        if major_minor(&version) < major_minor(&source_version) {
            findings.push(Finding::new(
                Severity::Warning,
                "target",
                "version",
                format!("target {version} is older than source {source_version}: features the source uses may be missing"),
                Some("run a target MariaDB at least as new as the source".into()),
            ));
        }
        findings.push(Finding::new(
            Severity::Info,
            "target",
            "version",
            version,
            None,
        ));
        findings.push(preflight::tls(tgt, target).await?);
        findings.extend(preflight::name_case(tgt, "target").await?);
        if let Some(folds) = source_folds {
            let target_folds = preflight::lower_case_table_names(tgt).await?;
            if let Err(e) = preflight::names_fold_alike(folds, target_folds) {
                if folds <= 1 && target_folds <= 1 {
                    findings.push(Finding::new(
                        Severity::Blocker,
                        "target",
                        "lower_case_table_names",
                        e.what,
                        e.hint,
                    ));
                }
            }
        }
        findings.push(preflight::target_grants(tgt, target, &dbs, &definers).await?);
        let own = own_copy(ctx, tgt).await;
        for d in snapshot::non_empty_on_target(tgt, &dbs).await? {
            if own {
                findings.push(Finding::new(
                    Severity::Info,
                    "target",
                    &d,
                    "holds this migration's copy so far (the state file's snapshot): rerun snapshot to resume it",
                    None,
                ));
                continue;
            }
            findings.push(Finding::new(
                Severity::Blocker,
                "target",
                &d,
                "database already exists on the target and holds tables",
                Some("drop it on the target, or run snapshot with --reuse-target to overwrite the copied tables".into()),
            ));
        }
        if let Some(src) = src.as_mut() {
            findings.extend(preflight::collations(src, tgt, &dbs).await?);
            findings.push(preflight::packet_size(src, tgt).await?);
            findings.extend(preflight::application_settings(src, tgt).await?);
        }
    }
    findings.sort_by_key(|f| f.severity);
    let blockers = findings
        .iter()
        .filter(|f| f.severity == Severity::Blocker)
        .count();
    if args.json {
        let out = serde_json::json!({ "blockers": blockers, "findings": findings });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for f in &findings {
            let sev = match f.severity {
                Severity::Blocker => "BLOCKER",
                Severity::Warning => "warning",
                Severity::Info => "info",
            };
            println!("{sev:>8}  {:<7} {:<22} {}", f.server, f.subject, f.message);
            if let Some(fix) = &f.fix {
                println!("{:>8}  fix: {fix}", "");
            }
        }
        println!(
            "\n{blockers} blocker(s), {} warning(s)",
            findings
                .iter()
                .filter(|f| f.severity == Severity::Warning)
                .count()
        );
    }
    Ok(if blockers > 0 { 1 } else { 0 })
}

/// Foreign keys of migrated tables whose parent table is not migrated (`--exclude`, or a
/// database left out): the child is created and its rows copied (foreign_key_checks=0), but
/// after cutover every insert into it fails with error 1452 until the parent exists.
async fn parents_left_out(
    src: &mut mysql_async::Conn,
    tables: &[crate::schema::Table],
    filter: &crate::config::Filter,
) -> Result<Vec<Finding>> {
    let mut dbs: Vec<String> = tables.iter().map(|t| db::quote::string(&t.db)).collect();
    dbs.sort();
    dbs.dedup();
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db::query_strings(
        src,
        &format!(
            "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, UNIQUE_CONSTRAINT_SCHEMA, REFERENCED_TABLE_NAME \
             FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA IN ({}) \
             ORDER BY CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME",
            dbs.join(", ")
        ),
    )
    .await?;
    let selected = |d: &str, t: &str| tables.iter().any(|x| x.db == d && x.name == t);
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let g = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let (child_db, child, fk, parent_db, parent) = (g(0), g(1), g(2), g(3), g(4));
            if !selected(&child_db, &child)
                || (filter.includes_db(&parent_db) && filter.includes_table(&parent_db, &parent))
            {
                return None;
            }
            Some(Finding::new(
                Severity::Warning,
                "source",
                &format!("{child_db}.{child}"),
                format!(
                    "its foreign key `{fk}` references {parent_db}.{parent}, which is not migrated: the table and its rows are copied, but after cutover every insert into it fails (error 1452) until {parent_db}.{parent} exists on the target"
                ),
                Some(format!("migrate {parent_db}.{parent} too, or create it on the target before cutover")),
            ))
        })
        .collect())
}

/// Whether the state file records a snapshot of a migration whose row is on this target: its
/// databases there are its own partial (or finished) copy, not someone else's data.
async fn own_copy(ctx: &Context, tgt: &mut mysql_async::Conn) -> bool {
    if !ctx.state_path.exists() {
        return false;
    }
    let Ok(store) = ctx.store() else {
        return false;
    };
    if !store.any_steps().unwrap_or(false) {
        return false;
    }
    let Ok(id) = store.migration_id() else {
        return false;
    };
    matches!(crate::apply::checkpoint::read(tgt, &id).await, Ok(Some(_)))
}

/// "10.11.19-MariaDB-log" -> (10, 11)
fn major_minor(version: &str) -> (u32, u32) {
    let mut it = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_compare() {
        assert_eq!(
            super::major_minor("10.11.19-MariaDB-0+deb12u1-log"),
            (10, 11)
        );
        assert!(super::major_minor("10.6.1-MariaDB") < super::major_minor("10.11.2"));
        assert_eq!(super::major_minor(""), (0, 0));
    }
}
