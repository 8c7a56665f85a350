//! Listening sockets and connections: one accept loop per (listener, address
//! family) and worker, HTTP/1.1 and HTTP/2 (prior knowledge) on the same port.
//!
//! A listener's sockets are bound on the loopback address, not on its
//! balancer's addresses: the kernel's sk_lookup program hands them every
//! connection to any address of the balancer on the listener's port, and
//! the accepted connection keeps the balancer address it reached as its
//! local address.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};
use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::metrics::ListenerMetrics;

use crate::proxy::conn::lifecycle::{self, ConnDrain, Lingering, Phase, PhaseRx};
use crate::proxy::conn::meter::{Meter, Metered};
use crate::proxy::conn::rebalance::{self, PaceComparator};
use crate::proxy::conn::socket::{ClientSocket, Listener};
use crate::proxy::conn::spread::{Inbox, Seat, Sent, Spread};
use crate::proxy::h1::guard::{FramingGuard, GuardLimits, Switch};
use crate::proxy::h1::server;
use crate::proxy::service::{handle, with_all_fields, ListenerCtx, Shared};
use crate::proxy::upstream::body::ClientBody;
use crate::tls::client_cert::ClientCertHeaders;

/// What an HTTPS connection's requests carry to the service, in their
/// extensions.
#[derive(Debug)]
pub struct ConnTls {
    /// Mutual TLS: the headers about the client's certificate (empty when
    /// it presented none, or mutual TLS is off).
    pub client_cert: ClientCertHeaders,
    /// `TLSv1.3`, `TLS_AES_128_GCM_SHA256`: for the access log.
    pub version: &'static str,
    pub cipher: &'static str,
}

impl ConnTls {
    /// Whether a request on this connection needs it (it costs each one an
    /// extension map): for client-certificate headers, or for a listener
    /// that logs requests.
    pub fn wanted(&self, ctx: &ListenerCtx) -> bool {
        !self.client_cert.0.is_empty() || ctx.access_log.is_some()
    }
}

/// Limits a connection's parser enforces.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Request line plus header fields, in bytes (431 beyond).
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// A request head must arrive whole this long after its first byte.
    pub request_head_timeout: Duration,
}

impl ConnLimits {
    fn guard(&self) -> GuardLimits {
        GuardLimits {
            max_head: self.max_header_bytes,
            max_headers: self.max_headers,
            head_timeout: self.request_head_timeout,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The address family of a listener's socket group. Each family has its own
/// group: an IPv6 socket accepting IPv4 would show every IPv4 client as
/// `::ffff:a.b.c.d` (in `X-Forwarded-For`, in the access log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// `ipv4` or `ipv6`, as metrics label it.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    pub fn of(addr: std::net::IpAddr) -> Self {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// Where a steered group listens: any free port of the loopback address.
    fn loopback(self) -> SocketAddr {
        match self {
            Family::V4 => SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
            Family::V6 => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0)),
        }
    }
}

/// A socket group for a steered listener of `family`: bound on the
/// loopback address at a free port, once per worker. Nothing is bound to a
/// balancer address; the sk_lookup program brings the connections.
pub fn bind_steered(
    family: Family,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, BindError> {
    bind(family.loopback(), workers, true)
}

/// `n` more members for the steered group listening on `addr` (of this
/// user: SO_REUSEPORT admits only the same one).
pub fn join_steered(addr: SocketAddr, n: usize) -> Result<Vec<std::net::TcpListener>, BindError> {
    bind(addr, n, true)
}

/// Binds `addr` once per worker with SO_REUSEPORT, so each worker accepts on
/// its own socket and the kernel spreads connections among them (port 0:
/// the first socket takes a free port, the others join it). Plain sockets:
/// each worker's runtime takes its own (`TcpListener::from_std`).
fn bind(
    mut addr: SocketAddr,
    workers: usize,
    steered: bool,
) -> Result<Vec<std::net::TcpListener>, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut group = Vec::with_capacity(workers.max(1));
    for _ in 0..workers.max(1) {
        let err = |source| BindError { addr, source };
        // Non-blocking and close-on-exec from the start.
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )
        .map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
        // Accepted connections inherit it: no call per connection.
        socket.set_tcp_nodelay(true).map_err(err)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true).map_err(err)?;
        }
        if steered {
            // The loopback address needs no interface up: the group only
            // takes what sk_lookup hands it.
            if addr.is_ipv6() {
                socket.set_freebind_v6(true).map_err(err)?;
            } else {
                socket.set_freebind_v4(true).map_err(err)?;
            }
        }
        socket.bind(&addr.into()).map_err(err)?;
        socket.listen(4096).map_err(err)?;
        let listener: std::net::TcpListener = socket.into();
        if addr.port() == 0 {
            // The rest of the group joins the port the first one took.
            addr = listener.local_addr().map_err(err)?;
        }
        group.push(listener);
    }
    Ok(group)
}

