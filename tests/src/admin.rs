//! The balancer's admin endpoint as tests read it, and waiting helpers.

use std::time::{Duration, Instant};

pub use xalb::admin::TargetHealthRow as Row;

use crate::bed::{HttpBed, ADMIN};
use crate::http::{get, in_ns, Client, Reply};
use crate::netns::Netns;

/// A GET on the admin endpoint, from inside the balancer's namespace.
pub fn admin_get(bed: &HttpBed, path: &str) -> Reply {
    admin_get_in(&bed.lb, path)
}

/// A GET on the admin endpoint of the balancer in `lb`.
pub fn admin_get_in(lb: &Netns, path: &str) -> Reply {
    let path = path.to_string();
    in_ns(lb, async move || {
        get(ADMIN.parse().unwrap(), &path, &[]).await
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("admin endpoint: {e:#}"))
}

/// A POST with an empty body on the admin endpoint (`/reload`), from inside
/// the balancer's namespace, with its admin token.
pub fn admin_post(bed: &HttpBed, path: &str) -> Reply {
    let auth = format!("Bearer {}", crate::daemon::admin_token(&bed.lb));
    admin_post_as(&bed.lb, path, "", Some(&auth))
}

/// A POST of `body` on the admin endpoint of the balancer in `lb`, with
/// `authorization` as that header's value if any.
pub fn admin_post_as(lb: &Netns, path: &str, body: &str, authorization: Option<&str>) -> Reply {
    let (path, body) = (path.to_string(), body.to_string());
    let authorization = authorization.map(str::to_string);
    in_ns(lb, async move || {
        let mut c = Client::connect(ADMIN.parse().unwrap(), false).await?;
        let mut req = http::Request::post(path).header("host", "admin");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let req = req.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        c.send(req).await
    })
    .unwrap()
    .unwrap_or_else(|e| panic!("admin endpoint: {e:#}"))
}

/// `/targets` (with `query`, e.g. `?target_group=web`), parsed.
pub fn targets(bed: &HttpBed, query: &str) -> Vec<Row> {
    targets_in(&bed.lb, query)
}

/// [`targets`] of the balancer in `lb`.
pub fn targets_in(lb: &Netns, query: &str) -> Vec<Row> {
    let r = admin_get_in(lb, &format!("/targets{query}"));
    assert_eq!(r.status, 200);
    let reply: xalb::admin::TargetsReply = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not a /targets reply ({e}): {:?}", r.body));
    reply.targets
}

/// Polls `f` until it succeeds; panics with its last complaint after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(t) => return t,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs async client code on its own thread inside `ns`, without waiting.
pub fn spawn_in<T: Send + 'static>(
    ns: &Netns,
    f: impl AsyncFnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    ns.spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .unwrap()
}

/// A per-worker metric's values for the listener and address family a
/// client reaches at `addr` (a balancer address and listener port), in the
/// order `/metrics` lists them (worker 0 first). One listener's sockets
/// serve every address of its balancer.
pub fn per_worker_metric(metrics: &str, name: &str, addr: std::net::SocketAddr) -> Vec<usize> {
    let prefix = format!("{name}{{");
    let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
    // The labels in order: `listener="lb:port",family="..."`.
    let group = format!(":{}\",family=\"{family}\"", addr.port());
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&group))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as usize)
        .collect()
}
