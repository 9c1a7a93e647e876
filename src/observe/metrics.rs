//! Prometheus metrics of a consumer (`--metrics-bind`): task outcomes and durations, queue
//! gauges, worker changes, and the observer's storage writes, served as OpenMetrics text at
//! `/metrics` by a small HTTP thread of their own.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};
use crate::events::Event;
use crate::observe::MinuteStats;
use crate::storage::Storage;

type Labels = Vec<(&'static str, String)>;

/// One task and queue's counters (by outcome, made on first use) and duration histogram.
struct Series {
    outcomes: [Option<Counter>; MinuteStats::NAMES.len()],
    duration: Histogram,
}

/// Worker changes counted by the pool (process-wide: one supervisor per process).
static WORKER_STARTS: AtomicU64 = AtomicU64::new(0);
/// Workers that died (killed, crashed) rather than being stopped.
static WORKER_DEATHS: AtomicU64 = AtomicU64::new(0);
/// Workers replaced on purpose: `--max-tasks`, `--max-memory`, SIGHUP, timeouts, revocations.
static WORKER_RECYCLES: AtomicU64 = AtomicU64::new(0);

/// A change in a consumer's pool of workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerChange {
    Start,
    /// Died (killed, crashed) rather than being stopped.
    Death,
    /// Replaced on purpose (`--max-tasks`, `--max-memory`, SIGHUP, a timeout, a revocation).
    Recycle,
}

/// Count a worker change (the pool calls it; the metrics read the counts).
pub fn count_worker(change: WorkerChange) {
    let c = match change {
        WorkerChange::Start => &WORKER_STARTS,
        WorkerChange::Death => &WORKER_DEATHS,
        WorkerChange::Recycle => &WORKER_RECYCLES,
    };
    c.fetch_add(1, Ordering::Relaxed);
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
    series: Mutex<HashMap<String, HashMap<String, Series>>>,
    worker_seen: Mutex<[u64; 3]>,
    /// Queues given a gauge so far.
    queues_seen: Mutex<std::collections::BTreeSet<String>>,
    /// When the metrics were last scraped (ms since the epoch; 0: never).
    scraped_ms: AtomicU64,
    writes: Family<Labels, Histogram>,
    write_errors: Family<Labels, Counter>,
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
            series: Mutex::new(HashMap::new()),
            worker_seen: Mutex::new([0; 3]),
            queues_seen: Mutex::new(Default::default()),
            scraped_ms: AtomicU64::new(0),
            writes,
            write_errors,
        }
    }

    /// Count an attempt's outcome (an index in [`MinuteStats::NAMES`], as the observer
    /// counts it).
    pub fn on_outcome(&self, e: &Event, outcome: usize) {
        let Some(&name) = MinuteStats::NAMES.get(outcome) else {
            return;
        };
        let mut series = self.series.lock();
        let by_queue = match series.get_mut(e.task.as_str()) {
            Some(q) => q,
            None => series.entry(e.task.clone()).or_default(),
        };
        let s = match by_queue.get_mut(e.queue.as_str()) {
            Some(s) => s,
            None => {
                let labels = vec![("task", e.task.clone()), ("queue", e.queue.clone())];
                let duration = self.durations.get_or_create(&labels).clone();
                by_queue.entry(e.queue.clone()).or_insert(Series {
                    outcomes: Default::default(),
                    duration,
                })
            }
        };
        let counter = s.outcomes[outcome].get_or_insert_with(|| {
            let labels = vec![
                ("task", e.task.clone()),
                ("queue", e.queue.clone()),
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
                let mut known = self.queues_seen.lock();
                known.extend(served.iter().cloned());
                let mut all: HashMap<String, (u64, u64)> =
                    known.iter().map(|q| (q.clone(), (0, 0))).collect();
                for q in sizes {
                    known.insert(q.queue.clone());
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
        let now = [
            WORKER_STARTS.load(Ordering::Relaxed),
            WORKER_DEATHS.load(Ordering::Relaxed),
            WORKER_RECYCLES.load(Ordering::Relaxed),
        ];
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

/// The metrics server started by [`serve_metrics`]; dropping it stops the server.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept (on loopback when listening on every interface); the thread sees
        // the flag and ends.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serve `metrics` at `http://addr/metrics` from a thread of its own (one request at a time:
/// a scrape is small) until the returned server is dropped. A port of 0 picks a free one.
pub fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<MetricsServer> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::Config(format!("--metrics-bind {addr}: cannot listen: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("reading the metrics address", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("huey-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                if let Err(e) = stream.and_then(|s| answer(s, &metrics)) {
                    tracing::debug!("metrics request failed: {e}");
                }
            }
        })
        .map_err(|e| Error::io("starting the metrics thread", e))?;
    Ok(MetricsServer {
        addr: bound,
        stop,
        thread: Some(thread),
    })
}

/// Answer one HTTP request: `GET /metrics` gets the metrics, anything else a 404 or 405.
fn answer(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // The request head is read up to 16 KiB: a longer one is cut off, not buffered.
    let mut reader = BufReader::new(stream.try_clone()?.take(16 << 10));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Skip the headers (bounded: a request is small).
    let mut header = String::new();
    for _ in 0..100 {
        header.clear();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (_, "/metrics") => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
        _ => ("404 Not Found", "text/plain", "see /metrics\n".into()),
    };
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn serves_metrics_answers_other_requests_with_an_error_and_stops_when_dropped() {
        let server =
            serve_metrics("127.0.0.1:0".parse().unwrap(), Arc::new(Metrics::new())).unwrap();
        let addr = server.addr();
        let ok = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            ok.contains("application/openmetrics-text") && ok.ends_with("# EOF\n"),
            "{ok}"
        );
        assert!(get(addr, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // Garbage, a huge request line and an early hang-up do not stop the server.
        get(addr, "\u{0}\u{1}garbage\r\n\r\n");
        let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "x".repeat(1 << 20));
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(huge.as_bytes());
        drop(s);
        drop(TcpStream::connect(addr).unwrap());
        assert!(get(addr, "GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200"));
        drop(server);
        // The port is free again.
        TcpListener::bind(addr).unwrap();
    }
}
