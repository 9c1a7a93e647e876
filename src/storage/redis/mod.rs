//! Redis storage: one Redis shared by many `hueyd` consumers on many hosts.
//!
//! # Design
//!
//! Each named queue is a sorted set of message sequence numbers scored by `-priority`; members
//! are zero-padded sequence numbers, so equal scores fall back to their byte order and each
//! priority level is FIFO. Any `i32` priority is exact. A message's metadata and payload are
//! packed into one `msg` hash field keyed by the sequence number. The delivery count rides in the
//! sorted-set member: `<seq>.<deliveries>` in its queue while ready (the seq is fixed width, so
//! FIFO order within a priority still holds), `<seq>.<deliveries>.<token>` in `leases` while
//! leased. Nothing else per message changes while it moves between queue and lease.
//!
//! Every operation is one Lua script (one round trip, atomic, loaded once and sent by
//! `EVALSHA`):
//! - **dequeue** first moves expired leases back to their queue (at their old place), then
//!   takes up to `max` members from the front of its queues, dead-letters the ones already
//!   delivered `max_deliveries` times, and leases the rest: member `<seq>.<deliveries+1>.<token>` in the
//!   `leases` sorted set, scored by expiry. That member is the lease handed out, so an ack or
//!   extend is a membership check (`ZMSCORE`, `ZADD XX`), and a stale ack (after the lease
//!   expired and the message went to someone else, under a new token) matches nothing and is
//!   ignored. Expired leases go back to their queue as `<seq>.<deliveries>`.
//!
//! The scripts work on whole batches with variadic commands (`ZRANGE`/`ZREMRANGEBYRANK`, one
//! `HMGET`, one `ZMSCORE`, one multi-field `HSET`, one `ZADD`/`ZREM`/`HDEL`, `INCRBY` reserving a
//! run of sequence numbers), so the commands per call hardly depend on the batch size. Needs
//! Redis 6.2 or later (`ZMSCORE`).
//! - **apply** writes [`Batch`]es (acks, enqueues, schedule entries, results, dead letters,
//!   chord counts) in one script, each only while its lease is held, so an outcome is never
//!   half written nor written twice.
//! - **promote_due** moves due schedule entries (a sorted set by eta) to their queue.
//!
//! Lease and TTL times come from the Redis server's clock (`TIME`), so consumers on hosts with
//! skewed clocks agree on when a lease expired.
//!
//! Streams consumer groups were the alternative: they give delivery counts and `XAUTOCLAIM`,
//! but no priorities (one stream per level at best), acks by entry id that cannot tell a stale
//! delivery from the current one, and trimming and dead-lettering would need extra round trips.
//! The sorted-set design gives exact priorities, token-checked leases and atomic batches.
//!
//! **Blocking without polling.** Producers `LPUSH` a token to a per-queue notification list
//! (`n:<queue>`, trimmed to 64 entries) in the same script that makes messages ready. A consumer
//! that found nothing `BLPOP`s the lists of its queues, up to its wait or until the earliest lease
//! expires, and runs the dequeue script again when woken. A stale token only costs one empty
//! dequeue. Result writers likewise push to `w:<id>` (expiring after 10 s, long enough to cover
//! the gap between a waiter's first read and its `BLPOP`); `wait_result` blocks on it.
//!
//! **Keys.** Every key starts with `huey:{app}:`; the hash tag puts all of one app's keys in
//! one Redis Cluster slot (scripts build per-queue, per-result and per-kv-key names from that
//! prefix), and several apps can share one server. Key-value entries are `kv:<ns>:<key>` strings
//! with Redis TTLs plus a per-namespace index sorted by expiry (`kvi:<ns>`), so `list` reads one
//! index and never scans the keyspace; results are `r:<id>` strings indexed the same way, which
//! keeps `counts` to a few `ZCARD`/`ZCOUNT`s, and also in `rids`, a sorted set of their ids all
//! of score 0, which `list_results` pages through in id order with `ZRANGEBYLEX … LIMIT`. A chord's bookkeeping is `ch:<chord>:…` keys with
//! Redis TTLs (marks, items, count), indexed in `chords` so a flush finds them.
//!
//! **Connections.** A small pool (`conn.rs`). A lost connection is an
//! [`Error::Storage`] and the next call reconnects. Outcomes are fenced by their lease token,
//! so a caller may send again a batch whose reply was lost: what was written is fenced off.
//!
//! URLs: `redis://[user:pass@]host[:port][/db]`, `rediss://…` (TLS, webpki roots) and
//! `redis+unix:///path/to/socket[?db=N]`.

