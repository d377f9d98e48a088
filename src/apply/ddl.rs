//! Running a DDL statement from the binlog on the target the way MariaDB's own replica runs
//! it: in a session set to the source session's context (the QUERY event's status variables:
//! sql_mode, character_set_client/collation_connection/collation_server, time_zone, the
//! statement's timestamp, auto_increment_increment/offset, lc_time_names, foreign_key_checks,
//! unique_checks, check_constraint_checks, sql_if_exists, explicit_defaults_for_timestamp),
//! with the statement's own bytes (in its character set), in its default database. Each
//! statement gets a fresh connection, so nothing of that context can leak into the row
//! applier's session. Events are created DISABLED (cutover enables them).

use super::super::binlog::{query, Ddl};
use crate::config::Endpoint;
use crate::db::{self, quote, Session};
use crate::error::{Error, Result};
use crate::sql::lexer::Mode;
use crate::sql::statement::{self, Fill, Object, Verb};
use mysql_async::Conn;

/// Source settings a QUERY event does not carry but DDL results depend on (a CREATE TABLE
/// without ENGINE=, a DEFAULT computed in the server's time zone): taken from the source's
/// global values, so the target computes what the source computed.
#[derive(Clone, Debug, Default)]
pub struct SourceDefaults {
    /// The source's global time_zone, with SYSTEM replaced by its current UTC offset.
    pub time_zone: String,
    /// The source's SYSTEM time zone as an offset (`+09:00`).
    pub system_offset: String,
    pub default_storage_engine: String,
    pub explicit_defaults_for_timestamp: Option<bool>,
    pub div_precision_increment: Option<u32>,
    pub default_week_format: Option<u32>,
    /// The source writes explicit_defaults_for_timestamp into flags2 (10.10 and later).
    pub flags_carry_explicit_defaults: bool,
    /// What `utf8` means in the source's statements: utf8mb3 before 10.6, and from 10.6 while
    /// its global old_mode has UTF8_IS_UTF8MB3 (the default); utf8mb4 without it. Measured:
    /// `CREATE TABLE ... CHARACTER SET utf8` from a source with old_mode='' made a utf8mb3
    /// column on a target with the default.
    pub utf8_is_utf8mb3: bool,
    /// The source's lower_case_table_names (the target must have the same, 0 or 1).
    pub lower_case_table_names: u8,
}

impl SourceDefaults {
    /// Read them from the source.
    pub async fn read(conn: &mut Conn) -> Result<SourceDefaults> {
        let row = db::query_strings(
            conn,
            "SELECT @@global.time_zone, TIMESTAMPDIFF(MINUTE, UTC_TIMESTAMP(), CONVERT_TZ(UTC_TIMESTAMP(), '+00:00', 'SYSTEM')), \
             @@global.default_storage_engine, @@global.explicit_defaults_for_timestamp, @@global.div_precision_increment, \
             @@global.default_week_format, @@version, @@global.old_mode, @@global.lower_case_table_names",
        )
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let minutes: i64 = get(1).parse().unwrap_or(0);
        let system_offset = format!(
            "{}{:02}:{:02}",
            if minutes < 0 { '-' } else { '+' },
            minutes.abs() / 60,
            minutes.abs() % 60
        );
        let tz = get(0);
        let version = get(6);
        let (major, minor) = version_of(&version);
        Ok(SourceDefaults {
            time_zone: if tz.eq_ignore_ascii_case("SYSTEM") {
                system_offset.clone()
            } else {
                tz
            },
            system_offset,
            default_storage_engine: get(2),
            explicit_defaults_for_timestamp: match get(3).as_str() {
                "1" | "ON" => Some(true),
                "0" | "OFF" => Some(false),
                _ => None,
            },
            div_precision_increment: get(4).parse().ok(),
            default_week_format: get(5).parse().ok(),
            flags_carry_explicit_defaults: (major, minor) >= (10, 10),
            utf8_is_utf8mb3: (major, minor) < (10, 6)
                || get(7)
                    .split(',')
                    .any(|f| f.eq_ignore_ascii_case("UTF8_IS_UTF8MB3")),
            lower_case_table_names: get(8).parse().unwrap_or(0),
        })
    }
}

