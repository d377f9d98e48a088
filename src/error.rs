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
    /// The server (or client library) error code, when the error came from MariaDB.
    pub code: Option<u16>,
    /// Which server it came from ("source" or "target"), when known: the first context that
    /// names one (`context`), or `on`. Counts reconnects by side.
    pub side: Option<&'static str>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn definite(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error {
            kind: Kind::Definite,
            what: what.into(),
            hint: Some(hint.into()),
            code: None,
            side: None,
        }
    }
    pub fn usage(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error {
            kind: Kind::Usage,
            what: what.into(),
            hint: Some(hint.into()),
            code: None,
            side: None,
        }
    }
    pub fn transient(what: impl Into<String>) -> Self {
        Error {
            kind: Kind::Transient,
            what: what.into(),
            hint: None,
            code: None,
            side: None,
        }
    }
    pub fn is_transient(&self) -> bool {
        self.kind == Kind::Transient
    }
    /// The MariaDB error code, if the error came from a server.
    pub fn code(&self) -> Option<u16> {
        self.code
    }
    /// Replace the hint (the operator's fix) of a definite error.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// Prefix the message with where it happened (server, database, table). A place that
    /// names a server ("target", "target, DDL ...", "target: ...", an endpoint "target
    /// user@host:port") also sets `side`, unless an inner context did; a table named
    /// `source.x` does not.
    pub fn context(mut self, place: impl fmt::Display) -> Self {
        let place = place.to_string();
        if self.side.is_none() {
            self.side = ["source", "target"].into_iter().find(|side| {
                let rest = place.strip_prefix(side);
                rest.is_some_and(|r| {
                    r.is_empty()
                        || r.starts_with(',')
                        || r.starts_with(':')
                        || (r.starts_with(' ') && r.contains('@'))
                })
            });
        }
        self.what = format!("{place}: {}", self.what);
        self
    }
    /// Mark which server the error came from (kept if already known).
    pub fn on(mut self, side: &'static str) -> Self {
        self.side = self.side.or(Some(side));
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
    1412, // table definition changed (a DDL ran under a consistent snapshot): read again
    4031, // disconnected by the server because of inactivity
];

/// Errors that say a packet (a row, a statement) is larger than `max_allowed_packet`
/// allows: retrying cannot help, the operator must raise the limit.
const PACKET_TOO_LARGE_CODES: &[u16] = &[
    1153, // got a packet bigger than max_allowed_packet
    1301, // result larger than max_allowed_packet
    2020, // client: packet bigger than max_allowed_packet
];

pub const PACKET_HINT: &str = "raise max_allowed_packet on both servers above the largest row (e.g. SET GLOBAL max_allowed_packet=1073741824; it takes effect for new connections)";

fn packet_too_large(what: String) -> Error {
    Error {
        kind: Kind::Definite,
        what,
        hint: Some(PACKET_HINT.into()),
        code: Some(1153),
        side: None,
    }
}

impl From<mysql_async::Error> for Error {
    fn from(e: mysql_async::Error) -> Self {
        use mysql_async::Error as E;
        match &e {
            E::Driver(mysql_async::DriverError::PacketTooLarge) => {
                packet_too_large(format!("packet too large: {e}"))
            }
            E::Io(io)
                if io
                    .to_string()
                    .to_ascii_lowercase()
                    .contains("packet too large")
                    || io
                        .to_string()
                        .to_ascii_lowercase()
                        .contains("max_allowed_packet") =>
            {
                packet_too_large(format!("packet too large: {e}"))
            }
            E::Io(_) | E::Driver(mysql_async::DriverError::ConnectionClosed) => {
                Error::transient(format!("connection lost: {e}"))
            }
            E::Server(s) if PACKET_TOO_LARGE_CODES.contains(&s.code) => {
                let mut err = packet_too_large(format!(
                    "server error {} ({}): {}",
                    s.code, s.state, s.message
                ));
                err.code = Some(s.code);
                err
            }
            E::Server(s) if TRANSIENT_SERVER_CODES.contains(&s.code) => Error {
                code: Some(s.code),
                ..Error::transient(format!(
                    "server error {} ({}): {}",
                    s.code, s.state, s.message
                ))
            },
            E::Server(s) => Error {
                kind: Kind::Definite,
                what: format!("server error {} ({}): {}", s.code, s.state, s.message),
                hint: server_hint(s.code, &s.message).map(str::to_string),
                code: Some(s.code),
                side: None,
            },
            _ => Error {
                kind: Kind::Definite,
                what: e.to_string(),
                hint: None,
                code: None,
                side: None,
            },
        }
    }
}

fn server_hint(code: u16, message: &str) -> Option<&'static str> {
    Some(match code {
        1235 if message.contains("WITHOUT OVERLAPS") => "a table with a WITHOUT OVERLAPS key cannot be written with REPLACE, which migrate needs: --exclude it (copy it another way) and take a new snapshot, or drop that key on the source",
        1045 => "check the user name and password (MIGRATE_SOURCE_PASSWORD / --source-password-file)",
        1044 | 1142 | 1143 | 1227 | 1370 => "grant the missing privilege; `migrate check` prints the GRANT statements",
        1049 => "the database does not exist: check --databases",
        1236 => "the source's binlog no longer (or never) holds the transactions after the checkpoint: purged, or a promoted replica whose binlog (log_slave_updates) starts later; point --source at a server whose binlog has them, or run `migrate snapshot` again with a new --state",
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
            code: None,
            side: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_context_naming_a_server_is_the_side() {
        let e = Error::transient("server error 2013: Lost connection")
            .context("USE before DDL")
            .context("target root@10.0.0.5:3306")
            .context("source binlog")
            .context("GTID 0-1-5");
        assert_eq!(e.side, Some("target"));
        assert!(e
            .what
            .starts_with("GTID 0-1-5: source binlog: target root@"));
        assert_eq!(Error::transient("x").context("GTID 0-1-5").side, None);
        assert_eq!(Error::transient("x").context("target.orders").side, None);
        assert_eq!(Error::transient("x").context("source binlog").side, None);
        assert_eq!(
            Error::transient("x").context("target, DDL `x`").side,
            Some("target")
        );
        assert_eq!(
            Error::transient("x").on("target").context("source").side,
            Some("target")
        );
        assert_eq!(
            Error::transient("x").context("source").on("target").side,
            Some("source")
        );
    }
}
