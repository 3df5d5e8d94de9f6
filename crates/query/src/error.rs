//! The crate's error type.

use std::time::Duration;

use datafusion::error::DataFusionError;

/// Errors of the query facade.
///
/// [`Error::is_refused`] separates a query that is not accepted (bad SQL, a statement that is
/// not read-only, bad arguments: the caller's fault, exit code 2 / HTTP 400) from a failure
/// while running an accepted one (exit code 1 / HTTP 5xx).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The query is not allowed or not valid: it never ran.
    #[error("query refused: {reason}")]
    Refused {
        /// Why, for the person who wrote it.
        reason: String,
    },
    /// An argument of a typed call is invalid (e.g. a malformed day).
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// The argument.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The dataset could not be opened (bad location or storage settings).
    #[error("cannot open the dataset at {location}: {reason}")]
    Open {
        /// The location given.
        location: String,
        /// Why.
        reason: String,
    },
    /// The query ran longer than its time limit and was cancelled.
    #[error("query exceeded its time limit of {limit:?} and was cancelled")]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// The query needed more memory than its limit allows.
    #[error("query exceeded its memory limit of {limit} bytes: {message}")]
    MemoryLimit {
        /// The limit.
        limit: usize,
        /// DataFusion's account of it.
        message: String,
    },
    /// The result has more rows than allowed.
    #[error("the result has more than {limit} rows; add a LIMIT or narrow the query")]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// Running the query failed (storage, corrupt files, ...).
    #[error("query failed: {0}")]
    Execution(#[source] DataFusionError),
    /// Writing the result failed.
    #[error("writing the result: {0}")]
    Output(String),
    /// A result does not have the columns a typed row needs.
    #[error("cannot read column {column:?} of the result: {reason}")]
    Column {
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// True when the query was not accepted (the caller's fault: exit code 2, HTTP 400).
    pub fn is_refused(&self) -> bool {
        matches!(self, Error::Refused { .. } | Error::InvalidArgument { .. })
    }

    pub(crate) fn refused(reason: impl Into<String>) -> Self {
        Error::Refused {
            reason: reason.into(),
        }
    }

    /// Classifies an error from planning: the query's fault (unknown column, bad syntax, type
    /// errors) unless it comes from storage or resources.
    pub(crate) fn from_planning(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_)
            | DataFusionError::ResourcesExhausted(_)
            | DataFusionError::External(_)
            | DataFusionError::Internal(_) => Error::Execution(e),
            _ => Error::Refused {
                reason: strip_context(&e),
            },
        }
    }

    pub(crate) fn from_execution(e: DataFusionError, memory_limit: usize) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(message) => Error::MemoryLimit {
                limit: memory_limit,
                message: message.clone(),
            },
            _ => Error::Execution(e),
        }
    }
}

/// DataFusion's message without its long backtrace-like chain of contexts.
fn strip_context(e: &DataFusionError) -> String {
    let root = e.find_root().to_string();
    root.lines().next().unwrap_or_default().to_owned()
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
