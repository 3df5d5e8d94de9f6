//! A local disk that fills up: `firehose run` and `firehose import` writing to a small tmpfs the
//! test mounts (the tests run as root, here and in CI). When the mount is refused the tests
//! fail: a disk-full test that cannot fill a disk must not pass.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{
    START_US, deduplicated, expected, free_port, http_get, local_dataset, metrics, mock, start,
    temp_dir, total, wait_for,
};
use crate::{firehose, parquet_files};

/// A tmpfs of a given size, unmounted when dropped.
pub(crate) struct Tmpfs {
    pub(crate) path: PathBuf,
}

impl Tmpfs {
    pub(crate) fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a {size} tmpfs at {} (the disk-full tests need root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }

    /// Grows or shrinks the filesystem.
    pub(crate) fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Fills the filesystem of `path` with one file until a write fails with "no space"; returns
/// about how much it wrote.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    // 64 KiB blocks, then single bytes for the last partial block.
    for block in [vec![0xa5u8; 64 * 1024], vec![0xa5u8]] {
        loop {
            match file.write_all(&block) {
                Ok(()) => written += block.len() as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
        }
    }
    written
}

/// Every visible file under `root` is complete: each `.parquet` opens and reads to the end, and
/// no temporary file is left behind by the failed writes.
fn assert_no_partial_file(root: &Path) {
    for path in parquet_files(root) {
        assert!(
            path.ends_with(".parquet") || path.ends_with(".json"),
            "unexpected file {path}"
        );
    }
    // `local_dataset` opens and reads every Parquet file, panicking on a corrupt one.
    let _ = local_dataset(root);
    let mut temps = Vec::new();
    walk_hidden(root, &mut temps);
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

fn walk_hidden(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk_hidden(&path, out);
        } else if path.file_name().unwrap().to_string_lossy().starts_with('.') {
            out.push(path);
        }
    }
}

#[test]
fn run_on_a_full_disk_fails_clearly_writes_nothing_partial_and_resumes_when_space_is_freed() {
    const EVENTS: u64 = 24_000;
    let dir = temp_dir("disk-full-run");
    let disk = Tmpfs::mount(&dir.join("disk"), "24m");
    let out = disk.path.join("data");
    // 2,000 events/s for 12 s.
    let (_mock, url) = mock(31, EVENTS, &["--rate", "2000"]);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let cursor = START_US.to_string();
    let run = start(
        "run",
        &dir,
        &[
            "run",
            "--jetstream-url",
            &url,
            "--out",
            out.to_str().unwrap(),
            "--metrics-addr",
            &metrics_addr,
            "--max-open-bytes",
            "1MiB",
            "--max-file-age",
            "1s",
            "--start-cursor",
            &cursor,
        ],
        &[],
    );
    wait_for(
        &[&metrics_addr],
        "firehose_writer_rows_total",
        1.0,
        Duration::from_secs(60),
    );

    // The disk fills up: every write fails from now on.
    let filler = disk.path.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);
    wait_for(
        &[&metrics_addr],
        "firehose_writer_failures_total",
        3.0,
        Duration::from_secs(60),
    );
    let m = metrics(&metrics_addr);
    let label = out.display().to_string();
    let available = m
        .get(&format!(
            "firehose_disk_available_bytes{{path=\"{label}\"}}"
        ))
        .copied();
    assert!(
        available.is_some_and(|a| a < 64.0 * 1024.0),
        "the disk gauge shows the disk full: {available:?}"
    );
    let (status, body) = http_get(&metrics_addr, "/health").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storing batches failed"), "{body}");
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    let failure = log
        .lines()
        .find(|l| l.contains("Storing a batch failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{log}"));
    assert!(
        failure.contains("No space left on device"),
        "the log says why: {failure}"
    );
    // What readers see meanwhile is whole.
    assert_no_partial_file(&out);
    let written_while_full = total(&m, "firehose_writer_rows_total");

    // Space is freed: the pipeline resumes by itself and catches up.
    std::fs::remove_file(&filler).unwrap();
    let want = expected(31, EVENTS, Some(2000.0));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (tables, _) = deduplicated(local_dataset(&out).0);
        if tables == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dataset did not catch up once space was freed: {} of {} rows",
            tables.values().map(Vec::len).sum::<usize>(),
            want.values().map(Vec::len).sum::<usize>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let m = metrics(&metrics_addr);
    assert!(total(&m, "firehose_writer_rows_total") > written_while_full);
    let (status, body) = http_get(&metrics_addr, "/health").unwrap();
    assert_eq!(status, 200, "healthy again: {body}");
    assert_eq!(run.terminate(), 0, "a clean stop after the outage");
    let (tables, dead) = local_dataset(&out);
    let (tables, duplicates) = deduplicated(tables);
    assert_eq!(tables, want, "every event once after de-duplication");
    assert_eq!(dead, 0);
    assert_no_partial_file(&out);
    eprintln!(
        "disk full: filler {filled} bytes, {} write failures, {duplicates} duplicates removed",
        total(&m, "firehose_writer_failures_total")
    );
}

