//! The example of docs/pipelines.md: each stage gets the previous result; a failing stage
//! stops the chain and runs the error handler. Runs in immediate mode.

use huey::{Huey, TaskError};

fn main() -> huey::Result<()> {
    let app = Huey::immediate("shop");
    let add = app
        .task("add")
        .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
    let double = app
        .task("double")
        .register(|n: i64| Ok::<_, String>(n * 2))?;
    let positive = app.task("positive").register(|n: i64| {
        if n > 0 {
            Ok(n)
        } else {
            Err(format!("{n} is not positive"))
        }
    })?;
    let report = app
        .task("report")
        .register(|e: TaskError| Ok::<_, String>(format!("{} failed: {}", e.task, e.message)))?;

    // add(1, 2) -> add(3, 10) -> double(13)
    let r = add.s((1, 2)).then(&add, 10).then_with(&double).enqueue()?;
    assert_eq!(r.last().get()?, Some(26));
    assert_eq!(r.stage::<i64>(1).expect("stage 1").get()?, Some(13));

    // Per-stage options: the second stage at priority 9 on its own queue.
    let r = add
        .s((1, 2))
        .then_with(&double)
        .priority(9)
        .queue("urgent")
        .enqueue()?;
    assert_eq!(r.last().get()?, Some(6));

    // add(-5, 1) -> positive(-4) fails: double never runs, report does.
    let r = add
        .s((-5, 1))
        .then_with(&positive)
        .then_with(&double)
        .error(&report)
        .enqueue()?;
    assert!(r.last().get()?.is_none());
    let handler = r.error_handler::<String>().expect("a handler");
    println!("{}", handler.get()?.unwrap_or_default());
    Ok(())
}