fn version_of(v: &str) -> (u32, u32) {
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The `SET SESSION ...` that puts a fresh target session into the source session's context.
pub fn session_sql(ctx: &query::QueryContext, src: &SourceDefaults) -> String {
    let mut sets: Vec<String> = Vec::new();
    let ts = match ctx.when_usec {
        Some(us) => format!("{}.{us:06}", ctx.when),
        None => ctx.when.to_string(),
    };
    sets.push(format!("timestamp = {ts}"));
    if let Some(f) = ctx.flags2 {
        let on = |bit: u32| if f & bit != 0 { 1 } else { 0 };
        sets.push(format!(
            "foreign_key_checks = {}",
            1 - on(query::OPTION_NO_FOREIGN_KEY_CHECKS)
        ));
        sets.push(format!(
            "sql_auto_is_null = {}",
            on(query::OPTION_AUTO_IS_NULL)
        ));
        sets.push(format!(
            "unique_checks = {}",
            1 - on(query::OPTION_RELAXED_UNIQUE_CHECKS)
        ));
        sets.push(format!(
            "check_constraint_checks = {}",
            1 - on(query::OPTION_NO_CHECK_CONSTRAINT_CHECKS)
        ));
        if f & query::OPTION_IF_EXISTS != 0 {
            sets.push("sql_if_exists = 1".into());
        }
        if src.flags_carry_explicit_defaults {
            sets.push(format!(
                "explicit_defaults_for_timestamp = {}",
                on(query::OPTION_EXPLICIT_DEF_TIMESTAMP)
            ));
        }
        if f & query::OPTION_INSERT_HISTORY != 0 {
            sets.push("system_versioning_insert_history = 1".into());
        }
    }
    if !(src.flags_carry_explicit_defaults && ctx.flags2.is_some()) {
        if let Some(e) = src.explicit_defaults_for_timestamp {
            sets.push(format!("explicit_defaults_for_timestamp = {}", e as u8));
        }
    }
    if let Some(m) = ctx.sql_mode {
        sets.push(format!("sql_mode = {m}"));
    }
    if let Some((inc, off)) = ctx.auto_increment {
        sets.push(format!("auto_increment_increment = {inc}"));
        sets.push(format!("auto_increment_offset = {off}"));
    }
    if let Some((client, connection, server)) = ctx.charset {
        sets.push(format!("character_set_client = {client}"));
        sets.push(format!("collation_connection = {connection}"));
        sets.push(format!("collation_server = {server}"));
    }
    let tz = match ctx.time_zone.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("SYSTEM") => src.system_offset.clone(),
        Some(t) => t.to_string(),
        None => src.time_zone.clone(),
    };
    if !tz.is_empty() {
        sets.push(format!("time_zone = {}", quote::string(&tz)));
    }
    if let Some(lc) = ctx.lc_time_names {
        sets.push(format!("lc_time_names = {lc}"));
    }
    if let Some(c) = ctx.charset_database {
        sets.push(format!("collation_database = {c}"));
    }
    if !src.default_storage_engine.is_empty() {
        sets.push(format!(
            "default_storage_engine = {}",
            quote::ident(&src.default_storage_engine)
        ));
    }
    if let Some(d) = src.div_precision_increment {
        sets.push(format!("div_precision_increment = {d}"));
    }
    if let Some(w) = src.default_week_format {
        sets.push(format!("default_week_format = {w}"));
    }
    // the target's old_mode with UTF8_IS_UTF8MB3 set or cleared as the source has it (the
    // flag exists from 10.6.1; before, utf8 is utf8mb3 on the target whatever is set)
    let utf8 = if src.utf8_is_utf8mb3 {
        "old_mode = IF(FIND_IN_SET('UTF8_IS_UTF8MB3', @@old_mode), @@old_mode, \
         CONCAT_WS(',', NULLIF(@@old_mode, ''), 'UTF8_IS_UTF8MB3'))"
    } else {
        "old_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@old_mode, ','), ',UTF8_IS_UTF8MB3,', ','))"
    };
    format!("SET SESSION {} /*M!100601 , {utf8} */", sets.join(", "))
}

