//! One request, start to end: refuse what must be refused, route, and carry
//! out the action — answer, redirect, or forward to a target with retries.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::{Body, Frame, SizeHint};
use tracing::debug;

use super::access_log::{self, AccessLog, Entry};
use super::errors::{plain, LbError, ProxyBody};
use super::headers;
use crate::config::model::{Action, ProtocolVersion, TargetProtocol, WeightedGroup};
use crate::metrics::ListenerMetrics;
use crate::proxy::conn::listener::{quiet_for, Route};
use crate::proxy::conn::meter::{Meter, Metered};
use crate::proxy::h1::guard::{Refusal, REJECT_HEADER};
use crate::proxy::h1::raw_fields::RawFields;
use crate::proxy::route::redirect::{self, RedirectInput};
use crate::proxy::route::router::{RequestView, Router};
use crate::proxy::upstream::body::BodyEnd;
use crate::proxy::upstream::pool::{AttemptError, BoxError, TargetBody, UpstreamBody, Upstreams};
use crate::targets::{health, Outstanding, TargetGroupRuntime, WeightedGroups};

/// What one listener needs per request.
pub struct ListenerCtx {
    pub lb: String,
    pub port: u16,
    /// "http" or "https", for X-Forwarded-Proto and redirects.
    pub scheme: &'static str,
    /// HTTPS listeners: what their connections' handshakes use.
    pub tls: Option<ListenerTls>,
    pub router: Router,
    /// How long a target may take to send its response head (the balancer's
    /// idle timeout, as the ALB).
    pub target_timeout: Duration,
    pub metrics: Arc<ListenerMetrics>,
    pub limits: crate::proxy::conn::listener::ConnLimits,
    pub access_log: Option<AccessLog>,
    /// Keep a client's X-Request-Id rather than replace it.
    pub trust_request_id: bool,
}

/// An HTTPS listener's TLS, replaced whole with its route on reload: new
/// handshakes take new certificates, established connections keep theirs.
pub struct ListenerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub mutual: crate::tls::MutualAuth,
}

/// Target groups by name, looked up on every forwarded request: a fast hash
/// (the names come from the configuration, not from clients).
pub type Groups = HashMap<String, Arc<TargetGroupRuntime>, foldhash::fast::RandomState>;

/// Shared by every listener.
pub struct Shared {
    pub groups: Groups,
    pub upstreams: Upstreams,
}

pub async fn handle(
    route: &Route,
    client: SocketAddr,
    req: Request<UpstreamBody>,
) -> Result<Response<ProxyBody>, Infallible> {
    let Route { ctx, shared } = route;
    ctx.metrics.requests.incr();
    let facts = ctx
        .access_log
        .as_ref()
        .map(|_| RequestFacts::of(&req, ctx.scheme));
    let mut trace = Trace::default();
    // Routing is synchronous; only forwarding awaits, here rather than in
    // another async fn: every level of async fn would copy `forward`'s
    // future (about 4 KB of the request's 5, mostly unset) into its own once
    // more per request.
    // Nothing of the decision is kept across the await either.
    let (group, cookie) = match decide(ctx, shared, client, &req, &mut trace) {
        Ok(Decision::Forward(group, cookie)) => (group, cookie),
        Ok(Decision::Respond(resp)) => {
            return Ok(finish(ctx, client, facts, &mut trace, Ok(resp)));
        }
        Err(e) => return Ok(finish(ctx, client, facts, &mut trace, Err(e))),
    };
    let result = forward(ctx, shared, group, client, req, cookie, &mut trace).await;
    Ok(finish(ctx, client, facts, &mut trace, result))
}

/// The response the client gets, counted and logged.
fn finish(
    ctx: &ListenerCtx,
    client: SocketAddr,
    facts: Option<RequestFacts>,
    trace: &mut Trace,
    result: Result<Response<ProxyBody>, LbError>,
) -> Response<ProxyBody> {
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            ctx.metrics.elb_response(e.status());
            trace.error = Some(e.cause());
            e.response()
        }
    };
    if let (Some(log), Some(facts)) = (&ctx.access_log, facts) {
        log.write(&facts.entry(ctx, client, trace, &resp));
    }
    resp
}

/// What the access log needs of a request, taken before it is forwarded.
struct RequestFacts {
    created: SystemTime,
    start: Instant,
    line: String,
    user_agent: String,
    host: String,
    received: u64,
    h2: bool,
    /// HTTPS: the connection's TLS version and suite, as OpenSSL names them.
    tls: Option<(&'static str, &'static str)>,
}

