//! Drain and stop on real sockets: a listener served by a worker as the
//! daemon runs one, a target on loopback, clients that watch for the
//! response fields, the end of the connection and resets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::*;
use crate::daemon::workers::Workers;
use crate::daemon::WorkerAffinity;
use crate::metrics::ListenerMetrics;
use crate::proxy::conn::listener::{self, bind_steered, Accept, Family, Route, Slot};
use crate::proxy::conn::socket::Listener;
use crate::proxy::conn::spread::Spread;

/// A target on loopback: `/slow` answers when the test releases it, `/ws`
/// switches to an echo tunnel, anything else answers "ok".
struct Target {
    addr: SocketAddr,
    /// One message per `/slow` request that reached the target.
    arrived: mpsc::UnboundedReceiver<()>,
    /// One permit answers one `/slow` request.
    release: Arc<Semaphore>,
}

impl Target {
    async fn start() -> Self {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, arrived) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let gate = Arc::clone(&release);
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let (tx, gate) = (tx.clone(), Arc::clone(&gate));
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (tx, gate) = (tx.clone(), Arc::clone(&gate));
                    async move {
                        let reply = |status: u16, body: &'static str| {
                            hyper::Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(body)))
                                .unwrap()
                        };
                        Ok::<_, std::convert::Infallible>(match req.uri().path() {
                            "/slow" => {
                                let _ = tx.send(());
                                gate.acquire().await.unwrap().forget();
                                reply(200, "slow")
                            }
                            "/ws" => {
                                tokio::spawn(async move {
                                    let up = hyper::upgrade::on(req).await.unwrap();
                                    let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                                    let _ = tokio::io::copy(&mut r, &mut w).await;
                                });
                                let mut r = reply(101, "");
                                let h = r.headers_mut();
                                h.insert("upgrade", "websocket".parse().unwrap());
                                h.insert("connection", "upgrade".parse().unwrap());
                                r
                            }
                            _ => reply(200, "ok"),
                        })
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .with_upgrades(),
                );
            }
        });
        Self {
            addr,
            arrived,
            release,
        }
    }
}

/// One listener served by one worker, as `Running` serves a socket group.
struct Bed {
    workers: Option<Workers>,
    lifecycle: Lifecycle,
    accept: Option<JoinHandle<Option<std::net::TcpListener>>>,
    addr: SocketAddr,
    metrics: Arc<ListenerMetrics>,
    target: Target,
}

impl Bed {
    async fn start() -> Self {
        let target = Target::start().await;
        let cfg = crate::config::parse_str(
            &format!(
                r#"
[[security_group]]
name = "sg"
ingress = [{{ protocol = "tcp", ports = "80", source = "0.0.0.0/0" }}]

[[target_group]]
name = "t"
protocol = "HTTP"
port = {port}
targets = [{{ address = "127.0.0.1" }}]
health_check = {{ enabled = false }}

[[load_balancer]]
name = "edge"
interfaces = ["lo"]
addresses = ["127.0.0.1"]
security_groups = ["sg"]
idle_timeout = "60s"

[[listener]]
load_balancer = "edge"
protocol = "HTTP"
port = 80
default_action = {{ type = "forward", target_group = "t" }}
"#,
                port = target.addr.port()
            ),
            "t.toml",
        )
        .unwrap();
        let plan = crate::proxy::plan::plan(&cfg, None, None).unwrap();
        let ctx = plan.bindings[0].ctx.clone();
        let metrics = ctx.metrics.clone();
        let slot = Slot::new(Route {
            ctx,
            shared: plan.shared.clone(),
        });
        let socket = bind_steered(Family::V4, 1).unwrap().pop().unwrap();
        let addr = socket.local_addr().unwrap();
        let workers = Workers::start(1, WorkerAffinity::Any).unwrap();
        let (lifecycle, phase) = Lifecycle::new();
        let (spread, mut inboxes) = Spread::new(1);
        let inbox = inboxes.pop().unwrap();
        let accept = workers.handles()[0].spawn(async move {
            let accept = Accept {
                listener: Listener::new(socket).unwrap(),
                inbox,
                spread,
            };
            listener::serve(accept, slot, phase).await
        });
        Self {
            workers: Some(workers),
            lifecycle,
            accept: Some(accept),
            addr,
            metrics,
            target,
        }
    }

