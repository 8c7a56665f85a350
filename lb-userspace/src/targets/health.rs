//! Target health as the ALB keeps it: states with reason codes, active checks
//! on a schedule per target, and failed requests counted between checks.
//!
//! A new target needs one passing check to turn healthy; after that it
//! leaves service after `unhealthy_threshold` consecutive failures and comes
//! back after `healthy_threshold` consecutive successes (the ALB's rule).
//! Groups no listener forwards to are `unused` and not checked; groups with
//! checks disabled are `unavailable` and all their targets take traffic.
//!
//! Routing follows from the states of a whole group ([`refresh_usable`]):
//! healthy targets take traffic; with none healthy, targets still in their
//! initial checks do; with none of either the group fails open (the selector
//! routes to all).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::info;

use super::group::{TargetGroupRuntime, TargetState};
use crate::config::model::{HealthCheck, HealthCheckPort, ProtocolVersion, TargetProtocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    Initial,
    Healthy,
    Unhealthy,
    Draining,
    Unused,
    /// Health checks are disabled: not checked, and taking traffic.
    Unavailable,
}

impl HealthState {
    /// Every state, in the order metrics list them.
    pub const ALL: [HealthState; 6] = [
        HealthState::Initial,
        HealthState::Healthy,
        HealthState::Unhealthy,
        HealthState::Draining,
        HealthState::Unused,
        HealthState::Unavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Initial => "initial",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Draining => "draining",
            HealthState::Unused => "unused",
            HealthState::Unavailable => "unavailable",
        }
    }
}

/// The ALB's reason codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    InitialHealthChecking,
    ResponseCodeMismatch,
    Timeout,
    FailedHealthChecks,
    DeregistrationInProgress,
    HealthCheckDisabled,
    NotRegistered,
    NotInUse,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::InitialHealthChecking => "Elb.InitialHealthChecking",
            Reason::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            Reason::Timeout => "Target.Timeout",
            Reason::FailedHealthChecks => "Target.FailedHealthChecks",
            Reason::DeregistrationInProgress => "Target.DeregistrationInProgress",
            Reason::HealthCheckDisabled => "Target.HealthCheckDisabled",
            Reason::NotRegistered => "Target.NotRegistered",
            Reason::NotInUse => "Target.NotInUse",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Reason::InitialHealthChecking => "Initial health checks in progress",
            Reason::ResponseCodeMismatch => "Health checks failed with these codes",
            Reason::Timeout => "Request timed out",
            Reason::FailedHealthChecks => "Health checks failed",
            Reason::DeregistrationInProgress => "Target deregistration is in progress",
            Reason::HealthCheckDisabled => "Health checks are disabled",
            Reason::NotRegistered => "Target is not registered to the target group",
            Reason::NotInUse => {
                "Target group is not configured to receive traffic from the load balancer"
            }
        }
    }
}

/// One target's health record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: HealthState,
    /// `None` when healthy.
    pub reason: Option<Reason>,
    /// The last status code that did not match, for ResponseCodeMismatch.
    pub last_code: Option<u16>,
    pub consecutive_ok: u32,
    pub consecutive_failed: u32,
}

impl Health {
    pub fn initial(checks_enabled: bool) -> Self {
        if checks_enabled {
            Self {
                state: HealthState::Initial,
                reason: Some(Reason::InitialHealthChecking),
                last_code: None,
                consecutive_ok: 0,
                consecutive_failed: 0,
            }
        } else {
            // Without checks a target is taken as able to serve
            // ([`refresh_usable`]); the ALB reports it as unavailable.
            Self {
                state: HealthState::Unavailable,
                reason: Some(Reason::HealthCheckDisabled),
                last_code: None,
                consecutive_ok: 0,
                consecutive_failed: 0,
            }
        }
    }

    /// A target of a group no listener forwards to.
    pub fn unused() -> Self {
        Self {
            state: HealthState::Unused,
            reason: Some(Reason::NotInUse),
            last_code: None,
            consecutive_ok: 0,
            consecutive_failed: 0,
        }
    }

    /// `Target.ResponseCodeMismatch` with the code, as the ALB describes it.
    pub fn description(&self) -> String {
        match (self.reason, self.last_code) {
            (Some(Reason::ResponseCodeMismatch), Some(c)) => {
                format!("Health checks failed with these codes: [{c}]")
            }
            (Some(r), _) => r.description().to_string(),
            (None, _) => String::new(),
        }
    }
}

/// What one check came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The status code did not match.
    Mismatch(u16),
    Timeout,
    /// Refused, reset, or not HTTP.
    Failed,
}

/// Applies one outcome (a check, or a failed request); true if the state
/// changed. Draining, unused and unavailable targets are not checked.
///
/// An `initial` target turns healthy on its first passing check, and
/// unhealthy after `unhealthy_threshold` consecutive failures; an unhealthy
/// one needs `healthy_threshold` consecutive passes to come back.
pub fn record(
    h: &mut Health,
    outcome: Outcome,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
) -> bool {
    if matches!(
        h.state,
        HealthState::Draining | HealthState::Unused | HealthState::Unavailable
    ) {
        return false;
    }
    let before = h.state;
    match outcome {
        Outcome::Ok => {
            h.consecutive_ok += 1;
            h.consecutive_failed = 0;
            let needed = if h.state == HealthState::Initial {
                1
            } else {
                healthy_threshold
            };
            if h.state != HealthState::Healthy && h.consecutive_ok >= needed {
                h.state = HealthState::Healthy;
                h.reason = None;
                h.last_code = None;
            }
        }
        failure => {
            h.consecutive_failed += 1;
            h.consecutive_ok = 0;
            let reason = match failure {
                Outcome::Mismatch(c) => {
                    h.last_code = Some(c);
                    Reason::ResponseCodeMismatch
                }
                Outcome::Timeout => Reason::Timeout,
                _ => Reason::FailedHealthChecks,
            };
            if h.state != HealthState::Unhealthy && h.consecutive_failed >= unhealthy_threshold {
                h.state = HealthState::Unhealthy;
            }
            if h.state == HealthState::Unhealthy {
                h.reason = Some(reason);
            }
        }
    }
    h.state != before
}

