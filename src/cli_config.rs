//! `--config FILE`: a TOML file with any option of the command line. Top-level keys are the
//! global options (`source = "mysql://..."`, `databases = ["shop"]`), tables `[snapshot]`, `[verify]`, `[cutover]`,
//! `[follow]`, `[check]`, `[status]` hold each verb's options (`threads = 4`). Keys are the long
//! option names with `_` or `-`. Precedence: command line, then environment, then the file,
//! then defaults: the file's values are turned into arguments placed before the command line's
//! (which override them, `args_override_self`), and skipped when the option's environment
//! variable is set.

use crate::error::{Error, Result};
use clap::CommandFactory;
use std::ffi::OsString;
use std::path::PathBuf;

/// The `--config` path from the arguments or `MIGRATE_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("MIGRATE_CONFIG").map(PathBuf::from)
}

fn value_args(flag: &str, v: &toml::Value, out: &mut Vec<OsString>, path: &str) -> Result<()> {
    let bad = || {
        Error::usage(
            format!(
                "--config {path}: `{}` has a value of the wrong kind",
                flag.trim_start_matches('-')
            ),
            "use a string, a number, true/false, or a list of strings",
        )
    };
    match v {
        toml::Value::Boolean(true) => out.push(flag.into()),
        toml::Value::Boolean(false) => {}
        toml::Value::String(s) => {
            out.push(flag.into());
            out.push(s.into());
        }
        toml::Value::Integer(i) => {
            out.push(flag.into());
            out.push(i.to_string().into());
        }
        toml::Value::Float(f) => {
            out.push(flag.into());
            out.push(f.to_string().into());
        }
        toml::Value::Array(items) => {
            for item in items {
                value_args(flag, item, out, path)?;
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}

/// Arguments for the options of `table` that `cmd` knows; an unknown key is an error naming it.
fn table_args(
    cmd: &clap::Command,
    table: &toml::Table,
    section: &str,
    path: &str,
    out: &mut Vec<OsString>,
) -> Result<()> {
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config" && long != "help")
        else {
            return Err(Error::usage(
                format!("--config {path}: unknown key `{key}`{section}"),
                "use the long option names of `migrate --help` and `migrate VERB --help` (verb options in [snapshot], [follow], [verify], [cutover], [check], [status])",
            ));
        };
        if arg.get_env().is_some_and(|e| std::env::var_os(e).is_some()) {
            continue; // the environment wins over the file
        }
        match (&value, arg.get_value_delimiter()) {
            // a comma-separated option takes the whole list at once
            (toml::Value::Array(items), Some(d)) => {
                let parts: Vec<String> = items
                    .iter()
                    .map(|v| match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                out.push(format!("--{long}").into());
                out.push(parts.join(&d.to_string()).into());
            }
            _ => value_args(&format!("--{long}"), value, out, path)?,
        }
    }
    Ok(())
}

/// The process arguments with the config file's options inserted (none without `--config`).
pub fn args_with_config() -> Result<Vec<OsString>> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::usage(
            format!("--config {shown}: {e}"),
            "give a readable TOML file",
        )
    })?;
    let doc: toml::Table = toml::from_str(&text).map_err(|e| {
        Error::usage(
            format!("--config {shown}: {}", e.message()),
            "fix the TOML (keys as in --help)",
        )
    })?;
    let cmd = crate::cli::Cli::command();
    let verbs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    // where the verb is in the arguments (the first argument naming one)
    let verb_at = args
        .iter()
        .position(|a| verbs.iter().any(|v| a.to_string_lossy() == *v));
    let mut global = Vec::new();
    let mut verb_args = Vec::new();
    let mut top = toml::Table::new();
    for (key, value) in doc {
        match value {
            toml::Value::Table(t) if verbs.contains(&key) => {
                let verb = verb_at.map(|i| args[i].to_string_lossy().into_owned());
                if verb.as_deref() == Some(key.as_str()) {
                    if let Some(sub) = cmd.find_subcommand(&key) {
                        table_args(sub, &t, &format!(" in [{key}]"), &shown, &mut verb_args)?;
                    }
                } else if let Some(sub) = cmd.find_subcommand(&key) {
                    // validated even when another verb runs
                    table_args(sub, &t, &format!(" in [{key}]"), &shown, &mut Vec::new())?;
                }
            }
            other => {
                top.insert(key, other);
            }
        }
    }
    table_args(&cmd, &top, "", &shown, &mut global)?;
    let mut out = vec![args[0].clone()];
    out.extend(global);
    match verb_at {
        Some(i) => {
            out.extend(args[1..=i].iter().cloned());
            out.extend(verb_args);
            out.extend(args[i + 1..].iter().cloned());
        }
        None => out.extend(args[1..].iter().cloned()),
    }
    Ok(out)
}
