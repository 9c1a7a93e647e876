//! `testbed`: `hueyd` with the fault-injection tasks too. The reliability tests and the soak
//! start it as their consumer when they need a task that crashes, panics or garbles its
//! worker's pipe, so the released `hueyd` carries none of them.
//!
//! It runs under `hueyd`'s app name, so it serves the same queue as `hueyd` on a storage.

#[path = "../tests/common/testbed.rs"]
mod testbed;

fn main() -> std::process::ExitCode {
    huey::cli::main("hueyd", testbed::register)
}
