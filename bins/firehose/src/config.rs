//! Settings from a TOML file, as the lowest layer under flags and environment variables.
//!
//! The file's keys are the flags' long names (`out`, `jetstream-url`, `metrics-addr`; `_` may
//! stand for `-`). Each value becomes the default of its flag in every subcommand that has the
//! flag, so clap's own order applies: a flag beats its environment variable, which beats the
//! file. One file can serve `ingest` and `write` alike; a key no subcommand knows is an error
//! that names it.

use std::path::Path;

use clap::Command;

use crate::Failure;

/// Applies the settings in the file at `path` to `command`'s subcommands.
pub(crate) fn apply(mut command: Command, path: &Path) -> Result<Command, Failure> {
    let name = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Usage(format!("cannot read the config file {name}: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The parser's own message quotes the line, which may hold a secret (a Redis URL
        // with its password): say where, not what.
        let at = e.span().map_or_else(String::new, |span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!(" at line {line}, column {column}")
        });
        Failure::Usage(format!(
            "config file {name}: {}{at}",
            e.message().trim_end()
        ))
    })?;
    for (key, value) in &table {
        let flag = key.replace('_', "-");
        let values = values(value).ok_or_else(|| {
            Failure::Usage(format!(
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
            return Err(Failure::Usage(format!(
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
