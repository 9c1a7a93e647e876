//! In-process storage: for tests, immediate mode, and single-process apps that can lose their
//! queue on exit. Same semantics as the durable backends (leases, dead-lettering, batches).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

mod inspect;

use super::*;
use crate::clock::{ms, now_ms};
use crate::error::Result;

mod kv;
mod watch;

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    queue: String,
    priority: i32,
    payload: Vec<u8>,
    deliveries: u32,
}

#[derive(Debug)]
struct Leased {
    seq: u64,
    entry: Entry,
    token: u64,
    until_ms: u64,
}

type ReadyKey = (String, Reverse<i32>, u64);

#[derive(Default)]
struct State {
    seq: u64,
    ready: BTreeMap<ReadyKey, Entry>,
    leased: HashMap<u64, Leased>,
    schedule: BTreeMap<(u64, u64), Ready>,
    results: HashMap<String, (Vec<u8>, Option<u64>)>,
    kv: HashMap<(Ns, String), (Vec<u8>, Option<u64>)>,
    counters: HashMap<String, i64>,
    expiring: HashMap<String, (i64, u64)>,
    dead: BTreeMap<u64, DeadLetter>,
    chords: HashMap<String, Chord>,
}

/// One chord's bookkeeping (see [`ChordCount`]): each entry with its expiry (ms).
#[derive(Default)]
struct Chord {
    marks: HashMap<u32, u64>,
    items: HashMap<u32, (Vec<u8>, u64)>,
    count: Option<(u32, u64)>,
    /// When the last of its entries expires.
    until: u64,
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_ready(&mut self, r: Ready, deliveries: u32) {
        let seq = self.next_seq();
        self.ready.insert(
            (r.queue.clone(), Reverse(r.priority), seq),
            Entry {
                id: r.id,
                queue: r.queue,
                priority: r.priority,
                payload: r.payload,
                deliveries,
            },
        );
    }

    fn unlease(&mut self, l: Leased) {
        let key = (l.entry.queue.clone(), Reverse(l.entry.priority), l.seq);
        self.ready.insert(key, l.entry);
    }

    fn reclaim_expired(&mut self, now: u64) {
        let expired: Vec<u64> = self
            .leased
            .values()
            .filter(|l| l.until_ms <= now)
            .map(|l| l.seq)
            .collect();
        for seq in expired {
            if let Some(l) = self.leased.remove(&seq) {
                self.unlease(l);
            }
        }
    }

    fn add_dead(&mut self, id: String, queue: String, payload: Vec<u8>, error: String) {
        let seq = self.next_seq();
        self.dead.insert(
            seq,
            DeadLetter {
                key: seq.to_string(),
                id,
                queue,
                payload,
                error,
                at_ms: now_ms(),
            },
        );
    }

    /// Count a chord member; the callback when it was the last one.
    fn count_chord(&mut self, c: &ChordCount, now: u64) -> Option<Ready> {
        let ch = self.chords.entry(c.chord.clone()).or_default();
        if ch.marks.get(&c.index).is_some_and(|&exp| exp > now) {
            return None; // counted before: it ran twice
        }
        let exp = now.saturating_add(ms(c.ttl));
        ch.until = ch.until.max(exp);
        ch.marks.insert(c.index, exp);
        ch.items.insert(c.index, (c.outcome.clone(), exp));
        let count = match ch.count {
            Some((n, until)) if until > now => (n + 1, until),
            _ => (1, exp),
        };
        ch.count = Some(count);
        if count.0 != c.size {
            return None;
        }
        let items = &ch.items;
        let ready = c.callback.ready((0..c.size).map(|i| {
            items
                .get(&i)
                .filter(|(_, exp)| *exp > now)
                .map(|(v, _)| v.as_slice())
        }));
        // The marks stay until they expire, so a member that runs again is not counted.
        ch.items.clear();
        ch.count = None;
        Some(ready)
    }