/// `CREATE/ALTER EVENT` rewritten so the event is DISABLED on the target: an existing
/// `ENABLE`/`DISABLE [ON SLAVE]` is replaced, or `DISABLE` is inserted where the grammar
/// allows it. Returns the new statement and the status the source asked for (None when the
/// statement leaves it unchanged).
pub fn disable_event(sql: &[u8], mode: Mode, verb: Verb) -> (Vec<u8>, Option<&'static str>) {
    let Some((ranges, insert_at)) = statement::event_status_clauses(sql, mode) else {
        return (sql.to_vec(), None);
    };
    let asked = match ranges.last() {
        Some(&(s, e)) => {
            let word = String::from_utf8_lossy(&sql[s..e]).to_ascii_uppercase();
            Some(if word.starts_with("ENABLE") {
                "ENABLED"
            } else if word.contains("SLAVE") || word.contains("REPLICA") {
                "SLAVESIDE_DISABLED"
            } else {
                "DISABLED"
            })
        }
        None if verb == Verb::Create => Some("ENABLED"),
        None => None,
    };
    let mut out = Vec::with_capacity(sql.len() + 9);
    let mut i = 0;
    if ranges.is_empty() {
        out.extend_from_slice(&sql[..insert_at]);
        if verb == Verb::Create {
            if out.last().is_some_and(|b| !b.is_ascii_whitespace()) {
                out.push(b' ');
            }
            out.extend_from_slice(b"DISABLE ");
        }
        out.extend_from_slice(&sql[insert_at..]);
        return (out, asked);
    }
    for (s, e) in ranges {
        out.extend_from_slice(&sql[i..s]);
        out.extend_from_slice(b"DISABLE");
        i = e;
    }
    out.extend_from_slice(&sql[i..]);
    (out, asked)
}

/// Errors a statement gives when its effect is already on the target.
const EXISTS_ERRORS: &[u16] = &[
    1007, // database exists
    1008, // database does not exist
    1050, // table/view exists
    1051, // unknown table
    1054, // unknown column (a rename already done)
    1060, // duplicate column
    1061, // duplicate key name
    1068, // multiple primary key (ADD PRIMARY KEY already done)
    1507, // DROP PARTITION of a partition already dropped
    1517, // duplicate partition name (ADD PARTITION already done)
    1091, // can't drop: does not exist
    1146, // table does not exist
    1304, // routine exists
    1305, // routine does not exist
    1537, // event exists
    1539, // unknown event
    1826, // duplicate foreign key
    4092, // unknown view
];

/// Whether an "already exists / does not exist" error of this statement means it was
/// applied before: always for views, routines, events and databases (their DDL carries the
/// whole object and replays idempotently); for tables only when a crash interrupted this very
/// statement (`replaying`).
pub fn already_applied(d: &statement::Ddl, code: Option<u16>, replaying: bool) -> bool {
    let Some(code) = code else { return false };
    if !EXISTS_ERRORS.contains(&code) {
        return false;
    }
    replaying
        || matches!(
            d.object,
            Object::Database
                | Object::View
                | Object::Function
                | Object::Procedure
                | Object::Package
                | Object::Event
        )
}

/// Run one DDL on a fresh target connection in the source session's context. Returns the
/// event status the source asked for, for CREATE/ALTER EVENT. `more_pairs` is appended to a
/// RENAME TABLE (the applier's marker pair, renamed in the same atomic statement).
pub async fn run(
    target: &Endpoint,
    d: &Ddl,
    src: &SourceDefaults,
    replaying: bool,
    more_pairs: Option<&str>,
) -> Result<Option<&'static str>> {
    let mut conn = db::connect(target, Session::TargetWriter).await?;
    let result = run_on(&mut conn, d, src, replaying, more_pairs).await;
    let _ = conn.disconnect().await;
    result
}

