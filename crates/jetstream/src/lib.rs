//! Jetstream WebSocket client.
//!
//! This crate will hold the I/O half of the source: connecting to Jetstream v1 `/subscribe`,
//! filters, the cursor, zstd frames with the custom dictionary, reconnects with backoff and
//! host failover, and a liveness timeout. Decoding stays in `firehose-core`, which does no I/O.
//!
//! It has no content yet: see issue "Jetstream source".
