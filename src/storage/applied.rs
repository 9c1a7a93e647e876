//! Outcomes sent again: a backend remembers the leases of the outcomes it wrote through this
//! handle, so a batch sent again (its first reply was lost, or it was simply sent twice)
//! reports "written" instead of "fenced", and the caller tells its events exactly once. It
//! writes nothing the second time: its lease is gone, and the batch is not even sent.
//!
//! A write whose reply never came is another matter: the handle does not know whether it was
//! applied. SQLite and memory report an error only when nothing was written, so a resend after
//! an error is simply applied. Redis records each apply call's answers on the server for a
//! while (see `redis::scripts::queue::APPLY`), and asks for them when it sends again a batch of
//! a call whose reply it lost.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use foldhash::{HashMap, HashMapExt, HashSet};

use parking_lot::Mutex;

use super::{Batch, Lease};
use crate::error::Result;

/// How many leases a handle remembers (the newest), about a MiB. A batch is sent twice after
/// a successful write only by a caller's mistake or a retry right after it; a write whose
/// reply was lost is known as such (an error), and Redis looks its answers up on the server.
const REMEMBERED: usize = 8_192;

/// The leases of outcomes written through one handle, the newest [`REMEMBERED`].
#[derive(Default)]
pub(crate) struct Applied {
    inner: Mutex<Remembered>,
}

/// Leases by a 64-bit hash (no allocation per outcome; a new lease matches one of 8,192
/// remembered hashes by chance once in about 2^51 outcomes).
#[derive(Default)]
struct Remembered {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

/// A lease's 64-bit hash: the same for the life of the process (a fixed seed), and cheap —
/// it is taken twice per outcome written.
fn key(lease: &str) -> u64 {
    foldhash::quality::FixedState::with_seed(0x6875_6579).hash_one(lease)
}

impl Applied {
    /// Write `batches` with `write` (one storage call for the batches it is given), except
    /// those already written: a batch whose lease this handle wrote an outcome for before, or
    /// that repeats the lease of an earlier batch of the same call, is reported as its first
    /// write was and not sent. Returns one answer per batch, as [`super::Queue::apply_all`].
    pub(crate) fn apply_all(
        &self,
        batches: &[Batch],
        write: impl FnOnce(&[&Batch]) -> Result<Vec<bool>>,
    ) -> Result<Vec<bool>> {
        // Per batch: `Ok(k)`, the k-th one sent; `Err(j)`, the same as batch j (or, for
        // `usize::MAX`, written before this call).
        let mut plan: Vec<std::result::Result<usize, usize>> = Vec::with_capacity(batches.len());
        let mut send: Vec<&Batch> = Vec::with_capacity(batches.len());
        {
            let known = self.inner.lock();
            let mut first: HashMap<&str, usize> = HashMap::new();
            for (i, b) in batches.iter().enumerate() {
                let Some(Lease(l)) = &b.lease else {
                    plan.push(Ok(send.len()));
                    send.push(b);
                    continue;
                };
                if known.set.contains(&key(l)) {
                    plan.push(Err(usize::MAX));
                } else if let Some(&j) = first.get(l.as_str()) {
                    plan.push(Err(j));
                } else {
                    first.insert(l, i);
                    plan.push(Ok(send.len()));
                    send.push(b);
                }
            }
        }
        let written = if send.is_empty() {
            Vec::new()
        } else {
            write(&send)?
        };
        let mut out = Vec::with_capacity(batches.len());
        for p in &plan {
            let w = match *p {
                Ok(k) => written.get(k).copied().unwrap_or(false),
                Err(usize::MAX) => true,
                Err(j) => out.get(j).copied().unwrap_or(false),
            };
            out.push(w);
        }
        self.remember(
            batches
                .iter()
                .zip(&plan)
                .zip(&out)
                .filter(|((_, p), w)| p.is_ok() && **w)
                .filter_map(|((b, _), _)| b.lease.as_ref()),
        );
        Ok(out)
    }

    fn remember<'a>(&self, leases: impl Iterator<Item = &'a Lease>) {
        let mut known = self.inner.lock();
        for Lease(l) in leases {
            let k = key(l);
            if known.set.insert(k) {
                known.order.push_back(k);
            }
        }
        while known.order.len() > REMEMBERED {
            if let Some(old) = known.order.pop_front() {
                known.set.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acks(names: &[String]) -> Vec<Batch> {
        names.iter().map(|n| Batch::ack(Lease(n.clone()))).collect()
    }

    #[test]
    fn written_leases_are_answered_without_a_write_and_the_oldest_are_forgotten() {
        let applied = Applied::default();
        let first: Vec<String> = (0..REMEMBERED).map(|i| format!("l{i}")).collect();
        let sent = applied
            .apply_all(&acks(&first), |b| Ok(vec![true; b.len()]))
            .unwrap();
        assert!(sent.iter().all(|w| *w));
        // Sent again: answered here, nothing reaches the storage.
        let again = applied
            .apply_all(&acks(&first[..3]), |_| panic!("nothing to send"))
            .unwrap();
        assert_eq!(again, [true, true, true]);
        // A fenced one is not remembered; one more written lease pushes the oldest out.
        let answers = applied
            .apply_all(&acks(&["fenced".into(), "new".into()]), |b| {
                assert_eq!(b.len(), 2);
                Ok(vec![false, true])
            })
            .unwrap();
        assert_eq!(answers, [false, true]);
        let mut sent = 0;
        let answers = applied
            .apply_all(&acks(&["l0".into(), "l1".into(), "fenced".into()]), |b| {
                sent = b.len();
                Ok(vec![false; b.len()])
            })
            .unwrap();
        assert_eq!((sent, answers), (2, vec![false, true, false]));
    }

    #[test]
    fn a_lease_twice_in_one_call_is_sent_once_and_answered_alike() {
        let applied = Applied::default();
        let batches = acks(&["a".into(), "b".into(), "a".into()]);
        let mut sent = 0;
        let answers = applied
            .apply_all(&batches, |b| {
                sent = b.len();
                Ok(vec![true, false])
            })
            .unwrap();
        assert_eq!((sent, answers), (2, vec![true, false, true]));
    }
}
