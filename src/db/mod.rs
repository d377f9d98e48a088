//! Connections and session set-up for both servers.

pub mod consistent;
pub mod grants;
pub mod monitor;
pub mod preflight;
pub mod quote;
pub mod replica;
pub mod retry;
pub mod watchdog;

use crate::config::{Endpoint, SslMode};
use crate::error::{Error, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder, SslOpts};
use std::time::Duration;

/// Which session settings a connection gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Reads rows from the source: UTC, strings as raw bytes in their column charset.
    SourceReader,
    /// Writes rows to the target: UTC, permissive sql_mode (zero dates, id 0), no FK checks.
    TargetWriter,
    /// Metadata queries (information_schema, SHOW ...).
    Meta,
}

/// Every session's sql_mode, whatever the server's global one: migrate's own statements are
/// written for it, and a global mode must not change what they mean or what the server shows.
/// Measured on 10.11 with a source whose global mode had ANSI_QUOTES: the snapshot's
/// `CREATE DATABASE "shop"` (SHOW CREATE DATABASE quoted by that mode) failed on the target;
/// NO_TABLE_OPTIONS / NO_KEY_OPTIONS / NO_FIELD_OPTIONS strip SHOW CREATE TABLE, NO_BACKSLASH_ESCAPES
/// and EMPTY_STRING_IS_NULL change string literals, PAD_CHAR_TO_FULL_LENGTH what CHAR reads
/// give (`tests/divergence.rs`, `a_servers_global_settings_change_nothing`). Statements that carry
/// the source's own mode (a DDL from the binlog, a view, routine, event or trigger) set it
/// for themselves.
///
/// The mode itself is permissive for what a source can hold: id 0 in an AUTO_INCREMENT
/// column, zero dates and zero parts (no NO_ZERO_DATE / NO_ZERO_IN_DATE), and dates a session
/// with ALLOW_INVALID_DATES stored (`2020-02-30`): without it they were written as
/// 0000-00-00 with exit 0 (`divergence::invalid_dates_the_source_holds_are_copied`).
pub const SESSION_SQL_MODE: &str =
    "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,ALLOW_INVALID_DATES'";

fn session_sql(s: Session) -> Vec<&'static str> {
    let mut v = vec![
        "SET NAMES utf8mb4",
        "SET time_zone = '+00:00'",
        "SET SESSION sql_quote_show_create = 1",
        SESSION_SQL_MODE,
        // whatever the server's globals (or its init_connect) say, measured on 10.11:
        // - autocommit=0 would leave single-statement writes uncommitted;
        // - sql_select_limit cut every result short without an error (with 3, the database
        //   list had 3 names: a snapshot of every database skipped the rest; a table without
        //   a key would have been read as 3 rows);
        // - max_join_size refused large reads, sql_safe_updates the row-matched changes of
        //   tables without a key, max_statement_time (from 10.1) ended a chunk's read or a
        //   verify digest however often it was retried;
        // - a table created from SHOW CREATE TABLE text must mean what the text says: a target
        //   with explicit_defaults_for_timestamp=OFF gave `ts TIMESTAMP NOT NULL` a DEFAULT and
        //   ON UPDATE current_timestamp() (a session variable from 10.10; a DDL from the
        //   binlog sets the source's own).
        "SET SESSION autocommit = 1, sql_select_limit = 18446744073709551615, \
         sql_big_selects = 1, sql_safe_updates = 0 /*M!100101 , max_statement_time = 0 */ \
         /*M!101000 , explicit_defaults_for_timestamp = 1 */",
    ];
    match s {
        Session::SourceReader => {
            v.push("SET character_set_results = binary");
            v.push("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ");
        }
        Session::TargetWriter => {
            v.push("SET SESSION foreign_key_checks = 0");
            // - check_constraint_checks=0 (from 10.2.1): the rows are the source's, whatever its
            //   CHECK constraints say of them now (one added with the checks off over rows that
            //   break it, rows written by a session with them off, which a native replica also
            //   applies); the snapshot stopped on error 4025;
            // - innodb_strict_mode=0: a table option the source ignores (a KEY_BLOCK_SIZE left
            //   after its ROW_FORMAT changed) failed the CREATE TABLE on a strict target
            //   (errno 140); not strict, the target ignores it the same way.
            v.push(
                "SET SESSION /*M!100201 check_constraint_checks = 0, */ unique_checks = 1, \
                 innodb_strict_mode = 0",
            );
        }
        Session::Meta => {}
    }
    v
}

