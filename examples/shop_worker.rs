//! The shop's worker binary: `main` hands over to the library's command line, so it has every
//! `hueyd` flag and admin command (`shop_worker --storage sqlite:shop.db -w 4 -k process`,
//! `shop_worker status --json`, ...), and its process workers run these same tasks.

// The worker only registers the tasks; the handles are the producer's.
#[allow(dead_code)]
#[path = "shop/tasks.rs"]
mod tasks;

fn main() -> std::process::ExitCode {
    huey::cli::main("shop", |app| tasks::register(app).map(|_| ()))
}
