//! Decoding every line of captures and tallying what they hold, without writing anything.

use std::collections::BTreeMap;
use std::fmt;

use firehose_core::Event;
use serde::Serialize;

use crate::input::{Input, trim_line_end};
use crate::{Error, LineError, Result};

/// What [`inspect`] found.
#[derive(Debug, Default, Serialize)]
pub struct Inspection {
    /// Lines read, blank ones included.
    pub lines: u64,
    /// Blank lines (skipped, not errors).
    pub blank: u64,
    /// Lines that decoded.
    pub events: u64,
    /// Lines that failed to decode.
    pub errors: u64,
    /// Events per kind (`commit`, `identity`, `account`).
    pub kinds: BTreeMap<&'static str, u64>,
    /// Events per table.
    pub tables: BTreeMap<&'static str, u64>,
    /// Commit events per collection.
    pub collections: BTreeMap<String, u64>,
    /// Failures per category (`syntax`, `truncated`, `shape`, `envelope`).
    pub error_categories: BTreeMap<&'static str, u64>,
    /// The first few failures, in input order.
    pub first_errors: Vec<LineError>,
}

/// Lines between calls of the progress callback.
const PROGRESS_EVERY: u64 = 1 << 16;

/// Reads every input line by line (bytes, so invalid UTF-8 is reported, not fatal) and tallies
/// it, keeping the first `keep_errors` failures. `progress` is called with the lines read so
/// far every 65,536 lines.
pub fn inspect(
    inputs: &[Input],
    keep_errors: usize,
    mut progress: impl FnMut(u64),
) -> Result<Inspection> {
    let mut summary = Inspection::default();
    let mut line = Vec::with_capacity(4096);
    for input in inputs {
        let mut reader = input.open()?;
        let mut number = 0u64;
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(|source| Error::Read {
                    input: input.name(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            number += 1;
            summary.lines += 1;
            if summary.lines % PROGRESS_EVERY == 0 {
                progress(summary.lines);
            }
            let text = trim_line_end(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                summary.blank += 1;
                continue;
            }
            match Event::decode(text) {
                Ok(event) => summary.count(&event),
                Err(e) => {
                    summary.errors += 1;
                    *summary.error_categories.entry(e.category()).or_default() += 1;
                    if summary.first_errors.len() < keep_errors {
                        summary.first_errors.push(LineError {
                            input: input.name(),
                            line: number,
                            error: e.to_string(),
                        });
                    }
                }
            }
        }
    }
    Ok(summary)
}

impl Inspection {
    fn count(&mut self, event: &Event<'_>) {
        self.events += 1;
        *self.kinds.entry(event.kind().as_str()).or_default() += 1;
        *self.tables.entry(event.table().name()).or_default() += 1;
        if let Some(commit) = event.commit() {
            if let Some(n) = self.collections.get_mut(commit.collection.as_ref()) {
                *n += 1;
            } else {
                self.collections.insert(commit.collection.to_string(), 1);
            }
        }
    }
}

/// The summary for people: totals, then kinds, tables and collections by count, then the
/// failures.
impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} lines: {} events decoded, {} failed, {} blank",
            self.lines, self.events, self.errors, self.blank
        )?;
        section(f, "kinds", self.kinds.iter().map(|(k, v)| (*k, *v)))?;
        section(f, "tables", self.tables.iter().map(|(k, v)| (*k, *v)))?;
        section(
            f,
            "collections",
            self.collections.iter().map(|(k, v)| (k.as_str(), *v)),
        )?;
        if self.errors > 0 {
            section(
                f,
                "errors by category",
                self.error_categories.iter().map(|(k, v)| (*k, *v)),
            )?;
            writeln!(f, "\nfirst errors")?;
            for e in &self.first_errors {
                writeln!(f, "  {e}")?;
            }
        }
        Ok(())
    }
}

/// A titled table of counts, largest first.
fn section<'a>(
    f: &mut fmt::Formatter<'_>,
    title: &str,
    rows: impl Iterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut rows: Vec<_> = rows.collect();
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(f, "\n{title}")?;
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (name, n) in rows {
        writeln!(f, "  {name:<width$}  {n:>10}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_events_errors_and_blank_lines() {
        let dir = std::env::temp_dir().join(format!("firehose-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mixed.jsonl");
        let input = concat!(
            r#"{"did":"did:plc:a","time_us":1,"kind":"identity","identity":{"did":"did:plc:a","seq":1,"time":"t"}}"#,
            "\r\n\n",
            r#"{"did":"did:plc:a","time_us":2,"kind":"commit","commit":{"rev":"r","operation":"delete","collection":"x.y.z","rkey":"k"}}"#,
            "\n{\"did\":\n",
            "not json\n",
        );
        std::fs::write(&path, input).unwrap();
        let mut calls = 0;
        let s = inspect(&[Input::File(path.clone())], 1, |_| calls += 1).unwrap();
        assert_eq!((s.lines, s.blank, s.events, s.errors), (5, 1, 2, 2));
        assert_eq!(s.tables["identity"], 1);
        assert_eq!(s.tables["records"], 1);
        assert_eq!(s.collections["x.y.z"], 1);
        assert_eq!(s.first_errors.len(), 1);
        assert_eq!(s.first_errors[0].line, 4);
        assert_eq!(s.first_errors[0].input, path.display().to_string());
        assert_eq!(s.error_categories["truncated"], 1);
        assert_eq!(s.error_categories["syntax"], 1);
        assert_eq!(calls, 0, "no progress before 65,536 lines");
        let text = s.to_string();
        assert!(
            text.starts_with("5 lines: 2 events decoded, 2 failed, 1 blank\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("  {}:4: ", path.display())),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
