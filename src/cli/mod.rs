//! The command line shared by `hueyd` and every per-app binary: the consumer (no subcommand),
//! the admin subcommands, shell completions and a man page, and the hidden worker mode that
//! process workers run in.
//!
//! An app takes it whole with [`Cli`] (its own name, version and about text), or embeds its
//! parts in its own clap command: [`StorageArgs`] and [`ConsumerArgs`] to
//! `#[command(flatten)]`, [`AdminCommand`] as a subcommand, [`parse`] to read the command line
//! with the `--config` file applied, and [`Cli::worker`], [`Cli::consumer`] and [`Cli::admin`]
//! to run them (`examples/embed_cli.rs`).
//!
//! Raw flags are parsed by clap, then turned into a validated supervisor config in a second
//! step; the entry points return an exit code and report errors only at the edge (see
//! `exit`): 0 success, 1 a failure at run time, 2 bad input (flags, URLs, arguments, a
//! storage that does not exist for a command that only reads), 3 a result not ready.

mod admin;
mod config;
mod consumer;
mod pidfile;
#[cfg(feature = "web")]
mod web;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

pub use admin::AdminCommand;
pub use consumer::ConsumerArgs;

use crate::app::Huey;
use crate::error::{Error, Result};

/// The storage flag, global to the consumer and every subcommand (`--storage` may come before
/// or after a subcommand). Public so that an app can `#[command(flatten)]` it.
#[derive(Args, Debug, Clone)]
pub struct StorageArgs {
    /// Storage URL: sqlite:PATH, redis://host:port/db, postgres://..., memory:
    #[arg(
        long,
        env = "HUEY_STORAGE",
        default_value = crate::storage::DEFAULT_URL,
        global = true
    )]
    pub storage: String,

    /// The Postgres schema the storage lives in, overriding the URL's `?schema=` (default huey)
    #[arg(long, env = "HUEY_PG_SCHEMA", global = true, value_name = "NAME")]
    pub pg_schema: Option<String>,
}

impl StorageArgs {
    /// The storage URL with `--pg-schema` applied, if given.
    pub fn url(&self) -> Result<String> {
        match &self.pg_schema {
            None => Ok(self.storage.clone()),
            #[cfg(feature = "postgres")]
            Some(schema) => {
                crate::storage::postgres::with_schema(&self.storage, schema).map_err(|reason| {
                    Error::StorageUrl {
                        url: self.storage.clone(),
                        reason,
                    }
                })
            }
            // A schema is for the Postgres storage, which this build lacks.
            #[cfg(not(feature = "postgres"))]
            Some(_) => Err(Error::Unsupported("postgres")),
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Run the task consumer (default) or administer the queue"
)]
struct Line {
    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    consumer: ConsumerArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a short demonstration on the embedded storage.
    Demo(crate::demo::DemoArgs),
    /// Serve the web dashboard (loopback by default; any other address needs --token).
    #[cfg(feature = "web")]
    Web(web::WebArgs),
    #[command(flatten)]
    Admin(admin::AdminCommand),
    /// Print a shell completion script (e.g. `completions bash > /etc/bash_completion.d/APP`).
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `man > APP.1`.
    Man,
}

#[derive(Args, Debug)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// The entry point of `hueyd` and of every per-app binary: [`Cli`] with the app named `name`
/// and the library's version.
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
    let mut cli = Cli::new(register);
    cli.app = name.to_string();
    cli.run()
}

/// An app's command line: the consumer, the admin subcommands, `demo`, `web`, `completions`
/// and `man`, under the app's own name, version and about text.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     huey::cli::Cli::new(|app| {
///         app.task("add").register(|(a, b): (i64, i64)| Ok::<_, String>(a + b))?;
///         Ok(())
///     })
///     .name("shop")
///     .version(env!("CARGO_PKG_VERSION"))
///     .about("The shop's task consumer")
///     .run()
/// }
/// ```
///
/// An app with its own clap command uses the parts instead: [`Cli::worker`] first thing in
/// `main`, then [`Cli::consumer`] and [`Cli::admin`] with the flags it parsed.
pub struct Cli<R> {
    app: String,
    name: Option<String>,
    version: Option<&'static str>,
    about: Option<String>,
    register: R,
}

impl<R: Fn(&Huey) -> Result<()>> Cli<R> {
    /// A command line for the app whose tasks `register` registers. It runs in every process
    /// of the app (the consumer, each process worker, each admin command), so task names
    /// resolve the same everywhere.
    pub fn new(register: R) -> Cli<R> {
        Cli {
            app: "huey".to_string(),
            name: None,
            version: None,
            about: None,
            register,
        }
    }

