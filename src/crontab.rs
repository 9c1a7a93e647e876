//! Periodic schedules: crontab expressions through the `cron` crate.
//!
//! Five fields (`minute hour day month day-of-week`, as huey's `crontab()` and crontab(5)),
//! or six with a leading seconds field. Day-of-week counts from 0 = Sunday (7 is Sunday too).
//! Times are evaluated in UTC unless a timezone is given.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};

/// A periodic schedule.
#[derive(Clone)]
pub struct Crontab {
    expr: String,
    schedule: cron::Schedule,
    tz: Tz,
    /// Whether the expression has a seconds field (runs can be more often than per minute).
    seconds: bool,
}

impl fmt::Debug for Crontab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Crontab({:?} {})", self.expr, self.tz)
    }
}

impl fmt::Display for Crontab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tz == Tz::UTC {
            f.write_str(&self.expr)
        } else {
            write!(f, "{} ({})", self.expr, self.tz)
        }
    }
}

/// Crontab's day-of-week (0 or 7 = Sunday) to the `cron` crate's (1 = Sunday ... 7 = Saturday).
fn shift_day_of_week(field: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut num = String::new();
    let mut after_step = false;
    let flush =
        |num: &mut String, out: &mut String, after_step: bool| -> std::result::Result<(), String> {
            if num.is_empty() {
                return Ok(());
            }
            let n: u32 = num.parse().map_err(|_| format!("bad number {num:?}"))?;
            if after_step {
                out.push_str(num);
            } else if n > 7 {
                return Err(format!("day of week {n} is out of range 0-7"));
            } else {
                out.push_str(&((n % 7) + 1).to_string());
            }
            num.clear();
            Ok(())
        };
    for c in field.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            flush(&mut num, &mut out, after_step)?;
            after_step = c == '/';
            out.push(c);
        }
    }
    flush(&mut num, &mut out, after_step)?;
    Ok(out)
}

impl Crontab {
    /// Parse a 5-field (or 6-field, seconds first) crontab expression, evaluated in UTC.
    ///
    /// ```
    /// use huey::{Crontab, Huey};
    ///
    /// # fn main() -> huey::Result<()> {
    /// let app = Huey::immediate("docs");
    /// app.task("report")
    ///     .periodic(Crontab::parse("0 9 * * 1-5")?) // 09:00 UTC, Monday to Friday
    ///     .register(|(): ()| Ok::<_, String>(()))?;
    /// assert!(Crontab::parse("61 * * * *").is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn parse(expr: &str) -> Result<Crontab> {
        Crontab::parse_in(expr, Tz::UTC)
    }

    /// Parse an expression evaluated in a timezone (e.g. `"Europe/Paris"`).
    pub fn parse_in_zone(expr: &str, tz: &str) -> Result<Crontab> {
        let tz: Tz = tz
            .parse()
            .map_err(|e| Error::Config(format!("unknown timezone {tz:?}: {e}")))?;
        Crontab::parse_in(expr, tz)
    }

    fn parse_in(expr: &str, tz: Tz) -> Result<Crontab> {
        let bad = |why: String| Error::Config(format!("invalid crontab {expr:?}: {why}"));
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(bad(format!(
                    "expected 5 fields (or 6 with seconds), got {n}"
                )))
            }
        };
        let dow = shift_day_of_week(rest[4]).map_err(bad)?;
        let full = format!(
            "{sec} {} {} {} {} {dow}",
            rest[0], rest[1], rest[2], rest[3]
        );
        let schedule = cron::Schedule::from_str(&full).map_err(|e| bad(e.to_string()))?;
        Ok(Crontab {
            expr: fields.join(" "),
            schedule,
            tz,
            seconds: fields.len() == 6,
        })
    }

    /// At minute 0 of every hour.
    pub fn hourly() -> Crontab {
        Crontab::parse("0 * * * *").expect("valid expression")
    }

    /// At midnight (UTC) every day.
    pub fn daily() -> Crontab {
        Crontab::parse("0 0 * * *").expect("valid expression")
    }

    /// Every `n` minutes (n in 1..=59).
    pub fn every_minutes(n: u32) -> Result<Crontab> {
        Crontab::parse(&format!("*/{n} * * * *"))
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// Whether the schedule has second resolution.
    pub fn has_seconds(&self) -> bool {
        self.seconds
    }

    /// Whether the schedule fires at `t` (truncated to its second, or minute for 5 fields).
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        let local = self.tz.from_utc_datetime(&t.naive_utc());
        self.schedule.includes(local)
    }

    /// The first firing time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = self.tz.from_utc_datetime(&t.naive_utc());
        self.schedule
            .after(&local)
            .next()
            .map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        // 2026-11-26 is a Thursday.
        Utc.with_ymd_and_hms(2026, 11, 26, h, m, s).unwrap()
    }

    #[test]
    fn five_fields_fire_at_the_start_of_the_minute() {
        let c = Crontab::parse("*/5 * * * *").unwrap();
        assert!(c.matches(at(10, 5, 0)));
        assert!(!c.matches(at(10, 5, 1)));
        assert!(!c.matches(at(10, 6, 0)));
        assert_eq!(c.next_after(at(10, 6, 30)), Some(at(10, 10, 0)));
    }

    #[test]
    fn day_of_week_counts_from_sunday_zero() {
        let thursday = Crontab::parse("0 9 * * 4").unwrap();
        assert!(thursday.matches(at(9, 0, 0)));
        let weekend = Crontab::parse("0 9 * * 0,6").unwrap();
        assert!(!weekend.matches(at(9, 0, 0)));
        let weekdays = Crontab::parse("0 9 * * 1-5").unwrap();
        assert!(weekdays.matches(at(9, 0, 0)));
        assert!(Crontab::parse("0 9 * * 7")
            .unwrap()
            .next_after(at(9, 0, 0))
            .is_some());
    }

    #[test]
    fn seconds_field_and_timezones() {
        let c = Crontab::parse("*/10 * * * * *").unwrap();
        assert!(c.has_seconds() && c.matches(at(1, 2, 30)) && !c.matches(at(1, 2, 31)));
        let paris = Crontab::parse_in_zone("0 10 * * *", "Europe/Paris").unwrap();
        assert!(
            paris.matches(at(9, 0, 0)),
            "10:00 in Paris is 09:00 UTC in November"
        );
    }

    #[test]
    fn bad_expressions_are_errors() {
        for e in ["", "* * *", "61 * * * *", "* * * * 9", "a b c d e"] {
            assert!(Crontab::parse(e).is_err(), "{e:?} parsed");
        }
        assert!(Crontab::parse_in_zone("* * * * *", "Mars/Olympus").is_err());
    }
}
