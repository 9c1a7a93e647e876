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

#[cfg(test)]
mod tests {
    use super::super::{complete, Policy};
    use super::*;
    use crate::failure::{Failure, FailureKind};
    use crate::message::{ChordMember, MessageOptions, Output};

    const NOW: u64 = 1_700_000_000_000;

    /// A two-stage pipeline whose first stage is member 0 of a chord of two.
    fn first_stage() -> Message {
        let msg = |task: &str| Message::new(task, vec![1], MessageOptions::default());
        let mut first = msg("first");
        first.on_complete = Some(Box::new(msg("second")));
        first.chord = Some(Box::new(ChordMember {
            chord: "c1".into(),
            index: 0,
            size: 2,
            callback: msg("callback"),
        }));
        first
    }

    #[test]
    fn a_pipeline_stage_that_succeeds_hands_its_chord_place_to_the_next_stage() {
        let first = first_stage();
        let mut fx = Effects::default();
        let out = Output {
            value: vec![5],
            is_empty: false,
        };
        complete(None, &first, Ok(out), NOW, Policy::default(), &mut fx);
        assert!(
            fx.batch.chords.is_empty(),
            "not counted before its last stage"
        );
        let next = Message::decode(&fx.batch.enqueue[0].payload).unwrap();
        assert_eq!(next.task, "second");
        assert_eq!(next.args, vec![5, 1]);
        assert_eq!(
            next.chord, first.chord,
            "the place moves on in the same batch"
        );

        let mut fx = Effects::default();
        let out = Output {
            value: vec![6],
            is_empty: false,
        };
        complete(None, &next, Ok(out), NOW, Policy::default(), &mut fx);
        assert_eq!(fx.batch.chords.len(), 1, "the last stage is counted");
        assert_eq!(fx.batch.chords[0].outcome, vec![0, 6]);
    }

    #[test]
    fn a_pipeline_stage_that_fails_for_good_is_counted_with_its_error() {
        let first = first_stage();
        let mut fx = Effects::default();
        let f = Failure::new(FailureKind::Error, "no");
        complete(None, &first, Err(f), NOW, Policy::default(), &mut fx);
        assert!(fx.batch.enqueue.is_empty(), "the chain stops");
        assert_eq!(fx.batch.chords.len(), 1);
        assert_eq!(fx.batch.chords[0].index, 0);
        assert_eq!(fx.batch.chords[0].outcome[0], 1, "an Err item");
    }
}