    /// A client connection. Each write goes out at once: Nagle's algorithm
    /// would hold a small one back until the server acknowledged the last
    /// (a delayed ACK, up to 40 ms), past the moment it has to arrive by.
    async fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Drains, and returns the listening socket once the accept loop ended.
    async fn drain(&mut self) -> Option<std::net::TcpListener> {
        self.lifecycle.drain();
        let l = self.accept.take().unwrap().await.unwrap();
        self.caught_up().await;
        l
    }

    async fn stop(&mut self) -> Option<std::net::TcpListener> {
        self.lifecycle.stop();
        let l = self.accept.take().unwrap().await.unwrap();
        self.caught_up().await;
        l
    }

    /// Returns once the worker has run every task woken before: the
    /// connections have seen the phase move. Each round is a task spawned
    /// from here, which the worker's single-threaded scheduler runs after
    /// the ones it woke itself, at worst one tick later; a yield puts it
    /// behind them again.
    async fn caught_up(&self) {
        for _ in 0..2 {
            let h = self.workers.as_ref().unwrap().handles()[0].spawn(async {
                tokio::task::yield_now().await;
            });
            h.await.unwrap();
        }
    }

    /// Waits as `Running::drain` does; the connections left open.
    async fn settle(&self, grace: Duration) -> u64 {
        let m = Arc::clone(&self.metrics);
        settle(
            move || m.active_connections.get(),
            tokio::time::Instant::now() + grace,
        )
        .await
    }

    /// Stops the worker, closing what it still serves.
    async fn shut_workers(&mut self) {
        let w = self.workers.take().unwrap();
        tokio::task::spawn_blocking(move || w.shutdown())
            .await
            .unwrap();
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            w.shutdown();
        }
    }
}

/// Long enough for anything that finishes by itself; a test that waits
/// this long has failed.
const PATIENCE: Duration = Duration::from_secs(30);

/// One response's head (lower case) and body, read off `s`.
async fn response(s: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut b = [0u8; 1024];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed before a response: {got:?}");
        got.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = got[head_end..].to_vec();
    while body.len() < len {
        let mut b = [0u8; 1024];
        let n = s.read(&mut b).await.unwrap();
        assert!(n > 0, "closed in a body");
        body.extend_from_slice(&b[..n]);
    }
    assert_eq!(body.len(), len, "nothing after the response");
    (head, String::from_utf8(body).unwrap())
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n";
/// A request the fast path hands to hyper (it has a body).
const POST: &[u8] = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi";

/// Whether the server has closed `s`: its end read without waiting.
fn closed_by_server(s: &TcpStream) -> bool {
    let mut b = [0u8; 16];
    match s.try_read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", &b[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("connection failed: {e}"),
    }
}

/// The client's end of a connection the server closes: EOF, and no reset,
/// although the client sent a request before it saw the end. The server
/// closes its socket first (after lingering for want of this end's close):
/// whatever it sends after that, a reset or the ACK of this end's FIN,
/// arrives after what it sent before. Closing this end first would let a
/// reset come too late to be seen.
async fn ends_cleanly(mut s: TcpStream, bed: &Bed) {
    let mut b = [0u8; 16];
    assert_eq!(s.read(&mut b).await.unwrap(), 0, "the server closes");
    s.write_all(GET).await.unwrap();
    assert_eq!(bed.settle(PATIENCE).await, 0, "the server side is gone");
    let shut = s.shutdown().await;
    // Over by the server's ACK or by a reset, which may take a while: on a
    // busy machine loopback packets are handled by ksoftirqd.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tcp_state(&s) != TCP_CLOSE {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the connection never ended"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reset = s.take_error().unwrap();
    assert!(shut.is_ok() && reset.is_none(), "reset: {shut:?} {reset:?}");
}

/// `include/net/tcp_states.h`: a connection over (libc has no name for it).
const TCP_CLOSE: u8 = 7;

