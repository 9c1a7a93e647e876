//! The shop's tasks: one registration function, run by the producer and by every process of
//! the worker binary alike, so task names and types agree everywhere.

use std::time::Duration;

use huey::{Huey, Task};
use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: u32,
    pub unit_cents: u64,
}

/// Typed handles on the shop's tasks.
pub struct Tasks {
    /// The order total in cents.
    pub total: Task<Vec<Line>, u64>,
    /// Sends a receipt; returns what it "sent".
    pub receipt: Task<(String, u64), String>,
}

/// Register the shop's tasks on an app.
pub fn register(app: &Huey) -> huey::Result<Tasks> {
    let total = app.task("total").register(|lines: Vec<Line>| {
        lines
            .iter()
            .try_fold(0u64, |sum, l| {
                l.unit_cents
                    .checked_mul(u64::from(l.quantity))
                    .and_then(|c| sum.checked_add(c))
            })
            .ok_or("order total overflows")
    })?;
    let receipt = app
        .task("receipt")
        .retries(3)
        .retry_delay(Duration::from_millis(100))
        .register(|(email, cents): (String, u64)| {
            if !email.contains('@') {
                return Err(format!("{email:?} is not an email address"));
            }
            Ok(format!(
                "receipt for {}.{:02} sent to {email} by worker {}",
                cents / 100,
                cents % 100,
                std::process::id()
            ))
        })?;
    Ok(Tasks { total, receipt })
}
