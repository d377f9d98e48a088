//! Connection endpoints (URL, password sources, TLS) and the database/table filters.

use crate::error::{Error, Result};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

/// One server to connect to. The password is never printed: `Display` masks it.
#[derive(Clone)]
pub struct Endpoint {
    /// "source" or "target", used in messages.
    pub role: &'static str,
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub ssl_mode: SslMode,
    pub ssl_ca: Option<PathBuf>,
    /// Protocol compression (zlib), `?compress=`: the level of what migrate sends (the server
    /// compresses what it sends at its own level); None: off.
    pub compress: Option<u32>,
    /// No `compress` option in the URL: the binlog stream turns compression on by itself over
    /// a slow link (`binlog::stream`), every other connection leaves it off.
    pub compress_auto: bool,
    /// `?stall-timeout=`: how long a long read from this server may receive nothing before
    /// migrate asks the server, over a new connection, whether it is still working on it
    /// (`db::watchdog`).
    pub stall_timeout: Duration,
}

/// `stall-timeout` when the URL gives none: half of MariaDB's own `slave_net_timeout`.
pub const STALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// zlib level of `?compress=true` for what migrate sends (queries, rows written to a target);
/// the server compresses what it sends at its own level.
pub const COMPRESS_DEFAULT_LEVEL: u32 = 1;

impl Endpoint {
    /// `user@host:port`, without the side.
    pub fn address(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}@{}:{}", self.role, self.user, self.host, self.port)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let h = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match h {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return Err(Error::usage("bad %-escape in URL", "escape '%' as %25")),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| Error::usage("URL is not UTF-8 after %-decoding", "check the URL"))
}

/// `30`, `30s` or `2.5`: seconds, at least one.
fn parse_seconds(v: &str) -> Option<Duration> {
    let n: f64 = v.trim().trim_end_matches('s').parse().ok()?;
    (1.0..=86_400.0)
        .contains(&n)
        .then(|| Duration::from_secs_f64(n))
}

impl Endpoint {
    /// Parse `mysql://user[:password]@host[:port][?ssl-mode=..&ssl-ca=..]`.
    /// Errors never echo the URL (it may hold a password).
    pub fn parse(role: &'static str, url: &str) -> Result<Endpoint> {
        let usage = |what: &str| {
            Error::usage(
                format!("--{role}: {what}"),
                format!(
                    "use mysql://user@host:port, password in MIGRATE_{}_PASSWORD",
                    role.to_uppercase()
                ),
            )
        };
        let rest = url
            .strip_prefix("mysql://")
            .ok_or_else(|| usage("URL must start with mysql://"))?;
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        let main = main.trim_end_matches('/');
        let (auth, hostport) = main
            .rsplit_once('@')
            .ok_or_else(|| usage("URL needs user@host"))?;
        let (user, password) = match auth.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
            None => (percent_decode(auth)?, None),
        };
        if user.is_empty() {
            return Err(usage("empty user name"));
        }
        let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| usage("unclosed [ in host"))?;
            (h.to_string(), p.strip_prefix(':').unwrap_or(""))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p),
                None => (hostport.to_string(), ""),
            }
        };
        if host.is_empty() {
            return Err(usage("empty host"));
        }
        let port = if port.is_empty() {
            3306
        } else {
            port.parse().map_err(|_| usage("port is not a number"))?
        };
        let mut ep = Endpoint {
            role,
            user,
            password,
            host,
            port,
            ssl_mode: SslMode::Preferred,
            ssl_ca: None,
            compress: None,
            compress_auto: true,
            stall_timeout: STALL_TIMEOUT_DEFAULT,
        };
        for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "ssl-mode" | "sslmode" => ep.ssl_mode = match v.to_ascii_lowercase().as_str() {
                    "disabled" => SslMode::Disabled,
                    "preferred" => SslMode::Preferred,
                    "required" => SslMode::Required,
                    "verify-ca" | "verify_ca" => SslMode::VerifyCa,
                    "verify-identity" | "verify_identity" => SslMode::VerifyIdentity,
                    _ => return Err(usage(
                        "ssl-mode must be disabled|preferred|required|verify-ca|verify-identity",
                    )),
                },
                "ssl-ca" => ep.ssl_ca = Some(PathBuf::from(percent_decode(v)?)),
                "compress" => {
                    ep.compress_auto = false;
                    ep.compress = match v.to_ascii_lowercase().as_str() {
                        "true" | "on" | "1" | "yes" => Some(COMPRESS_DEFAULT_LEVEL),
                        "false" | "off" | "0" | "no" => None,
                        "fast" => Some(1),
                        "best" => Some(9),
                        n => match n.parse::<u32>() {
                            Ok(l) if (1..=9).contains(&l) => Some(l),
                            _ => {
                                return Err(usage(
                                    "compress must be true|false|fast|best or a zlib level 1-9",
                                ))
                            }
                        },
                    }
                }
                "stall-timeout" => ep.stall_timeout = parse_seconds(v).ok_or_else(|| {
                    usage("stall-timeout must be a number of seconds, at least 1 (e.g. 30 or 30s)")
                })?,
                _ => return Err(usage(&format!("unknown URL option '{k}'"))),
            }
        }
        if matches!(ep.ssl_mode, SslMode::VerifyCa | SslMode::VerifyIdentity) && ep.ssl_ca.is_none()
        {
            return Err(usage(
                "ssl-mode=verify-ca/verify-identity needs ssl-ca=PATH",
            ));
        }
        Ok(ep)
    }

    /// Fill the password from the environment variable or a file, if the URL had none.
    pub fn resolve_password(
        &mut self,
        env_value: Option<String>,
        file: Option<&PathBuf>,
    ) -> Result<()> {
        if let Some(f) = file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Error::usage(
                    format!("--{}-password-file {}: {e}", self.role, f.display()),
                    "give a readable file",
                )
            })?;
            self.password = Some(text.trim_end_matches(['\n', '\r']).to_string());
        } else if self.password.is_none() {
            self.password = env_value;
        }
        Ok(())
    }
}

