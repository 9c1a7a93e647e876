//! The example of docs/groups.md: a group, map, and a chord whose callback gets every
//! member's outcome in member order, and pipelines and chords as members. Runs in immediate
//! mode.

use std::time::Duration;

use huey::{Group, Huey, TaskError};

fn main() -> huey::Result<()> {
    let app = Huey::immediate("stats");
    let square = app.task("square").register(|n: i64| {
        if n < 0 {
            Err("negative".to_string())
        } else {
            Ok(n * n)
        }
    })?;
    let total = app
        .task("total")
        .register(|outcomes: Vec<Result<i64, TaskError>>| {
            Ok::<_, String>(outcomes.iter().flatten().sum::<i64>())
        })?;

    // A group: many calls in one write; results in member order.
    let g = app.group((1..=3).map(|n| square.s(n))).enqueue()?;
    assert_eq!(g.wait(Duration::from_secs(5))?, vec![1, 4, 9]);

    // map + chord: the callback runs once, also when a member fails.
    let chord = square.map([1, -2, 3]).then_with(&total).enqueue()?;
    assert_eq!(chord.callback.wait(Duration::from_secs(5))?, 10);
    for item in chord.members.as_completed(Duration::from_secs(5)) {
        let (i, outcome) = item?;
        println!("member {i}: {outcome:?}");
    }

    // Pipelines and chords as members: a pipeline counts with its last stage's result, a
    // chord with its callback's; the outer callback runs once both are complete.
    let add = app
        .task("add")
        .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
    let nested = Group::new(&app)
        .push(square.s(2)) // 4
        .push(square.s(3).then(&add, 1)) // square(3) -> add(9, 1) = 10
        .push(square.map([1, 2]).then_with(&total)) // total([1, 4]) = 5
        .then_with(&total)
        .enqueue()?;
    assert_eq!(nested.callback.wait(Duration::from_secs(5))?, 19);
    Ok(())
}
