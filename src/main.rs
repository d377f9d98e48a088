//! `migrate`: parse, set up logging, dispatch. Exit codes: 0 ok, 1 problem found, 2 error/usage.

mod apply;
mod binlog;
mod cli;
mod cli_config;
mod commands;
mod config;
mod cutover;
mod db;
mod error;
mod obs;
mod position;
mod replication;
mod schema;
mod snapshot;
mod sql;
mod state;
mod value;
mod verify;

use clap::Parser;

/// glibc malloc spent half of the snapshot's client CPU in contention between the reader and
/// writer threads (perf, docs/design.md); mimalloc removes most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = match cli_config::args_with_config() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    obs::init_logging(cli.global.log_format.as_deref().unwrap_or("text"));
    // One thread: the work is waiting on two servers; the client's own CPU (decode, encode)
    // is small, and on a 2-core bastion a second runtime thread only adds wake-ups that compete
    // with the servers (snapshot bench: 2.58 s single vs 2.70 s multi-thread; follow: equal, also
    // through the simulated VPN: 2.64 s with two threads vs 2.53 s with one).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(async {
        let ctx = commands::Context::from_global(&cli.global)?;
        // only the long-running verbs serve metrics (an address in the environment must not
        // make `status` or `check` fail on a port follow already holds)
        let long_running = match &cli.verb {
            cli::Verb::Snapshot(_) => Some("snapshot"),
            cli::Verb::Follow(_) => Some("follow"),
            cli::Verb::Verify(_) => Some("verify"),
            cli::Verb::Cutover(_) => Some("cutover"),
            _ => None,
        };
        if let Some(url) = &cli.global.notify_url {
            // `status` is polled: it never notifies
            if !matches!(cli.verb, cli::Verb::Status(_)) {
                obs::notify::init(url, verb_name(&cli.verb))?;
            }
        }
        if let (Some(verb), Some(addr)) = (long_running, &cli.global.metrics_addr) {
            obs::metrics::init_verb(verb);
            match obs::metrics::serve(addr, verb, cli.global.ready_max_lag).await {
                // verify often runs beside a follow that already serves this address
                Err(e) if verb == "verify" || verb == "cutover" => {
                    tracing::warn!("metrics not served: {e}")
                }
                r => r?,
            }
        }
        match &cli.verb {
            cli::Verb::Check(a) => commands::check::run(&ctx, a).await,
            cli::Verb::Snapshot(a) => {
                commands::tracked(&ctx, "snapshot", false, commands::snapshot::run(&ctx, a)).await
            }
            cli::Verb::Follow(a) if a.reverse => {
                let rctx = commands::Context {
                    source: ctx.target.clone(),
                    target: ctx.source.clone(),
                    filter: ctx.filter.clone(),
                    state_path: cutover::reverse::state_path(&ctx.state_path),
                    global: ctx.global.clone(),
                };
                if !rctx.state_path.exists() {
                    Err(error::Error::usage(
                        format!(
                            "follow --reverse: {} does not exist",
                            rctx.state_path.display()
                        ),
                        "the way back is prepared by `migrate cutover` at the switch",
                    ))
                } else {
                    commands::tracked(&rctx, "follow", true, commands::follow::run(&rctx, a)).await
                }
            }
            cli::Verb::Follow(a) => {
                commands::tracked(&ctx, "follow", true, commands::follow::run(&ctx, a)).await
            }
            cli::Verb::Verify(a) => commands::verify::entry(&ctx, a).await,
            cli::Verb::Cutover(a) => commands::cutover::run(&ctx, a).await,
            cli::Verb::Status(a) => commands::status::run(&ctx, a).await,
        }
    });
    if let Err(e) = &code {
        obs::notify::send(
            "error",
            &format!("failed: {e}"),
            serde_json::json!({ "error": e.what, "fix": e.hint }),
        );
    }
    runtime.block_on(obs::notify::flush(std::time::Duration::from_secs(5)));
    let code = match code {
        Ok(c) => c,
        Err(e) => {
            // once: a JSON log line for machines, else one plain line
            if obs::json() {
                tracing::error!(error = %e.what, fix = e.hint.as_deref().unwrap_or(""), "{e}");
            } else {
                eprintln!("error: {e}");
            }
            2
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

fn verb_name(v: &cli::Verb) -> &'static str {
    match v {
        cli::Verb::Check(_) => "check",
        cli::Verb::Snapshot(_) => "snapshot",
        cli::Verb::Follow(a) if a.reverse => "follow --reverse",
        cli::Verb::Follow(_) => "follow",
        cli::Verb::Verify(_) => "verify",
        cli::Verb::Cutover(_) => "cutover",
        cli::Verb::Status(_) => "status",
    }
}
