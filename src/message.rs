//! The wire envelope: what a producer writes to storage and a consumer reads back.
//!
//! A message is one version byte followed by a postcard body. Bytes that do not decode are an
//! [`Error::Decode`] value, never a panic, so the consumer can dead-letter them and go on.
//!
//! Two limits keep any message a consumer might meet workable: its size
//! ([`MAX_MESSAGE_BYTES`], so it fits in a worker's pipe frame) and its nesting
//! ([`MAX_DEPTH`], so decoding, which recurses through continuations, cannot exhaust a stack).
//! [`Message::encode`] refuses a message beyond either, so a producer hears of it at enqueue;
//! [`Message::decode`] refuses one found in storage, which the consumer dead-letters.

use std::cell::Cell;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::failure::TaskError;

/// The envelope version this build writes. It also reads every earlier version, so messages
/// queued by an older build still run after an upgrade (an older build refuses a newer
/// message, which it dead-letters with the reason: upgrade consumers before producers).
///
/// Version 1 had no `unique` option.
pub const VERSION: u8 = 2;

/// The largest encoded message: a producer's `enqueue` refuses a bigger one, and a consumer
/// dead-letters one found in storage (it would not fit in a worker's pipe frame).
pub const MAX_MESSAGE_BYTES: usize = (64 << 20) - 1024;

/// The deepest nesting of messages (pipeline continuations, error handlers, chord callbacks,
/// each callback two levels: see [`Message::depth`]) that is encoded or decoded: a longer
/// pipeline or deeper nest of chords is refused at enqueue, and a deeper message found in
/// storage is dead-lettered, so no input can exhaust a decoder's stack.
pub const MAX_DEPTH: usize = 500;

/// The name of the queue a task goes to unless it says otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// Per-message options, resolved from the task's defaults and the call's overrides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageOptions {
    /// Retries left after this attempt fails.
    pub retries: u32,
    /// Delay before the next retry, in milliseconds.
    pub retry_delay_ms: u64,
    /// Multiplier applied to the retry delay after each retry (1.0 keeps it fixed).
    pub retry_backoff: f32,
    /// Higher runs first; FIFO within one priority.
    pub priority: i32,
    /// Absolute expiry (ms since the epoch): a task not started by then is skipped.
    pub expires_at_ms: Option<u64>,
    /// Longest a single attempt may run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Store the result: `None` stores everything but unit/`None` results (huey's default).
    pub store_result: Option<bool>,
    /// Store the error of attempts that will be retried, not only the final one.
    pub store_errors_between_retries: bool,
    /// The named queue the task is routed to.
    pub queue: String,
    /// A unique task: its enqueue took the claim [`unique_claim`] of its id, which its final
    /// outcome releases.
    pub unique: bool,
}

impl Default for MessageOptions {
    fn default() -> Self {
        MessageOptions {
            retries: 0,
            retry_delay_ms: 0,
            retry_backoff: 1.0,
            priority: 0,
            expires_at_ms: None,
            timeout_ms: None,
            store_result: None,
            store_errors_between_retries: false,
            queue: DEFAULT_QUEUE.to_string(),
            unique: false,
        }
    }
}

/// The options as this build writes them (version 2): the derived decoder of [`MessageOptions`].
#[derive(Deserialize)]
#[serde(remote = "MessageOptions")]
struct OptionsV2 {
    retries: u32,
    retry_delay_ms: u64,
    retry_backoff: f32,
    priority: i32,
    expires_at_ms: Option<u64>,
    timeout_ms: Option<u64>,
    store_result: Option<bool>,
    store_errors_between_retries: bool,
    queue: String,
    unique: bool,
}

/// The options as version 1 wrote them: no `unique`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct OptionsV1 {
    retries: u32,
    retry_delay_ms: u64,
    retry_backoff: f32,
    priority: i32,
    expires_at_ms: Option<u64>,
    timeout_ms: Option<u64>,
    store_result: Option<bool>,
    store_errors_between_retries: bool,
    queue: String,
}

