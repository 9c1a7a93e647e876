//! Groups, chords and map. A member of a group or chord is a call, a pipeline or a chord
//! ([`GroupMember`]); every message of every member is enqueued in one storage write.
//!
//! # Nested members
//!
//! A member's outcome is the outcome of the message that finishes it: a call's own, a
//! pipeline's last stage's (or the error of the stage that stopped it), a chord's callback's.
//! When such a member belongs to a chord, its [`ChordMember`] place goes where that outcome is
//! decided:
//! - a pipeline: on its first stage; each stage that succeeds hands the place on to the next
//!   stage it enqueues, in the same batch (see `lifecycle`), so the stage that is counted is
//!   the last one, or the first one that fails for good;
//! - a chord: on its callback, which its own members' count enqueues (in the batch that counts
//!   its last member), and whose outcome is counted like any member's.
//!
//! Each count is part of the batch that writes the outcome it counts, as for plain members.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::result_group::MemberHandle;
use super::{encode, follow_up, Outcomes, Pipeline, ResultGroup};
use crate::app::Huey;
use crate::error::{Error, Result};
use crate::message::{ChordMember, Message, MAX_DEPTH};
use crate::result::TaskResult;
use crate::task::{Call, Task};

/// A member of a group or chord as it is enqueued: built by [`GroupMember::into_member`], put
/// together when its group is enqueued.
#[derive(Debug)]
pub struct Member(Kind);

#[derive(Debug)]
enum Kind {
    /// A call, or a pipeline's first stage with its later stages nested in it.
    Message {
        msg: Message,
        /// The id whose result is the member's (the last stage's).
        result: String,
        /// A pipeline's earlier stages.
        earlier: Vec<String>,
    },
    /// A chord: its members and its callback.
    Chord {
        members: Vec<Member>,
        callback: Message,
        /// How many chords deep it is, itself included.
        nesting: usize,
    },
}

impl Member {
    /// How many chords deep the member is (0 for a call or a pipeline).
    fn nesting(&self) -> usize {
        match &self.0 {
            Kind::Message { .. } => 0,
            Kind::Chord { nesting, .. } => *nesting,
        }
    }
}

/// Something a group or chord can have as a member: a [`Call`], a [`Pipeline`] or a
/// [`Chord`].
pub trait GroupMember {
    /// The member's result: the call's, the pipeline's last stage's, the chord callback's.
    type Output;

    /// The member's messages (an error if its arguments could not be encoded).
    fn into_member(self) -> Result<Member>;
}

impl<A: Serialize, R: DeserializeOwned> GroupMember for Call<A, R> {
    type Output = R;

    fn into_member(self) -> Result<Member> {
        let msg = self.to_message()?;
        Ok(Member(Kind::Message {
            result: msg.id.clone(),
            msg,
            earlier: Vec::new(),
        }))
    }
}

impl<R> GroupMember for Pipeline<R> {
    type Output = R;

    fn into_member(self) -> Result<Member> {
        let msg = self.to_message()?;
        let mut ids: Vec<String> = self.stages.iter().map(|m| m.id.clone()).collect();
        let result = ids.pop().unwrap_or_else(|| msg.id.clone());
        Ok(Member(Kind::Message {
            msg,
            result,
            earlier: ids,
        }))
    }
}

impl<R, R2> GroupMember for Chord<R, R2> {
    type Output = R2;

    fn into_member(self) -> Result<Member> {
        let Chord {
            mut group,
            callback,
            ..
        } = self;
        group.check()?;
        // Each chord level nests its callback (two levels: the membership and the callback)
        // once more in its members' messages: deeper than a message may nest, no member could
        // be encoded, and the levels are refused here, before anything walks them.
        let nesting = 1 + group.members.iter().map(Member::nesting).max().unwrap_or(0);
        if 2 * nesting > MAX_DEPTH {
            return Err(Error::Encode {
                what: "a chord",
                message: format!(
                    "chords nested {nesting} deep, over the limit of {} (each nests its \
                     callback two levels deeper in its members' messages, which nest at most \
                     {MAX_DEPTH} levels)",
                    MAX_DEPTH / 2
                ),
            });
        }
        Ok(Member(Kind::Chord {
            members: group.members,
            callback: callback?,
            nesting,
        }))
    }
}

