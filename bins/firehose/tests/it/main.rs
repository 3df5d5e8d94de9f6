//! End-to-end tests of the `firehose` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod backpressure;
mod catch_up;
mod compact;
mod config;
mod crash;
mod disk_full;
mod harness;
mod hostile_input;
mod import;
mod inspect;
mod maintain;
mod mock_jetstream;
mod outage;
mod pipeline;
mod query;
mod reconnect;
mod redis_auth;
mod retain;
mod secrets;
mod serve;
mod writers;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the binary with `args`, feeding `stdin`.
pub(crate) fn firehose(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the firehose binary starts");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// The files a reader sees (hidden temporary files of interrupted writes excluded).
pub(crate) fn parquet_files(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let hidden = path.file_name().unwrap().to_string_lossy().starts_with('.');
            if hidden {
                // Only temporary files of interrupted writes may be hidden; readers skip them.
                assert!(
                    path.to_string_lossy().ends_with(".tmp"),
                    "{}",
                    path.display()
                );
            } else if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.insert(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    let mut out = BTreeSet::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}