impl<'de> Deserialize<'de> for MessageOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        if DECODING_V1.with(|v| v.get()) {
            let o = OptionsV1::deserialize(d)?;
            Ok(MessageOptions {
                retries: o.retries,
                retry_delay_ms: o.retry_delay_ms,
                retry_backoff: o.retry_backoff,
                priority: o.priority,
                expires_at_ms: o.expires_at_ms,
                timeout_ms: o.timeout_ms,
                store_result: o.store_result,
                store_errors_between_retries: o.store_errors_between_retries,
                queue: o.queue,
                unique: false,
            })
        } else {
            OptionsV2::deserialize(d)
        }
    }
}

/// One task invocation on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The task id: stable across retries, the key of its result.
    pub id: String,
    /// The registered task name.
    pub task: String,
    /// The postcard-encoded arguments.
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// Options for this invocation.
    pub options: MessageOptions,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    /// Do not run before this time (ms since the epoch). In a pipeline continuation (a later
    /// stage, in `on_complete`), a delay in ms from when the previous stage succeeds instead.
    pub eta_ms: Option<u64>,
    /// When the message was first enqueued (ms since the epoch).
    pub enqueued_ms: u64,
    /// Pipeline continuation: enqueued with this task's result prepended to its arguments.
    #[serde(deserialize_with = "nested")]
    pub on_complete: Option<Box<Message>>,
    /// Pipeline error handler: enqueued with the error when this task fails for good.
    #[serde(deserialize_with = "nested")]
    pub on_error: Option<Box<Message>>,
    /// Membership of a chord: when every member has finished, the callback runs once.
    #[serde(deserialize_with = "nested")]
    pub chord: Option<Box<ChordMember>>,
}

/// A chord member's place in its chord (see [`crate::flow`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChordMember {
    /// The chord's id (keys of its counter and member outcomes).
    pub chord: String,
    /// This member's position, from 0.
    pub index: u32,
    /// How many members the chord has.
    pub size: u32,
    /// The callback, enqueued with every member's outcome prepended to its arguments.
    #[serde(deserialize_with = "nested_callback")]
    pub callback: Message,
}

impl Message {
    /// A fresh message with a new id.
    pub fn new(task: impl Into<String>, args: Vec<u8>, options: MessageOptions) -> Message {
        Message {
            id: new_id(),
            task: task.into(),
            args,
            options,
            attempt: 1,
            eta_ms: None,
            enqueued_ms: crate::clock::now_ms(),
            on_complete: None,
            on_error: None,
            chord: None,
        }
    }

