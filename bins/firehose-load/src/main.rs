//! `firehose-load`: a development tool, not part of the production binary. It drives
//! `firehose run` with `firehose mock-jetstream` at a target rate for a set time, and reports
//! what the pipeline sustained, its lag, CPU and peak memory, and whether any event was lost or
//! doubled. Build both binaries, then run it:
//!
//! ```sh
//! cargo build --release --bin firehose --bin firehose-load
//! target/release/firehose-load --rate 100000 --duration 60s
//! ```

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::{Array, Int64Array};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Load-test the pipeline: start `firehose mock-jetstream` serving generated events at
/// `--rate` for `--duration`, and `firehose run` archiving them to a local directory; print
/// every second the rate, lag, CPU and memory of `run`, and at the end the sustained rate, peak
/// RSS, and how many of the events sent are in the dataset exactly once.
#[derive(Debug, Parser)]
#[command(name = "firehose-load", version)]
struct Args {
    /// The `firehose` binary to drive (default: the one beside this program, as cargo builds
    /// them).
    #[arg(long)]
    firehose: Option<PathBuf>,
    /// Events per second the mock Jetstream sends.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// How long it sends.
    #[arg(long, default_value = "60s", value_parser = parse_age)]
    duration: Duration,
    /// Where `run` writes (default: a new directory under the system's temporary directory,
    /// removed afterwards unless `--keep`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the dataset.
    #[arg(long)]
    keep: bool,
    /// Seed of the generated events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `run`'s bound on event JSON held in open files (see `run --help`).
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    max_open_bytes: u64,
    /// `run`'s in-memory buffer size.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    buffer_size: u64,
    /// `run`'s longest wait before open files are written (short, so the last events of the
    /// test are written soon after the mock stops).
    #[arg(long, default_value = "1s", value_parser = parse_age)]
    max_file_age: Duration,
    /// After the mock finished sending, wait at most this long for the writer to catch up.
    #[arg(long, default_value = "120s", value_parser = parse_age)]
    drain_timeout: Duration,
    /// Print the final report as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    target_rate: u64,
    duration_s: f64,
    events_sent: u64,
    events_written: u64,
    sustained_events_per_s: f64,
    max_lag_s: f64,
    cpu_percent_of_one_core: f64,
    peak_rss_bytes: u64,
    rows_in_dataset: u64,
    unique_events_in_dataset: u64,
    lost: u64,
    duplicates: u64,
    parquet_bytes: u64,
}

/// A child process killed when dropped (so a failed load run leaves nothing behind).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How the load test ended, when it did not succeed.
#[derive(Debug)]
enum Failure {
    /// Bad usage or setup: exit code 2.
    Usage(String),
    /// The pipeline failed, or lost events: exit code 1.
    Data(String),
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Data(reason)) => {
            eprintln!("firehose-load: {reason}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(reason)) => {
            eprintln!("firehose-load: {reason}");
            ExitCode::from(2)
        }
    }
}

fn parse_age(text: &str) -> Result<Duration, String> {
    firehose_core::units::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    firehose_core::units::parse_size(text).map_err(|e| e.to_string())
}

