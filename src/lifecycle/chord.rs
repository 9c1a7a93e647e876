//! Chord members counted in their outcome's batch: the [`ChordCount`] a member's final outcome
//! writes, with its callback ready for the storage to put together.

use crate::events::{Event, EventKind};
use crate::failure::{FailureKind, TaskError};
use crate::message::{ChordMember, Message, StoredResult};
use crate::storage::{ChordCallback, ChordCount};

use super::{Effects, CHORD_TTL};

/// Count a chord member's final outcome in the same batch as the outcome itself: the storage
/// enqueues the callback when the last member is counted (see [`ChordCount`]).
pub(super) fn count_chord_member(
    msg: &Message,
    outcome: &StoredResult,
    now_ms: u64,
    fx: &mut Effects,
) {
    let Some(c) = &msg.chord else { return };
    match chord_count(c, outcome, now_ms) {
        Ok(count) => fx.batch.chords.push(count),
        Err(e) => fx.events.push(
            Event::for_message(EventKind::Error, msg).with_error(format!("chord {}: {e}", c.chord)),
        ),
    }
}

/// The callback receives `Vec<Result<R, TaskError>>` in postcard: the length, then per member
/// its variant (0 `Ok`, 1 `Err`) and value. `R` is already encoded, so the storage splices the
/// members' items together.
fn chord_count(c: &ChordMember, outcome: &StoredResult, now_ms: u64) -> crate::Result<ChordCount> {
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
    let mut cb = c.callback.clone();
    cb.enqueued_ms = now_ms;
    let args_tail = std::mem::take(&mut cb.args);
    let callback = ChordCallback::for_message(
        &cb,
        encode("chord size", &(c.size as usize))?,
        args_tail,
        [&[1u8][..], &encode("task error", &missing)?].concat(),
    )?;
    Ok(ChordCount {
        chord: c.chord.clone(),
        index: c.index,
        size: c.size,
        outcome: item,
        ttl: CHORD_TTL,
        callback,
    })
}

fn encode<T: serde::Serialize + ?Sized>(what: &'static str, v: &T) -> crate::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| crate::Error::Encode {
        what,
        message: e.to_string(),
    })
}