async fn run_on(
    conn: &mut Conn,
    d: &Ddl,
    src: &SourceDefaults,
    replaying: bool,
    more_pairs: Option<&str>,
) -> Result<Option<&'static str>> {
    let set = session_sql(&d.ctx, src);
    if let Err(e) = db::run_raw(conn, set.as_bytes(), "the DDL session's settings").await {
        if e.is_transient() {
            return Err(e.on("target"));
        }
        let hint = if e.code() == Some(1298) {
            "load the time zone tables on the target (mariadb-tzinfo-to-sql /usr/share/zoneinfo | mariadb mysql), then restart follow".to_string()
        } else {
            "the target does not accept the source session's settings; check that it is a MariaDB at least as new as the source".to_string()
        };
        return Err(e
            .context(format!("target, session settings for DDL `{}`", d.text))
            .with_hint(hint));
    }
    if !d.schema.is_empty() {
        match db::run_raw(
            conn,
            format!("USE {}", quote::ident(&d.schema)).as_bytes(),
            "USE before DDL",
        )
        .await
        {
            Ok(()) => {}
            // the default database is not on the target (not migrated): run without one,
            // like the statement's qualified names require
            Err(e) if e.code() == Some(1049) => {}
            Err(e) => return Err(e.context("target, USE before DDL")),
        }
    }
    let mode = Mode::from_sql_mode(d.ctx.sql_mode.unwrap_or(0));
    refuse_unrepeatable_fill(conn, d, mode).await?;
    refuse_tablespace_swap(d, mode)?;
    let (sql, asked) = if d.statement.object == Object::Event
        && matches!(d.statement.verb, Verb::Create | Verb::Alter)
    {
        disable_event(&d.sql, mode, d.statement.verb)
    } else {
        (d.sql.clone(), None)
    };
    let sql = match more_pairs {
        Some(pairs) => with_more_pairs(sql, pairs),
        None => sql,
    };
    match db::run_raw(conn, &sql, &crate::db::watchdog::label(&d.text)).await {
        Ok(()) => Ok(asked),
        Err(err) => {
            if err.is_transient() {
                return Err(err.on("target"));
            }
            if already_applied(&d.statement, err.code(), replaying) {
                tracing::warn!(
                    "DDL looks already applied ({}), skipping: {}",
                    err.what,
                    d.text
                );
                return Ok(asked);
            }
            Err(err
                .context(format!("target, DDL `{}`", d.text))
                .with_hint("the target's schema differs from the source's at this statement: make the object on the target match the source's definition before it and restart follow, or take a new snapshot"))
        }
    }
}

/// `ALTER TABLE ... DISCARD|IMPORT TABLESPACE` stops follow before it runs: an imported
/// tablespace's rows come from a file copied into the source's data directory, which the
/// binlog does not carry, and the target has no such file; run there, DISCARD deleted the
/// target's rows and IMPORT then failed (measured; a native replica does the same).
fn refuse_tablespace_swap(d: &Ddl, mode: Mode) -> Result<()> {
    if d.statement.object != Object::Table || d.statement.verb != Verb::Alter {
        return Ok(());
    }
    let Some(verb) = statement::swaps_tablespace(&d.sql, mode) else {
        return Ok(());
    };
    let name = d
        .statement
        .names
        .first()
        .map(|n| format!("{}.{}", n.db, n.name))
        .unwrap_or_default();
    Err(Error::definite(
        format!(
            "`{}`: {verb} TABLESPACE on {name}: an imported tablespace brings rows from a file the binlog does not carry (discarding one deletes the table's rows on the target); follow stops before it",
            d.text
        ),
        format!("once the source has imported {name}, copy it again: a new snapshot (a new --state, with --reuse-target), or --exclude '{name}' and copy it yourself"),
    ))
}