impl RequestFacts {
    fn of(req: &Request<UpstreamBody>, scheme: &str) -> Self {
        let header = |n: header::HeaderName| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        };
        let host = request_host(req).unwrap_or("-").to_string();
        Self {
            created: SystemTime::now(),
            start: Instant::now(),
            line: format!(
                "{} {scheme}://{}{} {:?}",
                req.method(),
                host,
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
                req.version()
            ),
            user_agent: header(header::USER_AGENT),
            received: req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0),
            h2: req.version() == Version::HTTP_2,
            tls: req
                .extensions()
                .get::<Arc<crate::proxy::conn::listener::ConnTls>>()
                .map(|c| (c.version, c.cipher)),
            host,
        }
    }

    fn entry(
        self,
        ctx: &ListenerCtx,
        client: SocketAddr,
        t: &Trace,
        resp: &Response<ProxyBody>,
    ) -> Entry {
        let total = self.start.elapsed();
        Entry {
            // As the ALB: "https" for HTTP/1 over TLS, "h2" for HTTP/2.
            kind: match (self.h2, self.tls.is_some()) {
                (true, _) => "h2",
                (false, true) => "https",
                (false, false) => "http",
            },
            time: access_log::time(SystemTime::now()),
            elb: ctx.lb.clone(),
            client_port: access_log::endpoint(client),
            target_port: t.target.map_or("-".into(), access_log::endpoint),
            // Everything but the target's own time counts as the balancer's.
            request_processing_time: t
                .target_time
                .map_or(-1.0, |tt| total.saturating_sub(tt).as_secs_f64()),
            target_processing_time: access_log::secs(t.target_time),
            response_processing_time: if t.target.is_some() { 0.0 } else { -1.0 },
            elb_status_code: resp.status().as_u16(),
            target_status_code: t.target_status.map_or("-".into(), |s| s.to_string()),
            received_bytes: self.received,
            sent_bytes: resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0),
            request: self.line,
            user_agent: self.user_agent,
            ssl_cipher: self.tls.map_or("-", |t| t.1),
            ssl_protocol: self.tls.map_or("-", |t| t.0),
            target_group: t.group.clone().unwrap_or_else(|| "-".into()),
            trace_id: t.request_id.clone().unwrap_or_else(|| "-".into()),
            domain_name: self.host,
            matched_rule_priority: t.priority,
            request_creation_time: access_log::time(self.created),
            actions_executed: t.action,
            redirect_url: t.redirect_url.clone().unwrap_or_else(|| "-".into()),
            error_reason: t.error.map_or("-".into(), |e| e.to_string()),
            classification: "",
        }
    }
}

/// What happened to a request, for the access log.
#[derive(Default)]
pub struct Trace {
    /// 0 for the default action, -1 when no rule was evaluated.
    pub priority: i64,
    pub action: &'static str,
    pub group: Option<String>,
    pub target: Option<SocketAddr>,
    pub target_status: Option<u16>,
    pub target_time: Option<Duration>,
    pub redirect_url: Option<String>,
    pub request_id: Option<String>,
    pub error: Option<&'static str>,
}

/// The host a request is for, without port: the Host field, or the
/// authority of an HTTP/2 request.
fn request_host(req: &Request<UpstreamBody>) -> Option<&str> {
    // An absolute-form target (or HTTP/2's :authority) wins over Host (RFC
    // 9112 §3.2.2): routing by a Host that disagrees would let a request
    // slip past host-based rules.
    let raw = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    })?;
    Some(strip_port(raw))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        // One colon: host:port. More: an unbracketed IPv6 literal, left as is.
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// What a request gets once its listener's rules have been evaluated.
// Returned and taken apart at once, never stored: boxing the response would
// only add an allocation to every fixed response and redirect.
#[allow(clippy::large_enum_variant)]
enum Decision<'a> {
    /// Answered by the balancer (fixed response, redirect).
    Respond(Response<ProxyBody>),
    /// Forwarded to this group, with the group-stickiness cookie to set, if any.
    Forward(&'a Arc<TargetGroupRuntime>, Option<HeaderValue>),
}

