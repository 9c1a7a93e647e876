//! The example of docs/locks.md: a lock as a task option, and inside task code. Runs in
//! immediate mode.

use std::time::Duration;

use huey::{Error, FailureKind, Huey, TaskContext};

fn main() -> huey::Result<()> {
    let app = Huey::immediate("reports");
    // At most one `nightly` at a time; a crashed holder frees the lock after 10 minutes.
    let nightly = app
        .task("nightly")
        .lock("reports")
        .lock_ttl(Duration::from_secs(600))
        .retries(3)
        .retry_delay(Duration::from_secs(30))
        .register(|(): ()| Ok::<_, String>("done".to_string()))?;

    // Inside task code: `?` on a held lock fails the attempt as Locked.
    let refresh = app
        .task("refresh")
        .register_with_context(|(): (), ctx: &TaskContext| {
            let _guard = ctx.app().lock_task("cache").acquire()?;
            Ok::<_, Error>(1u32) // released when the guard drops
        })?;

    assert_eq!(nightly.enqueue(())?.get()?.as_deref(), Some("done"));

    let held = app.lock_task("cache").acquire()?;
    match refresh.enqueue(())?.get() {
        Err(Error::Task(e)) => assert_eq!(e.kind, FailureKind::Locked),
        other => panic!("expected a lock failure, got {other:?}"),
    }
    drop(held);
    assert_eq!(refresh.enqueue(())?.get()?, Some(1));

    // Closure form, and breaking every lock.
    let n = app.lock_task("cache").with_lock(|| 2 + 2)?;
    assert_eq!(n, 4);
    app.flush_locks()?;
    Ok(())
}
