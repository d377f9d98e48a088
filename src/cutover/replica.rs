//! The target's own read replicas (native MariaDB replicas of the target): checked at
//! preflight (replicating from the target, both threads running) and waited for at the switch,
//! so the application never reads from a replica that lacks what the target has.

use crate::config::Endpoint;
use crate::db::{self, quote, Session};
use crate::error::{Error, Result};
use mysql_async::Conn;
use std::time::Duration;

pub async fn connect(ep: &Endpoint) -> Result<Conn> {
    db::connect_retry(ep, Session::Meta, db::retry::BOUNDED_ATTEMPTS)
        .await
        .map_err(|e| e.context(format!("--target-replica {}", ep.address())))
}

/// Why the replica is not replicating from the target (None: it is).
pub async fn not_replicating(conn: &mut Conn) -> Result<Option<String>> {
    let connections = db::replica::Replication::of(conn, "--target-replica").await?;
    if connections.is_empty() {
        return Ok(Some(
            "it is not a replica (no replication configured)".into(),
        ));
    }
    // a multi-source replica: one running connection is enough (it may be the target's)
    let mut why = Vec::new();
    for c in &connections {
        match c.stopped() {
            None => return Ok(None),
            Some(w) => why.push(w),
        }
    }
    Ok(Some(why.join("; ")))
}

/// Wait until the replica has applied `gtid` (the target's whole `gtid_binlog_pos`), at most
/// `budget`.
pub async fn wait(conn: &mut Conn, ep: &Endpoint, gtid: &str, budget: Duration) -> Result<()> {
    if gtid.is_empty() {
        return Ok(());
    }
    let secs = budget.as_secs_f64().max(0.001);
    let r = db::query_one(
        conn,
        &format!(
            "SELECT MASTER_GTID_WAIT({}, {secs:.3})",
            quote::string(gtid)
        ),
    )
    .await
    .map_err(|e| e.context(format!("--target-replica {}", ep.address())))?;
    if r.as_deref() != Some("0") {
        return Err(Error::definite(
            format!(
                "the target's replica {} did not reach the target's GTID {gtid} within the downtime budget",
                ep.address()
            ),
            "check its replication (SHOW SLAVE STATUS) and lag, then cut over again (or raise --max-downtime)",
        ));
    }
    Ok(())
}