/// Refuses what must be refused, evaluates the rules, and answers the
/// actions that need no target.
fn decide<'a>(
    ctx: &ListenerCtx,
    shared: &'a Shared,
    client: SocketAddr,
    req: &Request<UpstreamBody>,
    trace: &mut Trace,
) -> Result<Decision<'a>, LbError> {
    trace.priority = -1;
    if let Some(code) = req.headers().get(REJECT_HEADER) {
        return Err(Refusal::from_code(code.as_bytes()).map_or(
            LbError::BadRequest("malformed request framing"),
            Refusal::error,
        ));
    }
    if req.method() == Method::CONNECT {
        return Err(LbError::MethodNotAllowed(
            "CONNECT is not served: the balancer is not a forward proxy",
        ));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(LbError::BadRequest("repeated Host header")),
        (None, None) if req.version() == Version::HTTP_11 => {
            return Err(LbError::BadRequest("missing Host header"))
        }
        (Some(h), None) if h.is_empty() && req.version() != Version::HTTP_2 => {
            return Err(LbError::BadRequest("empty Host header"))
        }
        _ => {}
    }
    // RFC 9110 §4.2.4: userinfo in an http(s) URI is deprecated, and a
    // target that took it for credentials would be fooled.
    if req
        .uri()
        .authority()
        .is_some_and(|a| a.as_str().contains('@'))
    {
        return Err(LbError::BadRequest(
            "userinfo is not allowed in the request target",
        ));
    }
    let host = request_host(req);
    let view = RequestView {
        method: req.method(),
        host,
        path: req.uri().path(),
        query: req.uri().query(),
        headers: req.headers(),
        source_ip: client.ip(),
    };
    let routed = ctx.router.route(&view);
    trace.priority = i64::from(routed.priority);
    match routed.action {
        Action::FixedResponse {
            status_code,
            content_type,
            message_body,
        } => {
            let status = StatusCode::from_u16(*status_code).unwrap_or(StatusCode::OK);
            let ct = content_type
                .as_deref()
                .unwrap_or("text/plain; charset=utf-8");
            ctx.metrics.fixed_responses.incr();
            trace.action = "fixed-response";
            Ok(Decision::Respond(plain(
                status,
                Bytes::from(message_body.clone()),
                ct,
            )))
        }
        Action::Redirect {
            status,
            protocol,
            host: h,
            port,
            path,
            query,
        } => {
            let input = RedirectInput {
                protocol: ctx.scheme,
                host: host.unwrap_or(""),
                port: ctx.port,
                path: req.uri().path(),
                query: req.uri().query(),
            };
            ctx.metrics.redirects.incr();
            let location = redirect::location(protocol, h, port, path, query, &input);
            trace.action = "redirect";
            if ctx.access_log.is_some() {
                trace.redirect_url = Some(location.clone());
            }
            let mut resp = plain(
                redirect::status(*status),
                Bytes::new(),
                "text/plain; charset=utf-8",
            );
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(Decision::Respond(resp))
        }
        Action::Forward { target_group } => {
            let group = shared.groups.get(target_group).ok_or(LbError::NoTarget)?;
            Ok(Decision::Forward(group, None))
        }
        Action::WeightedForward { target_groups, .. } => {
            let weighted = routed.weighted.ok_or(LbError::NoTarget)?;
            let (group, cookie) = choose_group(shared, target_groups, weighted, req.headers())?;
            Ok(Decision::Forward(group, cookie))
        }
    }
}

fn choose_group<'a>(
    shared: &'a Shared,
    groups: &[WeightedGroup],
    weighted: &WeightedGroups,
    headers: &http::HeaderMap,
) -> Result<(&'a Arc<TargetGroupRuntime>, Option<HeaderValue>), LbError> {
    let pick = weighted.pick(headers).ok_or(LbError::NoTarget)?;
    let group = shared
        .groups
        .get(&groups[pick.group].name)
        .ok_or(LbError::NoTarget)?;
    Ok((group, pick.set_cookie))
}