/// What serves one listening socket; replaced whole on reload, so a new
/// configuration applies to the next request even on a kept-alive connection.
#[derive(Clone)]
pub struct Route {
    pub ctx: Arc<ListenerCtx>,
    pub shared: Arc<Shared>,
}

/// The current [`Route`] of a listening socket, shared by every worker.
#[derive(Clone)]
pub struct Slot(Arc<SlotInner>);

struct SlotInner {
    route: ArcSwap<Route>,
}

impl Slot {
    pub fn new(route: Route) -> Self {
        Slot(Arc::new(SlotInner {
            route: ArcSwap::from_pointee(route),
        }))
    }

    pub fn replace(&self, route: Route) {
        self.0.route.store(Arc::new(route));
    }
}

impl std::ops::Deref for Slot {
    type Target = ArcSwap<Route>;

    fn deref(&self) -> &ArcSwap<Route> {
        &self.0.route
    }
}

/// A connection's own copy of its listener's route. Bringing it up to date
/// ([`Cache::load`]) is one load of a pointer written only on reload, with
/// no lock and no reference count touched (the route's is shared by every
/// core).
pub type OwnRoute = Cache<Slot, Arc<Route>>;

/// A connection's view of its listener's route.
pub struct ConnRoute {
    /// A lock only one task ever takes: uncontended.
    cached: std::sync::Mutex<OwnRoute>,
}

impl ConnRoute {
    fn new(slot: Slot) -> Self {
        Self {
            cached: std::sync::Mutex::new(Cache::new(slot)),
        }
    }

    /// A copy of the route for a caller that keeps it and brings it up to
    /// date itself.
    pub fn own(&self) -> OwnRoute {
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The route, for a caller that cannot keep its own copy (hyper's
    /// service is shared); the connection's copy is refreshed under a lock
    /// only this connection takes.
    pub fn get(&self) -> Arc<Route> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(cached.load())
    }
}

/// This worker's share of one listening address: its socket, the
/// connections other workers pass to it, and the spread that decides.
pub struct Accept {
    pub listener: Listener,
    pub inbox: Inbox,
    pub spread: Arc<Spread>,
}

/// Accepts until the group's phase moves on; each connection runs on its
/// own task, on this worker or, when this worker holds more than its share,
/// on the least loaded one ([`super::spread`]). On [`Phase::Stop`] the
/// listening socket closes, in-flight requests finish and idle kept-alive
/// connections are closed. On [`Phase::Drain`] the listening socket is
/// returned open (another process accepts on it) and each connection closes
/// when no request can be on its way ([`super::lifecycle`]).
pub async fn serve(
    accept: Accept,
    slot: Slot,
    mut phase: PhaseRx,
) -> Option<std::net::TcpListener> {
    let Accept {
        listener,
        mut inbox,
        spread,
    } = accept;
    let me = crate::worker::index();
    // Connections watch a channel of this accept loop's own (one per worker
    // and listener): waiting on the shared one takes a lock every core
    // touches, once per request.
    let (local, local_rx) = watch::channel(Phase::Run);
    // One worker compares the workers' paces for this address.
    let mut pace = (me == 0 && spread.workers() > 1).then(|| PaceComparator::new(spread.workers()));
    let mut period = tokio::time::interval(rebalance::PERIOD);
    period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        let (stream, peer, seat, migrated) = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => match spread.place(stream, peer, me) {
                    Some((stream, seat)) => (stream, peer, seat, false),
                    None => continue,
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    slot.load().ctx.metrics.rejected_connections.incr();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // Registered here once it has to be waited on.
            Some(a) = inbox.recv() => (ClientSocket::Direct(a.stream), a.peer, a.seat, a.migrated),
            _ = period.tick(), if pace.is_some() => {
                if let Some(b) = pace.as_mut() {
                    b.tick(spread.load(), &spread.open());
                }
                continue;
            }
            p = lifecycle::next(&mut phase) => break p,
        };
        spawn_connection(stream, peer, seat, migrated, &slot, &local_rx, &spread);
    };
    let _ = local.send(ended);
    if ended != Phase::Drain {
        return None;
    }
    // Connections another worker passed here before this loop ended are
    // served, drained like the others.
    for a in inbox.close() {
        spawn_connection(
            ClientSocket::Direct(a.stream),
            a.peer,
            a.seat,
            a.migrated,
            &slot,
            &local_rx,
            &spread,
        );
    }
    Some(listener.into_std())
}

