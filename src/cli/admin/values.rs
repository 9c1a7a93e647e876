//! How the admin flags read durations and times, and how the commands print times.

use std::time::Duration;

fn secs(s: &str, allow_zero: bool) -> std::result::Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    let ok = v.is_finite() && v < 1e10 && if allow_zero { v >= 0.0 } else { v > 0.0 };
    if !ok {
        let what = if allow_zero {
            "zero or more"
        } else {
            "a positive number of"
        };
        return Err(format!("{s} must be {what} seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A clap value parser: zero or more seconds.
pub(super) fn non_negative_seconds(s: &str) -> std::result::Result<Duration, String> {
    secs(s, true)
}

/// A clap value parser: a positive number of seconds.
pub(super) fn positive_seconds(s: &str) -> std::result::Result<Duration, String> {
    secs(s, false)
}

/// A time as ms since the epoch: RFC 3339 (`2026-11-26T10:00:00Z`) or unix seconds.
pub(super) fn parse_time(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        if v.is_finite() && (0.0..1e11).contains(&v) {
            return Ok((v * 1000.0).round() as u64);
        }
        return Err(format!("{s} is not a unix time in seconds"));
    }
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) if t.timestamp_millis() >= 0 => Ok(t.timestamp_millis() as u64),
        Ok(_) => Err(format!("{s} is before 1970")),
        Err(e) => Err(format!(
            "{s:?} is not a time ({e}); use RFC 3339 (2026-11-26T10:00:00Z) or unix seconds"
        )),
    }
}

/// A time in ms since the epoch as RFC 3339 (UTC, milliseconds).
pub(super) fn format_time(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_rfc3339_or_unix_seconds() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2026-11-26T10:00:00Z"), Ok(1_795_687_200_000));
        assert_eq!(
            parse_time("2026-11-26T11:00:00+01:00"),
            Ok(1_795_687_200_000)
        );
        assert!(parse_time("tomorrow").is_err());
        assert!(parse_time("-5").is_err());
        assert_eq!(format_time(1_795_687_200_000), "2026-11-26T10:00:00.000Z");
    }
}
