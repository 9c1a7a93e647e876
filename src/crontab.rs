//! Periodic schedules: crontab(5) expressions, evaluated by the `croner` crate.
//!
//! Five fields (`minute hour day month day-of-week`, as huey's `crontab()` and crontab(5)),
//! or six with a leading seconds field. What crontab(5) has is accepted:
//!
//! - day-of-week 0–7, where both 0 and 7 are Sunday, and ranges over 7 (`1-7`, `5-7`);
//! - names of days and months, in any case (`MON-FRI`, `sat,sun`, `JAN-MAR`);
//! - `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`;
//! - `L` (last day of the month; `5L` the last Friday), `nW` (the weekday closest to day n)
//!   and `d#n` (the n-th weekday d of the month, `1#1` the first Monday).
//!
//! When both day-of-month and day-of-week are restricted, a day must match **both**, as in
//! huey (crontab(5) takes either). Times are evaluated in UTC unless a timezone is given; a
//! local time skipped by a daylight-saving change does not fire that day, and a local time
//! that occurs twice fires once. Anything else is an [`Error::Config`] naming the field.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

use crate::error::{Error, Result};

#[cfg(test)]
mod tests;

/// A periodic schedule.
#[derive(Clone)]
pub struct Crontab {
    expr: String,
    schedule: Cron,
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

/// The five-field expressions of the `@` nicknames.
const NICKNAMES: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const FIELD_NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day of month",
    "month",
    "day of week",
];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
}

/// The six fields (seconds first) of an expression, nicknames expanded.
fn six_fields(expr: &str) -> std::result::Result<(Vec<String>, bool), String> {
    let trimmed = expr.trim();
    let expanded = if trimmed.starts_with('@') {
        let lower = trimmed.to_ascii_lowercase();
        match NICKNAMES.iter().find(|(n, _)| *n == lower) {
            Some((_, e)) => *e,
            None => {
                let names: Vec<&str> = NICKNAMES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown nickname (expected one of {})",
                    names.join(", ")
                ));
            }
        }
    } else {
        trimmed
    };
    let mut fields: Vec<String> = expanded.split_whitespace().map(str::to_owned).collect();
    let seconds = match fields.len() {
        5 => {
            fields.insert(0, "0".to_owned());
            false
        }
        6 => true,
        n => return Err(format!("expected 5 fields (or 6 with seconds), got {n}")),
    };
    Ok((fields, seconds))
}

/// The first field that is wrong on its own, with the library's reason.
fn field_error(fields: &[String]) -> Option<String> {
    for (i, f) in fields.iter().enumerate() {
        // `+` would switch the library's day matching; `?` is Quartz's: neither is crontab(5).
        if f.contains('+') || f.contains('?') {
            return Some(format!(
                "{} field {f:?}: unexpected character",
                FIELD_NAMES[i]
            ));
        }
        let mut probe = ["0", "*", "*", "*", "*", "*"];
        probe[i] = f;
        if let Err(e) = parser().parse(&probe.join(" ")) {
            return Some(format!("{} field {f:?}: {e}", FIELD_NAMES[i]));
        }
    }
    None
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
    ///     .periodic(Crontab::parse("0 9 * * MON-FRI")?) // 09:00 UTC, Monday to Friday
    ///     .register(|(): ()| Ok::<_, String>(()))?;
    /// assert!(Crontab::parse("@weekly").is_ok());
    /// let err = Crontab::parse("61 * * * *").unwrap_err().to_string();
    /// assert!(err.contains("minute field"), "{err}");
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
        let (fields, seconds) = six_fields(expr).map_err(bad)?;
        if let Some(why) = field_error(&fields) {
            return Err(bad(why));
        }
        let schedule = parser()
            .parse(&fields.join(" "))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Crontab {
            expr: expr.split_whitespace().collect::<Vec<_>>().join(" "),
            schedule,
            tz,
            seconds,
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
        if !(1..=59).contains(&n) {
            return Err(Error::Config(format!(
                "every_minutes({n}): expected 1 to 59"
            )));
        }
        Crontab::parse(&format!("*/{n} * * * *"))
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The timezone the expression is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// Whether the schedule has second resolution.
    pub fn has_seconds(&self) -> bool {
        self.seconds
    }

    /// Whether the schedule fires at `t` (truncated to its second, or minute for 5 fields).
    pub fn matches(&self, t: DateTime<Utc>) -> bool {
        self.schedule
            .is_time_matching(&t.with_timezone(&self.tz))
            .unwrap_or(false)
    }

    /// The first firing time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The next `n` firing times strictly after `t`.
    pub fn next_runs(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n.min(1024));
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }
}
