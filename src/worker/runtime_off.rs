//! The concurrent workers of a build without the `async` feature: there are none. The
//! supervisor refuses `--kind async` and `--concurrency` over 1 when it is configured
//! (`supervisor::features`), so nothing here is reached from a consumer; a process worker told
//! to run with a concurrency (by a supervisor of another build) exits with a clear message.

use super::EventSink;
use crate::app::Huey;
use crate::message::Message;

/// Why there is no async worker here.
const NO_ASYNC: &str = "async workers (--kind async, --concurrency over 1) need the `async` \
                        feature, which this build was compiled without";

/// The async worker of a build with the `async` feature; here it is never made.
pub enum AsyncWorker {}

impl AsyncWorker {
    /// Refused: this build has no runtime.
    pub fn spawn(
        _app: Huey,
        _slot: usize,
        _gen: u64,
        _num: u32,
        _concurrency: usize,
        _events: EventSink,
    ) -> std::io::Result<AsyncWorker> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            NO_ASYNC,
        ))
    }

    /// Never called: there is no worker.
    pub fn send(&self, _job: u64, _msg: Message) -> bool {
        match *self {}
    }

    /// Never called: there is no worker.
    pub fn cancel(&self, _job: u64) -> bool {
        match *self {}
    }

    /// Never called: there is no worker.
    pub fn stop(&mut self) {
        match *self {}
    }

    /// Never called: there is no worker.
    pub fn abandon(&mut self) {
        match *self {}
    }

    /// Never called: there is no worker.
    pub fn num(&self) -> u32 {
        match *self {}
    }
}

/// A process worker asked for a concurrency: this build cannot run one.
pub(super) fn serve(
    _app: &Huey,
    _input: impl std::io::Read,
    _output: impl std::io::Write + Send + 'static,
    concurrency: usize,
) -> i32 {
    eprintln!(
        "huey worker {}: --concurrency {concurrency}: {NO_ASYNC}",
        std::process::id()
    );
    3
}
