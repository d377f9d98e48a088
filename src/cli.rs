//! Command-line interface. Every global option can also come from an environment variable
//! or from `--config FILE` (TOML with the same keys, e.g. `source = "mysql://..."`).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "migrate",
    version,
    about = "Online migration of a live MariaDB to another MariaDB: preflight, consistent snapshot, binlog follow",
    long_about = "Online migration of a live MariaDB to another MariaDB.\n\n\
Typical run: `migrate check`, fix what it names, `migrate snapshot`, then `migrate follow` (left running), \
`migrate status` from another shell.\n\
Passwords: put them in MIGRATE_SOURCE_PASSWORD / MIGRATE_TARGET_PASSWORD or in a file \
(--source-password-file), never on the command line.\n\
Every option can also come from --config FILE (TOML: global options at the top, a verb's options \
in [snapshot], [follow], [check], [status]; see docs/migrate.example.toml); the command line wins, \
then the environment, then the file.\n\n\
Exit codes: 0 success, 1 the verb found a problem (check found a blocker), 2 error or usage.",
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Global options (any verb; also from the environment or --config)")]
pub struct Global {
    /// Source server: mysql://user@host[:port][?ssl-mode=verify-ca&ssl-ca=PATH]. URL options:
    /// ssl-mode=disabled|preferred|required|verify-ca|verify-identity, ssl-ca=PATH,
    /// compress=true|false|fast|best|1-9, stall-timeout=SECONDS (30: a read silent that long
    /// is checked on the server from a new connection and, if the link stalled, read again)
    #[arg(long, env = "MIGRATE_SOURCE", global = true, hide_env_values = true)]
    pub source: Option<String>,
    /// Target server, same form as --source
    #[arg(long, env = "MIGRATE_TARGET", global = true, hide_env_values = true)]
    pub target: Option<String>,
    /// File holding the source password (first line)
    #[arg(long, env = "MIGRATE_SOURCE_PASSWORD_FILE", global = true)]
    pub source_password_file: Option<PathBuf>,
    /// File holding the target password (first line)
    #[arg(long, env = "MIGRATE_TARGET_PASSWORD_FILE", global = true)]
    pub target_password_file: Option<PathBuf>,
    /// State file (SQLite) that records progress so any verb can resume [default: ./migrate-state.sqlite]
    #[arg(long, env = "MIGRATE_STATE", global = true)]
    pub state: Option<PathBuf>,
    /// Databases to migrate, comma-separated [default: every non-system database]
    #[arg(long, env = "MIGRATE_DATABASES", global = true, value_delimiter = ',')]
    pub databases: Vec<String>,
    /// Leave out tables and views matching this glob on `db.name` (repeatable), e.g. 'shop.tmp_*'
    #[arg(long, global = true)]
    pub exclude: Vec<String>,
    /// TOML file with any option: global ones at the top (source, target, state, databases,
    /// exclude, log_format, metrics_addr, ready_max_lag, source_password_file,
    /// target_password_file), a verb's in its table ([snapshot] threads = 4). Command line and
    /// environment win over it
    #[arg(long, env = "MIGRATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format: text or json
    #[arg(long, env = "MIGRATE_LOG_FORMAT", global = true, value_parser = ["text", "json"])]
    pub log_format: Option<String>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9187 (snapshot and follow)
    #[arg(long, env = "MIGRATE_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<String>,
    /// With --metrics-addr: `GET /readyz` answers 200 while follow's lag is under this many
    /// seconds, 503 with the reason otherwise (`/healthz`: 200 while connected)
    #[arg(
        long,
        env = "MIGRATE_READY_MAX_LAG",
        global = true,
        default_value_t = 10.0,
        value_name = "SECONDS"
    )]
    pub ready_max_lag: f64,
    /// Read the snapshot from this replica of the source (GTID replica with
    /// log_slave_updates, e.g. a staging replica): the source then only serves the binlog to
    /// follow. Password from MIGRATE_SNAPSHOT_SOURCE_PASSWORD, else the source's. `check`
    /// verifies the replica
    #[arg(
        long,
        env = "MIGRATE_SNAPSHOT_SOURCE",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub snapshot_source: Option<String>,
    /// With --snapshot-source: most replica lag (seconds) at which the snapshot starts
    #[arg(
        long,
        env = "MIGRATE_MAX_REPLICA_LAG",
        global = true,
        default_value_t = 60
    )]
    pub max_replica_lag: u64,
    /// Slack-compatible incoming webhook (http:// or https://): phase changes, cutover steps,
    /// verify verdicts, results and errors are POSTed to it as {"text": ...}
    #[arg(
        long,
        env = "MIGRATE_NOTIFY_URL",
        global = true,
        hide_env_values = true
    )]
    pub notify_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Preflight both servers: settings, grants, keys, sizes. Exit 1 if a blocker is found.
    Check(CheckArgs),
    /// Copy schema and rows consistently, without locks or long transactions on the source.
    Snapshot(SnapshotArgs),
    /// Stream the source binlog and apply it to the target until stopped.
    Follow(FollowArgs),
    /// Compare source and target at one GTID per round, name differing rows, --repair them.
    /// Exit 0 identical, 1 differences. Runs with follow stopped (it replays to each round's
    /// GTID itself).
    Verify(VerifyArgs),
    /// Switch the application to the target: preflight (--dry-run stops there), freeze the
    /// source, drain, apply the last transactions, prepare and open the target. Journaled:
    /// --resume or --rollback after a crash.
    Cutover(CutoverArgs),
    /// Show progress from the state file (works while another verb runs).
    Status(StatusArgs),
}