/// The `firehose` binary: `--firehose`, or the one beside this program.
fn firehose_binary(args: &Args) -> Result<PathBuf, Failure> {
    if let Some(path) = &args.firehose {
        return Ok(path.clone());
    }
    let me = std::env::current_exe()
        .map_err(|e| Failure::Usage(format!("cannot find this program's path: {e}")))?;
    let beside = me.with_file_name("firehose");
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(Failure::Usage(format!(
            "no firehose binary at {}: build it (cargo build --release --bin firehose) or give --firehose PATH",
            beside.display()
        )))
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let exe = firehose_binary(&args)?;
    let out = match &args.out {
        Some(out) => out.clone(),
        None => std::env::temp_dir().join(format!("firehose-load-{}", std::process::id())),
    };
    if out.exists() {
        return Err(Failure::Usage(format!(
            "{} exists: the load test writes to a new directory",
            out.display()
        )));
    }
    let events = args.rate.saturating_mul(args.duration.as_secs().max(1));
    // `run` starts from the first event the mock publishes, however long it takes to connect.
    let start_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let metrics_port = free_port()?;

    let mut mock = Guard(
        Command::new(&exe)
            .args(["mock-jetstream", "--port", "0", "--rate"])
            .arg(args.rate.to_string())
            .arg("--events")
            .arg(events.to_string())
            .arg("--seed")
            .arg(args.seed.to_string())
            .arg("--start-time-us")
            .arg(start_us.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Failure::Usage(format!("cannot start mock-jetstream: {e}")))?,
    );
    let url = {
        let stdout = mock
            .0
            .stdout
            .take()
            .ok_or_else(|| Failure::Data("mock-jetstream has no standard output".into()))?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| Failure::Data(format!("mock-jetstream did not start: {e}")))?;
        line.trim().to_owned()
    };
    if !url.starts_with("ws://") {
        return Err(Failure::Data(format!(
            "mock-jetstream printed {url:?} instead of its URL"
        )));
    }
    std::fs::create_dir_all(&out)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", out.display())))?;
    let log = std::fs::File::create(out.join("run.log"))
        .map_err(|e| Failure::Usage(format!("cannot create the run log: {e}")))?;
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let data = out.join("data");
    let mut pipeline = Guard(
        Command::new(&exe)
            .arg("run")
            .arg("--jetstream-url")
            .arg(&url)
            .arg("--out")
            .arg(&data)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--max-open-bytes")
            .arg(args.max_open_bytes.to_string())
            .arg("--buffer-size")
            .arg(args.buffer_size.to_string())
            .arg("--max-file-age")
            .arg(format!("{}ms", args.max_file_age.as_millis()))
            .arg("--start-cursor")
            .arg(start_us.to_string())
            .env_remove("FIREHOSE_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| Failure::Usage(format!("cannot start run: {e}")))?,
    );
    let pid = pipeline.0.id();
    eprintln!(
        "load: {} events at {}/s from {url} into {} (run's log: {})",
        events,
        args.rate,
        data.display(),
        out.join("run.log").display()
    );

    let mut report = Report {
        target_rate: args.rate,
        events_sent: events,
        ..Report::default()
    };
    let started = Instant::now();
    let mut cpu_start = cpu_seconds(pid).unwrap_or(0.0);
    let (mut last_written, mut last_at) = (0u64, Instant::now());
    let mut first_write: Option<(Instant, u64)> = None;
    let deadline = started + args.duration + args.drain_timeout;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Ok(Some(status)) = pipeline.0.try_wait() {
            return Err(Failure::Data(format!(
                "run exited early with {status} (see {})",
                out.join("run.log").display()
            )));
        }
        let scrape = scrape(metrics_addr);
        let written = scrape.written;
        report.peak_rss_bytes = report.peak_rss_bytes.max(peak_rss(pid).unwrap_or(0));
        report.max_lag_s = report.max_lag_s.max(scrape.lag);
        if scrape.received > 0 && first_write.is_none() {
            // The work starts with the first event received: CPU and rate count from there.
            first_write = Some((last_at, last_written));
            cpu_start = cpu_seconds(pid).unwrap_or(cpu_start);
        }
        let now = Instant::now();
        let rate = (written - last_written.min(written)) as f64 / (now - last_at).as_secs_f64();
        eprintln!(
            "load: {:>4.0}s received {:>10} written {:>10} ({:>8.0}/s) lag {:>5.1}s cpu {:>4.0}% rss {:>4} MB",
            started.elapsed().as_secs_f64(),
            scrape.received,
            written,
            rate,
            scrape.lag,
            100.0 * (cpu_seconds(pid).unwrap_or(0.0) - cpu_start) / started.elapsed().as_secs_f64(),
            rss(pid).unwrap_or(0) >> 20
        );
        (last_written, last_at) = (written, now);
        if written >= events || now > deadline {
            report.events_written = written;
            break;
        }
    }
    let elapsed = first_write.map_or(started.elapsed(), |(at, _)| at.elapsed());
    report.duration_s = elapsed.as_secs_f64();
    report.sustained_events_per_s = report.events_written as f64 / elapsed.as_secs_f64();
    report.cpu_percent_of_one_core =
        100.0 * (cpu_seconds(pid).unwrap_or(0.0) - cpu_start) / started.elapsed().as_secs_f64();
    report.peak_rss_bytes = report.peak_rss_bytes.max(peak_rss(pid).unwrap_or(0));

    stop(pipeline)?;
    drop(mock);
    let (rows, unique, bytes) = read_dataset(&data)?;
    report.rows_in_dataset = rows;
    report.unique_events_in_dataset = unique;
    report.parquet_bytes = bytes;
    report.lost = events.saturating_sub(unique);
    report.duplicates = rows - unique;
    let mut stdout = std::io::stdout().lock();
    let printed = if args.json {
        serde_json::to_writer(&mut stdout, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(stdout))
    } else {
        (|w: &mut dyn Write| {
            writeln!(
                w,
                "sustained {:.0} events/s for {:.1} s (target {}/s); max lag {:.1} s; run used {:.0}% of one core, peak RSS {} MB",
                report.sustained_events_per_s,
                report.duration_s,
                report.target_rate,
                report.max_lag_s,
                report.cpu_percent_of_one_core,
                report.peak_rss_bytes >> 20
            )?;
            writeln!(
                w,
                "{} events sent, {} in the dataset once, {} lost, {} duplicate rows (before compaction), {} bytes of Parquet",
                report.events_sent,
                report.unique_events_in_dataset,
                report.lost,
                report.duplicates,
                report.parquet_bytes
            )
        })(&mut stdout)
    };
    printed.map_err(|e| Failure::Usage(format!("cannot write the report: {e}")))?;
    if !args.keep && args.out.is_none() {
        let _ = std::fs::remove_dir_all(&out);
    }
    if report.lost > 0 {
        return Err(Failure::Data(format!(
            "{} of {} events are missing from the dataset",
            report.lost, events
        )));
    }
    Ok(())
}

