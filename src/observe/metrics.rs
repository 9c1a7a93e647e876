//! Prometheus metrics of a consumer (`--metrics-bind`): task outcomes and durations, queue
//! gauges, worker changes, and the observer's storage writes, served as OpenMetrics text at
//! `/metrics` by a small HTTP server of their own (`scrape`).
//!
//! Label values come from the queue, where any producer may write any task or queue name, so
//! they are bounded: a task this app does not register is counted as [`UNKNOWN_TASK`], at most
//! [`MAX_TASK_SERIES`] task and queue pairs get series of their own (later ones are counted as
//! [`OTHER_LABEL`]), and at most [`MAX_QUEUE_LABELS`] queues get gauges.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::events::Event;
use crate::observe::MinuteStats;
use crate::storage::Storage;

type Labels = Vec<(&'static str, String)>;

/// The `task` label of outcomes of tasks the app does not register (dead-lettered unknown
/// tasks: their names come from producers, and would each make a series).
pub const UNKNOWN_TASK: &str = "_unknown";
/// The `task` and `queue` labels of outcomes past [`MAX_TASK_SERIES`].
pub const OTHER_LABEL: &str = "_other";
/// Task and queue pairs given series of their own.
pub const MAX_TASK_SERIES: usize = 1000;
/// Queues given gauges of their own (the queues the consumer serves always are).
pub const MAX_QUEUE_LABELS: usize = 100;

/// One task and queue's counters (by outcome, made on first use) and duration histogram.
struct Series {
    outcomes: [Option<Counter>; MinuteStats::NAMES.len()],
    duration: Histogram,
}

/// The consumer's metrics.
pub struct Metrics {
    registry: Registry,
    tasks: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    messages: Family<Labels, Gauge>,
    queue_messages: Family<Labels, Gauge>,
    workers: Family<Labels, Counter>,
    /// The series of each task and queue seen, found by `&str` without building labels.
    series: Mutex<SeriesMap>,
    /// The task names the app registers, when known: other names count as [`UNKNOWN_TASK`].
    known: Option<HashSet<String>>,
    worker_seen: Mutex<[u64; 3]>,
    /// Queues given a gauge so far.
    queues_seen: Mutex<BTreeSet<String>>,
    /// When the metrics were last scraped (ms since the epoch; 0: never).
    scraped_ms: AtomicU64,
    writes: Family<Labels, Histogram>,
    write_errors: Family<Labels, Counter>,
}

#[derive(Default)]
struct SeriesMap {
    by_task: HashMap<String, HashMap<String, Series>>,
    /// Task and queue pairs in `by_task`.
    pairs: usize,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

fn write_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics, all at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let tasks = Family::<Labels, Counter>::default();
        let durations =
            Family::<Labels, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        let messages = Family::<Labels, Gauge>::default();
        let queue_messages = Family::<Labels, Gauge>::default();
        let workers = Family::<Labels, Counter>::default();
        let writes =
            Family::<Labels, Histogram>::new_with_constructor(write_histogram as fn() -> _);
        let write_errors = Family::<Labels, Counter>::default();
        registry.register(
            "huey_tasks",
            "Task attempts ended, by task, queue and outcome",
            tasks.clone(),
        );
        registry.register(
            "huey_task_duration_seconds",
            "How long task attempts ran, by task and queue",
            durations.clone(),
        );
        registry.register(
            "huey_messages",
            "Messages in the storage by state (ready, scheduled, in_flight, dead), refreshed every 5 s while scraped",
            messages.clone(),
        );
        registry.register(
            "huey_queue_messages",
            "Messages of each named queue by state (ready, in_flight), refreshed every 5 s while scraped",
            queue_messages.clone(),
        );
        registry.register(
            "huey_worker_changes",
            "Worker processes or threads started, died, or recycled",
            workers.clone(),
        );
        registry.register(
            "huey_storage_write_seconds",
            "How long the consumer's storage writes took, by op: outcomes (results, acks, retries), heartbeat, counters",
            writes.clone(),
        );
        registry.register(
            "huey_storage_write_errors",
            "The consumer's storage writes that failed, by op",
            write_errors.clone(),
        );
        Metrics {
            registry,
            tasks,
            durations,
            messages,
            queue_messages,
            workers,
            series: Mutex::new(SeriesMap::default()),
            known: None,
            worker_seen: Mutex::new([0; 3]),
            queues_seen: Mutex::new(Default::default()),
            scraped_ms: AtomicU64::new(0),
            writes,
            write_errors,
        }
    }

    /// Fresh metrics for an app that registers the tasks `names`: outcomes of any other task
    /// are counted under the task label [`UNKNOWN_TASK`].
    pub fn for_tasks<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Metrics {
        Metrics {
            known: Some(names.into_iter().map(Into::into).collect()),
            ..Metrics::new()
        }
    }

    /// Count an attempt's outcome (an index in [`MinuteStats::NAMES`], as the observer
    /// counts it).
    pub fn on_outcome(&self, e: &Event, outcome: usize) {
        let Some(&name) = MinuteStats::NAMES.get(outcome) else {
            return;
        };
        let mut all = self.series.lock();
        let seen = all
            .by_task
            .get(e.task.as_str())
            .is_some_and(|q| q.contains_key(e.queue.as_str()));
        let (task, queue) = if seen {
            (e.task.as_str(), e.queue.as_str())
        } else {
            self.labels_for_new(&all, e)
        };
        let SeriesMap { by_task, pairs } = &mut *all;
        let by_queue = match by_task.get_mut(task) {
            Some(q) => q,
            None => by_task.entry(task.to_string()).or_default(),
        };
        let s = match by_queue.get_mut(queue) {
            Some(s) => s,
            None => {
                *pairs += 1;
                let labels = vec![("task", task.to_string()), ("queue", queue.to_string())];
                let duration = self.durations.get_or_create(&labels).clone();
                by_queue.entry(queue.to_string()).or_insert(Series {
                    outcomes: Default::default(),
                    duration,
                })
            }
        };
        let counter = s.outcomes[outcome].get_or_insert_with(|| {
            let labels = vec![
                ("task", task.to_string()),
                ("queue", queue.to_string()),
                ("outcome", name.to_string()),
            ];
            self.tasks.get_or_create(&labels).clone()
        });
        counter.inc();
        // A dead letter is told beside its attempt's own outcome: timed once.
        if let Some(d) = e.duration.filter(|_| name != "dead") {
            s.duration.observe(d.as_secs_f64());
        }
    }

    /// The labels of an event whose task and queue have no series yet: an unregistered task
    /// is [`UNKNOWN_TASK`], and past [`MAX_TASK_SERIES`] pairs both are [`OTHER_LABEL`].
    fn labels_for_new<'a>(&self, all: &SeriesMap, e: &'a Event) -> (&'a str, &'a str) {
        let task = match &self.known {
            Some(k) if !k.contains(e.task.as_str()) => UNKNOWN_TASK,
            _ => e.task.as_str(),
        };
        let seen = |t: &str, q: &str| all.by_task.get(t).is_some_and(|m| m.contains_key(q));
        if seen(task, &e.queue) || all.pairs < MAX_TASK_SERIES {
            (task, e.queue.as_str())
        } else {
            (OTHER_LABEL, OTHER_LABEL)
        }
    }

    /// A storage write of kind `op` took `took`; `ok` says whether it worked.
    pub fn storage_write(&self, op: &'static str, took: Duration, ok: bool) {
        let labels = vec![("op", op.to_string())];
        self.writes
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let errors = self.write_errors.get_or_create(&labels);
        if !ok {
            errors.inc();
        }
    }

    /// Whether anyone scraped the metrics in the last `within`: the gauges, which count every
    /// queue in the storage, are read only then.
    pub fn scraped_within(&self, within: Duration) -> bool {
        let at = self.scraped_ms.load(Ordering::Relaxed);
        at > 0 && crate::clock::now_ms().saturating_sub(at) <= within.as_millis() as u64
    }

    /// Read the storage's counts into the gauges (`served`: the queues this consumer serves,
    /// reported even when empty).
    pub fn refresh_gauges(&self, storage: &dyn Storage, served: &[String]) {
        match storage.counts() {
            Ok(c) => {
                for (state, n) in [
                    ("ready", c.ready),
                    ("scheduled", c.scheduled),
                    ("in_flight", c.in_flight),
                    ("dead", c.dead),
                ] {
                    let labels = vec![("state", state.to_string())];
                    self.messages
                        .get_or_create(&labels)
                        .set(n.min(i64::MAX as u64) as i64);
                }
            }
            Err(e) => tracing::debug!("could not read the queue counts for the metrics: {e}"),
        }
        match storage.queue_sizes() {
            Ok(sizes) => {
                // Queues served or seen before read 0 when the storage lists them no more.
                // At most MAX_QUEUE_LABELS of them beside the served ones: queue names come
                // from producers (the totals above count every queue).
                let mut known = self.queues_seen.lock();
                known.extend(served.iter().cloned());
                let mut all: HashMap<String, (u64, u64)> =
                    known.iter().map(|q| (q.clone(), (0, 0))).collect();
                for q in sizes {
                    if !known.contains(&q.queue) {
                        if known.len() >= MAX_QUEUE_LABELS + served.len() {
                            continue;
                        }
                        known.insert(q.queue.clone());
                    }
                    all.insert(q.queue, (q.ready, q.in_flight));
                }
                for (queue, (ready, in_flight)) in all {
                    for (state, n) in [("ready", ready), ("in_flight", in_flight)] {
                        let labels = vec![("queue", queue.clone()), ("state", state.to_string())];
                        self.queue_messages
                            .get_or_create(&labels)
                            .set(n.min(i64::MAX as u64) as i64);
                    }
                }
            }
            Err(e) => tracing::debug!("could not read the queue sizes for the metrics: {e}"),
        }
    }

    /// Bring the worker change counters up to the pool's counts.
    fn sync_workers(&self) {
        let now = super::workers::counts();
        let mut seen = self.worker_seen.lock();
        for (i, change) in ["start", "death", "recycle"].into_iter().enumerate() {
            let labels = vec![("change", change.to_string())];
            let c = self.workers.get_or_create(&labels);
            c.inc_by(now[i].saturating_sub(seen[i]));
            seen[i] = now[i].max(seen[i]);
        }
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        self.scraped_ms
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        self.sync_workers();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use crate::observe::stats::outcome_of;

    fn dead(task: &str, queue: &str) -> Event {
        let mut e = Event::new(EventKind::DeadLettered, "id", task, 1);
        e.queue = queue.to_string();
        e
    }

    fn series(text: &str, label: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("huey_tasks_total{"))
            .filter_map(|l| l.split(&format!("{label}=\"")).nth(1))
            .filter_map(|v| v.split('"').next().map(str::to_string))
            .collect()
    }

    #[test]
    fn names_from_producers_cannot_grow_the_labels_without_bound() {
        let outcome = outcome_of(EventKind::DeadLettered).unwrap();
        // Unregistered task names (a producer's typos, or an attack) share one label.
        let m = Metrics::for_tasks(["send_mail"]);
        m.on_outcome(&dead("send_mail", "default"), outcome);
        for i in 0..5000 {
            m.on_outcome(&dead(&format!("no_such_task_{i}"), "default"), outcome);
        }
        let text = m.render();
        assert_eq!(
            series(&text, "task"),
            ["_unknown", "send_mail"].map(String::from).into()
        );
        assert!(
            text.contains(
                r#"huey_tasks_total{task="_unknown",queue="default",outcome="dead"} 5000"#
            ),
            "{text}"
        );
        // Without the app's names, pairs past the limit are counted under one label.
        let m = Metrics::new();
        for i in 0..MAX_TASK_SERIES + 500 {
            m.on_outcome(&dead(&format!("t{i}"), &format!("q{i}")), outcome);
        }
        m.on_outcome(&dead("t0", "q0"), outcome);
        let text = m.render();
        let tasks = series(&text, "task");
        assert_eq!(tasks.len(), MAX_TASK_SERIES + 1);
        assert!(tasks.contains(OTHER_LABEL));
        assert!(
            text.contains(r#"huey_tasks_total{task="_other",queue="_other",outcome="dead"} 500"#)
        );
        assert!(text.contains(r#"huey_tasks_total{task="t0",queue="q0",outcome="dead"} 2"#));
    }

    #[test]
    fn queue_gauges_are_bounded() {
        let app = crate::Huey::open("gauges", "memory:").unwrap();
        let t = app.task("t").register(|n: u32| Ok::<_, String>(n)).unwrap();
        for i in 0..MAX_QUEUE_LABELS * 3 {
            t.s(1).queue(format!("q{i}")).enqueue().unwrap();
        }
        let storage = app.storage();
        let m = Metrics::new();
        m.refresh_gauges(&*storage, &["served".to_string()]);
        let text = m.render();
        let queues: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("huey_queue_messages{"))
            .filter_map(|l| l.split("queue=\"").nth(1)?.split('"').next())
            .collect();
        assert_eq!(queues.len(), MAX_QUEUE_LABELS + 1, "{queues:?}");
        assert!(queues.contains("served"));
    }
}