#[test]
fn import_onto_a_full_disk_fails_with_one_line_and_leaves_nothing_partial() {
    let dir = temp_dir("disk-full-import");
    let capture = dir.join("capture.jsonl");
    let generated = firehose(
        &[
            "generate",
            "-n",
            "40000",
            "--seed",
            "5",
            "--rate",
            "20",
            "-o",
            capture.to_str().unwrap(),
        ],
        b"",
    );
    assert!(generated.status.success());
    let disk = Tmpfs::mount(&dir.join("disk"), "2m");
    let out = disk.path.join("data");
    let args = [
        "import",
        capture.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--batch-lines",
        "5000",
    ];
    let full = firehose(&args, b"");
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("firehose:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(
        errors[0].contains("No space left on device") && errors[0].contains("writing lines"),
        "{}",
        errors[0]
    );
    assert_no_partial_file(&out);
    let before = local_dataset(&out).0.values().map(Vec::len).sum::<usize>();
    assert!(before < 40_000, "the disk was too small to hold it all");

    // With room, the same import completes, rewriting the same files: each event once.
    disk.resize("64m");
    let again = firehose(&args, b"");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let (tables, _) = local_dataset(&out);
    let rows: usize = tables.values().map(Vec::len).sum();
    assert_eq!(rows, 40_000, "no event twice, none missing");
    let (_, duplicates) = deduplicated(tables);
    assert_eq!(duplicates, 0);
    assert_no_partial_file(&out);
}

/// Local state that goes bad under a running `run` (the checkpoint file overwritten with
/// garbage) is not retried forever and does not leave the process hanging with a dead writer:
/// `run` stops, exit code 1, with one line naming the file.
#[test]
fn a_checkpoint_corrupted_under_run_stops_it_with_a_clear_error() {
    let dir = temp_dir("corrupt-checkpoint");
    let (_mock, url) = mock(32, 1_000_000, &["--rate", "1000"]);
    let out = dir.join("data");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let cursor = START_US.to_string();
    let mut run = start(
        "run",
        &dir,
        &[
            "run",
            "--jetstream-url",
            &url,
            "--out",
            out.to_str().unwrap(),
            "--metrics-addr",
            &metrics_addr,
            "--max-file-age",
            "1s",
            "--start-cursor",
            &cursor,
        ],
        &[],
    );
    wait_for(
        &[&metrics_addr],
        "firehose_writer_batches_total",
        1.0,
        Duration::from_secs(60),
    );
    let checkpoint = out.join("_firehose/checkpoint.json");
    assert!(checkpoint.exists());
    std::fs::write(&checkpoint, b"{\"time_us\": not a number").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "run kept going with a dead writer"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1));
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("firehose: ") && last.contains("checkpoint.json is corrupt"),
        "{log}"
    );
}