/// Which databases and tables take part.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Empty: every non-system database.
    pub databases: Vec<String>,
    pub exclude: Vec<glob::Pattern>,
    /// The source folds database and table names to lowercase (`lower_case_table_names=1`):
    /// the names here are folded (`folded`), and so are those a binlog statement names.
    pub fold_case: bool,
}

/// A database or table name as a server with `lower_case_table_names=1` stores it: ASCII
/// letters in lowercase. A name with a non-ASCII letter that has case is refused rather than
/// folded by Unicode rules that may not be the server's (its `utf8mb3_general_ci` tables);
/// Korean has no case.
pub fn fold_name(name: &str) -> Result<String> {
    // a letter that lowercasing leaves alone (é, Korean) is the same under any rules; one it
    // changes (É) may be folded otherwise by the server's collation than by Unicode's
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii() && !c.to_lowercase().eq(std::iter::once(*c)))
    {
        return Err(Error::definite(
            format!("the name `{name}` has the letter {c:?}, whose lowercase form migrate cannot be sure matches the server's under lower_case_table_names=1"),
            "rename it to ASCII letters (or letters without case, such as Korean), or --exclude it",
        ));
    }
    Ok(name.to_ascii_lowercase())
}

pub const SYSTEM_DATABASES: &[&str] = &[
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "_migrate",
];

impl Filter {
    pub fn new(databases: &[String], exclude: &[String]) -> Result<Filter> {
        let exclude = exclude
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| {
                    Error::usage(
                        format!("--exclude '{p}': {e}"),
                        "use a glob such as 'shop.tmp_*'",
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Filter {
            databases: databases.to_vec(),
            exclude,
            fold_case: false,
        })
    }
    /// This selection for a source that folds names (`folds`) or not: `folded`, or as it is.
    pub fn folded_if(&self, folds: bool) -> Result<Filter> {
        if folds {
            self.folded()
        } else {
            Ok(self.clone())
        }
    }
    /// This selection for a source with `lower_case_table_names=1`: database names and
    /// `--exclude` patterns folded as the server folds names.
    pub fn folded(&self) -> Result<Filter> {
        let databases = self
            .databases
            .iter()
            .map(|d| fold_name(d))
            .collect::<Result<Vec<_>>>()?;
        let exclude: Vec<String> = self
            .exclude
            .iter()
            .map(|p| fold_name(p.as_str()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Filter {
            fold_case: true,
            ..Filter::new(&databases, &exclude)?
        })
    }
    pub fn includes_db(&self, db: &str) -> bool {
        if SYSTEM_DATABASES.contains(&db) {
            return false;
        }
        self.databases.is_empty() || self.databases.iter().any(|d| d == db)
    }
    pub fn includes_table(&self, db: &str, table: &str) -> bool {
        if !self.includes_db(db) {
            return false;
        }
        let full = format!("{db}.{table}");
        !self.exclude.iter().any(|p| p.matches(&full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let e = Endpoint::parse(
            "source",
            "mysql://app:p%40ss@db.example:3307?ssl-mode=verify-ca&ssl-ca=/ca.pem",
        )
        .unwrap();
        assert_eq!(e.user, "app");
        assert_eq!(e.password.as_deref(), Some("p@ss"));
        assert_eq!(e.host, "db.example");
        assert_eq!(e.port, 3307);
        assert_eq!(e.ssl_mode, SslMode::VerifyCa);
        assert!(!format!("{e}").contains("p@ss"));
    }

    #[test]
    fn defaults_and_errors() {
        let e = Endpoint::parse("target", "mysql://root@127.0.0.1").unwrap();
        assert_eq!(e.port, 3306);
        assert!(e.password.is_none());
        let err = Endpoint::parse("source", "postgres://u:secret@h")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("secret"));
        assert!(Endpoint::parse("source", "mysql://u@h?ssl-mode=verify-ca").is_err());
        assert_eq!(e.stall_timeout, STALL_TIMEOUT_DEFAULT);
    }

    #[test]
    fn stall_timeout_option() {
        let e = Endpoint::parse("source", "mysql://u@h?stall-timeout=5").unwrap();
        assert_eq!(e.stall_timeout, Duration::from_secs(5));
        let e = Endpoint::parse("source", "mysql://u@h?stall-timeout=2.5s").unwrap();
        assert_eq!(e.stall_timeout, Duration::from_millis(2500));
        for bad in ["0", "0.5", "x", "", "-3", "inf"] {
            let url = format!("mysql://u@h?stall-timeout={bad}");
            assert!(Endpoint::parse("source", &url).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let f = Filter::new(&[], &["shop.tmp_*".into()]).unwrap();
        assert!(f.includes_table("shop", "orders"));
        assert!(!f.includes_table("shop", "tmp_x"));
        assert!(!f.includes_db("mysql"));
    }
}