/// Serves an accepted (or passed) connection on a task of its own.
fn spawn_connection(
    stream: ClientSocket,
    peer: SocketAddr,
    seat: Seat,
    migrated: bool,
    slot: &Slot,
    phase: &PhaseRx,
    spread: &Arc<Spread>,
) {
    let route = ConnRoute::new(slot.clone());
    let (limits, metrics, tls) = {
        let r = route.get();
        (r.ctx.limits, r.ctx.metrics.clone(), r.ctx.tls.is_some())
    };
    // A connection moved here from another worker is not a new one. It
    // counts as active again: the worker it left stopped counting it, so
    // that one lost on the way (this worker stopping) is not counted on.
    if !migrated {
        metrics.new_connections.incr();
    }
    metrics.active_connections.incr();
    if tls {
        tokio::spawn(serve_tls_connection(
            stream,
            seat,
            peer,
            route,
            limits,
            metrics,
            phase.clone(),
            Arc::clone(spread),
        ));
        return;
    }
    tokio::spawn(serve_connection(
        stream,
        seat,
        peer,
        route,
        limits,
        metrics,
        phase.clone(),
        Arc::clone(spread),
    ));
}

/// How long a client may take over its TLS handshake; one that stalls is
/// dropped and counted as a negotiation error.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTPS client connection: the handshake, then HTTP/2 when ALPN chose
/// it, else HTTP/1.1 on the fast path and hyper after it. It stays on this
/// worker: a TLS session's state cannot move with its socket.
#[allow(clippy::too_many_arguments)]
async fn serve_tls_connection(
    stream: ClientSocket,
    seat: Seat,
    peer: SocketAddr,
    route: ConnRoute,
    limits: ConnLimits,
    metrics: Arc<ListenerMetrics>,
    mut phase: PhaseRx,
    spread: Arc<Spread>,
) {
    let _seat = seat;
    let Some(tls) = route
        .get()
        .ctx
        .tls
        .as_ref()
        .map(|t| (Arc::clone(&t.config), t.mutual.clone()))
    else {
        metrics.active_connections.decr();
        return;
    };
    let (config, mutual) = tls;
    let fd = stream.raw_fd();
    let meter = Meter::new(metrics.clone());
    let activity = Arc::clone(&meter.activity);
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(Metered::new(stream, meter));
    let mut stopped = phase.clone();
    let io = tokio::select! {
        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake) => match r {
            Ok(Ok(io)) => Some(io),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!(%peer, "TLS handshake timed out");
                None
            }
        },
        // A drain lets the handshake finish (the connection is served, then
        // closed after its response); a stop does not wait for it.
        _ = stopped.wait_for(|p| *p == Phase::Stop) => {
            metrics.active_connections.decr();
            return;
        }
    };
    let Some(io) = io else {
        metrics.tls_negotiation_errors.incr();
        metrics.active_connections.decr();
        return;
    };
    let session = io.get_ref().1;
    let h2 = session.alpn_protocol() == Some(b"h2");
    let conn = Arc::new(ConnTls {
        client_cert: ClientCertHeaders::new(&mutual, session.peer_certificates().unwrap_or(&[])),
        version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "-",
        },
        cipher: session
            .negotiated_cipher_suite()
            .map_or("-", |s| crate::tls::policy::openssl_name(s.suite())),
    });
    // HTTP/2 goes to hyper at once; HTTP/1.1 takes the fast path first.
    let (io, read) = if h2 {
        (io, BytesMut::new())
    } else {
        let mut load = spread.load().pinned_conn(crate::worker::index());
        let fast = server::serve(
            io,
            &route,
            peer,
            limits,
            &mut phase,
            &activity,
            &mut load,
            Some(&conn),
        )
        .await;
        match fast {
            Ok(server::Outcome::Handoff(io, read)) => (io, read),
            Ok(server::Outcome::Closed | server::Outcome::Migrate(..)) => {
                metrics.active_connections.decr();
                return;
            }
            Err(e) => {
                metrics.active_connections.decr();
                debug!(%peer, error = %e, "connection ended with an error");
                return;
            }
        }
    };
    let res = Box::pin(serve_with_hyper(
        io,
        read,
        h2,
        fd,
        Some(conn),
        route,
        peer,
        limits,
        activity,
        phase,
    ))
    .await;
    metrics.active_connections.decr();
    if let Err(e) = res {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// One client connection on this worker, from its arrival until it closes
/// or moves to another worker.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    mut stream: ClientSocket,
    mut seat: Seat,
    peer: SocketAddr,
    route: ConnRoute,
    limits: ConnLimits,
    metrics: Arc<ListenerMetrics>,
    mut phase: PhaseRx,
    spread: Arc<Spread>,
) {
    let (io, read, activity) = loop {
        // Counted at the socket, below everything that reads or writes it.
        let meter = Meter::new(metrics.clone());
        let activity = Arc::clone(&meter.activity);
        let mut load = spread.load().conn(seat.worker());
        // Bodyless HTTP/1.1 requests first; hyper takes over for good at the
        // first request that is anything else. The framing guard starts
        // there: the fast path refuses every head with a body.
        let fast = server::serve(
            Metered::new(stream, meter),
            &route,
            peer,
            limits,
            &mut phase,
            &activity,
            &mut load,
            None,
        )
        .await;
        match fast {
            Ok(server::Outcome::Handoff(io, read)) => break (io, read, activity),
            Ok(server::Outcome::Migrate(io, to)) => {
                match spread.migrate(io.into_inner(), peer, seat, to) {
                    // Counted as active again where it arrives.
                    Sent::Moved | Sent::Lost => {
                        metrics.active_connections.decr();
                        return;
                    }
                    Sent::Back(s, back) => (stream, seat) = (s, back),
                }
            }
            Ok(server::Outcome::Closed) => {
                metrics.active_connections.decr();
                return;
            }
            Err(e) => {
                metrics.active_connections.decr();
                debug!(%peer, error = %e, "connection ended with an error");
                return;
            }
        }
    };
    let _seat = seat;
    // Boxed: a task is as large as its largest state, and hyper's
    // connection would make every idle fast-path connection that much
    // larger (10,000 idle connections must fit in 64 MiB).
    let fd = io.get_ref().raw_fd();
    let res = Box::pin(serve_with_hyper(
        io, read, false, fd, None, route, peer, limits, activity, phase,
    ))
    .await;
    metrics.active_connections.decr();
    if let Err(e) = res {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The rest of a connection handed over by the fast path (or, on HTTPS,
/// chosen by ALPN): HTTP/1.1 behind the framing guard, or HTTP/2. `fd` is
/// the socket, for the address the client reached (below); `conn` what
/// every request on an HTTPS connection carries.
#[allow(clippy::too_many_arguments)]
async fn serve_with_hyper<IO>(
    io: IO,
    read: BytesMut,
    alpn_h2: bool,
    fd: Option<std::os::fd::RawFd>,
    conn: Option<Arc<ConnTls>>,
    route: ConnRoute,
    peer: SocketAddr,
    limits: ConnLimits,
    activity: Arc<AtomicU64>,
    mut phase_rx: PhaseRx,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let switch = Switch::default();
    // HTTP/2 is known by its preface, before any request: a drain may come
    // before the first one.
    let h2 = alpn_h2 || is_h2_preface(&read);
    let drain = Arc::new(ConnDrain::default());
    let io = TokioIo::new(FramingGuard::resume(
        Lingering::new(io, Arc::clone(&drain)),
        read,
        limits.guard(),
        switch.clone(),
    ));
    let svc_drain = Arc::clone(&drain);
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let route = route.get();
        let switch = switch.clone();
        let drain = Arc::clone(&svc_drain);
        let h1 = req.version() != http::Version::HTTP_2;
        let mut req = req.map(|b| http_body_util::Either::Left(ClientBody::new(b)));
        if let Some(c) = conn.as_ref().filter(|c| c.wanted(&route.ctx)) {
            req.extensions_mut().insert(Arc::clone(c));
        }
        if req.version() == http::Version::HTTP_10
            && !req.headers().contains_key(http::header::HOST)
        {
            // The address the client reached, the Host such a request is
            // forwarded with (the ALB uses its own name). Asked of the
            // socket here only: a call per connection would cost every
            // connection a system call.
            if let Some(host) = fd.and_then(local_addr).and_then(host_value) {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        async move {
            let resp = handle(&route, peer, req).await;
            resp.map(|r| {
                let mut r = with_all_fields(r);
                if r.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    switch.switched();
                    drain.upgraded();
                } else if h1 && drain.draining() {
                    // The last response of a drained connection: hyper
                    // closes after it.
                    r.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                r
            })
        }
    });
    let builder = builder(limits);
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    // The fast path may have seen the drain already, before handing over.
    let drained = *phase_rx.borrow() == Phase::Drain;
    let next = async move {
        if drained {
            Phase::Drain
        } else {
            lifecycle::next(&mut phase_rx).await
        }
    };
    tokio::pin!(next);
    let quiet = quiet_for(&activity, limits.idle_timeout);
    tokio::pin!(quiet);
    let mut phase = Phase::Run;
    loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => return r,
            p = &mut next, if phase == Phase::Run => {
                phase = p;
                if p != Phase::Drain {
                    // Finish in-flight requests, take no new ones.
                    conn.as_mut().graceful_shutdown();
                    return conn.await;
                }
                // HTTP/2: GOAWAY names the last stream taken, so no request
                // is lost. HTTP/1: the next response says close (the
                // service reads `drain`); `graceful_shutdown` would close
                // an idle connection at once, racing a request on its way.
                if drain.start() && h2 {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = &mut quiet => {
                // Closes an idle connection now, a busy one after its
                // request (HTTP/2: GOAWAY). One that stays silent past
                // another period (a head half sent) is dropped.
                conn.as_mut().graceful_shutdown();
                return tokio::select! {
                    r = conn.as_mut() => r,
                    _ = quiet_for(&activity, limits.idle_timeout) => Ok(()),
                };
            }
        }
    }
}

/// The start of HTTP/2's connection preface ("PRI * HTTP/2.0\r\n\r\nSM…"),
/// as far as it was read: the fast path hands it over once the request
/// line's version is not HTTP/1.
fn is_h2_preface(read: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let n = read.len().min(PREFACE.len());
    n >= b"PRI * HTTP/2".len() && read[..n] == PREFACE[..n]
}

/// The local address of the socket `fd`: the balancer address and port a
/// client connected to (the listening socket's own address is loopback).
fn local_addr(fd: std::os::fd::RawFd) -> Option<SocketAddr> {
    // SAFETY: the connection's service, which calls this, lives no longer
    // than the connection, which owns the socket: `fd` is open.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).local_addr().ok()?.as_socket()
}

/// `addr` as a Host field value: the address, and the port unless it is
/// HTTP's default.
fn host_value(addr: SocketAddr) -> Option<http::HeaderValue> {
    let port = addr.port();
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
    };
    let host = if port == 80 {
        ip
    } else {
        format!("{ip}:{port}")
    };
    http::HeaderValue::from_str(&host).ok()
}

/// Ticks per idle period: a connection is closed between 1 and 1.25 idle
/// timeouts after its last byte.
const IDLE_TICKS: u32 = 4;

/// Resolves once no byte has moved on the connection (`activity` unchanged)
/// for `timeout`. A coarse periodic check rather than a timer re-armed on
/// every read: that would cost a timer registration per request.
pub async fn quiet_for(activity: &AtomicU64, timeout: Duration) {
    let tick = (timeout / IDLE_TICKS).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = activity.load(Relaxed);
    let mut quiet = 0;
    loop {
        ticks.tick().await;
        let now = activity.load(Relaxed);
        if now == seen {
            quiet += 1;
            if quiet >= IDLE_TICKS {
                return;
            }
        } else {
            seen = now;
            quiet = 0;
        }
    }
}

/// Concurrent HTTP/2 streams per connection, as the ALB allows.
const H2_MAX_STREAMS: u32 = 128;

fn builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The idle timeout is `quiet_for`'s job; hyper's would arm a timer
        // per request.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        // The ALB's 128 concurrent requests per connection.
        .max_concurrent_streams(H2_MAX_STREAMS)
        // Rapid reset (CVE-2023-44487): streams a client opens and resets
        // before they are served, and streams it makes us reset, are
        // bounded per connection; beyond them it gets GOAWAY.
        .max_pending_accept_reset_streams(Some(H2_MAX_STREAMS as usize))
        .max_local_error_reset_streams(Some(1024));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn each_worker_gets_its_own_non_blocking_socket_on_one_address() {
        let first = bind("127.0.0.1:0".parse().unwrap(), 1, false).unwrap();
        let addr = first[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        // SO_REUSEPORT: more sockets on the same address, beside the first.
        let more = bind(addr, 2, false).unwrap();
        assert_eq!(more.len(), 2);
        for l in first.iter().chain(&more) {
            assert_eq!(l.local_addr().unwrap(), addr);
            let s = socket2::SockRef::from(l);
            assert!(s.nonblocking().unwrap());
            assert!(s.reuse_port().unwrap() && s.reuse_address().unwrap());
            assert!(s.tcp_nodelay().unwrap());
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", l.as_raw_fd())).unwrap();
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
                .unwrap();
            assert_ne!(flags & libc::O_CLOEXEC, 0, "close-on-exec");
        }
        // Listening: a connection is accepted by one of them.
        let _client = std::net::TcpStream::connect(addr).unwrap();
    }

    #[test]
    fn a_steered_group_shares_one_loopback_port_per_family() {
        for family in Family::ALL {
            let group = bind_steered(family, 3).unwrap();
            let addr = group[0].local_addr().unwrap();
            assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
            assert_eq!(Family::of(addr.ip()), family);
            for l in &group {
                assert_eq!(l.local_addr().unwrap(), addr);
                let s = socket2::SockRef::from(l);
                assert!(s.reuse_port().unwrap());
                if family == Family::V6 {
                    assert!(s.only_v6().unwrap(), "IPv4 clients never become ::ffff:");
                }
            }
        }
    }

    #[test]
    fn an_address_in_use_without_reuse_is_a_bind_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = bind(addr, 1, false).unwrap_err();
        assert_eq!(e.addr, addr);
        assert_eq!(e.source.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[test]
    fn only_http2_prefaces_are_taken_for_http2() {
        assert!(is_h2_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0"));
        assert!(is_h2_preface(b"PRI * HTTP/2"));
        assert!(!is_h2_preface(b"PRI * HTTP/1.1\r\n"));
        assert!(!is_h2_preface(b"POST / HTTP/1.1\r\n"));
        assert!(!is_h2_preface(b"PRI"));
    }
}
