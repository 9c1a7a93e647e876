//! Chord counts: the batch part that counts a chord's members in storage and, with the last
//! one, makes the callback ready in the same atomic write. Every backend applies it inside its
//! [`super::Queue::apply`]; the callback's payload is put together here (memory, SQLite) or by
//! the same recipe in Lua (Redis).

use std::time::Duration;

use super::queue::{Batch, DeadPut, Ready};
use crate::error::{Error, Result};
use crate::failure::{FailureKind, TaskError};
use crate::message::{ChordMember, Message, StoredResult};

/// How long chord bookkeeping (counts, member outcomes, marks) is kept at most.
pub const CHORD_TTL: Duration = Duration::from_secs(7 * 86_400);

/// One chord member's final outcome, counted in the same atomic write as the rest of its
/// batch. Applying it:
/// 1. if member `index` of `chord` was counted before (it ran twice), does nothing;
/// 2. otherwise marks it counted, keeps `outcome` as the member's item, and adds one to the
///    chord's count;
/// 3. when the count reaches `size`, enqueues the callback (once: the count only reaches
///    `size` once) with its arguments made of the items in member order (an item that is gone,
///    e.g. expired, is replaced by `callback.missing`), and deletes the items and the count.
///
/// Marks, items and counts expire after `ttl` (a chord that never completes leaves nothing
/// behind for good).
#[derive(Debug, Clone, PartialEq)]
pub struct ChordCount {
    /// The chord's id.
    pub chord: String,
    /// This member's position, from 0.
    pub index: u32,
    /// How many members the chord has.
    pub size: u32,
    /// The member's outcome as one encoded item of the callback's argument list.
    pub outcome: Vec<u8>,
    /// How long the chord's bookkeeping is kept at most.
    pub ttl: Duration,
    /// The callback to enqueue when this member is the last one counted.
    pub callback: ChordCallback,
}

impl ChordCount {
    /// The count of chord member `member` whose final outcome is `outcome`, with its callback
    /// (made at `now_ms`). The callback receives `Vec<Result<R, TaskError>>` in postcard: the
    /// length, then per member its variant (0 `Ok`, 1 `Err`) and value; `R` is already encoded,
    /// so the storage splices the members' items together. Shared by the lifecycle (outcomes
    /// of attempts) and the backends (members they dead-letter themselves).
    pub fn for_member(
        member: &ChordMember,
        outcome: &StoredResult,
        now_ms: u64,
    ) -> Result<ChordCount> {
        let item = match outcome {
            StoredResult::Ok { value, .. } => [&[0u8][..], value].concat(),
            StoredResult::Err(e) => [&[1u8][..], &encode("task error", e)?].concat(),
        };
        let missing = TaskError {
            id: String::new(),
            task: String::new(),
            attempt: 0,
            kind: FailureKind::Expired,
            message: "this chord member left no outcome".into(),
        };
        let mut cb = member.callback.clone();
        cb.enqueued_ms = now_ms;
        let args_tail = std::mem::take(&mut cb.args);
        let callback = ChordCallback::for_message(
            &cb,
            encode("chord size", &(member.size as usize))?,
            args_tail,
            [&[1u8][..], &encode("task error", &missing)?].concat(),
        )?;
        Ok(ChordCount {
            chord: member.chord.clone(),
            index: member.index,
            size: member.size,
            outcome: item,
            ttl: CHORD_TTL,
            callback,
        })
    }
}

fn encode<T: serde::Serialize + ?Sized>(what: &'static str, v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| Error::Encode {
        what,
        message: e.to_string(),
    })
}

/// What a backend writes when it dead-letters a message delivered `deliveries` times without
/// an ack (over `max_deliveries`): the dead letter and, for a chord member, its count as a
/// failed member (so the chord still completes). No lease: the backend writes it in the same
/// transaction or script that takes the message off the queue, or fences it itself.
pub(crate) fn overdue(
    id: &str,
    queue: &str,
    payload: &[u8],
    deliveries: u32,
    now_ms: u64,
) -> Batch {
    let error = format!(
        "delivered {deliveries} times without being acknowledged (its worker or consumer was lost each time)"
    );
    let msg = Message::decode(payload).ok();
    let chords = msg
        .as_ref()
        .and_then(|m| {
            let member = m.chord.as_deref()?;
            let failed = StoredResult::Err(TaskError {
                id: m.id.clone(),
                task: m.task.clone(),
                attempt: m.attempt,
                kind: FailureKind::WorkerLost,
                message: error.clone(),
            });
            // A member whose callback cannot be encoded cannot be counted; it is dead-lettered
            // all the same.
            ChordCount::for_member(member, &failed, now_ms).ok()
        })
        .into_iter()
        .collect();
    let id = match (&msg, id) {
        (Some(m), "") => m.id.clone(),
        _ => id.to_string(),
    };
    // A unique task's claim is released below: its dead letter is no longer unique.
    let payload = match &msg {
        Some(m) if m.options.unique => m.dead_letter_payload().unwrap_or_else(|_| payload.to_vec()),
        _ => payload.to_vec(),
    };
    Batch {
        dead: vec![DeadPut {
            id,
            queue: queue.to_string(),
            payload,
            error,
        }],
        chords,
        // A unique task's claim goes with it (its final outcome).
        release: msg
            .iter()
            .filter(|m| m.options.unique)
            .map(|m| crate::message::unique_claim(&m.id))
            .collect(),
        ..Batch::default()
    }
}

