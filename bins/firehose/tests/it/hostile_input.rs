//! Hostile input end to end: `firehose mock-jetstream --frames` sends a script of good events
//! with bad messages among them (malformed and truncated JSON, wrong types, missing fields, NUL
//! bytes, deep nesting, huge numbers, corrupt, truncated and exploding zstd frames, text that
//! is not UTF-8, a message over the size limit) through `firehose run`, and through `ingest` →
//! Redis → `write`. Every good event is stored once, every bad message is in `dead_letters`
//! with its reason, the counters agree with the table, and the process stays healthy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::{Array, StringArray};
use base64::Engine as _;
use firehose_core::{Event, Table};
use firehose_synth::{Config, Generator};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;

use crate::harness::{
    Proc, START_US, deduplicated, free_port, http_get, local_dataset, metrics, start, temp_dir,
    total,
};
use crate::parquet_files;

/// A dead letter the script must produce: its reason, its bytes (empty for a frame that broke
/// the WebSocket protocol, which is dropped with the connection), how often.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Letter {
    reason: String,
    raw: Vec<u8>,
}

impl std::fmt::Debug for Letter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.raw);
        let shown: String = text.chars().take(60).collect();
        write!(f, "{} {shown:?} ({} bytes)", self.reason, self.raw.len())
    }
}

/// What `got` has more or less than `want`.
fn difference(got: &BTreeMap<Letter, usize>, want: &BTreeMap<Letter, usize>) -> Vec<(Letter, i64)> {
    let mut keys: Vec<&Letter> = got.keys().chain(want.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| {
            let d = *got.get(k).unwrap_or(&0) as i64 - *want.get(k).unwrap_or(&0) as i64;
            (d != 0).then(|| (k.clone(), d))
        })
        .collect()
}

struct Script {
    frames: PathBuf,
    dictionary: PathBuf,
    /// The events that must be stored, `time_us` per table.
    events: BTreeMap<Table, Vec<i64>>,
    letters: BTreeMap<Letter, usize>,
}