#[derive(Args, Debug)]
pub struct CutoverArgs {
    /// Only check readiness: print the findings, the missing accounts as SQL and the predicted
    /// write downtime. Exit 0 ready, 1 not
    #[arg(long)]
    pub dry_run: bool,
    /// Most follow lag (seconds) at which to start
    #[arg(long, default_value_t = 1.0)]
    pub max_lag: f64,
    /// Oldest a clean verify may be (hours)
    #[arg(long, default_value_t = 24.0)]
    pub verify_max_age_hours: f64,
    /// Start without a recent clean verify (the risk is yours)
    #[arg(long)]
    pub no_verify_check: bool,
    /// Run a full verify first (follow keeps running; it is paused at each round's GTID), and
    /// cut over only if it finds the copies identical
    #[arg(long, conflicts_with = "no_verify_check")]
    pub verify: bool,
    /// Seconds to wait for write transactions open on the source once it is read-only
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Kill the source connections whose write transactions are still open after
    /// --drain-timeout (they roll back) instead of aborting
    #[arg(long)]
    pub kill_writers: bool,
    /// Abort (source writable again) if the source has been frozen this many seconds before
    /// the switch
    #[arg(long, default_value_t = 5.0)]
    pub max_downtime: f64,
    /// Shell command that points the application at the target (kubectl patch, ProxySQL,
    /// DNS). Runs with MIGRATE_FINAL_GTID, MIGRATE_TARGET_HOST, MIGRATE_TARGET_PORT,
    /// MIGRATE_FREEZE_SECONDS, MIGRATE_CUTOVER_ID set; must exit 0 once it has; must be safe
    /// to run twice (--resume may)
    #[arg(long)]
    pub switch_command: Option<String>,
    /// Create the application's accounts (and grants) missing on the target, copied from the
    /// source (password hashes included)
    #[arg(long)]
    pub copy_users: bool,
    /// Do not prepare the way back. By default, when the target's binlog is ROW with full
    /// images and the engine's source account has READ ONLY ADMIN, the switch sets up reverse
    /// replication (target -> source, `migrate follow --reverse`; see --reverse-follow)
    #[arg(long)]
    pub no_reverse: bool,
    /// The target's own read replica (a native MariaDB replica of the target), URL as
    /// --target (password from MIGRATE_TARGET_REPLICA_PASSWORD, else the target's): the
    /// cutover waits, within --max-downtime, until it has applied everything the target has
    /// before opening the target (repeatable)
    #[arg(long, value_name = "URL")]
    pub target_replica: Vec<String>,
    /// How the reverse follow runs after the switch: `spawn` starts `migrate follow --reverse`
    /// in the background on this host (log next to the state file, `<state>.reverse.log`);
    /// `manual` leaves it to you (e.g. a Deployment in Kubernetes, where a process started by
    /// the cutover Job would end with its pod)
    #[arg(long, default_value = "spawn", value_parser = ["spawn", "manual"])]
    pub reverse_follow: String,
    /// With --rollback after the switch: shell command that points the application back at the
    /// source (MIGRATE_SOURCE_HOST, MIGRATE_SOURCE_PORT set); must exit 0 once it has
    #[arg(long)]
    pub rollback_command: Option<String>,
    /// Continue a cutover that was interrupted (crash, kill) from its last journaled step
    #[arg(long, conflicts_with_all = ["rollback", "complete", "dry_run"])]
    pub resume: bool,
    /// Before the switch: undo an interrupted cutover (the target as it was, the source
    /// writable, follow resumed). After it: send the application back to the source (the
    /// target frozen and drained, the reverse follow caught up and stopped, --rollback-command,
    /// the source opened)
    #[arg(long, conflicts_with_all = ["complete", "dry_run"])]
    pub rollback: bool,
    /// After a switch: remove the engine's row from the target's _migrate database
    #[arg(long, conflicts_with = "dry_run")]
    pub complete: bool,
    /// Write the report as JSON (downtime_seconds, each step's duration, final GTID)
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Only these tables (db.table, comma separated); default every table the snapshot copied
    #[arg(long, value_delimiter = ',')]
    pub tables: Vec<String>,
    /// Rows in each table's first chunk (each server digests a chunk in one query); later
    /// chunks grow or shrink so that a chunk takes --chunk-time
    #[arg(long, default_value_t = 10_000)]
    pub chunk_rows: u64,
    /// Seconds a chunk's digest should take on the servers (as pt-table-checksum's
    /// --chunk-time)
    #[arg(long, default_value_t = 0.5)]
    pub chunk_time: f64,
    /// Chunks compared per pair of consistent snapshots (bounds how long the source's read
    /// view stays open: about this many times --chunk-time)
    #[arg(long, default_value_t = 20)]
    pub round_chunks: usize,
    /// Wait before each chunk while the source's Threads_running exceeds this
    #[arg(long)]
    pub max_source_load: Option<u64>,
    /// Tables compared at the same time (each uses one source and one target connection and
    /// its own pair of snapshots; each server runs this many digest queries at once)
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Rewrite the differing rows on the target from the source at the compared GTID, then
    /// re-check them (never writes to the source)
    #[arg(long)]
    pub repair: bool,
    /// Write the result as JSON (each differing row: database, table, key, kind, columns)
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Most differing rows listed (on the terminal and in --report); all are counted
    #[arg(long, default_value_t = 1000)]
    pub max_report_rows: usize,
    /// Start over instead of continuing a verify that was interrupted (by default the tables
    /// it already compared keep their result)
    #[arg(long)]
    pub restart: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
    /// Expected copy throughput, used to compare binlog retention with the copy time
    #[arg(long, default_value_t = 20)]
    pub assume_mib_per_sec: u64,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Parallel chunk workers (each uses one source and one target connection)
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Most rows per chunk
    #[arg(long, default_value_t = 20_000)]
    pub chunk_rows: u64,
    /// Bytes of rows per chunk: a chunk ends when the rows read reach it, whatever the table
    /// statistics say (a single larger row makes its chunk that row)
    #[arg(long, default_value_t = 8 << 20)]
    pub chunk_bytes: u64,
    /// Create every index together with its table instead of adding the non-unique secondary
    /// indexes after the table's rows. Default: deferred when the source is near (under 5 ms
    /// away: the target's CPU is what the copy waits for, and an index built once is cheaper),
    /// kept when it is far (a VPN: the link is what the copy waits for, and the target has the
    /// CPU to keep the index as rows arrive, where building it after is time added at the end)
    #[arg(long, conflicts_with = "defer_indexes")]
    pub no_defer_indexes: bool,
    /// Add the non-unique secondary indexes after the table's rows whatever the source's
    /// distance (shapes that need an index from the start keep it: foreign keys, an
    /// AUTO_INCREMENT column's key)
    #[arg(long)]
    pub defer_indexes: bool,
    /// Allow databases that already hold tables on the target; copied tables are replaced
    #[arg(long)]
    pub reuse_target: bool,
    /// Write with multi-row INSERT instead of LOAD DATA LOCAL INFILE
    #[arg(long)]
    pub no_load_data: bool,
    /// Stop after the copy without the catch-up replay (the target is then not yet consistent)
    #[arg(long)]
    pub no_catch_up: bool,
}

