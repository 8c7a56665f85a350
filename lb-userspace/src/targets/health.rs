//! Target health as the ALB keeps it: states with reason codes, active checks
//! on a schedule per target, and failed requests counted between checks.
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
use crate::config::model::{HealthCheck, HealthCheckPort, TargetProtocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthState {
    Initial,
    Healthy,
    Unhealthy,
    Draining,
    Unused,
}

impl HealthState {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Initial => "initial",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Draining => "draining",
            HealthState::Unused => "unused",
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
            // Without checks a target is taken as able to serve.
            Self {
                state: HealthState::Healthy,
                reason: Some(Reason::HealthCheckDisabled),
                last_code: None,
                consecutive_ok: 0,
                consecutive_failed: 0,
            }
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
/// changed. Draining and unused targets are past checking.
pub fn record(
    h: &mut Health,
    outcome: Outcome,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
) -> bool {
    if matches!(h.state, HealthState::Draining | HealthState::Unused) {
        return false;
    }
    let before = h.state;
    match outcome {
        Outcome::Ok => {
            h.consecutive_ok += 1;
            h.consecutive_failed = 0;
            if h.state != HealthState::Healthy && h.consecutive_ok >= healthy_threshold {
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
    let any_healthy = states.contains(&HealthState::Healthy);
    for (t, s) in group.targets().iter().zip(states) {
        let usable = if any_healthy {
            s == HealthState::Healthy
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
        match hc.protocol {
            TargetProtocol::Tcp => Outcome::Ok,
            TargetProtocol::Http => http_check(hc, TokioIo::new(stream), addr).await,
            TargetProtocol::Https => match crate::proxy::tls::connect(stream, addr).await {
                Ok(tls) => http_check(hc, TokioIo::new(tls), addr).await,
                Err(_) => Outcome::Failed,
            },
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

/// Runs the checks of every target of `group` until the handles are aborted.
/// Each target's schedule starts at a random point of the interval, so
/// checks of many targets do not arrive together.
pub fn spawn_checkers(group: Arc<TargetGroupRuntime>) -> Vec<JoinHandle<()>> {
    let hc = group.config().health_check.clone();
    if !hc.enabled {
        refresh_usable(&group);
        return Vec::new();
    }
    refresh_usable(&group);
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
    fn thresholds_are_counted_exactly() {
        let mut h = Health::initial(true);
        assert!(!record(&mut h, Outcome::Ok, 3, 2));
        assert!(!record(&mut h, Outcome::Ok, 3, 2));
        assert_eq!(h.state, HealthState::Initial);
        assert!(
            record(&mut h, Outcome::Ok, 3, 2),
            "third success makes it healthy"
        );
        assert_eq!((h.state, h.reason), (HealthState::Healthy, None));
        assert!(!record(&mut h, Outcome::Timeout, 3, 2));
        assert!(
            record(&mut h, Outcome::Timeout, 3, 2),
            "second failure makes it unhealthy"
        );
        assert_eq!(
            (h.state, h.reason),
            (HealthState::Unhealthy, Some(Reason::Timeout))
        );
        // A success in between resets the count.
        let mut h = Health::initial(true);
        record(&mut h, Outcome::Failed, 2, 2);
        record(&mut h, Outcome::Ok, 2, 2);
        record(&mut h, Outcome::Failed, 2, 2);
        assert_eq!(h.state, HealthState::Initial);
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
            "[[target_group]]\nname = \"g\"\nprotocol = \"HTTP\"\nport = 80\n{extra}\ntargets = [{toml_targets}]\n"
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
    fn disabled_checks_count_as_healthy() {
        let h = Health::initial(false);
        assert_eq!(
            (h.state, h.reason),
            (HealthState::Healthy, Some(Reason::HealthCheckDisabled))
        );
    }
}
