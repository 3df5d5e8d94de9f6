//! Integration tests of the Redis backend against real `redis-server` processes.
//!
//! - `conformance`: the shared suite against the server at `REDIS_URL` (started by
//!   `scripts/test`), one unique stream key per test so they run in parallel.
//! - `servers`: cases that need a server configured in a particular way (an evicting
//!   policy, a restart with `appendfsync always`, a password and an ACL user, TLS). Each
//!   starts its own `redis-server` on a free loopback port in a temporary directory.
//!
//! Needs the `redis` and `conformance` features (`cargo nextest run -p firehose-buffer
//! --all-features`, as `scripts/test` runs it).
//!
//! Without `REDIS_URL` (or without `redis-server` on `PATH`), a test prints that it was not
//! run and returns, unless `FIREHOSE_REQUIRE_SERVERS=1`, in which case it fails.

// Test helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod server;
mod servers;
