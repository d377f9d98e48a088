//! Preflight checks for `migrate check`. Each check is a small function returning findings
//! with a severity and the fix; none of them writes anything.

use crate::config::Endpoint;
use crate::db::grants::{self, Scope};
use crate::db::{query_strings, variable};
use crate::error::Result;
use mysql_async::Conn;
use serde::Serialize;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Blocker,
    Warning,
    Info,
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub server: String,
    pub subject: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn new(
        severity: Severity,
        server: &str,
        subject: &str,
        message: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Finding {
            severity,
            server: server.into(),
            subject: subject.into(),
            message: message.into(),
            fix,
        }
    }
}

/// `SELECT VERSION()`
pub async fn version(conn: &mut Conn) -> Result<Option<String>> {
    crate::db::query_one(conn, "SELECT VERSION()").await
}

/// Settings the source's binlog must have for `follow`.
pub async fn source_binlog(conn: &mut Conn) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let expect: &[(&str, &str, &str)] = &[
        ("log_bin", "1", "set log_bin=ON (log-bin=mysql-bin) in the source's my.cnf and restart it"),
        ("binlog_format", "ROW", "SET GLOBAL binlog_format='ROW' and in my.cnf (running sessions keep the old format until they reconnect)"),
        ("binlog_row_image", "FULL", "SET GLOBAL binlog_row_image='FULL' and in my.cnf"),
        ("log_bin_compress", "0", "SET GLOBAL log_bin_compress=OFF: compressed binlog events are not read yet"),
    ];
    for (name, want, fix) in expect {
        let got = variable(conn, name).await?.unwrap_or_default();
        let ok = got.eq_ignore_ascii_case(want)
            || (*want == "1" && got.eq_ignore_ascii_case("ON"))
            || (*want == "0" && got.eq_ignore_ascii_case("OFF"));
        if ok {
            out.push(Finding::new(
                Severity::Info,
                "source",
                name,
                format!("{name} = {got}"),
                None,
            ));
        } else {
            out.push(Finding::new(
                Severity::Blocker,
                "source",
                name,
                format!("{name} is {got}, needs {want}"),
                Some(fix.to_string()),
            ));
        }
    }
    // binlog_alter_two_phase (10.8+) splits an ALTER into START/COMMIT ALTER events
    if variable(conn, "binlog_alter_two_phase")
        .await
        .ok()
        .flatten()
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("ON"))
    {
        out.push(Finding::new(
            Severity::Blocker,
            "source",
            "binlog_alter_two_phase",
            "binlog_alter_two_phase is ON: ALTERs are logged in two phases, which migrate does not replay",
            Some("SET GLOBAL binlog_alter_two_phase=OFF on the source".into()),
        ));
    }
    out.push(Finding::new(
        Severity::Warning,
        "source",
        "binlog_format",
        "binlog_format is also a session variable: a session with SUPER or BINLOG ADMIN can log its changes as statements (STATEMENT/MIXED), and XA transactions are not replicated; follow stops with an error naming the statement if either touches a migrated table",
        Some("keep every application session at ROW (do not grant SUPER / BINLOG ADMIN to application accounts) and do not use XA while migrating".into()),
    ));
    let sid = variable(conn, "server_id").await?.unwrap_or_default();
    if sid == "0" {
        out.push(Finding::new(
            Severity::Blocker,
            "source",
            "server_id",
            "server_id is 0",
            Some("set server_id to a unique non-zero value".into()),
        ));
    }
    Ok(out)
}

/// Binlog retention against the estimated copy time.
pub async fn retention(conn: &mut Conn, copy_seconds: u64) -> Result<Vec<Finding>> {
    let secs = match variable(conn, "binlog_expire_logs_seconds").await {
        Ok(Some(s)) => s.parse::<u64>().unwrap_or(0),
        _ => 0,
    };
    let days = variable(conn, "expire_logs_days")
        .await?
        .and_then(|d| d.parse::<f64>().ok())
        .unwrap_or(0.0);
    let keep = if secs > 0 {
        secs
    } else {
        (days * 86_400.0) as u64
    };
    let need = copy_seconds.saturating_mul(3).max(86_400);
    Ok(vec![if keep == 0 {
        Finding::new(
            Severity::Info,
            "source",
            "binlog retention",
            "binlogs are never expired automatically",
            None,
        )
    } else if keep < need {
        Finding::new(
            Severity::Warning,
            "source",
            "binlog retention",
            format!("binlogs are kept {keep} s; the copy is estimated at {copy_seconds} s (want at least {need} s)"),
            Some(format!("SET GLOBAL binlog_expire_logs_seconds = {need};")),
        )
    } else {
        Finding::new(
            Severity::Info,
            "source",
            "binlog retention",
            format!("binlogs kept {keep} s, copy estimated {copy_seconds} s"),
            None,
        )
    }])
}

