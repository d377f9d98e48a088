//! Errors: a transient error is retried (lost connection, deadlock, lock wait timeout);
//! a definite error stops the verb with one line saying what failed, where, and what to do.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Worth retrying with backoff: the network or the server hiccuped.
    Transient,
    /// The operator must act; `hint` says how.
    Definite,
    /// Bad command line or configuration.
    Usage,
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub what: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn definite(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error {
            kind: Kind::Definite,
            what: what.into(),
            hint: Some(hint.into()),
        }
    }
    pub fn usage(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error {
            kind: Kind::Usage,
            what: what.into(),
            hint: Some(hint.into()),
        }
    }
    pub fn transient(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::Transient,
            what: what.into(),
            hint: None,
        }
    }
    pub fn is_transient(&self) -> bool {
        self.kind == Kind::Transient
    }
    /// Prefix the message with where it happened (server, database, table).
    pub fn context(mut self, place: impl fmt::Display) -> Self {
        self.what = format!("{place}: {}", self.what);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        if let Some(h) = &self.hint {
            write!(f, " (fix: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Server error codes that a retry can get past.
const TRANSIENT_SERVER_CODES: &[u16] = &[
    1205, // lock wait timeout
    1213, // deadlock
    1040, // too many connections
    1053, // server shutdown in progress
    1927, // connection killed
    2006, // server has gone away
    2013, // lost connection
    1158, 1159, 1160, 1161, // network read/write errors
    4031, // disconnected by the server because of inactivity
];

impl From<mysql_async::Error> for Error {
    fn from(e: mysql_async::Error) -> Self {
        use mysql_async::Error as E;
        match &e {
            E::Io(_) | E::Driver(mysql_async::DriverError::ConnectionClosed) => {
                Error::transient(format!("connection lost: {e}"))
            }
            E::Server(s) if TRANSIENT_SERVER_CODES.contains(&s.code) => Error::transient(format!(
                "server error {} ({}): {}",
                s.code, s.state, s.message
            )),
            E::Server(s) => Error {
                kind: Kind::Definite,
                what: format!("server error {} ({}): {}", s.code, s.state, s.message),
                hint: server_hint(s.code).map(str::to_string),
            },
            _ => Error {
                kind: Kind::Definite,
                what: e.to_string(),
                hint: None,
            },
        }
    }
}

fn server_hint(code: u16) -> Option<&'static str> {
    Some(match code {
        1045 => "check the user name and password (MIGRATE_SOURCE_PASSWORD / --source-password-file)",
        1044 | 1142 | 1143 | 1227 | 1370 => "grant the missing privilege; `migrate check` prints the GRANT statements",
        1049 => "the database does not exist: check --databases",
        1236 => "the binlog position is gone from the source (purged); run `migrate snapshot` again from scratch with a new --state",
        1153 => "raise max_allowed_packet on the target to at least twice the largest row",
        _ => return None,
    })
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::definite(
            format!("state store: {e}"),
            "check that the --state file is writable and not used by an older migrate version",
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error {
            kind: Kind::Definite,
            what: e.to_string(),
            hint: None,
        }
    }
}