    /// Write one batch if its lease (if any) is held; returns whether it was written.
    fn apply(&mut self, batch: &Batch, now: u64) -> bool {
        let claim = batch.claim.as_ref().map(|c| (Ns::Claims, c.key.clone()));
        if claim
            .as_ref()
            .is_some_and(|k| State::live(self.kv.get(k), now).is_some())
        {
            return false; // claimed before
        }
        if let Some(l) = &batch.lease {
            let held = parse_lease(l)
                .filter(|(seq, token)| self.leased.get(seq).is_some_and(|e| e.token == *token));
            let Some((seq, _)) = held else {
                return false; // fenced off: the lease is gone
            };
            self.leased.remove(&seq);
        }
        if let (Some(k), Some(c)) = (claim, &batch.claim) {
            let exp = now.saturating_add(ms(c.ttl));
            self.kv.insert(k, (b"1".to_vec(), Some(exp)));
        }
        for r in &batch.enqueue {
            self.push_ready(r.clone(), 0);
        }
        for s in &batch.schedule {
            let seq = self.next_seq();
            self.schedule.insert((s.eta_ms, seq), s.ready.clone());
        }
        for r in &batch.results {
            self.results
                .insert(r.id.clone(), (r.value.clone(), expiry(r.ttl)));
        }
        for d in &batch.dead {
            self.add_dead(
                d.id.clone(),
                d.queue.clone(),
                d.payload.clone(),
                d.error.clone(),
            );
        }
        for c in &batch.chords {
            if let Some(r) = self.count_chord(c, now) {
                self.push_ready(r, 0);
            }
        }
        for key in &batch.release {
            self.kv.remove(&(Ns::Claims, key.clone()));
        }
        true
    }

    fn live(v: Option<&(Vec<u8>, Option<u64>)>, now: u64) -> Option<&Vec<u8>> {
        v.filter(|(_, exp)| exp.is_none_or(|e| e > now))
            .map(|(v, _)| v)
    }
}

fn parse_lease(l: &Lease) -> Option<(u64, u64)> {
    let (a, b) = l.0.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn expiry(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| now_ms().saturating_add(ms(t)))
}

/// Storage in this process's memory.
#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<State>,
    changed: Condvar,
    applied: super::applied::Applied,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    fn take_ready(st: &mut State, req: &DequeueRequest, now: u64) -> Vec<Delivery> {
        let mut out = Vec::new();
        for q in &req.queues {
            while out.len() < req.max {
                let lo = (q.clone(), Reverse(i32::MAX), 0);
                let Some(key) = st.ready.range(lo..).next().map(|(k, _)| k.clone()) else {
                    break;
                };
                if &key.0 != q {
                    break;
                }
                let mut entry = st.ready.remove(&key).expect("key just seen");
                if entry.deliveries >= req.max_deliveries {
                    let e = &entry;
                    let buried = chord::overdue(&e.id, &e.queue, &e.payload, e.deliveries, now);
                    st.apply(&buried, now);
                    continue;
                }
                entry.deliveries += 1;
                let token = st.next_seq();
                out.push(Delivery {
                    lease: Lease(format!("{}:{}", key.2, token)),
                    queue: entry.queue.clone(),
                    payload: entry.payload.clone(),
                    deliveries: entry.deliveries,
                });
                st.leased.insert(
                    key.2,
                    Leased {
                        seq: key.2,
                        entry,
                        token,
                        until_ms: now.saturating_add(ms(req.lease)),
                    },
                );
            }
        }
        out
    }
}

impl Queue for MemoryStorage {
    fn apply_all(&self, batches: &[Batch]) -> Result<Vec<bool>> {
        self.applied.apply_all(batches, |batches| {
            let mut st = self.state.lock();
            let now = now_ms();
            if batches.iter().any(|b| !b.chords.is_empty()) {
                st.chords.retain(|_, ch| ch.until > now);
            }
            let written = batches.iter().map(|b| st.apply(b, now)).collect();
            drop(st);
            self.changed.notify_all();
            Ok(written)
        })
    }