    /// The app's name: the command's name in `--help`, `--version` and the man page, and the
    /// app name its storage is opened for (Redis keys are prefixed with it), so every binary
    /// of one app must use the same. Default `huey`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.app.clone_from(&name);
        self.name = Some(name);
        self
    }

    /// The version `--version` prints (default: the library's).
    pub fn version(mut self, version: &'static str) -> Self {
        self.version = Some(version);
        self
    }

    /// The text at the top of `--help`.
    pub fn about(mut self, about: impl Into<String>) -> Self {
        self.about = Some(about.into());
        self
    }

    /// The clap command, as `run` parses it.
    pub fn command(&self) -> clap::Command {
        let mut cmd = Line::command();
        if let Some(n) = &self.name {
            cmd = cmd.display_name(n.clone());
        }
        if let Some(v) = self.version {
            cmd = cmd.version(v);
        }
        if let Some(a) = &self.about {
            cmd = cmd.about(a.clone());
        }
        cmd
    }

    /// Run the command line of this process.
    pub fn run(&self) -> ExitCode {
        self.run_from(std::env::args_os())
    }

    /// Run a command line (its first item is the program's name).
    pub fn run_from<I, T>(&self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        if let Some(code) = self.worker() {
            return code;
        }
        let mut cmd = self.command();
        let matches = match parse_matches(&mut cmd, args) {
            Ok(m) => m,
            Err(code) => return code,
        };
        let line = match Line::from_arg_matches(&matches) {
            Ok(l) => l,
            Err(e) => return clap_error(e),
        };
        let storage_chosen = matches.value_source("storage") != Some(ValueSource::DefaultValue);
        let storage = line.storage;
        match line.command {
            Some(Command::Completions(a)) => {
                let name = program_name(&cmd);
                let mut out = Vec::new();
                clap_complete::generate(a.shell, &mut cmd, name, &mut out);
                // A closed pipe (`completions bash | head`) is not an error.
                let _ = std::io::stdout().write_all(&out);
                ExitCode::SUCCESS
            }
            Some(Command::Man) => {
                let name = program_name(&cmd);
                let man = clap_mangen::Man::new(cmd.display_name(name));
                let mut out = Vec::new();
                match man.render(&mut out) {
                    Ok(()) => {
                        let _ = std::io::stdout().write_all(&out);
                        ExitCode::SUCCESS
                    }
                    Err(e) => report(Error::io("cannot write the man page", e)),
                }
            }
            Some(Command::Demo(args)) => self.finish((|| {
                // The demo prints its own lines; logs only when asked for with HUEY_LOG.
                crate::logging::init_logging(None, "off", Default::default())?;
                let url = if storage_chosen {
                    Some(storage.url()?)
                } else {
                    None
                };
                crate::demo::run(&self.app, url, args, &self.register)
            })()),
            #[cfg(feature = "web")]
            Some(Command::Web(args)) => self.finish(
                storage
                    .url()
                    .and_then(|url| self.open(&url))
                    .and_then(|app| web::run(&app, args)),
            ),
            Some(Command::Admin(cmd)) => self.admin(&storage, cmd),
            None => self.consumer(&storage, &line.consumer),
        }
    }

    /// When this process is one of the app's process workers (the consumer started it from
    /// the app's own binary), run the worker and return its exit code. An app with its own
    /// command line calls this first thing in `main`, before parsing arguments.
    pub fn worker(&self) -> Option<ExitCode> {
        if !crate::worker::process::is_worker() {
            return None;
        }
        Some(ExitCode::from(crate::worker::process::worker_main(|url| {
            // The supervisor checked the storage; here it is opened only if task code uses it.
            let app = Huey::open_lazy(&self.app, url);
            self.register_on(&app)?;
            Ok(app)
        }) as u8))
    }

    /// Run the consumer with these flags until it is stopped.
    pub fn consumer(&self, storage: &StorageArgs, args: &ConsumerArgs) -> ExitCode {
        self.finish(
            storage
                .url()
                .and_then(|url| consumer::run(args, || self.open(&url))),
        )
    }

    /// Run one admin command. A command that only reads refuses a storage that does not exist
    /// (exit 2) rather than creating an empty one.
    pub fn admin(&self, storage: &StorageArgs, cmd: AdminCommand) -> ExitCode {
        self.finish((|| {
            let url = storage.url()?;
            if let AdminCommand::Cron(args) = cmd {
                return admin::cron::run(args);
            }
            if let AdminCommand::Tasks(_) = cmd {
                // The registry, and the schedules kept in the storage if it exists: a SQLite
                // file that does not exist holds none, and is not created to say so.
                let url = match refuse_missing(&url, "tasks") {
                    Err(Error::Config(_)) => "memory:".to_string(),
                    _ => url,
                };
                let app = Huey::open_lazy(&self.app, url.parse()?);
                self.register_on(&app)?;
                return admin::run(&app, cmd);
            }
            if let Some(name) = cmd.reads_only() {
                refuse_missing(&url, name)?;
            }
            let app = self.open(&url)?;
            admin::run(&app, cmd)
        })())
    }

    fn open(&self, url: &str) -> Result<Huey> {
        let app = Huey::open(self.app.as_str(), url)?;
        self.register_on(&app)?;
        Ok(app)
    }

    fn register_on(&self, app: &Huey) -> Result<()> {
        (self.register)(app)?;
        crate::command::register(app)
    }

    fn finish(&self, r: Result<ExitCode>) -> ExitCode {
        r.unwrap_or_else(report)
    }
}