/// What the source account needs: reading the binlog (global), and reading every migrated
/// database's rows, views and events (per database). Routines of other definers are visible
/// only with SELECT on `mysql.proc` (without it information_schema hides them and the copy
/// would silently lack them; snapshot refuses to run).
pub const SOURCE_GLOBAL: &[&str] = &["REPLICATION SLAVE", "BINLOG MONITOR"];
pub const SOURCE_PER_DATABASE: &[&str] = &["SELECT", "SHOW VIEW", "EVENT"];
/// What the target account needs on each migrated database and on `_migrate`.
pub const TARGET_PER_DATABASE: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "DROP",
    "ALTER",
    "INDEX",
    "REFERENCES",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "EVENT",
    "TRIGGER",
];

/// The account's grants, and its name quoted for a GRANT statement.
pub async fn account_grants(conn: &mut Conn) -> Result<(String, String, Vec<grants::Grant>)> {
    let lines: Vec<String> = query_strings(conn, "SHOW GRANTS")
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    let who = crate::db::query_one(conn, "SELECT CURRENT_USER()")
        .await?
        .unwrap_or_default();
    let account = match who.rsplit_once('@') {
        Some((u, h)) => format!(
            "{}@{}",
            crate::db::quote::string(u),
            crate::db::quote::string(h)
        ),
        None => crate::db::quote::string(&who),
    };
    Ok((who, account, grants::parse(&lines)))
}