#[derive(Args, Debug)]
pub struct FollowArgs {
    /// Exit 0 once everything the source had when follow reached it is applied
    #[arg(long)]
    pub until_caught_up: bool,
    /// Stop exactly after this GTID (domain-server-seq) is applied
    #[arg(long)]
    pub until_gtid: Option<String>,
    /// DDL in the binlog: exec (apply it), stop (exit 2 before it), ignore (skip it)
    #[arg(long, default_value = "exec", value_parser = ["exec", "stop", "ignore"])]
    pub on_ddl: String,
    /// server_id this reader presents to the source (must be unique among its replicas)
    #[arg(long, env = "MIGRATE_SERVER_ID")]
    pub server_id: Option<u32>,
    /// Most source transactions grouped into one target transaction (a group also ends at
    /// 200k rows, 64 MiB, or when the binlog goes quiet). After a deadlock or lock wait
    /// timeout on the target, groups start again from one transaction and double back to it
    #[arg(long, default_value_t = 20_000)]
    pub group_size: usize,
    /// Pause reading when the source's Threads_running exceeds this
    #[arg(long)]
    pub max_source_load: Option<u64>,
    /// Follow the way back after a cutover: read the target's binlog and apply it to the
    /// source (state in `<state>.reverse.sqlite`, prepared by the cutover's switch)
    #[arg(long)]
    pub reverse: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print as JSON
    #[arg(long)]
    pub json: bool,
}
