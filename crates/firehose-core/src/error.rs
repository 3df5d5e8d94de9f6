//! Errors.

/// Why an input line is not a Jetstream event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON at all (or not UTF-8).
    #[error("malformed JSON: {source}")]
    Syntax {
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// The input is not UTF-8, as JSON must be.
    #[error("invalid UTF-8 at byte {offset}")]
    Utf8 {
        /// Where the first invalid byte sequence starts.
        offset: usize,
    },
    /// The input ends in the middle of the JSON value.
    #[error("truncated JSON: {source}")]
    Truncated {
        /// The parser's error, with line and column.
        source: serde_json::Error,
    },
    /// JSON, but a field of the envelope is missing or has the wrong type.
    #[error("not a Jetstream event: {source}")]
    Shape {
        /// The parser's error naming the field, with line and column.
        source: serde_json::Error,
    },
    /// The envelope parsed but is inconsistent.
    #[error("not a Jetstream event: {reason}")]
    Envelope {
        /// What is wrong.
        reason: String,
    },
}

impl DecodeError {
    pub(crate) fn from_json(source: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match source.classify() {
            Category::Eof => DecodeError::Truncated { source },
            Category::Data => DecodeError::Shape { source },
            Category::Syntax | Category::Io => DecodeError::Syntax { source },
        }
    }

    /// A short, stable name for the kind of failure (for counters and dead letters).
    pub fn category(&self) -> &'static str {
        match self {
            DecodeError::Syntax { .. } | DecodeError::Utf8 { .. } => "syntax",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Shape { .. } => "shape",
            DecodeError::Envelope { .. } => "envelope",
        }
    }
}

/// Errors from building Arrow batches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArrowBuildError {
    /// Arrow refused the columns for a table (a bug: schema and builders disagree).
    #[error("building the {table} batch: {source}")]
    Arrow {
        /// The table.
        table: &'static str,
        /// Arrow's error.
        source: arrow_schema::ArrowError,
    },
}
