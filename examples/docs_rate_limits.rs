//! The example of docs/rate-limits.md: a rate limit as a task option and inside task code.
//! Runs in immediate mode.

use std::time::Duration;

use huey::{Error, Huey, TaskContext};

fn main() -> huey::Result<()> {
    let app = Huey::immediate("crawler");
    // At most 10 fetches per second across every consumer of the storage.
    let fetch = app
        .task("fetch")
        .rate_limit("remote-api", 10, Duration::from_secs(1))
        .register(|url: String| Ok::<_, String>(url.len()))?;

    // Or counted inside task code, only on the path that needs it.
    let sync = app
        .task("sync")
        .register_with_context(|id: u64, ctx: &TaskContext| {
            if id.is_multiple_of(2) {
                ctx.app()
                    .rate_limit("partner", 100, Duration::from_secs(60))?;
            }
            Ok::<_, Error>(id)
        })?;

    assert_eq!(
        fetch.enqueue("https://example.com".into())?.get()?,
        Some(19)
    );
    assert_eq!(sync.enqueue(2)?.get()?, Some(2));
    Ok(())
}
