//! A target group at run time, the per-request [`Pick`], and the weighted
//! choice among groups ([`WeightedGroups`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use super::algorithm::Selector;
use super::sticky::{self, Token, APP_COOKIE, GROUP_COOKIE, LB_COOKIE};
use crate::config::model::{self, StickinessType};

/// One registered target and its live counters. Shared (`Arc`) between the
/// group, in-flight [`Pick`]s and the health checker, so a target dropped by a
/// reload stays valid until its last request ends.
#[derive(Debug)]
pub struct TargetState {
    pub target: model::Target,
    /// `address:port` (IPv6 in brackets). Derived from the target itself, not
    /// its position, so stickiness survives reloads that reorder targets.
    pub id: String,
    index: usize,
    /// This target's stickiness cookie value, precomputed.
    token: Token,
    outstanding: AtomicU32,
    usable: AtomicBool,
    /// The group's; bumped on every usable flip so selection rebuilds.
    generation: Arc<AtomicU64>,
    /// What the health checker (and failed requests) say of this target.
    pub health: std::sync::Mutex<super::health::Health>,
    /// Share of its weight this target gets now, in thousandths: below 1000
    /// while it ramps up after turning healthy (slow start).
    ramp: AtomicU32,
    /// When a deregistered target's draining ends: requests still waiting
    /// for it then are answered 502, as the ALB does.
    drain_deadline: std::sync::Mutex<Option<tokio::time::Instant>>,
    drain_started: tokio::sync::Notify,
}

