//! Result handles of an enqueued group or chord's members.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::{Outcome, Outcomes};
use crate::app::Huey;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::result::{StoredResult, TaskResult};

/// Where one member's outcome is found once it is enqueued.
#[derive(Debug, Clone)]
pub(crate) struct MemberHandle {
    /// The id whose result is the member's: the call's own, a pipeline's last stage's, a
    /// chord's callback's.
    pub id: String,
    /// A plain call's message (kept by its handle).
    pub message: Option<Message>,
    /// A pipeline member's earlier stages: one of them failing for good ends the member with
    /// its error (the last stage then never runs).
    pub earlier: Vec<String>,
}

/// Result handles of a group, in member order. A member that is a pipeline is its last
/// stage's result (or the error of the stage that stopped it); a member that is a chord is its
/// callback's result.
#[derive(Debug)]
pub struct ResultGroup<R> {
    app: Huey,
    handles: Vec<TaskResult<R>>,
    earlier: Vec<Vec<String>>,
}

impl<R: DeserializeOwned> ResultGroup<R> {
    pub(super) fn of(app: &Huey, members: Vec<MemberHandle>) -> ResultGroup<R> {
        let mut handles = Vec::with_capacity(members.len());
        let mut earlier = Vec::with_capacity(members.len());
        for m in members {
            handles.push(TaskResult::new(app.clone(), m.id, m.message));
            earlier.push(m.earlier);
        }
        ResultGroup {
            app: app.clone(),
            handles,
            earlier,
        }
    }

    /// The member handles (a pipeline member's: its last stage; a chord member's: its
    /// callback).
    pub fn handles(&self) -> &[TaskResult<R>] {
        &self.handles
    }

    /// The member ids (the ids of the handles).
    pub fn ids(&self) -> Vec<&str> {
        self.handles.iter().map(|h| h.id()).collect()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there is no member.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Member `i`'s outcome if it has finished (`Ok(None)` before).
    fn outcome(&self, i: usize) -> Result<Option<Outcome<R>>> {
        match self.handles[i].get() {
            Ok(Some(v)) => return Ok(Some(Ok(v))),
            Err(Error::Task(e)) => return Ok(Some(Err(e))),
            Err(e) => return Err(e),
            Ok(None) => {}
        }
        // A pipeline stopped by an earlier stage: that stage's error, left in storage.
        for id in &self.earlier[i] {
            if let Some(b) = self.app.storage().result(id, false)? {
                if let StoredResult::Err(e) = StoredResult::decode(&b)? {
                    return Ok(Some(Err(e)));
                }
            }
        }
        Ok(None)
    }

    /// Every result in member order once all are there (`Ok(None)` before); the first member
    /// that failed for good makes it `Err(Error::Task)`.
    pub fn get(&self) -> Result<Option<Vec<R>>> {
        let mut out = Vec::with_capacity(self.handles.len());
        for i in 0..self.handles.len() {
            match self.outcome(i)? {
                Some(Ok(v)) => out.push(v),
                Some(Err(e)) => return Err(Error::Task(e)),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    }

    /// Wait up to `timeout` in all for every result, in member order.
    pub fn wait(&self, timeout: Duration) -> Result<Vec<R>> {
        self.wait_outcomes(timeout)?
            .into_iter()
            .map(|r| r.map_err(Error::Task))
            .collect()
    }

    /// Wait up to `timeout` in all for every member's outcome, failures included.
    pub fn wait_outcomes(&self, timeout: Duration) -> Result<Outcomes<R>> {
        let end = Instant::now() + timeout;
        let mut out = Vec::with_capacity(self.handles.len());
        for (i, h) in self.handles.iter().enumerate() {
            if self.earlier[i].is_empty() {
                let left = end.saturating_duration_since(Instant::now());
                match h.wait(left) {
                    Ok(v) => out.push(Ok(v)),
                    Err(Error::Task(e)) => out.push(Err(e)),
                    Err(Error::Timeout(_)) => return Err(Error::Timeout(timeout)),
                    Err(e) => return Err(e),
                }
                continue;
            }
            // A pipeline: its last stage's result, or an earlier stage's error.
            loop {
                if let Some(o) = self.outcome(i)? {
                    out.push(o);
                    break;
                }
                if Instant::now() >= end {
                    return Err(Error::Timeout(timeout));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(out)
    }

    /// Outcomes as members finish, in finishing order, as `(member index, outcome)`; gives up
    /// with one `Err(Error::Timeout)` item when `timeout` passes first.
    pub fn as_completed(&self, timeout: Duration) -> AsCompleted<'_, R> {
        AsCompleted {
            group: self,
            left: (0..self.handles.len()).collect(),
            end: Instant::now() + timeout,
            timeout,
            done: false,
        }
    }
}

/// See [`ResultGroup::as_completed`].
pub struct AsCompleted<'a, R> {
    group: &'a ResultGroup<R>,
    left: Vec<usize>,
    end: Instant,
    timeout: Duration,
    done: bool,
}

impl<R: DeserializeOwned> Iterator for AsCompleted<'_, R> {
    type Item = Result<(usize, Outcome<R>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.left.is_empty() {
            return None;
        }
        loop {
            for pos in 0..self.left.len() {
                let i = self.left[pos];
                match self.group.outcome(i) {
                    Ok(None) => continue,
                    Ok(Some(o)) => {
                        self.left.remove(pos);
                        return Some(Ok((i, o)));
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            if Instant::now() >= self.end {
                self.done = true;
                return Some(Err(Error::Timeout(self.timeout)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
