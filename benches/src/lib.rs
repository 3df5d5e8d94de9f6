//! Helpers the benchmarks in `benches/benches/` share.

use std::time::Duration;

/// CPU time (user + system) of the whole process, threads that ended included, from
/// `/proc/self/stat` (in clock ticks of 10 ms: good to a few percent over a round of a few
/// tenths of a second). Zero where `/proc` cannot be read.
pub fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which is in parentheses): state is field 3, utime 14,
    // stime 15.
    let rest = stat.rfind(')').map_or("", |i| &stat[i + 2..]);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(10 * ticks)
}

/// The peak resident set since the last reset (write `5` to `/proc/self/clear_refs`), in MB
/// (`VmHWM`); zero where `/proc` cannot be read.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The median of the rounds' figures (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One thread count's figures in a scaling benchmark: wall time, CPU time and peak RSS of each
/// round.
#[derive(Debug, Clone, Default)]
pub struct Rounds {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    rss: Vec<f64>,
}

impl Rounds {
    /// Runs `work` as one round and records it: the peak RSS is reset first (write `5` to
    /// `/proc/self/clear_refs`), then the wall and CPU time of `work` and the peak it reached.
    pub fn measure<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let (cpu0, started) = (process_cpu(), std::time::Instant::now());
        let out = work();
        self.wall.push(started.elapsed().as_secs_f64());
        self.cpu.push((process_cpu() - cpu0).as_secs_f64());
        self.rss.push(peak_rss_mb());
        out
    }

    /// The medians of the rounds: wall seconds, CPU seconds, peak RSS in MB.
    pub fn medians(self) -> (f64, f64, f64) {
        (median(self.wall), median(self.cpu), median(self.rss))
    }
}

/// Prints each rate as a multiple of the first (the baseline thread count's).
pub fn print_scaling(threads: &[usize], rates: &[f64]) {
    for (n, rate) in threads.iter().zip(rates).skip(1) {
        println!(
            "{n} threads: {:.2}× the rate of {}",
            rate / rates[0],
            threads[0]
        );
    }
}

/// What a scaling benchmark (`import`, `compact`) is asked for on its command line:
/// `[EVENTS [ROUNDS [THREADS…]]]`, flags such as `--bench` ignored; 1,000,000 events, 3 rounds,
/// 1 and 2 threads by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingArgs {
    /// Events to generate.
    pub events: u64,
    /// Rounds per thread count (the figures are their medians).
    pub rounds: usize,
    /// Thread counts, in order; the first is the baseline.
    pub threads: Vec<usize>,
}

impl ScalingArgs {
    /// Reads the process's arguments; a malformed one stops the benchmark with its name.
    #[allow(clippy::expect_used)] // A benchmark: a failure must stop it, loudly.
    pub fn from_env() -> ScalingArgs {
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect();
        ScalingArgs {
            events: args
                .first()
                .map_or(1_000_000, |a| a.parse().expect("EVENTS")),
            rounds: args.get(1).map_or(3, |a| a.parse().expect("ROUNDS")),
            threads: match args.get(2..) {
                Some(list) if !list.is_empty() => {
                    list.iter().map(|a| a.parse().expect("THREADS")).collect()
                }
                _ => vec![1, 2],
            },
        }
    }
}

/// Writes `events` generated events as JSON lines to `dir/capture.jsonl` and returns its path.
#[allow(clippy::expect_used)] // A benchmark: a failure must stop it, loudly.
pub fn write_capture(
    dir: &std::path::Path,
    config: firehose_synth::Config,
    events: u64,
) -> std::path::PathBuf {
    let capture = dir.join("capture.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&capture).expect("capture"));
    firehose_synth::write_json_lines(config, events, &mut out).expect("write the capture");
    capture
}