fn ssl_opts(ep: &Endpoint, verify: bool) -> Option<SslOpts> {
    let base = SslOpts::default();
    let base = match &ep.ssl_ca {
        Some(ca) => base.with_root_certs(vec![ca.clone().into()]),
        None => base,
    };
    match ep.ssl_mode {
        SslMode::Disabled => None,
        SslMode::Preferred | SslMode::Required => Some(
            base.with_danger_accept_invalid_certs(!verify)
                .with_danger_skip_domain_validation(true),
        ),
        SslMode::VerifyCa => Some(base.with_danger_skip_domain_validation(true)),
        SslMode::VerifyIdentity => Some(base),
    }
}

fn opts(ep: &Endpoint, tls: bool) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(ep.host.clone())
        .tcp_port(ep.port)
        .user(Some(ep.user.clone()))
        .pass(ep.password.clone())
        .prefer_socket(false)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .stmt_cache_size(0)
        // never refuse a large row on the client side: the servers' own limits apply
        .max_allowed_packet(Some(1 << 30))
        // the driver's idle-expiry figure (used only by connection pools, which migrate does
        // not use); given here, the driver skips its `SELECT @@wait_timeout` round trip
        .wait_timeout(Some(28_800))
        .ssl_opts(if tls { ssl_opts(ep, false) } else { None })
        .compression(ep.compress.map(mysql_async::Compression::new))
}

/// Servers (host:port) seen not to offer TLS under ssl-mode=preferred: later connections to
/// them skip the attempt (each refused attempt is a handshake, tens of ms over a VPN).
static NO_TLS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn known_without_tls(ep: &Endpoint) -> bool {
    let key = format!("{}:{}", ep.host, ep.port);
    NO_TLS.lock().map(|v| v.contains(&key)).unwrap_or(false)
}

fn remember_without_tls(ep: &Endpoint) {
    let key = format!("{}:{}", ep.host, ep.port);
    if let Ok(mut v) = NO_TLS.lock() {
        if !v.contains(&key) {
            v.push(key);
        }
    }
}

/// How long a connection's handshake, and then its session set-up, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Open a connection with the session settings `s`. Errors name the server and the fix.
pub async fn connect(ep: &Endpoint, s: Session) -> Result<Conn> {
    connect_session(ep, s).await.map_err(|e| match ep.role {
        side @ ("source" | "target") => e.on(side),
        _ => e,
    })
}

