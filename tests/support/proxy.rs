//! A TCP proxy for fault tests: forwards 127.0.0.1:listen -> 127.0.0.1:upstream, and can
//! drop every open connection (`cut`), refuse new ones for a while (`outage`), and stall the
//! open ones without closing them (`stall_after`: a VPN that black-holes its packets).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Proxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    refusing: Arc<AtomicBool>,
    turns: Arc<AtomicU64>,
    stall: Arc<Stall>,
}

/// Black-holing: once the servers have sent `at` bytes in all (or the clients `at_client`),
/// every connection open then forwards nothing more, in either direction, and never closes
/// (its data and its end are held); connections opened later work.
struct Stall {
    at: AtomicU64,
    server_bytes: AtomicU64,
    at_client: AtomicU64,
    client_bytes: AtomicU64,
    open: Mutex<Vec<Arc<AtomicBool>>>,
    stalled: AtomicU64,
}

impl Stall {
    fn count(&self, n: usize, from_client: bool) {
        let (bytes, at) = if from_client {
            (&self.client_bytes, &self.at_client)
        } else {
            (&self.server_bytes, &self.at)
        };
        let total = bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if total >= at.load(Ordering::SeqCst) {
            self.at.store(u64::MAX, Ordering::SeqCst);
            self.at_client.store(u64::MAX, Ordering::SeqCst);
            if let Ok(open) = self.open.lock() {
                for f in open.iter() {
                    if !f.swap(true, Ordering::SeqCst) {
                        self.stalled.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }
}

/// Hold the connection's thread for good (a black-holed connection never ends).
fn hold() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// One connection's conversation: which side spoke last, and the proxy's count of round trips
/// (a client sending after the server spoke: what a link's latency is paid for).
struct Conversation {
    server_spoke_last: AtomicBool,
    turns: Arc<AtomicU64>,
}

fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    from_client: bool,
    talk: Arc<Conversation>,
    stall: Arc<Stall>,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if frozen.load(Ordering::SeqCst) {
            hold();
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                stall.count(n, from_client);
                if frozen.load(Ordering::SeqCst) {
                    hold();
                }
                if from_client {
                    if talk.server_spoke_last.swap(false, Ordering::SeqCst) {
                        talk.turns.fetch_add(1, Ordering::SeqCst);
                    }
                } else {
                    talk.server_spoke_last.store(true, Ordering::SeqCst);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    if frozen.load(Ordering::SeqCst) {
        hold();
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Proxy {
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let turns = Arc::new(AtomicU64::new(0));
        let stall = Arc::new(Stall {
            at: AtomicU64::new(u64::MAX),
            server_bytes: AtomicU64::new(0),
            at_client: AtomicU64::new(u64::MAX),
            client_bytes: AtomicU64::new(0),
            open: Mutex::default(),
            stalled: AtomicU64::new(0),
        });
        let (c2, r2, t2, s2) = (
            conns.clone(),
            refusing.clone(),
            turns.clone(),
            stall.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if r2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                    if let Ok(mut v) = c2.lock() {
                        v.push(a);
                        v.push(b);
                    }
                }
                let (c_read, s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let talk = Arc::new(Conversation {
                    server_spoke_last: AtomicBool::new(false),
                    turns: t2.clone(),
                });
                let t = talk.clone();
                let frozen = Arc::new(AtomicBool::new(false));
                if let Ok(mut open) = s2.open.lock() {
                    open.push(frozen.clone());
                }
                let (s3, f3) = (s2.clone(), frozen.clone());
                std::thread::spawn(move || pump(c_read, s_write, true, t, s3, f3));
                let s4 = s2.clone();
                std::thread::spawn(move || pump(server, client, false, talk, s4, frozen));
            }
        });
        Proxy {
            port,
            conns,
            refusing,
            turns,
            stall,
        }
    }

    /// Stall every connection open when the servers will have sent `bytes` more than so far
    /// (see `Stall`).
    pub fn stall_after(&self, bytes: u64) {
        let now = self.stall.server_bytes.load(Ordering::SeqCst);
        self.stall.at.store(now + bytes, Ordering::SeqCst);
    }

    /// Bytes the servers have sent through the proxy so far.
    /// Stall once the clients have sent `bytes` more (e.g. in the middle of a `LOAD DATA
    /// LOCAL`, whose rows flow from the client).
    pub fn stall_after_client(&self, bytes: u64) {
        let now = self.stall.client_bytes.load(Ordering::SeqCst);
        self.stall.at_client.store(now + bytes, Ordering::SeqCst);
    }

    pub fn server_bytes(&self) -> u64 {
        self.stall.server_bytes.load(Ordering::SeqCst)
    }

    /// Connections stalled so far (closed ones included).
    pub fn stalled(&self) -> u64 {
        self.stall.stalled.load(Ordering::SeqCst)
    }

    /// Round trips so far, over every connection: each time a client sent after its server
    /// spoke (the handshake's counts too).
    pub fn round_trips(&self) -> u64 {
        self.turns.load(Ordering::SeqCst)
    }

    /// Drop every connection going through the proxy now.
    pub fn cut(&self) {
        if let Ok(mut v) = self.conns.lock() {
            for s in v.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Drop everything and refuse new connections for `d`.
    pub fn outage(&self, d: Duration) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut();
        std::thread::sleep(d);
        self.refusing.store(false, Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}?ssl-mode=disabled", self.port)
    }
}
