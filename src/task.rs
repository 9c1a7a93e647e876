//! placeholder
#[derive(Debug, Clone, thiserror::Error)]
#[error("task failed")]
pub struct TaskError;
