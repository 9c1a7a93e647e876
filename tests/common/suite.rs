//! Helpers for storage tests: entries, requests and one-line writes. The cases every backend
//! runs are in `cases/`.

use std::thread;
use std::time::Duration;

use huey::storage::{
    Batch, DeadPut, Delivery, DequeueRequest, Lease, Ready, ResultPut, Scheduled, Storage,
};

pub const SHORT_LEASE: Duration = Duration::from_millis(200);
pub const LONG_LEASE: Duration = Duration::from_secs(60);
/// A generous bound for "woke up promptly" on a noisy machine.
pub const PROMPTLY: Duration = Duration::from_secs(3);

pub fn ready(id: &str, queue: &str, priority: i32) -> Ready {
    Ready {
        id: id.to_string(),
        queue: queue.to_string(),
        priority,
        payload: id.as_bytes().to_vec(),
    }
}

pub fn enqueue(s: &dyn Storage, items: Vec<Ready>) {
    s.apply(&Batch {
        enqueue: items,
        ..Batch::default()
    })
    .unwrap();
}

pub fn request(consumer: &str, queues: &[&str], max: usize, lease: Duration) -> DequeueRequest {
    DequeueRequest {
        consumer: consumer.to_string(),
        queues: queues.iter().map(|q| q.to_string()).collect(),
        max,
        lease,
        wait: Duration::ZERO,
        max_deliveries: 10,
    }
}

pub fn waiting(mut req: DequeueRequest, wait: Duration) -> DequeueRequest {
    req.wait = wait;
    req
}

pub fn names(ds: &[Delivery]) -> Vec<String> {
    ds.iter()
        .map(|d| String::from_utf8(d.payload.clone()).unwrap())
        .collect()
}

/// Acknowledge deliveries (each one batch); returns how many were still held.
pub fn ack(s: &dyn Storage, leases: Vec<Lease>) -> usize {
    let batches: Vec<Batch> = leases.into_iter().map(Batch::ack).collect();
    let written = s.apply_all(&batches).unwrap();
    written.into_iter().filter(|w| *w).count()
}

pub fn put_result(s: &dyn Storage, id: &str, value: &[u8], ttl: Option<Duration>) {
    s.apply(&Batch {
        results: vec![ResultPut {
            id: id.to_string(),
            value: value.to_vec(),
            ttl,
        }],
        ..Batch::default()
    })
    .unwrap();
}

pub fn schedule(s: &dyn Storage, id: &str, eta_ms: u64) {
    s.apply(&Batch {
        schedule: vec![Scheduled {
            eta_ms,
            ready: ready(id, "default", 0),
        }],
        ..Batch::default()
    })
    .unwrap();
}

pub fn bury(s: &dyn Storage, id: &str, error: &str) {
    s.apply(&Batch {
        dead: vec![DeadPut {
            id: id.to_string(),
            queue: "default".to_string(),
            payload: id.as_bytes().to_vec(),
            error: error.to_string(),
        }],
        ..Batch::default()
    })
    .unwrap();
}

pub fn one(s: &dyn Storage, consumer: &str, lease: Duration) -> Delivery {
    let mut ds = s
        .dequeue(&request(consumer, &["default"], 1, lease))
        .unwrap();
    assert_eq!(ds.len(), 1, "expected one delivery");
    ds.remove(0)
}

pub fn sleep_past(d: Duration) {
    thread::sleep(d + Duration::from_millis(100));
}

/// The earliest eta in the schedule.
pub fn next_eta(s: &dyn Storage) -> Option<u64> {
    s.scheduled(1).unwrap().first().map(|(eta, _)| *eta)
}
