//! The ALB's CloudWatch metrics, kept as lock-free counters and rendered in
//! Prometheus text format by the admin endpoint.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::StatusCode;

/// Stripes per counter: workers beyond this share stripes (still correct,
/// only contended).
const STRIPES: usize = 8;

/// One stripe on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

/// A counter every worker adds to on its own cache line, so that counting
/// every request does not bounce a line between cores; reading sums the
/// stripes.
#[derive(Debug, Default)]
pub struct Counter([Stripe; STRIPES]);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0[crate::worker::index() % STRIPES]
            .0
            .fetch_add(n, Relaxed);
    }

    pub fn incr(&self) {
        self.add(1);
    }

    /// Takes back `n` counted earlier (stripes wrap; their sum does not).
    pub fn sub(&self, n: u64) {
        self.add(n.wrapping_neg());
    }

    pub fn get(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Relaxed)))
    }
}

/// A value that goes up and down (open connections), striped like
/// [`Counter`]: a stripe may go below zero, the sum does not.
#[derive(Debug, Default)]
pub struct Gauge(Counter);

impl Gauge {
    pub fn incr(&self) {
        self.0.add(1);
    }

    pub fn decr(&self) {
        self.0.add(u64::MAX);
    }

    pub fn get(&self) -> i64 {
        self.0.get() as i64
    }
}

/// Per listener (balancer and port).
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    pub requests: Counter,
    pub elb_4xx: Counter,
    pub elb_5xx: Counter,
    pub elb_502: Counter,
    pub elb_503: Counter,
    pub elb_504: Counter,
    pub fixed_responses: Counter,
    pub redirects: Counter,
    pub active_connections: Gauge,
    pub new_connections: Counter,
    pub rejected_connections: Counter,
    pub processed_bytes: Counter,
}

impl ListenerMetrics {
    /// A response the balancer generated itself.
    pub fn elb_response(&self, status: StatusCode) {
        match status.as_u16() {
            400..=499 => self.elb_4xx.incr(),
            500..=599 => {
                match status.as_u16() {
                    502 => self.elb_502.incr(),
                    503 => self.elb_503.incr(),
                    504 => self.elb_504.incr(),
                    _ => {}
                };
                self.elb_5xx.incr()
            }
            _ => {}
        };
    }
}

/// Upper bounds of the target response time histogram, in seconds.
pub const RESPONSE_TIME_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Per target group.
#[derive(Debug, Default)]
pub struct GroupMetrics {
    pub requests: Counter,
    pub target_2xx: Counter,
    pub target_3xx: Counter,
    pub target_4xx: Counter,
    pub target_5xx: Counter,
    pub connection_errors: Counter,
    /// Counts per bucket of [`RESPONSE_TIME_BUCKETS`] (not cumulative), then +Inf.
    buckets: [Counter; RESPONSE_TIME_BUCKETS.len() + 1],
    /// Sum of response times in microseconds.
    sum_micros: Counter,
}

impl GroupMetrics {
    /// A target's response head arrived after `elapsed`.
    pub fn target_response(&self, status: StatusCode, elapsed: Duration) {
        self.requests.incr();
        match status.as_u16() / 100 {
            2 => &self.target_2xx,
            3 => &self.target_3xx,
            4 => &self.target_4xx,
            5 => &self.target_5xx,
            _ => return,
        }
        .incr();
        let secs = elapsed.as_secs_f64();
        let i = RESPONSE_TIME_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(RESPONSE_TIME_BUCKETS.len());
        self.buckets[i].incr();
        self.sum_micros.add(elapsed.as_micros() as u64);
    }
}

/// Builds a Prometheus text exposition.
#[derive(Default)]
pub struct Exposition {
    out: String,
    declared: std::collections::HashSet<&'static str>,
}

