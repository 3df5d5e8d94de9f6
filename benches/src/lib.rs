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
