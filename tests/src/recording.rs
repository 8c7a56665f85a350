//! A target that records every byte it receives, for tests that must show
//! exactly what reached a target (and what never did): smuggled requests,
//! bodies cut short, fields the balancer adds, removes or keeps.
//!
//! It reads requests as a strict HTTP/1.1 server would (a body by its
//! Content-Length or chunked framing) and answers by path:
//! - `/switch`: 101 to `h2c` whether asked or not, then echoes raw bytes;
//! - `/ws`: 101 to a WebSocket upgrade, then echoes raw bytes;
//! - `/head?n=N`: a 200 whose head is exactly N bytes long;
//! - anything else (health checks included): 200 with the request head as
//!   received and `body-bytes: N` as its body (any Upgrade is declined).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::acceptor::Acceptor;
use crate::netns::Netns;

/// One request as the target read it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
    /// The body arrived whole (by its framing).
    pub complete: bool,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    /// A header field's values, by name in any case.
    pub fn field(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
            .collect()
    }
}

#[derive(Default)]
struct Log {
    bytes: Vec<u8>,
    requests: Vec<Seen>,
}

/// Stopped on drop.
pub struct RecordingTarget {
    _acceptor: Acceptor,
    log: Arc<Mutex<Log>>,
}

impl RecordingTarget {
    pub fn start(ns: &Netns, addr: SocketAddr) -> Result<Self> {
        let log = Arc::new(Mutex::new(Log::default()));
        let shared = log.clone();
        let acceptor = Acceptor::start(ns, addr, move |s| serve(s, &shared))?;
        Ok(Self {
            _acceptor: acceptor,
            log,
        })
    }

    /// Every byte received so far, all connections in arrival order.
    pub fn bytes(&self) -> Vec<u8> {
        self.log.lock().unwrap().bytes.clone()
    }

    /// Whether `needle` was ever received.
    pub fn received(&self, needle: &str) -> bool {
        self.bytes()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// The requests read so far, health checks included.
    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().requests.clone()
    }

    /// The requests for `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|r| r.path() == path)
            .collect()
    }
}

/// A connection's reader, keeping every byte in the log.
struct Conn<'a> {
    s: TcpStream,
    buf: Vec<u8>,
    log: &'a Mutex<Log>,
}

impl Conn<'_> {
    /// More bytes into `buf`; false at end of stream or error.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.log
                    .lock()
                    .unwrap()
                    .bytes
                    .extend_from_slice(&chunk[..n]);
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next `n` bytes, or what there was before the end of stream.
    fn take(&mut self, n: usize) -> (Vec<u8>, bool) {
        while self.buf.len() < n {
            if !self.fill() {
                return (std::mem::take(&mut self.buf), false);
            }
        }
        (self.buf.drain(..n).collect(), true)
    }

    /// The next line, CRLF included.
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Some(self.buf.drain(..i + 2).collect());
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// A chunked body, decoded; false if it ended early or was malformed.
    fn chunked(&mut self) -> (Vec<u8>, bool) {
        let mut body = Vec::new();
        loop {
            let Some(line) = self.line() else {
                return (body, false);
            };
            let size = String::from_utf8_lossy(&line);
            let size = size.trim_end().split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size, 16) else {
                return (body, false);
            };
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    match self.line() {
                        Some(l) if l == b"\r\n" => return (body, true),
                        Some(_) => {}
                        None => return (body, false),
                    }
                }
            }
            let (data, whole) = self.take(size + 2);
            body.extend_from_slice(&data[..data.len().min(size)]);
            if !whole || !data.ends_with(b"\r\n") {
                return (body, false);
            }
        }
    }
}

fn serve(s: TcpStream, log: &Mutex<Log>) {
    let mut c = Conn {
        s,
        buf: Vec::new(),
        log,
    };
    loop {
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !c.fill() {
                return;
            }
        };
        let head_bytes: Vec<u8> = c.buf.drain(..end).collect();
        let head = String::from_utf8_lossy(&head_bytes).into_owned();
        let mut seen = Seen {
            head,
            body: Vec::new(),
            complete: true,
        };
        let te = seen.field("transfer-encoding");
        let cl = seen.field("content-length");
        if te.iter().any(|v| v.eq_ignore_ascii_case("chunked")) {
            (seen.body, seen.complete) = c.chunked();
        } else if let Some(n) = cl.first().and_then(|v| v.parse::<usize>().ok()) {
            (seen.body, seen.complete) = c.take(n);
        }
        let complete = seen.complete;
        let path = seen.path().to_string();
        let upgrade = seen.field("upgrade");
        log.lock().unwrap().requests.push(seen.clone());
        if !complete {
            return;
        }
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        let switch = match route {
            "/switch" => Some("h2c"),
            "/ws" if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) => {
                Some("websocket")
            }
            _ => None,
        };
        if let Some(protocol) = switch {
            let reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: {protocol}\r\n\r\n"
            );
            if c.s.write_all(reply.as_bytes()).is_err() {
                return;
            }
            // Echo whatever follows, raw.
            let pending = std::mem::take(&mut c.buf);
            if c.s.write_all(&pending).is_err() {
                return;
            }
            let mut chunk = [0u8; 4096];
            loop {
                match c.s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        log.lock().unwrap().bytes.extend_from_slice(&chunk[..n]);
                        if c.s.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let reply = if route == "/head" {
            let n: usize = query
                .strip_prefix("n=")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let fixed = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: \r\n\r\n".len();
            let pad = "p".repeat(n.saturating_sub(fixed));
            format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Pad: {pad}\r\n\r\nok").into_bytes()
        } else {
            let body = format!("{}body-bytes: {}\n", seen.head, seen.body.len());
            let mut r =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            r.extend_from_slice(body.as_bytes());
            r
        };
        if c.s.write_all(&reply).is_err() {
            return;
        }
    }
}
