//! Making the target ready to take the application's writes, once it holds every source
//! transaction and before it opens: the source's triggers (deferred until now so that rows
//! applied from the binlog did not fire them twice), AUTO_INCREMENT counters and sequences at
//! least the source's, and the events the source has ENABLED (the target's copies were created
//! DISABLED). Every statement goes through a normal target session (the target's binlog and
//! its replica get them) and each is idempotent, so `cutover --resume` can run it again.

use crate::db::{self, quote};
use crate::error::{Error, Result};
use mysql_async::prelude::*;
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

pub async fn run(src: &mut Conn, tgt: &mut Conn, dbs: &[String]) -> Result<Prepared> {
    let mut out = Prepared::default();
    if dbs.is_empty() {
        return Ok(out);
    }
    let dbl = list(dbs);
    // triggers, in their action order per table and event
    let triggers = db::query_strings(
        src,
        &format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS \
             WHERE TRIGGER_SCHEMA IN ({dbl}) \
             ORDER BY TRIGGER_SCHEMA, EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER"
        ),
    )
    .await?;
    for r in triggers {
        let (Some(d), Some(name)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten())
        else {
            continue;
        };
        let full = quote::table(&d, &name);
        let show = db::query_strings(src, &format!("SHOW CREATE TRIGGER {full}")).await?;
        let Some(row) = show.into_iter().next() else {
            continue;
        };
        // Trigger, sql_mode, SQL Original Statement, character_set_client, collation_connection
        let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (mode, create, charset) = (cell(1), cell(2), cell(3));
        let sqls = [
            format!("USE {}", quote::ident(&d)),
            format!("SET SESSION sql_mode = {}", quote::string(&mode)),
            format!("SET NAMES {}", quote::ident(&charset)),
            format!("DROP TRIGGER IF EXISTS {full}"),
            create,
            "SET NAMES utf8mb4".into(),
        ];
        for sql in sqls {
            tgt.query_drop(&sql).await.map_err(|e| {
                Error::from(e).context(format!("target, creating trigger {d}.{name}"))
            })?;
        }
        out.triggers.push(format!("{d}.{name}"));
    }
    tgt.query_drop("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'")
        .await?;

    // AUTO_INCREMENT counters: at least the source's (it can be above MAX(id)+1 after rolled
    // back or deleted inserts, which the binlog does not carry)
    let q = format!(
        "SELECT TABLE_SCHEMA, TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES \
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
        if n > on_target {
            tgt.query_drop(format!(
                "ALTER TABLE {} AUTO_INCREMENT = {n}",
                quote::table(&d, &t)
            ))
            .await
            .map_err(|e| Error::from(e).context(format!("target, AUTO_INCREMENT of {d}.{t}")))?;
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
        tgt.query_drop(format!("SELECT SETVAL({full}, {})", next - 1))
            .await
            .map_err(|e| Error::from(e).context(format!("target, sequence {d}.{t}")))?;
        out.sequences.push(format!("{d}.{t}"));
    }

    // events ENABLED on the source (the target's copies were created DISABLED)
    let events = db::query_strings(
        src,
        &format!(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS \
             WHERE EVENT_SCHEMA IN ({dbl}) AND STATUS = 'ENABLED'"
        ),
    )
    .await?;
    for r in events {
        let (Some(d), Some(e)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten()) else {
            continue;
        };
        tgt.query_drop(format!("ALTER EVENT {} ENABLE", quote::table(&d, &e)))
            .await
            .map_err(|x| Error::from(x).context(format!("target, enabling event {d}.{e}")))?;
        out.events_enabled.push(format!("{d}.{e}"));
    }
    Ok(out)
}

/// Undo what `run` changed that would make the target diverge if follow applied more source
/// transactions (an abort or rollback before the switch): the triggers go (rows applied from
/// the binlog must not fire them) and the events are disabled again. Idempotent.
pub async fn undo(tgt: &mut Conn, dbs: &[String]) -> Result<()> {
    if dbs.is_empty() {
        return Ok(());
    }
    let dbl = list(dbs);
    let triggers = db::query_strings(
        tgt,
        &format!(
            "SELECT TRIGGER_SCHEMA, TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA IN ({dbl})"
        ),
    )
    .await?;
    for r in triggers {
        if let (Some(d), Some(n)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
            tgt.query_drop(format!("DROP TRIGGER IF EXISTS {}", quote::table(&d, &n)))
                .await?;
        }
    }
    let events = db::query_strings(
        tgt,
        &format!(
            "SELECT EVENT_SCHEMA, EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA IN ({dbl}) AND STATUS = 'ENABLED'"
        ),
    )
    .await?;
    for r in events {
        if let (Some(d), Some(n)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten()) {
            tgt.query_drop(format!("ALTER EVENT {} DISABLE", quote::table(&d, &n)))
                .await?;
        }
    }
    Ok(())
}
