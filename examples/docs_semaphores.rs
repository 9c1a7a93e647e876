//! The example of docs/locks.md#semaphores: a semaphore as a task option, and inside task
//! code. Runs in immediate mode.

use std::time::Duration;

use huey::{Error, FailureKind, Huey, TaskContext};

fn main() -> huey::Result<()> {
    let app = Huey::immediate("exports");
    // At most 3 `export` runs at once across every consumer; a permit of a killed worker
    // expires after 10 minutes. Without a free permit an attempt fails as Locked and
    // follows the retry policy.
    let export = app
        .task("export")
        .semaphore("exports", 3)
        .semaphore_ttl(Duration::from_secs(600))
        .retries(5)
        .retry_delay(Duration::from_secs(10))
        .register(|n: u32| Ok::<_, String>(n * 2))?;

    // Inside task code: `?` on a semaphore without a free permit fails the attempt as Locked.
    let fetch = app
        .task("fetch")
        .register_with_context(|url: String, ctx: &TaskContext| {
            let sem = ctx.app().semaphore("api", 2, Duration::from_secs(60));
            let _permit = sem.acquire()?;
            Ok::<_, Error>(url.len()) // given back when the permit drops
        })?;

    assert_eq!(export.enqueue(21)?.get()?, Some(42));

    let api = app.semaphore("api", 2, Duration::from_secs(60));
    let held = (api.acquire()?, api.acquire()?);
    assert_eq!(api.held()?, 2);
    match fetch.enqueue("https://example.com".into())?.get() {
        Err(Error::Task(e)) => assert_eq!(e.kind, FailureKind::Locked),
        other => panic!("expected a Locked failure, got {other:?}"),
    }
    drop(held);
    assert_eq!(
        fetch.enqueue("https://example.com".into())?.get()?,
        Some(19)
    );

    // Closure form, and breaking every permit.
    assert_eq!(api.with_permit(|| 2 + 2)?, 4);
    let _stuck = api.acquire()?;
    assert_eq!(api.clear()?, 1);
    Ok(())
}