/// Rewrites a client request into the form a target gets: origin-form URI,
/// HTTP/1.1, Host kept, hop-by-hop fields gone, X-Forwarded-* and a request id.
fn prepare(ctx: &ListenerCtx, client: SocketAddr, req: &mut Request<UpstreamBody>, upgrade: bool) {
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // The target gets the Host the request was routed by (RFC 9110 §7.2).
    if let Some(a) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, a);
    }
    // HTTP/2 may split cookies into several fields; HTTP/1.1 wants one
    // (RFC 9113 §8.2.3).
    if req.version() == Version::HTTP_2
        && req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .nth(1)
            .is_some()
    {
        let joined: Vec<&[u8]> = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            req.headers_mut().insert(header::COOKIE, v);
        }
    }
    *req.uri_mut() = Uri::from(pq);
    *req.version_mut() = Version::HTTP_11;
    let conn = req
        .extensions_mut()
        .remove::<Arc<crate::proxy::conn::listener::ConnTls>>();
    let h = req.headers_mut();
    headers::strip_hop_by_hop(h, upgrade);
    headers::add_forwarded(h, client.ip(), ctx.scheme, ctx.port);
    if ctx
        .tls
        .as_ref()
        .is_some_and(|t| t.mutual != crate::tls::MutualAuth::Off)
    {
        // Only the balancer says what the client's certificate was.
        headers::strip_mtls(h);
        if let Some(conn) = conn {
            for (name, value) in &conn.client_cert.0 {
                h.insert(name.clone(), value.clone());
            }
        }
    }
    headers::set_request_id(h, ctx.trust_request_id);
}

/// A WebSocket handshake: the one protocol switch the balancer carries. Any
/// other Upgrade (`h2c`, say) is stripped, and the request is forwarded as an
/// ordinary one: a tunnel would skip every rule and the access log.
fn is_upgrade(req: &Request<UpstreamBody>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| headers::has_token(v, "websocket"))
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| headers::has_token(v, "upgrade"))
}

