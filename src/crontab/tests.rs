use super::*;
use chrono::TimeZone;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

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

/// (expression, after, the next three runs), all UTC. 2026-11-26 is a Thursday.
#[test]
fn next_runs_against_known_dates() {
    let start = utc(2026, 11, 26, 10, 0);
    let table: &[(&str, [DateTime<Utc>; 3])] = &[
        // 7 is Sunday, and ranges may run up to it.
        (
            "0 9 * * 7",
            [
                utc(2026, 11, 29, 9, 0),
                utc(2026, 12, 6, 9, 0),
                utc(2026, 12, 13, 9, 0),
            ],
        ),
        (
            "0 9 * * 5-7",
            [
                utc(2026, 11, 27, 9, 0),
                utc(2026, 11, 28, 9, 0),
                utc(2026, 11, 29, 9, 0),
            ],
        ),
        (
            "0 9 * * 1-7",
            [
                utc(2026, 11, 27, 9, 0),
                utc(2026, 11, 28, 9, 0),
                utc(2026, 11, 29, 9, 0),
            ],
        ),
        (
            "0 9 * * 0",
            [
                utc(2026, 11, 29, 9, 0),
                utc(2026, 12, 6, 9, 0),
                utc(2026, 12, 13, 9, 0),
            ],
        ),
        // Names, any case.
        (
            "0 9 * * MON-FRI",
            [
                utc(2026, 11, 27, 9, 0),
                utc(2026, 11, 30, 9, 0),
                utc(2026, 12, 1, 9, 0),
            ],
        ),
        (
            "0 9 * * sat,Sun",
            [
                utc(2026, 11, 28, 9, 0),
                utc(2026, 11, 29, 9, 0),
                utc(2026, 12, 5, 9, 0),
            ],
        ),
        (
            "0 0 1 JAN-MAR *",
            [
                utc(2027, 1, 1, 0, 0),
                utc(2027, 2, 1, 0, 0),
                utc(2027, 3, 1, 0, 0),
            ],
        ),
        // Nicknames.
        (
            "@yearly",
            [
                utc(2027, 1, 1, 0, 0),
                utc(2028, 1, 1, 0, 0),
                utc(2029, 1, 1, 0, 0),
            ],
        ),
        (
            "@annually",
            [
                utc(2027, 1, 1, 0, 0),
                utc(2028, 1, 1, 0, 0),
                utc(2029, 1, 1, 0, 0),
            ],
        ),
        (
            "@monthly",
            [
                utc(2026, 12, 1, 0, 0),
                utc(2027, 1, 1, 0, 0),
                utc(2027, 2, 1, 0, 0),
            ],
        ),
        (
            "@weekly",
            [
                utc(2026, 11, 29, 0, 0),
                utc(2026, 12, 6, 0, 0),
                utc(2026, 12, 13, 0, 0),
            ],
        ),
        (
            "@daily",
            [
                utc(2026, 11, 27, 0, 0),
                utc(2026, 11, 28, 0, 0),
                utc(2026, 11, 29, 0, 0),
            ],
        ),
        (
            "@midnight",
            [
                utc(2026, 11, 27, 0, 0),
                utc(2026, 11, 28, 0, 0),
                utc(2026, 11, 29, 0, 0),
            ],
        ),
        (
            "@hourly",
            [
                utc(2026, 11, 26, 11, 0),
                utc(2026, 11, 26, 12, 0),
                utc(2026, 11, 26, 13, 0),
            ],
        ),
        // L, W and #.
        (
            "0 0 L * *",
            [
                utc(2026, 11, 30, 0, 0),
                utc(2026, 12, 31, 0, 0),
                utc(2027, 1, 31, 0, 0),
            ],
        ),
        (
            "0 0 * * 5L",
            [
                utc(2026, 11, 27, 0, 0),
                utc(2026, 12, 25, 0, 0),
                utc(2027, 1, 29, 0, 0),
            ],
        ),
        (
            "0 0 * * 1#1",
            [
                utc(2026, 12, 7, 0, 0),
                utc(2027, 1, 4, 0, 0),
                utc(2027, 2, 1, 0, 0),
            ],
        ),
        // 2027-02-15 is a Monday; 2027-05-15 a Saturday (so Friday the 14th).
        (
            "0 0 15W * *",
            [
                utc(2026, 12, 15, 0, 0),
                utc(2027, 1, 15, 0, 0),
                utc(2027, 2, 15, 0, 0),
            ],
        ),
        // Day of month and day of week both restricted: both must match, as in huey.
        (
            "0 0 13 * 5",
            [
                utc(2027, 8, 13, 0, 0),
                utc(2028, 10, 13, 0, 0),
                utc(2029, 4, 13, 0, 0),
            ],
        ),
        // Leap day.
        (
            "0 0 29 2 *",
            [
                utc(2028, 2, 29, 0, 0),
                utc(2032, 2, 29, 0, 0),
                utc(2036, 2, 29, 0, 0),
            ],
        ),
    ];
    for (expr, want) in table {
        let c = Crontab::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        assert_eq!(c.next_runs(start, 3), want.to_vec(), "{expr}");
        assert!(
            want.iter().all(|t| c.matches(*t)),
            "{expr} matches its runs"
        );
    }
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
    assert_eq!(paris.timezone(), Tz::Europe__Paris);
    let ny = Crontab::parse_in_zone("0 9 * * MON-FRI", "America/New_York").unwrap();
    assert_eq!(ny.next_after(at(10, 0, 0)), Some(at(14, 0, 0)));
}

