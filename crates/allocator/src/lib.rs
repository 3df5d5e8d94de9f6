//! The memory allocator of the firehose binaries and benchmarks: linking this crate makes
//! mimalloc the global allocator (`use firehose_allocator as _;` where nothing else is used).
//!
//! Why mimalloc: the writer allocates and frees large Arrow and Parquet buffers for every
//! batch, which the system allocator hands back to the kernel and faults in again. Why without
//! transparent huge pages: with them, parallel imports spent a third of their time in the
//! kernel zeroing huge pages that were freed and faulted in again.
//!
//! This is the one crate allowed `unsafe` (one call into mimalloc's C API, below).
#![allow(unsafe_code)]

/// The global allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay`: 15 in mimalloc 2 and 3, which keep the numbers of
/// their options stable (retired ones stay, marked deprecated).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc's default purge delays, in milliseconds (mimalloc 3, 2): how the option is
/// recognised.
const DEFAULT_PURGE_DELAYS_MS: [std::ffi::c_long; 2] = [1000, 10];

/// Keeps freed memory in the process for the rest of its life instead of handing it back to
/// the kernel; returns whether the setting was applied.
///
/// For bulk work only (`firehose import`): each thread frees its unit's buffers (hundreds of
/// megabytes) and allocates them again for the next unit. By default mimalloc hands freed
/// pages back after a delay, and they are faulted in again for a later unit; with two
/// threads those faults contend and cost 4–5% of the CPU time (measured with `cargo bench
/// --bench import`, README). The memory is bounded by the units in flight anyway. A long-lived
/// service should not call this: its peak would stay its size.
///
/// Applied only when the option still has mimalloc's default, so that a user's
/// `MIMALLOC_PURGE_DELAY` wins and a future mimalloc that renumbered its options is left alone.
pub fn keep_freed_memory() -> bool {
    // SAFETY: `mi_option_get` and `mi_option_set` read and write one integer of mimalloc's
    // option table; they take any option number below the table's end (15 is) and any value,
    // and are safe to call from any thread at any time.
    unsafe {
        if !DEFAULT_PURGE_DELAYS_MS.contains(&libmimalloc_sys::mi_option_get(PURGE_DELAY)) {
            return false;
        }
        libmimalloc_sys::mi_option_set(PURGE_DELAY, -1);
        libmimalloc_sys::mi_option_get(PURGE_DELAY) == -1
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_memory_is_kept_unless_the_user_chose() {
        // The test runner's environment may set the option itself; then it must be left alone.
        let chosen = std::env::var_os("MIMALLOC_PURGE_DELAY").is_some();
        assert_eq!(super::keep_freed_memory(), !chosen);
        // Once set, it is no longer the default, so a second call changes nothing.
        assert!(!super::keep_freed_memory());
    }
}
