//! A TCP proxy for fault tests: forwards 127.0.0.1:listen -> 127.0.0.1:upstream, and can
//! drop every open connection (`cut`) and refuse new ones for a while (`refuse`).

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
}

/// One connection's conversation: which side spoke last, and the proxy's count of round trips
/// (a client sending after the server spoke: what a link's latency is paid for).
struct Conversation {
    server_spoke_last: AtomicBool,
    turns: Arc<AtomicU64>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, from_client: bool, talk: Arc<Conversation>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
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
        let (c2, r2, t2) = (conns.clone(), refusing.clone(), turns.clone());
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
                std::thread::spawn(move || pump(c_read, s_write, true, t));
                std::thread::spawn(move || pump(server, client, false, talk));
            }
        });
        Proxy {
            port,
            conns,
            refusing,
            turns,
        }
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
