//! `--snapshot-source`: the snapshot reads a replica of the source (the staging replica that
//! exists to take load off the on-prem primary), so the primary only serves the binlog to
//! `follow`. The replica must be a GTID replica of the source with `log_slave_updates`
//! (its binlog then carries the primary's own GTIDs, so the snapshot's position is valid on the
//! primary), replicating, and not far behind.

use crate::config::Endpoint;
use crate::db::{self, preflight::Finding, preflight::Severity, Session};
use crate::error::{Error, Result};
use mysql_async::Conn;

/// One replication connection of a replica (`SHOW ALL SLAVES STATUS`), its fields as text.
pub struct Replication(mysql_async::Row);

impl Replication {
    /// Every replication connection of the server on `conn` (none: not a replica).
    pub async fn of(conn: &mut Conn, what: &str) -> Result<Vec<Replication>> {
        let rows = crate::db::query_rows(conn, "SHOW ALL SLAVES STATUS")
            .await
            .map_err(|e| e.context(format!("{what}, SHOW ALL SLAVES STATUS")))?;
        Ok(rows.into_iter().map(Replication).collect())
    }

    /// A field (empty when NULL or absent).
    pub fn get(&self, k: &str) -> String {
        self.0
            .get_opt::<Option<String>, _>(k)
            .and_then(|v| v.ok())
            .flatten()
            .unwrap_or_default()
    }

    /// Why it is not replicating (None: both threads run), with the last errors.
    pub fn stopped(&self) -> Option<String> {
        let (io, sql) = (self.get("Slave_IO_Running"), self.get("Slave_SQL_Running"));
        if io == "Yes" && sql == "Yes" {
            return None;
        }
        let err = [self.get("Last_IO_Error"), self.get("Last_SQL_Error")]
            .into_iter()
            .filter(|e| !e.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        Some(format!(
            "replication is stopped (IO {io}, SQL {sql}){}",
            if err.is_empty() {
                String::new()
            } else {
                format!(": {err}")
            }
        ))
    }
}

/// The endpoint of `--snapshot-source URL` (password from MIGRATE_SNAPSHOT_SOURCE_PASSWORD,
/// else the source's).
pub fn endpoint(url: &str, source: &Endpoint) -> Result<Endpoint> {
    let mut e = Endpoint::parse("snapshot-source", url)?;
    let inherited = std::env::var("MIGRATE_SNAPSHOT_SOURCE_PASSWORD")
        .ok()
        .or_else(|| source.password.clone());
    e.resolve_password(inherited, None)?;
    Ok(e)
}

/// What makes `replica` unfit to be read instead of `primary` (blockers), plus its binlog
/// settings as `check` reports them for a source.
pub async fn findings(
    replica: &mut Conn,
    primary: &mut Conn,
    max_lag: u64,
) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let block = |subject: &str, what: String, fix: &str| {
        Finding::new(
            Severity::Blocker,
            "snapshot-source",
            subject,
            what,
            Some(fix.to_string()),
        )
    };
    let primary_id = db::query_one(primary, "SELECT @@global.server_id")
        .await?
        .unwrap_or_default();
    let rows = Replication::of(replica, "snapshot-source").await?;
    match rows.iter().find(|r| r.get("Master_Server_Id") == primary_id) {
        None => out.push(block(
            "replication",
            format!("not a replica of the source (no replication connection from server_id {primary_id})"),
            "point --snapshot-source at a replica of --source",
        )),
        Some(r) => {
            if !["Slave_Pos", "Current_Pos"].contains(&r.get("Using_Gtid").as_str()) {
                out.push(block(
                    "replication",
                    "replicates by binlog file and position, not by GTID".into(),
                    "on the replica: STOP SLAVE; CHANGE MASTER TO MASTER_USE_GTID=slave_pos; START SLAVE",
                ));
            }
            let filters: Vec<String> = [
                "Replicate_Do_DB",
                "Replicate_Ignore_DB",
                "Replicate_Do_Table",
                "Replicate_Ignore_Table",
                "Replicate_Wild_Do_Table",
                "Replicate_Wild_Ignore_Table",
            ]
            .iter()
            .filter(|k| !r.get(k).is_empty())
            .map(|k| format!("{k}={}", r.get(k)))
            .collect();
            if !filters.is_empty() {
                out.push(block(
                    "replication filters",
                    format!(
                        "it filters what it replicates ({}): a copy read from it could lack rows of the source",
                        filters.join(", ")
                    ),
                    "snapshot from a replica without replication filters, or from the source",
                ));
            }
            if let Some(why) = r.stopped() {
                out.push(block(
                    "replication",
                    why,
                    "START SLAVE on the replica and fix what SHOW SLAVE STATUS reports",
                ));
            } else {
                match r.get("Seconds_Behind_Master").parse::<u64>() {
                    Ok(lag) if lag <= max_lag => {}
                    Ok(lag) => out.push(block(
                        "lag",
                        format!("{lag} s behind the source, above --max-replica-lag {max_lag} s"),
                        "wait until it has caught up, or raise --max-replica-lag",
                    )),
                    Err(_) => out.push(block(
                        "lag",
                        "its lag is unknown (Seconds_Behind_Master is NULL)".into(),
                        "check the replica's replication threads",
                    )),
                }
            }
        }
    }
    let updates = db::query_one(replica, "SELECT @@global.log_slave_updates")
        .await?
        .unwrap_or_default();
    if updates != "1" {
        out.push(block(
            "log_slave_updates",
            "log_slave_updates is OFF: its binlog lacks the source's transactions".into(),
            "set log_slave_updates=ON in the replica's my.cnf and restart it",
        ));
    }
    for mut f in db::preflight::source_binlog(replica).await? {
        f.server = "snapshot-source".into();
        out.push(f);
    }
    Ok(out)
}

/// Connect to the replica and refuse it (one error naming every reason) if it is unfit.
pub async fn connect_checked(replica: &Endpoint, primary: &Endpoint, max_lag: u64) -> Result<()> {
    let mut rep = db::connect(replica, Session::Meta)
        .await
        .map_err(|e| e.context("--snapshot-source"))?;
    let mut pri = db::connect(primary, Session::Meta)
        .await
        .map_err(|e| e.context("source"))?;
    let blockers: Vec<String> = findings(&mut rep, &mut pri, max_lag)
        .await?
        .into_iter()
        .filter(|f| f.severity == Severity::Blocker)
        .map(|f| format!("{}: {}", f.subject, f.message))
        .collect();
    if blockers.is_empty() {
        return Ok(());
    }
    Err(Error::definite(
        format!(
            "--snapshot-source {}: {}",
            replica.address(),
            blockers.join("; ")
        ),
        "fix the replica (`migrate check --snapshot-source URL` lists each fix) or snapshot from the source",
    ))
}
