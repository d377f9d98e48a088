//! One orchestration function per verb. No SQL here: it lives in db/, schema/, snapshot/,
//! binlog/ and apply/.

pub mod check;
pub mod follow;
pub mod snapshot;
pub mod status;

use crate::cli::Global;
use crate::config::{Endpoint, Filter};
use crate::error::{Error, Result};
use crate::state::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// What every verb needs: the endpoints, the filter and the state store.
pub struct Context {
    pub source: Option<Endpoint>,
    pub target: Option<Endpoint>,
    pub filter: Filter,
    pub state_path: PathBuf,
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
