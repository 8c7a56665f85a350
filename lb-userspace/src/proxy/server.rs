//! Listening sockets and connections: one accept loop per (balancer address,
//! listener port), HTTP/1.1 and HTTP/2 (prior knowledge) on the same port.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::framing::FramingGuard;
use super::service::{handle, ListenerCtx, Shared};

/// Limits a connection's parser enforces.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Request line plus header fields, in bytes (431 beyond).
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` once per worker with SO_REUSEPORT, so each worker accepts on
/// its own socket and the kernel spreads connections among them. Plain
/// sockets: each worker's runtime takes its own (`TcpListener::from_std`).
pub fn bind(addr: SocketAddr, workers: usize) -> Result<Vec<std::net::TcpListener>, BindError> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let err = |source| BindError { addr, source };
    (0..workers.max(1))
        .map(|_| {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(err)?;
            socket.set_reuseaddr(true).map_err(err)?;
            socket.set_reuseport(true).map_err(err)?;
            socket.set_nodelay(true).map_err(err)?;
            socket.bind(addr).map_err(err)?;
            let fd = socket.into_raw_fd();
            // SAFETY: fd is a bound socket we own; ownership passes to the listener.
            let listener = unsafe {
                if libc::listen(fd, 4096) != 0 {
                    let e = std::io::Error::last_os_error();
                    libc::close(fd);
                    return Err(err(e));
                }
                std::net::TcpListener::from_raw_fd(fd)
            };
            listener.set_nonblocking(true).map_err(err)?;
            Ok(listener)
        })
        .collect()
}

/// What serves one listening socket; replaced whole on reload, read per
/// request, so a new configuration applies to the next request even on a
/// kept-alive connection.
#[derive(Clone)]
pub struct Route {
    pub ctx: Arc<ListenerCtx>,
    pub shared: Arc<Shared>,
}

pub type Slot = Arc<RwLock<Route>>;

/// Accepts until `shutdown` turns true; each connection runs on its own task.
/// In-flight requests then finish; idle kept-alive connections are closed.
pub async fn serve(listener: TcpListener, slot: Slot, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    slot.read().unwrap().ctx.metrics.rejected_connections.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let route = slot.read().unwrap().clone();
        let limits = route.ctx.limits;
        let metrics = route.ctx.metrics.clone();
        metrics.new_connections.fetch_add(1, Relaxed);
        metrics.active_connections.fetch_add(1, Relaxed);
        let slot = slot.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(
                FramingGuard::new(stream, limits.max_header_bytes, limits.max_headers)
                    .counting(metrics.clone()),
            );
            let svc = service_fn(move |req| {
                let Route { ctx, shared } = slot.read().unwrap().clone();
                handle(ctx, shared, peer, req)
            });
            let builder = builder(limits);
            let conn = builder.serve_connection_with_upgrades(io, svc);
            tokio::pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
                _ = conn_shutdown.changed() => {
                    // Finish in-flight requests, take no new ones.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            metrics.active_connections.fetch_sub(1, Relaxed);
            if let Err(e) = res {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

fn builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32);
    builder
}
