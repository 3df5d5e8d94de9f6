//! Identifiers shaped like the real ones: `did:plc`, CIDs, TIDs, RFC 3339 times.

use firehose_core::Hour;
use rand::Rng;

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const BASE32_SORTABLE: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// SplitMix64: a good 64-bit mix, so account `i` gets the same DID for the same seed.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `did:plc` of account `index` (24 base32 characters, like real ones).
pub fn did_plc(seed: u64, index: u32) -> String {
    let a = mix(seed ^ u64::from(index));
    let b = mix(a ^ 0x5555);
    let mut did = String::with_capacity(32);
    did.push_str("did:plc:");
    for i in 0..24 {
        let word = if i < 12 { a } else { b };
        did.push(char::from(BASE32[((word >> ((i % 12) * 5)) & 31) as usize]));
    }
    did
}

/// A CIDv1 (dag-cbor, sha2-256) in base32: `bafyrei` and 52 more characters.
pub fn cid(rng: &mut impl Rng) -> String {
    let mut cid = String::with_capacity(59);
    cid.push_str("bafyrei");
    for _ in 0..52 {
        cid.push(char::from(BASE32[rng.random_range(0..32)]));
    }
    cid
}

/// A TID (timestamp identifier) for `time_us` and a 10-bit clock id: 13 sortable base32
/// characters, as used for record keys and revisions.
pub fn tid(time_us: i64, clock_id: u16) -> String {
    let v = ((time_us.max(0) as u64) & ((1 << 53) - 1)) << 10 | u64::from(clock_id & 1023);
    (0..13)
        .map(|i| char::from(BASE32_SORTABLE[((v >> (60 - 5 * i)) & 31) as usize]))
        .collect()
}

/// `time_us` as RFC 3339 with milliseconds: `2026-11-20T05:03:20.123Z`.
pub fn rfc3339(time_us: i64) -> String {
    let h = Hour::of(time_us);
    let in_hour = time_us - h.start_us();
    let (minute, second, milli) = (
        in_hour / 60_000_000,
        in_hour / 1_000_000 % 60,
        in_hour / 1000 % 1000,
    );
    format!(
        "{:04}-{:02}-{:02}T{:02}:{minute:02}:{second:02}.{milli:03}Z",
        h.year, h.month, h.day, h.hour
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let did = did_plc(1, 42);
        assert_eq!(did.len(), 32);
        assert_eq!(did, did_plc(1, 42));
        assert_ne!(did, did_plc(1, 43));
        assert_eq!(tid(1_779_719_009_132_431, 0).len(), 13);
        // TIDs sort by time.
        assert!(tid(1_000_000, 5) < tid(2_000_000, 0));
        assert_eq!(rfc3339(1_763_615_000_123_456), "2025-11-20T05:03:20.123Z");
    }
}
