//! Making the target ready to take the application's writes, once it holds every source
//! transaction and before it opens: the source's triggers (deferred until now so that rows
//! applied from the binlog did not fire them twice), AUTO_INCREMENT counters and sequences at
//! least the source's, and the events the source has ENABLED (the target's copies were created
//! DISABLED). Every statement goes through a normal target session (the target's binlog and
//! its replica get them) and each is idempotent, so `cutover --resume` can run it again.

use crate::db::{self, quote};
use crate::error::Result;
use mysql_async::Conn;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Prepared {
    pub triggers: Vec<String>,
    pub auto_increments: Vec<String>,
    pub sequences: Vec<String>,
    pub events_enabled: Vec<String>,
}

fn list(dbs: &[String]) -> String {
    dbs.iter()
        .map(|d| quote::string(d))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A trigger as `SHOW CREATE TRIGGER` gives it: enough to create it again elsewhere.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct TriggerDef {
    pub db: String,
    pub name: String,
    pub sql_mode: String,
    pub create: String,
    /// The creating session's `character_set_client` and `collation_connection`.
    pub charset: String,
    #[serde(default)]
    pub collation: String,
}

/// The triggers of `dbs` in their action order per table, timing and event.
pub async fn read_triggers(conn: &mut Conn, dbs: &[String]) -> Result<Vec<TriggerDef>> {
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db::query_strings(
        conn,
        &format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA IN ({}) \
             ORDER BY TRIGGER_SCHEMA, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
            list(dbs)
        ),
    )
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let (Some(d), Some(name)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten())
        else {
            continue;
        };
        let show = db::query_strings(
            conn,
            &format!("SHOW CREATE TRIGGER {}", quote::table(&d, &name)),
        )
        .await?;
        let Some(row) = show.into_iter().next() else {
            continue;
        };
        // Trigger, sql_mode, SQL Original Statement, character_set_client, collation_connection
        let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        out.push(TriggerDef {
            db: d,
            name,
            sql_mode: cell(1),
            create: cell(2),
            charset: cell(3),
            collation: cell(4),
        });
    }
    Ok(out)
}

/// Create `triggers` on `conn` in order (each dropped first: idempotent), in their own
/// sql_mode, character set and connection collation: the statement (read as UTF-8) is sent in
/// the trigger's `character_set_client`, as its session sent it, so its literals keep their
/// characters and collation and `SHOW CREATE TRIGGER` shows the same on both servers.
pub async fn create_triggers(conn: &mut Conn, triggers: &[TriggerDef]) -> Result<()> {
    for t in triggers {
        let on =
            |e: crate::error::Error| e.context(format!("creating trigger {}.{}", t.db, t.name));
        let full = quote::table(&t.db, &t.name);
        let create = if db::is_utf8(&t.charset) || t.charset.is_empty() {
            t.create.clone().into_bytes()
        } else {
            db::text_in(conn, &t.create, &t.charset).await.map_err(on)?
        };
        let names = if t.collation.is_empty() {
            format!("SET NAMES {}", quote::string(&t.charset))
        } else {
            db::client_charset_sql(&t.charset, &t.collation)
        };
        for sql in [
            format!("USE {}", quote::ident(&t.db)),
            format!("SET SESSION sql_mode = {}", quote::string(&t.sql_mode)),
            format!("DROP TRIGGER IF EXISTS {full}"),
            names,
        ] {
            crate::db::run(conn, &sql).await.map_err(on)?;
        }
        let what = format!("CREATE TRIGGER {full}");
        let created = crate::db::run_raw(conn, &create, &what).await;
        crate::db::run(conn, "SET NAMES utf8mb4")
            .await
            .map_err(on)?;
        created.map_err(|e| on(e.context(what)))?;
    }
    Ok(())
}

/// Drop every trigger of `dbs` on `conn`; returns them (to create them again later).
pub async fn drop_triggers(conn: &mut Conn, dbs: &[String]) -> Result<Vec<TriggerDef>> {
    let triggers = read_triggers(conn, dbs).await?;
    for t in &triggers {
        let drop = format!("DROP TRIGGER IF EXISTS {}", quote::table(&t.db, &t.name));
        crate::db::run(conn, &drop)
            .await
            .map_err(|e| e.context(format!("dropping trigger {}.{}", t.db, t.name)))?;
    }
    Ok(triggers)
}

/// The ENABLED events of `dbs` on `conn`.
async fn enabled_events(conn: &mut Conn, dbs: &[String]) -> Result<Vec<(String, String)>> {
    if dbs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = db::query_strings(
        conn,
        &format!(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({}) AND STATUS = 'ENABLED'",
            list(dbs)
        ),
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((r.first().cloned().flatten()?, r.get(1).cloned().flatten()?)))
        .collect())
}

/// Disable every ENABLED event of `dbs` on `conn`; returns them (to enable them again).
pub async fn disable_events(conn: &mut Conn, dbs: &[String]) -> Result<Vec<(String, String)>> {
    let events = enabled_events(conn, dbs).await?;
    for (d, n) in &events {
        set_event_status(conn, d, n, "DISABLE")
            .await
            .map_err(|e| e.context(format!("disabling event {d}.{n}")))?;
    }
    Ok(events)
}

