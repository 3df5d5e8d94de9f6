//! The buffer between the Jetstream ingest and the Parquet writer.
//!
//! It has no content yet: see issue "Buffer crate".
