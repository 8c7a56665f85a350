//! Wall-clock times as text: HTTP dates (`Date`, cookies' `Expires`) and
//! RFC 3339 (access logs).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// RFC 1123 date in GMT, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`; times before
/// 1970 are written as the epoch, times past year 9999 as its last second.
pub fn http_date(t: SystemTime) -> String {
    let mut out = String::with_capacity(29);
    write_http_date(&mut out, t);
    out
}

/// `Date` for a response sent now; formatted once per second per thread.
pub fn http_date_now() -> http::HeaderValue {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, http::HeaderValue)> =
            const { std::cell::RefCell::new((u64::MAX, http::HeaderValue::from_static(""))) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = http_date(now);
            // Infallible: the text is plain ASCII.
            if let Ok(v) = http::HeaderValue::from_str(&text) {
                *c = (secs, v);
            }
        }
        c.1.clone()
    })
}

/// Appends [`http_date`]'s text to `out`.
pub fn write_http_date(out: &mut String, t: SystemTime) {
    // httpdate takes times from the epoch to the end of year 9999 only.
    let last = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    let t = t.clamp(UNIX_EPOCH, last);
    // Infallible: writing to a String.
    let _ = write!(out, "{}", httpdate::HttpDate::from(t));
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-28T08:36:23.123456Z`, as the ALB's access log writes times.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        d.subsec_micros()
    )
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(at(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 7231's example.
        assert_eq!(http_date(at(784_111_777)), "Sun, 06 Nov 1994 08:49:37 GMT");
        // Leap day in a year divisible by 400.
        assert_eq!(http_date(at(951_782_400)), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(
            http_date(at(1_709_251_199)),
            "Thu, 29 Feb 2024 23:59:59 GMT"
        );
        assert_eq!(
            http_date(at(4_102_444_800)),
            "Fri, 01 Jan 2100 00:00:00 GMT"
        );
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(
            http_date(at(300_000_000_000)),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339_micros(at(0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(at(951_782_400) + Duration::from_micros(1_500)),
            "2000-02-29T00:00:00.001500Z"
        );
    }
}
