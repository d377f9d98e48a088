//! Test harness: real MariaDB servers on 127.0.0.1 with their own data directories, a TCP
//! proxy that can cut connections, and an independent comparison (mariadb-dump, ordered).
#![allow(dead_code)]

pub mod load;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn servers_dir() -> PathBuf {
    let d = root().join("target").join("test-servers");
    std::fs::create_dir_all(&d).expect("create target/test-servers");
    d
}

/// Data directories left by test processes that are gone (a killed or panicked run, and every
/// run's template): `template-PID` and `NAME-PID-PORT`.
fn remove_stale_servers() {
    let Ok(entries) = std::fs::read_dir(servers_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.rsplitn(3, '-').collect();
        let pid = match parts.as_slice() {
            [pid, "template"] => pid.parse::<u32>().ok(),
            [_port, pid, _name] => pid.parse::<u32>().ok(),
            _ => None,
        };
        if let Some(pid) = pid {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A free TCP port on 127.0.0.1.
/// A port nobody listens on. Taken from a range below Linux's ephemeral ports (32768+), one
/// after another within this test process: an OS-chosen port could be handed to a second
/// server of a test running in parallel (or to an outgoing connection) before the first
/// binds it, and a metrics request then reached a MariaDB server.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 10_000 + (std::process::id() % 400) * 50;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = (base + n % 20_000) as u16;
        if port >= 32_000 {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// One data directory made by mariadb-install-db per test process, copied for each server.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        remove_stale_servers();
        let dir = servers_dir().join(format!("template-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // its own tmpdir: a mariadbd starting (this bootstrap one too) deletes every `#sql*`
        // file in its tmpdir, the temporary tables of a bootstrap running beside it included
        let tmp = servers_dir().join(format!("template-{}-tmp", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("template tmpdir");
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", dir.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .output()
            .expect("mariadb-install-db (apt-get install mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

pub struct Server {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

pub const SOURCE_ARGS: &[&str] = &[
    "--log-bin=mysql-bin",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--gtid-strict-mode=1",
    "--default-time-zone=+09:00",
    "--sql-mode=",
];

impl Server {
    /// A source-like server: binlog on, +09:00, permissive sql_mode.
    pub fn source(name: &str) -> Server {
        Server::start(name, SOURCE_ARGS)
    }
    /// A target-like server: UTC, strict defaults, binlog on (it has a replica in production).
    pub fn target(name: &str) -> Server {
        Server::start(name, &["--log-bin=mysql-bin"])
    }

    pub fn start(name: &str, extra: &[&str]) -> Server {
        let port = free_port();
        let dir = servers_dir().join(format!("{name}-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).expect("mkdir server dir");
        let ok = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(dir.join("data"))
            .status()
            .expect("cp");
        assert!(ok.success(), "copying the template data directory failed");
        let server_id = (port as u32 % 60000) + 10;
        let mut args: Vec<String> = vec![
            "--no-defaults".into(),
            "--user=root".into(),
            format!("--datadir={}", dir.join("data").display()),
            format!("--port={port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--socket={}", dir.join("sock").display()),
            format!("--log-error={}", dir.join("error.log").display()),
            format!("--pid-file={}", dir.join("pid").display()),
            format!("--tmpdir={}", dir.join("tmp").display()),
            format!("--server-id={server_id}"),
            "--innodb-buffer-pool-size=64M".into(),
            "--innodb-log-file-size=48M".into(),
            "--innodb-flush-log-at-trx-commit=2".into(),
            "--skip-name-resolve".into(),
            "--max-allowed-packet=256M".into(),
            "--performance-schema=OFF".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut s = Server {
            name: name.into(),
            port,
            dir,
            args,
            child: None,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        let child = Command::new("mariadbd")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.child = Some(child);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if self.try_sql("SELECT 1").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
        panic!(
            "MariaDB {} did not start on {}: {log}",
            self.name, self.port
        );
    }

    /// A handle on a server started elsewhere (for client calls from another thread).
    pub fn attach(name: &str, port: u16) -> Server {
        Server {
            name: name.into(),
            port,
            dir: PathBuf::new(),
            args: Vec::new(),
            child: None,
        }
    }

    /// Stop cleanly and start again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}?ssl-mode=disabled", self.port)
    }

    fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.args([
            "--no-defaults",
            "-uroot",
            "-h127.0.0.1",
            "--batch",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ])
        .arg(format!("-P{}", self.port));
        c
    }

    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = self
            .client()
            .arg("-e")
            .arg(sql)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// Run SQL through the mariadb client; panics on error.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("{} SQL failed: {e}\n{sql}", self.name))
    }

    /// Run a SQL script from stdin (binary-safe).
    pub fn script(&self, sql: &[u8]) {
        use std::io::Write;
        let mut c = self
            .client()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(sql)
            .expect("write");
        let out = c.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{} script failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Data of `db` as mariadb-dump prints it: ordered by primary key, blobs in hex, UTC.
    pub fn dump_data(&self, db: &str) -> String {
        let out = Command::new("mariadb-dump")
            .args([
                "--no-defaults",
                "-uroot",
                "-h127.0.0.1",
                "--no-create-info",
                "--skip-extended-insert",
                "--order-by-primary",
                "--hex-blob",
                "--tz-utc",
                "--skip-comments",
                "--skip-triggers",
                "--default-character-set=binary",
            ])
            .arg(format!("-P{}", self.port))
            .arg(db)
            .output()
            .expect("mariadb-dump");
        assert!(
            out.status.success(),
            "mariadb-dump {db}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `SHOW CREATE TABLE` of every table of `db` (AUTO_INCREMENT counters removed).
    pub fn dump_schema(&self, db: &str) -> String {
        let tables = self.sql(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' ORDER BY TABLE_NAME"
        ));
        let mut out = String::new();
        for t in tables.lines() {
            let create = self.sql(&format!(
                "SHOW CREATE TABLE `{db}`.`{}`",
                t.replace('`', "``")
            ));
            let cleaned: String = create
                .split(' ')
                .filter(|w| !w.starts_with("AUTO_INCREMENT="))
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&cleaned);
            out.push('\n');
        }
        out
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_none() {
            return; // attached handle
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Run the migrate binary with source/target/state set; returns its output. A run that
/// takes more than 5 minutes is killed and fails the test (follow retries forever when a
/// server is gone).
pub fn migrate(source: &str, target: &str, state: &Path, args: &[&str]) -> Output {
    let mut child = migrate_cmd(source, target, state, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run migrate");
    // drain the pipes while waiting, so a chatty run cannot block on a full pipe
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut v);
        v
    });
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            let _ = child.wait();
            let err = err_t.join().unwrap_or_default();
            panic!(
                "migrate {args:?} ran for more than 5 minutes:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// The binary under test: the one cargo built, or `MIGRATE_TEST_BIN` (scripts/build-old-glibc.sh
/// runs tests against the portable build).
pub fn migrate_bin() -> std::path::PathBuf {
    std::env::var_os("MIGRATE_TEST_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_migrate")))
}

pub fn migrate_cmd(source: &str, target: &str, state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(migrate_bin());
    c.env("MIGRATE_SOURCE", source)
        .env("MIGRATE_TARGET", target)
        .env("MIGRATE_STATE", state)
        .env("CI", "true")
        .env_remove("MIGRATE_SOURCE_PASSWORD")
        .env_remove("MIGRATE_TARGET_PASSWORD")
        .args(args);
    c
}

pub fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "migrate failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Source and target hold the same rows and the same table definitions in `db`.
pub fn assert_same(src: &Server, dst: &Server, db: &str) {
    let (a, b) = (src.dump_data(db), dst.dump_data(db));
    if a != b {
        let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        let sa: std::collections::HashSet<&str> = la.iter().copied().collect();
        let sb: std::collections::HashSet<&str> = lb.iter().copied().collect();
        let cut = |l: &&str| l[..l.len().min(300)].to_string();
        let only_a: Vec<String> = la
            .iter()
            .filter(|l| !sb.contains(*l))
            .take(10)
            .map(cut)
            .collect();
        let only_b: Vec<String> = lb
            .iter()
            .filter(|l| !sa.contains(*l))
            .take(10)
            .map(cut)
            .collect();
        panic!(
            "data of {db} differs ({} vs {} lines):\nonly on source: {only_a:#?}\nonly on target: {only_b:#?}",
            la.len(),
            lb.len()
        );
    }
    assert_eq!(
        src.dump_schema(db),
        dst.dump_schema(db),
        "schema of {db} differs"
    );
}

/// `follow --until-caught-up --databases db`, which must exit 0.
pub fn follow_caught_up(source: &str, target: &str, state: &Path, db: &str) {
    assert_ok(&migrate(
        source,
        target,
        state,
        &["follow", "--until-caught-up", "--databases", db],
    ));
}

/// SIGTERM to a running `follow` (it finishes its group and exits 0), then its stderr; panics
/// if it did not exit 0.
pub fn terminate_follow(follower: std::process::Child) -> String {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(follower.id().to_string())
        .status();
    let out = follower.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "follow did not exit 0 on SIGTERM: {log}"
    );
    log
}

/// `follow --until-caught-up` for `db` (through the given URLs), then source and target must
/// be identical.
pub fn catch_up_and_compare(
    src_url: &str,
    dst_url: &str,
    state: &Path,
    src: &Server,
    dst: &Server,
    db: &str,
) {
    assert_ok(&migrate(
        src_url,
        dst_url,
        state,
        &["follow", "--until-caught-up", "--databases", db],
    ));
    assert_same(src, dst, db);
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(servers_dir()).expect("tempdir")
}

/// Like `assert_same`, but rows compared as a multiset (tables without a key have no order).
pub fn assert_same_multiset(src: &Server, dst: &Server, db: &str) {
    let sorted = |s: String| {
        let mut v: Vec<String> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    let (a, b) = (sorted(src.dump_data(db)), sorted(dst.dump_data(db)));
    if a != b {
        let only_a: Vec<&String> = a.iter().filter(|l| !b.contains(l)).take(5).collect();
        let only_b: Vec<&String> = b.iter().filter(|l| !a.contains(l)).take(5).collect();
        panic!("data of {db} differs:\nonly on source: {only_a:#?}\nonly on target: {only_b:#?}");
    }
    assert_eq!(
        src.dump_schema(db),
        dst.dump_schema(db),
        "schema of {db} differs"
    );
}

/// `follow --until-caught-up` that is expected to fail: its exit code 2 and stderr.
pub fn follow_fails(src_url: &str, dst_url: &str, state: &Path, db: &str) -> String {
    let out = migrate(
        src_url,
        dst_url,
        state,
        &["follow", "--until-caught-up", "--databases", db],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "follow should have stopped with an error:\n{}",
        stderr(&out)
    );
    stderr(&out)
}

/// Max resident set size (KiB) of a command, run under /usr/bin/time.
pub fn max_rss_kib(cmd: Command) -> (Output, u64) {
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("MAXRSS %M").arg(prog).args(args);
    for (k, v) in envs {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let out = timed
        .output()
        .expect("/usr/bin/time (apt-get install time)");
    let err = String::from_utf8_lossy(&out.stderr);
    let rss = err
        .lines()
        .filter_map(|l| l.strip_prefix("MAXRSS "))
        .next_back()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (out, rss)
}

impl Server {
    /// Like `script`, but an error is returned instead of panicking (the client stops at the
    /// first failing statement, as `script` does).
    pub fn try_script(&self, sql: &[u8]) -> Result<String, String> {
        use std::io::Write;
        let mut c = self
            .client()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = c.stdin.take() {
            // a client that stopped early closes its stdin: its output says why
            let _ = stdin.write_all(sql);
        }
        let out = c.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }
}

/// `GET path` from a metrics endpoint on 127.0.0.1:`port`: the response text. A connection
/// refused or reset (the endpoint not up yet, or going away) is tried again for up to 10 s;
/// then the last error fails the test, naming the port.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let t = std::time::Instant::now();
    loop {
        let got = (|| -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match got {
            Ok(body) if body.starts_with("HTTP/") => return body,
            Ok(body) if t.elapsed().as_secs() >= 10 => {
                panic!("127.0.0.1:{port}{path}: not an HTTP response: {body:?}")
            }
            Err(e) if t.elapsed().as_secs() >= 10 => panic!("127.0.0.1:{port}{path}: {e}"),
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// Purge every binlog file of `src` but the newest (files still needed for crash recovery are
/// kept until InnoDB checkpoints: retried for up to 30 s).
pub fn purge_all_but_newest_binlog(src: &Server) {
    let t = Instant::now();
    while src.sql("SHOW BINARY LOGS").lines().count() > 1 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "binlogs could not be purged"
        );
        let logs = src.sql("SHOW BINARY LOGS");
        let newest = logs
            .lines()
            .last()
            .and_then(|l| l.split('\t').next())
            .unwrap_or_default()
            .to_string();
        src.sql(&format!("PURGE BINARY LOGS TO '{newest}'"));
        std::thread::sleep(Duration::from_millis(200));
    }
}