/// One GRANT statement per scope for what is missing.
fn grant_statements(missing: &[(String, Vec<String>)], account: &str) -> String {
    missing
        .iter()
        .map(|(on, privs)| format!("GRANT {} ON {on} TO {account};", privs.join(", ")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn grants_finding(
    ep: &Endpoint,
    who: &str,
    account: &str,
    missing: Vec<(String, Vec<String>)>,
) -> Finding {
    if missing.is_empty() {
        return Finding::new(
            Severity::Info,
            ep.role,
            "grants",
            format!("{who} has the privileges migrate needs"),
            None,
        );
    }
    let what: Vec<String> = missing
        .iter()
        .map(|(on, privs)| format!("{} on {on}", privs.join(", ")))
        .collect();
    Finding::new(
        Severity::Blocker,
        ep.role,
        "grants",
        format!("{who} lacks {}", what.join("; ")),
        Some(grant_statements(&missing, account)),
    )
}

fn db_scope(db: &str) -> String {
    format!("{}.*", crate::db::quote::ident(db))
}

/// The source account's privileges for migrating `dbs`.
pub async fn source_grants(conn: &mut Conn, ep: &Endpoint, dbs: &[String]) -> Result<Finding> {
    let (who, account, gs) = account_grants(conn).await?;
    let mut missing = Vec::new();
    let global = grants::missing(&gs, SOURCE_GLOBAL, &Scope::Global);
    if !global.is_empty() {
        missing.push(("*.*".to_string(), global));
    }
    for db in dbs {
        let m = grants::missing(&gs, SOURCE_PER_DATABASE, &Scope::Database(db.clone()));
        if !m.is_empty() {
            missing.push((db_scope(db), m));
        }
    }
    if !grants::covers(&gs, "SELECT", &Scope::Table("mysql".into(), "proc".into())) {
        missing.push(("`mysql`.`proc`".to_string(), vec!["SELECT".to_string()]));
    }
    Ok(grants_finding(ep, &who, &account, missing))
}

/// The target account's privileges for receiving `dbs` (and `_migrate`), and SET USER when
/// objects of the source have a DEFINER other than the target account (`definers`).
pub async fn target_grants(
    conn: &mut Conn,
    ep: &Endpoint,
    dbs: &[String],
    definers: &[(String, String)],
) -> Result<Finding> {
    let (who, account, gs) = account_grants(conn).await?;
    let mut missing = Vec::new();
    let mut all: Vec<String> = dbs.to_vec();
    all.push(crate::apply::checkpoint::DB.to_string());
    for db in &all {
        let m = grants::missing(&gs, TARGET_PER_DATABASE, &Scope::Database(db.clone()));
        if !m.is_empty() {
            missing.push((db_scope(db), m));
        }
    }
    let foreign: Vec<&(String, String)> = definers
        .iter()
        .filter(|(definer, _)| !same_account(definer, &who))
        .collect();
    let mut f = if !foreign.is_empty() && !grants::covers(&gs, "SET USER", &Scope::Global) {
        missing.push(("*.*".to_string(), vec!["SET USER".to_string()]));
        let mut f = grants_finding(ep, &who, &account, missing);
        let shown: Vec<String> = foreign
            .iter()
            .take(5)
            .map(|(d, o)| format!("{o} (DEFINER {d})"))
            .collect();
        f.message.push_str(&format!(
            " (SET USER: {} object(s) have another DEFINER, e.g. {})",
            foreign.len(),
            shown.join(", ")
        ));
        f
    } else {
        grants_finding(ep, &who, &account, missing)
    };
    if f.severity == Severity::Info && !foreign.is_empty() {
        f.message
            .push_str(" (including SET USER, for objects with another DEFINER)");
    }
    Ok(f)
}

/// `root@localhost` (information_schema's DEFINER) against CURRENT_USER().
fn same_account(definer: &str, current: &str) -> bool {
    definer.replace('`', "") == current.replace('`', "")
}

/// The DEFINER of every view, routine, event and trigger in `dbs` on the source, with the
/// object's name.
pub async fn definers(conn: &mut Conn, dbs: &[String]) -> Result<Vec<(String, String)>> {
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let list = dbs
        .iter()
        .map(|d| crate::db::quote::string(d))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT DEFINER, CONCAT('view ', TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA IN ({list}) \
         UNION ALL SELECT DEFINER, CONCAT(LOWER(ROUTINE_TYPE), ' ', ROUTINE_SCHEMA, '.', ROUTINE_NAME) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA IN ({list}) \
         UNION ALL SELECT DEFINER, CONCAT('event ', EVENT_SCHEMA, '.', EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({list}) \
         UNION ALL SELECT DEFINER, CONCAT('trigger ', TRIGGER_SCHEMA, '.', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({list})"
    );
    Ok(query_strings(conn, &sql)
        .await?
        .into_iter()
        .map(|r| {
            (
                r.first().cloned().flatten().unwrap_or_default(),
                r.get(1).cloned().flatten().unwrap_or_default(),
            )
        })
        .collect())
}

/// Whether the connection uses TLS.
pub async fn tls(conn: &mut Conn, ep: &Endpoint) -> Result<Finding> {
    let rows = query_strings(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").await?;
    let cipher = rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().nth(1).flatten())
        .unwrap_or_default();
    Ok(if cipher.is_empty() {
        Finding::new(
            Severity::Warning,
            ep.role,
            "tls",
            "connection is not encrypted",
            Some("enable TLS on the server and use ?ssl-mode=verify-ca&ssl-ca=PATH".into()),
        )
    } else {
        Finding::new(
            Severity::Info,
            ep.role,
            "tls",
            format!("TLS with {cipher}"),
            None,
        )
    })
}

/// Collations used by the selected databases' columns that the target does not know.
pub async fn collations(src: &mut Conn, tgt: &mut Conn, dbs: &[String]) -> Result<Vec<Finding>> {
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = dbs.iter().map(|d| crate::db::quote::string(d)).collect();
    let used = query_strings(
        src,
        &format!(
            "SELECT DISTINCT COLLATION_NAME FROM information_schema.COLUMNS WHERE COLLATION_NAME IS NOT NULL AND TABLE_SCHEMA IN ({})",
            list.join(",")
        ),
    )
    .await?;
    let known: Vec<String> = query_strings(
        tgt,
        "SELECT COLLATION_NAME FROM information_schema.COLLATIONS",
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    let mut out = Vec::new();
    for c in used
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        if !known.contains(&c) {
            out.push(Finding::new(
                Severity::Blocker,
                "target",
                "collation",
                format!("collation {c} is used on the source but unknown to the target"),
                Some("use a target MariaDB version that has it, or convert the columns on the source".into()),
            ));
        }
    }
    Ok(out)
}

/// max_allowed_packet on the target must hold the largest row sent as a hex literal.
pub async fn packet_size(src: &mut Conn, tgt: &mut Conn) -> Result<Finding> {
    let s: u64 = variable(src, "max_allowed_packet")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let t: u64 = variable(tgt, "max_allowed_packet")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let want = (2 * s + (1 << 20)).min(1 << 30);
    Ok(if t < want {
        Finding::new(
            Severity::Warning,
            "target",
            "max_allowed_packet",
            format!("target max_allowed_packet {t} is below twice the source's {s}: rows near the source limit cannot be written"),
            Some(format!("SET GLOBAL max_allowed_packet = {want};")),
        )
    } else {
        Finding::new(
            Severity::Info,
            "target",
            "max_allowed_packet",
            format!("{t} bytes"),
            None,
        )
    })
}

/// Global settings that decide what the application's statements do: after cutover it runs
/// on the target's. Each that differs is a warning naming both values and the `SET GLOBAL`
/// that makes the target behave as the source (migrate's own sessions set what they need
/// themselves; this is about the application's). Read from information_schema, so a name a
/// server version does not have is left out rather than failing the check.
const APPLICATION_SETTINGS: &[&str] = &[
    "SQL_MODE",
    "TIME_ZONE",
    "SYSTEM_TIME_ZONE",
    "CHARACTER_SET_SERVER",
    "COLLATION_SERVER",
    "OLD_MODE",
    "EXPLICIT_DEFAULTS_FOR_TIMESTAMP",
    "DEFAULT_STORAGE_ENGINE",
    "DIV_PRECISION_INCREMENT",
    "DEFAULT_WEEK_FORMAT",
    "GROUP_CONCAT_MAX_LEN",
    "TX_ISOLATION",
    "AUTOCOMMIT",
    "AUTO_INCREMENT_INCREMENT",
    "AUTO_INCREMENT_OFFSET",
    "INNODB_STRICT_MODE",
    "LC_TIME_NAMES",
    "MAX_STATEMENT_TIME",
    "SQL_SELECT_LIMIT",
    "EVENT_SCHEDULER",
    "LOG_BIN_TRUST_FUNCTION_CREATORS",
];

/// The `APPLICATION_SETTINGS` that differ between the servers.
pub async fn application_settings(src: &mut Conn, tgt: &mut Conn) -> Result<Vec<Finding>> {
    let sql = format!(
        "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME IN ({})",
        APPLICATION_SETTINGS
            .iter()
            .map(|v| format!("'{v}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let values = |rows: Vec<Vec<Option<String>>>| -> std::collections::HashMap<String, String> {
        rows.into_iter()
            .filter_map(|r| {
                let mut r = r.into_iter();
                Some((
                    r.next()??.to_ascii_uppercase(),
                    r.next()?.unwrap_or_default(),
                ))
            })
            .collect()
    };
    let (a, b) = (
        values(query_strings(src, &sql).await?),
        values(query_strings(tgt, &sql).await?),
    );
    let system_zone_used = [&a, &b].iter().any(|v| {
        v.get("TIME_ZONE")
            .is_some_and(|z| z.eq_ignore_ascii_case("SYSTEM"))
    });
    let mut out = Vec::new();
    for name in APPLICATION_SETTINGS {
        let (Some(s), Some(t)) = (a.get(*name), b.get(*name)) else {
            continue;
        };
        if s.eq_ignore_ascii_case(t) || (*name == "SYSTEM_TIME_ZONE" && !system_zone_used) {
            continue;
        }
        let var = name.to_ascii_lowercase();
        let fix = if *name == "SYSTEM_TIME_ZONE" {
            format!("start the target's server in the source's zone (TZ={s} or --default-time-zone), or set time_zone explicitly on both")
        } else {
            let value = if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()) {
                s.clone()
            } else {
                crate::db::quote::string(s)
            };
            format!("SET GLOBAL {var} = {value}; on the target (and in its server configuration), unless the difference is intended")
        };
        out.push(Finding::new(
            Severity::Warning,
            "target",
            &var,
            format!("is '{t}' on the target and '{s}' on the source: after cutover the application's statements run with '{t}'"),
            Some(fix),
        ));
    }
    Ok(out)
}

/// `lower_case_table_names` of a server (0, 1 or 2).
pub async fn lower_case_table_names(conn: &mut Conn) -> Result<u8> {
    Ok(variable(conn, "lower_case_table_names")
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// `lower_case_table_names` 2 on `side`: a blocker (names stored as given, compared folded:
/// macOS). 0 (case-sensitive) and 1 (folded to lowercase) are supported when both servers
/// agree (`names_fold_alike`).
pub async fn name_case(conn: &mut Conn, side: &str) -> Result<Option<Finding>> {
    let v = lower_case_table_names(conn).await?;
    Ok((v > 1).then(|| {
        Finding::new(
            Severity::Blocker,
            side,
            "lower_case_table_names",
            format!("lower_case_table_names={v}: migrate supports 0 (case-sensitive names) and 1 (names folded to lowercase)"),
            Some(format!("run the {side} with lower_case_table_names=0 or 1 (for a target, in its my.cnf before its data directory is created)")),
        )
    }))
}

/// Whether names fold (`lower_case_table_names=1` on both servers), or why the pair cannot be
/// migrated: a folding source has tables a case-sensitive target would know by other names
/// (its statements say `Shop.Orders` for `shop.orders`), a folding target would merge a
/// case-sensitive source's `T` and `t`.
pub fn names_fold_alike(source: u8, target: u8) -> Result<bool> {
    if source > 1 || target > 1 || source != target {
        return Err(crate::error::Error::definite(
            format!("lower_case_table_names is {source} on the source and {target} on the target: migrate needs both 0 (case-sensitive names) or both 1 (names folded to lowercase)"),
            "run the target with the source's lower_case_table_names (in its my.cnf before its data directory is created)",
        ));
    }
    Ok(source == 1)
}

/// `names_fold_alike` for two connections.
pub async fn name_folding(source: &mut Conn, target: &mut Conn) -> Result<bool> {
    let s = lower_case_table_names(source).await?;
    let t = lower_case_table_names(target).await?;
    names_fold_alike(s, t)
}