/// Enable these events on `conn`.
pub async fn enable_events(conn: &mut Conn, events: &[(String, String)]) -> Result<()> {
    for (d, n) in events {
        set_event_status(conn, d, n, "ENABLE")
            .await
            .map_err(|e| e.context(format!("enabling event {d}.{n}")))?;
    }
    Ok(())
}

/// `ALTER EVENT d.n ENABLE|DISABLE` in a session with the event's own `character_set_client`
/// and `collation_connection`: ALTER EVENT stores the session's (measured on 10.11: an euckr
/// event enabled from a utf8mb4 session becomes utf8mb4 / utf8mb4_general_ci).
async fn set_event_status(conn: &mut Conn, d: &str, n: &str, status: &str) -> Result<()> {
    let own = db::query_strings(
        conn,
        &format!(
            "SELECT CHARACTER_SET_CLIENT, COLLATION_CONNECTION FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} AND EVENT_NAME = {}",
            quote::string(d),
            quote::string(n)
        ),
    )
    .await?;
    if let Some([Some(client), Some(collation)]) = own
        .first()
        .map(|r| [r.first().cloned().flatten(), r.get(1).cloned().flatten()])
    {
        db::run(conn, &db::client_charset_sql(&client, &collation)).await?;
    }
    let altered = db::run(
        conn,
        &format!("ALTER EVENT {} {status}", quote::table(d, n)),
    )
    .await;
    db::run(conn, "SET NAMES utf8mb4").await?;
    altered
}

pub async fn run(src: &mut Conn, tgt: &mut Conn, dbs: &[String]) -> Result<Prepared> {
    let mut out = Prepared::default();
    if dbs.is_empty() {
        return Ok(out);
    }
    let dbl = list(dbs);
    // triggers, in their action order per table and event
    let triggers = read_triggers(src, dbs).await?;
    create_triggers(tgt, &triggers).await?;
    out.triggers = triggers
        .iter()
        .map(|t| format!("{}.{}", t.db, t.name))
        .collect();
    db::run(tgt, db::SESSION_SQL_MODE)
        .await
        .map_err(|e| e.context("target"))?;

    // AUTO_INCREMENT counters: at least the source's (it can be above MAX(id)+1 after rolled
    // back or deleted inserts, which the binlog does not carry)
    let q = format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, AUTO_INCREMENT, ENGINE FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA IN ({dbl}) AND AUTO_INCREMENT IS NOT NULL AND TABLE_TYPE = 'BASE TABLE'"
    );
    let (a, b) = (
        db::query_strings(src, &q).await?,
        db::query_strings(tgt, &q).await?,
    );
    for r in &a {
        let cell =
            |r: &Vec<Option<String>>, i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let (d, t, n) = (
            cell(r, 0),
            cell(r, 1),
            cell(r, 2).parse::<u64>().unwrap_or(0),
        );
        let on_target = b
            .iter()
            .find(|x| cell(x, 0) == d && cell(x, 1) == t)
            .and_then(|x| cell(x, 2).parse::<u64>().ok())
            .unwrap_or(0);
        // a FEDERATED table's counter is its remote table's; an ALTER would copy its rows
        // into the remote table again (`schema::Storage`)
        let rows_here = crate::schema::storage_of(&cell(r, 3)) == crate::schema::Storage::Here;
        if n > on_target && rows_here {
            db::run(
                tgt,
                &format!("ALTER TABLE {} AUTO_INCREMENT = {n}", quote::table(&d, &t)),
            )
            .await
            .map_err(|e| e.context(format!("target, AUTO_INCREMENT of {d}.{t}")))?;
            out.auto_increments.push(format!("{d}.{t}={n}"));
        }
    }

    // sequences: the next value the source would hand out, or later
    let seqs = db::query_strings(
        src,
        &format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA IN ({dbl}) AND TABLE_TYPE = 'SEQUENCE'"
        ),
    )
    .await?;
    for r in seqs {
        let (Some(d), Some(t)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten()) else {
            continue;
        };
        let full = quote::table(&d, &t);
        let next = db::query_one(src, &format!("SELECT next_not_cached_value FROM {full}"))
            .await?
            .unwrap_or_default();
        let next: i128 = next.parse().unwrap_or(0);
        // SETVAL(s, n): the next value is after n; it never moves a sequence backwards
        // (its one-row result is read and dropped by the watched helper)
        db::query_rows(tgt, &format!("SELECT SETVAL({full}, {})", next - 1))
            .await
            .map_err(|e| e.context(format!("target, sequence {d}.{t}")))?;
        out.sequences.push(format!("{d}.{t}"));
    }

    // events ENABLED on the source (the target's copies were created DISABLED)
    let events = enabled_events(src, dbs).await?;
    enable_events(tgt, &events)
        .await
        .map_err(|e| e.context("target"))?;
    out.events_enabled = events.iter().map(|(d, e)| format!("{d}.{e}")).collect();
    Ok(out)
}

/// Undo what `run` changed that would make the target diverge if follow applied more source
/// transactions (an abort or rollback before the switch): the triggers go (rows applied from
/// the binlog must not fire them) and the events are disabled again. Idempotent.
pub async fn undo(tgt: &mut Conn, dbs: &[String]) -> Result<()> {
    drop_triggers(tgt, dbs).await?;
    disable_events(tgt, dbs).await?;
    Ok(())
}
