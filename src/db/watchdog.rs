//! Long reads over a link that can stall without either end seeing it end.
//!
//! Over a VPN a connection can go silent without a reset: packets black-holed while an IPsec
//! tunnel renegotiates, a NAT or firewall entry that expired. The client then waits on a
//! socket that will never deliver; TCP keepalive notices only after about twelve minutes (the
//! driver sets the idle time, 30 s; the kernel's probe interval and count, 75 s × 9, apply).
//!
//! `watch` runs one step of a read (a statement's answer, the next row) and, when nothing
//! arrives for the endpoint's `stall-timeout`, asks the server over a new connection what the
//! reading connection is doing:
//! - still executing (a lock wait, a digest being computed, rows being examined): the wait
//!   goes on, and is logged;
//! - blocked sending to migrate (`Writing to net`), waiting to read from it (`Reading from
//!   net`), idle (it never got the statement), or gone; or the server cannot be reached at
//!   all: the link has stalled. The reading connection is killed on the server (which ends
//!   its transaction and releases its snapshot at once) and the step fails with a transient
//!   error: the caller reconnects and reads again, as after a dropped connection.
//!
//! The statements of the `db::query_*` helpers and `db::run` are watched too, on any
//! connection `db::connect` opened (the helpers find its endpoint by host and port), and so
//! are the snapshot readers' own reads (`snapshot::copy`).

use crate::config::Endpoint;
use crate::db::{self, Session};
use crate::error::{Error, Result};
use crate::obs::metrics;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every endpoint `db::connect` has connected to, to find a connection's own.
static KNOWN: Mutex<Vec<Arc<Endpoint>>> = Mutex::new(Vec::new());

/// Connections found stalled (host, port, id). Such a connection is never used again: it may
/// not have been killed (the server could not be reached), and a late answer to its last
/// statement would answer the next one in its place. Every later step on it fails at once
/// with a transient error, so its user reconnects.
static STALLED: Mutex<Vec<(String, u16, u32)>> = Mutex::new(Vec::new());

fn stalled_before(ep: &Endpoint, id: u32) -> bool {
    STALLED
        .lock()
        .map(|s| {
            s.iter()
                .any(|(h, p, i)| *h == ep.host && *p == ep.port && *i == id)
        })
        .unwrap_or(false)
}

/// An error for a step on connection `id` once it was found stalled (`STALLED`).
fn not_stalled_before(ep: &Endpoint, id: u32, what: &str) -> Result<()> {
    if stalled_before(ep, id) {
        return Err(Error::transient(format!(
            "{what}: connection {id} to the {ep} was found stalled; reconnecting"
        )));
    }
    Ok(())
}

fn mark_stalled(ep: &Endpoint, id: u32) {
    if let Ok(mut s) = STALLED.lock() {
        s.push((ep.host.clone(), ep.port, id));
    }
}

/// Remember `ep` for the connections made to it (`db::connect`).
pub fn know(ep: &Endpoint) {
    if let Ok(mut known) = KNOWN.lock() {
        if !known.iter().any(|k| k.host == ep.host && k.port == ep.port) {
            known.push(Arc::new(ep.clone()));
        }
    }
}

/// The endpoint `conn` was opened to, and its connection id.
pub fn of(conn: &Conn) -> Option<(Arc<Endpoint>, u32)> {
    let opts = conn.opts();
    let host = opts.ip_or_hostname();
    let port = opts.tcp_port();
    let known = KNOWN.lock().ok()?;
    let ep = known.iter().find(|k| k.host == host && k.port == port)?;
    Some((ep.clone(), conn.id()))
}

/// `watch` when the connection's endpoint is known (`of`), else just `step`.
pub async fn watched<T>(
    on: Option<&(Arc<Endpoint>, u32)>,
    what: &str,
    step: impl Future<Output = Result<T>>,
) -> Result<T> {
    match on {
        Some((ep, id)) => watch(ep, *id, what, step).await,
        None => step.await,
    }
}

/// A statement's first line, shortened, to name it in messages.
pub fn label(sql: &str) -> String {
    // (statements can be megabytes on one line: look at the start only)
    let mut head = sql.char_indices().take(81).map(|(i, _)| i);
    let cut = head.nth(80).unwrap_or(sql.len());
    let line = sql[..cut].lines().next().unwrap_or_default();
    if line.len() < sql.len() {
        format!("{line}...")
    } else {
        line.to_string()
    }
}