    fn dequeue(&self, req: &DequeueRequest) -> Result<Vec<Delivery>> {
        let deadline = deadline(req.wait);
        let mut st = self.state.lock();
        loop {
            let now = now_ms();
            st.reclaim_expired(now);
            let out = Self::take_ready(&mut st, req, now);
            if !out.is_empty() || Instant::now() >= deadline {
                return Ok(out);
            }
            // Wake on writes; also re-check leases at least every 50 ms.
            let step = (deadline - Instant::now()).min(Duration::from_millis(50));
            self.changed.wait_for(&mut st, step);
        }
    }

    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        let mut st = self.state.lock();
        let until = now_ms().saturating_add(ms(lease));
        Ok(leases
            .iter()
            .map(|l| {
                let Some((seq, token)) = parse_lease(l) else {
                    return false;
                };
                match st.leased.get_mut(&seq).filter(|e| e.token == token) {
                    Some(e) => {
                        e.until_ms = until;
                        true
                    }
                    None => false,
                }
            })
            .collect())
    }

    fn release(&self, leases: &[Lease], started: bool) -> Result<()> {
        let mut st = self.state.lock();
        for l in leases {
            if let Some((seq, token)) = parse_lease(l) {
                if st.leased.get(&seq).is_some_and(|e| e.token == token) {
                    let mut l = st.leased.remove(&seq).expect("checked");
                    if !started {
                        l.entry.deliveries = l.entry.deliveries.saturating_sub(1);
                    }
                    st.unlease(l);
                }
            }
        }
        drop(st);
        self.changed.notify_all();
        Ok(())
    }
}

impl Schedule for MemoryStorage {
    fn promote_due(&self, now_ms: u64, max: usize) -> Result<usize> {
        let mut st = self.state.lock();
        let due: Vec<(u64, u64)> = st
            .schedule
            .range(..(now_ms + 1, 0))
            .take(max)
            .map(|(k, _)| *k)
            .collect();
        for k in &due {
            let r = st.schedule.remove(k).expect("key just seen");
            st.push_ready(r, 0);
        }
        drop(st);
        if !due.is_empty() {
            self.changed.notify_all();
        }
        Ok(due.len())
    }

    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize> {
        let mut st = self.state.lock();
        let now = now_ms;
        let st = &mut *st;
        let mut n = purge(&mut st.results, |(_, e)| e.is_some_and(|e| e <= now), max);
        n += purge(&mut st.kv, |(_, e)| e.is_some_and(|e| e <= now), max - n);
        n += purge(&mut st.expiring, |(_, e)| *e <= now, max - n);
        n += purge(&mut st.chords, |c| c.until <= now, max - n);
        Ok(n)
    }
}

/// Delete up to `max` entries of `map` that are `expired`; returns how many. (A scan: this
/// backend holds what one process holds, and the purge runs once a minute.)
fn purge<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    expired: impl Fn(&V) -> bool,
    max: usize,
) -> usize {
    let gone: Vec<K> = map
        .iter()
        .filter(|(_, v)| expired(v))
        .map(|(k, _)| k.clone())
        .take(max)
        .collect();
    for k in &gone {
        map.remove(k);
    }
    gone.len()
}

impl Results for MemoryStorage {
    fn result(&self, id: &str, take: bool) -> Result<Option<Vec<u8>>> {
        let mut st = self.state.lock();
        let now = now_ms();
        let value = State::live(st.results.get(id), now).cloned();
        if take && st.results.contains_key(id) {
            st.results.remove(id);
        }
        Ok(value)
    }