mod conn;
mod inspect;
mod kv;
mod locate;
mod packed;
mod results;
mod scripts;
mod watch;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ::redis::{Cmd, Connection, ErrorKind, ToRedisArgs, Value};

use self::conn::Pool;
use self::packed::{lease_deliveries, next_delivery, pack, split_packed};
use self::scripts::{Lua, Scripts, KEY_NAMES};
use super::*;
use crate::clock::ms;
use crate::error::{Error, Result};

/// Storage in a Redis server, shared by every consumer of one app.
pub struct RedisStorage {
    pool: Pool,
    prefix: String,
    keys: Vec<String>,
    scripts: Scripts,
    applied: super::applied::Applied,
    /// Leases of outcomes sent in apply calls whose replies were lost: the calls' tokens and
    /// the outcomes' positions in them, and when.
    uncertain: parking_lot::Mutex<HashMap<String, Vec<EarlierCall>>>,
}

/// An apply call whose reply was lost, as one outcome knows it: the call's token, the
/// outcome's position in it (from 1), and when it was sent.
type EarlierCall = (String, usize, Instant);

impl RedisStorage {
    /// Open the Redis at `url` for the app `app` (its keys are prefixed `huey:{app}:`). Checks
    /// that the server answers.
    pub fn open(url: &str, app: &str) -> Result<RedisStorage> {
        let bad = |reason: String| Error::StorageUrl {
            url: url.to_string(),
            reason,
        };
        if app.is_empty() {
            return Err(bad("the app name must not be empty for Redis".into()));
        }
        let client = ::redis::Client::open(super::url::redis_client_url(url))
            .map_err(|e| bad(format!("{e}; {}", super::url::REDIS_FORMS)))?;
        let storage = RedisStorage::with_client(client, app);
        storage
            .pool
            .run(true, |con| ::redis::cmd("PING").query::<String>(con))?;
        Ok(storage)
    }

    fn with_client(client: ::redis::Client, app: &str) -> RedisStorage {
        let prefix = format!("huey:{{{app}}}:");
        let keys = KEY_NAMES.iter().map(|k| format!("{prefix}{k}")).collect();
        RedisStorage {
            pool: Pool::new(client),
            prefix,
            keys,
            scripts: Scripts::new(),
            applied: Default::default(),
            uncertain: Default::default(),
        }
    }