/// An `ALTER TABLE ... ADD` column whose default gives the rows already in the table a value
/// the target cannot repeat (RAND(), UUID(), USER(), NEXT VALUE FOR, @@server_id, ...), or an
/// AUTO_INCREMENT column added to (or made of a column of) a table without a primary or NOT
/// NULL unique key, stops follow before it runs, unless the target's table is empty: run
/// there, it would fill them with other values than the source's, with exit 0 (a native
/// replica does). Measured: `ADD COLUMN r DOUBLE DEFAULT (RAND())` left every row different.
async fn refuse_unrepeatable_fill(conn: &mut Conn, d: &Ddl, mode: Mode) -> Result<()> {
    if d.statement.object != Object::Table || d.statement.verb != Verb::Alter {
        return Ok(());
    }
    let Some(fill) = statement::fills_existing_rows_with(&d.sql, mode) else {
        return Ok(());
    };
    let Some(table) = d.statement.names.first() else {
        return Ok(());
    };
    let qualified = format!("{}.{}", quote::ident(&table.db), quote::ident(&table.name));
    let rows = db::query_strings(conn, &format!("SELECT 1 FROM {qualified} LIMIT 1"))
        .await
        .map_err(|e| e.context("target"))?;
    if rows.is_empty() {
        return Ok(());
    }
    let why = match fill {
        Fill::Unrepeatable(what) => format!(
            "gives the rows already in {}.{} a column default of {what}, computed where the statement runs",
            table.db, table.name
        ),
        Fill::Numbered | Fill::Deduplicated => {
            // numbered in clustered order: the same on both sides when a primary key or a
            // NOT NULL unique key orders the table
            let keyed = db::query_strings(
                conn,
                &format!(
                    "SELECT 1 FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c \
                     ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME \
                     WHERE s.TABLE_SCHEMA = {} AND s.TABLE_NAME = {} AND s.NON_UNIQUE = 0 \
                     GROUP BY s.INDEX_NAME HAVING SUM(c.IS_NULLABLE = 'YES') = 0 LIMIT 1",
                    quote::string(&table.db),
                    quote::string(&table.name)
                ),
            )
            .await
            .map_err(|e| e.context("target"))?;
            if !keyed.is_empty() {
                return Ok(());
            }
            if fill == Fill::Numbered {
                format!(
                    "numbers the rows already in {}.{}, which has no primary or NOT NULL unique key, with AUTO_INCREMENT in their stored order",
                    table.db, table.name
                )
            } else {
                format!(
                    "keeps, of the rows already in {}.{} that share the new key, the first in their stored order, and the table has no primary or NOT NULL unique key to make that order the same",
                    table.db, table.name
                )
            }
        }
    };
    Err(Error::definite(
        format!(
            "DDL `{}` {why}: on the target those rows would get other values than on the source",
            d.text
        ),
        "take a new snapshot after this statement, with a new state file: `migrate snapshot --state NEW --reuse-target` copies the rows as the source holds them now; then follow with that state",
    ))
}

