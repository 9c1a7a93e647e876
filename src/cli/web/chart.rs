//! The throughput chart: tasks completed and failed per minute, as an SVG drawn on the server.

use maud::{html, Markup};
use serde::Serialize;

/// One minute of counters.
#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub(crate) struct Minute {
    /// The minute's start, RFC 3339.
    pub at: String,
    /// The minute's start, ms since the epoch.
    pub at_ms: u64,
    pub complete: u64,
    /// Failed for good: errors, timeouts, lost workers.
    pub failed: u64,
    pub retry: u64,
    /// Moved to the dead-letter place.
    pub dead: u64,
}

const W: f64 = 720.0;
const H: f64 = 180.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;
const TOP: f64 = 10.0;

/// A round upper bound for the y axis.
fn nice_max(v: u64) -> u64 {
    let v = v.max(1);
    let mag = 10u64.pow(v.ilog10());
    for m in [1, 2, 5, 10] {
        if v <= m * mag {
            return m * mag;
        }
    }
    10 * mag
}

/// The polyline points of one series.
fn points(minutes: &[Minute], max: u64, f: impl Fn(&Minute) -> u64) -> String {
    let n = minutes.len().max(2) - 1;
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - TOP - BOTTOM;
    minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let x = LEFT + plot_w * i as f64 / n as f64;
            let y = TOP + plot_h * (1.0 - f(m) as f64 / max as f64);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An x-axis label: the minute's hour and minute.
fn hhmm(at: &str) -> &str {
    at.get(11..16).unwrap_or("")
}

/// The series drawn: name, colour, value.
type Series = (&'static str, &'static str, fn(&Minute) -> u64);

const SERIES: [Series; 3] = [
    ("completed", "#2a7", |m| m.complete),
    ("failed", "#d33", |m| m.failed),
    ("retried", "#e90", |m| m.retry),
];

/// The chart, `minutes` oldest first.
pub(crate) fn svg(minutes: &[Minute]) -> Markup {
    let top = minutes
        .iter()
        .flat_map(|m| SERIES.iter().map(move |(_, _, f)| f(m)))
        .max()
        .unwrap_or(0);
    let max = nice_max(top);
    let base = H - BOTTOM;
    let totals: Vec<u64> = SERIES
        .iter()
        .map(|(_, _, f)| minutes.iter().map(f).sum())
        .collect();
    let label = format!(
        "Tasks per minute over the last {} minutes: {} completed, {} failed, {} retried",
        minutes.len(),
        totals[0],
        totals[1],
        totals[2]
    );
    html! {
        svg xmlns="http://www.w3.org/2000/svg" viewBox={"0 0 " (W) " " (H)} width=(W) height=(H)
            role="img" aria-label=(label) {
            title { (label) }
            rect x="0" y="0" width=(W) height=(H) fill="#fff" {}
            line x1=(LEFT) y1=(base) x2=(W - 8.0) y2=(base) stroke="#888" {}
            line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(base) stroke="#888" {}
            text x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" font-size="11" { (max) }
            text x=(LEFT - 4.0) y=(base) text-anchor="end" font-size="11" { "0" }
            @if let (Some(first), Some(last)) = (minutes.first(), minutes.last()) {
                text x=(LEFT) y=(H - 6.0) font-size="11" { (hhmm(&first.at)) }
                text x=(W - 8.0) y=(H - 6.0) text-anchor="end" font-size="11" { (hhmm(&last.at)) " UTC" }
                @for (_, colour, f) in SERIES {
                    polyline fill="none" stroke=(colour) stroke-width="2"
                        points=(points(minutes, max, f)) {}
                }
            } @else {
                text x=(W / 2.0) y=(H / 2.0) text-anchor="middle" font-size="13" fill="#666" {
                    "no counters recorded yet"
                }
            }
            text x=(W - 8.0) y=(TOP + 4.0) text-anchor="end" font-size="11" {
                @for ((name, colour, _), total) in SERIES.iter().zip(&totals) {
                    tspan fill=(colour) { (name) " " (total) "  " }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(120), 200);
        assert_eq!(nice_max(500), 500);
    }

    #[test]
    fn an_empty_chart_says_so() {
        assert!(svg(&[]).into_string().contains("no counters recorded yet"));
        let m = Minute {
            at: "2026-01-01T10:05:00Z".into(),
            at_ms: 0,
            complete: 3,
            failed: 1,
            ..Minute::default()
        };
        let s = svg(&[m.clone(), m]).into_string();
        assert!(s.contains("polyline") && s.contains("10:05"));
    }
}
