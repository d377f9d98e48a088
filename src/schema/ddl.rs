//! Schema objects: read their DDL from the source (SHOW CREATE ...), adjust it for the target
//! (secondary indexes deferred, events disabled until cutover), and list them in the order
//! they can be created.

use crate::db::{query_strings, quote};
use crate::error::{Error, Result};
use mysql_async::Conn;

/// `SHOW CREATE ...` second column (or `col`th).
async fn show_create(conn: &mut Conn, sql: &str, col: usize) -> Result<String> {
    let rows = query_strings(conn, sql).await?;
    rows.into_iter()
        .next()
        .and_then(|r| r.into_iter().nth(col).flatten())
        .ok_or_else(|| {
            Error::definite(
                format!("`{sql}` returned nothing"),
                "check the grants of the source user (SHOW VIEW, SELECT on mysql.proc, EVENT)",
            )
        })
}

pub async fn create_database(conn: &mut Conn, db: &str) -> Result<String> {
    let mut one = create_databases(conn, &[db.to_string()]).await?;
    Ok(one.pop().unwrap_or_default())
}

/// `create_database` of each of `dbs`, in one round trip.
pub async fn create_databases(conn: &mut Conn, dbs: &[String]) -> Result<Vec<String>> {
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let queries: Vec<String> = dbs
        .iter()
        .map(|d| format!("SHOW CREATE DATABASE {}", quote::ident(d)))
        .collect();
    let sets = crate::db::query_each(conn, &queries, "reading database definitions").await?;
    sets.into_iter()
        .zip(&queries)
        .map(|(rows, sql)| {
            let ddl = rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().nth(1).flatten())
                .ok_or_else(|| {
                    Error::definite(
                        format!("`{sql}` returned nothing"),
                        "check the grants of the source user",
                    )
                })?;
            Ok(ddl.replacen("CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1))
        })
        .collect()
}

/// `SHOW CREATE TABLE` of `db.table` (to send with other queries in one round trip).
pub fn create_table_sql(db: &str, table: &str) -> String {
    format!("SHOW CREATE TABLE {}", quote::table(db, table))
}

/// The definition in the result set of `create_table_sql`.
pub fn create_table_from(rows: Vec<Vec<Option<String>>>, db: &str, table: &str) -> Result<String> {
    rows.into_iter()
        .next()
        .and_then(|r| r.into_iter().nth(1).flatten())
        .ok_or_else(|| {
            Error::definite(
                format!("`{}` returned nothing", create_table_sql(db, table)),
                "check the grants of the source user",
            )
        })
}

pub async fn create_table(conn: &mut Conn, db: &str, table: &str) -> Result<String> {
    show_create(
        conn,
        &format!("SHOW CREATE TABLE {}", quote::table(db, table)),
        1,
    )
    .await
}

/// `SHOW CREATE TABLE` without what changes when only rows change (the table's
/// `AUTO_INCREMENT=n` counter), for telling whether a table's definition changed.
pub fn normalize_definition(create: &str) -> String {
    let mut out = String::with_capacity(create.len());
    let mut rest = create;
    while let Some(i) = rest.find(" AUTO_INCREMENT=") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " AUTO_INCREMENT=".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push_str(" AUTO_INCREMENT=");
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// The name in a definition line that starts with a backtick-quoted identifier.
fn leading_ident(s: &str) -> Option<String> {
    let s = s.strip_prefix('`')?;
    let mut name = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            if chars.peek() == Some(&'`') {
                chars.next();
                name.push('`');
                continue;
            }
            return Some(name);
        }
        name.push(c);
    }
    None
}

