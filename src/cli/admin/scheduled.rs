//! `scheduled`: scheduled messages by eta.

use std::process::ExitCode;

use serde_json::{json, Value};

use super::values::format_time;
use super::{message_json, print_messages, ListArgs};
use crate::app::Huey;
use crate::error::Result;

pub(super) fn run(app: &Huey, a: ListArgs) -> Result<ExitCode> {
    let items: Vec<Value> = app
        .storage()
        .scheduled(a.limit)?
        .iter()
        .map(|(eta, p)| {
            let mut v = message_json(app, p);
            v["eta"] = json!(format_time(*eta));
            v
        })
        .collect();
    print_messages(items, a.json);
    Ok(ExitCode::SUCCESS)
}
