//! Integration tests of firehose-core, in one binary: the project's fixtures
//! (`tests/fixtures/*.cases`), edge cases checked field by field after the Arrow conversion,
//! the real Jetstream capture in `../shared` when it is there, and property tests.

// Helpers outside `#[test]` functions panic on bad fixtures too: clippy's allow-*-in-tests
// settings do not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod capture;
mod common;
mod edge;
mod fixtures;
mod props;
