//! `firehose inspect`: decode every line of captures and summarise them.

use std::io::IsTerminal;

use firehose_import::{expand, inspect};

use crate::{Failure, print_summary};

/// Decode every line of captures of Jetstream events (files, directories, glob patterns or
/// `-`; gzip and zstd are read as they are) and print a summary: events per kind, per table
/// and per collection, and the lines that failed to decode.
///
/// Exit code 0 when every line decoded, 1 when some failed, 2 when an input cannot be read.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The captures, one Jetstream event per line; `-` reads standard input.
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// How many failed lines to show with their input, line number and reason.
    #[arg(long, default_value_t = 5)]
    show_errors: usize,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let inputs = expand(&args.inputs).map_err(|e| Failure::Usage(e.to_string()))?;
    let terminal = std::io::stderr().is_terminal();
    let summary = inspect(&inputs, args.show_errors, |lines| {
        if terminal {
            eprint!("\rinspected {lines} lines");
        }
    })
    .map_err(|e| Failure::Usage(e.to_string()))?;
    if terminal && summary.lines >= 1 << 16 {
        eprintln!();
    }
    print_summary(&summary, args.json, |out| write!(out, "{summary}"))?;
    if summary.errors > 0 {
        return Err(Failure::Data(format!(
            "{} of {} lines in {} failed to decode",
            summary.errors,
            summary.lines,
            firehose_import::describe(&inputs)
        )));
    }
    Ok(())
}