/// A RENAME TABLE with more `a TO b` pairs after its own: trailing blanks and `;` removed, the
/// pairs on a new line (a trailing `-- comment` ends there). ASCII, so right in every client
/// character set a source session can use.
fn with_more_pairs(mut sql: Vec<u8>, pairs: &str) -> Vec<u8> {
    while sql
        .last()
        .is_some_and(|b| b.is_ascii_whitespace() || *b == b';')
    {
        sql.pop();
    }
    sql.extend_from_slice(b"\n, ");
    sql.extend_from_slice(pairs.as_bytes());
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_pairs_follow_the_statement() {
        assert_eq!(
            with_more_pairs(b"RENAME TABLE a TO b ; \n".to_vec(), "x TO y"),
            b"RENAME TABLE a TO b\n, x TO y".to_vec()
        );
        assert_eq!(
            with_more_pairs(b"RENAME TABLE a TO b -- why".to_vec(), "x TO y"),
            b"RENAME TABLE a TO b -- why\n, x TO y".to_vec()
        );
    }

    #[test]
    fn session_from_event() {
        let ctx = query::QueryContext {
            when: 1700000000,
            when_usec: Some(5),
            flags2: Some(
                query::OPTION_NO_FOREIGN_KEY_CHECKS | query::OPTION_EXPLICIT_DEF_TIMESTAMP,
            ),
            sql_mode: Some(2),
            auto_increment: Some((3, 1)),
            charset: Some((19, 19, 19)),
            time_zone: Some("SYSTEM".into()),
            lc_time_names: Some(31),
            charset_database: None,
            gtid_flags3: None,
        };
        let src = SourceDefaults {
            time_zone: "+09:00".into(),
            system_offset: "+09:00".into(),
            default_storage_engine: "InnoDB".into(),
            explicit_defaults_for_timestamp: Some(false),
            div_precision_increment: Some(4),
            default_week_format: Some(0),
            flags_carry_explicit_defaults: true,
            utf8_is_utf8mb3: true,
            lower_case_table_names: 0,
        };
        let s = session_sql(&ctx, &src);
        assert!(s.starts_with("SET SESSION timestamp = 1700000000.000005, foreign_key_checks = 0, sql_auto_is_null = 0, unique_checks = 1, check_constraint_checks = 1, explicit_defaults_for_timestamp = 1, sql_mode = 2, auto_increment_increment = 3, auto_increment_offset = 1, character_set_client = 19, collation_connection = 19, collation_server = 19, time_zone = '+09:00', lc_time_names = 31, default_storage_engine = `InnoDB`"), "{s}");
    }

    #[test]
    fn replayed_alters_count_as_applied_only_when_replaying() {
        use crate::sql::statement::{classify, Statement};
        let dec = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let Statement::Ddl(d) = classify(
            b"ALTER TABLE t MODIFY id INT NOT NULL, ADD PRIMARY KEY (id)",
            Mode::default(),
            "shop",
            &dec,
        ) else {
            panic!("not DDL")
        };
        for code in [1068, 1060, 1061, 1091, 1054, 1517, 1507] {
            assert!(already_applied(&d, Some(code), true), "{code}");
            assert!(!already_applied(&d, Some(code), false), "{code}");
        }
        assert!(!already_applied(&d, Some(1064), true));
    }

    #[test]
    fn events_become_disabled() {
        let (s, asked) = disable_event(
            b"CREATE DEFINER=`r`@`%` EVENT e ON SCHEDULE EVERY 1 SECOND DO INSERT INTO t VALUES (1)",
            Mode::default(),
            Verb::Create,
        );
        assert_eq!(
            String::from_utf8_lossy(&s),
            "CREATE DEFINER=`r`@`%` EVENT e ON SCHEDULE EVERY 1 SECOND DISABLE DO INSERT INTO t VALUES (1)"
        );
        assert_eq!(asked, Some("ENABLED"));
        let (s, asked) = disable_event(
            b"ALTER EVENT e ENABLE COMMENT 'x'",
            Mode::default(),
            Verb::Alter,
        );
        assert_eq!(
            String::from_utf8_lossy(&s),
            "ALTER EVENT e DISABLE COMMENT 'x'"
        );
        assert_eq!(asked, Some("ENABLED"));
        let (s, asked) = disable_event(b"ALTER EVENT e COMMENT 'x'", Mode::default(), Verb::Alter);
        assert_eq!(String::from_utf8_lossy(&s), "ALTER EVENT e COMMENT 'x'");
        assert_eq!(asked, None);
        let (s, asked) = disable_event(
            b"CREATE EVENT e ON SCHEDULE AT NOW() DISABLE ON SLAVE DO SELECT 1",
            Mode::default(),
            Verb::Create,
        );
        assert_eq!(
            String::from_utf8_lossy(&s),
            "CREATE EVENT e ON SCHEDULE AT NOW() DISABLE DO SELECT 1"
        );
        assert_eq!(asked, Some("SLAVESIDE_DISABLED"));
    }
}
