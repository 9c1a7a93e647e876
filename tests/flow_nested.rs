//! Pipelines and chords as members of groups and chords, run by real consumers on SQLite and
//! Redis: a pipeline member's outcome is its last stage's (or the error of the stage that
//! stopped it), a chord member's is its callback's, and an enclosing chord counts each member
//! once, when that outcome is decided.

#[macro_use]
mod common;

use std::time::Duration;

use common::hueyd::{Backend, Kind};
use huey::flow::{Chord, Group};
use huey::message::MAX_DEPTH;
use huey::{FailureKind, Huey, Task, TaskError};

const LONG: Duration = Duration::from_secs(30);

fn task<A: 'static, R: 'static>(app: &Huey, name: &str) -> Task<A, R> {
    Task::from_name(app, name).unwrap()
}

fn counter(app: &Huey, key: &str) -> i64 {
    app.storage().incr(key, 0).unwrap()
}

/// A process consumer on Redis, a thread consumer on SQLite.
fn kind(b: &Backend) -> Kind {
    match b {
        Backend::Redis(_) => Kind::Process,
        _ => Kind::Thread,
    }
}

both!(group_of_pipelines_and_chords, |b: Backend| {
    let app = b.app();
    let _c = kind(&b).testbed(&b.url(), &["-w", "3"]);
    let add: Task<(i64, i64), i64> = task(&app, "add");
    let collect: Task<Vec<Result<i64, TaskError>>, i64> = task(&app, "collect");
    let g = Group::new(&app)
        .push(add.s((1, 2)))
        // add(1, 2) -> add(3, 10) -> add(13, 100)
        .push(add.s((1, 2)).then(&add, 10).then(&add, 100))
        // Overflows in its first stage: the second never runs.
        .push(add.s((i64::MAX, 1)).then(&add, 1))
        // A chord: its callback's result.
        .push(add.map([(1, 1), (2, 2)]).then_with(&collect));
    assert_eq!(g.len(), 4);
    let r = g.enqueue().unwrap();
    let outcomes = r.wait_outcomes(LONG).unwrap();
    assert_eq!(outcomes[0], Ok(3));
    assert_eq!(outcomes[1], Ok(113));
    let e = outcomes[2].as_ref().unwrap_err();
    assert_eq!((e.task.as_str(), e.kind), ("add", FailureKind::Error));
    assert_eq!(e.message, "overflow");
    assert_eq!(outcomes[3], Ok(6));
    assert_eq!(counter(&app, "collect-runs"), 1);

    // Pipelines only, typed as a group of pipelines.
    let r = app
        .group((0..3).map(|i| add.s((i, i)).then(&add, 1)))
        .enqueue()
        .unwrap();
    assert_eq!(r.wait(LONG).unwrap(), vec![1, 3, 5]);
});

both!(chord_of_pipelines_and_chords, |b: Backend| {
    let app = b.app();
    let url = b.url();
    let _c1 = kind(&b).testbed(&url, &["-w", "3"]);
    let _c2 = kind(&b).testbed(&url, &["-w", "3"]);
    let add: Task<(i64, i64), i64> = task(&app, "add");
    let collect: Task<Vec<Result<i64, TaskError>>, i64> = task(&app, "collect");
    let inner_of_pipelines = app
        .group((1..=2).map(|i| add.s((i, i)).then(&add, 1000)))
        .then_with(&collect);
    let chord = Group::new(&app)
        .push(add.s((1, 2)))
        .push(add.s((1, 2)).then(&add, 10).then(&add, 100))
        .push(add.s((i64::MAX, 1)).then(&add, 1))
        .push(add.map((1..=4).map(|i| (i, i))).then_with(&collect))
        .push(inner_of_pipelines)
        .then_with(&collect)
        .enqueue()
        .unwrap();
    // 3 + 113 + (failed) + (2 + 4 + 6 + 8) + (1002 + 1004)
    assert_eq!(chord.callback.wait(LONG).unwrap(), 3 + 113 + 20 + 2006);
    assert_eq!(
        counter(&app, "collect-runs"),
        3,
        "each chord's callback ran once, the outer one after both inner ones"
    );
    let outcomes = chord.members.wait_outcomes(LONG).unwrap();
    assert_eq!(outcomes[0], Ok(3));
    assert_eq!(outcomes[1], Ok(113));
    assert_eq!(outcomes[2].as_ref().unwrap_err().kind, FailureKind::Error);
    assert_eq!(outcomes[3], Ok(20));
    assert_eq!(outcomes[4], Ok(2006));
});

#[test]
fn nested_members_run_in_immediate_mode() {
    let app = Huey::immediate("t");
    let add = app
        .task("add")
        .register(|(a, b): (i64, i64)| a.checked_add(b).ok_or("overflow"))
        .unwrap();
    let sum = app
        .task("sum")
        .register(|o: Vec<Result<i64, TaskError>>| {
            Ok::<_, String>(o.iter().map(|r| r.as_ref().map_or(-1, |v| *v)).sum::<i64>())
        })
        .unwrap();
    // A chord of a chord of a chord, with a pipeline at the bottom.
    let deepest = Group::new(&app)
        .push(add.s((1, 1)).then(&add, 1))
        .then_with(&sum);
    let middle = Group::new(&app)
        .push(deepest)
        .push(add.s((5, 5)))
        .then_with(&sum);
    let top = Group::new(&app)
        .push(middle)
        .push(add.s((i64::MAX, 1)).then(&add, 1))
        .then_with(&sum)
        .enqueue()
        .unwrap();
    // deepest: 3; middle: 3 + 10; top: 13 + (-1 for the failed pipeline)
    assert_eq!(top.callback.wait(LONG).unwrap(), 12);
}

