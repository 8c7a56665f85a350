//! Connections to targets: a small keep-alive pool per target address, and one
//! attempt at sending a request.
//!
//! The pool is ours rather than a generic client's because a request whose
//! connection fails before any byte was sent must come back to the caller
//! intact, to be retried on another target: connecting is a separate step, and
//! `try_send_request` hands the request back when a pooled connection turned
//! out to be closed. Bodyless requests to plain-HTTP targets (most of them)
//! take the leaner path of [`crate::proxy::h1::client`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use crate::proxy::h1::client::{self, H1Error};
use crate::proxy::h1::head;
use crate::proxy::upstream::body::ClientBody;
use crate::worker::PerWorker;

/// What goes upstream: the client's request body, streamed and watched, or
/// nothing (a bodyless request, or one replayed on another target).
pub type UpstreamBody = http_body_util::Either<ClientBody, http_body_util::Empty<bytes::Bytes>>;
type Sender = http1::SendRequest<UpstreamBody>;

/// Idle connections kept per target.
const MAX_IDLE_PER_TARGET: usize = 256;

/// Why one attempt failed, and whether the request is still ours to retry.
pub enum AttemptError {
    /// Nothing was sent; the request is handed back.
    NotSent(Box<Request<UpstreamBody>>, ConnectFailure),
    /// The request went out (at least partly); the target failed it. The
    /// request comes back when it was sent without a body and so is still
    /// whole (whether sending it again is safe is the caller's call).
    Failed(BoxError, Option<Box<Request<UpstreamBody>>>),
    /// No response head within the timeout.
    Timeout,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// A target's response body, from either kind of connection.
pub enum TargetBody {
    Hyper(Incoming),
    H1(client::ResponseBody),
}

impl TargetBody {
    /// The fields not in the response's map ([`crate::proxy::h1::raw_fields`]).
    pub fn take_raw_fields(&mut self) -> Option<crate::proxy::h1::raw_fields::RawFields> {
        match self {
            TargetBody::Hyper(_) => None,
            TargetBody::H1(b) => b.take_raw_fields(),
        }
    }
}

impl Body for TargetBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            TargetBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            TargetBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }
    fn is_end_stream(&self) -> bool {
        match self {
            TargetBody::Hyper(b) => b.is_end_stream(),
            TargetBody::H1(b) => b.is_end_stream(),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            TargetBody::Hyper(b) => b.size_hint(),
            TargetBody::H1(b) => b.size_hint(),
        }
    }
}

/// Idle connections to one target, used by one worker.
#[derive(Default)]
struct Pool {
    /// hyper's, for requests with a body, upgrades and TLS.
    idle: Mutex<Vec<Sender>>,
    /// Ours, for bodyless requests to plain-HTTP targets; newest at the back.
    plain: Mutex<std::collections::VecDeque<client::Conn>>,
    /// HTTP/2 targets: one multiplexed connection.
    h2: Mutex<Option<H2Sender>>,
}

type H2Sender = hyper::client::conn::http2::SendRequest<UpstreamBody>;

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

    /// The most recently used plain connection the target has not closed.
    fn take_plain(&self) -> Option<client::Conn> {
        let mut plain = self.plain.lock().unwrap();
        while let Some(c) = plain.pop_back() {
            if c.is_reusable() {
                return Some(c);
            }
        }
        None
    }
}

impl client::Recycle for Pool {
    fn recycle(&self, conn: client::Conn) {
        // Bytes past the response: the connection is out of step. (Whether
        // the target closed it is asked when it is taken again.)
        if conn.has_leftovers() {
            return;
        }
        let conn = conn.idle();
        let mut plain = self.plain.lock().unwrap();
        // The oldest idle connection is the likeliest to have been closed by
        // the target; looking at one per return keeps the pool from holding
        // closed sockets while the newest ones do all the work.
        if plain.front().is_some_and(|c| !c.is_reusable()) {
            plain.pop_front();
        }
        if plain.len() < MAX_IDLE_PER_TARGET {
            plain.push_back(conn);
        }
    }
}