/// What the server says of a connection that has sent nothing for a while.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The server is working on its statement (its state, e.g. a lock wait).
    Working(String),
    /// Nothing will arrive on that connection (why).
    Stalled(String),
}

/// The verdict from a connection's `information_schema.PROCESSLIST` row (COMMAND, STATE);
/// None: the server has no such connection.
pub fn verdict(row: Option<(&str, &str)>) -> Verdict {
    match row {
        None => Verdict::Stalled("the server no longer has that connection".into()),
        Some((command, state))
            if matches!(command, "Query" | "Execute")
                && !matches!(state, "Writing to net" | "Reading from net") =>
        {
            Verdict::Working(if state.is_empty() {
                command.to_string()
            } else {
                state.to_string()
            })
        }
        Some((command, state)) => Verdict::Stalled(format!(
            "the server shows that connection as '{command}'{}",
            if state.is_empty() {
                String::new()
            } else {
                format!(" / '{state}'")
            }
        )),
    }
}

/// Await `step` of a read on connection `id` of `ep` (`what` names it in messages), asking
/// the server whenever it has been silent for `ep.stall_timeout` (see the module comment).
pub async fn watch<T>(
    ep: &Endpoint,
    id: u32,
    what: &str,
    step: impl Future<Output = Result<T>>,
) -> Result<T> {
    not_stalled_before(ep, id, what)?;
    tokio::pin!(step);
    // most steps (a row already received) are ready at once: no timer for those
    let ready = std::future::poll_fn(|cx| match step.as_mut().poll(cx) {
        std::task::Poll::Ready(r) => std::task::Poll::Ready(Some(r)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await;
    if let Some(r) = ready {
        return r;
    }
    let started = Instant::now();
    loop {
        match tokio::time::timeout(ep.stall_timeout, &mut step).await {
            Ok(r) => return r,
            Err(_) => {
                let silent = started.elapsed().as_secs();
                match look(ep, id).await {
                    Verdict::Working(state) => tracing::info!(
                        "{what}: nothing from the {} for {silent} s; it is still working on the statement ({state}); waiting",
                        ep.role
                    ),
                    Verdict::Stalled(why) => return Err(stalled(ep, id, what, silent, &why)),
                }
            }
        }
    }
}

/// Connection `id` found stalled: never used again, counted, and the step's error.
fn stalled(ep: &Endpoint, id: u32, what: &str, silent: u64, why: &str) -> Error {
    mark_stalled(ep, id);
    metrics::add("migrate_stalls_total", &[("side", ep.role)], 1.0);
    Error::transient(format!(
        "{what}: nothing from the {ep} for {silent} s and {why}: the link stalled (stall-timeout={} s); reconnecting",
        ep.stall_timeout.as_secs_f64()
    ))
}

/// Where a statement that streams data to the server (`LOAD DATA LOCAL`) waits: on the
/// server since an instant (the statement or a piece of data was handed to the driver and
/// has not been taken, or all was sent and the answer has not come), or on migrate's own
/// source of the data (None: its silence says nothing about the link).
pub type WaitingOnServer = Arc<Mutex<Option<Instant>>>;

/// Note in `w` that the wait is on the server from now (`true`) or on the data's source.
pub fn waiting_on_server(w: &WaitingOnServer, on_server: bool) {
    if let Ok(mut w) = w.lock() {
        *w = on_server.then(Instant::now);
    }
}

/// `watch` for a statement that streams data to the server: silence counts only while the
/// wait is on the server (`waiting`); the verdict is the same (a server reading from the net
/// while migrate has data for it waiting to be taken is a stalled link).
pub async fn watch_streaming<T>(
    ep: &Endpoint,
    id: u32,
    what: &str,
    waiting: WaitingOnServer,
    step: impl Future<Output = Result<T>>,
) -> Result<T> {
    not_stalled_before(ep, id, what)?;
    tokio::pin!(step);
    loop {
        tokio::select! {
            r = &mut step => return r,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let since = waiting.lock().ok().and_then(|w| *w);
        let Some(since) = since.filter(|s| s.elapsed() >= ep.stall_timeout) else {
            continue;
        };
        let silent = since.elapsed().as_secs();
        match look(ep, id).await {
            Verdict::Working(state) => {
                tracing::info!(
                    "{what}: nothing taken by the {} for {silent} s; it is still working on the statement ({state}); waiting",
                    ep.role
                );
                if let Ok(mut w) = waiting.lock() {
                    if *w == Some(since) {
                        *w = Some(Instant::now());
                    }
                }
            }
            Verdict::Stalled(why) => return Err(stalled(ep, id, what, silent, &why)),
        }
    }
}

/// Ask the server, over a new connection, what connection `id` is doing; kill it when it is
/// stalled (its transaction and snapshot end now rather than at the server's net timeouts).
async fn look(ep: &Endpoint, id: u32) -> Verdict {
    let limit = ep.stall_timeout.max(Duration::from_secs(2));
    let asked = tokio::time::timeout(limit, async {
        let mut conn = db::connect(ep, Session::Meta).await?;
        // not through the watched helpers: this is the watch
        let rows: Vec<mysql_async::Row> = conn
            .query(format!(
                "SELECT COMMAND, STATE FROM information_schema.PROCESSLIST WHERE ID = {id}"
            ))
            .await?;
        let rows: Vec<_> = rows.into_iter().map(db::row_strings).collect();
        Ok::<_, Error>((conn, rows))
    })
    .await;
    let (mut conn, rows) = match asked {
        Err(_) => {
            return Verdict::Stalled(format!(
                "a new connection to it did not answer within {} s",
                limit.as_secs_f64()
            ))
        }
        Ok(Err(e)) => return Verdict::Stalled(format!("a new connection to it failed: {e}")),
        Ok(Ok(x)) => x,
    };
    let row = rows.first().map(|r| {
        let cell = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        (cell(0), cell(1))
    });
    let v = verdict(row.as_ref().map(|(c, s)| (c.as_str(), s.as_str())));
    if matches!(v, Verdict::Stalled(_)) && row.is_some() {
        // best effort: the server's own net timeouts end it otherwise
        if let Ok(Err(e)) =
            tokio::time::timeout(limit, conn.query_drop(format!("KILL CONNECTION {id}"))).await
        {
            tracing::debug!("{ep}: KILL CONNECTION {id}: {e}");
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_only_while_the_server_executes() {
        for (c, s) in [
            ("Query", "Sending data"),
            ("Query", "Waiting for table metadata lock"),
            ("Query", "Statistics"),
            ("Execute", "Sending data"),
        ] {
            assert_eq!(verdict(Some((c, s))), Verdict::Working(s.into()), "{c}/{s}");
        }
        assert_eq!(
            verdict(Some(("Query", ""))),
            Verdict::Working("Query".into())
        );
        for (c, s) in [
            ("Query", "Writing to net"),
            ("Query", "Reading from net"),
            ("Sleep", ""),
            ("Killed", ""),
        ] {
            assert!(
                matches!(verdict(Some((c, s))), Verdict::Stalled(_)),
                "{c}/{s}"
            );
        }
        assert!(matches!(verdict(None), Verdict::Stalled(_)));
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(label("COMMIT"), "COMMIT");
        assert_eq!(label("SELECT 1;\nSELECT 2"), "SELECT 1;...");
        let long = format!("INSERT INTO `값` VALUES {}", "(1),".repeat(100_000));
        let l = label(&long);
        assert!(
            l.starts_with("INSERT INTO `값` VALUES (1),") && l.ends_with("..."),
            "{l}"
        );
        assert_eq!(l.chars().count(), 83);
    }

    #[tokio::test]
    async fn a_connection_found_stalled_is_not_used_again() {
        let ep = Endpoint::parse("source", "mysql://u@stalled.invalid:1").expect("url");
        mark_stalled(&ep, 7);
        let mut polled = false;
        let r = watch(&ep, 7, "x", async {
            polled = true;
            Ok(())
        })
        .await;
        assert!(r.as_ref().is_err_and(Error::is_transient), "{r:?}");
        assert!(!polled, "the step ran on a stalled connection");
        // other connections to that server are not affected; a ready step needs no timer
        assert!(watch(&ep, 8, "x", async { Ok(()) }).await.is_ok());
    }
}