fn report(e: Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {e}");
    ExitCode::from(crate::exit::for_error(&e))
}

fn clap_error(e: clap::Error) -> ExitCode {
    let _ = e.print();
    ExitCode::from(e.exit_code() as u8)
}

/// The name the program was run as (`hueyd`, `shop`), for completions and the man page.
fn program_name(cmd: &clap::Command) -> String {
    let bin = cmd.get_bin_name().unwrap_or(cmd.get_name());
    cmd.get_display_name().unwrap_or(bin).to_string()
}

/// A command that only reads (or changes only what must be there already) must not create the
/// storage it reads: a mistyped SQLite path would otherwise report an empty queue.
fn refuse_missing(url: &str, command: &str) -> Result<()> {
    let parsed: crate::storage::StorageUrl = url.parse()?;
    if let Some(path) = parsed.sqlite_path() {
        let in_memory = path.starts_with(":memory:") || path.starts_with("file:");
        if !in_memory && !std::path::Path::new(path).exists() {
            return Err(Error::Config(format!(
                "{url}: no such SQLite database ({command} does not create one; check --storage or HUEY_STORAGE)"
            )));
        }
    }
    if parsed.postgres_schema_exists()? == Some(false) {
        let schema = parsed.postgres_schema().unwrap_or_default();
        return Err(Error::Config(format!(
            "the Postgres schema {schema} does not exist in that database ({command} does not \
             create it; check --pg-schema, HUEY_PG_SCHEMA or the URL's ?schema=)"
        )));
    }
    Ok(())
}

/// Parse this process's command line into an app's own clap command `P` that embeds
/// [`ConsumerArgs`], as `hueyd` does its own: the `--config` file's keys become defaults
/// (flags given and `HUEY_*` variables win), and consumer flags given with a subcommand are
/// refused. On error the message is printed and the exit code returned.
pub fn parse<P: CommandFactory + FromArgMatches>() -> std::result::Result<P, ExitCode> {
    let mut cmd = P::command();
    let matches = parse_matches(&mut cmd, std::env::args_os())?;
    P::from_arg_matches(&matches).map_err(clap_error)
}

fn parse_matches<I, T>(
    cmd: &mut clap::Command,
    args: I,
) -> std::result::Result<ArgMatches, ExitCode>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // The file's values become defaults of the command as it was before parsing.
    let pristine = cmd.clone();
    let mut matches = cmd
        .try_get_matches_from_mut(args.clone())
        .map_err(clap_error)?;
    let mut configured = pristine;
    if config::apply(&mut configured, &matches).map_err(report)? {
        *cmd = configured;
        matches = cmd.try_get_matches_from_mut(args).map_err(clap_error)?;
    }
    if let Some((sub, _)) = matches.subcommand() {
        if let Some(flag) = consumer_flag_given(cmd, &matches) {
            return Err(clap_error(cmd.error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{flag} runs the consumer; it cannot be used with the subcommand '{sub}'"),
            )));
        }
    }
    Ok(matches)
}

/// The first consumer flag given on the command line, as the user would write it.
fn consumer_flag_given(cmd: &clap::Command, m: &ArgMatches) -> Option<String> {
    let consumer = ConsumerArgs::augment_args(clap::Command::new("consumer"));
    let ids: Vec<&str> = consumer
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .collect();
    cmd.get_arguments()
        .filter(|a| ids.contains(&a.get_id().as_str()))
        .find(|a| m.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|a| match (a.get_long(), a.get_short()) {
            (Some(l), _) => format!("--{l}"),
            (None, Some(s)) => format!("-{s}"),
            (None, None) => a.get_id().to_string(),
        })
}