async fn forward(
    ctx: &ListenerCtx,
    shared: &Shared,
    group: &Arc<TargetGroupRuntime>,
    client: SocketAddr,
    mut req: Request<UpstreamBody>,
    group_cookie: Option<HeaderValue>,
    trace: &mut Trace,
) -> Result<Response<ProxyBody>, LbError> {
    trace.action = "forward";
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let body = match req.body() {
        Either::Left(b) => b.watch(),
        Either::Right(_) => None,
    };
    prepare(ctx, client, &mut req, upgrade);
    let tls = group.config().protocol == TargetProtocol::Https;
    let version = group.config().protocol_version;
    let h2 = version != ProtocolVersion::Http1;
    if h2 {
        crate::proxy::upstream::h2::into_h2(&mut req, tls, version == ProtocolVersion::Grpc);
    }
    // A bodyless idempotent request can be sent again, once, if a target
    // fails it before answering (a dying target resetting a pooled
    // connection). Plain-HTTP targets hand such a request back; for TLS ones
    // its head is kept here while another target could take it.
    let replayable = group.targets().len() > 1
        && !upgrade
        && req.body().is_end_stream()
        && matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let mut replays_left = usize::from(replayable);
    let mut replay = (replayable && (tls || h2)).then(|| {
        (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        )
    });
    if ctx.access_log.is_some() {
        trace.group = Some(group.name().to_string());
        trace.request_id = req
            .headers()
            .get(&headers::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
    }

    let mut tried: Vec<usize> = Vec::new();
    let (pick, mut resp) = loop {
        let Some(pick) = group.pick(req.headers(), &tried) else {
            return Err(if tried.is_empty() {
                LbError::NoTarget
            } else {
                LbError::TargetConnect
            });
        };
        let addr = pick.target().addr();
        let sent = Instant::now();
        let attempt = shared.upstreams.send(addr, tls, h2, req);
        tokio::pin!(attempt);
        // The response deadline runs from the request's end: an upload may
        // take longer than `idle_timeout` (a stalled one is bounded by the
        // client connection's idle timeout). The target may answer early.
        let early = match &body {
            Some(b) if b.end() == BodyEnd::Streaming => tokio::select! {
                biased;
                r = &mut attempt => Some(r),
                _ = b.ended() => None,
            },
            _ => None,
        };
        let outcome = match early {
            Some(r) => r,
            None => {
                // A request that outlives its deregistered target's
                // draining time gets 502, as on the ALB. Watching for that
                // costs a waiter registration, so only requests slower than
                // a second pay it; the first second's timer doubles as the
                // response timeout's.
                let from = tokio::time::Instant::now();
                let deadline = from + ctx.target_timeout;
                let first = deadline.min(from + Duration::from_secs(1));
                match tokio::time::timeout_at(first, &mut attempt).await {
                    Ok(r) => r,
                    Err(_) if first == deadline => Err(AttemptError::Timeout),
                    Err(_) => tokio::select! {
                        r = &mut attempt => r,
                        _ = tokio::time::sleep_until(deadline) => Err(AttemptError::Timeout),
                        _ = pick.target().drained() => return Err(LbError::BadResponse),
                    },
                }
            }
        };
        // A body the client broke fails the attempt too: the client's
        // doing, never counted against the target.
        if let Err(AttemptError::Failed(..) | AttemptError::Timeout) = &outcome {
            if let Some(e) = body.as_ref().and_then(|b| b.end().client_fault()) {
                return Err(e);
            }
        }
        match outcome {
            Ok(resp) => {
                let elapsed = sent.elapsed();
                group.metrics.target_response(resp.status(), elapsed);
                trace.target = Some(addr);
                trace.target_status = Some(resp.status().as_u16());
                trace.target_time = Some(elapsed);
                break (pick, resp);
            }
            Err(AttemptError::NotSent(back, why)) => {
                group.metrics.connection_errors.incr();
                debug!(%addr, %why, "target refused the connection; trying another");
                health::passive_failure(group, pick.target());
                tried.push(pick.index());
                req = *back;
            }
            Err(AttemptError::Timeout) => return Err(LbError::TargetTimeout),
            Err(AttemptError::Failed(e, back)) => {
                debug!(%addr, error = %e, "target failed the request");
                health::passive_failure(group, pick.target());
                // Once: a second failure is the target's answer.
                if replays_left == 0 {
                    return Err(LbError::BadResponse);
                }
                replays_left -= 1;
                tried.push(pick.index());
                req = match (back, replay.take()) {
                    (Some(back), _) => *back,
                    (None, Some((method, uri, headers))) => {
                        let mut again = Request::new(Either::Right(http_body_util::Empty::new()));
                        *again.method_mut() = method;
                        *again.uri_mut() = uri;
                        *again.headers_mut() = headers;
                        again
                    }
                    (None, None) => return Err(LbError::BadResponse),
                };
            }
        }
    };

    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // A switch nobody asked for: the target is not speaking HTTP.
            debug!(addr = %pick.target().addr(), "target switched protocols unasked");
            health::passive_failure(group, pick.target());
            return Err(LbError::BadResponse);
        };
        {
            let target_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(tunnel(
                client_upgrade,
                target_upgrade,
                ctx.metrics.clone(),
                ctx.limits.idle_timeout,
            ));
        }
    } else {
        headers::strip_hop_by_hop(resp.headers_mut(), false);
    }
    if let Some(v) = group.response_cookie(&pick, resp.headers()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    if let Some(v) = group_cookie {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    // The pick (and its outstanding-request count) lives as long as the body.
    Ok(resp.map(|body| {
        Either::Left(Tracked {
            inner: body,
            _outstanding: pick.hold(),
        })
    }))
}

/// An upgraded connection (WebSocket): bytes both ways until either side
/// closes or, as on the ALB, none has moved for the idle timeout. It stays an
/// active client connection while it lasts (the HTTP connection it came from
/// has ended by then).
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    target: hyper::upgrade::OnUpgrade,
    metrics: Arc<ListenerMetrics>,
    idle_timeout: Duration,
) {
    let (Ok(c), Ok(t)) = (client.await, target.await) else {
        return;
    };
    metrics.active_connections.incr();
    // Every byte of the tunnel passes the target side, so its activity is
    // the tunnel's; the client side already counts processed bytes.
    let meter = Meter::activity_only();
    let mut c = hyper_util::rt::TokioIo::new(c);
    let mut t = Metered::new(hyper_util::rt::TokioIo::new(t), meter.clone());
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut c, &mut t) => {}
        _ = quiet_for(&meter.activity, idle_timeout) => {
            debug!("upgraded connection idle for {idle_timeout:?}; closed");
        }
    }
    metrics.active_connections.decr();
}

/// The fields of a target's response that are not in its map
/// ([`crate::proxy::h1::raw_fields`]), for whoever writes its head.
pub fn take_raw_fields(body: &mut ProxyBody) -> Option<RawFields> {
    match body {
        Either::Left(tracked) => tracked.inner.take_raw_fields(),
        Either::Right(_) => None,
    }
}

/// `resp` with every field in its map, for a writer that only knows maps
/// (hyper).
pub fn with_all_fields(mut resp: Response<ProxyBody>) -> Response<ProxyBody> {
    if let Some(raw) = take_raw_fields(resp.body_mut()) {
        raw.into_map(resp.headers_mut());
    }
    resp
}

/// A target's response body that keeps the request counted as outstanding
/// on its target (where the group counts) until the body ends or is dropped.
pub struct Tracked {
    inner: TargetBody,
    _outstanding: Option<Outstanding>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
