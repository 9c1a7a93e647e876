//! The handles on an enqueued pipeline's stages.

#[allow(unused_imports)]
use super::*;
use std::time::Instant;

/// Handles on an enqueued pipeline's stages.
#[derive(Debug)]
pub struct PipelineResult<R> {
    pub(super) app: Huey,
    pub(super) stages: Vec<(String, String)>,
    pub(super) error_id: Option<String>,
    pub(super) last: TaskResult<R>,
}

impl<R: DeserializeOwned> PipelineResult<R> {
    /// The stage ids, in order.
    pub fn ids(&self) -> Vec<&str> {
        self.stages.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// How many stages.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether there is no stage (never, for an enqueued pipeline).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The last stage's result handle.
    pub fn last(&self) -> &TaskResult<R> {
        &self.last
    }

    /// A typed handle on stage `i` (from 0); `T` must be that stage's result type.
    pub fn stage<T: DeserializeOwned>(&self, i: usize) -> Option<TaskResult<T>> {
        self.stages
            .get(i)
            .map(|(id, _)| TaskResult::new(self.app.clone(), id.clone(), None))
    }

    /// The error handler's result handle, if the pipeline has one.
    pub fn error_handler<T: DeserializeOwned>(&self) -> Option<TaskResult<T>> {
        self.error_id
            .as_ref()
            .map(|id| TaskResult::new(self.app.clone(), id.clone(), None))
    }

    /// Wait for the last stage's result; the first stage that failed for good (or was
    /// revoked, expired) ends the wait early with its error.
    pub fn wait(&self, timeout: Duration) -> Result<R> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(v) = self.last.get()? {
                return Ok(v);
            }
            for (id, _) in &self.stages[..self.stages.len() - 1] {
                if let Some(b) = self.app.storage().result(id, false)? {
                    if let StoredResult::Err(e) = StoredResult::decode(&b)? {
                        return Err(Error::Task(e));
                    }
                }
            }
            if Instant::now() >= end {
                return Err(Error::Timeout(timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stage's stored outcome so far as JSON (through each task's result type), in
    /// stage order, without consuming them: `None` for a stage with nothing stored (not run
    /// yet, or a unit result), `Some(Err)` for a stage that failed.
    pub fn get_all(
        &self,
    ) -> Result<Vec<Option<std::result::Result<serde_json::Value, TaskError>>>> {
        let mut out = Vec::with_capacity(self.stages.len());
        for (id, task) in &self.stages {
            let stored = match self.app.storage().result(id, false)? {
                Some(b) => Some(StoredResult::decode(&b)?),
                None => None,
            };
            out.push(match stored {
                None => None,
                Some(StoredResult::Err(e)) => Some(Err(e)),
                Some(StoredResult::Ok { value: v, .. }) => {
                    let def = self
                        .app
                        .task_def(task)
                        .ok_or_else(|| Error::UnknownTask(task.clone()))?;
                    Some(Ok(def.handler.result_to_json(&v).map_err(Error::Decode)?))
                }
            });
        }
        Ok(out)
    }
}