async fn connect_session(ep: &Endpoint, s: Session) -> Result<Conn> {
    let try_tls = match ep.ssl_mode {
        SslMode::Disabled => false,
        SslMode::Preferred => !known_without_tls(ep),
        _ => true,
    };
    let conn = match handshake(ep, try_tls).await? {
        Ok(c) => Ok(c),
        Err(e) if ep.ssl_mode == SslMode::Preferred && is_tls_refusal(&e) => {
            tracing::debug!(
                "{ep}: server does not offer TLS; connecting without (ssl-mode=preferred)"
            );
            remember_without_tls(ep);
            handshake(ep, false)
                .await?
                .map_err(|e| connect_error(ep, e))
        }
        Err(e) => Err(connect_error(ep, e)),
    }?;
    let mut conn = conn;
    watchdog::know(ep);
    // one round trip for the whole session set-up (each costs tens of ms over a VPN); bound
    // like the handshake (the watchdog's own probes connect through here)
    let setup = conn.query_drop(session_sql(s).join("; "));
    match tokio::time::timeout(CONNECT_TIMEOUT, setup).await {
        Err(_) => {
            return Err(Error::transient(format!(
                "{ep}: session set-up timed out after {} s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
        Ok(r) => r.map_err(|e| Error::from(e).context(ep))?,
    }
    Ok(conn)
}

/// The driver's handshake, bounded by `CONNECT_TIMEOUT` (the outer error); the inner one is
/// the driver's, for the caller to classify.
async fn handshake(
    ep: &Endpoint,
    tls: bool,
) -> Result<std::result::Result<Conn, mysql_async::Error>> {
    tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts(ep, tls)))
        .await
        .map_err(|_| {
            Error::transient(format!(
                "{ep}: connection timed out after {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })
}

fn is_tls_refusal(e: &mysql_async::Error) -> bool {
    matches!(
        e,
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
    )
}

fn connect_error(ep: &Endpoint, e: mysql_async::Error) -> Error {
    use mysql_async::Error as E;
    match &e {
        E::Io(io) => {
            let text = io.to_string();
            if text.contains("certificate") || text.contains("Tls") || text.contains("tls") {
                Error::definite(
                    format!("{ep}: TLS handshake failed: {text}"),
                    "check ssl-ca= (the CA that signed the server certificate) and ssl-mode=",
                )
            } else {
                Error::transient(format!("{ep}: cannot connect: {text}"))
            }
        }
        E::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => Error::definite(
            format!("{ep}: TLS is required (ssl-mode) but the server does not offer it"),
            "enable TLS on the server (ssl_cert/ssl_key) or use ssl-mode=preferred",
        ),
        _ => {
            let mut err = Error::from(e);
            if err.kind == crate::error::Kind::Transient {
                err.what = format!("{ep}: cannot connect: {}", err.what);
                return err;
            }
            err.context(ep)
        }
    }
}

/// Connect, retrying transient failures with backoff up to `attempts` times.
pub async fn connect_retry(ep: &Endpoint, s: Session, attempts: u32) -> Result<Conn> {
    let mut backoff = retry::Backoff::attempts(attempts);
    loop {
        match connect(ep, s).await {
            Ok(c) => return Ok(c),
            Err(e) => match backoff.delay(&e) {
                Some(d) => {
                    tracing::warn!("{e}; connecting again in {d:?}");
                    tokio::time::sleep(d).await;
                }
                None if e.is_transient() => {
                    return Err(Error::definite(
                        e.what,
                        format!("check that {} is reachable from this host", ep.host),
                    ))
                }
                None => return Err(e),
            },
        }
    }
}

/// A statement (or LOAD DATA row) of `len` bytes must fit the server's max_allowed_packet:
/// a larger one makes the server drop the connection, which would otherwise look like a
/// network error and be retried forever.
pub fn check_packet(len: usize, max_packet: usize, what: impl std::fmt::Display) -> Result<()> {
    if len + 1024 > max_packet {
        return Err(Error::definite(
            format!(
                "{what}: a row needs a {len}-byte statement, more than the target's max_allowed_packet ({max_packet})"
            ),
            crate::error::PACKET_HINT,
        ));
    }
    Ok(())
}

/// Query returning rows of optional UTF-8 strings (metadata only).
pub async fn query_strings(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    Ok(query_rows(conn, sql)
        .await?
        .into_iter()
        .map(row_strings)
        .collect())
}

/// The rows of a query, watched for a stalled link (`watchdog`).
pub async fn query_rows(conn: &mut Conn, sql: &str) -> Result<Vec<mysql_async::Row>> {
    Ok(row_sets(conn, sql)
        .await?
        .into_iter()
        .next()
        .unwrap_or_default())
}

/// A statement without a result, watched for a stalled link (`watchdog`); a server error
/// names the statement (its first line).
pub async fn run(conn: &mut Conn, sql: &str) -> Result<()> {
    drop_result(conn, sql.as_bytes(), &watchdog::label(sql), true).await
}

/// `run` for a statement as bytes (the text of an object in its own character set).
pub async fn run_bytes(conn: &mut Conn, sql: &[u8]) -> Result<()> {
    let what = watchdog::label(&String::from_utf8_lossy(&sql[..sql.len().min(400)]));
    drop_result(conn, sql, &what, true).await
}

/// A statement without a result, as bytes (the text of a source statement in its own
/// character set), watched like `run` and named `what` in the watchdog's messages (never
/// the statement itself: it may hold a credential); server errors are left for the caller
/// to place.
pub async fn run_raw(conn: &mut Conn, sql: &[u8], what: &str) -> Result<()> {
    drop_result(conn, sql, what, false).await
}

async fn drop_result(conn: &mut Conn, sql: &[u8], what: &str, name_errors: bool) -> Result<()> {
    let on = watchdog::of(conn);
    watchdog::watched(on.as_ref(), what, async {
        conn.query_drop(sql).await.map_err(|e| {
            let e = Error::from(e);
            if name_errors {
                e.context(what)
            } else {
                e
            }
        })
    })
    .await
}

/// The result sets of `sql` (statements separated by `;`), each row watched for a stalled
/// link: over a slow link a large result takes long, but its rows keep arriving.
async fn row_sets(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<mysql_async::Row>>> {
    let on = watchdog::of(conn);
    let what = watchdog::label(sql);
    let send = async { Ok(conn.query_iter(sql).await?) };
    let mut result = watchdog::watched(on.as_ref(), &what, send).await?;
    let mut sets = Vec::new();
    loop {
        let mut rows = Vec::new();
        loop {
            let row = async { Ok(result.next().await?) };
            match watchdog::watched(on.as_ref(), &what, row).await? {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        sets.push(rows);
        if result.is_empty() {
            break;
        }
    }
    Ok(sets)
}

pub(crate) fn row_strings(r: mysql_async::Row) -> Vec<Option<String>> {
    r.unwrap()
        .into_iter()
        .map(|v| match v {
            mysql_async::Value::NULL => None,
            mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            other => Some(other.as_sql(true).trim_matches('\'').to_string()),
        })
        .collect()
}

/// `queries` in one round trip, each giving one result set (checked): the rows of each.
pub async fn query_each(
    conn: &mut Conn,
    queries: &[String],
    what: &str,
) -> Result<Vec<Vec<Vec<Option<String>>>>> {
    let sets = query_sets(conn, &queries.join("; ")).await?;
    if sets.len() != queries.len() {
        // a statement failed without the driver reporting it: its error is still pending on
        // the connection and answers the next command; that error is the one to report
        if let Err(e) = run_raw(conn, b"DO 0", what).await {
            return Err(e.context(what));
        }
        return Err(Error::definite(
            format!(
                "{} results for the {} queries {what}",
                sets.len(),
                queries.len()
            ),
            "report this bug",
        ));
    }
    Ok(sets)
}

/// Several statements separated by `;` in one round trip: each result set's rows, in order
/// (statements without a result give an empty set).
pub async fn query_sets(conn: &mut Conn, sql: &str) -> Result<Vec<Vec<Vec<Option<String>>>>> {
    Ok(row_sets(conn, sql)
        .await?
        .into_iter()
        .map(|rows| rows.into_iter().map(row_strings).collect())
        .collect())
}

/// A server at least this far (its round trip) is across a VPN: the link, not the servers'
/// CPU, sets the pace of what is read from it (the binlog stream is compressed, the snapshot
/// keeps secondary indexes as rows arrive).
pub const FAR_RTT: Duration = Duration::from_millis(5);

/// One string value (first column of first row).
pub async fn query_one(conn: &mut Conn, sql: &str) -> Result<Option<String>> {
    Ok(query_strings(conn, sql)
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// A character set whose bytes are UTF-8 (the engine's sessions read text in utf8mb4).
pub fn is_utf8(charset: &str) -> bool {
    matches!(charset, "utf8mb4" | "utf8mb3" | "utf8")
}

/// `text` (UTF-8) as bytes of `charset`, converted by the server `conn` is on: to send a
/// statement in the character set of the session that first sent it.
pub async fn text_in(conn: &mut Conn, text: &str, charset: &str) -> Result<Vec<u8>> {
    let mut sql = String::from("SELECT CAST(CONVERT(_utf8mb4 ");
    crate::value::encode::push_hex(&mut sql, text.as_bytes());
    sql.push_str(&format!(" USING {}) AS BINARY)", quote::ident(charset)));
    query_rows(conn, &sql)
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.get_opt::<Vec<u8>, _>(0))
        .and_then(|v| v.ok())
        .ok_or_else(|| {
            Error::definite(
                format!("the server did not convert a statement's text to {charset}"),
                "report this with the statement",
            )
        })
}

/// The statement that puts a session in another session's `character_set_client` and
/// `collation_connection` (objects store them when created or altered).
pub fn client_charset_sql(client: &str, collation: &str) -> String {
    format!(
        "SET SESSION character_set_client = {}, collation_connection = {}",
        quote::string(client),
        quote::string(collation)
    )
}

/// A server variable, e.g. `log_bin`.
pub async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>> {
    query_one(conn, &format!("SELECT @@GLOBAL.{name}")).await
}