    /// Encode as version byte + postcard; a message nested deeper than [`MAX_DEPTH`] or
    /// larger than [`MAX_MESSAGE_BYTES`] is an [`Error::Encode`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        let refuse = |message: String| Error::Encode {
            what: "message",
            message,
        };
        let depth = self.depth();
        if depth > MAX_DEPTH {
            return Err(refuse(format!(
                "nested {depth} levels deep (pipeline stages, error handlers, chord callbacks), over the limit of {MAX_DEPTH}"
            )));
        }
        let mut out = Vec::with_capacity(64 + self.args.len());
        out.push(VERSION);
        postcard::to_io(self, &mut out).map_err(|e| refuse(e.to_string()))?;
        if out.len() > MAX_MESSAGE_BYTES {
            return Err(refuse(format!(
                "{} bytes encoded, over the limit of {MAX_MESSAGE_BYTES} bytes",
                out.len()
            )));
        }
        Ok(out)
    }

    /// How many levels deep the continuations, error handlers and chord callbacks below this
    /// one nest (0: none): a continuation or error handler is one level, a chord callback two
    /// (the membership and the callback in it, each a level of decoding). Walks without
    /// recursion.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut stack = vec![(self, 0)];
        while let Some((m, d)) = stack.pop() {
            deepest = deepest.max(d);
            let below = [
                m.on_complete.as_deref().map(|n| (n, d + 1)),
                m.on_error.as_deref().map(|n| (n, d + 1)),
                m.chord.as_deref().map(|c| (&c.callback, d + 2)),
            ];
            stack.extend(below.into_iter().flatten());
        }
        deepest
    }

    /// Clear `unique` on every message nested in this one (pipeline stages, error handlers,
    /// chord callbacks): only a message whose own enqueue took its claim may release one, and
    /// those are written later by the outcome that leads to them, without a claim.
    pub fn clear_nested_unique(&mut self) {
        let mut stack: Vec<&mut Message> = Vec::new();
        let Message {
            on_complete,
            on_error,
            chord,
            ..
        } = self;
        stack.extend(on_complete.as_deref_mut());
        stack.extend(on_error.as_deref_mut());
        stack.extend(chord.as_deref_mut().map(|c| &mut c.callback));
        while let Some(m) = stack.pop() {
            m.options.unique = false;
            stack.extend(m.on_complete.as_deref_mut());
            stack.extend(m.on_error.as_deref_mut());
            stack.extend(m.chord.as_deref_mut().map(|c| &mut c.callback));
        }
    }

    /// Whether a message nested in this one is marked unique (see
    /// [`Message::clear_nested_unique`]).
    pub fn has_nested_unique(&self) -> bool {
        let mut stack = vec![self];
        while let Some(m) = stack.pop() {
            for n in [
                m.on_complete.as_deref(),
                m.on_error.as_deref(),
                m.chord.as_deref().map(|c| &c.callback),
            ]
            .into_iter()
            .flatten()
            {
                if n.options.unique {
                    return true;
                }
                stack.push(n);
            }
        }
        false
    }

    /// The payload of this message as a dead letter: its claim (if unique) is released with
    /// the dead-lettering, so a copy retried from the dead letters is no longer unique and
    /// releases nothing.
    pub fn dead_letter_payload(&self) -> Result<Vec<u8>> {
        if !self.options.unique {
            return self.encode();
        }
        let mut m = self.clone();
        m.options.unique = false;
        m.encode()
    }

    /// Decode bytes written by [`Message::encode`]. Bytes over [`MAX_MESSAGE_BYTES`] and
    /// messages nested deeper than [`MAX_DEPTH`] are errors (found before any deep recursion).
    pub fn decode(bytes: &[u8]) -> Result<Message> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(Error::Decode(format!(
                "a message of {} bytes, over the limit of {MAX_MESSAGE_BYTES} bytes",
                bytes.len()
            )));
        }
        match bytes.split_first() {
            None => Err(Error::Decode("empty message".into())),
            Some((&v, body)) if v == VERSION || v == 1 => {
                TOO_DEEP.with(|t| t.set(false));
                DECODING_V1.with(|d| d.set(v == 1));
                let decoded = postcard::take_from_bytes::<Message>(body);
                DECODING_V1.with(|d| d.set(false));
                let (msg, rest) = decoded.map_err(|e| {
                    if TOO_DEEP.with(|t| t.get()) {
                        Error::Decode(format!(
                            "messages nest deeper than the limit of {MAX_DEPTH} ({} bytes)",
                            bytes.len()
                        ))
                    } else {
                        Error::Decode(format!("{e} ({} bytes)", bytes.len()))
                    }
                })?;
                if rest.is_empty() {
                    Ok(msg)
                } else {
                    Err(Error::Decode(format!(
                        "{} trailing bytes after the message",
                        rest.len()
                    )))
                }
            }
            Some((v, _)) => Err(Error::Decode(format!(
                "message version {v} is not supported (this build reads version {VERSION})"
            ))),
        }
    }

    /// The priority the ready queue orders this message by.
    pub fn priority(&self) -> i32 {
        self.options.priority
    }

    /// The queue this message is routed to.
    pub fn queue(&self) -> &str {
        &self.options.queue
    }
}

thread_local! {
    /// How deep the message being decoded on this thread is, at this point.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The last decode on this thread stopped at the depth limit (the decoder's own error
    /// does not carry the reason).
    static TOO_DEEP: Cell<bool> = const { Cell::new(false) };
    /// The message being decoded on this thread was written as version 1.
    static DECODING_V1: Cell<bool> = const { Cell::new(false) };
}

/// One level of nesting while decoding; the level is left when it drops (also on an error).
struct Level;

impl Level {
    fn enter<E: serde::de::Error>() -> std::result::Result<Level, E> {
        DEPTH.with(|d| {
            // The fields of a message at depth n are entered at n + 1.
            if d.get() > MAX_DEPTH {
                TOO_DEEP.with(|t| t.set(true));
                return Err(E::custom(format_args!(
                    "messages nest deeper than the limit of {MAX_DEPTH}"
                )));
            }
            d.set(d.get() + 1);
            Ok(Level)
        })
    }
}

