//! An app with its own clap command that embeds huey's: the consumer's flags flattened into
//! its top level (so `shop -w 4 -k process` runs the consumer), huey's admin commands under
//! its own `queue` subcommand (`shop queue status`), a command of its own (`shop order`), and
//! its own name and version in `--help` and `--version`.
//!
//! ```sh
//! cargo run --example embed_cli -- --storage sqlite:shop.db order tea:2:450 cup:1:1299
//! cargo run --example embed_cli -- --storage sqlite:shop.db -w 2 -k process
//! cargo run --example embed_cli -- --storage sqlite:shop.db queue status
//! ```

// Only the total is used here; the receipt task is the other examples'.
#[allow(dead_code)]
#[path = "shop/tasks.rs"]
mod tasks;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use huey::cli::{AdminCommand, Cli, ConsumerArgs, StorageArgs};
use huey::Huey;

/// The shop's own version, not the library's.
const VERSION: &str = "2.3.1";

#[derive(Parser, Debug)]
#[command(
    name = "shop",
    version = VERSION,
    about = "The shop: take orders, run the task consumer (no subcommand), administer the queue"
)]
struct Shop {
    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    consumer: ConsumerArgs,

    #[command(subcommand)]
    command: Option<ShopCommand>,
}

// Parsed once per process: the size of the embedded admin commands does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum ShopCommand {
    /// Enqueue an order's total (lines as SKU:QUANTITY:UNIT_CENTS); prints the task id.
    Order {
        #[arg(required = true, value_parser = line)]
        lines: Vec<tasks::Line>,
    },
    /// Administer the shop's task queue (huey's admin commands).
    #[command(subcommand)]
    Queue(AdminCommand),
}

fn line(s: &str) -> Result<tasks::Line, String> {
    let bad = || format!("{s:?}: expected SKU:QUANTITY:UNIT_CENTS");
    let mut parts = s.split(':');
    let (Some(sku), Some(q), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(tasks::Line {
        sku: sku.to_string(),
        quantity: q.parse().map_err(|_| bad())?,
        unit_cents: c.parse().map_err(|_| bad())?,
    })
}

fn register(app: &Huey) -> huey::Result<()> {
    tasks::register(app).map(|_| ())
}

fn main() -> ExitCode {
    let huey = Cli::new(register).name("shop").version(VERSION);
    // Process workers run this same binary: they must not parse the shop's command line.
    if let Some(code) = huey.worker() {
        return code;
    }
    let shop: Shop = match huey::cli::parse() {
        Ok(s) => s,
        Err(code) => return code,
    };
    match shop.command {
        Some(ShopCommand::Order { lines }) => match order(&shop.storage.storage, lines) {
            Ok(id) => {
                println!("{id}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(ShopCommand::Queue(cmd)) => huey.admin(&shop.storage, cmd),
        None => huey.consumer(&shop.storage, &shop.consumer),
    }
}

fn order(storage: &str, lines: Vec<tasks::Line>) -> huey::Result<String> {
    let app = Huey::open("shop", storage)?;
    let tasks = tasks::register(&app)?;
    Ok(tasks.total.enqueue(lines)?.id().to_string())
}
