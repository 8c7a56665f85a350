//! The last minutes of traffic for the dashboard's charts: the listeners'
//! and groups' counters sampled every few seconds, kept as per-second rates
//! and response-time percentiles per step.

use std::collections::VecDeque;

use serde::Serialize;

use crate::metrics::RESPONSE_TIME_BUCKETS;

/// Steps kept: ten minutes at the dashboard's five-second step.
pub const POINTS: usize = 120;

const BUCKETS: usize = RESPONSE_TIME_BUCKETS.len() + 1;

/// Counters summed over every listener and group at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub elb_4xx: u64,
    pub elb_5xx: u64,
    pub target_4xx: u64,
    pub target_5xx: u64,
    /// Target responses per response-time bucket.
    pub buckets: [u64; BUCKETS],
}

impl Totals {
    pub fn add_buckets(&mut self, b: &[u64; BUCKETS]) {
        for (sum, n) in self.buckets.iter_mut().zip(b) {
            *sum += n;
        }
    }
}

/// One step of the charts.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Point {
    pub t_ms: u64,
    pub requests_per_second: f64,
    pub elb_4xx_per_second: f64,
    pub elb_5xx_per_second: f64,
    pub target_4xx_per_second: f64,
    pub target_5xx_per_second: f64,
    /// Target response time percentiles; none when no response came.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Default)]
pub struct History {
    last: Option<(u64, Totals)>,
    points: VecDeque<Point>,
}

impl History {
    /// Adds the step from the previous sample to this one (`now_ms`, Unix
    /// milliseconds). Counters that went back (a reload replaced a
    /// listener's) count as zero for the step.
    pub fn record(&mut self, now_ms: u64, totals: Totals) {
        if let Some((then, before)) = self.last {
            let secs = now_ms.saturating_sub(then) as f64 / 1000.0;
            if secs > 0.0 {
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
                let delta: [u64; BUCKETS] =
                    std::array::from_fn(|i| totals.buckets[i].saturating_sub(before.buckets[i]));
                if self.points.len() == POINTS {
                    self.points.pop_front();
                }
                self.points.push_back(Point {
                    t_ms: now_ms,
                    requests_per_second: rate(totals.requests, before.requests),
                    elb_4xx_per_second: rate(totals.elb_4xx, before.elb_4xx),
                    elb_5xx_per_second: rate(totals.elb_5xx, before.elb_5xx),
                    target_4xx_per_second: rate(totals.target_4xx, before.target_4xx),
                    target_5xx_per_second: rate(totals.target_5xx, before.target_5xx),
                    p50_ms: percentile_ms(&delta, 0.50),
                    p90_ms: percentile_ms(&delta, 0.90),
                    p99_ms: percentile_ms(&delta, 0.99),
                });
            }
        }
        self.last = Some((now_ms, totals));
    }

    pub fn points(&self) -> Vec<Point> {
        self.points.iter().cloned().collect()
    }
}

/// The `q` quantile of a histogram's counts, interpolated linearly within
/// its bucket as Prometheus's `histogram_quantile` does; responses above
/// the last bound count as at it.
pub fn percentile_ms(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        // A bucket with nothing in it never reaches the rank first: the
        // one before it would have.
        if (below + n) as f64 >= rank {
            let last = RESPONSE_TIME_BUCKETS.len() - 1;
            let lo = if i == 0 {
                0.0
            } else {
                RESPONSE_TIME_BUCKETS[(i - 1).min(last)]
            };
            let hi = RESPONSE_TIME_BUCKETS[i.min(last)];
            let frac = (rank - below as f64) / n as f64;
            return Some((lo + frac * (hi - lo)) * 1000.0);
        }
        below += n;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(usize, u64)]) -> [u64; BUCKETS] {
        let mut c = [0; BUCKETS];
        for &(i, n) in pairs {
            c[i] = n;
        }
        c
    }

    #[test]
    fn percentiles_interpolate_within_their_bucket() {
        // 100 responses in (1 ms, 2.5 ms]: the median is half-way.
        let c = counts(&[(1, 100)]);
        assert!((percentile_ms(&c, 0.5).unwrap() - 1.75).abs() < 1e-9);
        // 90 under 1 ms and 10 in (5 ms, 10 ms]: p90 is 1 ms, p99 is 9.5 ms.
        let c = counts(&[(0, 90), (3, 10)]);
        assert!((percentile_ms(&c, 0.9).unwrap() - 1.0).abs() < 1e-9);
        assert!((percentile_ms(&c, 0.99).unwrap() - 9.5).abs() < 1e-9);
        // Above the last bound: counted as at it (10 s).
        let c = counts(&[(BUCKETS - 1, 5)]);
        assert_eq!(percentile_ms(&c, 0.5), Some(10_000.0));
        assert_eq!(percentile_ms(&[0; BUCKETS], 0.5), None);
    }

    #[test]
    fn buckets_add_up_across_groups() {
        let mut t = Totals::default();
        t.add_buckets(&counts(&[(0, 2), (3, 5)]));
        t.add_buckets(&counts(&[(3, 1), (BUCKETS - 1, 4)]));
        assert_eq!(t.buckets, counts(&[(0, 2), (3, 6), (BUCKETS - 1, 4)]));
    }

    #[test]
    fn two_samples_at_the_same_instant_make_no_step() {
        let mut h = History::default();
        h.record(1_000, Totals::default());
        h.record(
            1_000,
            Totals {
                requests: 5,
                ..Totals::default()
            },
        );
        assert!(h.points().is_empty(), "{:?}", h.points());
    }

    #[test]
    fn a_step_is_the_rate_between_two_samples_and_old_steps_go() {
        let mut h = History::default();
        let at = |requests, elb_5xx| Totals {
            requests,
            elb_5xx,
            buckets: counts(&[(0, requests)]),
            ..Totals::default()
        };
        h.record(1_000, at(10, 0));
        assert!(h.points().is_empty(), "one sample makes no step");
        h.record(6_000, at(60, 5));
        let p = &h.points()[0];
        assert_eq!(p.t_ms, 6_000);
        assert_eq!(p.requests_per_second, 10.0);
        assert_eq!(p.elb_5xx_per_second, 1.0);
        assert_eq!(p.target_5xx_per_second, 0.0);
        assert!(p.p50_ms.unwrap() <= 1.0);
        // A counter that went back (a reload's new listener) is no step of
        // negative traffic.
        h.record(11_000, at(0, 0));
        assert_eq!(h.points()[1].requests_per_second, 0.0);
        assert_eq!(h.points()[1].p99_ms, None);
        for i in 0..POINTS as u64 {
            h.record(20_000 + i * 5_000, at(0, 0));
        }
        assert_eq!(h.points().len(), POINTS);
        assert_eq!(h.points()[0].t_ms, 20_000);
    }
}
