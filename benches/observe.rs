//! What observability costs the consumer's main loop per task: the outcome event (which the
//! lifecycle builds anyway) counted not at all (`--no-heartbeat`, no metrics), per minute for
//! the storage (the default), and in the Prometheus metrics too (`--metrics-bind`), through the
//! counter the outbox calls. The writes run on the observer thread and are not measured here
//! (`scripts/bench_observe` measures whole drains). `cargo bench --bench observe`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use huey::message::{Message, MessageOptions};
use huey::observe::{Metrics, Observer, ObserverConfig};
use huey::{Event, EventKind, Huey};

fn bench_counting(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_task");
    let msg = Message::new("noop", Vec::new(), MessageOptions::default());
    for (name, heartbeat, metrics) in [
        ("event_only", false, false),
        ("heartbeat", true, false),
        ("heartbeat_and_metrics", true, true),
    ] {
        let app = Huey::open("bench", "memory:").unwrap();
        let cfg = ObserverConfig {
            kind: "thread".into(),
            workers: 1,
            queues: vec!["default".into()],
            heartbeat,
        };
        let observer = if metrics {
            Observer::start_with_metrics(&app, cfg, Arc::new(Metrics::new()))
        } else {
            Observer::start(&app, cfg)
        };
        let counter = (heartbeat || metrics).then(|| observer.counter());
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut done = Event::for_message(EventKind::Complete, black_box(&msg));
                done.duration = Some(Duration::from_micros(20));
                if let Some(count) = &counter {
                    count(&done);
                }
                black_box(done)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_counting);
criterion_main!(benches);