/// Put `member` together, as the member `place` of an enclosing chord if any: its messages go
/// to `out`; returns where its outcome is found. Chords nested in it are put together from a
/// work list, not by recursion, so their depth costs no stack.
fn assemble(
    member: Member,
    place: Option<ChordMember>,
    out: &mut Vec<Message>,
) -> Result<MemberHandle> {
    let mut todo = Vec::new();
    let handle = place_member(member, place, out, &mut todo)?;
    while let Some((m, place)) = todo.pop() {
        place_member(m, Some(place), out, &mut todo)?;
    }
    Ok(handle)
}

/// Put one member in place: a message goes to `out`; a chord's own members go to `todo` with
/// their places (last first, so that they are taken in order). Returns where its outcome is
/// found.
fn place_member(
    member: Member,
    place: Option<ChordMember>,
    out: &mut Vec<Message>,
    todo: &mut Vec<(Member, ChordMember)>,
) -> Result<MemberHandle> {
    match member.0 {
        Kind::Message {
            mut msg,
            result,
            earlier,
        } => {
            msg.chord = place.map(Box::new);
            let message = (msg.id == result).then(|| msg.clone());
            out.push(msg);
            Ok(MemberHandle {
                id: result,
                message,
                earlier,
            })
        }
        Kind::Chord {
            members, callback, ..
        } => {
            let id = callback.id.clone();
            let placed = chord_places(members, callback, place, out)?;
            todo.extend(placed.into_iter().rev());
            Ok(MemberHandle {
                id,
                message: None,
                earlier: Vec::new(),
            })
        }
    }
}

/// Put a chord together (its callback the member `place` of an enclosing chord, if any): its
/// members' messages go to `out` (or, for an empty chord, the callback itself); returns where
/// each member's outcome is found.
fn assemble_chord(
    members: Vec<Member>,
    callback: Message,
    place: Option<ChordMember>,
    out: &mut Vec<Message>,
) -> Result<Vec<MemberHandle>> {
    chord_places(members, callback, place, out)?
        .into_iter()
        .map(|(m, place)| assemble(m, Some(place), out))
        .collect()
}

/// A chord's members, each with its place in the chord (its callback the member `place` of an
/// enclosing chord, if any). An empty chord's callback goes to `out` at once.
fn chord_places(
    members: Vec<Member>,
    mut callback: Message,
    place: Option<ChordMember>,
    out: &mut Vec<Message>,
) -> Result<Vec<(Member, ChordMember)>> {
    callback.chord = place.map(Box::new);
    let size = u32::try_from(members.len())
        .map_err(|_| Error::Config("a chord has at most 2^32 - 1 members".into()))?;
    if size == 0 {
        // Nothing to wait for: the callback runs at once with no outcomes.
        let mut args = encode("chord outcomes", &0usize)?;
        args.extend_from_slice(&callback.args);
        callback.args = args;
        out.push(callback);
        return Ok(Vec::new());
    }
    let chord = crate::message::new_id();
    Ok(members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let place = ChordMember {
                chord: chord.clone(),
                index: i as u32,
                size,
                callback: callback.clone(),
            };
            (m, place)
        })
        .collect())
}

/// Many calls, pipelines or chords whose results have one type, enqueued in one storage write.
pub struct Group<R> {
    app: Huey,
    members: Vec<Member>,
    broken: Option<Error>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Group<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("len", &self.members.len())
            .finish()
    }
}

impl Huey {
    /// A group of members (calls of one task or several, pipelines, chords) with one result
    /// type.
    pub fn group<M: GroupMember>(&self, members: impl IntoIterator<Item = M>) -> Group<M::Output>
    where
        M::Output: DeserializeOwned,
    {
        members.into_iter().fold(Group::new(self), Group::push)
    }
}