/// Sets which targets of `group` take new requests, from their states.
pub fn refresh_usable(group: &TargetGroupRuntime) {
    let states: Vec<HealthState> = group
        .targets()
        .iter()
        .map(|t| t.health.lock().unwrap().state)
        .collect();
    // Unavailable (checks disabled) serves like healthy: nothing says otherwise.
    let serving = |s: HealthState| matches!(s, HealthState::Healthy | HealthState::Unavailable);
    let any_healthy = states.iter().any(|&s| serving(s));
    for (t, s) in group.targets().iter().zip(states) {
        let usable = if any_healthy {
            serving(s)
        } else {
            s == HealthState::Initial
        };
        t.set_usable(usable);
    }
}

/// A request to `target` failed before reaching it (refused, reset): counts
/// like a failed check, so a dead target leaves rotation before its next check.
pub fn passive_failure(group: &TargetGroupRuntime, target: &TargetState) {
    let hc = &group.config().health_check;
    if !hc.enabled {
        return;
    }
    let changed = record(
        &mut target.health.lock().unwrap(),
        Outcome::Failed,
        hc.healthy_threshold,
        hc.unhealthy_threshold,
    );
    if changed {
        info!(group = group.name(), target = %target.id, "target unhealthy after failed requests");
        refresh_usable(group);
    }
}

/// One check of `target` by `hc`.
pub async fn check(hc: &HealthCheck, target: &TargetState) -> Outcome {
    let port = match hc.port {
        HealthCheckPort::TrafficPort => target.target.port,
        HealthCheckPort::Port(p) => p,
    };
    let addr = std::net::SocketAddr::new(target.target.address, port);
    let attempt = async {
        let stream = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(_) => return Outcome::Failed,
        };
        match (hc.protocol, hc.version) {
            (TargetProtocol::Tcp, _) => Outcome::Ok,
            (tls, ProtocolVersion::Http2 | ProtocolVersion::Grpc) => {
                h2_check(hc, stream, addr, tls == TargetProtocol::Https).await
            }
            (TargetProtocol::Http, _) => http_check(hc, TokioIo::new(stream), addr).await,
            (TargetProtocol::Https, _) => {
                match crate::proxy::upstream::tls::connect(stream, addr).await {
                    Ok(tls) => http_check(hc, TokioIo::new(tls), addr).await,
                    Err(_) => Outcome::Failed,
                }
            }
        }
    };
    match tokio::time::timeout(hc.timeout, attempt).await {
        Ok(o) => o,
        Err(_) => Outcome::Timeout,
    }
}

async fn http_check<I>(hc: &HealthCheck, io: I, addr: std::net::SocketAddr) -> Outcome
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
        return Outcome::Failed;
    };
    let conn = tokio::spawn(conn);
    let host = match addr.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", addr.port()),
        v4 => format!("{v4}:{}", addr.port()),
    };
    let req = Request::get(hc.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "xalb-HealthChecker/1.0")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let Ok(req) = req else { return Outcome::Failed };
    let outcome = match sender.send_request(req).await {
        Ok(resp) => {
            let code = resp.status();
            if hc.matcher.matches(code.as_u16()) {
                Outcome::Ok
            } else {
                Outcome::Mismatch(code.as_u16())
            }
        }
        Err(_) => Outcome::Failed,
    };
    conn.abort();
    outcome
}

/// A check over HTTP/2: a GET on HTTP2 groups, judged by its status; on
/// GRPC groups a unary call with an empty message, as the ALB makes it,
/// judged by its `grpc-status` (in the trailers, or in the head of a
/// trailers-only answer).
async fn h2_check(
    hc: &HealthCheck,
    stream: TcpStream,
    addr: std::net::SocketAddr,
    tls: bool,
) -> Outcome {
    use http_body_util::{BodyExt, Full};
    let Ok(mut sender) =
        crate::proxy::upstream::h2::connect::<Full<Bytes>>(stream, addr, tls).await
    else {
        return Outcome::Failed;
    };
    let scheme = if tls { "https" } else { "http" };
    let host = match addr.ip() {
        std::net::IpAddr::V6(v6) => format!("[{v6}]:{}", addr.port()),
        v4 => format!("{v4}:{}", addr.port()),
    };
    let uri = format!("{scheme}://{host}{}", hc.path);
    let grpc = hc.version == ProtocolVersion::Grpc;
    let req = if grpc {
        Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .header(http::header::USER_AGENT, "xalb-HealthChecker/1.0")
            // One message: not compressed, zero bytes long.
            .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
    } else {
        Request::get(uri)
            .header(http::header::USER_AGENT, "xalb-HealthChecker/1.0")
            .body(Full::new(Bytes::new()))
    };
    let Ok(req) = req else { return Outcome::Failed };
    let Ok(resp) = sender.send_request(req).await else {
        return Outcome::Failed;
    };
    if !grpc {
        let code = resp.status().as_u16();
        return if hc.matcher.matches(code) {
            Outcome::Ok
        } else {
            Outcome::Mismatch(code)
        };
    }
    let (parts, body) = resp.into_parts();
    let status = match grpc_status(&parts.headers) {
        Some(s) => Some(s),
        None => match body.collect().await {
            Ok(collected) => collected.trailers().and_then(grpc_status),
            Err(_) => return Outcome::Failed,
        },
    };
    match status {
        Some(code) if hc.matcher.matches(code) => Outcome::Ok,
        Some(code) => Outcome::Mismatch(code),
        // Not a gRPC answer at all.
        None => Outcome::Failed,
    }
}

