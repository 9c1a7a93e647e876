//! The example of docs/events.md: event handlers, execute hooks, worker hooks, and task code
//! steering itself with `Control`. Runs in immediate mode.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use huey::task::Control;
use huey::{EventKind, Huey};

fn main() -> huey::Result<()> {
    let app = Huey::immediate("app");
    let failures = Arc::new(AtomicU32::new(0));
    let f = failures.clone();
    app.on_event(move |e| {
        if matches!(e.kind, EventKind::Error | EventKind::Canceled) {
            f.fetch_add(1, Ordering::SeqCst);
        }
        println!("{} {} {}", e.kind, e.task, e.id);
    });
    app.on_startup(|_app| println!("worker starting"));
    app.pre_execute(|ctx| {
        if ctx.task() == "maintenance" {
            Err("maintenance is off".into())
        } else {
            Ok(())
        }
    });
    app.post_execute(|ctx, failure| println!("{} ended: {failure:?}", ctx.task()));

    let tries = Arc::new(AtomicU32::new(0));
    let t = tries.clone();
    let poll = app.task("poll").register(move |(): ()| {
        if t.fetch_add(1, Ordering::SeqCst) < 2 {
            // Not ready yet: run again later, without using up a retry.
            return Err(Control::Retry {
                delay: Duration::ZERO,
                reason: "not ready".into(),
            });
        }
        Ok("ready".to_string())
    })?;
    let maintenance = app
        .task("maintenance")
        .register(|(): ()| Ok::<_, String>(()))?;
    let cancel = app
        .task("cancel")
        .register(|(): ()| -> Result<(), Control> { Err(Control::Cancel("no work".into())) })?;

    assert_eq!(poll.enqueue(())?.get()?.as_deref(), Some("ready"));
    assert!(maintenance.enqueue(())?.get().is_err());
    assert!(cancel.enqueue(())?.get().is_err());
    assert_eq!(failures.load(Ordering::SeqCst), 2);
    Ok(())
}