/// The kernel's state of `s`.
fn tcp_state(s: &TcpStream) -> u8 {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain data, and the kernel writes at most `len`
    // bytes of it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        );
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        info.tcpi_state
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_answered_with_close_after_the_drain() {
    let mut bed = Bed::start().await;
    let mut c = bed.connect().await;
    c.write_all(GET).await.unwrap();
    let (head, body) = response(&mut c).await;
    assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"));
    assert_eq!(body, "ok");

    let l = bed
        .drain()
        .await
        .expect("the listening socket is handed back");
    // Still listening: a connection made now waits for the next process.
    let queued = TcpStream::connect(bed.addr).await.unwrap();
    l.set_nonblocking(false).unwrap();
    let (_, peer) = l.accept().unwrap();
    assert_eq!(peer, queued.local_addr().unwrap());

    assert!(!closed_by_server(&c), "an idle connection stays open");
    c.write_all(GET).await.unwrap();
    let (head, body) = response(&mut c).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "ok");
    ends_cleanly(c, &bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_completes_and_unread_input_does_not_reset() {
    let mut bed = Bed::start().await;
    let mut c = bed.connect().await;
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    bed.target.arrived.recv().await.unwrap();
    bed.drain().await.unwrap();
    // Sent while the first is in flight, and never read by the server:
    // closing on it would reset the connection.
    c.write_all(GET).await.unwrap();
    bed.target.release.add_permits(1);
    let (head, body) = response(&mut c).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "slow");
    ends_cleanly(c, &bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hyper_served_http1_connection_waits_for_its_next_request() {
    let mut bed = Bed::start().await;
    let mut c = bed.connect().await;
    c.write_all(POST).await.unwrap();
    let (head, _) = response(&mut c).await;
    assert!(head.starts_with("http/1.1 200") && !head.contains("connection: close"));

    bed.drain().await.unwrap();
    // hyper's graceful_shutdown would have closed it now.
    assert!(!closed_by_server(&c), "an idle connection stays open");
    c.write_all(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        .await
        .unwrap();
    bed.target.arrived.recv().await.unwrap();
    // Unread by hyper, which closes after the response: a reset unless
    // the socket lingers.
    c.write_all(GET).await.unwrap();
    bed.target.release.add_permits(1);
    let (head, body) = response(&mut c).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "slow");
    ends_cleanly(c, &bed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_gets_goaway_and_its_stream_completes() {
    let mut bed = Bed::start().await;
    let tcp = bed.connect().await;
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    let req = || {
        http::Request::get("http://t/slow")
            .body(())
            .expect("request")
    };
    let (pending, _) = client.send_request(req(), true).unwrap();
    bed.target.arrived.recv().await.unwrap();
    bed.drain().await.unwrap();
    bed.target.release.add_permits(1);
    let resp = pending.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, b"slow");
    // The GOAWAY was sent when the drain was seen, before the response.
    let e = client.send_request(req(), true).unwrap_err();
    assert!(e.is_go_away() && e.is_remote(), "{e}");
    assert_eq!(e.reason(), Some(h2::Reason::NO_ERROR));
    driver.await.unwrap().expect("closed cleanly");
    assert_eq!(bed.settle(PATIENCE).await, 0);
}

/// `msg` through a tunnel to the echoing target and back.
async fn echo(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).await.unwrap();
    let mut b = vec![0u8; msg.len()];
    c.read_exact(&mut b).await.unwrap();
    assert_eq!(b, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_carries_on_through_the_drain_and_is_closed_at_grace() {
    let mut bed = Bed::start().await;
    let mut c = bed.connect().await;
    c.write_all(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, _) = response(&mut c).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo(&mut c, b"before").await;

    bed.drain().await.unwrap();
    echo(&mut c, b"during the drain").await;
    // The grace is what is tested: the tunnel outlives it.
    assert_eq!(bed.settle(Duration::from_millis(200)).await, 1, "forced");
    echo(&mut c, b"at the grace").await;
    bed.shut_workers().await;
    let mut b = [0u8; 16];
    let end = c.read(&mut b).await;
    assert!(matches!(end, Ok(0) | Err(_)), "closed: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_idle_connections_and_the_listening_socket_at_once() {
    let mut bed = Bed::start().await;
    let mut fast = bed.connect().await;
    fast.write_all(GET).await.unwrap();
    response(&mut fast).await;
    let mut hyper = bed.connect().await;
    hyper.write_all(POST).await.unwrap();
    response(&mut hyper).await;

    assert!(bed.stop().await.is_none(), "closed, not handed back");
    let refused = TcpStream::connect(bed.addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(closed_by_server(&fast), "fast path");
    // hyper closes an idle HTTP/1 connection on graceful_shutdown.
    assert!(closed_by_server(&hyper), "hyper");
    assert_eq!(bed.settle(PATIENCE).await, 0);
}

#[test]
fn a_phase_moves_once() {
    let (l, mut rx) = Lifecycle::new();
    l.drain();
    l.stop();
    assert_eq!(*rx.borrow_and_update(), Phase::Drain);
    let (l, rx) = Lifecycle::new();
    l.stop();
    l.drain();
    assert_eq!(*rx.borrow(), Phase::Stop);
}
