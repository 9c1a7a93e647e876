//! `hueyd`: the reference binary. It registers the demo tasks and hands over to the library's
//! command line, exactly as a per-app binary does with its own tasks.

fn main() -> std::process::ExitCode {
    huey::cli::main("hueyd", huey::demo::register)
}
