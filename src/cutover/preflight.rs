//! Cutover's readiness checks (`--dry-run` runs only these): follow running and caught up, a
//! recent clean verify, the engine able to write a read-only target, the application's
//! accounts present on the target with the same grants (the missing ones as exact SQL), the
//! source sessions that could write through `read_only`, and a predicted write downtime from a
//! timed dry run of the freeze's statements and the follower's pause handshake.

use crate::db::{self, grants, quote};
use crate::error::Result;
use crate::replication::control;
use crate::state::Store;
use mysql_async::Conn;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize, Clone)]
pub struct Finding {
    /// Blocks the cutover (else a risk worth reading).
    pub blocker: bool,
    pub what: String,
    pub fix: String,
}

#[derive(Debug, Serialize, Default)]
pub struct Plan {
    pub findings: Vec<Finding>,
    /// Statements that create the application's missing accounts and grants on the target
    /// (password hashes shown as `<hash>`; `--copy-users` runs the real ones).
    pub missing_accounts_sql: Vec<String>,
    #[serde(skip)]
    pub missing_accounts_exec: Vec<String>,
    pub lag_seconds: Option<f64>,
    pub predicted_downtime_seconds: f64,
    /// What the prediction is made of.
    pub prediction: Vec<(String, f64)>,
}

impl Plan {
    pub fn ready(&self) -> bool {
        !self.findings.iter().any(|f| f.blocker)
    }
    fn block(&mut self, what: String, fix: &str) {
        self.findings.push(Finding {
            blocker: true,
            what,
            fix: fix.into(),
        });
    }
    fn risk(&mut self, what: String, fix: &str) {
        self.findings.push(Finding {
            blocker: false,
            what,
            fix: fix.into(),
        });
    }
}

pub struct Limits {
    /// `--target-replica`: each must be replicating from the target.
    pub target_replicas: Vec<crate::config::Endpoint>,
    pub max_lag: f64,
    pub verify_max_age: Duration,
    pub verify_check: bool,
}

/// Whether a `follow` of this state file runs now (another process).
pub fn follow_running(store: &Store) -> Result<bool> {
    Ok(store
        .runs()?
        .iter()
        .any(|r| r.verb == "follow" && r.outcome == crate::state::Outcome::Running && !r.died()))
}

