//! The SQLite state store. Every verb records progress here as it finishes each step, so a
//! crash resumes where it stopped; `status` reads it while another verb runs (WAL mode).
//! Never holds a password.

use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;

const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001_init.sql"),
    include_str!("../../migrations/002_horizons.sql"),
    include_str!("../../migrations/003_runs.sql"),
    include_str!("../../migrations/004_verify.sql"),
    include_str!("../../migrations/005_verify_cursor_cutover_journal.sql"),
    include_str!("../../migrations/006_touched_keys.sql"),
];

/// How a verb's run ended (or that it still runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Running,
    /// Finished, or stopped on request (SIGINT/SIGTERM) after finishing its current work.
    Ok,
    Interrupted,
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Ok => "ok",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Outcome {
        match s {
            "ok" => Outcome::Ok,
            "interrupted" => Outcome::Interrupted,
            "failed" => Outcome::Failed,
            _ => Outcome::Running,
        }
    }
}

/// A table compared by the current verify, and its result (JSON).
#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifiedTable {
    pub db: String,
    pub name: String,
    pub rows: u64,
    pub chunks: u64,
    pub result: String,
    /// The last key compared while the table is in progress (JSON); None once it is done.
    pub cursor: Option<String>,
}

/// One line of the cutover journal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JournalEntry {
    pub step: String,
    pub state: String,
    pub at: f64,
    pub actor: String,
    pub detail: String,
}

/// The last run of a verb.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub verb: String,
    pub pid: u32,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    pub outcome: Outcome,
    pub last_error: Option<String>,
}

impl Run {
    /// Marked running, but its process is gone: it was killed (kill -9, OOM, reboot).
    pub fn died(&self) -> bool {
        self.outcome == Outcome::Running
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// The exclusive lock of a state file (released when dropped): one verb that changes
/// something runs per state file.
pub struct StateLock {
    _file: std::fs::File,
}

/// Lock `state` for a verb, or say which process holds it.
pub fn lock(state: &Path) -> Result<StateLock> {
    use std::io::{Read, Seek, Write};
    let path = state.with_extension(match state.extension() {
        Some(e) => format!("{}.lock", e.to_string_lossy()),
        None => "lock".into(),
    });
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| {
            Error::definite(
                format!("cannot open lock file {}: {e}", path.display()),
                "check that the --state directory is writable",
            )
        })?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.set_len(0);
            let _ = file.seek(std::io::SeekFrom::Start(0));
            let _ = write!(file, "{}", std::process::id());
            Ok(StateLock { _file: file })
        }
        Err(_) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(Error::definite(
                format!(
                    "state file {} is in use: migrate is already running (pid {})",
                    state.display(),
                    pid.trim()
                ),
                "stop that process first (it holds the lock until it exits), or use another --state",
            ))
        }
    }
}

pub struct Store {
    conn: Mutex<Connection>,
}

/// Where a table's copy is (stored as its lowercase name).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableState {
    #[default]
    Pending,
    Copying,
    Copied,
}