impl TargetState {
    /// Position in [`TargetGroupRuntime::targets`]; what `exclude` takes.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.target.address, self.target.port)
    }

    /// Requests picked for this target and not finished yet.
    pub fn outstanding(&self) -> u32 {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// The weight selection uses: the configured weight scaled by the slow
    /// start ramp (in thousandths, so a weight-1 target can ramp too).
    pub fn effective_weight(&self) -> u32 {
        u32::from(self.target.weight.max(1)) * self.ramp.load(Ordering::Acquire).clamp(1, 1000)
    }

    /// Starts draining: no new requests; those in flight have until `until`.
    pub fn start_draining(&self, until: tokio::time::Instant) {
        *self.drain_deadline.lock().unwrap() = Some(until);
        self.set_usable(false);
        self.drain_started.notify_waiters();
    }

    /// Whether it was deregistered and drains (no new requests or flows).
    pub fn is_draining(&self) -> bool {
        self.drain_deadline.lock().unwrap().is_some()
    }

    /// Resolves when this target's draining time is over (never, if it is
    /// not draining).
    pub async fn drained(&self) {
        loop {
            let notified = self.drain_started.notified();
            let deadline = *self.drain_deadline.lock().unwrap();
            if let Some(until) = deadline {
                tokio::time::sleep_until(until).await;
                return;
            }
            notified.await;
        }
    }

    /// Sets the slow start ramp (thousandths of the weight).
    pub fn set_ramp(&self, permille: u32) {
        let permille = permille.clamp(1, 1000);
        if self.ramp.swap(permille, Ordering::AcqRel) != permille {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    pub fn ramp(&self) -> u32 {
        self.ramp.load(Ordering::Acquire)
    }

    /// For the health checker (and draining): whether new requests may be
    /// sent here. Takes effect on the next pick.
    pub fn set_usable(&self, usable: bool) {
        if self.usable.swap(usable, Ordering::AcqRel) != usable {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }
}

/// A chosen target, borrowed from its group: no reference count that every
/// core writes is touched per request. In a least_outstanding_requests group
/// it counts as one outstanding request on the target until dropped; a
/// response body keeps that count with [`Pick::hold`].
#[derive(Debug)]
pub struct Pick<'g> {
    target: &'g Arc<TargetState>,
    sticky: bool,
    /// app_cookie: the request carried the application's cookie.
    app_session: bool,
    /// Counted in `outstanding`. Only the algorithm that reads the count
    /// keeps it: the counter is a cache line every core writes, twice a
    /// request.
    counted: bool,
}

impl<'g> Pick<'g> {
    fn new(target: &'g Arc<TargetState>, sticky: bool, app_session: bool, counted: bool) -> Self {
        if counted {
            target.outstanding.fetch_add(1, Ordering::Relaxed);
        }
        Pick {
            target,
            sticky,
            app_session,
            counted,
        }
    }

    pub fn target(&self) -> &'g Arc<TargetState> {
        self.target
    }

    /// The target's index, to `exclude` it when retrying elsewhere.
    pub fn index(&self) -> usize {
        self.target.index
    }

    /// Routed by a valid stickiness cookie rather than by the algorithm.
    pub fn is_sticky(&self) -> bool {
        self.sticky
    }

    /// The outstanding-request count, carried on past the group's borrow
    /// (by a response body); `None` when the group does not count.
    pub fn hold(mut self) -> Option<Outstanding> {
        let counted = std::mem::take(&mut self.counted);
        counted.then(|| Outstanding(Arc::clone(self.target)))
    }
}

impl Drop for Pick<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.target.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One outstanding request on a target, until dropped.
#[derive(Debug)]
pub struct Outstanding(Arc<TargetState>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Sticky {
    /// `None` for lb_cookie; the application's cookie name for app_cookie.
    app_cookie: Option<String>,
    duration: Duration,
}

/// A target group ready to serve: its targets, selection and stickiness.
#[derive(Debug)]
pub struct TargetGroupRuntime {
    /// Request outcomes, for the admin endpoint.
    pub metrics: Arc<crate::metrics::GroupMetrics>,
    config: model::TargetGroup,
    name: String,
    stickiness: Option<Sticky>,
    targets: Vec<Arc<TargetState>>,
    /// (token, target index), sorted, to resolve cookies.
    by_token: Vec<(Token, usize)>,
    generation: Arc<AtomicU64>,
    selector: Selector,
}

impl TargetGroupRuntime {
    /// Every target starts usable. Weights of 0 (which validation rejects) are
    /// treated as 1.
    pub fn new(cfg: &model::TargetGroup) -> Self {
        let generation = Arc::new(AtomicU64::new(0));
        let targets: Vec<Arc<TargetState>> = cfg
            .targets
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let id = SocketAddr::new(t.address, t.port).to_string();
                Arc::new(TargetState {
                    token: Token::for_target(&cfg.name, &id),
                    id,
                    index,
                    target: t.clone(),
                    outstanding: AtomicU32::new(0),
                    usable: AtomicBool::new(true),
                    ramp: AtomicU32::new(1000),
                    drain_deadline: std::sync::Mutex::new(None),
                    drain_started: tokio::sync::Notify::new(),
                    generation: Arc::clone(&generation),
                    health: std::sync::Mutex::new(super::health::Health::initial(
                        cfg.health_check.enabled,
                    )),
                })
            })
            .collect();
        let mut by_token: Vec<(Token, usize)> =
            targets.iter().map(|t| (t.token, t.index)).collect();
        by_token.sort_unstable();
        let stickiness = cfg.stickiness.enabled.then(|| Sticky {
            app_cookie: match &cfg.stickiness.kind {
                StickinessType::LbCookie => None,
                StickinessType::AppCookie { cookie_name } => Some(cookie_name.clone()),
            },
            duration: cfg.stickiness.duration,
        });
        let selector = Selector::new(cfg.algorithm, &targets, 0);
        TargetGroupRuntime {
            metrics: Default::default(),
            config: cfg.clone(),
            name: cfg.name.clone(),
            stickiness,
            targets,
            by_token,
            generation,
            selector,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration this group was built from.
    pub fn config(&self) -> &model::TargetGroup {
        &self.config
    }

    pub fn targets(&self) -> &[Arc<TargetState>] {
        &self.targets
    }

    /// No target is usable, so all are being used (ALB's fail-open).
    pub fn fail_open(&self) -> bool {
        let generation = self.generation.load(Ordering::Acquire);
        self.selector
            .with_snapshot(&self.targets, generation, |s| s.fail_open())
    }

    /// Chooses a target for a request. A stickiness cookie naming a usable,
    /// non-excluded target wins; otherwise the algorithm picks among usable
    /// targets not in `exclude` (indices of targets already tried). `None` when
    /// the group is empty or everything usable is excluded.
    pub fn pick(&self, request_headers: &HeaderMap, exclude: &[usize]) -> Option<Pick<'_>> {
        if self.targets.is_empty() {
            return None;
        }
        let (cookie, app_session) = match &self.stickiness {
            None => (None, false),
            Some(Sticky {
                app_cookie: None, ..
            }) => (Some(LB_COOKIE), false),
            Some(Sticky {
                app_cookie: Some(app),
                ..
            }) => {
                // AWSALBAPP counts only alongside the application's session.
                let session = sticky::cookie_values(request_headers, app).next().is_some();
                (session.then_some(APP_COOKIE), session)
            }
        };
        let remembered = cookie
            .and_then(|c| self.remembered(request_headers, c))
            .filter(|i| !exclude.contains(i));
        let generation = self.generation.load(Ordering::Acquire);
        let (index, sticky) = self
            .selector
            .with_snapshot(&self.targets, generation, |snap| match remembered {
                Some(i) if snap.contains(i) => Some((i, true)),
                _ => snap.select(&self.targets, exclude).map(|i| (i, false)),
            })?;
        Some(Pick::new(
            &self.targets[index],
            sticky,
            app_session,
            self.config.algorithm == model::Algorithm::LeastOutstandingRequests,
        ))
    }

    /// The first value of cookie `name` that names one of our targets.
    fn remembered(&self, headers: &HeaderMap, name: &str) -> Option<usize> {
        sticky::cookie_values(headers, name).find_map(|v| {
            let token = Token::parse(v)?;
            let pos = self
                .by_token
                .binary_search_by_key(&token, |&(t, _)| t)
                .ok()?;
            Some(self.by_token[pos].1)
        })
    }

    /// The `Set-Cookie` value to add to the response for `pick` (from this
    /// group), if any:
    /// - lb_cookie: `AWSALB` naming the target, on every response;
    /// - app_cookie: `AWSALBAPP-0` naming the target when the target's response
    ///   sets the application's cookie, or the request carried it (so a session
    ///   whose target went away re-pins to the new one, as on ALB).
    pub fn response_cookie(
        &self,
        pick: &Pick,
        response_headers: &HeaderMap,
    ) -> Option<HeaderValue> {
        // The clock is read only when a cookie may be set.
        self.stickiness.as_ref()?;
        self.response_cookie_at(pick, response_headers, SystemTime::now())
    }

    /// [`Self::response_cookie`] with the clock reading given.
    pub fn response_cookie_at(
        &self,
        pick: &Pick,
        response_headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<HeaderValue> {
        debug_assert!(
            self.targets
                .get(pick.index())
                .is_some_and(|t| Arc::ptr_eq(t, pick.target)),
            "pick from another group"
        );
        let st = self.stickiness.as_ref()?;
        let name = match &st.app_cookie {
            None => LB_COOKIE,
            Some(app) if pick.app_session || sticky::sets_cookie(response_headers, app) => {
                APP_COOKIE
            }
            Some(_) => return None,
        };
        Some(sticky::set_cookie(
            name,
            pick.target.token,
            now,
            st.duration,
        ))
    }
}

/// The choice made by [`WeightedGroups::pick`].
#[derive(Debug)]
pub struct GroupPick {
    /// The caller's index of the chosen group.
    pub group: usize,
    /// Chosen by a valid `AWSALBTG` cookie.
    pub sticky: bool,
    /// `AWSALBTG` to add to the response when group stickiness is on.
    pub set_cookie: Option<HeaderValue>,
}

/// A weighted forward action's groups, ready to choose among per request.
/// Cheap to build, but build it once per action when you can: `new` hashes
/// every group name and allocates.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedGroups {
    /// Groups with weight above 0: (caller's index, cookie token).
    groups: Vec<(usize, Token)>,
    /// Running sums of their weights.
    cumulative: Vec<u32>,
    stickiness: Option<Duration>,
}

impl WeightedGroups {
    /// `groups` as (caller's group index, group name, weight); `stickiness` is
    /// the action's group-level duration. Weight-0 groups never receive
    /// traffic, not even from a cookie naming them: setting a weight to 0 is
    /// how a blue/green switch finishes.
    pub fn new<'a>(
        groups: impl IntoIterator<Item = (usize, &'a str, u16)>,
        stickiness: Option<Duration>,
    ) -> Self {
        let mut sum = 0u32;
        let (groups, cumulative) = groups
            .into_iter()
            .filter(|&(_, _, w)| w > 0)
            .map(|(index, name, w)| {
                sum += u32::from(w);
                ((index, Token::for_group(name)), sum)
            })
            .unzip();
        WeightedGroups {
            groups,
            cumulative,
            stickiness,
        }
    }

    /// Chooses a group: the one an `AWSALBTG` cookie names when stickiness is
    /// on and it has weight, else one at random by weight. `None` when every
    /// weight is 0 (validation rejects that).
    pub fn pick(&self, request_headers: &HeaderMap) -> Option<GroupPick> {
        self.pick_at(request_headers, SystemTime::now())
    }

    /// [`Self::pick`] with the clock reading given.
    pub fn pick_at(&self, request_headers: &HeaderMap, now: SystemTime) -> Option<GroupPick> {
        let total = *self.cumulative.last()?;
        let remembered = self.stickiness.and_then(|_| {
            sticky::cookie_values(request_headers, GROUP_COOKIE).find_map(|v| {
                let token = Token::parse(v)?;
                self.groups.iter().position(|&(_, t)| t == token)
            })
        });
        let pos = remembered.unwrap_or_else(|| {
            let r = fastrand::u32(0..total);
            self.cumulative.partition_point(|&c| c <= r)
        });
        let (group, token) = self.groups[pos];
        Some(GroupPick {
            group,
            sticky: remembered.is_some(),
            set_cookie: self
                .stickiness
                .map(|d| sticky::set_cookie(GROUP_COOKIE, token, now, d)),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::UNIX_EPOCH;

    use http::header::{COOKIE, SET_COOKIE};

    use super::*;
    use crate::config::model::{
        Algorithm, HealthCheck, HealthCheckPort, Matcher, Stickiness, TargetProtocol,
    };

    const ALGORITHMS: [Algorithm; 3] = [
        Algorithm::RoundRobin,
        Algorithm::LeastOutstandingRequests,
        Algorithm::WeightedRandom,
    ];
    const DAY: Duration = Duration::from_secs(86_400);

    fn model_group(
        name: &str,
        algorithm: Algorithm,
        weights: &[u16],
        stickiness: Option<StickinessType>,
    ) -> model::TargetGroup {
        model::TargetGroup {
            name: name.to_string(),
            protocol: TargetProtocol::Http,
            port: 80,
            protocol_version: model::ProtocolVersion::Http1,
            algorithm,
            deregistration_delay: Duration::from_secs(300),
            slow_start: Duration::ZERO,
            preserve_client_ip: false,
            targets: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| model::Target {
                    address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1)),
                    port: 80,
                    weight,
                })
                .collect(),
            health_check: HealthCheck {
                enabled: true,
                protocol: TargetProtocol::Http,
                port: HealthCheckPort::TrafficPort,
                path: "/".to_string(),
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(5),
                healthy_threshold: 5,
                unhealthy_threshold: 2,
                matcher: Matcher(vec![(200, 200)]),
                version: model::ProtocolVersion::Http1,
            },
            stickiness: Stickiness {
                enabled: stickiness.is_some(),
                kind: stickiness.unwrap_or(StickinessType::LbCookie),
                duration: DAY,
            },
        }
    }

    pub(crate) fn group_of(algorithm: Algorithm, weights: &[u16]) -> TargetGroupRuntime {
        TargetGroupRuntime::new(&model_group("web", algorithm, weights, None))
    }

    fn sticky_group(
        algorithm: Algorithm,
        weights: &[u16],
        kind: StickinessType,
    ) -> TargetGroupRuntime {
        TargetGroupRuntime::new(&model_group("web", algorithm, weights, Some(kind)))
    }

    fn none() -> HeaderMap {
        HeaderMap::new()
    }

    fn with(name: http::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    /// The `name=value` part of a Set-Cookie, ready to send back as a Cookie.
    fn pair(set_cookie: &HeaderValue) -> String {
        let s = set_cookie.to_str().unwrap();
        s.split(';').next().unwrap().to_string()
    }

    fn picks(
        g: &TargetGroupRuntime,
        n: usize,
        headers: &HeaderMap,
        exclude: &[usize],
    ) -> Vec<usize> {
        (0..n)
            .map(|_| g.pick(headers, exclude).unwrap().index())
            .collect()
    }

    fn counts(seq: &[usize], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| seq.iter().filter(|&&x| x == i).count())
            .collect()
    }

    fn longest_run(seq: &[usize]) -> usize {
        seq.chunk_by(|a, b| a == b)
            .map(<[usize]>::len)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn round_robin_equal_weights_alternate_exactly() {
        let g = group_of(Algorithm::RoundRobin, &[1, 1]);
        let seq = picks(&g, 100, &none(), &[]);
        assert!(seq.iter().enumerate().all(|(i, &t)| t == i % 2), "{seq:?}");
    }

    #[test]
    fn round_robin_three_to_one_is_exact_and_smooth() {
        let g = group_of(Algorithm::RoundRobin, &[3, 1]);
        let seq = picks(&g, 400, &none(), &[]);
        assert_eq!(counts(&seq, 2), [300, 100]);
        assert!(longest_run(&seq) <= 3, "{seq:?}");
        // Every period of 4 holds exactly one pick of the light target.
        assert!(seq
            .chunks(4)
            .all(|c| c.iter().filter(|&&t| t == 1).count() == 1));
    }

    #[test]
    fn weighted_random_shares_within_five_percent() {
        // Seeded, so deterministic; ±5% of the expected count is > 3.5 sigma.
        fastrand::seed(0x5eed);
        for weights in [&[1u16, 3][..], &[2, 3, 5]] {
            let g = group_of(Algorithm::WeightedRandom, weights);
            let seq = picks(&g, 20_000, &none(), &[]);
            let total: u16 = weights.iter().sum();
            for (i, c) in counts(&seq, weights.len()).into_iter().enumerate() {
                let expected = 20_000.0 * f64::from(weights[i]) / f64::from(total);
                assert!(
                    (c as f64 - expected).abs() <= 0.05 * expected,
                    "{weights:?}: target {i} got {c}, expected {expected}"
                );
            }
        }
    }

    #[test]
    fn least_outstanding_avoids_the_busy_target() {
        let g = group_of(Algorithm::LeastOutstandingRequests, &[1, 1]);
        let held = g.pick(&none(), &[]).unwrap();
        let busy = held.index();
        assert_eq!(g.targets()[busy].outstanding(), 1);
        for _ in 0..100 {
            let p = g.pick(&none(), &[]).unwrap();
            assert_ne!(p.index(), busy);
        }
        drop(held);
        assert!(g.targets().iter().all(|t| t.outstanding() == 0));
    }

    #[test]
    fn least_outstanding_respects_weights() {
        let g = group_of(Algorithm::LeastOutstandingRequests, &[3, 1]);
        // Heavy holds 2 (2/3), light holds 1 (1/1): heavy is less loaded.
        let _h1 = g.pick(&none(), &[1]).unwrap();
        let _h2 = g.pick(&none(), &[1]).unwrap();
        let _l1 = g.pick(&none(), &[0]).unwrap();
        for _ in 0..50 {
            assert_eq!(g.pick(&none(), &[]).unwrap().index(), 0);
        }
        drop((_h1, _h2, _l1));
        // Holding every guard, greedy least-load keeps |heavy/3 - light| <= 1,
        // which after 400 picks allows only 300:100.
        let held: Vec<Pick> = (0..400).map(|_| g.pick(&none(), &[]).unwrap()).collect();
        assert_eq!(
            [g.targets()[0].outstanding(), g.targets()[1].outstanding()],
            [300, 100]
        );
        drop(held);
        assert_eq!(g.targets()[0].outstanding(), 0);
    }

    #[test]
    fn least_outstanding_ties_spread_by_weight() {
        // Sequential requests always tie at zero; ties go by weight (±5%).
        fastrand::seed(11);
        let g = group_of(Algorithm::LeastOutstandingRequests, &[1, 3]);
        let c = counts(&picks(&g, 20_000, &none(), &[]), 2);
        assert!((4_750..=5_250).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn exclude_is_honoured_by_every_algorithm() {
        for algorithm in ALGORITHMS {
            let g = group_of(algorithm, &[1, 5, 1]);
            assert!(
                picks(&g, 200, &none(), &[0, 2]).iter().all(|&t| t == 1),
                "{algorithm:?}"
            );
            let seq = picks(&g, 200, &none(), &[1]);
            assert!(seq.iter().all(|&t| t != 1), "{algorithm:?}");
            assert!(seq.contains(&0) && seq.contains(&2), "{algorithm:?}");
            assert!(g.pick(&none(), &[0, 1, 2]).is_none(), "{algorithm:?}");
            // Excluding an unusable target changes nothing; excluding the rest leaves nothing.
            g.targets()[2].set_usable(false);
            assert!(g.pick(&none(), &[0, 1]).is_none(), "{algorithm:?}");
        }
    }

    #[test]
    fn unusable_targets_are_skipped_until_usable_again() {
        for algorithm in ALGORITHMS {
            let g = group_of(algorithm, &[1, 1, 1]);
            g.targets()[1].set_usable(false);
            let seq = picks(&g, 300, &none(), &[]);
            assert!(!seq.contains(&1), "{algorithm:?}");
            assert!(seq.contains(&0) && seq.contains(&2), "{algorithm:?}");
            assert!(!g.fail_open());
            g.targets()[1].set_usable(true);
            assert!(picks(&g, 300, &none(), &[]).contains(&1), "{algorithm:?}");
        }
    }

    #[test]
    fn round_robin_stays_exact_among_the_usable() {
        let g = group_of(Algorithm::RoundRobin, &[3, 5, 1]);
        g.targets()[1].set_usable(false);
        assert_eq!(counts(&picks(&g, 400, &none(), &[]), 3), [300, 0, 100]);
    }

    #[test]
    fn fails_open_when_nothing_is_usable() {
        for algorithm in ALGORITHMS {
            let g = group_of(algorithm, &[1, 1, 1]);
            for t in g.targets() {
                t.set_usable(false);
            }
            assert!(g.fail_open());
            let c = counts(&picks(&g, 300, &none(), &[]), 3);
            assert!(c.iter().all(|&n| n > 0), "{algorithm:?}: {c:?}");
            assert!(g.pick(&none(), &[0, 1, 2]).is_none());
            g.targets()[2].set_usable(true);
            assert!(!g.fail_open());
            assert!(
                picks(&g, 50, &none(), &[]).iter().all(|&t| t == 2),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn empty_group_picks_nothing() {
        for algorithm in ALGORITHMS {
            let g = group_of(algorithm, &[]);
            assert!(g.pick(&none(), &[]).is_none());
            assert!(!g.fail_open());
        }
        let g = sticky_group(Algorithm::RoundRobin, &[], StickinessType::LbCookie);
        assert!(g.pick(&with(COOKIE, "AWSALB=00"), &[]).is_none());
    }

    #[test]
    fn pick_guard_counts_outstanding() {
        let g = group_of(Algorithm::RoundRobin, &[1]);
        let t = Arc::clone(&g.targets()[0]);
        let a = g.pick(&none(), &[]).unwrap();
        assert_eq!(t.outstanding(), 0, "only least_outstanding_requests counts");
        drop(a);
        let g = group_of(Algorithm::LeastOutstandingRequests, &[1]);
        let t = Arc::clone(&g.targets()[0]);
        let a = g.pick(&none(), &[]).unwrap();
        let b = g.pick(&none(), &[]).unwrap();
        assert_eq!(t.outstanding(), 2);
        drop(a);
        assert_eq!(t.outstanding(), 1);
        let held = b.hold().expect("counted");
        assert_eq!(t.outstanding(), 1);
        drop(held);
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn target_ids_and_addresses() {
        let mut cfg = model_group("web", Algorithm::RoundRobin, &[1, 1], None);
        cfg.targets[1].address = "2001:db8::1".parse().unwrap();
        cfg.targets[1].port = 8080;
        let g = TargetGroupRuntime::new(&cfg);
        assert_eq!(g.name(), "web");
        assert_eq!(g.targets()[0].id, "10.0.0.1:80");
        assert_eq!(g.targets()[1].id, "[2001:db8::1]:8080");
        assert_eq!(g.targets()[1].addr(), "[2001:db8::1]:8080".parse().unwrap());
        assert_eq!(g.targets()[1].index(), 1);
    }

    #[test]
    fn lb_cookie_round_trip() {
        let g = sticky_group(Algorithm::RoundRobin, &[1, 1], StickinessType::LbCookie);
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let first = g.pick(&none(), &[]).unwrap();
        assert!(!first.is_sticky());
        let cookie = g.response_cookie_at(&first, &none(), now).unwrap();
        let text = cookie.to_str().unwrap();
        assert!(text.starts_with("AWSALB="), "{text}");
        assert!(
            text.ends_with("; Expires=Mon, 07 Nov 1994 08:49:37 GMT; Path=/"),
            "{text}"
        );
        assert!(!text.contains("Max-Age"));
        // Round robin alone would alternate; the cookie pins every request.
        let request = with(COOKIE, &format!("other=1; {}", pair(&cookie)));
        for _ in 0..20 {
            let p = g.pick(&request, &[]).unwrap();
            assert_eq!(p.index(), first.index());
            assert!(p.is_sticky());
            // Re-issued on every response, naming the same target.
            let again = g.response_cookie_at(&p, &none(), now).unwrap();
            assert_eq!(pair(&again), pair(&cookie));
        }
    }

    #[test]
    fn lb_cookie_garbage_or_foreign_gets_a_new_pick_and_cookie() {
        let g = sticky_group(Algorithm::RoundRobin, &[1, 1], StickinessType::LbCookie);
        let other = TargetGroupRuntime::new(&model_group(
            "api",
            Algorithm::RoundRobin,
            &[1, 1],
            Some(StickinessType::LbCookie),
        ));
        let foreign = other.pick(&none(), &[]).unwrap();
        let foreign = pair(&other.response_cookie(&foreign, &none()).unwrap());
        for bad in [
            "AWSALB=garbage".to_string(),
            "AWSALB=".to_string(),
            format!("AWSALB={}", "0".repeat(32)),
            foreign,
        ] {
            let request = with(COOKIE, &bad);
            let seq: Vec<Pick> = (0..2).map(|_| g.pick(&request, &[]).unwrap()).collect();
            assert!(seq.iter().all(|p| !p.is_sticky()), "{bad}");
            assert_ne!(seq[0].index(), seq[1].index(), "{bad}: normal round robin");
            let fresh = g.response_cookie(&seq[1], &none()).unwrap();
            let p = g.pick(&with(COOKIE, &pair(&fresh)), &[]).unwrap();
            assert_eq!(p.index(), seq[1].index());
        }
        // A garbage duplicate does not hide a valid one.
        let good = g.pick(&none(), &[]).unwrap();
        let good_pair = pair(&g.response_cookie(&good, &none()).unwrap());
        let p = g
            .pick(&with(COOKIE, &format!("AWSALB=zz; {good_pair}")), &[])
            .unwrap();
        assert!(p.is_sticky());
        assert_eq!(p.index(), good.index());
    }

    #[test]
    fn lb_cookie_to_unusable_or_excluded_target_repicks() {
        let g = sticky_group(Algorithm::RoundRobin, &[1, 1], StickinessType::LbCookie);
        let first = g.pick(&none(), &[]).unwrap();
        let stuck = first.index();
        let request = with(COOKIE, &pair(&g.response_cookie(&first, &none()).unwrap()));
        // Excluded (a retry): the other target, and the new cookie names it.
        let retry = g.pick(&request, &[stuck]).unwrap();
        assert_ne!(retry.index(), stuck);
        assert!(!retry.is_sticky());
        let moved = g.response_cookie(&retry, &none()).unwrap();
        assert_eq!(
            g.pick(&with(COOKIE, &pair(&moved)), &[]).unwrap().index(),
            retry.index()
        );
        // Unusable: same.
        g.targets()[stuck].set_usable(false);
        for _ in 0..10 {
            let p = g.pick(&request, &[]).unwrap();
            assert_ne!(p.index(), stuck);
            assert!(!p.is_sticky());
        }
        // Usable again: stickiness resumes.
        g.targets()[stuck].set_usable(true);
        assert_eq!(g.pick(&request, &[]).unwrap().index(), stuck);
    }

    #[test]
    fn stickiness_overrides_every_algorithm() {
        for algorithm in ALGORITHMS {
            let g = sticky_group(algorithm, &[1, 50, 50], StickinessType::LbCookie);
            let light = g.pick(&none(), &[1, 2]).unwrap();
            let request = with(COOKIE, &pair(&g.response_cookie(&light, &none()).unwrap()));
            assert!(
                picks(&g, 100, &request, &[]).iter().all(|&t| t == 0),
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn app_cookie_flow() {
        let kind = StickinessType::AppCookie {
            cookie_name: "session".to_string(),
        };
        let g = sticky_group(Algorithm::RoundRobin, &[1, 1], kind);
        let now = UNIX_EPOCH;
        // No session yet, and the target sets none: no balancer cookie.
        let p = g.pick(&none(), &[]).unwrap();
        assert!(g.response_cookie_at(&p, &none(), now).is_none());
        // The target starts a session: AWSALBAPP-0 names it.
        let first = g.pick(&none(), &[]).unwrap();
        let sets = with(SET_COOKIE, "session=abc; Path=/; HttpOnly");
        let app = g.response_cookie_at(&first, &sets, now).unwrap();
        let text = app.to_str().unwrap();
        assert!(text.starts_with("AWSALBAPP-0="), "{text}");
        assert!(
            text.ends_with("; Expires=Fri, 02 Jan 1970 00:00:00 GMT; Path=/"),
            "{text}"
        );
        // Session plus AWSALBAPP-0: pinned, and re-issued without a Set-Cookie.
        let request = with(COOKIE, &format!("session=abc; {}", pair(&app)));
        for _ in 0..10 {
            let p = g.pick(&request, &[]).unwrap();
            assert_eq!(p.index(), first.index());
            assert!(p.is_sticky());
            let again = g.response_cookie_at(&p, &none(), now).unwrap();
            assert_eq!(pair(&again), pair(&app));
        }
        // AWSALBAPP-0 without the application's cookie: not sticky, nothing issued.
        let orphan = with(COOKIE, &pair(&app));
        let seq: Vec<Pick> = (0..2).map(|_| g.pick(&orphan, &[]).unwrap()).collect();
        assert!(seq.iter().all(|p| !p.is_sticky()));
        assert_ne!(seq[0].index(), seq[1].index());
        assert!(g.response_cookie_at(&seq[0], &none(), now).is_none());
        // AWSALB means nothing to an app_cookie group.
        let value = pair(&app)["AWSALBAPP-0=".len()..].to_string();
        let lb = with(COOKIE, &format!("session=abc; AWSALB={value}"));
        assert!(!g.pick(&lb, &[]).unwrap().is_sticky());
        // Failover: the session re-pins to the new target, even once the old
        // one is back.
        g.targets()[first.index()].set_usable(false);
        let moved = g.pick(&request, &[]).unwrap();
        assert_ne!(moved.index(), first.index());
        assert!(!moved.is_sticky());
        let repin = g.response_cookie_at(&moved, &none(), now).unwrap();
        g.targets()[first.index()].set_usable(true);
        let request = with(COOKIE, &format!("session=abc; {}", pair(&repin)));
        assert_eq!(g.pick(&request, &[]).unwrap().index(), moved.index());
    }

    #[test]
    fn no_stickiness_no_cookie() {
        let g = group_of(Algorithm::RoundRobin, &[1, 1]);
        let p = g.pick(&none(), &[]).unwrap();
        let request = with(COOKIE, "AWSALB=whatever");
        assert!(g.response_cookie(&p, &none()).is_none());
        assert!(!g.pick(&request, &[]).unwrap().is_sticky());
    }

    #[test]
    fn group_stickiness() {
        let hour = Duration::from_secs(3600);
        let w = WeightedGroups::new([(4, "blue", 1), (7, "green", 1)], Some(hour));
        let first = w.pick_at(&none(), UNIX_EPOCH).unwrap();
        assert!(!first.sticky);
        let cookie = first.set_cookie.unwrap();
        let text = cookie.to_str().unwrap();
        assert!(text.starts_with("AWSALBTG="), "{text}");
        assert!(
            text.ends_with("; Expires=Thu, 01 Jan 1970 01:00:00 GMT; Path=/"),
            "{text}"
        );
        let request = with(COOKIE, &pair(&cookie));
        for _ in 0..50 {
            let p = w.pick(&request).unwrap();
            assert_eq!(p.group, first.group);
            assert!(p.sticky);
            assert_eq!(pair(p.set_cookie.as_ref().unwrap()), pair(&cookie));
        }
        // Garbage: a weighted pick of either group, and a fresh cookie.
        let garbage = with(COOKIE, "AWSALBTG=nope");
        let seen: Vec<usize> = (0..200)
            .map(|_| {
                let p = w.pick(&garbage).unwrap();
                assert!(!p.sticky && p.set_cookie.is_some());
                p.group
            })
            .collect();
        assert!(seen.contains(&4) && seen.contains(&7));
        // Without stickiness, cookies are neither read nor written.
        let plain = WeightedGroups::new([(4, "blue", 1), (7, "green", 1)], None);
        let seen: Vec<usize> = (0..200)
            .map(|_| {
                let p = plain.pick(&request).unwrap();
                assert!(!p.sticky && p.set_cookie.is_none());
                p.group
            })
            .collect();
        assert!(seen.contains(&4) && seen.contains(&7));
    }

    #[test]
    fn zero_weight_groups_are_never_chosen() {
        let w = WeightedGroups::new([(0, "a", 0), (1, "b", 5), (2, "c", 0)], Some(DAY));
        assert!((0..1000).all(|_| w.pick(&none()).unwrap().group == 1));
        // Not even when a cookie names one; the new cookie names the chosen group.
        let a = sticky::set_cookie(GROUP_COOKIE, Token::for_group("a"), UNIX_EPOCH, DAY);
        let p = w.pick(&with(COOKIE, &pair(&a))).unwrap();
        assert_eq!(p.group, 1);
        assert!(!p.sticky);
        let b = sticky::set_cookie(GROUP_COOKIE, Token::for_group("b"), UNIX_EPOCH, DAY);
        assert_eq!(pair(&p.set_cookie.unwrap()), pair(&b));
        assert!(WeightedGroups::new([(0, "a", 0)], Some(DAY))
            .pick(&none())
            .is_none());
        assert!(WeightedGroups::new([], None).pick(&none()).is_none());
    }

    #[test]
    fn weighted_groups_share_within_five_percent() {
        fastrand::seed(42);
        let w = WeightedGroups::new([(0, "blue", 9), (1, "green", 1)], None);
        let green = (0..20_000)
            .filter(|_| w.pick(&none()).unwrap().group == 1)
            .count();
        assert!((1_900..=2_100).contains(&green), "{green}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_draining_target_takes_no_new_request_and_drains_until_its_deadline() {
        let g = group_of(Algorithm::RoundRobin, &[1, 1]);
        let t = Arc::clone(&g.targets()[1]);
        assert!(!t.is_draining());
        let start = tokio::time::Instant::now();
        // Waiting began before the drain did: the drain wakes it.
        let waiter = {
            let t = Arc::clone(&t);
            tokio::spawn(async move {
                t.drained().await;
                tokio::time::Instant::now()
            })
        };
        tokio::task::yield_now().await;
        let until = start + std::time::Duration::from_secs(300);
        t.start_draining(until);
        assert!(t.is_draining());
        assert_eq!(picks(&g, 4, &none(), &[]), [0, 0, 0, 0]);
        assert_eq!(waiter.await.unwrap(), until);
    }
}
