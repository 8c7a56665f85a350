//! Real HTTP peers for the tests: hyper backends in a namespace, and clients
//! (HTTP/1.1, HTTP/2 prior knowledge, raw bytes) run from a namespace.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::netns::Netns;

type Body = BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// `n` bytes of `x`, in 64 KiB frames, produced as they are read.
struct Big {
    remaining: usize,
    chunk: Bytes,
}

impl hyper::body::Body for Big {
    type Data = Bytes;
    type Error = hyper::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let len = self.remaining.min(self.chunk.len());
        self.remaining -= len;
        std::task::Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..len)))))
    }
}

/// A backend: answers with its name and what it received. Paths:
/// `/echo` echoes the body (streamed); `/big?n=N` sends N bytes;
/// `/sleep?ms=N` answers after N ms; `/cookie?name=K` sets cookie K;
/// `/ws` accepts an HTTP/1.1 upgrade and echoes raw bytes; `/status?code=N`
/// answers N; `/hold` answers only once the test calls [`Backend::release`]
/// (at once after that); anything else: `name\n` then the request line and
/// header fields, one per line. A backend named `fail-…` answers 500 to
/// everything but `/echo`; one named `slow-…` waits 3 s before any answer.
///
/// It counts what it gets, so tests wait for events instead of time:
/// requests and health checks on arrival, and the requests in flight (and
/// their peak) from arrival until the answer is ready.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a [`Backend`] counts, shared with its connections.
#[derive(Default)]
struct Counts {
    /// Requests received, health checks not counted.
    requests: AtomicU64,
    /// Health-check requests received.
    checks: AtomicU64,
    /// Requests (health checks not counted) received and not yet answered.
    in_flight: AtomicU64,
    /// The most `in_flight` has been.
    peak: AtomicU64,
    /// Set by [`Backend::release`]: `/hold` requests answer.
    released: tokio::sync::watch::Sender<bool>,
}

/// One request in flight: counted from creation until dropped (the answer
/// is ready, or the connection gave the request up).
struct InFlight(Arc<Counts>);