impl TableState {
    pub fn as_str(self) -> &'static str {
        match self {
            TableState::Pending => "pending",
            TableState::Copying => "copying",
            TableState::Copied => "copied",
        }
    }
    /// A stored value (anything unknown, e.g. the `indexed` of old state files, is copied).
    fn parse(s: &str) -> TableState {
        match s {
            "pending" => TableState::Pending,
            "copying" => TableState::Copying,
            _ => TableState::Copied,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableProgress {
    pub db: String,
    pub name: String,
    pub status: TableState,
    pub rows_est: u64,
    pub bytes_est: u64,
    pub rows_done: u64,
    pub bytes_done: u64,
    pub chunks_done: u64,
    pub last_key: Option<String>,
    /// Binlog position of the first consistent read of the current copy.
    pub horizon: Option<(String, u64)>,
    /// `SHOW CREATE TABLE` the target table was created from.
    pub definition: Option<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FollowStatus {
    pub applied_gtid: String,
    pub lag_seconds: Option<f64>,
    pub events_behind: Option<u64>,
    pub bytes_behind: Option<u64>,
    pub rows_applied: u64,
    pub trx_applied: u64,
    pub reconnects: u64,
    pub pid: Option<u32>,
    pub updated_at: String,
    /// Estimated source commit time (unix) of the last applied transaction.
    pub last_commit: Option<f64>,
}

/// Seconds since the epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// RFC 3339 UTC text of a unix time (`2026-11-25T16:57:03.120Z`).
pub fn rfc3339(t: f64) -> String {
    let secs = t.floor() as i64;
    let millis = ((t - t.floor()) * 1000.0).round().min(999.0) as u32;
    let text = crate::value::decode::utc_text(secs, millis * 1000, 3);
    format!("{}Z", text.replacen(' ', "T", 1))
}

pub fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(|e| {
            Error::definite(
                format!("cannot open state file {}: {e}", path.display()),
                "check --state",
            )
        })?;
        // the timeout first: `status` opens the file while a snapshot writes to it
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // switching to WAL needs the file to itself and does not wait on the busy timeout
        let mut attempt = 0;
        while let Err(e) = conn.pragma_update(None, "journal_mode", "WAL") {
            attempt += 1;
            if attempt > 200 {
                return Err(e.into());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // migrations run under a write lock, the version read inside it: a `status` opening
        // the file while a new snapshot creates it must not run them a second time
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version as usize > MIGRATIONS.len() {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(Error::definite(
                format!(
                    "state file {} was written by a newer migrate",
                    path.display()
                ),
                "use the newer migrate binary",
            ));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            if let Err(e) = conn.execute_batch(&format!("{sql}; PRAGMA user_version = {};", i + 1))
            {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        conn.execute_batch("COMMIT")?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let c = self
            .conn
            .lock()
            .map_err(|_| Error::definite("state store lock poisoned", "restart migrate"))?;
        Ok(f(&c)?)
    }

    pub fn get(&self, key: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }
    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        self.with(|c| {
            c.execute("INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2", [key, value])
                .map(|_| ())
        })
    }

    /// Record a cutover step's state (`started`, `done`, `failed`) with who ran it.
    pub fn journal(&self, cutover: &str, step: &str, state: &str, detail: &str) -> Result<()> {
        let actor = format!(
            "{}@{} pid {}",
            std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".into()),
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            std::process::id()
        );
        self.with(|c| {
            c.execute(
                "INSERT INTO cutover_journal (cutover_id, step, state, at, actor, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![cutover, step, state, unix_now(), actor, detail],
            )
            .map(|_| ())
        })
    }
    /// The journal of one cutover, oldest first.
    pub fn journal_of(&self, cutover: &str) -> Result<Vec<JournalEntry>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT step, state, at, actor, detail FROM cutover_journal \
                 WHERE cutover_id = ?1 ORDER BY seq",
            )?;
            let rows = st.query_map([cutover], |r| {
                Ok(JournalEntry {
                    step: r.get(0)?,
                    state: r.get(1)?,
                    at: r.get(2)?,
                    actor: r.get(3)?,
                    detail: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                })
            })?;
            rows.collect()
        })
    }

    /// Start a verify from the beginning: forget the tables an earlier one compared.
    pub fn verify_reset(&self) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM verify_tables", []).map(|_| ()))
    }
    /// Record how far the current verify compared a table: `cursor` is the last key compared
    /// while it is in progress, None once it is done.
    pub fn verify_table_progress(&self, t: &VerifiedTable) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO verify_tables (db, name, rows, chunks, result, cursor) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    t.db,
                    t.name,
                    t.rows as i64,
                    t.chunks as i64,
                    t.result,
                    t.cursor
                ],
            )
            .map(|_| ())
        })
    }
    /// Tables the current verify has compared, or started to.
    pub fn verify_tables(&self) -> Result<Vec<VerifiedTable>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT db, name, rows, chunks, result, cursor FROM verify_tables")?;
            let rows = st.query_map([], |r| {
                Ok(VerifiedTable {
                    db: r.get(0)?,
                    name: r.get(1)?,
                    rows: r.get::<_, i64>(2)? as u64,
                    chunks: r.get::<_, i64>(3)? as u64,
                    result: r.get(4)?,
                    cursor: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Record keys about to be changed on the target (before the target transaction commits)
    /// under the next sequence number; `ddl` marks that a DDL is about to run. One store
    /// transaction.
    pub fn touch(&self, keys: &crate::verify::touched::Touched) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            // durable before the target commits: with synchronous=NORMAL a power loss could
            // lose this record while the target keeps the rows (then they would escape the
            // cutover's proof)
            c.pragma_update(None, "synchronous", "FULL")?;
            // a write lock from the start: a read upgraded to a write fails at once (no busy
            // wait) when another process wrote in between
            let tx = rusqlite::Transaction::new_unchecked(c, rusqlite::TransactionBehavior::Immediate)?;
            let seq: i64 = tx
                .query_row(
                    "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'touched.seq'",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0)
                + 1;
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('touched.seq', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                [seq.to_string()],
            )?;
            if keys.ddl {
                tx.execute(
                    "INSERT INTO meta(key, value) VALUES ('touched.ddl_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
                    [seq.to_string()],
                )?;
            }
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO touched_keys(db, tbl, key, seq) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT(db, tbl, key) DO UPDATE SET seq = ?4",
                )?;
                for ((db, tbl), ks) in &keys.tables {
                    for k in ks {
                        st.execute(rusqlite::params![db, tbl, k, seq])?;
                    }
                }
            }
            tx.commit()
        })
    }

    /// The sequence number of the last recorded group of touched keys (0: none yet).
    pub fn touched_seq(&self) -> Result<i64> {
        Ok(self
            .get("touched.seq")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The sequence number of the last DDL recorded as applied (0: none).
    pub fn touched_ddl_seq(&self) -> Result<i64> {
        Ok(self
            .get("touched.ddl_seq")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The keys touched after group `after` up to group `upto`, by table.
    pub fn touched_between(
        &self,
        after: i64,
        upto: i64,
    ) -> Result<crate::verify::touched::Touched> {
        let mut out = crate::verify::touched::Touched::default();
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT db, tbl, key FROM touched_keys WHERE seq > ?1 AND seq <= ?2 ORDER BY db, tbl, key",
            )?;
            let rows = st.query_map([after, upto], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?;
            for r in rows {
                let (db, tbl, key) = r?;
                out.tables.entry((db, tbl)).or_default().insert(key);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Forget the keys of these tables last touched at or before group `upto` (a full verify
    /// compared them); keys of tables it did not compare stay.
    pub fn forget_touched(&self, upto: i64, tables: &[(String, String)]) -> Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for (db, tbl) in tables {
                tx.execute(
                    "DELETE FROM touched_keys WHERE seq <= ?1 AND db = ?2 AND tbl = ?3",
                    params![upto, db, tbl],
                )?;
            }
            tx.commit()
        })
    }

    pub fn delete(&self, key: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM meta WHERE key = ?1", [key])
                .map(|_| ())
        })
    }

    /// Record that `verb` starts in this process.
    pub fn start_run(&self, verb: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO runs VALUES (?1, ?2, ?3, NULL, 'running', NULL)",
                params![verb, std::process::id(), unix_now()],
            )
            .map(|_| ())
        })
    }
    /// Record how `verb` ended.
    pub fn end_run(&self, verb: &str, outcome: Outcome, error: Option<&str>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET ended_at = ?2, outcome = ?3, last_error = ?4 WHERE verb = ?1",
                params![verb, unix_now(), outcome.as_str(), error],
            )
            .map(|_| ())
        })
    }
    pub fn runs(&self) -> Result<Vec<Run>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT verb, pid, started_at, ended_at, outcome, last_error FROM runs ORDER BY verb",
            )?;
            let rows = st.query_map([], |r| {
                Ok(Run {
                    verb: r.get(0)?,
                    pid: r.get(1)?,
                    started_at: r.get(2)?,
                    ended_at: r.get(3)?,
                    outcome: Outcome::parse(&r.get::<_, String>(4)?),
                    last_error: r.get(5)?,
                })
            })?;
            rows.collect()
        })
    }

    /// This migration's id (created on first use): it names the migration's row on the target.
    pub fn migration_id(&self) -> Result<String> {
        if let Some(id) = self.get("migration.id")? {
            return Ok(id);
        }
        let id = format!("{:016x}", rand::random::<u64>());
        self.set("migration.id", &id)?;
        Ok(id)
    }

    pub fn step_done(&self, step: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row("SELECT 1 FROM schema_steps WHERE step = ?1", [step], |_| {
                Ok(())
            })
            .optional()
            .map(|o| o.is_some())
        })
    }
    pub fn mark_step(&self, step: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO schema_steps VALUES (?1, ?2)",
                [step, &now()],
            )
            .map(|_| ())
        })
    }
    /// Forget that a step was done (it will run again).
    pub fn unmark_step(&self, step: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM schema_steps WHERE step = ?1", [step])
                .map(|_| ())
        })
    }
    /// The names of done steps starting with `prefix`, without it ("database:" -> dbs).
    pub fn steps_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT step FROM schema_steps ORDER BY step")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows
                .filter_map(|r| r.ok())
                .filter_map(|s| s.strip_prefix(prefix).map(str::to_string))
                .collect())
        })
    }
    pub fn any_steps(&self) -> Result<bool> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM schema_steps", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n > 0)
        })
    }

    pub fn ensure_table(&self, db: &str, name: &str, rows_est: u64, bytes_est: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO tables(db, name, status, rows_est, bytes_est) VALUES (?1, ?2, 'pending', ?3, ?4) \
                 ON CONFLICT(db, name) DO UPDATE SET rows_est = ?3, bytes_est = ?4",
                params![db, name, rows_est as i64, bytes_est as i64],
            )
            .map(|_| ())
        })
    }
    /// Forget a table's copy progress (it will be copied again from its first row).
    pub fn reset_table(&self, db: &str, name: &str) -> Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute("DELETE FROM chunks WHERE db = ?1 AND name = ?2", params![db, name])?;
            tx.execute(
                "UPDATE tables SET rows_done = 0, bytes_done = 0, chunks_done = 0, last_key = NULL, status = 'pending', \
                 horizon_file = NULL, horizon_pos = NULL WHERE db = ?1 AND name = ?2",
                params![db, name],
            )?;
            tx.commit()
        })
    }
    /// The definition the target table was created from (a new copy starts from it).
    pub fn set_table_definition(&self, db: &str, name: &str, definition: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE tables SET definition = ?3 WHERE db = ?1 AND name = ?2",
                params![db, name, definition],
            )
            .map(|_| ())
        })
    }
    /// A table or database (`name` empty) disappeared from the source during the copy; it
    /// was dropped on the target at binlog position (file, pos).
    pub fn mark_gone(&self, db: &str, name: &str, file: &str, pos: u64) -> Result<()> {
        let kind = if name.is_empty() { "database" } else { "table" };
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO gone VALUES (?1, ?2, ?3, ?4, ?5)",
                params![kind, db, name, file, pos as i64],
            )?;
            if name.is_empty() {
                tx.execute("DELETE FROM chunks WHERE db = ?1", params![db])?;
                tx.execute("DELETE FROM tables WHERE db = ?1", params![db])?;
            } else {
                tx.execute(
                    "DELETE FROM chunks WHERE db = ?1 AND name = ?2",
                    params![db, name],
                )?;
                tx.execute(
                    "DELETE FROM tables WHERE db = ?1 AND name = ?2",
                    params![db, name],
                )?;
            }
            tx.commit()
        })
    }
    /// Horizons of every copied table and of what disappeared during the copy.
    pub fn horizons(&self) -> Result<crate::position::horizon::Horizons> {
        use crate::position::FilePos;
        let mut h = crate::position::horizon::Horizons::default();
        for t in self.tables()? {
            h.set_known(&t.db, &t.name);
            if let Some((f, p)) = &t.horizon {
                h.set_table(&t.db, &t.name, FilePos::new(f, *p));
            }
        }
        let gone: Vec<(String, String, String, String, i64)> = self.with(|c| {
            let mut st = c.prepare("SELECT kind, db, name, file, pos FROM gone")?;
            let rows = st.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            rows.collect()
        })?;
        if let Some((file, pos)) = self
            .get("snapshot.listed_before")?
            .as_deref()
            .and_then(|v| v.rsplit_once(':'))
            .and_then(|(f, p)| Some((f.to_string(), p.parse::<u64>().ok()?)))
        {
            h.set_listed_before(FilePos::new(&file, pos));
        }
        for (kind, db, name, file, pos) in gone {
            let at = FilePos::new(&file, pos as u64);
            if kind == "database" {
                h.set_database(&db, at);
            } else {
                h.set_table(&db, &name, at);
            }
        }
        Ok(h)
    }
    /// Record the status an event has on the source (its target copy stays DISABLED).
    pub fn set_source_event(&self, db: &str, name: &str, status: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO source_events VALUES (?1, ?2, ?3)",
                params![db, name, status],
            )
            .map(|_| ())
        })
    }
    pub fn drop_source_event(&self, db: &str, name: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM source_events WHERE db = ?1 AND name = ?2",
                params![db, name],
            )
            .map(|_| ())
        })
    }
    pub fn rename_source_event(
        &self,
        db: &str,
        name: &str,
        to_db: &str,
        to_name: &str,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE OR REPLACE source_events SET db = ?3, name = ?4 WHERE db = ?1 AND name = ?2",
                params![db, name, to_db, to_name],
            )
            .map(|_| ())
        })
    }
    pub fn source_events(&self) -> Result<Vec<(String, String, String)>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT db, name, status FROM source_events ORDER BY db, name")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
    }
    pub fn tables(&self) -> Result<Vec<TableProgress>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT db, name, status, rows_est, bytes_est, rows_done, bytes_done, chunks_done, last_key, horizon_file, horizon_pos, definition FROM tables ORDER BY db, name",
            )?;
            let rows = st.query_map([], |r| {
                Ok(TableProgress {
                    db: r.get(0)?,
                    name: r.get(1)?,
                    status: TableState::parse(&r.get::<_, String>(2)?),
                    rows_est: r.get::<_, i64>(3)? as u64,
                    bytes_est: r.get::<_, i64>(4)? as u64,
                    rows_done: r.get::<_, i64>(5)? as u64,
                    bytes_done: r.get::<_, i64>(6)? as u64,
                    chunks_done: r.get::<_, i64>(7)? as u64,
                    last_key: r.get(8)?,
                    horizon: match (r.get::<_, Option<String>>(9)?, r.get::<_, Option<i64>>(10)?) {
                        (Some(f), Some(p)) => Some((f, p as u64)),
                        _ => None,
                    },
                    definition: r.get(11)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Record a finished chunk and advance the table's resume key, in one SQLite transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn record_chunk(
        &self,
        db: &str,
        name: &str,
        seq: u64,
        rows: u64,
        bytes: u64,
        binlog: (&str, u64),
        last_key: Option<&str>,
        finished: bool,
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO chunks VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![db, name, seq as i64, rows as i64, bytes as i64, binlog.0, binlog.1 as i64, now()],
            )?;
            if seq == 0 {
                // the copy's first consistent read: binlog events up to here are in every chunk
                tx.execute(
                    "UPDATE tables SET horizon_file = ?3, horizon_pos = ?4 WHERE db = ?1 AND name = ?2",
                    params![db, name, binlog.0, binlog.1 as i64],
                )?;
            }
            tx.execute(
                "UPDATE tables SET rows_done = rows_done + ?3, bytes_done = bytes_done + ?4, chunks_done = ?5, \
                 last_key = COALESCE(?6, last_key), status = ?7 WHERE db = ?1 AND name = ?2",
                params![
                    db,
                    name,
                    rows as i64,
                    bytes as i64,
                    (seq + 1) as i64,
                    last_key,
                    if finished { TableState::Copied.as_str() } else { TableState::Copying.as_str() }
                ],
            )?;
            tx.commit()
        })
    }

    /// Lowest and highest binlog position over all recorded chunks.
    pub fn chunk_position_range(&self) -> Result<Vec<(String, u64)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT DISTINCT binlog_file, binlog_pos FROM chunks")?;
            let rows = st.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            rows.collect()
        })
    }

    pub fn write_follow_status(&self, s: &FollowStatus) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO follow_status VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    s.applied_gtid,
                    s.lag_seconds,
                    s.events_behind.map(|v| v as i64),
                    s.bytes_behind.map(|v| v as i64),
                    s.rows_applied as i64,
                    s.trx_applied as i64,
                    s.reconnects as i64,
                    s.pid,
                    s.updated_at,
                    s.last_commit
                ],
            )
            .map(|_| ())
        })
    }
    pub fn follow_status(&self) -> Result<Option<FollowStatus>> {
        self.with(|c| {
            c.query_row("SELECT applied_gtid, lag_seconds, events_behind, bytes_behind, rows_applied, trx_applied, reconnects, pid, updated_at, last_commit FROM follow_status WHERE id = 1", [], |r| {
                Ok(FollowStatus {
                    applied_gtid: r.get(0)?,
                    lag_seconds: r.get(1)?,
                    events_behind: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                    bytes_behind: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    rows_applied: r.get::<_, i64>(4)? as u64,
                    trx_applied: r.get::<_, i64>(5)? as u64,
                    reconnects: r.get::<_, i64>(6)? as u64,
                    pid: r.get(7)?,
                    updated_at: r.get(8)?,
                    last_commit: r.get(9)?,
                })
            })
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn opened_by_several_processes_at_once() {
        // `status` polling while a snapshot creates the file: the migrations run once
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sqlite");
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let p = path.clone();
                    std::thread::spawn(move || Store::open(&p).map(|_| ()))
                })
                .collect();
            for h in handles {
                let r = h.join().unwrap();
                assert!(r.is_ok(), "{:?}", r.err().map(|e| e.to_string()));
            }
        }
    }

    #[test]
    fn chunks_and_resume_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("s.sqlite")).unwrap();
        s.ensure_table("shop", "orders", 10, 100).unwrap();
        s.record_chunk(
            "shop",
            "orders",
            0,
            5,
            50,
            ("bin.000001", 400),
            Some("[1]"),
            false,
        )
        .unwrap();
        s.record_chunk(
            "shop",
            "orders",
            1,
            5,
            50,
            ("bin.000002", 4),
            Some("[2]"),
            true,
        )
        .unwrap();
        let t = &s.tables().unwrap()[0];
        assert_eq!(
            (t.rows_done, t.chunks_done, t.status),
            (10, 2, TableState::Copied)
        );
        assert_eq!(t.last_key.as_deref(), Some("[2]"));
        assert_eq!(s.chunk_position_range().unwrap().len(), 2);
        drop(s);
        let s = Store::open(&dir.path().join("s.sqlite")).unwrap();
        assert_eq!(s.tables().unwrap().len(), 1);
    }
}