type Sum = Task<Vec<Result<i64, TaskError>>, i64>;

/// Chords nested `levels` deep: the innermost of a pipeline `1 + 1 -> + 1`, each one above of
/// the one below and a call returning 1, each callback the sum of its members' outcomes (so
/// the top callback returns `levels + 2`).
fn nest(app: &Huey, add: &Task<(i64, i64), i64>, sum: &Sum, levels: usize) -> Chord<i64, i64> {
    let mut c = Group::new(app)
        .push(add.s((1, 1)).then(add, 1))
        .then_with(sum);
    for _ in 1..levels {
        c = Group::new(app).push(c).push(add.s((1, 0))).then_with(sum);
    }
    c
}

/// The deepest nest of chords that can be enqueued: each level nests its callback two levels
/// deeper in its members' messages.
const DEEPEST: usize = MAX_DEPTH / 2;

both!(
    chords_nested_as_deep_as_allowed_run_and_deeper_ones_are_refused,
    |b: Backend| {
        let app = b.app();
        let _c = kind(&b).testbed(&b.url(), &["-w", "2"]);
        let add: Task<(i64, i64), i64> = task(&app, "add");
        let collect: Sum = task(&app, "collect");
        let r = nest(&app, &add, &collect, 50).enqueue().unwrap();
        assert_eq!(r.callback.wait(LONG).unwrap(), 52);
        let r = nest(&app, &add, &collect, DEEPEST).enqueue().unwrap();
        assert_eq!(r.callback.wait(LONG).unwrap(), DEEPEST as i64 + 2);
        // One more level could not be decoded by a consumer within its limit: refused, with
        // nothing written.
        let before = app.storage().counts().unwrap();
        let e = nest(&app, &add, &collect, DEEPEST + 1)
            .enqueue()
            .unwrap_err();
        assert!(e.to_string().contains("nest"), "{e}");
        assert_eq!(app.storage().counts().unwrap(), before);
    }
);

#[test]
fn deeply_nested_chords_in_immediate_mode_run_or_are_refused_without_overflowing() {
    let app = Huey::immediate("t");
    let add = app
        .task("add")
        .register(|(a, b): (i64, i64)| a.checked_add(b).ok_or("overflow"))
        .unwrap();
    let sum: Sum = app
        .task("sum")
        .register(|o: Vec<Result<i64, TaskError>>| {
            Ok::<_, String>(o.iter().map(|r| r.as_ref().map_or(-1, |v| *v)).sum::<i64>())
        })
        .unwrap();
    // Every level is put together, encoded, decoded and run in this thread.
    let r = nest(&app, &add, &sum, DEEPEST).enqueue().unwrap();
    assert_eq!(r.callback.wait(LONG).unwrap(), DEEPEST as i64 + 2);
    for levels in [DEEPEST + 1, DEEPEST + 2, 100_000] {
        let e = nest(&app, &add, &sum, levels).enqueue().unwrap_err();
        assert!(e.to_string().contains("nest"), "{levels} levels: {e}");
    }
}

both!(
    a_pipeline_members_middle_stage_retried_or_failed_counts_once,
    |b: Backend| {
        // Run in this thread (`common::drain`), with tasks of the test's own.
        let app = b.app();
        let add: Task<(i64, i64), i64> = app
            .task("add_then")
            .register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))
            .unwrap();
        let flaky: Task<(i64, i64), i64> = app
            .task("fails_first")
            .retries(2)
            .retry_delay(Duration::ZERO)
            .register_with_context(|(a, b): (i64, i64), ctx: &huey::TaskContext| {
                if ctx.attempt() == 1 {
                    Err("the first attempt fails".to_string())
                } else {
                    Ok(a * b)
                }
            })
            .unwrap();
        let bad: Task<(i64, i64), i64> = app
            .task("always_fails")
            .retries(1)
            .retry_delay(Duration::ZERO)
            .register(|_: (i64, i64)| Err::<i64, _>("always".to_string()))
            .unwrap();
        let sum: Sum = app
            .task("sum_or_minus_1000")
            .register(|o: Vec<Result<i64, TaskError>>| {
                Ok::<_, String>(
                    o.iter()
                        .map(|r| r.as_ref().map_or(-1000, |v| *v))
                        .sum::<i64>(),
                )
            })
            .unwrap();
        let inner = Group::new(&app)
            .push(add.s((2, 2)).then(&flaky, 3))
            .push(add.s((0, 1)))
            .then_with(&sum);
        let chord = Group::new(&app)
            // (1 + 2) * 10 on the retry, + 5
            .push(add.s((1, 2)).then(&flaky, 10).then(&add, 5))
            // Fails for good in its middle stage: its last stage never runs.
            .push(add.s((1, 1)).then(&bad, 1).then(&add, 5))
            // 4 * 3 on the retry, + 1
            .push(inner)
            .then_with(&sum)
            .enqueue()
            .unwrap();
        assert!(common::drain(&app, &["default"]) > 0);
        assert_eq!(chord.callback.wait(LONG).unwrap(), 35 - 1000 + 13);
        let outcomes = chord.members.wait_outcomes(LONG).unwrap();
        assert_eq!(outcomes[0], Ok(35));
        let e = outcomes[1].as_ref().unwrap_err();
        assert_eq!((e.task.as_str(), e.attempt), ("always_fails", 2));
        assert_eq!(outcomes[2], Ok(13));
    }
);
