//! The ALB's CloudWatch metrics, kept as lock-free counters and rendered in
//! Prometheus text format by the admin endpoint.

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
    /// HTTPS: handshakes that failed (bad ClientHello, no common version or
    /// suite, refused client certificate, plaintext, timeout).
    pub tls_negotiation_errors: Counter,
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

/// [`RESPONSE_TIME_BUCKETS`] as `le` label values, then `+Inf`.
const RESPONSE_TIME_LE: [&str; 13] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "10",
    "+Inf",
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

    /// Responses per bucket of [`RESPONSE_TIME_BUCKETS`] (not cumulative),
    /// then above the last.
    pub fn bucket_counts(&self) -> [u64; RESPONSE_TIME_BUCKETS.len() + 1] {
        std::array::from_fn(|i| self.buckets[i].get())
    }
}

/// A metric family's type, as its `# TYPE` line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A sample's value as the text format writes it.
pub trait SampleValue {
    fn write_to(&self, out: &mut String);
}

impl<T: SampleValue + ?Sized> SampleValue for &T {
    fn write_to(&self, out: &mut String) {
        (**self).write_to(out);
    }
}

impl SampleValue for Counter {
    fn write_to(&self, out: &mut String) {
        self.get().write_to(out);
    }
}

impl SampleValue for Gauge {
    fn write_to(&self, out: &mut String) {
        self.get().write_to(out);
    }
}

impl SampleValue for u64 {
    fn write_to(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(*self));
    }
}

impl SampleValue for i64 {
    fn write_to(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(*self));
    }
}

impl SampleValue for usize {
    fn write_to(&self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(*self));
    }
}

impl SampleValue for f64 {
    fn write_to(&self, out: &mut String) {
        use std::fmt::Write as _;
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            // Infallible: writing to a String.
            let _ = write!(out, "{self}");
        }
    }
}

/// Builds a Prometheus text exposition (format 0.0.4) family by family:
/// a family's `# HELP` and `# TYPE` once, then all of its samples together,
/// as the format requires.
#[derive(Default)]
pub struct Exposition {
    out: String,
    /// Families written so far: each name once.
    #[cfg(debug_assertions)]
    declared: Vec<&'static str>,
}