pub async fn check(
    store: &Store,
    src: &mut Conn,
    tgt: &mut Conn,
    dbs: &[String],
    limits: &Limits,
) -> Result<Plan> {
    let mut plan = Plan::default();
    // follow, caught up
    if !follow_running(store)? {
        plan.block(
            "follow is not running".into(),
            "start `migrate follow` (same --state) and let it catch up",
        );
    }
    let status = store.follow_status()?.unwrap_or_default();
    plan.lag_seconds = status.lag_seconds;
    let silent = crate::state::unix_now() - status.updated_at.parse::<f64>().unwrap_or(0.0);
    if follow_running(store)? && silent > 10.0 {
        plan.block(
            format!("follow has not reported for {silent:.0} s (stalled?)"),
            "look at follow's log; restart it if it is stuck",
        );
    }
    match status.lag_seconds {
        Some(l) if l <= limits.max_lag => {}
        Some(l) => plan.block(
            format!(
                "follow lag is {l:.1} s, above --max-lag {:.1} s",
                limits.max_lag
            ),
            "wait until follow has caught up (migrate status), or a quieter moment",
        ),
        None => plan.block(
            "follow has not reported its lag yet".into(),
            "wait until `migrate status` shows follow's lag",
        ),
    }
    // a recent clean verify
    if limits.verify_check {
        let last: Option<serde_json::Value> = store
            .get("verify.last_full")?
            .and_then(|v| serde_json::from_str(&v).ok());
        match last {
            None => plan.block(
                "no verify of every table has run".into(),
                "run `migrate verify` while follow runs (or pass --no-verify-check to accept the risk)",
            ),
            Some(v) if v["identical"] != true => plan.block(
                "the last verify found differences".into(),
                "run `migrate verify --repair`, then `migrate verify` until it passes",
            ),
            Some(v) => {
                let at = v["at"].as_str().unwrap_or("");
                let age = v["at_unix"]
                    .as_f64()
                    .map(|t| crate::state::unix_now() - t)
                    .unwrap_or(f64::MAX);
                if age > limits.verify_max_age.as_secs_f64() {
                    plan.block(
                        format!("the last clean verify is from {at}, older than --verify-max-age"),
                        "run `migrate verify` again",
                    );
                }
                // keys changed since are proved at cutover; a DDL cannot be proved by keys
                let from = v["touched_from"].as_i64().unwrap_or(i64::MAX);
                if store.touched_ddl_seq()? > from {
                    plan.block(
                        "a DDL was applied on the target since the last verify (its effect cannot be proved by the keys changed since)".into(),
                        "run `migrate verify` again (or `migrate cutover --verify`)",
                    );
                }
            }
        }
    }
    // the target's own replicas, waited for at the switch
    for r in &limits.target_replicas {
        match super::replica::connect(r).await {
            Err(e) => plan.block(
                format!("--target-replica {}: cannot connect: {e}", r.address()),
                "check the URL and MIGRATE_TARGET_REPLICA_PASSWORD",
            ),
            Ok(mut conn) => {
                if let Some(why) = super::replica::not_replicating(&mut conn).await? {
                    plan.block(
                        format!("--target-replica {}: {why}", r.address()),
                        "START SLAVE on it (replicating from the target) and fix what it reports",
                    );
                }
            }
        }
    }
    // the engine writes a read-only target (READ ONLY ADMIN); the target's read_only
    let (_, _, engine_grants) = crate::db::preflight::account_grants(tgt).await?;
    if !grants::writes_through_read_only(&engine_grants) {
        plan.block(
            "the target account lacks READ ONLY ADMIN: it could not apply the last transactions once the target is read-only".into(),
            "GRANT READ_ONLY ADMIN ON *.* TO the engine's target account",
        );
    }
    let ro = db::query_one(tgt, "SELECT @@global.read_only").await?;
    if ro.as_deref() == Some("0") {
        plan.risk(
            "the target is writable (read_only=OFF): an application pointed at it by mistake writes before the switch".into(),
            "SET GLOBAL read_only=ON on the target (cutover sets it at the freeze and clears it at the switch)",
        );
    }
    if db::query_one(tgt, "SELECT @@global.log_bin")
        .await?
        .as_deref()
        != Some("1")
    {
        plan.risk(
            "the target has no binary log: its own replicas and a way back need one".into(),
            "start the target with log_bin=ON",
        );
    }
    // the application's accounts
    accounts(src, tgt, &mut plan).await?;
    // sessions that can write through read_only on the source
    let rows = db::query_strings(
        src,
        "SELECT p.ID, p.USER, p.HOST FROM information_schema.PROCESSLIST p \
         WHERE p.ID <> CONNECTION_ID() AND p.USER NOT IN ('system user', 'event_scheduler') AND p.COMMAND NOT IN ('Binlog Dump', 'Daemon')",
    )
    .await?;
    let mut risky = Vec::new();
    for r in rows {
        let (Some(id), Some(user)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten())
        else {
            continue;
        };
        let host = r.get(2).cloned().flatten().unwrap_or_default();
        let host = host
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or(host);
        let lines: Vec<String> = db::query_strings(
            src,
            &format!(
                "SHOW GRANTS FOR {}@{}",
                quote::string(&user),
                quote::string("%")
            ),
        )
        .await
        .or_else(|_| Ok::<_, crate::error::Error>(Vec::new()))?
        .into_iter()
        .chain(
            db::query_strings(
                src,
                &format!(
                    "SHOW GRANTS FOR {}@{}",
                    quote::string(&user),
                    quote::string(&host)
                ),
            )
            .await
            .unwrap_or_default(),
        )
        .chain(
            db::query_strings(
                src,
                &format!("SHOW GRANTS FOR {}@'localhost'", quote::string(&user)),
            )
            .await
            .unwrap_or_default(),
        )
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
        let g = grants::parse(&lines);
        if grants::writes_through_read_only(&g) {
            risky.push(format!("{user}@{host} (connection {id})"));
        }
    }
    if !risky.is_empty() {
        plan.risk(
            format!(
                "connected to the source with READ ONLY ADMIN (can write through the freeze): {}",
                risky.join(", ")
            ),
            "make sure these are not the application (the engine's own follow connections are listed too when it uses such an account); a write from them after the freeze would not reach the target",
        );
    }
    let _ = dbs;
    // the prediction: a dry run of the freeze's statements on both servers and the follower's
    // pause handshake, plus the backlog
    let t = Instant::now();
    db::run(src, "SET GLOBAL read_only = @@global.read_only").await?;
    db::query_strings(src, "SELECT @@global.gtid_binlog_pos").await?;
    db::query_strings(
        src,
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_rows_modified > 0",
    )
    .await?;
    let freeze = t.elapsed().as_secs_f64();
    let t = Instant::now();
    db::run(tgt, "SET GLOBAL read_only = @@global.read_only").await?;
    let open = t.elapsed().as_secs_f64();
    let handshake = if follow_running(store)? {
        let t = Instant::now();
        let r = control::pause(store, None, Duration::from_secs(10)).await;
        control::release(store)?;
        r?;
        t.elapsed().as_secs_f64()
    } else {
        0.0
    };
    let backlog = plan.lag_seconds.unwrap_or(0.0);
    plan.prediction = vec![
        ("freeze and drain (dry run)".into(), freeze),
        ("follower pause handshake (dry run)".into(), handshake),
        ("backlog to apply (follow's lag)".into(), backlog),
        ("prepare and open the target (dry run)".into(), open * 4.0),
    ];
    plan.predicted_downtime_seconds = plan.prediction.iter().map(|(_, s)| s).sum();
    Ok(plan)
}

