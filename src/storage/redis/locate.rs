//! Finding one task id's message in a Redis storage, and the sizes of each queue, for
//! inspection.
//!
//! Messages are keyed by sequence number, not by id, so finding an id scans the message hashes
//! with `HSCAN` (a page at a time: the server is never blocked, and the enqueue and ack paths
//! pay nothing for an index). Once the message is found, its place is told by a few direct
//! reads: its queue member's rank, its lease member, its schedule entry.

use ::redis::Value;

use super::{bytes, string, RedisStorage};
use crate::error::Result;
use crate::storage::{Location, QueueSize};

/// Key indexes in [`super::KEY_NAMES`].
const LEASES: usize = 0;
const MSG: usize = 1;
const QUEUES: usize = 3;
const SCHEDULE: usize = 4;
const SCHED_MSG: usize = 5;
const DEAD: usize = 6;
const DEAD_INFO: usize = 7;
/// Delivery counts tried when looking for a ready member `<seq>.<deliveries>`.
const MOST_DELIVERIES: u32 = 64;
const PAGE: usize = 1000;

/// A packed message's head: priority, queue, id, payload.
fn unpack(m: &[u8]) -> Option<(i32, String, String, Vec<u8>)> {
    let mut parts = m.splitn(4, |&b| b == b'|');
    let num = |p: Option<&[u8]>| std::str::from_utf8(p?).ok()?.parse::<i64>().ok();
    let prio = num(parts.next())?;
    let ql = usize::try_from(num(parts.next())?).ok()?;
    let il = usize::try_from(num(parts.next())?).ok()?;
    let rest = parts.next()?;
    let queue = rest.get(..ql)?;
    let id = rest.get(ql..ql.checked_add(il)?)?;
    Some((
        i32::try_from(prio).ok()?,
        String::from_utf8(queue.to_vec()).ok()?,
        String::from_utf8(id.to_vec()).ok()?,
        rest.get(ql + il..)?.to_vec(),
    ))
}