    /// The key prefix of this app (`huey:{app}:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Prepare a script call with the fixed keys and the prefix.
    fn call<'a>(&self, script: &'a Lua) -> Call<'a> {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(&script.hash)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.prefix);
        Call { script, cmd }
    }

    /// Run a script call: one `EVALSHA` round trip (plus a `SCRIPT LOAD` and a retry when the
    /// server does not know the script yet).
    fn invoke<T: ::redis::FromRedisValue>(&self, idempotent: bool, call: &Call<'_>) -> Result<T> {
        self.pool.run(idempotent, |con| match call.cmd.query(con) {
            Err(e) if e.kind() == ErrorKind::Server(::redis::ServerErrorKind::NoScript) => {
                ::redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(&call.script.code)
                    .exec(con)?;
                call.cmd.query(con)
            }
            other => other,
        })
    }

    fn corrupt(&self, what: &str) -> Error {
        Error::Storage {
            backend: "redis",
            message: format!(
                "unexpected reply from Redis at {} for {what} (is another program writing under {}?)",
                self.pool.addr(),
                self.prefix
            ),
        }
    }

    /// One dequeue call: the hint (ms until the first lease expires, -1: none), the deliveries,
    /// and whether any revocation is stored (read only when something was leased).
    fn dequeue_once(&self, req: &DequeueRequest) -> Result<(i64, Vec<Delivery>, bool)> {
        let mut inv = self.call(&self.scripts.dequeue);
        inv.arg(req.max.min(i64::MAX as usize) as i64)
            .arg(capped_ms(req.lease))
            .arg(req.max_deliveries);
        for q in &req.queues {
            inv.arg(q);
        }
        let reply: Vec<Value> = self.invoke(false, &inv)?;
        let mut it = reply.into_iter();
        let (Some(hint), Some(blob), Some(revoked), None) = (
            it.next().and_then(int),
            it.next().and_then(bytes),
            it.next().and_then(int),
            it.next(),
        ) else {
            return Err(self.corrupt("dequeue"));
        };
        let mut out = Vec::new();
        let mut overdue = Vec::new();
        let mut rest = &blob[..];
        while !rest.is_empty() {
            let Some((qi, lease, packed)) = next_delivery(&mut rest) else {
                return Err(self.corrupt("dequeue"));
            };
            let deliveries = lease_deliveries(&lease).ok_or_else(|| self.corrupt("dequeue"))?;
            let (id, payload) = split_packed(packed);
            let queue = usize::try_from(i64::from(qi).abs() - 1)
                .ok()
                .and_then(|i| req.queues.get(i))
                .ok_or_else(|| self.corrupt("dequeue"))?;
            let d = Delivery {
                lease: Lease(lease),
                queue: queue.clone(),
                payload,
                deliveries,
            };
            if qi < 0 {
                overdue.push((id, d));
            } else {
                out.push(d);
            }
        }
        self.bury(&overdue);
        Ok((hint, out, revoked != 0))
    }

    /// Dead-letter messages delivered too often (leased to us by the dequeue script for this),
    /// each with its chord count, in batches fenced by their leases: a crash or a storage error
    /// here leaves them leased until their leases expire, and the next dequeue does it again.
    fn bury(&self, overdue: &[(String, Delivery)]) {
        if overdue.is_empty() {
            return;
        }
        let now = crate::clock::now_ms();
        let batches: Vec<Batch> = overdue
            .iter()
            .map(|(id, d)| Batch {
                lease: Some(d.lease.clone()),
                ..chord::overdue(id, &d.queue, &d.payload, d.deliveries, now)
            })
            .collect();
        // An error is left to the lease's expiry (see above); nothing is lost.
        let _ = self.apply_all(&batches);
    }

    /// One apply call. Its answers are recorded on the server under a fresh token; when its
    /// reply is lost, the leases it carried are remembered with that token, and a later call
    /// that carries one of them again asks the script to look the record up (see `APPLY`).
    fn apply_sent(&self, batches: &[&Batch]) -> Result<Vec<bool>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut inv = self.call(&self.scripts.apply);
        inv.arg(&token);
        {
            let uncertain = self.uncertain.lock();
            let checks: Vec<(usize, &EarlierCall)> = if uncertain.is_empty() {
                Vec::new()
            } else {
                batches
                    .iter()
                    .enumerate()
                    .filter_map(|(b, batch)| Some((b, uncertain.get(&batch.lease.as_ref()?.0)?)))
                    .flat_map(|(b, earlier)| earlier.iter().map(move |e| (b, e)))
                    .collect()
            };
            inv.arg(checks.len());
            for (b, (t, pos, _)) in checks {
                inv.arg(b + 1).arg(t).arg(*pos);
            }
        }
        inv.arg(batches.len());
        for b in batches {
            inv.arg(b.lease.as_ref().map(|l| l.0.as_str()).unwrap_or(""));
        }
        let kinds: String = batches
            .iter()
            .map(|b| if ack_only(b) { '0' } else { '1' })
            .collect();
        inv.arg(kinds);
        let mut packed = Vec::new();
        for b in batches.iter().filter(|b| !ack_only(b)) {
            push_batch(&mut inv, b, &mut packed);
        }
        // Not resent by the pool on a lost reply: the caller's resend is another call.
        // One `1` or `0` per batch: written or fenced off.
        let reply: Result<Vec<u8>> = self.invoke(false, &inv);
        let leases = batches.iter().filter_map(|b| b.lease.as_ref());
        let mut uncertain = self.uncertain.lock();
        match reply {
            Ok(written)
                if written.len() == batches.len()
                    && written.iter().all(|w| matches!(w, b'0' | b'1')) =>
            {
                if !uncertain.is_empty() {
                    for l in leases {
                        uncertain.remove(&l.0);
                    }
                }
                Ok(written.into_iter().map(|w| w == b'1').collect())
            }
            Ok(_) => Err(self.corrupt("apply")),
            Err(e) => {
                let now = Instant::now();
                let keep = Duration::from_millis(scripts::CALL_RECORD_MS);
                uncertain.retain(|_, calls| {
                    calls.retain(|c| now.duration_since(c.2) < keep);
                    !calls.is_empty()
                });
                for (pos, b) in batches.iter().enumerate() {
                    if let Some(l) = &b.lease {
                        let calls = uncertain.entry(l.0.clone()).or_default();
                        calls.push((token.clone(), pos + 1, now));
                    }
                }
                Err(e)
            }
        }
    }

    /// Block until a notification list of these queues gets a token, or `block` passes.
    fn wait_for_queues(&self, queues: &[String], block: Duration) -> Result<()> {
        let keys: Vec<String> = queues
            .iter()
            .map(|q| format!("{}n:{q}", self.prefix))
            .collect();
        let secs = block.as_secs_f64().max(0.001);
        self.pool.run_blocking(block, |con: &mut Connection| {
            ::redis::cmd("BLPOP")
                .arg(&keys)
                .arg(secs)
                .query::<Option<(String, String)>>(con)
        })?;
        Ok(())
    }
}