/// Generated events at 50 a second (30 s of events), with the bad messages and some odd but
/// valid events among them. The two frames that break the protocol sit more than the rewind
/// (5 s) after everything else, so the replays they cause (the client reconnects from the
/// cursor less the rewind, meets the frame again, then skips past it) repeat only themselves.
fn script(dir: &Path) -> Script {
    const GOOD: usize = 1500;
    let good: Vec<String> = Generator::new(Config {
        seed: 41,
        start_time_us: START_US,
        rate: 50.0,
        ..Config::default()
    })
    .take(GOOD)
    .map(|e| e.to_json())
    .collect();
    let time_of = |i: usize| Event::decode(good[i].as_bytes()).unwrap().time_us;

    let mut inserts: BTreeMap<usize, Vec<(serde_json::Value, Option<Letter>)>> = BTreeMap::new();
    let mut letter = |at: usize, frame: serde_json::Value, reason: &str, raw: &[u8]| {
        inserts.entry(at).or_default().push((
            frame,
            Some(Letter {
                reason: reason.into(),
                raw: raw.to_vec(),
            }),
        ));
    };
    let text = |s: &str| json!({ "text": s });
    let t = time_of(99);
    let mut at = 100;
    let mut bad_text = |s: String, reason: &str| {
        letter(at, text(&s), reason, s.as_bytes());
        at += 20;
    };
    // Not JSON; a NUL byte first (the buffer's framing of dead letters starts with one).
    bad_text("not json at all".into(), "json");
    bad_text(format!("\0{}", good[5]), "json");
    // A raw NUL byte inside a string.
    bad_text(
        format!(
            r#"{{"did":"did:plc:nul","time_us":{t},"kind":"identity","identity":{{"did":"d","seq":1,"time":"a{}b"}}}}"#,
            '\0'
        ),
        "syntax",
    );
    // Truncated, and malformed after a good start.
    bad_text(good[7][..good[7].len() / 2].to_owned(), "truncated");
    bad_text(
        format!(
            r#"{{"did":"did:plc:comma","time_us":{t},"kind":"identity","identity":{{"did":"d","seq":1,"time":"t"}},}}"#
        ),
        "syntax",
    );
    // Wrong types, missing fields, an inconsistent envelope, deep nesting in the envelope.
    bad_text(
        format!(
            r#"{{"did":42,"time_us":{t},"kind":"identity","identity":{{"did":"d","seq":1,"time":"t"}}}}"#
        ),
        "shape",
    );
    bad_text(
        format!(r#"{{"did":"did:plc:nokind","time_us":{t}}}"#),
        "shape",
    );
    bad_text(
        format!(r#"{{"did":"did:plc:nocommit","time_us":{t},"kind":"commit"}}"#),
        "envelope",
    );
    bad_text(
        format!(
            r#"{{"did":"did:plc:deep","time_us":{t},"kind":{}1{}}}"#,
            "[".repeat(50_000),
            "]".repeat(50_000)
        ),
        "shape",
    );
    // Huge numbers where the time goes.
    bad_text(
        r#"{"did":"did:plc:huge","time_us":99999999999999999999,"kind":"identity"}"#.into(),
        "json",
    );
    bad_text(
        r#"{"did":"did:plc:huge","time_us":1e30,"kind":"identity"}"#.into(),
        "json",
    );
    // Binary frames: not zstd, garbage after the zstd magic, a truncated zstd frame, a zstd
    // bomb (16 MiB + 1 of spaces in a few KB), zstd of bytes that are not UTF-8.
    let at_binary = at;
    letter(
        at_binary,
        json!({ "binary_hex": "68656c6c6f" }),
        "zstd",
        b"hello",
    );
    letter(
        at_binary + 1,
        json!({ "binary_hex": "28b52ffd67617262616765" }),
        "zstd",
        b"\x28\xb5\x2f\xfdgarbage",
    );
    let truncated = zstd_truncated(dir, &good[9], 20);
    letter(
        at_binary + 2,
        json!({ "zstd": good[9], "truncate": 20, "time_us": t }),
        "zstd",
        &truncated,
    );
    let bomb = firehose_jetstream::MAX_EVENT_BYTES + 1;
    letter(
        at_binary + 3,
        json!({ "zstd": " ", "repeat": bomb }),
        "oversized",
        &zstd_of(dir, &vec![b' '; bomb]),
    );
    letter(
        at_binary + 4,
        json!({ "zstd_hex": "7b22ff22fe7d" }),
        "utf8",
        &zstd_of(dir, b"{\"\xff\"\xfe}"),
    );

    // Odd but valid events: stored, not dead-lettered (an event the decoder can read is kept,
    // its record verbatim when it cannot be typed).
    let mut odd = Vec::new();
    // Each placed (for cursors) after the event before it, whatever its own time says.
    let mut valid = |i: usize, event: String| {
        odd.push(event.clone());
        let frame = json!({ "text": event, "time_us": time_of(i - 1) });
        inserts.entry(i).or_default().push((frame, None));
    };
    let next = |i: usize| time_of(i - 1) + 1;
    valid(
        450,
        format!(
            r#"{{"did":"did:plc:nested","time_us":{},"kind":"commit","commit":{{"rev":"r","operation":"create","collection":"fm.teal.nested","rkey":"k","record":{}1{}}}}}"#,
            next(450),
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    );
    valid(
        470,
        format!(
            r#"{{"did":"did:plc:numbers","time_us":{},"kind":"commit","commit":{{"rev":"r","operation":"create","collection":"fm.teal.numbers","rkey":"k","record":{{"big":1e999999,"long":{}}}}}}}"#,
            next(470),
            "9".repeat(5000)
        ),
    );
    valid(
        490,
        format!(
            r#"{{"did":"did:plc:nul\u0000é","time_us":{},"kind":"commit","commit":{{"rev":"r","operation":"create","collection":"app.bsky.feed.post","rkey":"k","record":{{"text":"a\u0000b","createdAt":"2025-11-20T00:00:00Z"}}}}}}"#,
            next(490)
        ),
    );
    valid(
        510,
        format!(
            r#"{{"did":"did:plc:path","time_us":{},"kind":"commit","commit":{{"rev":"r","operation":"create","collection":"../../../../etc/passwd","rkey":"../k","record":{{"a":1}}}}}}"#,
            next(510)
        ),
    );
    valid(
        530,
        r#"{"did":"did:plc:zero","time_us":0,"kind":"identity","identity":{"did":"did:plc:zero","seq":1,"time":"t"}}"#.into(),
    );
    // An event from 2100: stored in its own hour; it must not move the cursor, or every
    // reconnect after it would resume in the future and lose what comes next.
    valid(
        750,
        r#"{"did":"did:plc:future","time_us":4102444800000000,"kind":"identity","identity":{"did":"did:plc:future","seq":1,"time":"t"}}"#.into(),
    );

    valid(
        760,
        r#"{"did":"did:plc:max","time_us":9223372036854775807,"kind":"identity","identity":{"did":"did:plc:max","seq":1,"time":"t"}}"#.into(),
    );

    // Frames that break the WebSocket protocol: each met twice (once more on the replay that
    // follows, then skipped).
    inserts.entry(900).or_default().push((
        json!({ "text_hex": "7b22646964223a22ff227d" }),
        Some(Letter {
            reason: "utf8".into(),
            raw: Vec::new(),
        }),
    ));
    inserts.entry(1200).or_default().push((
        json!({ "text": "x", "repeat": firehose_jetstream::MAX_EVENT_BYTES + 1 }),
        Some(Letter {
            reason: "oversized".into(),
            raw: Vec::new(),
        }),
    ));

    let mut lines = Vec::new();
    let mut letters: BTreeMap<Letter, usize> = BTreeMap::new();
    for (i, event) in good.iter().enumerate() {
        for (frame, letter) in inserts.remove(&i).unwrap_or_default() {
            lines.push(frame.to_string());
            if let Some(letter) = letter {
                let twice = letter.raw.is_empty();
                *letters.entry(letter).or_default() += if twice { 2 } else { 1 };
            }
        }
        lines.push(text(event).to_string());
    }
    let mut events: BTreeMap<Table, Vec<i64>> = BTreeMap::new();
    for json in good.iter().chain(&odd) {
        let event = Event::decode(json.as_bytes()).unwrap();
        events.entry(event.table()).or_default().push(event.time_us);
    }
    for times in events.values_mut() {
        times.sort_unstable();
    }
    let frames = dir.join("frames.jsonl");
    std::fs::write(&frames, lines.join("\n")).unwrap();
    Script {
        frames,
        dictionary: dictionary(dir),
        events,
        letters,
    }
}

/// A raw-content zstd dictionary (any bytes will do), shared by the mock and the client.
fn dictionary(dir: &Path) -> PathBuf {
    let path = dir.join("dictionary");
    if !path.exists() {
        let sample: String = firehose_synth::json_corpus(3, 200).concat();
        std::fs::write(&path, sample).unwrap();
    }
    path
}

fn zstd_of(dir: &Path, data: &[u8]) -> Vec<u8> {
    let dictionary = std::fs::read(dictionary(dir)).unwrap();
    zstd::bulk::Compressor::with_dictionary(3, &dictionary)
        .unwrap()
        .compress(data)
        .unwrap()
}

fn zstd_truncated(dir: &Path, text: &str, n: usize) -> Vec<u8> {
    let mut frame = zstd_of(dir, text.as_bytes());
    frame.truncate(n);
    frame
}

/// The `dead_letters` table: (reason, raw bytes) counted.
fn dead_letters(root: &Path) -> BTreeMap<Letter, usize> {
    let mut letters = BTreeMap::new();
    for path in parquet_files(root) {
        if !path.starts_with("dead_letters/") {
            continue;
        }
        let file = std::fs::File::open(root.join(&path)).unwrap();
        for batch in ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone()
            };
            let (reason, raw, encoding) = (column("reason"), column("raw"), column("raw_encoding"));
            for i in 0..batch.num_rows() {
                let raw = match encoding.value(i) {
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(raw.value(i))
                        .unwrap(),
                    _ => raw.value(i).as_bytes().to_vec(),
                };
                let letter = Letter {
                    reason: reason.value(i).to_owned(),
                    raw,
                };
                *letters.entry(letter).or_default() += 1;
            }
        }
    }
    letters
}

/// Dead letters per reason, from the table and from the counter.
fn by_reason(letters: &BTreeMap<Letter, usize>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (letter, n) in letters {
        *out.entry(letter.reason.clone()).or_default() += *n as f64;
    }
    out
}

fn counted(metrics_addr: &str) -> BTreeMap<String, f64> {
    metrics(metrics_addr)
        .into_iter()
        .filter_map(|(series, value)| {
            let reason = series
                .strip_prefix("firehose_events_dead_lettered_total{reason=\"")?
                .strip_suffix("\"}")?;
            (value > 0.0).then(|| (reason.to_owned(), value))
        })
        .collect()
}

fn start_mock(script: &Script) -> (Proc, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(["mock-jetstream", "--port", "0", "--frames"])
        .arg(&script.frames)
        .arg("--zstd-dictionary")
        .arg(&script.dictionary)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ws://"), "mock printed {line:?}");
    (Proc(child), line.trim().to_owned())
}

/// Waits until the dataset holds the script's events and dead letters, then checks the
/// counters and health and stops the writer.
fn check(script: &Script, out: &Path, writer_metrics: &str, health: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (tables, _) = deduplicated(local_dataset(out).0);
        let letters = dead_letters(out);
        if tables == script.events && letters == script.letters {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dataset did not reach the script's content:\n events {:?} of {:?}, missing in {:?}\n dead letters more (+) or fewer (-) than expected: {:#?}",
            tables.values().map(Vec::len).sum::<usize>(),
            script.events.values().map(Vec::len).sum::<usize>(),
            script
                .events
                .iter()
                .filter(|(t, v)| tables.get(t) != Some(v))
                .map(|(t, _)| t)
                .collect::<Vec<_>>(),
            difference(&letters, &script.letters)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        counted(writer_metrics),
        by_reason(&script.letters),
        "the counters agree with the table"
    );
    for addr in health {
        let (status, body) = http_get(addr, "/health").unwrap();
        assert_eq!(status, 200, "still healthy: {body}");
    }
}

#[test]
fn run_dead_letters_every_bad_message_and_stores_every_event_once() {
    let dir = temp_dir("hostile-run");
    let script = script(&dir);
    let (_mock, url) = start_mock(&script);
    let out = dir.join("data");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let run = start(
        "run",
        &dir,
        &[
            "run",
            "--jetstream-url",
            &url,
            "--zstd-dictionary",
            script.dictionary.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--metrics-addr",
            &metrics_addr,
            "--max-file-age",
            "1s",
            "--start-cursor",
            &START_US.to_string(),
        ],
        &[],
    );
    check(&script, &out, &metrics_addr, &[&metrics_addr]);
    let m = metrics(&metrics_addr);
    assert_eq!(total(&m, "firehose_jetstream_connected"), 1.0);
    assert!(
        total(&m, "firehose_jetstream_reconnects_total") >= 4.0,
        "the protocol breaks reopened the connection: {m:?}"
    );
    assert_eq!(run.terminate(), 0);
}

#[test]
fn ingest_redis_write_dead_letters_every_bad_message_and_stores_every_event_once() {
    let Some(redis) = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty()) else {
        assert!(
            std::env::var("FIREHOSE_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "REDIS_URL must be set when FIREHOSE_REQUIRE_SERVERS=1"
        );
        eprintln!("NOT RUN: needs REDIS_URL (scripts/test starts redis-server)");
        return;
    };
    let dir = temp_dir("hostile-redis");
    let script = script(&dir);
    let (_mock, url) = start_mock(&script);
    let stream = format!("firehose-hostile:{}", std::process::id());
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let ingest = start(
        "ingest",
        &dir,
        &[
            "ingest",
            "--jetstream-url",
            &url,
            "--zstd-dictionary",
            script.dictionary.to_str().unwrap(),
            "--redis-url",
            &redis,
            "--redis-stream",
            &stream,
            "--metrics-addr",
            &ingest_addr,
            "--start-cursor",
            &START_US.to_string(),
        ],
        &[],
    );
    let out = dir.join("data");
    let write_addr = format!("127.0.0.1:{}", free_port());
    let write = start(
        "write",
        &dir,
        &[
            "write",
            "--redis-url",
            &redis,
            "--redis-stream",
            &stream,
            "--out",
            out.to_str().unwrap(),
            "--consumer",
            "w1",
            "--metrics-addr",
            &write_addr,
            "--max-file-age",
            "1s",
        ],
        &[],
    );
    check(&script, &out, &write_addr, &[&ingest_addr, &write_addr]);
    assert_eq!(ingest.terminate(), 0);
    assert_eq!(write.terminate(), 0);
}
