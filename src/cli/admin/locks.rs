//! `locks`: the locks held now and the semaphores with a permit held, by name.
//!
//! `--json` prints one object: `locks` (an array of names) and `semaphores` (objects `name`,
//! `held`, `permits`).

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::Out;
use crate::app::Huey;
use crate::error::Result;
use crate::semaphore::{held_semaphores, KEY_PREFIX};
use crate::storage::Ns;

#[derive(Args, Debug)]
pub struct LocksArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(app: &Huey, a: LocksArgs) -> Result<ExitCode> {
    let locks: Vec<String> = app
        .storage()
        .list(Ns::Locks)?
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !k.starts_with(KEY_PREFIX))
        .collect();
    let semaphores = held_semaphores(app)?;
    let mut out = Out::new();
    if a.json {
        let sems: Vec<_> = semaphores
            .iter()
            .map(|(name, held, permits)| json!({"name": name, "held": held, "permits": permits}))
            .collect();
        out.json(&json!({ "locks": locks, "semaphores": sems }));
        return Ok(ExitCode::SUCCESS);
    }
    for name in &locks {
        out.line(format!("lock       {name}"));
    }
    for (name, held, permits) in &semaphores {
        out.line(format!("semaphore  {name}  {held}/{permits} permits held"));
    }
    if locks.is_empty() && semaphores.is_empty() {
        out.line("no lock or semaphore permit is held");
    }
    Ok(ExitCode::SUCCESS)
}