impl InFlight {
    fn new(counts: &Arc<Counts>) -> Self {
        let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counts.peak.fetch_max(now, Ordering::SeqCst);
        Self(counts.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn backend_service(
    name: Arc<str>,
    counts: Arc<Counts>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Health checks are not traffic: tests count what clients sent, and the
    // checks apart.
    let is_check = req
        .headers()
        .get(http::header::USER_AGENT)
        .is_some_and(|v| v.as_bytes().starts_with(b"xalb-HealthChecker"));
    let _in_flight = if is_check {
        counts.checks.fetch_add(1, Ordering::SeqCst);
        None
    } else {
        // In flight before it is counted as received: a test that saw the
        // request arrive sees it in flight too.
        let in_flight = InFlight::new(&counts);
        counts.requests.fetch_add(1, Ordering::SeqCst);
        Some(in_flight)
    };
    if name.starts_with("slow-") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let path = req.uri().path().to_string();
    if name.starts_with("fail-") && path != "/echo" {
        let mut r = Response::new(full(format!("{name}\n")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r.headers_mut().insert("x-backend", name.parse().unwrap());
        return Ok(r);
    }
    if path == "/status" {
        let mut r = Response::new(full(format!("{name}\n")));
        *r.status_mut() = StatusCode::from_u16(query_param(&req, "code").unwrap_or(200) as u16)
            .unwrap_or(StatusCode::OK);
        r.headers_mut().insert("x-backend", name.parse().unwrap());
        return Ok(r);
    }
    let mut resp = match path.as_str() {
        "/echo" => Response::new(req.into_body().boxed()),
        "/big" => {
            let n = query_param(&req, "n").unwrap_or(0) as usize;
            Response::new(BoxBody::new(Big {
                remaining: n,
                chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            }))
        }
        "/sleep" => {
            tokio::time::sleep(Duration::from_millis(query_param(&req, "ms").unwrap_or(0))).await;
            Response::new(full(format!("{name}\n")))
        }
        "/hold" => {
            let mut released = counts.released.subscribe();
            // The sender lives as long as the backend's connections.
            let _ = released.wait_for(|r| *r).await;
            Response::new(full(format!("{name}\n")))
        }
        "/cookie" => {
            let mut r = Response::new(full(format!("{name}\n")));
            let cookie = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("name="))
                .unwrap_or("SESSION")
                .to_string();
            r.headers_mut().insert(
                http::header::SET_COOKIE,
                format!("{cookie}=from-{name}; Path=/").parse().unwrap(),
            );
            r
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = upgrade.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = Response::new(full(""));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert(http::header::UPGRADE, "websocket".parse().unwrap());
            r.headers_mut()
                .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
            r
        }
        _ => {
            let mut text = format!("{name}\n{} {}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::new(full(text))
        }
    };
    resp.headers_mut()
        .insert("x-backend", name.parse().unwrap());
    Ok(resp)
}

/// A self-signed certificate for TLS backends, made once per test process.
fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    static ACCEPTOR: std::sync::OnceLock<tokio_rustls::TlsAcceptor> = std::sync::OnceLock::new();
    ACCEPTOR.get_or_init(|| tls_acceptor_alpn(&[])).clone()
}

/// A TLS acceptor with a fresh self-signed certificate, offering `alpn`.
pub fn tls_acceptor_alpn(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let ck = rcgen::generate_simple_self_signed(vec!["backend.test".to_string()])
        .expect("a certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default versions")
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .expect("a usable certificate");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl Backend {
    pub fn start(ns: &Netns, addr: SocketAddr, name: &str) -> Result<Self> {
        Self::start_with(ns, addr, name, false)
    }

    /// The same backend behind TLS (a self-signed certificate).
    pub fn start_tls(ns: &Netns, addr: SocketAddr, name: &str) -> Result<Self> {
        Self::start_with(ns, addr, name, true)
    }

    fn start_with(ns: &Netns, addr: SocketAddr, name: &str, tls: bool) -> Result<Self> {
        let acceptor = tls.then(tls_acceptor);
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let name_arc: Arc<str> = Arc::from(name);
        let thread = ns.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => {
                        let _ = ready_tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        Ok((stream, _)) = listener.accept() => {
                            let (name, counts) = (name_arc.clone(), shared.clone());
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| backend_service(name.clone(), counts.clone(), req));
                                let http = hyper::server::conn::http1::Builder::new();
                                match acceptor {
                                    None => {
                                        let _ = http.serve_connection(TokioIo::new(stream), svc).with_upgrades().await;
                                    }
                                    Some(acceptor) => {
                                        if let Ok(tls) = acceptor.accept(stream).await {
                                            let _ = http.serve_connection(TokioIo::new(tls), svc).await;
                                        }
                                    }
                                }
                            });
                        }
                    }
                }
            });
        })?;
        ready_rx
            .recv()?
            .with_context(|| format!("backend {name} binding {addr}"))?;
        Ok(Self {
            name: name.to_string(),
            addr,
            counts,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Requests received so far (counted on arrival, before the answer),
    /// health checks not counted.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::SeqCst)
    }

    /// Health-check requests received so far (counted on arrival, before
    /// the answer).
    pub fn checks(&self) -> u64 {
        self.counts.checks.load(Ordering::SeqCst)
    }

    /// Requests received and not answered yet (health checks not counted).
    pub fn in_flight(&self) -> u64 {
        self.counts.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests this backend has had in flight at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.counts.peak.load(Ordering::SeqCst)
    }

    /// Lets every `/hold` request answer, those waiting and those to come.
    pub fn release(&self) {
        self.counts.released.send_replace(true);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The first line of the body: a backend's name.
    pub fn backend(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// A header field a backend saw, from its echo.
    pub fn seen(&self, name: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
            .collect()
    }
}

/// A client running on a thread inside a namespace, with its own runtime.
pub fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl AsyncFnOnce() -> T + Send + 'static,
) -> Result<T> {
    ns.run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// One client connection: HTTP/1.1, or HTTP/2 with prior knowledge.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn connect(addr: SocketAddr, h2: bool) -> Result<Self> {
        let stream =
            tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
                .await
                .context("connect timeout")??;
        let io = TokioIo::new(stream);
        Ok(if h2 {
            let (s, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await?;
            tokio::spawn(conn);
            Client::H2(s)
        } else {
            let (s, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn.with_upgrades());
            Client::H1(s)
        })
    }

    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Reply> {
        let fut = async {
            let resp = match self {
                Client::H1(s) => {
                    s.ready().await?;
                    s.send_request(req).await?
                }
                Client::H2(s) => {
                    s.ready().await?;
                    s.send_request(req).await?
                }
            };
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, anyhow::Error>(Reply {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        // A safety net for an answer that must come, not a speed limit.
        tokio::time::timeout(Duration::from_secs(60), fut)
            .await
            .context("response timeout")?
    }

    /// GET `path` with extra header fields.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        let h2 = matches!(self, Client::H2(_));
        let mut b = Request::get(if h2 {
            format!("http://test{path}")
        } else {
            path.to_string()
        });
        if !h2 && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            b = b.header("host", "test");
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Full::new(Bytes::new()))?).await
    }
}

/// A GET on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    Client::connect(addr, false).await?.get(path, headers).await
}

/// Writes raw bytes and reads everything the peer answers until it closes
/// the connection (what it sent within 30 s, a safety net, if it never does).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(bytes).await?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The `name=value` part of the `Set-Cookie` that sets `name`, and its
/// attributes; panics unless exactly one does.
pub fn set_cookie(r: &Reply, name: &str) -> (String, String) {
    let all: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .collect();
    assert_eq!(all.len(), 1, "one Set-Cookie for {name}: {:?}", r.headers);
    let (pair, attrs) = all[0].split_once(';').unwrap_or((all[0], ""));
    (pair.to_string(), attrs.trim().to_string())
}

/// Seconds from now until the `Expires=` date in cookie attributes
/// (`Expires=Sun, 06 Nov 1994 08:49:37 GMT`, the IMF-fixdate form only).
pub fn expires_in(attrs: &str) -> i64 {
    let date = attrs
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Expires="))
        .unwrap_or_else(|| panic!("no Expires in {attrs:?}"));
    let at = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{date:?}: {e}"));
    assert_eq!(httpdate::fmt_http_date(at), date, "not an IMF-fixdate");
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    secs(at) - secs(std::time::SystemTime::now())
}