impl RedisStorage {
    /// Scan hash `key` for a field whose value `matches`; the field and value.
    fn scan_hash(
        &self,
        key: usize,
        matches: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<(String, Vec<u8>)>> {
        let key = &self.keys[key];
        let mut cursor = "0".to_string();
        loop {
            let (next, page): (String, Vec<Value>) = self.pool.run(true, |con| {
                ::redis::cmd("HSCAN")
                    .arg(key)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query(con)
            })?;
            let mut it = page.into_iter();
            while let (Some(field), Some(value)) = (it.next(), it.next()) {
                let (Some(field), Some(value)) = (string(field), bytes(value)) else {
                    return Err(self.corrupt("locate"));
                };
                if matches(&value) {
                    return Ok(Some((field, value)));
                }
            }
            if next == "0" {
                return Ok(None);
            }
            cursor = next;
        }
    }

    /// Ready and in-flight messages per queue: a `ZCARD` per queue, and the live leases'
    /// queues read from their messages (in-flight messages are few: what consumers hold).
    pub(super) fn sizes(&self) -> Result<Vec<QueueSize>> {
        let queues: Vec<String> = self.pool.run(true, |con| {
            ::redis::cmd("SMEMBERS").arg(&self.keys[QUEUES]).query(con)
        })?;
        let mut queues: std::collections::BTreeMap<String, QueueSize> = queues
            .into_iter()
            .map(|q| {
                (
                    q.clone(),
                    QueueSize {
                        queue: q,
                        ..QueueSize::default()
                    },
                )
            })
            .collect();
        let names: Vec<&String> = queues.keys().collect();
        let (ready, leases): (Vec<u64>, Vec<(String, f64)>) = self.pool.run(true, |con| {
            let mut p = ::redis::pipe();
            for q in &names {
                p.cmd("ZCARD").arg(format!("{}q:{q}", self.prefix));
            }
            let ready: Vec<u64> = p.query(con)?;
            let leases = ::redis::cmd("ZRANGE")
                .arg(&self.keys[LEASES])
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(con)?;
            Ok((ready, leases))
        })?;
        let names: Vec<String> = names.into_iter().cloned().collect();
        for (q, n) in names.iter().zip(ready) {
            if let Some(s) = queues.get_mut(q) {
                s.ready = n;
            }
        }
        if !leases.is_empty() {
            let now = crate::clock::now_ms() as f64;
            let seqs: Vec<&str> = leases
                .iter()
                .map(|(m, _)| m.get(..16).unwrap_or(m))
                .collect();
            let packed: Vec<Option<Vec<u8>>> = self.pool.run(true, |con| {
                ::redis::cmd("HMGET")
                    .arg(&self.keys[MSG])
                    .arg(&seqs)
                    .query(con)
            })?;
            for ((_, until), m) in leases.iter().zip(packed) {
                let Some((_, queue, _, _)) = m.as_deref().and_then(unpack) else {
                    continue;
                };
                let s = queues.entry(queue.clone()).or_insert_with(|| QueueSize {
                    queue,
                    ..QueueSize::default()
                });
                if *until > now {
                    s.in_flight += 1;
                } else {
                    s.ready += 1;
                }
            }
        }
        Ok(queues.into_values().collect())
    }

    /// Where the message of task `id` is.
    pub(super) fn locate_id(&self, id: &str) -> Result<Option<Location>> {
        let is_id = |m: &[u8]| unpack(m).is_some_and(|(_, _, i, _)| i == id);
        if let Some((seq, packed)) = self.scan_hash(MSG, is_id)? {
            let (priority, queue, _, payload) =
                unpack(&packed).ok_or_else(|| self.corrupt("msg"))?;
            return self.place_of(&seq, queue, priority, payload).map(Some);
        }
        if let Some((seq, packed)) = self.scan_hash(SCHED_MSG, is_id)? {
            let (_, _, _, payload) = unpack(&packed).ok_or_else(|| self.corrupt("sched:msg"))?;
            let eta: Option<f64> = self.pool.run(true, |con| {
                ::redis::cmd("ZSCORE")
                    .arg(&self.keys[SCHEDULE])
                    .arg(&seq)
                    .query(con)
            })?;
            if let Some(eta) = eta {
                return Ok(Some(Location::Scheduled {
                    eta_ms: eta.max(0.0) as u64,
                    payload,
                }));
            }
        }
        self.locate_dead(id)
    }

    /// A message in `msg`: ready in its queue (at a rank), or leased.
    fn place_of(
        &self,
        seq: &str,
        queue: String,
        priority: i32,
        payload: Vec<u8>,
    ) -> Result<Location> {
        let qkey = format!("{}q:{queue}", self.prefix);
        let ranks: Vec<Option<u64>> = self.pool.run(true, |con| {
            let mut p = ::redis::pipe();
            for d in 0..=MOST_DELIVERIES {
                p.cmd("ZRANK").arg(&qkey).arg(format!("{seq}.{d}"));
            }
            p.query(con)
        })?;
        if let Some(rank) = ranks.into_iter().flatten().next() {
            return Ok(Location::Ready {
                queue,
                priority,
                position: Some(rank),
                payload,
            });
        }
        let leases = &self.keys[LEASES];
        let found: (String, Vec<String>) = self.pool.run(true, |con| {
            ::redis::cmd("ZSCAN")
                .arg(leases)
                .arg(0)
                .arg("MATCH")
                .arg(format!("{seq}.*"))
                .arg("COUNT")
                .arg(100_000)
                .query(con)
        })?;
        let mut it = found.1.into_iter();
        let held = |until: &String| until.parse::<f64>().map(|u| u.max(0.0) as u64).ok();
        match (it.next(), it.next().and_then(|u| held(&u))) {
            // A lease past its expiry is ready again (it goes back on the next dequeue).
            (Some(member), Some(until_ms)) if until_ms > crate::clock::now_ms() => {
                Ok(Location::Leased {
                    queue,
                    consumer: None,
                    until_ms,
                    deliveries: member
                        .split('.')
                        .nth(1)
                        .and_then(|d| d.parse().ok())
                        .unwrap_or(0),
                    payload,
                })
            }
            // Between moves (or delivered more often than looked for): ready, place unknown.
            _ => Ok(Location::Ready {
                queue,
                priority,
                position: None,
                payload,
            }),
        }
    }

    fn locate_dead(&self, id: &str) -> Result<Option<Location>> {
        #[derive(serde::Deserialize)]
        struct Info {
            #[serde(default)]
            id: String,
            #[serde(default)]
            queue: String,
            #[serde(default)]
            error: String,
        }
        let info = |v: &[u8]| serde_json::from_slice::<Info>(v).ok();
        let Some((seq, value)) =
            self.scan_hash(DEAD_INFO, |v| info(v).is_some_and(|i| i.id == id))?
        else {
            return Ok(None);
        };
        let info = info(&value).ok_or_else(|| self.corrupt("dead:info"))?;
        let at: Option<f64> = self.pool.run(true, |con| {
            ::redis::cmd("ZSCORE")
                .arg(&self.keys[DEAD])
                .arg(&seq)
                .query(con)
        })?;
        Ok(Some(Location::Dead {
            queue: info.queue,
            error: info.error,
            at_ms: at.unwrap_or(0.0).max(0.0) as u64,
        }))
    }
}
