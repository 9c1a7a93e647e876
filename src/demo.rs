//! The reference binary's demo tasks, and `hueyd demo`: a few seconds that show what the
//! product does, on the embedded default storage.

use std::process::ExitCode;
use std::time::Duration;

use crate::app::Huey;
use crate::crontab::Crontab;
use crate::error::{Error, Result};
use crate::storage::Ns;

/// Register the demo tasks: `noop`, `echo`, `add`, `sleep`, `pid` (the pid of the worker
/// process that ran it), `cpu`, `fail`, `panic`, `flaky`, `crash`, and the periodic `heartbeat`.
pub fn register(app: &Huey) -> Result<()> {
    app.task("noop").register(|(): ()| Ok::<_, String>(()))?;
    app.task("echo").register(|v: String| Ok::<_, String>(v))?;
    app.task("add")
        .register(|(a, b): (i64, i64)| a.checked_add(b).ok_or("overflow"))?;
    app.task("sleep").register(|ms: u64| {
        std::thread::sleep(Duration::from_millis(ms));
        Ok::<_, String>(ms)
    })?;
    app.task("pid")
        .register(|(): ()| Ok::<_, String>(std::process::id()))?;
    app.task("cpu").register(|n: u64| Ok::<_, String>(cpu(n)))?;
    app.task("fail")
        .register(|message: String| Err::<(), _>(message))?;
    app.task("panic")
        .register(|message: String| -> std::result::Result<(), String> { panic!("{message}") })?;
    app.task("flaky").retries(5).register_with_context(
        |(key, failures): (String, u32), ctx: &crate::TaskContext| {
            let n = ctx
                .app()
                .storage()
                .incr(&format!("flaky:{key}"), 1)
                .map_err(|e| e.to_string())?;
            if n <= i64::from(failures) {
                Err(format!("failing on purpose ({n} of {failures})"))
            } else {
                Ok(n as u32)
            }
        },
    )?;
    app.task("crash")
        .register(|(): ()| -> std::result::Result<(), String> { std::process::abort() })?;
    app.task("heartbeat")
        .periodic(Crontab::parse("* * * * *")?)
        .register_with_context(|(): (), ctx: &crate::TaskContext| {
            let now = crate::clock::now_ms().to_string();
            ctx.app()
                .storage()
                .put(Ns::Data, "heartbeat", now.as_bytes(), None)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        })?;
    Ok(())
}

/// A CPU-bound loop of `n` iterations (an xorshift walk) that returns what it computed.
pub fn cpu(n: u64) -> u64 {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// Options of `hueyd demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Process workers to start.
    #[arg(short = 'w', long, default_value_t = 4)]
    pub workers: u32,
}

/// Run the demo.
pub fn run(
    _name: &str,
    _args: DemoArgs,
    _register: &dyn Fn(&Huey) -> Result<()>,
) -> Result<ExitCode> {
    Err(Error::Config("demo: not ready".into()))
}