impl Exposition {
    /// One sample; `labels` as (name, value) pairs.
    pub fn sample(
        &mut self,
        name: &'static str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        if self.declared.insert(name) {
            let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    pub fn listener(&mut self, lb: &str, listener: &str, m: &ListenerMetrics) {
        let l = [("load_balancer", lb), ("listener", listener)];
        let c = |a: &Counter| a.get() as f64;
        self.sample(
            "xalb_request_count_total",
            "counter",
            "Requests received (RequestCount)",
            &l,
            c(&m.requests),
        );
        self.sample(
            "xalb_httpcode_elb_4xx_count_total",
            "counter",
            "4xx responses generated by the balancer",
            &l,
            c(&m.elb_4xx),
        );
        self.sample(
            "xalb_httpcode_elb_5xx_count_total",
            "counter",
            "5xx responses generated by the balancer",
            &l,
            c(&m.elb_5xx),
        );
        self.sample(
            "xalb_httpcode_elb_502_count_total",
            "counter",
            "502 responses generated by the balancer",
            &l,
            c(&m.elb_502),
        );
        self.sample(
            "xalb_httpcode_elb_503_count_total",
            "counter",
            "503 responses generated by the balancer",
            &l,
            c(&m.elb_503),
        );
        self.sample(
            "xalb_httpcode_elb_504_count_total",
            "counter",
            "504 responses generated by the balancer",
            &l,
            c(&m.elb_504),
        );
        self.sample(
            "xalb_http_fixed_response_count_total",
            "counter",
            "Fixed-response actions",
            &l,
            c(&m.fixed_responses),
        );
        self.sample(
            "xalb_http_redirect_count_total",
            "counter",
            "Redirect actions",
            &l,
            c(&m.redirects),
        );
        self.sample(
            "xalb_active_connection_count",
            "gauge",
            "Client connections open now",
            &l,
            m.active_connections.get() as f64,
        );
        self.sample(
            "xalb_new_connection_count_total",
            "counter",
            "Client connections accepted",
            &l,
            c(&m.new_connections),
        );
        self.sample(
            "xalb_rejected_connection_count_total",
            "counter",
            "Client connections refused (accept failures)",
            &l,
            c(&m.rejected_connections),
        );
        self.sample(
            "xalb_processed_bytes_total",
            "counter",
            "Bytes received from and sent to clients",
            &l,
            c(&m.processed_bytes),
        );
    }

    pub fn group(
        &mut self,
        lb: &str,
        group: &str,
        m: &GroupMetrics,
        healthy: usize,
        unhealthy: usize,
        by_state: &[(&str, usize)],
    ) {
        let l = [("load_balancer", lb), ("target_group", group)];
        let c = |a: &Counter| a.get() as f64;
        self.sample(
            "xalb_healthy_host_count",
            "gauge",
            "Targets in state healthy",
            &l,
            healthy as f64,
        );
        self.sample(
            "xalb_unhealthy_host_count",
            "gauge",
            "Targets in state unhealthy",
            &l,
            unhealthy as f64,
        );
        for (state, n) in by_state {
            self.sample(
                "xalb_target_state_count",
                "gauge",
                "Targets per health state (initial, healthy, unhealthy, draining, unused, unavailable)",
                &[("load_balancer", lb), ("target_group", group), ("state", state)],
                *n as f64,
            );
        }
        self.sample(
            "xalb_httpcode_target_2xx_count_total",
            "counter",
            "2xx responses from targets",
            &l,
            c(&m.target_2xx),
        );
        self.sample(
            "xalb_httpcode_target_3xx_count_total",
            "counter",
            "3xx responses from targets",
            &l,
            c(&m.target_3xx),
        );
        self.sample(
            "xalb_httpcode_target_4xx_count_total",
            "counter",
            "4xx responses from targets",
            &l,
            c(&m.target_4xx),
        );
        self.sample(
            "xalb_httpcode_target_5xx_count_total",
            "counter",
            "5xx responses from targets",
            &l,
            c(&m.target_5xx),
        );
        self.sample(
            "xalb_target_connection_error_count_total",
            "counter",
            "Failed connections to targets",
            &l,
            c(&m.connection_errors),
        );
        let name = "xalb_target_response_time_seconds";
        let mut cumulative = 0u64;
        for (i, bound) in RESPONSE_TIME_BUCKETS.iter().enumerate() {
            cumulative += m.buckets[i].get();
            let le = bound.to_string();
            self.sample_named(
                name,
                "histogram",
                "Time from sending a request to a target until its response head",
                &[l[0], l[1], ("le", &le)],
                "_bucket",
                cumulative as f64,
            );
        }
        cumulative += m.buckets[RESPONSE_TIME_BUCKETS.len()].get();
        self.sample_named(
            name,
            "histogram",
            "",
            &[l[0], l[1], ("le", "+Inf")],
            "_bucket",
            cumulative as f64,
        );
        self.sample_named(
            name,
            "histogram",
            "",
            &l,
            "_sum",
            m.sum_micros.get() as f64 / 1e6,
        );
        self.sample_named(name, "histogram", "", &l, "_count", cumulative as f64);
    }

    fn sample_named(
        &mut self,
        base: &'static str,
        kind: &str,
        help: &str,
        labels: &[(&str, &str)],
        suffix: &str,
        value: f64,
    ) {
        if self.declared.insert(base) {
            let _ = writeln!(self.out, "# HELP {base} {help}\n# TYPE {base} {kind}");
        }
        let mut line = format!("{base}{suffix}{{");
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{k}=\"{v}\"");
        }
        let _ = writeln!(line, "}} {value}");
        self.out.push_str(&line);
    }

    pub fn finish(self) -> String {
        self.out
    }
}
