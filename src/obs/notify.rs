//! `--notify-url`: a Slack-compatible incoming webhook (a JSON POST with `text`, plus the
//! event's fields under `migrate` for other receivers) for phase changes, cutover steps,
//! verify verdicts, results and errors, so the team sees them where their alarms land.
//!
//! Messages are queued and sent in order by one background task; a webhook that is slow or
//! down never slows or fails the migration (a failed POST is logged once per message, after
//! two tries). Before the process exits, `flush` waits a few seconds for the queue to drain.
//! `http://` and `https://` (TLS with the Mozilla roots, as the webhook providers use).

use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

struct Notifier {
    tx: mpsc::UnboundedSender<Value>,
    pending: Arc<AtomicUsize>,
    verb: String,
}

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();

/// Where to POST.
#[derive(Clone, Debug, PartialEq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("--notify-url must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("--notify-url: credentials in the URL are not supported (put the secret in the path, as Slack does)".into());
        }
        // host, [v6 address], with an optional :port
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((h, rest)) => (h, rest.strip_prefix(':')),
                None => return Err("--notify-url: unclosed [ in the host".into()),
            },
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| "--notify-url: the port is not a number".to_string())?,
            None if tls => 443,
            None => 80,
        };
        let host = host.to_string();
        if host.is_empty() {
            return Err("--notify-url: no host".into());
        }
        Ok(Url {
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }
}

/// Start sending to `url` (inside the runtime). A bad URL is an error at start.
pub fn init(url: &str, verb: &str) -> crate::error::Result<()> {
    let url = Url::parse(url)
        .map_err(|e| crate::error::Error::usage(e, "give the webhook's full URL"))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let pending = Arc::new(AtomicUsize::new(0));
    let left = pending.clone();
    tokio::spawn(async move {
        while let Some(body) = rx.recv().await {
            let mut sent = post(&url, &body).await;
            if sent.is_err() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                sent = post(&url, &body).await;
            }
            if let Err(e) = sent {
                tracing::warn!("--notify-url {}: {e}", url.host);
            }
            left.fetch_sub(1, Ordering::SeqCst);
        }
    });
    let _ = NOTIFIER.set(Notifier {
        tx,
        pending,
        verb: verb.to_string(),
    });
    Ok(())
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Queue a message: `event` names its kind (phase, cutover_step, verify, result, error),
/// `text` is the line people read, `fields` the details.
pub fn send(event: &str, text: &str, fields: Value) {
    let Some(n) = NOTIFIER.get() else {
        return;
    };
    let body = json!({
        "text": format!("migrate {} on {}: {text}", n.verb, host()),
        "migrate": {
            "event": event,
            "verb": n.verb,
            "host": host(),
            "at": crate::state::rfc3339(crate::state::unix_now()),
            "fields": fields,
        }
    });
    n.pending.fetch_add(1, Ordering::SeqCst);
    if n.tx.send(body).is_err() {
        n.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The verb entered `phase` (sent once per change).
pub fn phase(phase: &str) {
    static LAST: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    let changed = match LAST.lock() {
        Ok(mut last) if *last != phase => {
            let before = std::mem::replace(&mut *last, phase.to_string());
            Some(before)
        }
        _ => None,
    };
    if let Some(before) = changed {
        let text = if before.is_empty() {
            format!("phase {phase}")
        } else {
            format!("phase {before} -> {phase}")
        };
        send(
            "phase",
            &text,
            json!({ "phase": phase, "previous": before }),
        );
    }
}

/// Wait until every queued message is sent (or `timeout`).
pub async fn flush(timeout: Duration) {
    let Some(n) = NOTIFIER.get() else {
        return;
    };
    let until = tokio::time::Instant::now() + timeout;
    while n.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(url: &Url, body: &Value) -> Result<(), String> {
    let payload = body.to_string();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: migrate/{}\r\nConnection: close\r\n\r\n{payload}",
        url.path,
        url.host,
        payload.len(),
        env!("CARGO_PKG_VERSION"),
    );
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let response = if url.tls {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                .map_err(|e| format!("tls name: {e}"))?;
            let mut s = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?;
            exchange(&mut s, &request).await?
        } else {
            let mut s = tcp;
            exchange(&mut s, &request).await?
        };
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!(
                "the webhook answered {}",
                response.lines().next().unwrap_or("nothing")
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    request: &str,
) -> Result<String, String> {
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    s.flush().await.map_err(|e| format!("send: {e}"))?;
    // the status line is enough
    let mut buf = vec![0u8; 512];
    let mut got = 0;
    while got < buf.len() {
        let n = s
            .read(&mut buf[got..])
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        got += n;
        if buf[..got].windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf[..got]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("https://hooks.slack.com/services/T0/B0/xyz").unwrap();
        assert_eq!(
            u,
            Url {
                tls: true,
                host: "hooks.slack.com".into(),
                port: 443,
                path: "/services/T0/B0/xyz".into()
            }
        );
        let u = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.port, u.path.as_str(), u.tls), (8080, "/", false));
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://user:pw@x/").is_err());
        assert!(Url::parse("http://x:port/").is_err());
        let u = Url::parse("http://[::1]:9000/h").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
    }
}