/// Europe/Paris moves 02:00 → 03:00 on 2026-03-29 and 03:00 → 02:00 on 2026-10-25.
#[test]
fn daylight_saving_changes() {
    // Every day at 02:30 local: that time does not exist on 29 March.
    let c = Crontab::parse_in_zone("30 2 * * *", "Europe/Paris").unwrap();
    let runs = c.next_runs(utc(2026, 3, 27, 12, 0), 3);
    assert_eq!(runs[0], utc(2026, 3, 28, 1, 30), "02:30 CET");
    assert_eq!(runs[2], utc(2026, 3, 30, 0, 30), "02:30 CEST");
    assert!(runs[1] > runs[0] && runs[1] < runs[2], "{runs:?}");
    // 02:30 happens twice on 25 October: one run that day.
    let runs = c.next_runs(utc(2026, 10, 24, 12, 0), 3);
    assert_eq!(
        runs,
        vec![
            utc(2026, 10, 25, 0, 30),
            utc(2026, 10, 26, 1, 30),
            utc(2026, 10, 27, 1, 30)
        ]
    );
    // A daily 09:00 keeps local time across the change: 08:00 UTC, then 07:00 UTC.
    let c = Crontab::parse_in_zone("0 9 * * *", "Europe/Paris").unwrap();
    assert_eq!(
        c.next_runs(utc(2026, 3, 28, 12, 0), 2),
        vec![utc(2026, 3, 29, 7, 0), utc(2026, 3, 30, 7, 0)]
    );
    assert_eq!(
        c.next_after(utc(2026, 3, 27, 12, 0)),
        Some(utc(2026, 3, 28, 8, 0))
    );
}

#[test]
fn bad_expressions_name_the_field() {
    let table = [
        ("61 * * * *", "minute field"),
        ("* 24 * * *", "hour field"),
        ("* * 32 * *", "day of month field"),
        ("* * 0 * *", "day of month field"),
        ("* * * 13 *", "month field"),
        ("* * * FOO *", "month field"),
        ("* * * * 8", "day of week field"),
        ("* * * * MON-XYZ", "day of week field"),
        ("* * * * 1?", "day of week field"),
        ("* * * * +1", "day of week field"),
        ("60 * * * * *", "second field"),
        ("", "expected 5 fields"),
        ("* * *", "expected 5 fields"),
        ("* * * * * * *", "expected 5 fields"),
        ("@fortnightly", "unknown nickname"),
        ("a b c d e", "minute field"),
    ];
    for (e, want) in table {
        let err = Crontab::parse(e).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(want), "{e:?}: {err}");
    }
    assert!(Crontab::parse_in_zone("* * * * *", "Mars/Olympus").is_err());
    assert!(Crontab::every_minutes(0).is_err() && Crontab::every_minutes(60).is_err());
}
