//! The admin endpoint (`[admin] listen`): the dashboard at `/`,
//! `/metrics` (Prometheus text), `/targets` (target health as JSON), the
//! `describe-*` answers under `/api/`, `/healthz`, `/ready` (503 once a
//! shutdown has begun); and, with the admin token, `POST /reload` and the
//! target registrations.

pub mod client;
pub mod dashboard;
pub mod describe;
pub mod history;
mod metrics;
pub mod table;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::config::model::Config;
use crate::daemon::registrations::TargetSpec;
use crate::daemon::{AdminRequest, Applied, ApplyError, Refusal, TargetChange};
use crate::kernel::Datapath;
use crate::metrics::ListenerMetrics;
use crate::proxy::conn::spread::Spread;
use crate::targets::{TargetGroupRuntime, TargetState};
pub use metrics::metrics;

pub struct ListenerEntry {
    pub lb: String,
    pub port: u16,
    pub metrics: Arc<ListenerMetrics>,
}

/// One listener's socket group of one address family, and how its
/// connections sit on the workers.
pub struct SocketEntry {
    pub lb: String,
    /// `"edge:80"`.
    pub listener: String,
    /// `ipv4` or `ipv6`.
    pub family: &'static str,
    pub spread: Arc<Spread>,
}

/// A target removed by a reload, draining until `until`.
#[derive(Clone)]
pub struct DrainingTarget {
    pub group: String,
    pub target: Arc<TargetState>,
    pub until: Instant,
}

/// What the endpoint shows; replaced on reload.
#[derive(Default)]
pub struct AdminView {
    /// The configuration served (the file with run-time registrations).
    pub config: Option<Arc<Config>>,
    /// (group, target) of the targets `register-targets` added.
    pub registered: Vec<(String, SocketAddr)>,
    pub datapath: Option<Arc<Mutex<Datapath>>>,
    /// (XDP counter row, name) of every balancer.
    pub lb_rows: Vec<(u32, String)>,
    /// (listener counter row, balancer, port) of every steered listener.
    pub listener_rows: Vec<(u32, String, u16)>,
    /// (row, group, target) of every forwarding target (TCP listeners).
    pub target_rows: Vec<(u32, String, std::net::SocketAddr)>,
    pub listeners: Vec<ListenerEntry>,
    pub sockets: Vec<SocketEntry>,
    /// (balancer, group) in configuration order.
    pub groups: Vec<(String, Arc<TargetGroupRuntime>)>,
    pub draining: Arc<Mutex<Vec<DrainingTarget>>>,
    /// A shutdown has begun: `/ready` says 503 so that an outer balancer
    /// stops sending new connections.
    pub stopping: bool,
    /// When this process began serving.
    pub started: Option<Instant>,
    /// The dashboard's charts; kept across reloads.
    pub history: Arc<Mutex<history::History>>,
}

/// One target's health, as `/targets` and `describe-target-health` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetHealthRow {
    pub target_group: String,
    pub address: String,
    pub port: u16,
    pub state: String,
    pub reason: String,
    pub description: String,
    /// `config` (the file) or `register-targets`.
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetsReply {
    pub targets: Vec<TargetHealthRow>,
}

fn row(view: &AdminView, group: &str, t: &TargetState) -> TargetHealthRow {
    let h = t.health.lock().unwrap().clone();
    let addr = SocketAddr::new(t.target.address, t.target.port);
    TargetHealthRow {
        source: describe::target_source(&view.registered, group, addr).to_string(),
        target_group: group.to_string(),
        address: t.target.address.to_string(),
        port: t.target.port,
        state: h.state.as_str().to_string(),
        reason: h.reason.map_or(String::new(), |r| r.code().to_string()),
        description: h.description(),
    }
}

pub fn targets(view: &AdminView, group: Option<&str>) -> TargetsReply {
    let mut targets = Vec::new();
    for (_, g) in view
        .groups
        .iter()
        .filter(|(_, g)| group.is_none_or(|n| g.name() == n))
    {
        targets.extend(g.targets().iter().map(|t| row(view, g.name(), t)));
    }
    for d in view
        .draining
        .lock()
        .unwrap()
        .iter()
        .filter(|d| group.is_none_or(|n| d.group == n))
    {
        targets.push(row(view, &d.group, &d.target));
    }
    TargetsReply { targets }
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default() + "\n";
    reply(status, "application/json", text)
}

/// An error as JSON, `{"status":"error","kind":...,"message":...}`, as
/// refusals are.
fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(
        status,
        &Refusal {
            status: "error".into(),
            kind: kind.into(),
            message: message.into(),
            errors: Vec::new(),
            http_status: status.as_u16(),
        },
    )
}

/// The body of `POST /api/register-targets` and `/api/deregister-targets`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TargetsChange {
    pub target_group_name: String,
    /// `ADDRESS` or `ADDRESS:PORT` (`[v6]:PORT`).
    pub targets: Vec<String>,
}

/// What mutating calls need over TCP: `Authorization: Bearer <token>`
/// with the state directory's admin token. Without a token (the state
/// directory could not keep one) they are refused.
fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return false;
    };
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compared in time independent of where they differ.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn query<'a>(req: &'a Request<Incoming>, key: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The largest request body the endpoint reads.
const MAX_BODY: usize = 64 * 1024;

