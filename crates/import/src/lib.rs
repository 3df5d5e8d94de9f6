//! Bulk work on captures of Jetstream events (one JSON object a line, plain, gzip or zstd,
//! as `websocat` captures or the JSONBench corpus come): [`inspect`] what they hold, and
//! [`import`] them into a dataset with every core.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use firehose_import::{ImportOptions, expand, import};
//! let dir = std::env::temp_dir().join(format!("firehose-import-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let capture = dir.join("capture.jsonl");
//! std::fs::write(
//!     &capture,
//!     concat!(
//!         r#"{"did":"did:plc:abc","time_us":1763596800000000,"kind":"identity","identity":{"did":"did:plc:abc","seq":1,"time":"2025-11-20T00:00:00Z"}}"#,
//!         "\nnot json\n",
//!     ),
//! )?;
//! let inputs = expand(&[capture.to_str().ok_or("path")?])?;
//! let storage = firehose_sink::open(dir.join("data").to_str().ok_or("path")?).await?;
//! let summary = import(&inputs, storage, &ImportOptions::default(), |_| {}).await?;
//! assert_eq!((summary.events, summary.errors, summary.files), (1, 1, 1));
//! assert_eq!(summary.first_errors[0].line, 2);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! # Why a crate of its own
//!
//! The live pipeline writes what arrives, a few thousand events a second; bulk work reads
//! what is already captured, as fast as the machine allows, and its bottleneck is the CPU.
//! So an import cuts its inputs into units of lines that threads decode and encode in
//! parallel, and it names each unit's files after its lines and content, so the output is the
//! same whatever the number of threads and an interrupted import is simply run again.

mod import;
pub mod input;
mod inspect;

use std::fmt;

use serde::Serialize;

pub use crate::import::{ImportOptions, ImportProgress, ImportSummary, import};
pub use crate::input::{Input, describe, expand};
pub use crate::inspect::{Inspection, inspect};

/// A line that failed to decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    /// The input's name ([`Input::name`]).
    pub input: String,
    /// The line number in that input, from 1.
    pub line: u64,
    /// Why it failed.
    pub error: String,
}

/// `input:line: error`, as compilers report.
impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.input, self.line, self.error)
    }
}

/// What can stop an inspection or an import. Lines that fail to decode do not: they are
/// counted and reported in the summary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument named no input.
    #[error("{0}")]
    NoInput(String),
    /// An input could not be read (or decompressed).
    #[error("cannot read {input}: {source}")]
    Read {
        /// The input's name.
        input: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A unit of lines could not be written.
    #[error("writing lines {lines} of {input}: {source}")]
    Write {
        /// The input's name.
        input: String,
        /// The line range, `first-last`.
        lines: String,
        /// The cause.
        source: firehose_sink::Error,
    },
    /// A setting is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(&'static str),
    /// A batch name could not be formed.
    #[error(transparent)]
    Sink(#[from] firehose_sink::Error),
    /// A worker thread panicked.
    #[error("an import thread failed: {0}")]
    Worker(String),
}

/// This crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
