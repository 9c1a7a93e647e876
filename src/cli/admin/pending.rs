//! `pending`: ready messages in the order they would run.

use std::process::ExitCode;

use serde_json::Value;

use super::{message_json, print_messages, ListArgs};
use crate::app::Huey;
use crate::error::Result;

pub(super) fn run(app: &Huey, a: ListArgs) -> Result<ExitCode> {
    let items: Vec<Value> = app
        .storage()
        .pending(a.limit)?
        .iter()
        .map(|p| message_json(app, p))
        .collect();
    print_messages(items, a.json);
    Ok(ExitCode::SUCCESS)
}