async fn handle(
    view: Arc<RwLock<AdminView>>,
    requests: mpsc::Sender<AdminRequest>,
    token: Option<Arc<str>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::POST && !authorized(&req, token.as_deref()) {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "changes need 'Authorization: Bearer <token>' with the token in the state directory's {}",
                crate::daemon::secrets::ADMIN_TOKEN
            ),
        ));
    }
    let path = req.uri().path().to_string();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/") => reply(StatusCode::OK, "text/html; charset=utf-8", dashboard::PAGE),
        (&Method::GET, "/api/dashboard") => {
            let view = view.read().unwrap();
            match view.config.as_deref() {
                Some(cfg) => json(StatusCode::OK, &dashboard::dashboard(&view, cfg)),
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "starting",
                    "xalb is starting",
                ),
            }
        }
        (&Method::GET, "/metrics") => {
            let text = metrics::metrics(&view.read().unwrap());
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        (&Method::GET, "/targets") => json(
            StatusCode::OK,
            &targets(&view.read().unwrap(), query(&req, "target_group")),
        ),
        (
            &Method::GET,
            "/api/load-balancers" | "/api/listeners" | "/api/rules" | "/api/target-groups",
        ) => describe_reply(&view.read().unwrap(), &path, query(&req, "listener")),
        (&Method::POST, "/reload") => {
            let (tx, rx) = oneshot::channel();
            ask(&requests, AdminRequest::Reload(tx), rx).await
        }
        (&Method::POST, "/api/register-targets" | "/api/deregister-targets") => {
            let change = if path.ends_with("/register-targets") {
                TargetChange::Register
            } else {
                TargetChange::Deregister
            };
            match targets_change(req).await {
                Ok((group, targets)) => {
                    let (tx, rx) = oneshot::channel();
                    let request = AdminRequest::Targets {
                        change,
                        group,
                        targets,
                        answer: tx,
                    };
                    ask(&requests, request, rx).await
                }
                Err(r) => r,
            }
        }
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/ready") => {
            if view.read().unwrap().stopping {
                reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "stopping\n")
            } else {
                reply(StatusCode::OK, "text/plain", "ready\n")
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: GET /, /metrics, /targets, /healthz, /ready, /api/dashboard, \
             /api/load-balancers, /api/listeners, /api/rules?listener=LB:PORT, \
             /api/target-groups; POST /reload, /api/register-targets, /api/deregister-targets\n",
        ),
    })
}

/// The `describe-*` answers, shaped as the AWS CLI's JSON.
fn describe_reply(view: &AdminView, path: &str, listener: Option<&str>) -> Response<Full<Bytes>> {
    let Some(cfg) = view.config.as_deref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "xalb is starting",
        );
    };
    match path {
        "/api/load-balancers" => json(
            StatusCode::OK,
            &serde_json::json!({ "LoadBalancers": describe::load_balancers(cfg) }),
        ),
        "/api/listeners" => json(
            StatusCode::OK,
            &serde_json::json!({ "Listeners": describe::listeners(cfg) }),
        ),
        "/api/target-groups" => json(
            StatusCode::OK,
            &serde_json::json!({ "TargetGroups": describe::target_groups(cfg) }),
        ),
        _ => match cfg
            .listeners
            .iter()
            .find(|l| Some(l.name().as_str()) == listener)
        {
            Some(l) => json(
                StatusCode::OK,
                &serde_json::json!({ "Rules": describe::rules(l) }),
            ),
            None => error(
                StatusCode::NOT_FOUND,
                "listener_not_found",
                format!(
                    "no listener {:?}; listeners are named BALANCER:PORT: {}",
                    listener.unwrap_or(""),
                    cfg.listeners
                        .iter()
                        .map(|l| l.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        },
    }
}

/// A register/deregister body, read and parsed; the error is the reply.
async fn targets_change(
    req: Request<Incoming>,
) -> Result<(String, Vec<TargetSpec>), Response<Full<Bytes>>> {
    use http_body_util::BodyExt;
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "invalid_request", m);
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| bad(format!("cannot read the request body: {e}")))?
        .to_bytes();
    let change: TargetsChange = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "expected {{\"TargetGroupName\": \"web\", \"Targets\": [\"10.0.1.5:80\"]}}: {e}"
        ))
    })?;
    let targets = change
        .targets
        .iter()
        .map(|t| t.parse::<TargetSpec>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            let r = ApplyError::from(e).report();
            error(StatusCode::BAD_REQUEST, &r.kind, r.message)
        })?;
    Ok((change.target_group_name, targets))
}

/// Asks the control loop and answers with what it applied, or why it
/// applied nothing (see `daemon::ApplyError::http_status`), as JSON.
async fn ask(
    requests: &mpsc::Sender<AdminRequest>,
    request: AdminRequest,
    answer: oneshot::Receiver<Result<Applied, Refusal>>,
) -> Response<Full<Bytes>> {
    let answer = match requests.send(request).await {
        Ok(()) => answer
            .await
            .unwrap_or_else(|_| Err(Refusal::shutting_down())),
        Err(_) => Err(Refusal::shutting_down()),
    };
    match answer {
        Ok(applied) => json(StatusCode::OK, &applied),
        Err(refusal) => json(
            StatusCode::from_u16(refusal.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &refusal,
        ),
    }
}

/// Serves the endpoint, and samples the counters for the dashboard's
/// charts while it does.
pub async fn serve(
    listener: TcpListener,
    view: Arc<RwLock<AdminView>>,
    requests: mpsc::Sender<AdminRequest>,
    token: Option<String>,
) {
    let token: Option<Arc<str>> = token.map(Arc::from);
    tokio::spawn(dashboard::sample(view.clone()));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (view, requests, token) = (view.clone(), requests.clone(), token.clone());
        tokio::spawn(async move {
            let svc =
                service_fn(move |req| handle(view.clone(), requests.clone(), token.clone(), req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(%peer, error = %e, "admin connection");
            }
        });
    }
}
