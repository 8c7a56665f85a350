//! A target that answers with canned bytes chosen by the request's path: the
//! response framings a balancer must read correctly (chunked, close-delimited,
//! interim responses, bodiless statuses, invalid heads) and a target that
//! closes its keep-alive connections behind the balancer's back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use crate::acceptor::Acceptor;
use crate::netns::Netns;

/// What to send for one path.
#[derive(Clone)]
pub struct Script {
    pub path: &'static str,
    pub reply: Vec<u8>,
    /// Close the connection right after the reply (without saying so).
    pub close: bool,
}

impl Script {
    pub fn new(path: &'static str, reply: &str) -> Self {
        Self {
            path,
            reply: reply.as_bytes().to_vec(),
            close: false,
        }
    }

    pub fn then_close(mut self) -> Self {
        self.close = true;
        self
    }
}

/// Stopped on drop.
pub struct ScriptedTarget {
    _acceptor: Acceptor,
    connections: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

impl ScriptedTarget {
    pub fn start(ns: &Netns, addr: SocketAddr, scripts: Vec<Script>) -> Result<Self> {
        let connections = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (conns, reqs) = (connections.clone(), requests.clone());
        let acceptor = Acceptor::start(ns, addr, move |s| {
            conns.fetch_add(1, Ordering::Relaxed);
            serve(s, &scripts, &reqs);
        })?;
        Ok(Self {
            _acceptor: acceptor,
            connections,
            requests,
        })
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Request heads read so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Answers request heads (bodyless requests only) until the peer closes or
/// a script says to close.
fn serve(mut s: TcpStream, scripts: &[Script], requests: &AtomicU64) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end + 4);
        requests.fetch_add(1, Ordering::Relaxed);
        let path = head.split(' ').nth(1).unwrap_or("/");
        let script = scripts.iter().find(|sc| sc.path == path);
        let (reply, close) = match script {
            Some(sc) => (sc.reply.as_slice(), sc.close),
            None => (
                &b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..],
                false,
            ),
        };
        if s.write_all(reply).is_err() || close {
            return;
        }
    }
}