/// The callback of a chord, ready to be put together by the storage: its payload is
/// `payload_head ++ varint(len(args)) ++ args ++ payload_tail` (the varint as postcard writes
/// lengths: 7 bits a byte, low first, high bit set on all but the last), where
/// `args = args_head ++ item 0 ++ … ++ item size-1 ++ args_tail`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordCallback {
    /// The callback's task id.
    pub id: String,
    /// The queue it goes to.
    pub queue: String,
    /// Its priority there.
    pub priority: i32,
    /// The message bytes before the arguments' length.
    pub payload_head: Vec<u8>,
    /// The message bytes after the arguments.
    pub payload_tail: Vec<u8>,
    /// The argument bytes before the first member's item.
    pub args_head: Vec<u8>,
    /// The argument bytes after the last member's item.
    pub args_tail: Vec<u8>,
    /// The item used for a member whose outcome is gone.
    pub missing: Vec<u8>,
}

impl ChordCallback {
    /// The callback for `msg`: its encoding split around its arguments (whatever `msg.args`
    /// holds is not used; the storage puts `args_head`, the items and `args_tail` there).
    pub fn for_message(
        msg: &Message,
        args_head: Vec<u8>,
        args_tail: Vec<u8>,
        missing: Vec<u8>,
    ) -> Result<ChordCallback> {
        let bare = Message {
            args: Vec::new(),
            ..msg.clone()
        };
        let encoded = bare.encode()?;
        // The envelope is the version byte, then the fields in order: id, task, args (empty
        // here: one zero length byte), then everything else.
        let head = 1
            + varint_len(msg.id.len())
            + msg.id.len()
            + varint_len(msg.task.len())
            + msg.task.len();
        if encoded.get(head) != Some(&0) {
            return Err(Error::Encode {
                what: "chord callback",
                message: "the message envelope does not have its arguments after id and task"
                    .into(),
            });
        }
        Ok(ChordCallback {
            id: msg.id.clone(),
            queue: msg.queue().to_string(),
            priority: msg.priority(),
            payload_head: encoded[..head].to_vec(),
            payload_tail: encoded[head + 1..].to_vec(),
            args_head,
            args_tail,
            missing,
        })
    }

    /// The callback as a ready entry, its arguments made of `items` in member order (`None`
    /// for a member whose item is gone: [`ChordCallback::missing`] takes its place).
    pub fn ready<'a>(&self, items: impl IntoIterator<Item = Option<&'a [u8]>>) -> Ready {
        let mut args = self.args_head.clone();
        for item in items {
            args.extend_from_slice(item.unwrap_or(&self.missing));
        }
        args.extend_from_slice(&self.args_tail);
        let mut payload =
            Vec::with_capacity(self.payload_head.len() + 10 + args.len() + self.payload_tail.len());
        payload.extend_from_slice(&self.payload_head);
        put_varint(&mut payload, args.len() as u64);
        payload.extend_from_slice(&args);
        payload.extend_from_slice(&self.payload_tail);
        Ready {
            id: self.id.clone(),
            queue: self.queue.clone(),
            priority: self.priority,
            payload,
        }
    }
}

/// Append `n` as postcard writes a length: 7 bits a byte, low first, high bit on all but the
/// last byte.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// How many bytes [`put_varint`] writes for `n`.
fn varint_len(n: usize) -> usize {
    let mut out = Vec::new();
    put_varint(&mut out, n as u64);
    out.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_postcard_lengths() {
        for n in [
            0usize,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            1 << 21,
            1 << 28,
            usize::MAX,
        ] {
            let mut ours = Vec::new();
            put_varint(&mut ours, n as u64);
            assert_eq!(ours, postcard::to_allocvec(&n).unwrap(), "{n}");
            assert_eq!(varint_len(n), ours.len());
        }
    }

    #[test]
    fn assembled_payload_is_the_message_with_those_args() {
        let mut msg = Message::new("sum", vec![9, 9, 9], Default::default());
        msg.options.priority = 3;
        msg.options.queue = "q".into();
        let cb = ChordCallback::for_message(&msg, vec![2], vec![7, 7], vec![0xee]).unwrap();
        let big = vec![5u8; 200];
        let r = cb.ready([Some(&big[..]), None]);
        let mut args = vec![2];
        args.extend_from_slice(&big);
        args.extend_from_slice(&[0xee, 7, 7]);
        let want = Message {
            args,
            ..msg.clone()
        };
        assert_eq!(r.payload, want.encode().unwrap());
        assert_eq!((r.id, r.queue, r.priority), (msg.id, "q".to_string(), 3));
    }
}
