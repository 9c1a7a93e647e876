//! Chord members counted in their outcome's batch: the [`ChordCount`] a member's final outcome
//! writes, with its callback ready for the storage to put together (built by
//! [`ChordCount::for_member`], which the backends use too for members they dead-letter).

use crate::events::{Event, EventKind};
use crate::message::{Message, StoredResult};
use crate::storage::ChordCount;

use super::Effects;

/// Count a chord member's final outcome in the same batch as the outcome itself: the storage
/// enqueues the callback when the last member is counted (see [`ChordCount`]).
pub(super) fn count_chord_member(
    msg: &Message,
    outcome: &StoredResult,
    now_ms: u64,
    fx: &mut Effects,
) {
    let Some(c) = &msg.chord else { return };
    match ChordCount::for_member(c, outcome, now_ms) {
        Ok(count) => fx.batch.chords.push(count),
        Err(e) => fx.events.push(
            Event::for_message(EventKind::Error, msg).with_error(format!("chord {}: {e}", c.chord)),
        ),
    }
}
