use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use firehose_jetstream::{Config, Message, Source};
use firehose_synth::Generator;

use crate::firehose;

/// Starts `firehose mock-jetstream` with `args`; returns the child and the URL it printed.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .arg("mock-jetstream")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the firehose binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim_end().to_owned())
}

/// Sends SIGTERM and returns the exit code and standard error.
fn terminate(mut child: Child) -> (Option<i32>, String) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stderr)
}

#[test]
fn serves_the_generated_events_with_faults_and_stops_on_sigterm() {
    let start_time_us = 1_780_000_000_000_000i64;
    let (child, url) = start(&[
        "--port",
        "0",
        "--events",
        "3000",
        "--seed",
        "8",
        "--start-time-us",
        &start_time_us.to_string(),
        "--rate",
        "5000",
        "--drop-every",
        "0.1",
        "--duplicate-every",
        "10",
        "--progress-every",
        "0.1",
    ]);
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    assert!(url.ends_with("/subscribe"), "{url}");

    let expected: Vec<String> = Generator::new(firehose_synth::Config {
        seed: 8,
        start_time_us,
        rate: 5000.0,
        ..firehose_synth::Config::default()
    })
    .take(3000)
    .map(|event| event.to_json())
    .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let received = runtime.block_on(async {
        let config = Config {
            urls: vec![url],
            rewind: Duration::from_millis(100),
            backoff_min: Duration::from_millis(10),
            ..Config::default()
        };
        // From the first event: the paced server publishes from the moment it starts.
        let mut source = Source::new(config, Some(start_time_us)).unwrap();
        let mut seen = std::collections::HashSet::new();
        let mut distinct = Vec::new();
        let read = async {
            while distinct.len() < expected.len() {
                if let Message::Event { json, .. } = source.next().await.unwrap() {
                    let json = String::from_utf8(json.to_vec()).unwrap();
                    if seen.insert(json.clone()) {
                        distinct.push(json);
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(120), read)
            .await
            .expect("all events arrive in time");
        distinct
    });
    assert_eq!(received, expected);

    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("events published"), "progress: {stderr}");
    // The last line: "mock-jetstream: stopped; P events published, S sent (B bytes) over C
    // connections; faults: ...".
    let last = stderr.lines().last().unwrap();
    let words: Vec<&str> = last.split_whitespace().collect();
    assert!(last.starts_with("mock-jetstream: stopped; "), "{stderr}");
    let sent: usize = words[5].parse().unwrap();
    let connections: usize = words[10].parse().unwrap();
    assert!(
        connections >= 2,
        "the drops made the client reconnect: {last}"
    );
    assert!(sent > expected.len(), "duplicates and rewinds: {last}");
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = firehose(
        &[
            "mock-jetstream",
            "--port",
            "0",
            "--zstd-dictionary",
            "/nonexistent/dictionary",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot read the zstd dictionary /nonexistent/dictionary"),
        "{stderr}"
    );
    let out = firehose(
        &["mock-jetstream", "--port", "0", "--drop-every", "-1"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let out = firehose(&["mock-jetstream", "--help"], b"");
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--rate",
        "--events",
        "--replay",
        "--seed",
        "--zstd-dictionary",
        "--drop-every",
        "--stall-after",
        "--malformed-every",
        "--duplicate-every",
        "--reorder-every",
    ] {
        assert!(help.contains(flag), "--help explains {flag}");
    }
}
