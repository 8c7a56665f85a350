//! Responses the balancer itself gives: short bodies that name the cause
//! without internals, as the ALB does.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
/// Every response body the proxy sends: a target's, streamed, or its own.
pub type ProxyBody = Either<super::service::Tracked, Full<Bytes>>;

/// Why the balancer answered itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbError {
    /// Malformed request, or framing that could smuggle a second request.
    BadRequest(&'static str),
    /// The client closed the connection (or reset its stream) before its
    /// request body's end; logged as the client's doing, never the target's.
    ClientClosed,
    /// A request head that did not arrive whole within `request_head_timeout`.
    RequestTimeout,
    /// A method the balancer does not serve (CONNECT: it is no forward proxy).
    MethodNotAllowed(&'static str),
    /// No registered target in the group.
    NoTarget,
    /// Every target tried refused or failed to connect.
    TargetConnect,
    /// The target's response was not valid HTTP, or it reset the connection.
    BadResponse,
    /// The target sent no response head in time.
    TargetTimeout,
}

impl LbError {
    pub fn status(self) -> StatusCode {
        match self {
            // The ALB answers 400 to a body the client did not finish.
            LbError::BadRequest(_) | LbError::ClientClosed => StatusCode::BAD_REQUEST,
            LbError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            LbError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            LbError::NoTarget => StatusCode::SERVICE_UNAVAILABLE,
            LbError::TargetConnect | LbError::BadResponse => StatusCode::BAD_GATEWAY,
            LbError::TargetTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn cause(self) -> &'static str {
        match self {
            LbError::BadRequest(why) | LbError::MethodNotAllowed(why) => why,
            LbError::ClientClosed => {
                "the client closed the connection before sending the whole request body"
            }
            LbError::RequestTimeout => "the request head did not arrive in time",
            LbError::NoTarget => "no healthy target is available",
            LbError::TargetConnect => "could not connect to a target",
            LbError::BadResponse => "the target sent an invalid response",
            LbError::TargetTimeout => "the target did not respond in time",
        }
    }

    pub fn response(self) -> Response<ProxyBody> {
        let status = self.status();
        let body = format!(
            "{} {}: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.cause()
        );
        let mut resp = plain(status, Bytes::from(body), "text/plain; charset=utf-8");
        if matches!(
            self,
            LbError::BadRequest(_)
                | LbError::ClientClosed
                | LbError::RequestTimeout
                | LbError::MethodNotAllowed(_)
        ) {
            // The connection's framing can no longer be trusted (or, for
            // CONNECT, whatever follows is meant for a tunnel).
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A complete response with a fixed body.
pub fn plain(status: StatusCode, body: Bytes, content_type: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::SERVER, HeaderValue::from_static("xalb"));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_status_and_client_faults_close_the_connection() {
        let cases = [
            (LbError::BadRequest("bad framing"), 400, true),
            (LbError::ClientClosed, 400, true),
            (LbError::RequestTimeout, 408, true),
            (LbError::MethodNotAllowed("no CONNECT"), 405, true),
            (LbError::NoTarget, 503, false),
            (LbError::TargetConnect, 502, false),
            (LbError::BadResponse, 502, false),
            (LbError::TargetTimeout, 504, false),
        ];
        for (e, status, closes) in cases {
            let resp = e.response();
            assert_eq!(resp.status().as_u16(), status, "{e:?}");
            assert_eq!(e.status(), resp.status());
            assert_eq!(
                resp.headers().get(header::CONNECTION).is_some(),
                closes,
                "{e:?}"
            );
            let body = match resp.into_body() {
                Either::Right(full) => format!("{full:?}"),
                Either::Left(_) => unreachable!("the balancer's own body"),
            };
            assert!(body.contains(e.cause()), "{e:?}: {body}");
        }
        assert_eq!(LbError::BadRequest("bad framing").cause(), "bad framing");
        assert!(LbError::ClientClosed.cause().contains("client closed"));
        assert!(LbError::RequestTimeout.cause().contains("in time"));
    }
}