/// Pools keyed by (target, TLS), looked up on every request: a fast hash
/// (the keys are configured target addresses, not attacker-chosen).
type PoolMap = HashMap<(SocketAddr, bool), Arc<Pool>, foldhash::fast::RandomState>;

/// Pools for every target address and worker; shared by all listeners.
pub struct Upstreams {
    /// Each worker's pools: looking one up takes a lock no other core touches.
    shards: PerWorker<std::sync::RwLock<PoolMap>>,
    connect_timeout: Duration,
}

impl Upstreams {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            shards: PerWorker::default(),
            connect_timeout,
        }
    }

    /// This worker's pool for `addr`: a pooled connection is used on the
    /// thread that drives it.
    fn pool(&self, addr: SocketAddr, tls: bool) -> Arc<Pool> {
        let shard = self.shards.get();
        if let Some(p) = shard.read().unwrap().get(&(addr, tls)) {
            return p.clone();
        }
        shard
            .write()
            .unwrap()
            .entry((addr, tls))
            .or_default()
            .clone()
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> Result<TcpStream, ConnectFailure> {
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
        Ok(stream)
    }

    /// Callers box this future: it holds a TLS handshake, and inline it would
    /// make every request's future (moved several times) that much larger.
    async fn connect(
        &self,
        addr: SocketAddr,
        tls: bool,
        upgrades: bool,
    ) -> Result<Sender, ConnectFailure> {
        let stream = self.connect_tcp(addr).await?;
        if tls {
            let stream = tokio::time::timeout(
                self.connect_timeout,
                crate::proxy::upstream::tls::connect(stream, addr),
            )
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
    /// `h2`: the target speaks HTTP/2 ([`super::h2::into_h2`] made the request
    /// ready for it).
    pub async fn send(
        &self,
        addr: SocketAddr,
        tls: bool,
        h2: bool,
        req: Request<UpstreamBody>,
    ) -> Result<Response<TargetBody>, AttemptError> {
        if h2 {
            return Box::pin(self.send_h2(addr, tls, req))
                .await
                .map(|r| r.map(TargetBody::Hyper));
        }
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        if !tls && !upgrade && req.body().is_end_stream() && req.method() != Method::CONNECT {
            return self.send_plain(addr, req).await;
        }
        // Boxed: kept out of the (more common) plain path's future size.
        Box::pin(self.send_hyper(addr, tls, upgrade, req))
            .await
            .map(|r| r.map(TargetBody::Hyper))
    }

    /// A bodyless request to a plain-HTTP target, on our own connection.
    async fn send_plain(
        &self,
        addr: SocketAddr,
        req: Request<UpstreamBody>,
    ) -> Result<Response<TargetBody>, AttemptError> {
        let pool = self.pool(addr, false);
        let recycle: Arc<dyn client::Recycle> = pool.clone();
        let idempotent = matches!(
            *req.method(),
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mut pooled = pool.take_plain();
        // At most twice: a pooled connection, then a fresh one. (One await
        // of `send` in a loop keeps this future small.)
        loop {
            let (conn, was_pooled) = match pooled.take() {
                Some(c) => (c, true),
                None => match Box::pin(self.connect_tcp(addr)).await {
                    Ok(s) => (client::Conn::new(s), false),
                    Err(e) => return Err(AttemptError::NotSent(Box::new(req), e)),
                },
            };
            let err = match conn.send(&req, recycle.clone()).await {
                Ok(resp) => {
                    head::recycle(req.into_parts().0.headers);
                    return Ok(resp.map(TargetBody::H1));
                }
                Err(e) => e,
            };
            match err {
                // A pooled connection the target closed just as we wrote to
                // it: once more on a fresh connection, if the target cannot
                // have acted on the request or acting twice is harmless (RFC
                // 9112 §9.3.1).
                H1Error::Write(_) if was_pooled => {}
                H1Error::Closed if was_pooled && idempotent => {}
                // Nothing reached a fresh connection's target.
                H1Error::Write(e) => {
                    return Err(AttemptError::NotSent(
                        Box::new(req),
                        ConnectFailure::Other(e.to_string()),
                    ))
                }
                e => return Err(AttemptError::Failed(e.into(), Some(Box::new(req)))),
            }
            debug!(%addr, "pooled connection was closed; reconnecting");
        }
    }

    async fn send_hyper(
        &self,
        addr: SocketAddr,
        tls: bool,
        upgrade: bool,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, AttemptError> {
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
                    // hyper's buffer limit catches a head far too large,
                    // but not one just past the limit that arrived in the
                    // same read as its end: the plain path's limit, applied
                    // to the head as hyper parsed it.
                    if head_len(&resp) > client::MAX_HEAD {
                        return Err(AttemptError::Failed(
                            Box::new(H1Error::Invalid("response head too large")),
                            None,
                        ));
                    }
                    // A connection that switched protocols unasked is no
                    // longer HTTP: it is not used again.
                    if !upgrade && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
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
                    None => return Err(AttemptError::Failed(e.into_error().into(), None)),
                },
            }
        }
        unreachable!("the loop returns on its second pass")
    }
}

impl Upstreams {
    /// This worker's HTTP/2 connection to `addr`, made if there is none (or
    /// it closed).
    async fn h2_sender(
        &self,
        pool: &Pool,
        addr: SocketAddr,
        tls: bool,
        fresh: bool,
    ) -> Result<H2Sender, ConnectFailure> {
        if !fresh {
            if let Some(s) = pool.h2.lock().unwrap().as_ref().filter(|s| !s.is_closed()) {
                return Ok(s.clone());
            }
        }
        let stream = self.connect_tcp(addr).await?;
        let sender = tokio::time::timeout(
            self.connect_timeout,
            super::h2::connect::<UpstreamBody>(stream, addr, tls),
        )
        .await
        .map_err(|_| ConnectFailure::Timeout)??;
        *pool.h2.lock().unwrap() = Some(sender.clone());
        Ok(sender)
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        tls: bool,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, AttemptError> {
        let pool = self.pool(addr, tls);
        for fresh in [false, true] {
            let mut sender = match self.h2_sender(&pool, addr, tls, fresh).await {
                Ok(s) => s,
                Err(e) => return Err(AttemptError::NotSent(Box::new(req), e)),
            };
            if sender.ready().await.is_err() {
                // Closed under us (GOAWAY, reset): a new connection.
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(mut resp) => {
                    // Answered to an HTTP/1.1 client as its own version.
                    *resp.version_mut() = http::Version::HTTP_11;
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => req = back,
                    Some(back) => {
                        return Err(AttemptError::NotSent(
                            Box::new(back),
                            ConnectFailure::Other(e.into_error().to_string()),
                        ))
                    }
                    None => return Err(AttemptError::Failed(e.into_error().into(), None)),
                },
            }
        }
        Err(AttemptError::NotSent(
            Box::new(req),
            ConnectFailure::Other("the HTTP/2 connection closed".into()),
        ))
    }
}

/// The length of a response head as sent in the usual form: status line,
/// `name: value` fields, CRLFs (hyper drops the optional whitespace around
/// values, so a head padded with it counts a little short).
fn head_len<B>(resp: &Response<B>) -> usize {
    let status = resp.status();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map_or(status.canonical_reason().unwrap_or("").len(), |r| {
            r.as_bytes().len()
        });
    let fields: usize = resp
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + 2 + v.len() + 2)
        .sum();
    "HTTP/1.1 200 ".len() + reason + 2 + fields + 2
}

/// HTTP/1.1 over an established connection (plain or TLS), driven by its
/// own task on this worker.
async fn handshake<I>(io: I, addr: SocketAddr, upgrades: bool) -> Result<Sender, ConnectFailure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        // The same response-head limit as the plain path's.
        .max_buf_size(client::MAX_HEAD)
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
