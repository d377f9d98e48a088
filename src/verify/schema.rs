//! Schema comparison: tables, columns (type, charset, collation, default, generated expression,
//! invisibility), indexes, foreign keys, check constraints, views, routines and their
//! parameters, events (their status aside: the target keeps them DISABLED until cutover), read
//! from information_schema on both sides in UTC sessions. Triggers are listed as pending (they
//! are created at cutover). A schema difference is reported as such, not as a data difference.

use crate::db::{self, quote};
use crate::error::Result;
use mysql_async::Conn;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SchemaDiff {
    /// e.g. "column shop.orders.total"
    pub object: String,
    /// What the source has (None: missing there).
    pub source: Option<String>,
    pub target: Option<String>,
}

/// (what, number of key columns, query with `{dbs}` for the schema list).
const QUERIES: &[(&str, usize, &str)] = &[
    ("table", 2, "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, ENGINE, TABLE_COLLATION, TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA IN ({dbs})"),
    ("column", 3, "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, REPLACE(COLUMN_TYPE, ' /* mariadb-5.3 */', ''), IS_NULLABLE, COLUMN_DEFAULT, CHARACTER_SET_NAME, COLLATION_NAME, EXTRA, GENERATION_EXPRESSION, COLUMN_COMMENT FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN ({dbs})"),
    ("index", 3, "SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, NON_UNIQUE, INDEX_TYPE, GROUP_CONCAT(CONCAT(COLUMN_NAME, IFNULL(CONCAT('(', SUB_PART, ')'), ''), IF(COLLATION = 'D', ' DESC', '')) ORDER BY SEQ_IN_INDEX), MAX(IGNORED), MAX(INDEX_COMMENT) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA IN ({dbs}) GROUP BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, NON_UNIQUE, INDEX_TYPE"),
    ("foreign key", 3, "SELECT r.CONSTRAINT_SCHEMA, r.TABLE_NAME, r.CONSTRAINT_NAME, r.REFERENCED_TABLE_NAME, r.UPDATE_RULE, r.DELETE_RULE, (SELECT GROUP_CONCAT(CONCAT(k.COLUMN_NAME, '->', k.REFERENCED_TABLE_SCHEMA, '.', k.REFERENCED_COLUMN_NAME) ORDER BY k.ORDINAL_POSITION) FROM information_schema.KEY_COLUMN_USAGE k WHERE k.CONSTRAINT_SCHEMA = r.CONSTRAINT_SCHEMA AND k.TABLE_NAME = r.TABLE_NAME AND k.CONSTRAINT_NAME = r.CONSTRAINT_NAME) FROM information_schema.REFERENTIAL_CONSTRAINTS r WHERE r.CONSTRAINT_SCHEMA IN ({dbs})"),
    ("check constraint", 3, "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA IN ({dbs})"),
    ("view", 2, "SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION, CHECK_OPTION, SECURITY_TYPE, DEFINER, ALGORITHM, CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ({dbs})"),
    ("routine", 3, "SELECT ROUTINE_SCHEMA, ROUTINE_TYPE, ROUTINE_NAME, DTD_IDENTIFIER, ROUTINE_DEFINITION, IS_DETERMINISTIC, SQL_DATA_ACCESS, SECURITY_TYPE, SQL_MODE, DEFINER, ROUTINE_COMMENT, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ({dbs})"),
    ("routine parameter", 4, "SELECT SPECIFIC_SCHEMA, ROUTINE_TYPE, SPECIFIC_NAME, ORDINAL_POSITION, PARAMETER_MODE, PARAMETER_NAME, DTD_IDENTIFIER FROM information_schema.PARAMETERS WHERE SPECIFIC_SCHEMA IN ({dbs})"),
    ("event", 2, "SELECT EVENT_SCHEMA, EVENT_NAME, EVENT_DEFINITION, EVENT_TYPE, EXECUTE_AT, INTERVAL_VALUE, INTERVAL_FIELD, STARTS, ENDS, ON_COMPLETION, SQL_MODE, TIME_ZONE, DEFINER, EVENT_COMMENT, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({dbs})"),
];

/// Objects of a table, and views (their first two key columns are the database and the table
/// or view name: `--exclude` leaves them out).
const OF_A_TABLE: &[&str] = &[
    "table",
    "column",
    "index",
    "foreign key",
    "check constraint",
    "view",
];

/// Each object's description, and for an object of a table, that (database, table).
type Objects = BTreeMap<String, (String, Option<(String, String)>)>;

async fn objects(conn: &mut Conn, dbs: &str) -> Result<Objects> {
    let mut out = BTreeMap::new();
    for (what, keys, sql) in QUERIES {
        for r in db::query_strings(conn, &sql.replace("{dbs}", dbs)).await? {
            let cell = |v: &Option<String>| v.clone().unwrap_or_else(|| "NULL".into());
            let key: Vec<String> = r.iter().take(*keys).map(cell).collect();
            let rest: Vec<String> = r.iter().skip(*keys).map(cell).collect();
            let table = OF_A_TABLE
                .contains(what)
                .then(|| (key[0].clone(), key[1].clone()));
            out.insert(
                format!("{what} {}", key.join(".")),
                (rest.join(" | "), table),
            );
        }
    }
    Ok(out)
}

/// Differences between the two schemas of `dbs` (objects of a table `migrated` says is not
/// part of the migration, an `--exclude`d one, left out), and the source's triggers (pending
/// until cutover).
pub async fn compare(
    src: &mut Conn,
    tgt: &mut Conn,
    dbs: &[String],
    migrated: impl Fn(&str, &str) -> bool,
) -> Result<(Vec<SchemaDiff>, Vec<String>)> {
    if dbs.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let list = dbs
        .iter()
        .map(|d| quote::string(d))
        .collect::<Vec<_>>()
        .join(", ");
    let (a, b) = tokio::join!(objects(src, &list), objects(tgt, &list));
    let (a, b) = (a?, b?);
    let outside = |table: &Option<(String, String)>| {
        table.as_ref().is_some_and(|(db, name)| !migrated(db, name))
    };
    let mut diffs = Vec::new();
    for (k, (v, table)) in &a {
        if outside(table) {
            continue;
        }
        match b.get(k) {
            Some((w, _)) if w == v => {}
            other => diffs.push(SchemaDiff {
                object: k.clone(),
                source: Some(v.clone()),
                target: other.map(|(w, _)| w.clone()),
            }),
        }
    }
    for (k, (w, table)) in &b {
        if !a.contains_key(k) && !outside(table) {
            diffs.push(SchemaDiff {
                object: k.clone(),
                source: None,
                target: Some(w.clone()),
            });
        }
    }
    let triggers = db::query_strings(
        src,
        &format!("SELECT CONCAT(TRIGGER_SCHEMA, '.', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({list}) ORDER BY 1"),
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    Ok((diffs, triggers))
}