/// A script call being prepared: `EVALSHA` with the fixed keys and the prefix, then arguments.
struct Call<'a> {
    script: &'a Lua,
    cmd: Cmd,
}

impl Call<'_> {
    fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.cmd.arg(arg);
        self
    }
}

/// Leases as arguments (after their count when `counted`). A lease is the `leases` member
/// itself, so one that is not held by anyone (stale, or not a lease at all) matches nothing.
fn push_leases(call: &mut Call<'_>, leases: &[Lease], counted: bool) {
    if counted {
        call.arg(leases.len());
    }
    for l in leases {
        call.arg(&l.0);
    }
}

/// One batch that writes more than its ack as arguments of the apply script (its lease and
/// kind go before, with the others'): its claim key ("" for none) and TTL, then its sections.
fn push_batch(inv: &mut Call<'_>, batch: &Batch, packed: &mut Vec<u8>) {
    match &batch.claim {
        Some(c) => inv.arg(&c.key).arg(capped_ms(c.ttl)),
        None => inv.arg("").arg(0),
    };
    inv.arg(batch.enqueue.len());
    for r in &batch.enqueue {
        pack(packed, r);
        inv.arg(&r.queue)
            .arg(-i64::from(r.priority))
            .arg(&packed[..]);
    }
    inv.arg(batch.schedule.len());
    for s in &batch.schedule {
        pack(packed, &s.ready);
        inv.arg(s.eta_ms).arg(&packed[..]);
    }
    inv.arg(batch.results.len());
    for r in &batch.results {
        let ttl = r.ttl.map(|t| capped_ms(t).to_string()).unwrap_or_default();
        inv.arg(&r.id).arg(ttl).arg(&r.value);
    }
    inv.arg(batch.dead.len());
    for d in &batch.dead {
        inv.arg(&d.id).arg(&d.queue).arg(&d.error).arg(&d.payload);
    }
    inv.arg(batch.chords.len());
    for c in &batch.chords {
        let cb = &c.callback;
        inv.arg(&c.chord)
            .arg(c.index)
            .arg(c.size)
            .arg(capped_ms(c.ttl))
            .arg(&c.outcome)
            .arg(&cb.id)
            .arg(&cb.queue)
            .arg(cb.priority)
            .arg(&cb.payload_head)
            .arg(&cb.payload_tail)
            .arg(&cb.args_head)
            .arg(&cb.args_tail)
            .arg(&cb.missing);
    }
    inv.arg(batch.release.len());
    for key in &batch.release {
        inv.arg(key);
    }
}