impl<A: Serialize, R: DeserializeOwned> Task<A, R> {
    /// A group of calls of this task, one per argument (huey's `task.map`).
    pub fn map(&self, args: impl IntoIterator<Item = A>) -> Group<R> {
        self.app.group(args.into_iter().map(|a| self.call(a)))
    }
}

impl<R: DeserializeOwned> Group<R> {
    /// An empty group.
    pub fn new(app: &Huey) -> Group<R> {
        Group {
            app: app.clone(),
            members: Vec::new(),
            broken: None,
            _r: PhantomData,
        }
    }

    /// Add a member: a call of any task returning `R`, a pipeline whose last stage returns
    /// `R`, or a chord whose callback returns `R`.
    pub fn push<M: GroupMember<Output = R>>(mut self, member: M) -> Group<R> {
        match member.into_member() {
            Ok(m) => self.members.push(m),
            Err(e) => self.broken = self.broken.or(Some(e)),
        }
        self
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Enqueue every member (every message of every member) in one write.
    pub fn enqueue(mut self) -> Result<ResultGroup<R>> {
        self.check()?;
        let mut msgs = Vec::new();
        let handles = std::mem::take(&mut self.members)
            .into_iter()
            .map(|m| assemble(m, None, &mut msgs))
            .collect::<Result<Vec<_>>>()?;
        self.app.enqueue_messages(&msgs)?;
        Ok(ResultGroup::of(&self.app, handles))
    }

    /// A chord: run `callback` once with every member's outcome (in member order) and `extra`,
    /// when all members have finished, whether they succeeded or not.
    pub fn then<E: Serialize, R2: DeserializeOwned>(
        self,
        callback: &Task<(Outcomes<R>, E), R2>,
        extra: E,
    ) -> Chord<R, R2> {
        let cb = encode("task arguments", &extra).map(|b| follow_up(callback, b));
        Chord::new(self, cb)
    }

    /// A chord whose callback takes the member outcomes alone.
    pub fn then_with<R2: DeserializeOwned>(self, callback: &Task<Outcomes<R>, R2>) -> Chord<R, R2> {
        Chord::new(self, Ok(follow_up(callback, Vec::new())))
    }
}

impl<R> Group<R> {
    fn check(&mut self) -> Result<()> {
        match self.broken.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// A group with a callback (see [`Group::then`]). A chord can itself be a member of a group or
/// of another chord: its outcome there is its callback's.
pub struct Chord<R, R2> {
    group: Group<R>,
    callback: Result<Message>,
    _r: PhantomData<fn() -> R2>,
}

impl<R, R2> std::fmt::Debug for Chord<R, R2> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chord")
            .field("members", &self.group.members.len())
            .finish()
    }
}

impl<R: DeserializeOwned, R2: DeserializeOwned> Chord<R, R2> {
    fn new(group: Group<R>, callback: Result<Message>) -> Chord<R, R2> {
        Chord {
            group,
            callback,
            _r: PhantomData,
        }
    }

    /// Enqueue the members in one write; the callback follows when the last one finishes.
    pub fn enqueue(self) -> Result<ChordResult<R, R2>> {
        let Chord {
            mut group,
            callback,
            ..
        } = self;
        group.check()?;
        let callback = callback?;
        let app = group.app.clone();
        let id = callback.id.clone();
        let mut msgs = Vec::new();
        let handles = assemble_chord(
            std::mem::take(&mut group.members),
            callback,
            None,
            &mut msgs,
        )?;
        app.enqueue_messages(&msgs)?;
        Ok(ChordResult {
            members: ResultGroup::of(&app, handles),
            callback: TaskResult::new(app, id, None),
        })
    }
}

/// Handles on an enqueued chord: its members and its callback.
#[derive(Debug)]
pub struct ChordResult<R, R2> {
    /// The members' results, in the order they were given.
    pub members: ResultGroup<R>,
    /// The callback's result, once every member has finished.
    pub callback: TaskResult<R2>,
}
