//! The `--config FILE` of the consumer: a TOML file whose keys are the long flags of the
//! command it is given to (`workers = 4`, `kind = "process"`, `queue = ["high", "default"]`,
//! `no-periodic = true`; `_` may stand for `-`).
//!
//! Its values become the command's defaults, then the command line is parsed again, so clap's
//! own order gives the precedence: a flag given, then its `HUEY_*` variable, then the file,
//! then the built-in default. Each value goes through the flag's own parser first, so a bad
//! one is reported with the file and key it came from.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::{ArgMatches, Command};

use crate::error::{Error, Result};

/// The id of the flag naming the file.
const CONFIG: &str = "config";

/// Apply the config file named on `matches` (at the top level or in the subcommand given) to
/// `cmd`; says whether there was one, so the caller parses again.
pub(super) fn apply(cmd: &mut Command, matches: &ArgMatches) -> Result<bool> {
    let has_config = cmd.get_arguments().any(|a| a.get_id() == CONFIG);
    if has_config {
        if let Ok(Some(path)) = matches.try_get_one::<PathBuf>(CONFIG) {
            let path = path.clone();
            apply_file(cmd, &path)?;
            return Ok(true);
        }
    }
    match matches.subcommand() {
        Some((name, sub)) => match cmd.find_subcommand_mut(name) {
            Some(sub_cmd) => apply(sub_cmd, sub),
            None => Ok(false),
        },
        None => Ok(false),
    }
}

fn apply_file(cmd: &mut Command, path: &Path) -> Result<()> {
    let at = |msg: String| Error::Config(format!("config file {}: {msg}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| at(e.message().to_string()))?;
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != CONFIG)
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
            .find(|a| {
                a.get_long() == Some(long.as_str())
                    || a.get_visible_aliases()
                        .is_some_and(|v| v.contains(&long.as_str()))
            })
            .ok_or_else(|| {
                at(format!(
                    "unknown key {key:?} (keys are the long flags, e.g. workers, kind, queue)"
                ))
            })?;
        let takes_value = arg.get_action().takes_values();
        let many = matches!(arg.get_action(), clap::ArgAction::Append);
        let values: Vec<String> = match value {
            toml::Value::Array(items) if many => items
                .iter()
                .map(scalar)
                .collect::<Option<_>>()
                .ok_or_else(|| at(format!("{key}: expected a list of strings or numbers")))?,
            toml::Value::Boolean(b) if !takes_value => vec![b.to_string()],
            _ if !takes_value => return Err(at(format!("{key}: expected true or false"))),
            v => {
                vec![scalar(v).ok_or_else(|| at(format!("{key}: expected a string or a number")))?]
            }
        };
        let values: Vec<String> = match arg.get_value_delimiter() {
            Some(d) if many => values
                .iter()
                .flat_map(|v| v.split(d).map(str::to_string))
                .collect(),
            _ => values,
        };
        // The flag's own parser, on its own in a command of one flag.
        let check = Command::new("config").no_binary_name(true).arg(
            clap::Arg::new(arg.get_id().clone())
                .allow_hyphen_values(true)
                .value_parser(arg.get_value_parser().clone()),
        );
        for v in values.iter().filter(|_| takes_value) {
            if let Err(e) = check.clone().try_get_matches_from([OsStr::new(v)]) {
                let e = e.to_string();
                let first = e.lines().next().unwrap_or("").trim_start_matches("error: ");
                return Err(at(format!("{key} = {v:?}: {first}")));
            }
        }
        let id = arg.get_id().clone();
        // clap takes defaults as static strings; the file is read once per process.
        let values: Vec<&'static str> = values
            .into_iter()
            .map(|v| &*Box::leak(v.into_boxed_str()))
            .collect();
        let new = std::mem::replace(cmd, Command::new("config"));
        *cmd = new.mut_arg(id, |a| a.default_values(values));
    }
    Ok(())
}

/// A TOML scalar as a flag value.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}
