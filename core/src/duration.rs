//! Go-style duration strings (`90s`, `15m`, `24h`, `1h30m`, `1.5h`, `500ms`), as used in
//! `VaultSecret` specs. The accepted grammar is exactly [`GO_DURATION_PATTERN`], which the CRD
//! schema also enforces, so `kubectl apply` and the controller agree on what is valid.

use std::time::Duration;

/// The regular expression the CRD schema uses for duration fields.
pub const GO_DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("duration {0:?} is not of the form 90s, 15m, 24h or 1h30m")]
    Syntax(String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

pub fn parse_go_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_owned());
    let overflow = || DurationError::Overflow(text.to_owned());
    if text.is_empty() {
        return Err(syntax());
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    // `None` once the sum overflowed; the scan goes on so that bad syntax is reported as such.
    let mut total_nanos: Option<u128> = Some(0);
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(syntax());
        }
        let whole: Option<u128> = text[start..i].parse().ok();
        let (mut frac_num, mut frac_den): (u128, u128) = (0, 1);
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let fstart = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                // Digits beyond nanosecond precision cannot change the result.
                if i - fstart < 18 {
                    frac_num = frac_num * 10 + u128::from(bytes[i] - b'0');
                    frac_den *= 10;
                }
                i += 1;
            }
            if i == fstart {
                return Err(syntax());
            }
        }
        let unit_nanos: u128 = if text[i..].starts_with("ms") {
            i += 2;
            1_000_000
        } else {
            let unit = match bytes.get(i) {
                Some(b'h') => 3_600_000_000_000,
                Some(b'm') => 60_000_000_000,
                Some(b's') => 1_000_000_000,
                _ => return Err(syntax()),
            };
            i += 1;
            unit
        };
        let part = whole
            .and_then(|w| w.checked_mul(unit_nanos))
            .and_then(|w| w.checked_add(frac_num * unit_nanos / frac_den));
        total_nanos = total_nanos.zip(part).and_then(|(t, p)| t.checked_add(p));
    }
    let total_nanos = total_nanos.ok_or_else(overflow)?;
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| overflow())?;
    let nanos = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way Go would for whole hours/minutes/seconds (`1h30m0s` → `1h30m`).
pub fn format_go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let millis = d.subsec_millis();
    if total == 0 && millis == 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || millis > 0 {
        if millis > 0 {
            out.push_str(&format!("{s}.{millis:03}s"));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse_go_duration("90s"), Ok(secs(90)));
        assert_eq!(parse_go_duration("15m"), Ok(secs(900)));
        assert_eq!(parse_go_duration("24h"), Ok(secs(86_400)));
        assert_eq!(parse_go_duration("720h"), Ok(secs(2_592_000)));
        assert_eq!(parse_go_duration("1h30m"), Ok(secs(5_400)));
        assert_eq!(parse_go_duration("1.5h"), Ok(secs(5_400)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("0s"), Ok(secs(0)));
        assert_eq!(parse_go_duration("1m1ms"), Ok(Duration::from_millis(60_001)));
    }

    #[test]
    fn rejects_what_the_crd_pattern_rejects() {
        for bad in ["", "10", "s", "1d", "-1s", "1 h", "1.h", ".5h", "1h ", "30 days", "1H", "+1s", "1µs"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(parse_go_duration("99999999999999999999999h"), Err(DurationError::Overflow(_))));
        // Bad syntax is reported as such even after a part that overflowed.
        for bad in ["999999999999999999999999999999999999999h,1s", "99999999999999999999999h1d"] {
            assert!(matches!(parse_go_duration(bad), Err(DurationError::Syntax(_))), "{bad:?}");
        }
    }

    #[test]
    fn formats_round_numbers() {
        assert_eq!(format_go_duration(secs(5_400)), "1h30m");
        assert_eq!(format_go_duration(secs(86_400)), "24h");
        assert_eq!(format_go_duration(secs(0)), "0s");
        assert_eq!(format_go_duration(secs(61)), "1m1s");
        assert_eq!(format_go_duration(Duration::from_millis(1_500)), "1.500s");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(s in 0u64..10_000_000) {
            prop_assert_eq!(parse_go_duration(&format_go_duration(secs(s))), Ok(secs(s)));
        }

        #[test]
        fn composed_parts_add_up(h in 0u64..1000, m in 0u64..1000, s in 0u64..1000) {
            prop_assert_eq!(parse_go_duration(&format!("{h}h{m}m{s}s")), Ok(secs(h * 3600 + m * 60 + s)));
        }

        #[test]
        fn arbitrary_text_never_panics(t in "\\PC{0,40}") {
            let _ = parse_go_duration(&t);
        }
    }
}