fn grpc_status(h: &http::HeaderMap) -> Option<u16> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A target that just turned healthy ramps its share linearly over the
/// group's `slow_start`, if one is set and another healthy target carries the
/// traffic meanwhile (the ALB's rule: slow start needs a healthy target that
/// is not itself in slow start).
fn slow_start(group: &Arc<TargetGroupRuntime>, i: usize) {
    let duration = group.config().slow_start;
    if duration.is_zero() {
        return;
    }
    let others_ready = group.targets().iter().enumerate().any(|(j, t)| {
        j != i && t.ramp() >= 1000 && t.health.lock().unwrap().state == HealthState::Healthy
    });
    if !others_ready {
        return;
    }
    let group = group.clone();
    let step = (duration / 50).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let target = &group.targets()[i];
        let start = tokio::time::Instant::now();
        loop {
            let elapsed = start.elapsed();
            if elapsed >= duration || target.health.lock().unwrap().state != HealthState::Healthy {
                target.set_ramp(1000);
                return;
            }
            target.set_ramp((elapsed.as_millis() * 1000 / duration.as_millis()).max(1) as u32);
            tokio::time::sleep(step).await;
        }
    });
}

/// Sets the states that follow from whether any listener forwards to `group`:
/// all `unused` if none does; if one does, targets the group's last
/// configuration left `unused` start over (`initial`, or `unavailable` with
/// checks disabled).
pub fn set_in_use(group: &TargetGroupRuntime, in_use: bool) {
    let enabled = group.config().health_check.enabled;
    for t in group.targets() {
        let mut h = t.health.lock().unwrap();
        if !in_use {
            *h = Health::unused();
        } else if h.state == HealthState::Unused {
            *h = Health::initial(enabled);
        }
    }
    refresh_usable(group);
}