impl Drop for Level {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Decode a nested message (or chord membership), counting the level.
fn nested<'de, D, T>(d: D) -> std::result::Result<Option<Box<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let _level = Level::enter::<D::Error>()?;
    Option::<Box<T>>::deserialize(d)
}

/// Decode a chord's callback, counting its level: a membership and its callback are two
/// levels, as [`Message::depth`] counts them, so a chord nested in chords costs the decoder no
/// more stack per counted level than a pipeline does.
fn nested_callback<'de, D>(d: D) -> std::result::Result<Message, D::Error>
where
    D: Deserializer<'de>,
{
    let _level = Level::enter::<D::Error>()?;
    Message::deserialize(d)
}

/// Refuse `levels` messages nested in one another (a pipeline's stages) beyond [`MAX_DEPTH`]:
/// for callers that build the nesting, before they build it.
pub(crate) fn check_nesting(what: &'static str, levels: usize) -> Result<()> {
    if levels > MAX_DEPTH {
        let message = format!("{levels} levels nest deeper than the limit of {MAX_DEPTH}");
        return Err(Error::Encode { what, message });
    }
    Ok(())
}

/// What a successful attempt produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The postcard-encoded result.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Whether the result is unit or `None` (not stored unless the task asks).
    pub is_empty: bool,
}

const RESULT_VERSION: u8 = 1;

/// What storage keeps under a task id once the task has finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StoredResult {
    /// The postcard-encoded return value, and the task that returned it (so tools can decode
    /// it without being told the task).
    Ok {
        /// The task's name.
        task: String,
        #[serde(with = "serde_bytes")]
        /// The value, postcard-encoded.
        value: Vec<u8>,
    },
    /// The final failure.
    Err(TaskError),
}

impl StoredResult {
    /// Version byte + postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RESULT_VERSION];
        // Encoding an enum of bytes and strings into a Vec cannot fail.
        postcard::to_io(self, &mut out).ok();
        out
    }

    /// Decode what [`StoredResult::encode`] wrote.
    pub fn decode(bytes: &[u8]) -> Result<StoredResult> {
        match bytes.split_first() {
            Some((&RESULT_VERSION, body)) => Ok(postcard::from_bytes(body)?),
            Some((v, _)) => Err(Error::Decode(format!(
                "stored result version {v} is not supported"
            ))),
            None => Err(Error::Decode("empty stored result".into())),
        }
    }
}

/// The longest task id a caller may choose, in bytes.
pub const MAX_ID_BYTES: usize = 200;

/// Check a task id chosen by the caller: not empty, at most [`MAX_ID_BYTES`] bytes, no control
/// characters (it is a key in every backend and is printed by the admin commands).
pub fn check_id(id: &str) -> Result<()> {
    let why = if id.is_empty() {
        "is empty".to_string()
    } else if id.len() > MAX_ID_BYTES {
        format!(
            "is {} bytes long, over the limit of {MAX_ID_BYTES}",
            id.len()
        )
    } else if id.chars().any(char::is_control) {
        "contains a control character".to_string()
    } else {
        return Ok(());
    };
    // A long id is named by its start (precision does not cut a `Debug` string).
    let start: String = id.chars().take(40).collect();
    let more = if start.len() < id.len() { "..." } else { "" };
    Err(Error::Config(format!("the task id {start:?}{more} {why}")))
}

/// How long a unique task's claim lasts beyond its eta unless its final outcome releases it
/// first: a safety net, so a claim whose release was lost (a message deleted by hand) cannot
/// block its id for ever. A unique task still pending this long after its eta (retries waiting
/// for longer, a backlog of a day) no longer blocks a duplicate.
pub const UNIQUE_CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The claim (a key in the claims namespace) a unique task holds from its enqueue to its
/// final outcome.
pub fn unique_claim(id: &str) -> String {
    format!("{UNIQUE_CLAIM_PREFIX}{id}")
}

/// The start of every unique task's claim (flushing the queue or schedule deletes them all).
pub const UNIQUE_CLAIM_PREFIX: &str = "unique:";

/// A new random task id (UUID v4, hyphenated, as huey).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests;
