//! Settings from a TOML file, as the lowest layer under flags and environment variables.
//!
//! The file's keys are the flags' long names (`out`, `jetstream-url`, `metrics-addr`; `_` may
//! stand for `-`). Each value becomes the default of its flag in every subcommand that has the
//! flag, so clap's own order applies: a flag beats its environment variable, which beats the
//! file. One file can serve `ingest` and `write` alike; a key no subcommand knows is an error
//! that names it.
//!
//! ```
//! use clap::{CommandFactory, FromArgMatches, Parser};
//! use firehose_pipeline::cli::{WriterArgs, settings_file};
//!
//! #[derive(Parser)]
//! enum Cli {
//!     Write(WriterArgs),
//! }
//! let path = std::env::temp_dir().join(format!("firehose-settings-doc-{}.toml", std::process::id()));
//! std::fs::write(&path, "out = \"/srv/archive\"\nmax_file_age = \"10m\"\n").unwrap();
//! let command = settings_file::apply(Cli::command(), &path).unwrap();
//! let matches = command.get_matches_from(["app", "write"]);
//! let Cli::Write(args) = Cli::from_arg_matches(&matches).unwrap();
//! assert_eq!(args.out, "/srv/archive");
//! assert_eq!(args.max_file_age.as_secs(), 600);
//! # std::fs::remove_file(&path).unwrap();
//! ```

use std::path::Path;

use clap::Command;

/// Applies the settings in the file at `path` to `command`'s subcommands.
pub fn apply(mut command: Command, path: &Path) -> Result<Command, SettingsError> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError(format!("cannot read the config file {name}: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The parser's own message quotes the line, which may hold a secret (a Redis URL
        // with its password): say where, not what.
        let at = e.span().map_or_else(String::new, |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        SettingsError(format!(
            "config file {name}: {}{at}",
            e.message().trim_end()
        ))
    })?;
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        let values = values(value).ok_or_else(|| {
            SettingsError(format!(
                "config file {name}: {key} must be a string, number, boolean or a list of them"
            ))
        })?;
        let mut known = false;
        let subcommands: Vec<String> = command
            .get_subcommands()
            .filter(|sub| sub.get_arguments().any(|a| a.get_long() == Some(&flag)))
            .map(|sub| sub.get_name().to_owned())
            .collect();
        for sub in subcommands {
            known = true;
            let values = values.clone();
            let flag = flag.clone();
            command = command.mut_subcommand(sub, move |sub| {
                let id = sub
                    .get_arguments()
                    .find(|a| a.get_long() == Some(flag.as_str()))
                    .map(|a| a.get_id().clone());
                match id {
                    // A setting whose environment value is hidden (it may hold a secret) keeps
                    // its value out of --help too.
                    Some(id) => sub.mut_arg(id, |arg| {
                        let hide = arg.is_hide_env_values_set();
                        arg.default_values(values).hide_default_value(hide)
                    }),
                    None => sub,
                }
            });
        }
        if !known || key == "config" {
            return Err(SettingsError(format!(
                "config file {name}: unknown setting {key:?} (settings are named like the flags, e.g. out, jetstream-url, metrics-addr)"
            )));
        }
    }
    Ok(command)
}

/// A TOML value as flag values.
fn values(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::Array(items) => items.iter().map(scalar).collect(),
        other => scalar(other).map(|v| vec![v]),
    }
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A settings file that cannot be used: unreadable, not TOML, or a key no flag has. The
/// message says where, never the value (it may be a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(String);
