//! End-to-end tests of the `firehose` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod import;
mod inspect;
mod retain;

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
