//! `flush`: empty the parts of the storage chosen by flag.

use std::process::ExitCode;

use clap::Args;

use super::Out;
use crate::app::Huey;
use crate::error::{Error, Result};
use crate::storage::Flush;

#[derive(Args, Debug)]
pub struct FlushArgs {
    /// The ready queue, in-flight messages included.
    #[arg(long)]
    pub queue: bool,
    /// The schedule.
    #[arg(long)]
    pub schedule: bool,
    /// Stored results and errors.
    #[arg(long)]
    pub results: bool,
    /// Task locks.
    #[arg(long)]
    pub locks: bool,
    /// The dead-letter place.
    #[arg(long)]
    pub dead: bool,
    /// Revocations, periodic-run claims and app data.
    #[arg(long)]
    pub kv: bool,
    /// Everything above.
    #[arg(long)]
    pub all: bool,
}

pub(super) fn run(app: &Huey, a: FlushArgs) -> Result<ExitCode> {
    let what = if a.all {
        Flush::all()
    } else {
        Flush {
            queue: a.queue,
            schedule: a.schedule,
            results: a.results,
            locks: a.locks,
            dead: a.dead,
            kv: a.kv,
        }
    };
    let parts: Vec<&str> = [
        (what.queue, "queue"),
        (what.schedule, "schedule"),
        (what.results, "results"),
        (what.locks, "locks"),
        (what.dead, "dead"),
        (what.kv, "kv"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if parts.is_empty() {
        return Err(Error::Config(
            "choose what to flush: --queue, --schedule, --results, --locks, --dead, --kv, or --all"
                .into(),
        ));
    }
    app.storage().flush(what)?;
    Out::new().line(format!("flushed {}", parts.join(", ")));
    Ok(ExitCode::SUCCESS)
}
