//! `hueyd cron 'EXPR' [--tz ZONE] [--next N] [--after TIME] [--json]`: check a crontab
//! expression and print its next run times, in UTC and in the expression's timezone. Needs no
//! storage.

use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use serde_json::json;

use super::values::parse_time;
use super::Out;
use crate::crontab::Crontab;
use crate::error::{Error, Result};

/// The flags of `cron`.
#[derive(Args, Debug)]
pub struct CronArgs {
    /// The expression: 5 fields (6 with seconds first), names, `L`, `W`, `#`, `@daily`...
    pub expr: String,
    /// Evaluate it in this timezone (e.g. Europe/Paris); UTC by default.
    #[arg(long)]
    pub tz: Option<String>,
    /// How many run times to print.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub next: u32,
    /// Start after this time (RFC 3339 or unix seconds) instead of now.
    #[arg(long, value_parser = parse_time)]
    pub after: Option<u64>,
    /// Print JSON: `{"expr", "tz", "runs": [RFC 3339 UTC...]}`.
    #[arg(long)]
    pub json: bool,
}

/// Run `cron`.
pub fn run(a: CronArgs) -> Result<ExitCode> {
    let cron = match &a.tz {
        Some(tz) => Crontab::parse_in_zone(&a.expr, tz)?,
        None => Crontab::parse(&a.expr)?,
    };
    let start = match a.after {
        Some(ms) => DateTime::<Utc>::from_timestamp_millis(ms as i64)
            .ok_or_else(|| Error::Config(format!("time {ms} ms is out of range")))?,
        None => Utc::now(),
    };
    let runs = cron.next_runs(start, a.next as usize);
    let mut out = Out::new();
    let fmt = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    if a.json {
        let runs: Vec<String> = runs.iter().map(fmt).collect();
        out.json(&json!({"expr": cron.expr(), "tz": cron.timezone().name(), "runs": runs}));
    } else {
        for t in &runs {
            let local = t.with_timezone(&cron.timezone());
            out.line(format!(
                "{}  {} {}",
                fmt(t),
                local.format("%a %Y-%m-%d %H:%M:%S"),
                cron.timezone().name()
            ));
        }
    }
    if runs.len() < a.next as usize {
        out.line(format!(
            "# no further runs within the search limit after {} run(s)",
            runs.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
