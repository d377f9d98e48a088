//! One orchestration function per verb. No SQL here: it lives in db/, schema/, snapshot/,
//! binlog/ and apply/.

pub mod check;
pub mod cutover;
pub mod follow;
pub mod snapshot;
pub mod status;
pub mod verify;

use crate::cli::Global;
use crate::config::{Endpoint, Filter};
use crate::error::{Error, Result};
use crate::state::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// What every verb needs: the endpoints, the filter and the state store.
#[derive(Clone)]
pub struct Context {
    pub source: Option<Endpoint>,
    pub target: Option<Endpoint>,
    pub filter: Filter,
    pub state_path: PathBuf,
    /// The global options as given (a verb that starts another migrate passes them on).
    pub global: Global,
}

/// Run a verb that changes something (`snapshot`, `follow`): the state file is locked for it
/// (a second one on the same state file is refused with the first one's pid), and how it ends
/// is recorded (ok, interrupted, failed with its error; a run still marked running whose process
/// is gone was killed). `graceful`: the verb handles SIGINT/SIGTERM itself (follow); otherwise
/// a signal records the interruption and exits 130.
pub async fn tracked<F>(ctx: &Context, verb: &'static str, graceful: bool, work: F) -> Result<i32>
where
    F: std::future::Future<Output = Result<i32>>,
{
    let _lock = crate::state::lock(&ctx.state_path)?;
    let store = ctx.store()?;
    store.start_run(verb)?;
    if !graceful {
        let store = store.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let _ = store.end_run(verb, crate::state::Outcome::Interrupted, None);
            tracing::warn!("{verb} interrupted; run it again with the same --state to resume");
            std::process::exit(130);
        });
    }
    let result = work.await;
    match &result {
        Ok(130) => store.end_run(verb, crate::state::Outcome::Interrupted, None)?,
        Ok(_) => store.end_run(verb, crate::state::Outcome::Ok, None)?,
        Err(e) => store.end_run(verb, crate::state::Outcome::Failed, Some(&e.to_string()))?,
    }
    result
}

/// A password written in a URL given on the command line is visible to every user of the
/// bastion (`ps`): say so once.
fn warn_if_password_in_argv(role: &str, url: &str, ep: &Endpoint) {
    if ep.password.is_some() && std::env::args().any(|a| a.contains(url)) {
        tracing::warn!(
            "the --{role} URL on the command line holds a password, visible in `ps`: use MIGRATE_{}_PASSWORD or --{role}-password-file",
            role.to_uppercase()
        );
    }
}

impl Context {
    pub fn from_global(g: &Global) -> Result<Context> {
        let source = match &g.source {
            Some(u) => {
                let mut e = Endpoint::parse("source", u)?;
                warn_if_password_in_argv("source", u, &e);
                e.resolve_password(
                    std::env::var("MIGRATE_SOURCE_PASSWORD").ok(),
                    g.source_password_file.as_ref(),
                )?;
                Some(e)
            }
            None => None,
        };
        let target = match &g.target {
            Some(u) => {
                let mut e = Endpoint::parse("target", u)?;
                warn_if_password_in_argv("target", u, &e);
                e.resolve_password(
                    std::env::var("MIGRATE_TARGET_PASSWORD").ok(),
                    g.target_password_file.as_ref(),
                )?;
                Some(e)
            }
            None => None,
        };
        let databases: Vec<String> = g
            .databases
            .iter()
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect();
        Ok(Context {
            source,
            target,
            filter: Filter::new(&databases, &g.exclude)?,
            state_path: g
                .state
                .clone()
                .unwrap_or_else(|| PathBuf::from("migrate-state.sqlite")),
            global: g.clone(),
        })
    }
    pub fn source(&self) -> Result<&Endpoint> {
        self.source.as_ref().ok_or_else(|| {
            Error::usage(
                "no source given",
                "pass --source mysql://user@host:port or set MIGRATE_SOURCE",
            )
        })
    }
    pub fn target(&self) -> Result<&Endpoint> {
        self.target.as_ref().ok_or_else(|| {
            Error::usage(
                "no target given",
                "pass --target mysql://user@host:port or set MIGRATE_TARGET",
            )
        })
    }
    pub fn store(&self) -> Result<Arc<Store>> {
        Ok(Arc::new(Store::open(&self.state_path)?))
    }
}