/// Sets `group`'s states from `in_use` ([`set_in_use`]) and runs the checks
/// of every target until the handles are aborted: none when no listener uses
/// the group (the ALB checks only groups a rule references) or its checks are
/// disabled. Each target's schedule starts at a random point of the
/// interval, so checks of many targets do not arrive together.
pub fn spawn_checkers(group: Arc<TargetGroupRuntime>, in_use: bool) -> Vec<JoinHandle<()>> {
    set_in_use(&group, in_use);
    let hc = group.config().health_check.clone();
    if !hc.enabled || !in_use {
        return Vec::new();
    }
    (0..group.targets().len())
        .map(|i| {
            let group = group.clone();
            let hc = hc.clone();
            tokio::spawn(async move {
                let offset =
                    Duration::from_millis(fastrand::u64(0..hc.interval.as_millis().max(1) as u64));
                tokio::time::sleep(offset.min(hc.interval)).await;
                let mut tick = tokio::time::interval(hc.interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let target = &group.targets()[i];
                    let outcome = check(&hc, target).await;
                    let (changed, now) = {
                        let mut h = target.health.lock().unwrap();
                        let changed = record(
                            &mut h,
                            outcome,
                            hc.healthy_threshold,
                            hc.unhealthy_threshold,
                        );
                        (changed, h.clone())
                    };
                    if changed && now.state == HealthState::Healthy {
                        slow_start(&group, i);
                    }
                    if changed {
                        info!(
                            group = group.name(),
                            target = %target.id,
                            state = now.state.as_str(),
                            reason = now.reason.map_or("", Reason::code),
                            "target health changed"
                        );
                        refresh_usable(&group);
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_target_is_healthy_after_one_pass() {
        // healthy_threshold 10 does not apply to a target in its initial checks.
        let mut h = Health::initial(true);
        assert!(
            record(&mut h, Outcome::Ok, 10, 2),
            "the first pass makes it healthy"
        );
        assert_eq!((h.state, h.reason), (HealthState::Healthy, None));
        assert_eq!(h.description(), "");
        // One failure short of unhealthy_threshold, then a pass: still the
        // initial checks, so one pass is enough.
        let mut h = Health::initial(true);
        assert!(!record(&mut h, Outcome::Failed, 10, 3));
        assert!(!record(&mut h, Outcome::Timeout, 10, 3));
        assert_eq!(
            (h.state, h.reason),
            (HealthState::Initial, Some(Reason::InitialHealthChecking))
        );
        assert!(record(&mut h, Outcome::Ok, 10, 3));
        assert_eq!(h.state, HealthState::Healthy);
    }

    #[test]
    fn a_new_target_failing_unhealthy_threshold_checks_is_unhealthy() {
        let mut h = Health::initial(true);
        assert!(!record(&mut h, Outcome::Failed, 3, 3));
        assert!(!record(&mut h, Outcome::Failed, 3, 3));
        assert!(
            record(&mut h, Outcome::Failed, 3, 3),
            "third failure makes it unhealthy"
        );
        assert_eq!(
            (h.state, h.reason),
            (HealthState::Unhealthy, Some(Reason::FailedHealthChecks))
        );
        // Past the initial checks: healthy_threshold passes to come back.
        assert!(!record(&mut h, Outcome::Ok, 3, 3));
        assert!(!record(&mut h, Outcome::Ok, 3, 3));
        assert_eq!(h.state, HealthState::Unhealthy);
        assert!(record(&mut h, Outcome::Ok, 3, 3));
        assert_eq!((h.state, h.reason), (HealthState::Healthy, None));
    }

    #[test]
    fn thresholds_are_counted_exactly_after_the_initial_checks() {
        let mut h = Health::initial(true);
        assert!(record(&mut h, Outcome::Ok, 3, 2));
        // Healthy: unhealthy_threshold consecutive failures take it out...
        assert!(!record(&mut h, Outcome::Timeout, 3, 2));
        assert_eq!(h.state, HealthState::Healthy, "one failure is not enough");
        assert!(
            record(&mut h, Outcome::Timeout, 3, 2),
            "second failure makes it unhealthy"
        );
        assert_eq!(
            (h.state, h.reason),
            (HealthState::Unhealthy, Some(Reason::Timeout))
        );
        // ...and healthy_threshold consecutive passes bring it back; a
        // failure in between starts the count over.
        assert!(!record(&mut h, Outcome::Ok, 3, 2));
        assert!(!record(&mut h, Outcome::Ok, 3, 2));
        assert!(!record(&mut h, Outcome::Failed, 3, 2));
        assert_eq!(h.state, HealthState::Unhealthy);
        assert!(!record(&mut h, Outcome::Ok, 3, 2));
        assert!(!record(&mut h, Outcome::Ok, 3, 2));
        assert_eq!(
            h.state,
            HealthState::Unhealthy,
            "two passes since the failure"
        );
        assert!(record(&mut h, Outcome::Ok, 3, 2), "the third in a row");
        assert_eq!((h.state, h.reason), (HealthState::Healthy, None));
        // A pass in between resets the failure count too.
        record(&mut h, Outcome::Failed, 3, 2);
        record(&mut h, Outcome::Ok, 3, 2);
        record(&mut h, Outcome::Failed, 3, 2);
        assert_eq!(h.state, HealthState::Healthy);
    }

    #[test]
    fn reasons_follow_the_last_failure() {
        let mut h = Health::initial(true);
        record(&mut h, Outcome::Mismatch(500), 2, 2);
        record(&mut h, Outcome::Mismatch(503), 2, 2);
        assert_eq!(
            (h.state, h.reason),
            (HealthState::Unhealthy, Some(Reason::ResponseCodeMismatch))
        );
        assert_eq!(
            h.description(),
            "Health checks failed with these codes: [503]"
        );
        record(&mut h, Outcome::Failed, 2, 2);
        assert_eq!(h.reason, Some(Reason::FailedHealthChecks));
        record(&mut h, Outcome::Ok, 2, 2);
        assert_eq!(h.state, HealthState::Unhealthy, "one success is not enough");
        record(&mut h, Outcome::Ok, 2, 2);
        assert_eq!((h.state, h.reason), (HealthState::Healthy, None));
    }

    #[test]
    fn a_failure_resets_the_pass_streak_so_alternating_checks_never_change_the_state() {
        // Unhealthy, then pass/fail forever: never two passes in a row, so
        // never healthy_threshold (2) of them.
        let mut h = Health::initial(true);
        record(&mut h, Outcome::Failed, 2, 2);
        assert!(record(&mut h, Outcome::Failed, 2, 2));
        for round in 0..10 {
            assert!(!record(&mut h, Outcome::Ok, 2, 2), "pass in round {round}");
            assert!(
                !record(&mut h, Outcome::Failed, 2, 2),
                "fail in round {round}"
            );
            assert_eq!(h.state, HealthState::Unhealthy, "round {round}");
        }
        assert!(!record(&mut h, Outcome::Ok, 2, 2));
        assert!(record(&mut h, Outcome::Ok, 2, 2), "two passes in a row");
        assert_eq!(h.state, HealthState::Healthy);
        // And the mirror image: a healthy target failing every other check
        // is never unhealthy_threshold (2) failures in a row.
        for round in 0..10 {
            assert!(
                !record(&mut h, Outcome::Timeout, 2, 2),
                "fail in round {round}"
            );
            assert!(!record(&mut h, Outcome::Ok, 2, 2), "pass in round {round}");
            assert_eq!(h.state, HealthState::Healthy, "round {round}");
        }
    }

    #[test]
    fn a_failure_that_changes_no_state_sets_no_reason() {
        // What describe-target-health shows: a healthy target is healthy
        // with no reason until it leaves service, whatever failed meanwhile.
        let mut h = Health::initial(true);
        assert!(record(&mut h, Outcome::Ok, 2, 3));
        for failure in [Outcome::Timeout, Outcome::Mismatch(503), Outcome::Failed] {
            assert!(!record(&mut h, failure, 2, 3), "{failure:?}");
            assert_eq!(
                (h.state, h.reason),
                (HealthState::Healthy, None),
                "{failure:?}"
            );
            assert_eq!(h.description(), "", "{failure:?}");
            assert!(!record(&mut h, Outcome::Ok, 2, 3));
        }
        // A target in its initial checks keeps saying so.
        let mut h = Health::initial(true);
        assert!(!record(&mut h, Outcome::Mismatch(500), 2, 3));
        assert_eq!(
            (h.state, h.reason),
            (HealthState::Initial, Some(Reason::InitialHealthChecking))
        );
        assert_eq!(h.description(), "Initial health checks in progress");
        // The failure that changes the state brings its reason.
        assert!(!record(&mut h, Outcome::Timeout, 2, 3));
        assert!(record(&mut h, Outcome::Mismatch(502), 2, 3));
        assert_eq!(
            (h.state, h.reason),
            (HealthState::Unhealthy, Some(Reason::ResponseCodeMismatch))
        );
        assert_eq!(
            h.description(),
            "Health checks failed with these codes: [502]"
        );
    }

    #[test]
    fn draining_targets_are_not_checked_back_to_life() {
        let mut h = Health {
            state: HealthState::Draining,
            reason: Some(Reason::DeregistrationInProgress),
            ..Health::initial(true)
        };
        assert!(!record(&mut h, Outcome::Ok, 2, 2));
        assert_eq!(h.state, HealthState::Draining);
    }

    fn group(toml_targets: &str, extra: &str) -> Arc<TargetGroupRuntime> {
        let text = format!(
            "[[target_group]]\nname = \"g\"\nprotocol = \"HTTP\"\nport = 80\ntargets = [{toml_targets}]\n{extra}\n"
        );
        let cfg = crate::config::parse_str(&text, "t.toml").unwrap();
        Arc::new(TargetGroupRuntime::new(&cfg.target_groups[0]))
    }

    fn share_of_first(g: &TargetGroupRuntime, n: usize) -> usize {
        (0..n)
            .filter(|_| g.pick(&http::HeaderMap::new(), &[]).unwrap().index() == 0)
            .count()
    }

    #[test]
    fn routing_prefers_healthy_then_initial_then_all() {
        let g = group("{ address = \"10.0.0.1\" }, { address = \"10.0.0.2\" }", "");
        refresh_usable(&g);
        assert!(
            g.targets().iter().all(|t| t.is_usable()),
            "all initial: all usable"
        );
        for _ in 0..2 {
            record(
                &mut g.targets()[1].health.lock().unwrap(),
                Outcome::Ok,
                2,
                2,
            );
        }
        refresh_usable(&g);
        assert_eq!(
            share_of_first(&g, 20),
            0,
            "only the healthy target gets traffic"
        );
        for _ in 0..2 {
            record(
                &mut g.targets()[1].health.lock().unwrap(),
                Outcome::Failed,
                2,
                2,
            );
        }
        refresh_usable(&g);
        assert_eq!(
            share_of_first(&g, 20),
            20,
            "the initial target before the unhealthy one"
        );
        for _ in 0..2 {
            record(
                &mut g.targets()[0].health.lock().unwrap(),
                Outcome::Timeout,
                2,
                2,
            );
        }
        refresh_usable(&g);
        assert!(g.fail_open(), "all unhealthy: fail open");
        assert_eq!(share_of_first(&g, 20), 10);
    }

    #[test]
    fn a_ramping_target_gets_its_share_of_weight() {
        let g = group("{ address = \"10.0.0.1\" }, { address = \"10.0.0.2\" }", "");
        g.targets()[0].set_ramp(250);
        assert_eq!(
            share_of_first(&g, 500),
            100,
            "a quarter weight: 1 in 5 picks"
        );
        g.targets()[0].set_ramp(1000);
        assert_eq!(share_of_first(&g, 500), 250);
    }

    #[test]
    fn disabled_checks_are_unavailable_and_take_traffic() {
        let h = Health::initial(false);
        assert_eq!(
            (h.state.as_str(), h.reason.map(Reason::code)),
            ("unavailable", Some("Target.HealthCheckDisabled"))
        );
        assert_eq!(h.description(), "Health checks are disabled");
        let mut after = h.clone();
        assert!(!record(&mut after, Outcome::Failed, 2, 2));
        assert!(!record(&mut after, Outcome::Failed, 2, 2));
        assert_eq!(after, h, "not checked, so nothing changes it");

        let g = group(
            "{ address = \"10.0.0.1\" }, { address = \"10.0.0.2\" }",
            "[target_group.health_check]\nenabled = false\n",
        );
        assert!(spawn_checkers(g.clone(), true).is_empty(), "no checkers");
        for t in g.targets() {
            assert_eq!(t.health.lock().unwrap().state, HealthState::Unavailable);
            assert!(t.is_usable(), "every registered target takes traffic");
        }
        assert!(!g.fail_open());
        assert_eq!(share_of_first(&g, 20), 10);
    }

    #[test]
    fn with_checks_off_failed_requests_never_take_a_target_out() {
        // No checker runs, so a target marked down here would never come
        // back: failed requests must not count at all.
        let g = group(
            "{ address = \"10.0.0.1\" }, { address = \"10.0.0.2\" }",
            "[target_group.health_check]\nenabled = false\nunhealthy_threshold = 2\n",
        );
        assert!(spawn_checkers(g.clone(), true).is_empty());
        for _ in 0..20 {
            passive_failure(&g, &g.targets()[0]);
        }
        assert_eq!(
            *g.targets()[0].health.lock().unwrap(),
            Health::initial(false),
            "still unavailable, for want of checks"
        );
        assert!(g.targets().iter().all(|t| t.is_usable()));
        assert!(!g.fail_open());
        assert_eq!(share_of_first(&g, 20), 10, "both still share the traffic");
    }

    /// Answers every request on `127.0.0.1` with 200, as a target passing
    /// its health checks does.
    async fn answering_200() -> std::net::SocketAddr {
        answering_200_counted().await.0
    }

    /// [`answering_200`], counting the requests it has read.
    async fn answering_200_counted() -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>)
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&b[..n]),
                        }
                    }
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = s.write_all(ok).await;
                });
            }
        });
        (addr, requests)
    }

    /// Waits for `done` by looking every few milliseconds; fails only if it
    /// has not happened after a time no passing run comes near.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}: never");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn failed_requests_take_a_checked_target_out_and_passing_checks_bring_it_back() {
        let (a, b) = (answering_200().await, answering_200().await);
        let text = format!(
            "[[target_group]]\nname = \"g\"\nprotocol = \"HTTP\"\nport = 80\n\
             targets = [{{ address = \"{}\", port = {} }}, {{ address = \"{}\", port = {} }}]\n\
             [target_group.health_check]\nhealthy_threshold = 2\nunhealthy_threshold = 2\n",
            a.ip(),
            a.port(),
            b.ip(),
            b.port()
        );
        let mut cfg = crate::config::parse_str(&text, "t.toml")
            .unwrap()
            .target_groups[0]
            .clone();
        // Below the file's 5 s minimum, so that the checker's passes come
        // within the test; the timeout only bounds a check that hangs.
        cfg.health_check.interval = Duration::from_millis(10);
        cfg.health_check.timeout = Duration::from_secs(10);
        let g = Arc::new(TargetGroupRuntime::new(&cfg));
        for t in g.targets() {
            record(&mut t.health.lock().unwrap(), Outcome::Ok, 2, 2);
        }
        refresh_usable(&g);
        let t0 = &g.targets()[0];
        let health = || {
            let h = t0.health.lock().unwrap();
            (h.state, h.reason)
        };

        passive_failure(&g, t0);
        assert_eq!(health(), (HealthState::Healthy, None), "one is not enough");
        assert!(t0.is_usable());
        passive_failure(&g, t0);
        assert_eq!(
            health(),
            (HealthState::Unhealthy, Some(Reason::FailedHealthChecks))
        );
        assert!(!t0.is_usable(), "out of rotation before its next check");
        assert_eq!(share_of_first(&g, 20), 0);

        // The target answers its checks: healthy_threshold passes in a row
        // bring it back into rotation.
        let checkers = spawn_checkers(g.clone(), true);
        assert_eq!(checkers.len(), 2);
        until("back in rotation", || {
            health() == (HealthState::Healthy, None) && t0.is_usable()
        })
        .await;
        assert_eq!(share_of_first(&g, 20), 10);
        for c in checkers {
            c.abort();
        }
    }

    #[test]
    fn unused_groups_are_not_checked_and_say_why() {
        let h = Health::unused();
        assert_eq!(
            (h.state.as_str(), h.reason.map(Reason::code)),
            ("unused", Some("Target.NotInUse"))
        );
        assert_eq!(
            h.description(),
            "Target group is not configured to receive traffic from the load balancer"
        );
        for extra in ["", "[target_group.health_check]\nenabled = false\n"] {
            let g = group("{ address = \"10.0.0.1\" }", extra);
            assert!(
                spawn_checkers(g.clone(), false).is_empty(),
                "no checker, so no probe"
            );
            let h = g.targets()[0].health.lock().unwrap().clone();
            assert_eq!(h, Health::unused(), "{extra}");
        }
        let mut h = Health::unused();
        assert!(!record(&mut h, Outcome::Ok, 2, 2));
        assert_eq!(h, Health::unused());
    }

    #[test]
    fn a_group_that_becomes_used_starts_over_in_initial() {
        let g = group("{ address = \"10.0.0.1\" }", "");
        set_in_use(&g, false);
        assert_eq!(
            g.targets()[0].health.lock().unwrap().state,
            HealthState::Unused
        );
        set_in_use(&g, true);
        assert_eq!(
            *g.targets()[0].health.lock().unwrap(),
            Health::initial(true)
        );
        // A used group keeps the health it has (carried over by a reload).
        record(
            &mut g.targets()[0].health.lock().unwrap(),
            Outcome::Ok,
            5,
            2,
        );
        set_in_use(&g, true);
        assert_eq!(
            g.targets()[0].health.lock().unwrap().state,
            HealthState::Healthy
        );
        // Checks disabled: from unused to unavailable.
        let g = group(
            "{ address = \"10.0.0.1\" }",
            "[target_group.health_check]\nenabled = false\n",
        );
        set_in_use(&g, false);
        set_in_use(&g, true);
        assert_eq!(
            *g.targets()[0].health.lock().unwrap(),
            Health::initial(false)
        );
        assert!(g.targets()[0].is_usable());
    }

    /// What an HTTP/2 test target answers each request with.
    #[derive(Clone, Copy)]
    enum H2Answer {
        /// This status, no body.
        Status(u16),
        /// 200 with a gRPC head, then `grpc-status` in the trailers.
        GrpcTrailers(u16),
        /// A trailers-only gRPC answer: `grpc-status` in the head.
        GrpcHeadOnly(u16),
    }

    /// An h2c target on `127.0.0.1` answering every request with `answer`;
    /// also what it was asked, as "METHOD path content-type".
    async fn h2c_answering(
        answer: H2Answer,
    ) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(s).await else {
                        return;
                    };
                    while let Some(Ok((req, mut respond))) = conn.accept().await {
                        // Its own task: the connection goes on meanwhile, so that
                        // the request body arrives.
                        let log = log.clone();
                        tokio::spawn(async move {
                            let content_type = req
                                .headers()
                                .get(http::header::CONTENT_TYPE)
                                .map_or("-", |v| v.to_str().unwrap())
                                .to_string();
                            log.lock().unwrap().push(format!(
                                "{} {} {content_type}",
                                req.method(),
                                req.uri().path()
                            ));
                            let mut body = req.into_body();
                            while let Some(Ok(d)) = body.data().await {
                                let _ = body.flow_control().release_capacity(d.len());
                            }
                            let grpc = |code: u16| {
                                let mut h = http::HeaderMap::new();
                                h.insert("grpc-status", code.into());
                                h
                            };
                            let head = http::Response::builder()
                                .header("content-type", "application/grpc");
                            let (head, trailers) = match answer {
                                H2Answer::Status(code) => {
                                    (http::Response::builder().status(code), None)
                                }
                                H2Answer::GrpcTrailers(code) => (head, Some(grpc(code))),
                                H2Answer::GrpcHeadOnly(code) => {
                                    (head.header("grpc-status", code), None)
                                }
                            };
                            let head = head.body(()).unwrap();
                            let end = trailers.is_none();
                            let Ok(mut stream) = respond.send_response(head, end) else {
                                return;
                            };
                            if let Some(t) = trailers {
                                let _ = stream.send_trailers(t);
                            }
                        });
                    }
                });
            }
        });
        (addr, asked)
    }

    /// A check of `addr` by an HTTP group of `version` with `matcher`.
    async fn h2_outcome(
        addr: std::net::SocketAddr,
        version: ProtocolVersion,
        matcher: &[(u16, u16)],
    ) -> Outcome {
        let g = group(
            &format!("{{ address = \"{}\", port = {} }}", addr.ip(), addr.port()),
            "",
        );
        let mut hc = g.config().health_check.clone();
        hc.path = "/ping".into();
        hc.version = version;
        hc.matcher = crate::config::model::Matcher(matcher.to_vec());
        // Only bounds a check that hangs.
        hc.timeout = Duration::from_secs(10);
        check(&hc, &g.targets()[0]).await
    }

    #[tokio::test]
    async fn an_http2_check_over_h2c_is_a_get_judged_by_its_status() {
        let (ok, asked) = h2c_answering(H2Answer::Status(200)).await;
        assert_eq!(
            h2_outcome(ok, ProtocolVersion::Http2, &[(200, 200)]).await,
            Outcome::Ok
        );
        assert_eq!(*asked.lock().unwrap(), ["GET /ping -"]);
        let (down, _) = h2c_answering(H2Answer::Status(503)).await;
        assert_eq!(
            h2_outcome(down, ProtocolVersion::Http2, &[(200, 299)]).await,
            Outcome::Mismatch(503)
        );
        // A gRPC status means nothing to an HTTP2 check: its status decides.
        let (grpc, _) = h2c_answering(H2Answer::GrpcHeadOnly(12)).await;
        assert_eq!(
            h2_outcome(grpc, ProtocolVersion::Http2, &[(200, 200)]).await,
            Outcome::Ok
        );
    }

    #[tokio::test]
    async fn a_grpc_check_is_judged_by_the_grpc_status_of_its_trailers_or_its_head() {
        use H2Answer::*;
        use ProtocolVersion::Grpc;
        // 12 (UNIMPLEMENTED) is the default matcher's.
        for (answer, want) in [
            (GrpcTrailers(12), Outcome::Ok),
            (GrpcTrailers(0), Outcome::Mismatch(0)),
            (GrpcTrailers(1), Outcome::Mismatch(1)),
            (GrpcHeadOnly(12), Outcome::Ok),
            (GrpcHeadOnly(5), Outcome::Mismatch(5)),
            // An HTTP answer with no gRPC status is no gRPC answer at all,
            // even with the status an HTTP check would pass.
            (Status(200), Outcome::Failed),
            (Status(12), Outcome::Failed),
        ] {
            let (addr, asked) = h2c_answering(answer).await;
            let got = h2_outcome(addr, Grpc, &[(12, 12)]).await;
            assert_eq!(got, want, "grpc-status {:?}", {
                match answer {
                    GrpcTrailers(c) => format!("{c} in trailers"),
                    GrpcHeadOnly(c) => format!("{c} in the head"),
                    Status(c) => format!("none, HTTP {c}"),
                }
            });
            assert_eq!(*asked.lock().unwrap(), ["POST /ping application/grpc"]);
        }
        let (addr, _) = h2c_answering(GrpcTrailers(0)).await;
        assert_eq!(h2_outcome(addr, Grpc, &[(0, 0)]).await, Outcome::Ok);
    }

    /// Two targets, both healthy at full weight, in a group with a 30 s
    /// slow start (ramp steps of 600 ms).
    fn two_healthy_with_slow_start() -> Arc<TargetGroupRuntime> {
        let g = group(
            "{ address = \"10.0.0.1\" }, { address = \"10.0.0.2\" }",
            "slow_start = \"30s\"",
        );
        for t in g.targets() {
            assert!(record(&mut t.health.lock().unwrap(), Outcome::Ok, 2, 2));
            assert_eq!(t.ramp(), 1000);
        }
        g
    }

    /// Sleeps (in paused time) until `ms` after `start`.
    async fn at(start: tokio::time::Instant, ms: u64) {
        tokio::time::sleep_until(start + Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_a_new_healthy_target_linearly_in_steps_of_a_fiftieth() {
        let g = two_healthy_with_slow_start();
        let start = tokio::time::Instant::now();
        slow_start(&g, 0);
        let ramp = || g.targets()[0].ramp();
        // Each step sets elapsed/30 s, at least 1, every 600 ms; the
        // instants below fall between steps.
        for (ms, want) in [
            (300, 1),
            (2_700, 80),
            (15_300, 500),
            (29_700, 980),
            (30_300, 1000),
            (90_000, 1000),
        ] {
            at(start, ms).await;
            assert_eq!(ramp(), want, "{ms} ms in");
        }
        assert_eq!(g.targets()[1].ramp(), 1000, "the other keeps its weight");
    }

    #[tokio::test(start_paused = true)]
    async fn a_target_leaving_health_mid_ramp_gets_its_full_weight_back_and_stops_ramping() {
        let g = two_healthy_with_slow_start();
        let start = tokio::time::Instant::now();
        slow_start(&g, 0);
        let t0 = &g.targets()[0];
        at(start, 2_700).await;
        assert_eq!(t0.ramp(), 80);
        record(&mut t0.health.lock().unwrap(), Outcome::Failed, 2, 2);
        assert!(record(
            &mut t0.health.lock().unwrap(),
            Outcome::Failed,
            2,
            2
        ));
        // The next step (at 3 s) sees it unhealthy.
        for ms in [3_300, 15_300, 40_000] {
            at(start, ms).await;
            assert_eq!(t0.ramp(), 1000, "{ms} ms in");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_needs_another_healthy_target_at_full_weight() {
        let ramp_after_slow_start = |g: Arc<TargetGroupRuntime>| async move {
            let start = tokio::time::Instant::now();
            slow_start(&g, 0);
            at(start, 300).await;
            g.targets()[0].ramp()
        };
        // The other healthy at full weight: the new one ramps.
        let g = two_healthy_with_slow_start();
        assert_eq!(ramp_after_slow_start(g).await, 1);
        // Alone: no one else carries the traffic, so full weight at once.
        let g = group("{ address = \"10.0.0.1\" }", "slow_start = \"30s\"");
        assert!(record(
            &mut g.targets()[0].health.lock().unwrap(),
            Outcome::Ok,
            2,
            2
        ));
        assert_eq!(ramp_after_slow_start(g).await, 1000, "alone");
        // The other at full weight but unhealthy.
        let g = two_healthy_with_slow_start();
        for _ in 0..2 {
            record(
                &mut g.targets()[1].health.lock().unwrap(),
                Outcome::Failed,
                2,
                2,
            );
        }
        assert_eq!(ramp_after_slow_start(g).await, 1000, "other unhealthy");
        // The other healthy but itself in slow start.
        let g = two_healthy_with_slow_start();
        g.targets()[1].set_ramp(500);
        assert_eq!(ramp_after_slow_start(g).await, 1000, "other ramping");
        // No slow start configured.
        let g = group("{ address = \"10.0.0.1\" }, { address = \"10.0.0.2\" }", "");
        for t in g.targets() {
            record(&mut t.health.lock().unwrap(), Outcome::Ok, 2, 2);
        }
        assert_eq!(ramp_after_slow_start(g).await, 1000, "slow start off");
    }

    /// A group checking `addrs` every 10 ms, with a 30 s slow start; the
    /// targets listed in `healthy` start healthy.
    fn checked_with_slow_start(
        addrs: &[std::net::SocketAddr],
        healthy: &[usize],
    ) -> Arc<TargetGroupRuntime> {
        let targets: Vec<String> = addrs
            .iter()
            .map(|a| format!("{{ address = \"{}\", port = {} }}", a.ip(), a.port()))
            .collect();
        let text = format!(
            "[[target_group]]\nname = \"g\"\nprotocol = \"HTTP\"\nport = 80\n\
             slow_start = \"30s\"\ntargets = [{}]\n\
             [target_group.health_check]\nhealthy_threshold = 2\nunhealthy_threshold = 2\n",
            targets.join(", ")
        );
        let mut cfg = crate::config::parse_str(&text, "t.toml")
            .unwrap()
            .target_groups[0]
            .clone();
        // Below the file's minimum, so that checks come within the test; the
        // timeout only bounds a check that hangs.
        cfg.health_check.interval = Duration::from_millis(10);
        cfg.health_check.timeout = Duration::from_secs(10);
        let g = Arc::new(TargetGroupRuntime::new(&cfg));
        for &i in healthy {
            record(
                &mut g.targets()[i].health.lock().unwrap(),
                Outcome::Ok,
                2,
                2,
            );
        }
        g
    }

    #[tokio::test]
    async fn a_target_its_checks_turn_healthy_starts_slow_while_a_healthy_one_serves() {
        let (a, b) = (answering_200().await, answering_200().await);
        let g = checked_with_slow_start(&[a, b], &[1]);
        let checkers = spawn_checkers(g.clone(), true);
        let t0 = &g.targets()[0];
        until("the new target healthy and ramping", || {
            t0.health.lock().unwrap().state == HealthState::Healthy && t0.ramp() < 1000
        })
        .await;
        assert_eq!(g.targets()[1].ramp(), 1000);
        for c in checkers {
            c.abort();
        }
    }

    #[tokio::test]
    async fn passing_checks_of_a_target_already_healthy_leave_its_weight_alone() {
        let ((a, seen_a), (b, seen_b)) =
            (answering_200_counted().await, answering_200_counted().await);
        let g = checked_with_slow_start(&[a, b], &[0, 1]);
        let checkers = spawn_checkers(g.clone(), true);
        let seen =
            |n: &Arc<std::sync::atomic::AtomicUsize>| n.load(std::sync::atomic::Ordering::SeqCst);
        // The third check of each has begun: two have been recorded.
        until("three checks of each target", || {
            seen(&seen_a) >= 3 && seen(&seen_b) >= 3
        })
        .await;
        for t in g.targets() {
            assert_eq!(t.health.lock().unwrap().state, HealthState::Healthy);
            assert_eq!(t.ramp(), 1000, "{}", t.id);
        }
        for c in checkers {
            c.abort();
        }
    }
}