impl Exposition {
    /// Starts family `name`; every sample of it is written through the
    /// returned [`Family`] before the next family starts.
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        #[cfg(debug_assertions)]
        {
            assert!(
                !self.declared.contains(&name),
                "metric family {name} written twice"
            );
            self.declared.push(name);
        }
        let out = &mut self.out;
        out.push_str("# HELP ");
        out.push_str(name);
        out.push(' ');
        escape(out, help, false);
        out.push_str("\n# TYPE ");
        out.push_str(name);
        out.push(' ');
        out.push_str(kind.as_str());
        out.push('\n');
        Family { out, name }
    }

    /// Every listener metric, family by family; listeners as (balancer,
    /// listener, metrics).
    pub fn listeners(&mut self, listeners: &[(&str, &str, &ListenerMetrics)]) {
        type Read = fn(&ListenerMetrics) -> &dyn SampleValue;
        let families: [(&'static str, Kind, &str, Read); 13] = [
            (
                "xalb_request_count_total",
                Kind::Counter,
                "Requests received (RequestCount)",
                |m| &m.requests,
            ),
            (
                "xalb_httpcode_elb_4xx_count_total",
                Kind::Counter,
                "4xx responses generated by the balancer",
                |m| &m.elb_4xx,
            ),
            (
                "xalb_httpcode_elb_5xx_count_total",
                Kind::Counter,
                "5xx responses generated by the balancer",
                |m| &m.elb_5xx,
            ),
            (
                "xalb_httpcode_elb_502_count_total",
                Kind::Counter,
                "502 responses generated by the balancer",
                |m| &m.elb_502,
            ),
            (
                "xalb_httpcode_elb_503_count_total",
                Kind::Counter,
                "503 responses generated by the balancer",
                |m| &m.elb_503,
            ),
            (
                "xalb_httpcode_elb_504_count_total",
                Kind::Counter,
                "504 responses generated by the balancer",
                |m| &m.elb_504,
            ),
            (
                "xalb_http_fixed_response_count_total",
                Kind::Counter,
                "Fixed-response actions",
                |m| &m.fixed_responses,
            ),
            (
                "xalb_http_redirect_count_total",
                Kind::Counter,
                "Redirect actions",
                |m| &m.redirects,
            ),
            (
                "xalb_active_connection_count",
                Kind::Gauge,
                "Client connections open now",
                |m| &m.active_connections,
            ),
            (
                "xalb_new_connection_count_total",
                Kind::Counter,
                "Client connections accepted",
                |m| &m.new_connections,
            ),
            (
                "xalb_rejected_connection_count_total",
                Kind::Counter,
                "Client connections refused (accept failures)",
                |m| &m.rejected_connections,
            ),
            (
                "xalb_client_tls_negotiation_error_count_total",
                Kind::Counter,
                "TLS handshakes with clients that did not complete (the ALB's ClientTLSNegotiationErrorCount)",
                |m| &m.tls_negotiation_errors,
            ),
            (
                "xalb_processed_bytes_total",
                Kind::Counter,
                "Bytes received from and sent to clients",
                |m| &m.processed_bytes,
            ),
        ];
        for (name, kind, help, read) in families {
            let mut f = self.family(name, kind, help);
            for &(lb, listener, m) in listeners {
                f.sample(&[("load_balancer", lb), ("listener", listener)], read(m));
            }
        }
    }

    /// Every target group metric, family by family.
    pub fn groups(&mut self, groups: &[GroupRow<'_>]) {
        let mut f = self.family(
            "xalb_healthy_host_count",
            Kind::Gauge,
            "Targets in state healthy",
        );
        for g in groups {
            f.sample(&g.labels(), g.healthy);
        }
        let mut f = self.family(
            "xalb_unhealthy_host_count",
            Kind::Gauge,
            "Targets in state unhealthy",
        );
        for g in groups {
            f.sample(&g.labels(), g.unhealthy);
        }
        let mut f = self.family(
            "xalb_target_state_count",
            Kind::Gauge,
            "Targets per health state (initial, healthy, unhealthy, draining, unused, unavailable)",
        );
        for g in groups {
            for &(state, n) in &g.by_state {
                f.sample(
                    &[
                        ("load_balancer", g.lb),
                        ("target_group", g.group),
                        ("state", state),
                    ],
                    n,
                );
            }
        }
        type Read = fn(&GroupMetrics) -> &Counter;
        let counters: [(&'static str, &str, Read); 5] = [
            (
                "xalb_httpcode_target_2xx_count_total",
                "2xx responses from targets",
                |m| &m.target_2xx,
            ),
            (
                "xalb_httpcode_target_3xx_count_total",
                "3xx responses from targets",
                |m| &m.target_3xx,
            ),
            (
                "xalb_httpcode_target_4xx_count_total",
                "4xx responses from targets",
                |m| &m.target_4xx,
            ),
            (
                "xalb_httpcode_target_5xx_count_total",
                "5xx responses from targets",
                |m| &m.target_5xx,
            ),
            (
                "xalb_target_connection_error_count_total",
                "Failed connections to targets",
                |m| &m.connection_errors,
            ),
        ];
        for (name, help, read) in counters {
            let mut f = self.family(name, Kind::Counter, help);
            for g in groups {
                f.sample(&g.labels(), read(g.metrics));
            }
        }
        let mut f = self.family(
            "xalb_target_response_time_seconds",
            Kind::Histogram,
            "Time from sending a request to a target until its response head",
        );
        for g in groups {
            let [lb, group] = g.labels();
            let mut cumulative = 0u64;
            for (bucket, le) in g.metrics.buckets.iter().zip(RESPONSE_TIME_LE) {
                cumulative += bucket.get();
                f.sample_suffixed("_bucket", &[lb, group, ("le", le)], cumulative);
            }
            f.sample_suffixed(
                "_sum",
                &[lb, group],
                g.metrics.sum_micros.get() as f64 / 1e6,
            );
            f.sample_suffixed("_count", &[lb, group], cumulative);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// One target group as `/metrics` shows it.
pub struct GroupRow<'a> {
    pub lb: &'a str,
    pub group: &'a str,
    pub metrics: &'a GroupMetrics,
    pub healthy: usize,
    pub unhealthy: usize,
    /// Targets per health state, in the order they are listed.
    pub by_state: Vec<(&'static str, usize)>,
}

impl<'a> GroupRow<'a> {
    fn labels(&self) -> [(&'static str, &'a str); 2] {
        [("load_balancer", self.lb), ("target_group", self.group)]
    }
}

/// The samples of one family, written right after its `# HELP` and `# TYPE`.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Family<'_> {
    /// A sample named as the family; `labels` as (name, value) pairs.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl SampleValue) {
        self.sample_suffixed("", labels, value);
    }

    /// A sample named as the family plus `suffix` (a histogram's `_bucket`,
    /// `_sum` and `_count`).
    pub fn sample_suffixed(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl SampleValue,
    ) {
        let out = &mut *self.out;
        out.push_str(self.name);
        out.push_str(suffix);
        if let Some((first, rest)) = labels.split_first() {
            out.push('{');
            for (i, (k, v)) in std::iter::once(first).chain(rest).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(k);
                out.push_str("=\"");
                escape(out, v, true);
                out.push('"');
            }
            out.push('}');
        }
        out.push(' ');
        value.write_to(out);
        out.push('\n');
    }
}

/// Appends `text` with the text format's escapes: backslash and line feed,
/// and in a label value also the double quote.
fn escape(out: &mut String, text: &str, label_value: bool) {
    let special = |c: char| c == '\\' || c == '\n' || (label_value && c == '"');
    let mut rest = text;
    while let Some(i) = rest.find(special) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'\n' => "\\n",
            _ => "\\\"",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two listeners and two groups, with some counts.
    fn fixture() -> (Vec<ListenerMetrics>, Vec<GroupMetrics>) {
        let listeners = vec![ListenerMetrics::default(), ListenerMetrics::default()];
        listeners[0].requests.add(5);
        listeners[0].processed_bytes.add(1 << 40);
        listeners[1].requests.add(7);
        listeners[1].active_connections.incr();
        listeners[1].elb_response(StatusCode::BAD_GATEWAY);
        let groups = vec![GroupMetrics::default(), GroupMetrics::default()];
        groups[0].target_response(StatusCode::OK, Duration::from_micros(1500));
        groups[0].target_response(StatusCode::BAD_GATEWAY, Duration::from_secs(20));
        (listeners, groups)
    }

    fn render(listeners: &[ListenerMetrics], groups: &[GroupMetrics], names: [&str; 2]) -> String {
        let mut e = Exposition::default();
        e.listeners(&[
            ("web", "web:80", &listeners[0]),
            ("web", "web:8080", &listeners[1]),
        ]);
        let rows: Vec<GroupRow> = groups
            .iter()
            .zip(names)
            .map(|(m, group)| GroupRow {
                lb: "web",
                group,
                metrics: m,
                healthy: 2,
                unhealthy: 1,
                by_state: vec![("initial", 0), ("healthy", 2), ("unhealthy", 1)],
            })
            .collect();
        e.groups(&rows);
        e.finish()
    }

    /// A sample line's metric name.
    fn sample_name(line: &str) -> &str {
        line.split(['{', ' ']).next().unwrap()
    }

    /// The family a sample belongs to: its name, or a histogram's name
    /// without the sample's suffix.
    fn family_of<'a>(name: &'a str, histograms: &[&str]) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if histograms.contains(&base) {
                    return base;
                }
            }
        }
        name
    }

    /// The text format's grouping rules: HELP then TYPE once per family,
    /// before its samples, and every sample of a family in one run.
    fn assert_grouped(text: &str) {
        let mut families: Vec<(String, String)> = Vec::new();
        let mut histograms: Vec<&str> = Vec::new();
        let mut current: Option<&str> = None;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                let ty = lines.next().expect("TYPE after HELP");
                let kind = ty
                    .strip_prefix(&format!("# TYPE {name} "))
                    .unwrap_or_else(|| panic!("TYPE of {name} right after its HELP: {ty}"));
                assert!(
                    families.iter().all(|(n, _)| n != name),
                    "{name} declared twice:\n{text}"
                );
                families.push((name.to_string(), kind.to_string()));
                if kind == "histogram" {
                    histograms.push(name);
                }
                current = Some(name);
                continue;
            }
            assert!(!line.starts_with('#'), "stray comment {line}");
            let family = family_of(sample_name(line), &histograms);
            assert_eq!(
                Some(family),
                current,
                "sample of {family} outside its family's run:\n{text}"
            );
        }
    }

    #[test]
    fn each_family_is_declared_once_with_all_its_samples_together() {
        let (listeners, groups) = fixture();
        let text = render(&listeners, &groups, ["a", "b"]);
        assert_grouped(&text);
        // Both listeners' requests, one after the other.
        assert!(text.contains(concat!(
            "# TYPE xalb_request_count_total counter\n",
            "xalb_request_count_total{load_balancer=\"web\",listener=\"web:80\"} 5\n",
            "xalb_request_count_total{load_balancer=\"web\",listener=\"web:8080\"} 7\n",
        )));
    }

    #[test]
    fn names_types_and_label_sets_are_those_dashboards_know() {
        let (listeners, groups) = fixture();
        let text = render(&listeners, &groups, ["a", "b"]);
        let types: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(str::to_string)
            .collect();
        let listener = [
            "xalb_request_count_total counter",
            "xalb_httpcode_elb_4xx_count_total counter",
            "xalb_httpcode_elb_5xx_count_total counter",
            "xalb_httpcode_elb_502_count_total counter",
            "xalb_httpcode_elb_503_count_total counter",
            "xalb_httpcode_elb_504_count_total counter",
            "xalb_http_fixed_response_count_total counter",
            "xalb_http_redirect_count_total counter",
            "xalb_active_connection_count gauge",
            "xalb_new_connection_count_total counter",
            "xalb_rejected_connection_count_total counter",
            "xalb_client_tls_negotiation_error_count_total counter",
            "xalb_processed_bytes_total counter",
        ];
        let group = [
            "xalb_healthy_host_count gauge",
            "xalb_unhealthy_host_count gauge",
            "xalb_target_state_count gauge",
            "xalb_httpcode_target_2xx_count_total counter",
            "xalb_httpcode_target_3xx_count_total counter",
            "xalb_httpcode_target_4xx_count_total counter",
            "xalb_httpcode_target_5xx_count_total counter",
            "xalb_target_connection_error_count_total counter",
            "xalb_target_response_time_seconds histogram",
        ];
        assert_eq!(types, [&listener[..], &group[..]].concat());
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        for expected in [
            "xalb_active_connection_count{load_balancer=\"web\",listener=\"web:8080\"} 1",
            "xalb_processed_bytes_total{load_balancer=\"web\",listener=\"web:80\"} 1099511627776",
            "xalb_httpcode_elb_502_count_total{load_balancer=\"web\",listener=\"web:8080\"} 1",
            "xalb_httpcode_elb_5xx_count_total{load_balancer=\"web\",listener=\"web:8080\"} 1",
            "xalb_healthy_host_count{load_balancer=\"web\",target_group=\"a\"} 2",
            "xalb_target_state_count{load_balancer=\"web\",target_group=\"b\",state=\"unhealthy\"} 1",
            "xalb_httpcode_target_5xx_count_total{load_balancer=\"web\",target_group=\"a\"} 1",
            "xalb_target_response_time_seconds_bucket{load_balancer=\"web\",target_group=\"a\",le=\"0.001\"} 0",
            "xalb_target_response_time_seconds_bucket{load_balancer=\"web\",target_group=\"a\",le=\"0.0025\"} 1",
            "xalb_target_response_time_seconds_bucket{load_balancer=\"web\",target_group=\"a\",le=\"10\"} 1",
            "xalb_target_response_time_seconds_bucket{load_balancer=\"web\",target_group=\"a\",le=\"+Inf\"} 2",
            "xalb_target_response_time_seconds_sum{load_balancer=\"web\",target_group=\"a\"} 20.0015",
            "xalb_target_response_time_seconds_count{load_balancer=\"web\",target_group=\"a\"} 2",
        ] {
            assert!(lines.contains(&expected), "{expected} in\n{text}");
        }
    }

    #[test]
    fn bucket_labels_are_the_bounds_as_written() {
        for (bound, le) in RESPONSE_TIME_BUCKETS.iter().zip(RESPONSE_TIME_LE) {
            assert_eq!(bound.to_string(), le);
        }
        assert_eq!(RESPONSE_TIME_LE.len(), RESPONSE_TIME_BUCKETS.len() + 1);
        assert_eq!(RESPONSE_TIME_LE[RESPONSE_TIME_BUCKETS.len()], "+Inf");
    }

    #[test]
    fn label_values_escape_backslash_quote_and_line_feed() {
        let (listeners, groups) = fixture();
        let text = render(&listeners, &groups, ["a\\b", "say \"hi\"\nthere"]);
        assert_grouped(&text);
        assert!(text.contains(
            "xalb_healthy_host_count{load_balancer=\"web\",target_group=\"a\\\\b\"} 2\n"
        ));
        assert!(text.contains(
            "xalb_healthy_host_count{load_balancer=\"web\",target_group=\"say \\\"hi\\\"\\nthere\"} 2\n"
        ));
        // Histogram samples too.
        assert!(text.contains(
            "xalb_target_response_time_seconds_count{load_balancer=\"web\",target_group=\"say \\\"hi\\\"\\nthere\"} 0\n"
        ));
    }

    #[test]
    fn help_escapes_backslash_and_line_feed_but_not_quotes() {
        let mut e = Exposition::default();
        e.family("x", Kind::Gauge, "a \\ \"b\"\nc")
            .sample(&[], 1u64);
        assert_eq!(
            e.finish(),
            "# HELP x a \\\\ \"b\"\\nc\n# TYPE x gauge\nx 1\n"
        );
    }

    #[test]
    fn values_as_the_format_writes_them() {
        let mut e = Exposition::default();
        let mut f = e.family("v", Kind::Gauge, "values");
        f.sample(&[("k", "u")], u64::MAX);
        f.sample(&[("k", "i")], -3i64);
        f.sample(&[("k", "f")], 0.25f64);
        f.sample(&[("k", "w")], 2.0f64);
        f.sample(&[("k", "n")], f64::NAN);
        f.sample(&[("k", "p")], f64::INFINITY);
        f.sample(&[("k", "m")], f64::NEG_INFINITY);
        let text = e.finish();
        let values: Vec<&str> = text
            .lines()
            .skip(2)
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(
            values,
            [
                "18446744073709551615",
                "-3",
                "0.25",
                "2",
                "NaN",
                "+Inf",
                "-Inf"
            ]
        );
    }

    #[test]
    #[should_panic(expected = "written twice")]
    #[cfg(debug_assertions)]
    fn a_family_written_twice_is_a_bug() {
        let mut e = Exposition::default();
        e.family("x", Kind::Gauge, "once");
        e.family("x", Kind::Gauge, "twice");
    }
}
