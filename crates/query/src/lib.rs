//! Query facade over a firehose dataset.
//!
//! This crate will register every table of a dataset (local or S3) in DataFusion with its Hive
//! partition columns, remove duplicate events by event key, offer typed queries that build
//! expressions instead of SQL strings, and run read-only SQL under time and memory limits.
//!
//! It has no content yet: see issue "Query facade".
