//! HTTP/2 towards targets (target groups with `protocol_version` HTTP2 or
//! GRPC): h2c with prior knowledge on HTTP groups, ALPN `h2` on HTTPS
//! ones, one multiplexed connection per target and worker.

use std::net::SocketAddr;

use http::{header, HeaderValue, Request, Uri, Version};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use super::pool::ConnectFailure;

/// Streams a target connection carries at once when the target sets no
/// lower limit; more wait for one to end.
const MAX_STREAMS: usize = 128;

/// An HTTP/2 connection over `stream` (TLS first for HTTPS groups), driven
/// by its own task on this worker.
pub async fn connect<B>(
    stream: TcpStream,
    addr: SocketAddr,
    tls: bool,
) -> Result<http2::SendRequest<B>, ConnectFailure>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if tls {
        let stream = super::tls::connect_h2(stream, addr)
            .await
            .map_err(|e| ConnectFailure::Other(format!("TLS: {e}")))?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ConnectFailure::Other(
                "the target did not agree to HTTP/2 (ALPN h2)".into(),
            ));
        }
        handshake(TokioIo::new(stream), addr).await
    } else {
        handshake(TokioIo::new(stream), addr).await
    }
}

async fn handshake<I, B>(io: I, addr: SocketAddr) -> Result<http2::SendRequest<B>, ConnectFailure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_max_send_streams(MAX_STREAMS)
        .handshake(io)
        .await
        .map_err(|e| ConnectFailure::Other(format!("HTTP/2: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(sender)
}

/// Rewrites a request prepared for HTTP/1.1 ([`crate::proxy::service`]) for
/// an HTTP/2 target: the Host becomes the `:authority`, the scheme is the
/// group's, and gRPC gets its `te: trailers` back (hop-by-hop elsewhere).
pub fn into_h2<B>(req: &mut Request<B>, tls: bool, grpc: bool) {
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|h| h.to_str().ok().map(str::to_string));
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let scheme = if tls { "https" } else { "http" };
    let uri = match authority {
        Some(a) => Uri::builder()
            .scheme(scheme)
            .authority(a)
            .path_and_query(pq)
            .build(),
        None => Uri::builder().path_and_query(pq).build(),
    };
    if let Ok(uri) = uri {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_2;
    if grpc {
        req.headers_mut()
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_becomes_the_authority_and_grpc_keeps_te() {
        let mut req = Request::post("/pkg.Svc/Call?x=1")
            .header("host", "api.test:8443")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        into_h2(&mut req, true, true);
        assert_eq!(
            req.uri().to_string(),
            "https://api.test:8443/pkg.Svc/Call?x=1"
        );
        assert_eq!(req.version(), Version::HTTP_2);
        assert!(req.headers().get(header::HOST).is_none());
        assert_eq!(req.headers()[header::TE], "trailers");
        let mut req = Request::get("/").header("host", "a").body(()).unwrap();
        into_h2(&mut req, false, false);
        assert_eq!(req.uri().to_string(), "http://a/");
        assert!(req.headers().get(header::TE).is_none());
    }
}
