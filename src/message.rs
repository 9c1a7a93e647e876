//! The wire envelope: what a producer writes to storage and a consumer reads back.
//!
//! A message is one version byte followed by a postcard body. Bytes that do not decode are an
//! [`Error::Decode`] value, never a panic, so the consumer can dead-letter them and go on.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::failure::TaskError;

/// The envelope version this build writes and reads.
pub const VERSION: u8 = 1;

/// The name of the queue a task goes to unless it says otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// Per-message options, resolved from the task's defaults and the call's overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Do not run before this time (ms since the epoch).
    pub eta_ms: Option<u64>,
    /// When the message was first enqueued (ms since the epoch).
    pub enqueued_ms: u64,
    /// Pipeline continuation: enqueued with this task's result prepended to its arguments.
    pub on_complete: Option<Box<Message>>,
    /// Pipeline error handler: enqueued with the error when this task fails for good.
    pub on_error: Option<Box<Message>>,
    /// Membership of a chord: when every member has finished, the callback runs once.
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

    /// Encode as version byte + postcard.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + self.args.len());
        out.push(VERSION);
        postcard::to_io(self, &mut out).map_err(|e| Error::Encode {
            what: "message",
            message: e.to_string(),
        })?;
        Ok(out)
    }

    /// Decode bytes written by [`Message::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Message> {
        match bytes.split_first() {
            None => Err(Error::Decode("empty message".into())),
            Some((&VERSION, body)) => {
                let (msg, rest) = postcard::take_from_bytes::<Message>(body)
                    .map_err(|e| Error::Decode(format!("{e} ({} bytes)", bytes.len())))?;
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
        task: String,
        #[serde(with = "serde_bytes")]
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

/// A new random task id (UUID v4, hyphenated, as huey).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trips() {
        let mut m = Message::new(
            "add",
            postcard::to_allocvec(&(1i64, 2i64)).unwrap(),
            Default::default(),
        );
        m.on_complete = Some(Box::new(Message::new("echo", vec![], Default::default())));
        let bytes = m.encode().unwrap();
        assert_eq!(Message::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn garbage_truncation_and_versions_are_errors() {
        let m = Message::new("add", vec![1, 2, 3], Default::default());
        let bytes = m.encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes decoded"
            );
        }
        let mut newer = bytes.clone();
        newer[0] = VERSION + 1;
        assert!(Message::decode(&newer)
            .unwrap_err()
            .to_string()
            .contains("version"));
        let mut longer = bytes;
        longer.push(0);
        assert!(Message::decode(&longer).is_err());
        assert!(Message::decode(&[VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
