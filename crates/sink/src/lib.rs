//! Parquet sink for the firehose archive.
//!
//! This crate will hold the writer that turns batches of events into Arrow record batches and
//! Hive-partitioned Parquet files (`<root>/<table>/year=YYYY/month=MM/day=DD/hour=HH/<name>.parquet`)
//! on a local directory or S3-compatible storage, with names derived from the buffer ids of the
//! batch so a retried write replaces the same object instead of adding one. Compaction and
//! retention, the jobs object-store lifecycle rules would otherwise do, live here too.
//!
//! It has no content yet: see issue "Parquet sink".
