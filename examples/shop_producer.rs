//! The shop's producer (a web app, say): enqueues work and reads results. Run a worker first:
//!
//! ```sh
//! cargo run --example shop_worker -- --storage sqlite:shop.db -w 2 -k process &
//! HUEY_STORAGE=sqlite:shop.db cargo run --example shop_producer
//! ```

#[path = "shop/tasks.rs"]
mod tasks;

use std::time::Duration;

use huey::Huey;
use tasks::Line;

fn main() -> huey::Result<()> {
    let url = std::env::var("HUEY_STORAGE").unwrap_or_else(|_| "sqlite:shop.db".into());
    let app = Huey::open("shop", &url)?;
    let tasks = tasks::register(&app)?;
    let order = vec![
        Line {
            sku: "tea".into(),
            quantity: 2,
            unit_cents: 450,
        },
        Line {
            sku: "cup".into(),
            quantity: 1,
            unit_cents: 1299,
        },
    ];
    let total = tasks.total.enqueue(order)?.wait(Duration::from_secs(30))?;
    println!("order total: {total} cents");
    let receipt = tasks.receipt.enqueue(("ada@example.com".into(), total))?;
    println!("{}", receipt.wait(Duration::from_secs(30))?);
    let bad = tasks
        .receipt
        .call(("nobody".into(), total))
        .retries(0)
        .enqueue()?;
    match bad.wait(Duration::from_secs(30)) {
        Err(huey::Error::Task(e)) => println!("failed as expected: {}", e.message),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