fn int(v: Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(i),
        Value::BulkString(b) => std::str::from_utf8(&b).ok()?.parse().ok(),
        _ => None,
    }
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn string(v: Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

impl Queue for RedisStorage {
    fn apply_all(&self, batches: &[Batch]) -> Result<Vec<bool>> {
        if batches.iter().all(Batch::is_empty) {
            return Ok(vec![true; batches.len()]);
        }
        self.applied
            .apply_all(batches, |batches| self.apply_sent(batches))
    }

    fn dequeue(&self, req: &DequeueRequest) -> Result<Vec<Delivery>> {
        Ok(self.dequeue_seeing_revocations(req)?.0)
    }

    fn dequeue_seeing_revocations(
        &self,
        req: &DequeueRequest,
    ) -> Result<(Vec<Delivery>, Option<bool>)> {
        if req.max == 0 || req.queues.is_empty() {
            return Ok((Vec::new(), None));
        }
        let deadline = deadline(req.wait);
        loop {
            let (hint, out, revoked) = self.dequeue_once(req)?;
            let now = Instant::now();
            if !out.is_empty() || now >= deadline {
                return Ok((out, Some(revoked)));
            }
            let mut block = deadline - now;
            if hint >= 0 {
                block = block.min(Duration::from_millis(hint as u64 + 1));
            }
            self.wait_for_queues(&req.queues, block)?;
        }
    }

    fn extend(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.call(&self.scripts.extend);
        inv.arg(capped_ms(lease));
        push_leases(&mut inv, leases, false);
        let held: Vec<i64> = self.invoke(true, &inv)?;
        if held.len() != leases.len() {
            return Err(self.corrupt("extend"));
        }
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    fn release(&self, leases: &[Lease], started: bool) -> Result<()> {
        if leases.is_empty() {
            return Ok(());
        }
        let mut inv = self.call(&self.scripts.release);
        inv.arg(started as u8);
        push_leases(&mut inv, leases, false);
        let _: i64 = self.invoke(true, &inv)?;
        Ok(())
    }
}

impl Schedule for RedisStorage {
    fn promote_due(&self, now_ms: u64, max: usize) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let mut inv = self.call(&self.scripts.promote);
        inv.arg(now_ms).arg(max.min(i64::MAX as usize) as i64);
        let n: i64 = self.invoke(false, &inv)?;
        Ok(n.max(0) as usize)
    }

    fn purge_expired(&self, now_ms: u64, max: usize) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let mut inv = self.call(&self.scripts.purge);
        inv.arg(now_ms).arg(max.min(i64::MAX as usize) as i64);
        for ns in Ns::ALL {
            inv.arg(ns.as_str());
        }
        let n: i64 = self.invoke(true, &inv)?;
        Ok(n.max(0) as usize)
    }
}

/// A lease or TTL in whole milliseconds for the scripts: at least 1, at most a century (Lua
/// numbers are doubles and scores are formatted as integers; larger values would wrap).
fn capped_ms(d: Duration) -> u64 {
    ms(d).clamp(1, 100 * 365 * 86_400_000)
}

/// True when the batch writes nothing but its ack (or nothing at all).
fn ack_only(batch: &Batch) -> bool {
    batch.claim.is_none()
        && batch.enqueue.is_empty()
        && batch.schedule.is_empty()
        && batch.results.is_empty()
        && batch.dead.is_empty()
        && batch.chords.is_empty()
        && batch.release.is_empty()
}