fn free_port() -> Result<u16, Failure> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::Usage(format!("cannot find a free port: {e}")))
}

/// Stops `run` with SIGTERM (a clean shutdown writes what is open) and checks it exited 0.
fn stop(mut pipeline: Guard) -> Result<(), Failure> {
    let pid = pipeline.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .map_err(|e| Failure::Data(format!("cannot signal run: {e}")))?;
    let status = pipeline
        .0
        .wait()
        .map_err(|e| Failure::Data(format!("waiting for run: {e}")))?;
    if !status.success() {
        return Err(Failure::Data(format!(
            "run exited with {status} (see run.log)"
        )));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Scrape {
    received: u64,
    written: u64,
    lag: f64,
}

/// A few figures from `run`'s `/metrics` (zeros when it does not answer yet).
fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let Ok(text) = firehose_telemetry::http_get(addr, "/metrics", Duration::from_secs(5)) else {
        return Scrape::default();
    };
    let mut scrape = Scrape::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if name == "firehose_events_received_total" {
            scrape.received = value as u64;
        } else if name.starts_with("firehose_writer_rows_total") {
            scrape.written += value as u64;
        } else if name == "firehose_jetstream_lag_seconds" {
            scrape.lag = value;
        }
    }
    scrape
}

/// User plus system CPU seconds of a process, from `/proc/<pid>/stat` (Linux clock ticks of
/// 1/100 s).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn rss(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

fn peak_rss(pid: u32) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

/// Rows, distinct `time_us` values (the generator's are unique per event) and bytes of every
/// event table's Parquet file under `dir`.
fn read_dataset(dir: &Path) -> Result<(u64, u64, u64), Failure> {
    let mut rows = 0u64;
    let mut bytes = 0u64;
    let mut seen = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| Failure::Data(format!("cannot read {}: {e}", d.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "dead_letters" && name != "_firehose" {
                    stack.push(path);
                }
                continue;
            }
            if name.starts_with('.') || !name.ends_with(".parquet") {
                continue;
            }
            let file = std::fs::File::open(&path)
                .map_err(|e| Failure::Data(format!("cannot open {}: {e}", path.display())))?;
            bytes += file.metadata().map(|m| m.len()).unwrap_or(0);
            let corrupt = |e: parquet::errors::ParquetError| {
                Failure::Data(format!("{} is not readable: {e}", path.display()))
            };
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(corrupt)?;
            let mask = ProjectionMask::columns(builder.parquet_schema(), ["time_us"]);
            for batch in builder.with_projection(mask).build().map_err(corrupt)? {
                let batch = batch.map_err(|e| {
                    Failure::Data(format!("{} is not readable: {e}", path.display()))
                })?;
                let Some(times) = batch.column(0).as_any().downcast_ref::<Int64Array>() else {
                    continue;
                };
                rows += times.len() as u64;
                seen.extend(times.values().iter().copied());
            }
        }
    }
    Ok((rows, seen.len() as u64, bytes))
}
