//! A gRPC target for the tests, on hyper's HTTP/2 server without generated
//! code: h2c, or TLS with ALPN h2. Methods:
//! - `/test.Echo/Unary`: one message back, `<name>:<message>`;
//! - `/test.Echo/Stream`: each message answered as it arrives (both ways
//!   streaming), then `grpc-status: 0` in the trailers;
//! - any other gRPC path: a trailers-only answer with `grpc-status: 12`
//!   (UNIMPLEMENTED), what a server without the ALB's health-check method
//!   says, or the code given at start for `/AWS.ALB/healthcheck`;
//! - a request that is not gRPC: `<name>`, the request line and the
//!   version it arrived in, as plain text.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, oneshot};

use crate::netns::Netns;

type Body = BoxBody<Bytes, Infallible>;

/// One gRPC message, framed: not compressed, its length, its bytes.
pub fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    b.extend_from_slice(msg);
    b.freeze()
}

/// Takes whole messages off the front of `buf`.
pub fn unframe(buf: &mut BytesMut) -> Vec<Bytes> {
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() < 5 + len {
            break;
        }
        buf.advance(5);
        out.push(buf.split_to(len).freeze());
    }
    out
}

fn trailers(code: u32) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(code));
    t
}

fn grpc_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    r
}

async fn serve(
    name: Arc<str>,
    health_code: u32,
    checks: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let is_grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !is_grpc {
        let mut text = format!(
            "{name}\n{} {} {:?}\n",
            req.method(),
            req.uri(),
            req.version()
        );
        for (k, v) in req.headers() {
            text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
        }
        return Ok(Response::new(Full::new(Bytes::from(text)).boxed()));
    }
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/test.Echo/Unary" => {
            calls.fetch_add(1, Ordering::Relaxed);
            let mut buf = BytesMut::from(&req.into_body().collect().await.unwrap().to_bytes()[..]);
            let msg = unframe(&mut buf).into_iter().next().unwrap_or_default();
            let reply = [name.as_bytes(), b":", &msg].concat();
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
            tx.send(Ok(Frame::data(frame(&reply)))).await.unwrap();
            tx.send(Ok(Frame::trailers(trailers(0)))).await.unwrap();
            Ok(grpc_response(StreamBody::new(ReceiverStream(rx)).boxed()))
        }
        "/test.Echo/Stream" => {
            calls.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
            let mut body = req.into_body();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                while let Some(Ok(f)) = body.frame().await {
                    if let Ok(data) = f.into_data() {
                        buf.extend_from_slice(&data);
                        for msg in unframe(&mut buf) {
                            let reply = [name.as_bytes(), b":", &msg].concat();
                            if tx.send(Ok(Frame::data(frame(&reply)))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = tx.send(Ok(Frame::trailers(trailers(0)))).await;
            });
            Ok(grpc_response(StreamBody::new(ReceiverStream(rx)).boxed()))
        }
        other => {
            let code = if other == "/AWS.ALB/healthcheck" {
                checks.fetch_add(1, Ordering::Relaxed);
                health_code
            } else {
                12
            };
            // Trailers-only: the status in the head, no body.
            let mut r = grpc_response(Full::new(Bytes::new()).boxed());
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from(code));
            Ok(r)
        }
    }
}

/// An mpsc receiver as a stream of body frames.
struct ReceiverStream<T>(mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// A running gRPC target; stopped on drop.
pub struct GrpcTarget {
    checks: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcTarget {
    /// Serves `addr` in `ns`, over TLS (ALPN h2) when `tls`, answering the
    /// ALB's health check with `health_code`.
    pub fn start(
        ns: &Netns,
        addr: SocketAddr,
        name: &str,
        tls: bool,
        health_code: u32,
    ) -> Result<Self> {
        let acceptor = tls.then(|| crate::http::tls_acceptor_alpn(&[b"h2"]));
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (checks, calls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (c1, c2) = (checks.clone(), calls.clone());
        let name: Arc<str> = Arc::from(name);
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
                            let (name, c1, c2, acceptor) = (name.clone(), c1.clone(), c2.clone(), acceptor.clone());
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| serve(name.clone(), health_code, c1.clone(), c2.clone(), req));
                                let http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                                match acceptor {
                                    None => { let _ = http.serve_connection(TokioIo::new(stream), svc).await; }
                                    Some(a) => {
                                        if let Ok(tls) = a.accept(stream).await {
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
            .with_context(|| format!("gRPC target binding {addr}"))?;
        Ok(Self {
            checks,
            calls,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `/AWS.ALB/healthcheck` calls received.
    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Echo calls received.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Drop for GrpcTarget {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
