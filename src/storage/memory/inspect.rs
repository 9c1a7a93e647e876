//! Inspection reads of the memory storage: counts, queue sizes, finding one task id.

use std::collections::BTreeMap;

use super::{Counts, Location, QueueSize, State};

/// Sizes of each part at `now` (ms).
pub(super) fn counts(st: &State, now: u64) -> Counts {
    let expired = st.leased.values().filter(|l| l.until_ms <= now).count() as u64;
    Counts {
        ready: st.ready.len() as u64 + expired,
        scheduled: st.schedule.len() as u64,
        in_flight: st.leased.len() as u64 - expired,
        results: st
            .results
            .values()
            .filter(|(_, exp)| exp.is_none_or(|e| e > now))
            .count() as u64,
        dead: st.dead.len() as u64,
    }
}

/// Ready and in-flight messages per queue at `now` (ms).
pub(super) fn sizes(st: &State, now: u64) -> Vec<QueueSize> {
    let mut out: BTreeMap<String, QueueSize> = BTreeMap::new();
    let mut add = |queue: &str, ready: bool| {
        let s = out.entry(queue.to_string()).or_insert_with(|| QueueSize {
            queue: queue.to_string(),
            ..QueueSize::default()
        });
        if ready {
            s.ready += 1;
        } else {
            s.in_flight += 1;
        }
    };
    for e in st.ready.values() {
        add(&e.queue, true);
    }
    for l in st.leased.values() {
        add(&l.entry.queue, l.until_ms <= now);
    }
    out.into_values().collect()
}

/// Where `id` is at `now` (ms): the place of highest [`Location::rank`].
pub(super) fn find(st: &State, id: &str, now: u64) -> Option<Location> {
    if let Some(l) = st.leased.values().find(|l| l.entry.id == id) {
        let e = &l.entry;
        if l.until_ms > now {
            return Some(Location::Leased {
                queue: e.queue.clone(),
                consumer: None,
                until_ms: l.until_ms,
                deliveries: e.deliveries,
                payload: e.payload.clone(),
            });
        }
        // An expired lease is ready again, at its old place.
        let key = (e.queue.clone(), std::cmp::Reverse(e.priority), l.seq);
        return Some(ready(st, &key, e, now));
    }
    if let Some((key, e)) = st.ready.iter().find(|(_, e)| e.id == id) {
        return Some(ready(st, key, e, now));
    }
    if let Some(((eta, _), r)) = st.schedule.iter().find(|(_, r)| r.id == id) {
        return Some(Location::Scheduled {
            eta_ms: *eta,
            payload: r.payload.clone(),
        });
    }
    st.dead
        .values()
        .rev()
        .find(|d| d.id == id)
        .map(|d| Location::Dead {
            queue: d.queue.clone(),
            error: d.error.clone(),
            at_ms: d.at_ms,
        })
}

/// A ready entry with its position: the ready entries of its queue before it, expired leases
/// (which are ready again at their old place) included.
fn ready(st: &State, key: &super::ReadyKey, e: &super::Entry, now: u64) -> Location {
    let queue = &key.0;
    let before = st
        .ready
        .range(..key.clone())
        .filter(|(k, _)| &k.0 == queue)
        .count();
    let expired = st
        .leased
        .values()
        .filter(|l| l.until_ms <= now && &l.entry.queue == queue)
        .filter(|l| (std::cmp::Reverse(l.entry.priority), l.seq) < (key.1, key.2))
        .count();
    Location::Ready {
        queue: queue.clone(),
        priority: e.priority,
        position: Some((before + expired) as u64),
        payload: e.payload.clone(),
    }
}