    fn wait_result(&self, id: &str, take: bool, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = deadline(timeout);
        let mut st = self.state.lock();
        loop {
            let now = now_ms();
            if let Some(v) = State::live(st.results.get(id), now).cloned() {
                if take {
                    st.results.remove(id);
                }
                return Ok(Some(v));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            let step = deadline - Instant::now();
            self.changed.wait_for(&mut st, step);
        }
    }

    fn watch_results(&self, _: &str, pending: Pending, timeout: Duration) -> Result<Vec<String>> {
        self.watch(pending, timeout)
    }

    fn delete_result(&self, id: &str) -> Result<bool> {
        Ok(self.state.lock().results.remove(id).is_some())
    }

    fn list_results(&self, after: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let now = now_ms();
        let st = self.state.lock();
        let mut live: Vec<(&String, &Vec<u8>)> = st
            .results
            .iter()
            .filter(|(id, (_, exp))| id.as_str() > after && exp.is_none_or(|e| e > now))
            .map(|(id, (v, _))| (id, v))
            .collect();
        live.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Ok(live
            .into_iter()
            .take(limit)
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect())
    }
}

impl Inspect for MemoryStorage {
    fn backend(&self) -> &'static str {
        "memory"
    }

    fn locate(&self, id: &str) -> Result<Option<Location>> {
        Ok(inspect::find(&self.state.lock(), id, now_ms()))
    }

    fn queue_sizes(&self) -> Result<Vec<QueueSize>> {
        Ok(inspect::sizes(&self.state.lock(), now_ms()))
    }

    fn counts(&self) -> Result<Counts> {
        Ok(inspect::counts(&self.state.lock(), now_ms()))
    }

    fn pending(&self, limit: usize) -> Result<Vec<Vec<u8>>> {
        let st = self.state.lock();
        // Across queues: by priority, then FIFO (the ready map is keyed by queue first).
        let mut order: Vec<_> = st
            .ready
            .iter()
            .map(|((_, p, seq), e)| (*p, *seq, e))
            .collect();
        order.sort_unstable_by_key(|(p, seq, _)| (*p, *seq));
        Ok(order
            .into_iter()
            .take(limit)
            .map(|(_, _, e)| e.payload.clone())
            .collect())
    }

    fn scheduled(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let st = self.state.lock();
        Ok(st
            .schedule
            .iter()
            .take(limit)
            .map(|((eta, _), r)| (*eta, r.payload.clone()))
            .collect())
    }

    fn dead(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self
            .state
            .lock()
            .dead
            .values()
            .take(limit)
            .cloned()
            .collect())
    }

    fn retry_dead(&self, keys: Option<&[String]>) -> Result<usize> {
        let mut st = self.state.lock();
        let chosen: Vec<u64> = match keys {
            None => st.dead.keys().copied().collect(),
            Some(keys) => keys.iter().filter_map(|k| k.parse().ok()).collect(),
        };
        let mut n = 0;
        for k in chosen {
            if let Some(d) = st.dead.remove(&k) {
                let priority = priority_of(&d.payload);
                st.push_ready(
                    Ready {
                        id: d.id,
                        queue: d.queue,
                        priority,
                        payload: d.payload,
                    },
                    0,
                );
                n += 1;
            }
        }
        drop(st);
        self.changed.notify_all();
        Ok(n)
    }

    fn flush(&self, what: Flush) -> Result<()> {
        let mut st = self.state.lock();
        // Unique tasks' claims go with their messages (those of the part flushed only).
        let mut ids: Vec<String> = Vec::new();
        if what.queue {
            ids.extend(st.ready.values().map(|e| e.id.clone()));
            ids.extend(st.leased.values().map(|l| l.entry.id.clone()));
        }
        if what.schedule {
            ids.extend(st.schedule.values().map(|r| r.id.clone()));
        }
        for id in ids {
            st.kv
                .remove(&(Ns::Claims, crate::message::unique_claim(&id)));
        }
        if what.queue {
            st.ready.clear();
            st.leased.clear();
        }
        if what.schedule {
            st.schedule.clear();
        }
        if what.results {
            st.results.clear();
        }
        if what.locks {
            st.kv.retain(|(ns, _), _| *ns != Ns::Locks);
        }
        if what.kv {
            st.kv.retain(|(ns, _), _| *ns == Ns::Locks);
            st.counters.clear();
            st.expiring.clear();
            st.chords.clear();
        }
        if what.dead {
            st.dead.clear();
        }
        Ok(())
    }
}
