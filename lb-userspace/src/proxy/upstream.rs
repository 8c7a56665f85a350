//! Connections to targets: a small keep-alive pool per target address, and one
//! attempt at sending a request.
//!
//! The pool is ours rather than a generic client's because a request whose
//! connection fails before any byte was sent must come back to the caller
//! intact, to be retried on another target: connecting is a separate step, and
//! `try_send_request` hands the request back when a pooled connection turned
//! out to be closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

/// What goes upstream: the client's request body, streamed, or nothing (a
/// bodyless request replayed on another target).
pub type UpstreamBody = http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>;
type Sender = http1::SendRequest<UpstreamBody>;

/// Idle connections kept per target.
const MAX_IDLE_PER_TARGET: usize = 256;

/// Why one attempt failed, and whether the request is still ours to retry.
pub enum AttemptError {
    /// Nothing was sent; the request is handed back.
    NotSent(Box<Request<UpstreamBody>>, ConnectFailure),
    /// The request went out (at least partly); the target failed it.
    Failed(hyper::Error),
    /// No response head within the timeout.
    Timeout,
}

#[derive(Debug)]
pub enum ConnectFailure {
    Refused,
    Timeout,
    Other(String),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Refused => f.write_str("connection refused"),
            ConnectFailure::Timeout => f.write_str("connect timeout"),
            ConnectFailure::Other(e) => f.write_str(e),
        }
    }
}

#[derive(Default)]
struct Pool {
    idle: Mutex<Vec<Sender>>,
}

impl Pool {
    /// A connection ready for a new request, if one is idle. Connections still
    /// busy with a response body stay pooled for later; closed ones are dropped.
    fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap();
        let mut busy = Vec::new();
        let found = loop {
            match idle.pop() {
                Some(s) if s.is_ready() => break Some(s),
                Some(s) if !s.is_closed() => busy.push(s),
                Some(_) => {}
                None => break None,
            }
        };
        idle.extend(busy);
        found
    }

    fn give_back(&self, s: Sender) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE_PER_TARGET {
            idle.push(s);
        }
    }
}

/// Pools for every target address and worker; shared by all listeners.
#[derive(Default)]
pub struct Upstreams {
    /// Read-mostly: written once per new target address.
    /// Keyed by (target, TLS, worker).
    pools: std::sync::RwLock<HashMap<(SocketAddr, bool, usize), Arc<Pool>>>,
    connect_timeout: Duration,
}

impl Upstreams {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            pools: Default::default(),
            connect_timeout,
        }
    }

    fn pool(&self, addr: SocketAddr, tls: bool) -> Arc<Pool> {
        let key = (addr, tls, crate::worker::index());
        if let Some(p) = self.pools.read().unwrap().get(&key) {
            return p.clone();
        }
        self.pools.write().unwrap().entry(key).or_default().clone()
    }

    /// Callers box this future: it holds a TLS handshake, and inline it would
    /// make every request's future (moved several times) that much larger.
    async fn connect(
        &self,
        addr: SocketAddr,
        tls: bool,
        upgrades: bool,
    ) -> Result<Sender, ConnectFailure> {
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_) => return Err(ConnectFailure::Timeout),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Err(ConnectFailure::Refused)
                }
                Ok(Err(e)) => return Err(ConnectFailure::Other(e.to_string())),
                Ok(Ok(s)) => s,
            };
        let _ = stream.set_nodelay(true);
        if tls {
            let stream =
                tokio::time::timeout(self.connect_timeout, super::tls::connect(stream, addr))
                    .await
                    .map_err(|_| ConnectFailure::Timeout)?
                    .map_err(|e| ConnectFailure::Other(format!("TLS: {e}")))?;
            handshake(TokioIo::new(stream), addr, upgrades).await
        } else {
            handshake(TokioIo::new(stream), addr, upgrades).await
        }
    }

    /// One attempt at `addr`: a pooled connection if one is idle (retried once
    /// on a fresh connection if it was closed under us), else a new one. The
    /// caller bounds the wait for the response head (one timer per request).
    pub async fn send(
        &self,
        addr: SocketAddr,
        tls: bool,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        let pool = self.pool(addr, tls);
        // Upgraded connections never return to the pool.
        let pooled = if upgrade { None } else { pool.take() };
        let mut sender = match pooled {
            Some(s) => s,
            None => match Box::pin(self.connect(addr, tls, upgrade)).await {
                Ok(s) => s,
                Err(e) => return Err(AttemptError::NotSent(Box::new(req), e)),
            },
        };
        for fresh in [false, true] {
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    if !upgrade {
                        pool.give_back(sender);
                    }
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    // The connection closed before the request was written:
                    // a stale pooled connection; once more on a new one.
                    Some(back) if !fresh => {
                        req = back;
                        sender = match Box::pin(self.connect(addr, tls, upgrade)).await {
                            Ok(s) => s,
                            Err(c) => return Err(AttemptError::NotSent(Box::new(req), c)),
                        };
                    }
                    Some(back) => {
                        return Err(AttemptError::NotSent(
                            Box::new(back),
                            ConnectFailure::Other(e.into_error().to_string()),
                        ))
                    }
                    None => return Err(AttemptError::Failed(e.into_error())),
                },
            }
        }
        unreachable!("the loop returns on its second pass")
    }
}

/// HTTP/1.1 over an established connection (plain or TLS), driven by its
/// own task on this worker.
async fn handshake<I>(io: I, addr: SocketAddr, upgrades: bool) -> Result<Sender, ConnectFailure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| ConnectFailure::Other(e.to_string()))?;
    tokio::spawn(async move {
        let res = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
        if let Err(e) = res {
            debug!(%addr, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}
