//! Duration strings: an integer followed by one unit, `"500ms"`, `"5s"`,
//! `"5m"`, `"1h"`, `"1d"`. Deliberately strict (no fractions, no spaces, no
//! compound forms like `"1h30m"`): one obvious way to write a value keeps
//! files uniform and leaves no doubt about what was meant.

use std::time::Duration;

/// The accepted forms, quoted in every duration error message.
pub const ACCEPTED_FORMS: &str =
    "an integer followed by a unit, e.g. \"500ms\", \"5s\", \"5m\", \"1h\", \"1d\" (units: ms, s, m, h, d)";

/// Parses a duration string; the error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(unit_at);
    let invalid = || format!("invalid duration {text:?}: expected {ACCEPTED_FORMS}");
    if digits.is_empty() {
        return Err(invalid());
    }
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    let too_large = || format!("duration {text:?} is too large");
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    let millis = n.checked_mul(millis_per_unit).ok_or_else(too_large)?;
    Ok(Duration::from_millis(millis))
}

/// The shortest exact string for a duration, in the same syntax
/// (`300s` → `"5m"`, `1.5s` → `"1500ms"`). Sub-millisecond parts are dropped.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    if millis == 0 {
        return "0s".to_string();
    }
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let secs = millis / 1000;
    for (unit, per) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(per) {
            return format!("{}{unit}", secs / per);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_unit() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn rejects_other_forms_listing_the_accepted_ones() {
        for bad in [
            "", "5", "s", "5 s", " 5s", "1.5s", "-1s", "5sec", "1h30m", "5S", "+5s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(
                err.contains("\"500ms\", \"5s\", \"5m\", \"1h\", \"1d\""),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_overflow() {
        let err = parse_duration("99999999999999999999d").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        let err = parse_duration("999999999999999999d").unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn formats_shortest_form() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(45)), "45s");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(604_800)), "7d");
        for s in ["500ms", "5s", "90s", "5m", "1h", "1d"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
