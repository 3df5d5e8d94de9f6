//! Integration tests of the query facade on generated datasets (local and S3).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod answers;
mod common;
mod compacted;
mod local;
mod marked;
mod pruning;
mod s3;
mod safety;
