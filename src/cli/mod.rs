//! The command line shared by `hueyd` and every per-app binary: the consumer (no subcommand),
//! the admin subcommands, and the hidden worker mode that process workers run in.
//!
//! Raw flags are parsed by clap, then turned into a validated supervisor config in a second
//! step; the entry point returns an exit code and reports errors only at the edge (see
//! `exit`): 0 success, 1 a failure at run time, 2 bad input (flags, URLs, arguments),
//! 3 a result not ready.

mod admin;
mod consumer;
mod web;

use std::io::Write;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::app::Huey;
use crate::error::Result;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Run the task consumer (default) or administer the queue"
)]
struct Cli {
    /// Storage URL: sqlite:PATH, redis://host:port/db, postgres://user@host:port/db, memory:
    #[arg(
        long,
        env = "HUEY_STORAGE",
        default_value = crate::storage::DEFAULT_URL,
        global = true
    )]
    storage: String,

    /// The Postgres schema the storage lives in, overriding the URL's `?schema=` (default huey)
    #[arg(long, env = "HUEY_PG_SCHEMA", global = true, value_name = "NAME")]
    pg_schema: Option<String>,

    #[command(flatten)]
    consumer: consumer::ConsumerArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a short demonstration on the embedded storage.
    Demo(crate::demo::DemoArgs),
    /// Serve the web dashboard (loopback by default; any other address needs --token).
    Web(web::WebArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
}

/// The entry point of `hueyd` and of every per-app binary.
///
/// `register` registers the app's tasks; it runs in every process of the app (the consumer,
/// each process worker, each admin command), so task names resolve the same everywhere.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     huey::cli::main("my-app", |app| {
///         app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
///         Ok(())
///     })
/// }
/// ```
pub fn main(name: &str, register: impl Fn(&Huey) -> Result<()>) -> ExitCode {
    if crate::worker::process::is_worker() {
        return worker(name, &register);
    }
    let (cli, storage_chosen) = match parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match run(name, cli, storage_chosen, &register) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(crate::exit::for_error(&e))
        }
    }
}

/// Parse the command line. Consumer flags and subcommands exclude each other, except the global
/// `--storage`, which may come before or after the subcommand. Also says whether `--storage`
/// (or `HUEY_STORAGE`) was given, since the demo uses a temporary database otherwise.
fn parse() -> std::result::Result<(Cli, bool), clap::Error> {
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    let cli = Cli::from_arg_matches(&matches)?;
    if let Some((sub, _)) = matches.subcommand() {
        if let Some(flag) = consumer_flag_given(&cmd, &matches) {
            return Err(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{flag} runs the consumer; it cannot be used with the subcommand '{sub}'"),
            ));
        }
    }
    let storage_chosen = matches.value_source("storage") != Some(ValueSource::DefaultValue);
    Ok((cli, storage_chosen))
}

/// The first consumer flag given on the command line, as the user would write it.
fn consumer_flag_given(cmd: &clap::Command, m: &ArgMatches) -> Option<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_global_set() && a.get_id() != "help" && a.get_id() != "version")
        .find(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|a| match (a.get_long(), a.get_short()) {
            (Some(l), _) => format!("--{l}"),
            (None, Some(s)) => format!("-{s}"),
            (None, None) => a.get_id().to_string(),
        })
}

fn open_app(name: &str, url: &str, register: &dyn Fn(&Huey) -> Result<()>) -> Result<Huey> {
    let app = Huey::open(name, url)?;
    register(&app)?;
    crate::command::register(&app)?;
    Ok(app)
}

/// The storage URL with `--pg-schema` applied, if given.
fn storage_url(cli: &Cli) -> Result<String> {
    match &cli.pg_schema {
        None => Ok(cli.storage.clone()),
        Some(schema) => {
            crate::storage::postgres::with_schema(&cli.storage, schema).map_err(|reason| {
                crate::error::Error::StorageUrl {
                    url: cli.storage.clone(),
                    reason,
                }
            })
        }
    }
}

fn run(
    name: &str,
    mut cli: Cli,
    storage_chosen: bool,
    register: &dyn Fn(&Huey) -> Result<()>,
) -> Result<ExitCode> {
    cli.storage = storage_url(&cli)?;
    match cli.command {
        Some(Command::Demo(args)) => {
            // The demo prints its own lines; logs only when asked for with HUEY_LOG.
            crate::logging::init_logging(None, "off", Default::default())?;
            let url = storage_chosen.then_some(cli.storage);
            crate::demo::run(name, url, args, register)
        }
        Some(Command::Web(args)) => {
            let app = open_app(name, &cli.storage, register)?;
            web::run(&app, args)
        }
        Some(Command::Admin(admin::AdminCommand::Cron(args))) => admin::cron::run(args),
        Some(Command::Admin(cmd)) => {
            let app = open_app(name, &cli.storage, register)?;
            admin::run(&app, cmd)
        }
        None => consumer::run(&cli.consumer, || open_app(name, &cli.storage, register)),
    }
}

fn worker(name: &str, register: &dyn Fn(&Huey) -> Result<()>) -> ExitCode {
    ExitCode::from(crate::worker::process::worker_main(|url| {
        // The supervisor checked the storage; here it is opened only if task code uses it.
        let app = Huey::open_lazy(name, url);
        register(&app)?;
        crate::command::register(&app)?;
        Ok(app)
    }) as u8)
}
