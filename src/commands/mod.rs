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
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// What every verb needs: the endpoints, the filter and the state store.
pub struct Context {
    pub source: Option<Endpoint>,
    pub target: Option<Endpoint>,
    pub filter: Filter,
    pub state_path: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    source: Option<String>,
    target: Option<String>,
    state: Option<PathBuf>,
    databases: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    log_format: Option<String>,
    metrics_addr: Option<String>,
    source_password_file: Option<PathBuf>,
    target_password_file: Option<PathBuf>,
}

/// Fill options not given on the command line or in the environment from --config.
pub fn merge_config(g: &mut Global) -> Result<()> {
    let Some(path) = g.config.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::usage(
            format!("--config {}: {e}", path.display()),
            "give a readable TOML file",
        )
    })?;
    let c: ConfigFile = toml::from_str(&text).map_err(|e| {
        Error::usage(
            format!("--config {}: {}", path.display(), e.message()),
            "fix the TOML (keys as in --help)",
        )
    })?;
    g.source = g.source.take().or(c.source);
    g.target = g.target.take().or(c.target);
    g.state = g.state.take().or(c.state);
    if g.databases.is_empty() {
        g.databases = c.databases.unwrap_or_default();
    }
    if g.exclude.is_empty() {
        g.exclude = c.exclude.unwrap_or_default();
    }
    g.log_format = g.log_format.take().or(c.log_format);
    g.metrics_addr = g.metrics_addr.take().or(c.metrics_addr);
    g.source_password_file = g.source_password_file.take().or(c.source_password_file);
    g.target_password_file = g.target_password_file.take().or(c.target_password_file);
    Ok(())
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