/// Accounts on the source (other than system ones and the engine's own) that are missing on
/// the target or have other grants there.
async fn accounts(src: &mut Conn, tgt: &mut Conn, plan: &mut Plan) -> Result<()> {
    let me = db::query_one(src, "SELECT CURRENT_USER()")
        .await?
        .unwrap_or_default();
    let users = match db::query_strings(
        src,
        "SELECT User, Host FROM mysql.user WHERE User NOT IN ('', 'root', 'mariadb.sys', 'mysql', 'PUBLIC') AND is_role = 'N'",
    )
    .await
    {
        Ok(u) => u,
        Err(e) => {
            plan.risk(
                format!("cannot list the source's accounts: {e}"),
                "grant SELECT ON mysql.user to the engine's source account, or compare accounts yourself",
            );
            return Ok(());
        }
    };
    for r in users {
        let (Some(u), Some(h)) = (r.first().cloned().flatten(), r.get(1).cloned().flatten()) else {
            continue;
        };
        if format!("{u}@{h}") == me {
            continue;
        }
        let account = format!("{}@{}", quote::string(&u), quote::string(&h));
        let grants_of = |rows: Vec<Vec<Option<String>>>| -> Vec<String> {
            let mut v: Vec<String> = rows
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .collect();
            v.sort();
            v
        };
        let on_src =
            grants_of(db::query_strings(src, &format!("SHOW GRANTS FOR {account}")).await?);
        let on_tgt = match db::query_strings(tgt, &format!("SHOW GRANTS FOR {account}")).await {
            Ok(rows) => Some(grants_of(rows)),
            Err(e) if e.code() == Some(1141) => None,
            Err(e) => return Err(e.context("target")),
        };
        if on_tgt.as_ref() == Some(&on_src) {
            continue;
        }
        if on_tgt.is_none() {
            let create = db::query_one(src, &format!("SHOW CREATE USER {account}"))
                .await?
                .unwrap_or_default();
            plan.missing_accounts_exec.push(create.clone());
            plan.missing_accounts_sql.push(redact(&create));
        }
        for g in &on_src {
            if on_tgt.as_ref().is_some_and(|t| t.contains(g)) {
                continue;
            }
            plan.missing_accounts_exec.push(g.clone());
            plan.missing_accounts_sql.push(redact(g));
        }
        plan.block(
            format!(
                "account {u}@{h} is {} on the target",
                if on_tgt.is_none() {
                    "missing"
                } else {
                    "granted differently"
                }
            ),
            "run the listed statements on the target, or pass --copy-users",
        );
    }
    Ok(())
}

/// A statement with its password hash replaced (for printing).
/// `sql` with every credential replaced by `<hash>`: the quoted string after `PASSWORD`
/// (mysql_native_password) or `USING` (an authentication plugin's string, e.g. ed25519's),
/// however many authentication methods the account has.
fn redact(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    loop {
        let next = ["PASSWORD '", "USING '"]
            .iter()
            .filter_map(|k| rest.find(k).map(|i| (i, k.len())))
            .min();
        let Some((i, k)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + k]);
        out.push_str("<hash>'");
        let quoted = &rest[i + k..];
        // a quote inside the string is doubled or escaped; hashes have neither
        rest = match quoted.find('\'') {
            Some(end) => &quoted[end + 1..],
            None => "",
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn password_hashes_are_not_printed() {
        assert_eq!(
            super::redact("GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*ABC'"),
            "GRANT USAGE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '<hash>'"
        );
        assert_eq!(
            super::redact("GRANT SELECT ON x.* TO a"),
            "GRANT SELECT ON x.* TO a"
        );
        assert_eq!(
            super::redact("CREATE USER `b`@`%` IDENTIFIED VIA ed25519 USING 'qk1Zl' OR mysql_native_password USING '*E56A'"),
            "CREATE USER `b`@`%` IDENTIFIED VIA ed25519 USING '<hash>' OR mysql_native_password USING '<hash>'"
        );
        assert_eq!(
            super::redact("CREATE USER `c`@`%` IDENTIFIED BY PASSWORD '*12' PASSWORD EXPIRE NEVER"),
            "CREATE USER `c`@`%` IDENTIFIED BY PASSWORD '<hash>' PASSWORD EXPIRE NEVER"
        );
    }
}
