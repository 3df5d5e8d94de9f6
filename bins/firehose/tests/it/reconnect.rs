//! A Jetstream that is not there: `firehose run` must keep trying, whatever happens, and
//! `/health` must say so while nothing can be received. See: issue 18 (a server unreachable at
//! start was never tried again, and `/health` said ok for ever).
//!
//! The server is the Jetstream-protocol mock, started on a fixed port late, or killed and
//! started again. The source's backoff is the default (250 ms doubling to 30 s), so each test
//! checks that events arrive within `backoff_max` plus 5 s of the server being up.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{
    Proc, figure, free_port, http_get, metrics, mock_on, now_us, start, temp_dir, total, wait_until,
};

/// The source's default `backoff_max`.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The test's liveness timeout: no connection for longer than this is unhealthy.
const LIVENESS: &str = "1s";
/// The test's allowed silence: no event for longer than this is unhealthy.
const SILENCE: &str = "10s";

/// `firehose run` from a Jetstream on `port` into `dir/ds`; its `/health` and `/metrics` on
/// the returned address.
fn run(dir: &Path, port: u16) -> (Proc, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let url = format!("ws://127.0.0.1:{port}/subscribe");
    let out = dir.join("ds");
    let run = start(
        "run",
        dir,
        &[
            "run",
            "--jetstream-url",
            &url,
            "--out",
            out.to_str().unwrap(),
            "--metrics-addr",
            &addr,
            "--liveness-timeout",
            LIVENESS,
            "--max-event-silence",
            SILENCE,
        ],
        &[],
    );
    wait_until(
        "the metrics server answers",
        Duration::from_secs(30),
        || http_get(&addr, "/health").is_some(),
    );
    (run, addr)
}

/// A mock Jetstream on `port`, publishing live events at 500 a second.
fn jetstream(port: u16, seed: u64) -> Proc {
    mock_on(port, seed, 1_000_000, now_us(), &["--rate", "500"]).0
}

fn received(addr: &str) -> f64 {
    total(&metrics(addr), "firehose_events_received_total")
}

/// `/health`: its status code and body.
fn health(addr: &str) -> (u16, String) {
    http_get(addr, "/health").unwrap_or((0, String::new()))
}

/// Asserts that `/health` is 503 for the reason `reason`, now and at every second until
/// `until`, and that no event arrives meanwhile.
fn unhealthy_until(addr: &str, reason: &str, until: Instant) {
    let before = received(addr);
    loop {
        let (status, body) = health(addr);
        assert_eq!(status, 503, "/health while Jetstream is away: {body}");
        assert!(body.contains(reason), "{reason:?} not in {body}");
        if Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_secs(1).min(until - Instant::now()));
    }
    assert_eq!(received(addr), before, "events while Jetstream is away");
}

/// Waits for events after the server came up at `up`: they must arrive within `backoff_max`
/// plus 5 s, and `/health` must then say ok. Returns how long the first one took.
fn events_arrive(addr: &str, up: Instant, after: f64) -> Duration {
    let bound = BACKOFF_MAX + Duration::from_secs(5);
    wait_until("events arrive", bound.saturating_sub(up.elapsed()), || {
        received(addr) > after
    });
    let took = up.elapsed();
    wait_until("/health is ok", Duration::from_secs(10), || {
        health(addr).0 == 200
    });
    took
}

/// The server comes up `delay` after `run` started.
fn comes_up_late(name: &str, delay: Duration) {
    let dir = temp_dir(name);
    let port = free_port();
    let started = Instant::now();
    let (run, addr) = run(&dir, port);
    // Unhealthy once the liveness timeout has passed without a connection...
    wait_until("/health is 503", Duration::from_secs(5), || {
        health(&addr).0 == 503
    });
    unhealthy_until(&addr, "no connection to Jetstream", started + delay);
    // ... and, past the allowed silence, for that too.
    if delay > Duration::from_secs(12) {
        assert!(health(&addr).1.contains("no event from Jetstream"));
    }
    let _jetstream = jetstream(port, 1);
    let up = Instant::now();
    let took = events_arrive(&addr, up, 0.0);
    figure(
        name,
        format_args!("first event {took:.1?} after the server came up {delay:?} after run"),
    );
    assert_eq!(run.terminate(), 0);
}

#[test]
fn r18_jetstream_up_3s_after_run() {
    comes_up_late("r18-3s", Duration::from_secs(3));
}

#[test]
fn r18_jetstream_up_65s_after_run() {
    comes_up_late("r18-65s", Duration::from_secs(65));
}

#[test]
fn r18_jetstream_away_for_40s_in_the_middle_of_a_run() {
    let dir = temp_dir("r18-away");
    let port = free_port();
    let mut jetstream_first = jetstream(port, 2);
    let (run, addr) = run(&dir, port);
    wait_until("events arrive", Duration::from_secs(30), || {
        received(&addr) > 0.0
    });
    wait_until("/health is ok", Duration::from_secs(10), || {
        health(&addr).0 == 200
    });

    jetstream_first.kill();
    let away = Instant::now();
    wait_until("/health is 503", Duration::from_secs(5), || {
        health(&addr).0 == 503
    });
    unhealthy_until(
        &addr,
        "no connection to Jetstream",
        away + Duration::from_secs(40),
    );
    assert!(health(&addr).1.contains("no event from Jetstream"));

    let before = received(&addr);
    let _jetstream = jetstream(port, 3);
    let up = Instant::now();
    let took = events_arrive(&addr, up, before);
    figure(
        "r18-away",
        format_args!("first event {took:.1?} after the server came back from 40 s away"),
    );
    assert_eq!(run.terminate(), 0);
}
