//! Admin subcommands: enqueue, result, status, revoke/restore, flush, tasks, dead letters.

use std::process::ExitCode;

use clap::Subcommand;

use crate::app::Huey;
use crate::error::Result;

/// The admin subcommands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Counts of each part of the storage.
    Status,
}

/// Run one admin command.
pub fn run(app: &Huey, cmd: AdminCommand) -> Result<ExitCode> {
    match cmd {
        AdminCommand::Status => {
            let c = app.storage().counts()?;
            println!("{}", serde_json::to_string(&c).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
    }
}