/// Split `CREATE TABLE` into the statement without its non-unique secondary indexes and the
/// `ALTER TABLE ... ADD ...` that restores them. Kept in the CREATE: every index of a table
/// with foreign keys or referenced by one (`keep_all`: a foreign key needs its index from the
/// start), and a key whose first column is AUTO_INCREMENT (the column must be the first of
/// some key). Works with partitioned tables (lines after the closing parenthesis).
pub fn split_secondary_indexes(
    create: &str,
    quoted_table: &str,
    keep_all: bool,
) -> (String, Option<String>) {
    let lines: Vec<&str> = create.lines().collect();
    if keep_all
        || lines.len() < 3
        || create.contains("\n  CONSTRAINT ") && create.contains("FOREIGN KEY")
    {
        return (create.to_string(), None);
    }
    let Some(close) = lines
        .iter()
        .skip(1)
        .position(|l| l.starts_with(')'))
        .map(|p| p + 1)
    else {
        return (create.to_string(), None);
    };
    let body: Vec<&str> = lines[1..close]
        .iter()
        .map(|l| l.trim_end_matches(','))
        .collect();
    let auto_columns: Vec<String> = body
        .iter()
        .filter(|l| l.starts_with("  `") && l.contains(" AUTO_INCREMENT"))
        .filter_map(|l| leading_ident(l.trim_start()))
        .collect();
    let first_column = |l: &str| -> Option<String> {
        let open = l.find('(')?;
        leading_ident(l[open + 1..].trim_start())
    };
    let is_deferred = |l: &str| {
        let t = l.trim_start();
        l.starts_with("  ")
            && (t.starts_with("KEY ")
                || t.starts_with("FULLTEXT KEY ")
                || t.starts_with("SPATIAL KEY "))
            && !first_column(t).is_some_and(|c| auto_columns.contains(&c))
    };
    let deferred: Vec<&str> = body.iter().copied().filter(|l| is_deferred(l)).collect();
    if deferred.is_empty() {
        return (create.to_string(), None);
    }
    let kept: Vec<&str> = body.iter().copied().filter(|l| !is_deferred(l)).collect();
    let stmt = format!(
        "{}\n{}\n{}",
        lines[0],
        kept.join(",\n"),
        lines[close..].join("\n")
    );
    let alter = format!(
        "ALTER TABLE {quoted_table} {}",
        deferred
            .iter()
            .map(|l| format!("ADD {}", l.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (stmt, Some(alter))
}

/// A view, routine or event with its DDL and the session it was created in.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: &'static str,
    pub db: String,
    pub name: String,
    pub sql_mode: Option<String>,
    /// The statement, as the server shows it (read in utf8mb4).
    pub ddl: String,
    /// The creating session's `character_set_client` and `collation_connection`.
    pub client: String,
    pub collation: String,
    /// For events: ENABLED, DISABLED or SLAVESIDE_DISABLED on the source.
    pub status: Option<String>,
    /// For events: the time zone their schedule is in (the creating session's).
    pub time_zone: Option<String>,
}

impl Object {
    pub fn step(&self) -> String {
        format!("{}:{}.{}", self.kind, self.db, self.name)
    }
}

/// The source's SYSTEM time zone as its current UTC offset (`+09:00`).
async fn system_offset(conn: &mut Conn) -> Result<String> {
    let rows = crate::db::query_sets(
        conn,
        "SET @migrate_tz = @@session.time_zone; SET SESSION time_zone = 'SYSTEM'; \
         SELECT TIMESTAMPDIFF(SECOND, UTC_TIMESTAMP(), NOW()); SET SESSION time_zone = @migrate_tz",
    )
    .await?;
    let secs: i64 = rows
        .iter()
        .flatten()
        .filter_map(|r| r.first().cloned().flatten())
        .find_map(|v| v.parse().ok())
        .unwrap_or(0);
    let sign = if secs < 0 { '-' } else { '+' };
    let m = secs.unsigned_abs() / 60;
    Ok(format!("{sign}{:02}:{:02}", m / 60, m % 60))
}

/// Routines, then views (which may call functions), then events (created disabled; cutover
/// enables them). Views that depend on other views are ordered by retrying at create time.
pub async fn objects(conn: &mut Conn, db: &str) -> Result<Vec<Object>> {
    let qdb = quote::string(db);
    // information_schema.ROUTINES hides routines of other definers from an account without
    // SELECT on mysql.proc: list them from mysql.proc itself, so a missing grant is an error
    // rather than routines silently left behind. The three listings in one round trip, then
    // every definition in another (each is tens of ms over a VPN).
    let listings = [
        format!("SELECT type, name FROM mysql.proc WHERE db = {qdb} ORDER BY type, name"),
        format!("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {qdb} ORDER BY TABLE_NAME"),
        format!("SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {qdb} ORDER BY EVENT_NAME"),
    ];
    let mut sets = crate::db::query_each(conn, &listings, &format!("listing the objects of {db}"))
        .await
        .map_err(|e| {
            if e.what.contains("proc") {
                Error::definite(
                    format!("source: cannot list the routines of {db}: {}", e.what),
                    "GRANT SELECT ON mysql.proc TO the source user (information_schema hides other definers' routines without it)",
                )
            } else {
                e
            }
        })?
        .into_iter();
    let (routines, views, events) = (
        sets.next().unwrap_or_default(),
        sets.next().unwrap_or_default(),
        sets.next().unwrap_or_default(),
    );
    let text = |r: &[Option<String>], i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    // (kind, name, event status) in creation order, with the statement showing each
    let mut listed: Vec<(&'static str, String, Option<String>)> = Vec::new();
    for r in &routines {
        let (kind, name) = (text(r, 0), text(r, 1));
        let kind: &'static str = match kind.as_str() {
            "FUNCTION" => "function",
            "PROCEDURE" => "procedure",
            "PACKAGE" => "package",
            "PACKAGE BODY" => "package body",
            other => {
                return Err(Error::definite(
                    format!(
                        "source: routine {db}.{name} is of a kind migrate does not know ({other})"
                    ),
                    "exclude its database, or recreate the routine on the target by hand",
                ))
            }
        };
        listed.push((kind, name, None));
    }
    for r in &views {
        listed.push(("view", text(r, 0), None));
    }
    for r in &events {
        listed.push(("event", text(r, 0), r.get(1).cloned().flatten()));
    }
    let shows: Vec<String> = listed
        .iter()
        .map(|(kind, name, _)| {
            format!(
                "SHOW CREATE {} {}",
                kind.to_uppercase(),
                quote::table(db, name)
            )
        })
        .collect();
    let mut out = Vec::new();
    for (batch, items) in shows.chunks(64).zip(listed.chunks(64)) {
        let sets =
            crate::db::query_each(conn, batch, &format!("reading the objects of {db}")).await?;
        for (rows, (kind, name, status)) in sets.into_iter().zip(items) {
            let row = rows.into_iter().next().unwrap_or_default();
            let (kind, name) = (*kind, name.clone());
            let object = match kind {
                // View, Create View, character_set_client, collation_connection
                "view" => Object {
                    kind,
                    db: db.into(),
                    ddl: row
                        .get(1)
                        .cloned()
                        .flatten()
                        .ok_or_else(|| {
                            Error::definite(
                                format!("`SHOW CREATE VIEW {}` returned nothing", quote::table(db, &name)),
                                "check the grants of the source user (SHOW VIEW, SELECT on mysql.proc, EVENT)",
                            )
                        })?,
                    client: text(&row, 2),
                    collation: text(&row, 3),
                    name,
                    sql_mode: None,
                    status: None,
                    time_zone: None,
                },
                // Event, sql_mode, time_zone, Create Event, character_set_client,
                // collation_connection, Database Collation
                "event" => Object {
                    kind,
                    db: db.into(),
                    name,
                    sql_mode: row.get(1).cloned().flatten(),
                    ddl: text(&row, 3),
                    client: text(&row, 4),
                    collation: text(&row, 5),
                    status: status.clone(),
                    time_zone: match row.get(2).cloned().flatten() {
                        // the source's system zone, as an offset (the target's may differ)
                        Some(tz) if tz.eq_ignore_ascii_case("SYSTEM") => {
                            Some(system_offset(conn).await?)
                        }
                        other => other,
                    },
                },
                // Name, sql_mode, Create ..., character_set_client, collation_connection,
                // Database Collation
                _ => Object {
                    kind,
                    db: db.into(),
                    ddl: row
                        .get(2)
                        .cloned()
                        .flatten()
                        .ok_or_else(|| {
                            Error::definite(
                                format!("cannot read the body of {kind} {db}.{name}"),
                                "grant SELECT on mysql.proc (or SHOW CREATE ROUTINE) to the source user",
                            )
                        })?,
                    client: text(&row, 3),
                    collation: text(&row, 4),
                    name,
                    sql_mode: row.get(1).cloned().flatten(),
                    status: None,
                    time_zone: None,
                },
            };
            out.push(object);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn defers_plain_keys_only() {
        let ddl = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `k` int(11) NOT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`k`),\n  KEY `k_1` (`k`)\n) ENGINE=InnoDB";
        let (s, alter) = split_secondary_indexes(ddl, "`d`.`t`", false);
        assert_eq!(s, "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `k` int(11) NOT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`k`)\n) ENGINE=InnoDB");
        assert_eq!(alter.unwrap(), "ALTER TABLE `d`.`t` ADD KEY `k_1` (`k`)");
        assert_eq!(split_secondary_indexes(ddl, "`d`.`t`", true).1, None);
    }

    #[test]
    fn partitioned_and_auto_increment_shapes() {
        let ddl = "CREATE TABLE `pt` (\n  `id` int(11) NOT NULL,\n  `v` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  KEY `k` (`v`)\n) ENGINE=InnoDB DEFAULT CHARSET=latin1\n PARTITION BY HASH (`id`)\nPARTITIONS 3";
        let (s, alter) = split_secondary_indexes(ddl, "`d`.`pt`", false);
        assert_eq!(s, "CREATE TABLE `pt` (\n  `id` int(11) NOT NULL,\n  `v` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=latin1\n PARTITION BY HASH (`id`)\nPARTITIONS 3");
        assert_eq!(alter.unwrap(), "ALTER TABLE `d`.`pt` ADD KEY `k` (`v`)");
        let ddl = "CREATE TABLE `ai` (\n  `order_id` int(11) NOT NULL,\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `x` int(11) NOT NULL,\n  PRIMARY KEY (`order_id`,`id`),\n  KEY `id` (`id`),\n  KEY `x` (`x`,`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=7";
        let (s, alter) = split_secondary_indexes(ddl, "`d`.`ai`", false);
        assert!(s.contains("KEY `id` (`id`)"), "{s}");
        assert_eq!(
            alter.unwrap(),
            "ALTER TABLE `d`.`ai` ADD KEY `x` (`x`,`id`)"
        );
        assert_eq!(
            normalize_definition(ddl),
            ddl.replace(" AUTO_INCREMENT=7", "")
        );
    }
}
