//! `firehose inspect`: decode every line of a JSON-lines file and summarise it.

use std::collections::BTreeMap;
use std::io::{self, BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use firehose_core::Event;
use serde::Serialize;

use crate::{Failure, open_lines, print_summary};

/// Decode every line of a Jetstream JSON-lines file and print a summary: events per kind,
/// per table and per collection, and the lines that failed to decode.
///
/// Exit code 0 when every line decoded, 1 when some failed, 2 when the file cannot be read.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The file to read, one Jetstream event per line; `-` reads standard input.
    file: PathBuf,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// How many failed lines to show with their line number and reason.
    #[arg(long, default_value_t = 5)]
    show_errors: usize,
}

/// What `inspect` found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Summary {
    /// Lines read, blank ones included.
    pub(crate) lines: u64,
    /// Blank lines (skipped, not errors).
    pub(crate) blank: u64,
    /// Lines that decoded.
    pub(crate) events: u64,
    /// Lines that failed to decode.
    pub(crate) errors: u64,
    /// Events per kind.
    pub(crate) kinds: BTreeMap<&'static str, u64>,
    /// Events per table.
    pub(crate) tables: BTreeMap<&'static str, u64>,
    /// Commit events per collection.
    pub(crate) collections: BTreeMap<String, u64>,
    /// Failures per category (`syntax`, `truncated`, `shape`, `envelope`).
    pub(crate) error_categories: BTreeMap<&'static str, u64>,
    /// The first few failures.
    pub(crate) first_errors: Vec<LineError>,
}

/// One line that failed to decode.
#[derive(Debug, Serialize)]
pub(crate) struct LineError {
    pub(crate) line: u64,
    pub(crate) error: String,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let (name, reader) = open_lines(&args.file)?;
    let summary = summarise(reader, args.show_errors, io::stderr().is_terminal())
        .map_err(|e| Failure::Usage(format!("cannot read {name}: {e}")))?;
    print_summary(&summary, args.json, |out| print_text(out, &summary))?;
    if summary.errors > 0 {
        return Err(Failure::Data(format!(
            "{} of {} lines in {name} failed to decode",
            summary.errors, summary.lines
        )));
    }
    Ok(())
}

/// Reads `input` line by line (bytes, so invalid UTF-8 is reported, not fatal) and tallies it.
pub(crate) fn summarise(
    mut input: impl BufRead,
    keep_errors: usize,
    progress: bool,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let mut line = Vec::with_capacity(4096);
    let started = Instant::now();
    let mut next_progress = Duration::from_secs(2);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        summary.lines += 1;
        let text = trim_line_end(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            summary.blank += 1;
            continue;
        }
        match Event::decode(text) {
            Ok(event) => {
                summary.events += 1;
                *summary.kinds.entry(event.kind().as_str()).or_default() += 1;
                *summary.tables.entry(event.table().name()).or_default() += 1;
                if let Some(commit) = event.commit() {
                    if let Some(n) = summary.collections.get_mut(commit.collection.as_ref()) {
                        *n += 1;
                    } else {
                        summary.collections.insert(commit.collection.to_string(), 1);
                    }
                }
            }
            Err(e) => {
                summary.errors += 1;
                *summary.error_categories.entry(e.category()).or_default() += 1;
                if summary.first_errors.len() < keep_errors {
                    summary.first_errors.push(LineError {
                        line: summary.lines,
                        error: e.to_string(),
                    });
                }
            }
        }
        if progress && summary.lines % 65_536 == 0 && started.elapsed() >= next_progress {
            next_progress = started.elapsed() + Duration::from_secs(2);
            eprint!(
                "\rinspected {} lines ({} errors)",
                summary.lines, summary.errors
            );
        }
    }
    if progress && started.elapsed() >= Duration::from_secs(2) {
        eprintln!();
    }
    Ok(summary)
}

/// A line without its `\n` or `\r\n` ending.
pub(crate) fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn print_text(out: &mut dyn Write, s: &Summary) -> io::Result<()> {
    writeln!(
        out,
        "{} lines: {} events decoded, {} failed, {} blank",
        s.lines, s.events, s.errors, s.blank
    )?;
    let section = |out: &mut dyn Write, title: &str, rows: Vec<(&str, u64)>| -> io::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        writeln!(out, "\n{title}")?;
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut rows = rows;
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (name, n) in rows {
            writeln!(out, "  {name:<width$}  {n:>10}")?;
        }
        Ok(())
    };
    section(
        out,
        "kinds",
        s.kinds.iter().map(|(k, v)| (*k, *v)).collect(),
    )?;
    section(
        out,
        "tables",
        s.tables.iter().map(|(k, v)| (*k, *v)).collect(),
    )?;
    section(
        out,
        "collections",
        s.collections
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect(),
    )?;
    if s.errors > 0 {
        section(
            out,
            "errors by category",
            s.error_categories.iter().map(|(k, v)| (*k, *v)).collect(),
        )?;
        writeln!(out, "\nfirst errors")?;
        for e in &s.first_errors {
            writeln!(out, "  line {}: {}", e.line, e.error)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_events_errors_and_blank_lines() {
        let input = concat!(
            r#"{"did":"did:plc:a","time_us":1,"kind":"identity","identity":{"did":"did:plc:a","seq":1,"time":"t"}}"#,
            "\r\n\n",
            r#"{"did":"did:plc:a","time_us":2,"kind":"commit","commit":{"rev":"r","operation":"delete","collection":"x.y.z","rkey":"k"}}"#,
            "\n{\"did\":\n",
            "not json\n",
        );
        let s = summarise(input.as_bytes(), 1, false).unwrap();
        assert_eq!((s.lines, s.blank, s.events, s.errors), (5, 1, 2, 2));
        assert_eq!(s.tables["identity"], 1);
        assert_eq!(s.tables["records"], 1);
        assert_eq!(s.collections["x.y.z"], 1);
        assert_eq!(s.first_errors.len(), 1);
        assert_eq!(s.first_errors[0].line, 4);
        assert_eq!(s.error_categories["truncated"], 1);
        assert_eq!(s.error_categories["syntax"], 1);
    }
}
