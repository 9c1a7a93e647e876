//! The example of docs/guide.md#schedules-edited-at-run-time: periodic schedules kept in the
//! storage, added, paused, resumed and removed while consumers run.

use huey::periodic_store::RuntimeSchedule;
use huey::supervisor::ticker::Ticker;
use huey::Huey;
use serde_json::json;

fn main() -> huey::Result<()> {
    let app = Huey::open("reports", "memory:")?;
    app.task("report")
        .register(|(team, days): (String, u32)| Ok::<_, String>(format!("{team}: {days} days")))?;

    // Run `report("ops", 7)` every weekday at 09:00 in Paris, on the `reports` queue. Wrong
    // input is refused here: the expression (the error names the field), the timezone, the
    // task, the arguments (checked against the task's argument type).
    app.periodic().add(
        RuntimeSchedule::new("ops-weekly", "0 9 * * MON-FRI", "report", json!(["ops", 7]))
            .tz("Europe/Paris")
            .queue("reports"),
    )?;
    let err = app
        .periodic()
        .add(RuntimeSchedule::new(
            "bad",
            "0 25 * * *",
            "report",
            json!(["ops", 7]),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("hour"), "{err}");

    let listed = app.periodic().list()?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "ops-weekly");

    // A consumer's ticker sees a change within a second; here one is driven by hand.
    let monday_9h = chrono::DateTime::parse_from_rfc3339("2026-11-30T09:00:00+01:00")
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| huey::Error::Config(e.to_string()))?;
    let mut ticker = Ticker::new(&app);
    assert_eq!(ticker.enqueue_due(monday_9h)?, vec!["report".to_string()]);

    app.periodic().pause("ops-weekly")?; // kept, not run
    app.periodic().resume("ops-weekly")?;
    app.periodic().remove("ops-weekly")?;
    assert!(app.periodic().list()?.is_empty());
    Ok(())
}
