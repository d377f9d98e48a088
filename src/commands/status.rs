//! `migrate status`: reads the state store only; safe while another verb runs.

use super::Context;
use crate::cli::StatusArgs;
use crate::error::Result;
use crate::obs::progress::human_bytes;

pub async fn run(ctx: &Context, args: &StatusArgs) -> Result<i32> {
    if !ctx.state_path.exists() {
        return Err(crate::error::Error::usage(
            format!("no state file at {}", ctx.state_path.display()),
            "pass --state PATH of a migration (or run `migrate snapshot` first)",
        ));
    }
    let store = ctx.store()?;
    let tables = store.tables()?;
    let follow = store.follow_status()?;
    let keys = [
        "source",
        "target",
        "snapshot.state",
        "snapshot.gtid_low",
        "snapshot.gtid_high",
        "snapshot.gtid_consistent",
    ];
    let mut meta = serde_json::Map::new();
    for k in keys {
        if let Some(v) = store.get(k)? {
            meta.insert(k.to_string(), serde_json::Value::String(v));
        }
    }
    let events: Vec<serde_json::Value> = store
        .source_events()?
        .into_iter()
        .map(|(db, name, status)| serde_json::json!({"db": db, "name": name, "source_status": status}))
        .collect();
    let rows_done: u64 = tables.iter().map(|t| t.rows_done).sum();
    let rows_est: u64 = tables.iter().map(|t| t.rows_est.max(t.rows_done)).sum();
    if args.json {
        let out = serde_json::json!({ "meta": meta, "snapshot": { "rows_done": rows_done, "rows_estimate": rows_est, "tables": tables }, "follow": follow, "events_disabled_until_cutover": events });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(0);
    }
    for (k, v) in &meta {
        println!("{k:<26} {}", v.as_str().unwrap_or_default());
    }
    let copied = tables
        .iter()
        .filter(|t| t.status != "pending" && t.status != "copying")
        .count();
    println!(
        "snapshot tables            {copied}/{} copied, {rows_done}/{rows_est} rows, {}",
        tables.len(),
        human_bytes(tables.iter().map(|t| t.bytes_done).sum())
    );
    if !events.is_empty() {
        println!(
            "events                     {} on the target, DISABLED until cutover",
            events.len()
        );
    }
    for t in tables.iter().filter(|t| t.status == "copying") {
        println!("  copying {}.{}: {} rows", t.db, t.name, t.rows_done);
    }
    if let Some(f) = follow {
        println!("follow applied GTID        {}", f.applied_gtid);
        println!(
            "follow lag                 {}",
            f.lag_seconds
                .map(|l| format!("{l:.2} s"))
                .unwrap_or_else(|| "unknown".into())
        );
        println!(
            "follow behind              {} events, {} bytes",
            f.events_behind.unwrap_or(0),
            f.bytes_behind.unwrap_or(0)
        );
        println!(
            "follow applied             {} transactions, {} rows, {} reconnects",
            f.trx_applied, f.rows_applied, f.reconnects
        );
        let age = f
            .updated_at
            .parse::<f64>()
            .ok()
            .map(|t| crate::binlog::stream::unix_now() - t);
        match age {
            Some(a) => println!(
                "follow last update         {a:.0} s ago (pid {}){}",
                f.pid.map(|p| p.to_string()).unwrap_or_default(),
                if a > 10.0 {
                    ": not running, or stalled"
                } else {
                    ""
                }
            ),
            None => println!("follow last update         {}", f.updated_at),
        }
    }
    Ok(0)
}
