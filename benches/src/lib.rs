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
