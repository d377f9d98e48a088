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
    let ddl = show_create(
        conn,
        &format!("SHOW CREATE DATABASE {}", quote::ident(db)),
        1,
    )
    .await?;
    Ok(ddl.replacen("CREATE DATABASE ", "CREATE DATABASE IF NOT EXISTS ", 1))
}

pub async fn create_table(conn: &mut Conn, db: &str, table: &str) -> Result<String> {
    show_create(
        conn,
        &format!("SHOW CREATE TABLE {}", quote::table(db, table)),
        1,
    )
    .await
}

/// Split `CREATE TABLE` into the statement without its non-unique secondary indexes and the
/// `ALTER TABLE ... ADD ...` that restores them. Tables with foreign keys keep their indexes
/// (a foreign key needs its index from the start).
pub fn split_secondary_indexes(create: &str, quoted_table: &str) -> (String, Option<String>) {
    let lines: Vec<&str> = create.lines().collect();
    if lines.len() < 3 || create.contains("\n  CONSTRAINT ") && create.contains("FOREIGN KEY") {
        return (create.to_string(), None);
    }
    let last = lines.len() - 1; // ") ENGINE=..."
    let body: Vec<&str> = lines[1..last]
        .iter()
        .map(|l| l.trim_end_matches(','))
        .collect();
    let is_deferred = |l: &str| {
        let t = l.trim_start();
        l.starts_with("  ")
            && (t.starts_with("KEY ")
                || t.starts_with("FULLTEXT KEY ")
                || t.starts_with("SPATIAL KEY "))
    };
    let deferred: Vec<&str> = body.iter().copied().filter(|l| is_deferred(l)).collect();
    if deferred.is_empty() {
        return (create.to_string(), None);
    }
    let kept: Vec<&str> = body.iter().copied().filter(|l| !is_deferred(l)).collect();
    let stmt = format!("{}\n{}\n{}", lines[0], kept.join(",\n"), lines[last]);
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

/// A view, routine or event with its DDL and the sql_mode it was created under.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: &'static str,
    pub db: String,
    pub name: String,
    pub sql_mode: Option<String>,
    pub ddl: String,
}

impl Object {
    pub fn step(&self) -> String {
        format!("{}:{}.{}", self.kind, self.db, self.name)
    }
}

/// Routines, then views (which may call functions), then events (created disabled; cutover
/// enables them). Views that depend on other views are ordered by retrying at create time.
pub async fn objects(conn: &mut Conn, db: &str) -> Result<Vec<Object>> {
    let qdb = quote::string(db);
    let mut out = Vec::new();
    let routines = query_strings(
        conn,
        &format!("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {qdb} ORDER BY ROUTINE_NAME"),
    )
    .await?;
    for r in routines {
        let (kind, name) = (
            r[0].clone().unwrap_or_default(),
            r[1].clone().unwrap_or_default(),
        );
        let kind: &'static str = if kind == "FUNCTION" {
            "function"
        } else {
            "procedure"
        };
        let rows = query_strings(
            conn,
            &format!(
                "SHOW CREATE {} {}",
                kind.to_uppercase(),
                quote::table(db, &name)
            ),
        )
        .await?;
        let row = rows.into_iter().next().unwrap_or_default();
        let ddl = row.get(2).cloned().flatten().ok_or_else(|| {
            Error::definite(
                format!("cannot read the body of {kind} {db}.{name}"),
                "grant SELECT on mysql.proc (or SHOW CREATE ROUTINE) to the source user",
            )
        })?;
        out.push(Object {
            kind,
            db: db.into(),
            name,
            sql_mode: row.get(1).cloned().flatten(),
            ddl,
        });
    }
    let views = query_strings(
        conn,
        &format!("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {qdb} ORDER BY TABLE_NAME"),
    )
    .await?;
    for r in views {
        let name = r[0].clone().unwrap_or_default();
        let ddl = show_create(
            conn,
            &format!("SHOW CREATE VIEW {}", quote::table(db, &name)),
            1,
        )
        .await?;
        out.push(Object {
            kind: "view",
            db: db.into(),
            name,
            sql_mode: None,
            ddl,
        });
    }
    let events = query_strings(
        conn,
        &format!("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {qdb} ORDER BY EVENT_NAME"),
    )
    .await?;
    for r in events {
        let name = r[0].clone().unwrap_or_default();
        let rows = query_strings(
            conn,
            &format!("SHOW CREATE EVENT {}", quote::table(db, &name)),
        )
        .await?;
        let row = rows.into_iter().next().unwrap_or_default();
        let ddl = row.get(3).cloned().flatten().unwrap_or_default();
        out.push(Object {
            kind: "event",
            db: db.into(),
            name,
            sql_mode: row.get(1).cloned().flatten(),
            ddl,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn defers_plain_keys_only() {
        let ddl = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `k` int(11) NOT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`k`),\n  KEY `k_1` (`k`)\n) ENGINE=InnoDB";
        let (s, alter) = split_secondary_indexes(ddl, "`d`.`t`");
        assert_eq!(s, "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `k` int(11) NOT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `u` (`k`)\n) ENGINE=InnoDB");
        assert_eq!(alter.unwrap(), "ALTER TABLE `d`.`t` ADD KEY `k_1` (`k`)");
    }
}
