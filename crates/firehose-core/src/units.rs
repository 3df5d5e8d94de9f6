//! Sizes and durations as people write them in flags and configuration files: one rule for
//! every setting of every crate and command.
//!
//! - Sizes: a whole number with an optional unit, case-insensitive. `B` or nothing: bytes.
//!   `KB`, `MB`, `GB`, `TB`: powers of 1,000 (`100MB` = 100,000,000 bytes). `KiB`, `MiB`,
//!   `GiB`, `TiB`, and the single letters `K`, `M`, `G`, `T` as Docker and systemd read them:
//!   powers of 1,024 (`2G` = `2GiB` = 2,147,483,648 bytes).
//! - Durations: a whole number with a unit, case-insensitive: `ms`, `s`, `m`, `h`, `d`
//!   (`500ms`, `30s`, `5m`, `12h`, `30d`).
//!
//! ```
//! use std::time::Duration;
//! use firehose_core::units::{parse_duration, parse_size};
//! assert_eq!(parse_size("100MB"), Ok(100_000_000));
//! assert_eq!(parse_size("32mib"), Ok(32 << 20));
//! assert_eq!(parse_size("2G"), Ok(2 << 30));
//! assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
//! ```

use std::time::Duration;

/// A size or duration that does not follow the rule above, with the text and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} {reason}")]
pub struct UnitError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn error(text: &str, reason: &'static str) -> UnitError {
    UnitError {
        text: text.to_owned(),
        reason,
    }
}

/// Splits `12h` into 12 and `h`.
fn number_and_unit<'a>(text: &'a str, what: &'static str) -> Result<(u64, &'a str), UnitError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = number.parse().map_err(|_| error(text, what))?;
    Ok((number, unit.trim()))
}

/// Bytes in a size such as `100MB`, `128MiB`, `2G` or `4096`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    const WHAT: &str = "is not a size like 100MB, 128MiB, 2G or 4096 (bytes)";
    let (n, unit) = number_and_unit(text, WHAT)?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(error(text, WHAT)),
    };
    n.checked_mul(factor)
        .ok_or_else(|| error(text, "is too large"))
}

/// The duration in a text such as `500ms`, `30s`, `5m`, `12h` or `30d`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    const WHAT: &str = "is not a duration like 500ms, 30s, 5m, 12h or 30d";
    let (n, unit) = number_and_unit(text, WHAT)?;
    let unit = unit.to_ascii_lowercase();
    if unit == "ms" {
        return Ok(Duration::from_millis(n));
    }
    let seconds: u64 = match unit.as_str() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(error(text, WHAT)),
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| error(text, "is too long"))
}

/// The Unix time in microseconds `age` before now (the cutoff of "older than `age`"); 0 for
/// an age reaching back before 1970.
pub fn unix_micros_ago(age: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.saturating_sub(age).as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_one_rule_whatever_the_case() {
        for (text, bytes) in [
            ("4096", 4096),
            ("7B", 7),
            ("1kB", 1_000),
            ("100MB", 100_000_000),
            ("100mb", 100_000_000),
            ("2GB", 2_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("64K", 64 << 10),
            ("64KiB", 64 << 10),
            ("32MiB", 32 << 20),
            ("32mib", 32 << 20),
            ("512M", 512 << 20),
            ("2G", 2 << 30),
            ("2gib", 2 << 30),
            ("1T", 1 << 40),
            (" 8 MB ", 8_000_000),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "MB", "1.5GB", "-1", "10 parsecs", "1e6"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_size("99999999999TB").unwrap_err().reason,
            "is too large"
        );
    }

    #[test]
    fn durations_follow_one_rule_whatever_the_case() {
        for (text, duration) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("5M", Duration::from_secs(300)),
            ("12h", Duration::from_secs(43_200)),
            ("30d", Duration::from_secs(2_592_000)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
        for bad in ["", "30", "1.5h", "3 weeks", "s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
