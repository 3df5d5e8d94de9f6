//! What the end-to-end tests of the running pipeline share: child processes, the mock
//! Jetstream and the events it sends, metrics, datasets read back and compared with what was
//! sent, and private `redis-server` and `s3s-fs` instances that a test may kill, stop and start
//! again (the shared servers of `scripts/test` are never touched).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firehose_core::Table;
use firehose_synth::{Config, Generator};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A child process, killed (SIGKILL) when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub(crate) fn terminate(mut self) -> i32 {
        signal(self.pid(), "TERM");
        let status = self.0.wait().unwrap();
        status.code().unwrap_or(-1)
    }

    /// Stops the process with SIGSTOP, as a stalled host would.
    pub(crate) fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub(crate) fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Sends SIGKILL and waits until the process is gone.
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firehose-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Now, in Unix microseconds.
pub(crate) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap()
}

/// The first event's time: a fixed hour, so the expected events can be generated again.
pub(crate) const START_US: i64 = 1_763_596_800_000_000;

/// Starts `firehose mock-jetstream` with `args` after the seed and count; returns it and its URL.
pub(crate) fn mock(seed: u64, events: u64, args: &[&str]) -> (Proc, String) {
    mock_from(seed, events, START_US, args)
}

/// [`mock`] with the first event at `start_us` (e.g. now, so that lag and ages are real).
pub(crate) fn mock_from(seed: u64, events: u64, start_us: i64, args: &[&str]) -> (Proc, String) {
    mock_on(0, seed, events, start_us, args)
}

/// [`mock_from`] listening on `port` (0: a free one).
pub(crate) fn mock_on(
    port: u16,
    seed: u64,
    events: u64,
    start_us: i64,
    args: &[&str],
) -> (Proc, String) {
    mock_to(port, seed, events, start_us, args, Stdio::null())
}

/// [`mock`] with its log (progress, and the summary it prints when it stops) in `log`.
pub(crate) fn mock_logged(seed: u64, events: u64, args: &[&str], log: &Path) -> (Proc, String) {
    let file = std::fs::File::create(log).unwrap();
    mock_to(0, seed, events, START_US, args, Stdio::from(file))
}

/// The fault counts of the summary a stopped mock wrote in its log ("faults: D drops, S
/// stalls, M malformed, …"): the number before `what`.
pub(crate) fn mock_fault_count(log: &Path, what: &str) -> u64 {
    let text = std::fs::read_to_string(log).unwrap();
    let last = text
        .lines()
        .rfind(|l| l.starts_with("mock-jetstream: stopped; "))
        .unwrap_or_else(|| panic!("no summary in the mock's log: {text}"));
    let words: Vec<&str> = last.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.trim_end_matches(',') == what)
        .unwrap_or_else(|| panic!("no {what} in {last}"));
    words[at - 1].parse().unwrap()
}

fn mock_to(
    port: u16,
    seed: u64,
    events: u64,
    start_us: i64,
    args: &[&str],
    stderr: Stdio,
) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(["mock-jetstream", "--progress-every", "0"])
        .arg("--port")
        .arg(port.to_string())
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--events")
        .arg(events.to_string())
        .arg("--start-time-us")
        .arg(start_us.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().to_owned();
    assert!(url.starts_with("ws://"), "mock printed {url:?}");
    (Proc(child), url)
}

/// The events the mock publishes for `seed`: their `time_us` (unique), per table.
pub(crate) fn expected(seed: u64, events: u64, rate: Option<f64>) -> BTreeMap<Table, Vec<i64>> {
    expected_from(seed, events, rate, START_US)
}

/// [`expected`] for a mock started with [`mock_from`].
pub(crate) fn expected_from(
    seed: u64,
    events: u64,
    rate: Option<f64>,
    start_us: i64,
) -> BTreeMap<Table, Vec<i64>> {
    let mut config = Config {
        seed,
        start_time_us: start_us,
        ..Config::default()
    };
    if let Some(rate) = rate {
        config.rate = rate;
    }
    let mut tables: BTreeMap<Table, Vec<i64>> = BTreeMap::new();
    for event in Generator::new(config).take(events as usize) {
        tables.entry(event.table()).or_default().push(event.time_us);
    }
    for times in tables.values_mut() {
        times.sort_unstable();
    }
    tables
}

/// Starts a long-running subcommand with its log in `dir/<name>.log`.
pub(crate) fn start(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_firehose"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The resident memory of process `pid`, in bytes (0 when it is gone).
pub(crate) fn rss(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb * 1024.0)
}

pub(crate) fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Prometheus text as `series → value` (the series with its labels, as printed).
pub(crate) fn metrics(addr: &str) -> HashMap<String, f64> {
    let Some((200, body)) = http_get(addr, "/metrics") else {
        return HashMap::new();
    };
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series of metric `name`.
pub(crate) fn total(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| series.as_str() == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Waits until `name` summed reaches `at_least` on the process at `addr`.
pub(crate) fn wait_for(addrs: &[&str], name: &str, at_least: f64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let sum: f64 = addrs.iter().map(|a| total(&metrics(a), name)).sum();
        if sum >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} reached {sum}, not {at_least}, in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until `done` holds, checking every 250 ms; panics with `what` after `timeout`.
pub(crate) fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Rows of every event table under a local dataset: `time_us` per table, sorted; and the
/// number of dead letters.
pub(crate) fn local_dataset(root: &Path) -> (BTreeMap<Table, Vec<i64>>, usize) {
    dataset(local_files(root))
}

/// The Parquet files under a local dataset: path relative to the root, and content.
///
/// A file deleted between the listing and its read (a writer joined it into another) makes it
/// list again.
pub(crate) fn local_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    'listing: for _ in 0..20 {
        let mut files = Vec::new();
        for path in crate::parquet_files(root) {
            if path.ends_with(".parquet") {
                match std::fs::read(root.join(&path)) {
                    Ok(data) => files.push((path.clone(), data)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue 'listing,
                    Err(e) => panic!("{path}: {e}"),
                }
            }
        }
        return files;
    }
    panic!("files of {} kept disappearing while read", root.display());
}

/// Rows stored more than once, counted by the product's event key (`did`, collection, `rkey`,
/// `rev` for commits; `did` and `time_us` for identity and account events) over every event
/// table of `files`, before any de-duplication; and the rows read.
///
/// Also checks the writer's duplicate-free marks: no key of a marked file is in another marked
/// file or twice in its own (the promise the query facade relies on to skip de-duplication).
pub(crate) fn key_duplicates(files: &[(String, Vec<u8>)]) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut seen_marked = std::collections::HashMap::new();
    let (mut duplicates, mut rows) = (0, 0);
    for (path, data) in files {
        let table = path.split('/').next().unwrap();
        if table == "dead_letters" {
            continue;
        }
        let table: Table = table.parse().unwrap();
        let keys =
            firehose_sink::keys::file_keys(table, path, bytes::Bytes::from(data.clone())).unwrap();
        rows += keys.len();
        duplicates += keys.iter().filter(|k| !seen.insert(k.fingerprint)).count();
        if is_marked(data) {
            for key in &keys {
                if let Some(other) = seen_marked.insert(key.fingerprint, path.clone()) {
                    panic!(
                        "files {other} and {path} are both marked duplicate-free and share an event key"
                    );
                }
            }
        }
    }
    (duplicates, rows)
}

/// Whether a Parquet file carries the writer's duplicate-free mark.
pub(crate) fn is_marked(data: &[u8]) -> bool {
    firehose_sink::file_is_marked_duplicate_free(bytes::Bytes::from(data.to_vec())).unwrap()
}

/// Event files (dead letters aside) without the duplicate-free mark.
pub(crate) fn unmarked_files(files: &[(String, Vec<u8>)]) -> usize {
    files
        .iter()
        .filter(|(path, data)| !path.starts_with("dead_letters/") && !is_marked(data))
        .count()
}

/// Rows of every event table in `files` (path relative to the dataset root, content): only
/// the `time_us` column is decoded.
pub(crate) fn dataset(files: Vec<(String, Vec<u8>)>) -> (BTreeMap<Table, Vec<i64>>, usize) {
    use arrow_array::{Array, Int64Array};
    let mut tables: BTreeMap<Table, Vec<i64>> = BTreeMap::new();
    let mut dead = 0;
    for (path, data) in files {
        let table = path.split('/').next().unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(data)).unwrap();
        if table == "dead_letters" {
            dead += builder.metadata().file_metadata().num_rows() as usize;
            continue;
        }
        let table: Table = table.parse().unwrap();
        let mask = ProjectionMask::columns(builder.parquet_schema(), ["time_us"]);
        let reader = builder.with_projection(mask).build().unwrap();
        let times = tables.entry(table).or_default();
        for batch in reader {
            let batch = batch.unwrap();
            let t = batch.column_by_name("time_us").unwrap();
            let t = t.as_any().downcast_ref::<Int64Array>().unwrap();
            assert_eq!(t.null_count(), 0, "{path}: time_us is never null");
            times.extend(t.values().iter().copied());
        }
    }
    for times in tables.values_mut() {
        times.sort_unstable();
    }
    (tables, dead)
}

/// The raw message of every dead letter in `files` (base64 decoded where it was stored so).
pub(crate) fn dead_letter_raws(files: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
    use arrow_array::{Array, StringArray};
    use base64::Engine as _;
    let mut raws = Vec::new();
    for (path, data) in files {
        if !path.starts_with("dead_letters/") {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(data.clone()))
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let column = |name: &str| {
                let c = batch.column_by_name(name).unwrap();
                c.as_any().downcast_ref::<StringArray>().unwrap().clone()
            };
            let (raw, encoding) = (column("raw"), column("raw_encoding"));
            for i in 0..raw.len() {
                raws.push(match encoding.value(i) {
                    "base64" => base64::engine::general_purpose::STANDARD
                        .decode(raw.value(i))
                        .unwrap(),
                    _ => raw.value(i).as_bytes().to_vec(),
                });
            }
        }
    }
    raws
}

/// The mock's broken frames per connection, from the line a stopped mock wrote in its log:
/// connection number to (frames sent, whether its drop fault ended the connection).
pub(crate) fn mock_broken_frames(log: &Path) -> BTreeMap<u64, (u64, bool)> {
    let text = std::fs::read_to_string(log).unwrap();
    let Some(line) = text
        .lines()
        .rfind(|l| l.starts_with("mock-jetstream: broken frames per connection"))
    else {
        return BTreeMap::new();
    };
    let counts = line.rsplit_once("): ").unwrap().1;
    counts
        .split_whitespace()
        .map(|pair| {
            let (connection, sent) = pair.split_once('=').unwrap();
            let dropped = sent.ends_with('*');
            let sent = sent.trim_end_matches('*');
            (
                connection.parse().unwrap(),
                (sent.parse().unwrap(), dropped),
            )
        })
        .collect()
}

/// The dataset after removing duplicate rows (what compaction and the query facade do).
pub(crate) fn deduplicated(
    mut tables: BTreeMap<Table, Vec<i64>>,
) -> (BTreeMap<Table, Vec<i64>>, usize) {
    let mut duplicates = 0;
    for times in tables.values_mut() {
        let before = times.len();
        times.dedup();
        duplicates += before - times.len();
    }
    (tables, duplicates)
}

/// A dataset compared with the events sent.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Events sent.
    pub(crate) sent: usize,
    /// Rows stored.
    pub(crate) rows: usize,
    /// `time_us` of the events sent and not stored, sorted.
    pub(crate) lost: Vec<i64>,
    /// Rows stored more than once (before de-duplication).
    pub(crate) duplicates: usize,
    /// Rows that match no event sent (in the wrong table, or never sent).
    pub(crate) unexpected: usize,
}

impl Tally {
    /// Compares `stored` with `sent`, table by table (both sorted).
    pub(crate) fn of(
        sent: &BTreeMap<Table, Vec<i64>>,
        stored: &BTreeMap<Table, Vec<i64>>,
    ) -> Tally {
        let mut tally = Tally::default();
        let empty = Vec::new();
        for table in Table::ALL {
            let want = sent.get(&table).unwrap_or(&empty);
            let got = stored.get(&table).unwrap_or(&empty);
            tally.sent += want.len();
            tally.rows += got.len();
            let (mut i, mut j) = (0, 0);
            while i < want.len() || j < got.len() {
                match (want.get(i), got.get(j)) {
                    (Some(w), Some(g)) if w == g => {
                        i += 1;
                        j += 1;
                        // Further copies of the same event.
                        while got.get(j) == Some(g) {
                            tally.duplicates += 1;
                            j += 1;
                        }
                    }
                    (Some(w), Some(g)) if w < g => {
                        tally.lost.push(*w);
                        i += 1;
                    }
                    (Some(w), None) => {
                        tally.lost.push(*w);
                        i += 1;
                    }
                    (_, Some(_)) => {
                        tally.unexpected += 1;
                        j += 1;
                    }
                    (None, None) => unreachable!(),
                }
            }
        }
        tally.lost.sort_unstable();
        tally
    }
}

/// Figures a scenario prints on standard output, one line each, for the report:
/// `RELIABILITY <scenario>: <text>`.
pub(crate) fn figure(scenario: &str, text: impl std::fmt::Display) {
    println!("RELIABILITY {scenario}: {text}");
}

/// A small seeded random number generator (SplitMix64), so the moments a test picks can be
/// picked again: the seed comes from `FIREHOSE_RELIABILITY_SEED` or the clock, and is printed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded(scenario: &str) -> Rng {
        let seed = match std::env::var("FIREHOSE_RELIABILITY_SEED") {
            Ok(s) => s.parse().expect("FIREHOSE_RELIABILITY_SEED is a number"),
            Err(_) => now_us() as u64,
        };
        figure(
            scenario,
            format_args!("seed {seed} (FIREHOSE_RELIABILITY_SEED={seed} picks the same moments)"),
        );
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration picked uniformly between `from` and `to` milliseconds.
    pub(crate) fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next_u64() % (to - from + 1))
    }
}

/// Whether the real servers a test needs are installed. Without them the test prints
/// `NOT RUN` and passes, unless `FIREHOSE_REQUIRE_SERVERS=1` (as in `scripts/test`), where
/// it fails.
pub(crate) fn have(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            Command::new("sh")
                .args(["-c", &format!("command -v {p}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("FIREHOSE_REQUIRE_SERVERS").as_deref() != Ok("1"),
        "{missing:?} must be installed when FIREHOSE_REQUIRE_SERVERS=1"
    );
    eprintln!("NOT RUN: needs {missing:?} (scripts/test installs them)");
    false
}

/// A private `redis-server` on a free port, from the shipped `deploy/redis.conf` plus the
/// test's settings; it can be killed, shut down cleanly and started again on the same port
/// and directory.
pub(crate) struct RedisServer {
    port: u16,
    dir: PathBuf,
    settings: Vec<String>,
    proc: Option<Proc>,
}

impl RedisServer {
    /// Starts one with its data in `dir` and `settings` (`["--appendfsync", "always"]`).
    pub(crate) fn start(dir: &Path, settings: &[&str]) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let mut server = RedisServer {
            port: free_port(),
            dir: dir.to_owned(),
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            proc: None,
        };
        server.restart();
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again (same port, directory and settings) and waits until it has
    /// loaded its data.
    pub(crate) fn restart(&mut self) {
        assert!(self.proc.is_none(), "redis-server is running");
        let conf = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/redis.conf");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .arg(conf)
            .args(["--port", &self.port.to_string(), "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.settings)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        wait_until("redis-server answers", Duration::from_secs(60), || {
            self.cli(&["PING"]).as_deref() == Some("PONG")
        });
    }

    /// SIGKILL: the process dies, the kernel keeps what it wrote to the append-only file.
    pub(crate) fn kill(&mut self) {
        self.proc.take().unwrap().kill();
    }

    /// SIGTERM: Redis writes and fsyncs its append-only file, then exits.
    pub(crate) fn shutdown(&mut self) {
        let code = self.proc.take().unwrap().terminate();
        assert_eq!(code, 0, "redis-server shut down cleanly");
    }

    /// The server's process id, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The directory of the append-only file's parts.
    pub(crate) fn aof_dir(&self) -> PathBuf {
        self.dir.join("appendonlydir")
    }

    /// Runs a command through `redis-cli`; its output trimmed, `None` when it failed.
    pub(crate) fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success()
            && !text.starts_with("Could not connect")
            && !text.starts_with("ERR")
            && !text.starts_with("LOADING"))
        .then_some(text)
    }

    /// A numeric field of a hash, 0 when missing or unreadable.
    pub(crate) fn hash_number(&self, key: &str, field: &str) -> i64 {
        self.cli(&["HGET", key, field])
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// The newest incremental part of a multi-part append-only file (`*.<n>.incr.aof`) in `dir`.
pub(crate) fn newest_incr_aof(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let n: u64 = name
                .strip_suffix(".incr.aof")?
                .rsplit('.')
                .next()?
                .parse()
                .ok()?;
            Some((n, path))
        })
        .max()
        .map(|(_, path)| path)
}

/// A private `s3s-fs` on a free port with a throwaway key; it can be stopped (SIGKILL) and
/// started again on the same port and directory.
pub(crate) struct S3Server {
    port: u16,
    root: PathBuf,
    secret: String,
    proc: Option<Proc>,
}

pub(crate) const S3_KEY: &str = "firehose-reliability";

impl S3Server {
    pub(crate) fn start(dir: &Path) -> S3Server {
        let root = dir.join("s3");
        std::fs::create_dir_all(&root).unwrap();
        let mut server = S3Server {
            port: free_port(),
            root,
            secret: format!("secret-{}", now_us()),
            proc: None,
        };
        server.resume();
        server
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The AWS variables the `firehose` processes read.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "fsn1".into()),
            ("AWS_ACCESS_KEY_ID", S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }

    /// A new bucket (s3s-fs keeps each bucket as a directory).
    pub(crate) fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).unwrap();
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub(crate) fn resume(&mut self) {
        assert!(self.proc.is_none(), "s3s-fs is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.with_file_name("s3s-fs.log"))
            .unwrap();
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", &self.secret])
            .arg(&self.root)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(
            "s3s-fs accepts connections",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(&addr).is_ok(),
        );
    }

    /// SIGKILL: the object store is gone (connections refused) until [`resume`](Self::resume).
    pub(crate) fn stop(&mut self) {
        self.proc.take().unwrap().kill();
    }

    /// Every Parquet object under `s3://bucket/prefix`, read through the S3 API (16 requests
    /// at a time), with its path relative to the prefix.
    pub(crate) fn parquet_files(&self, bucket: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
        use firehose_sink::Storage;
        use firehose_sink::s3::{S3Config, S3Storage, Secret};
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let mut config = S3Config::from_url(&format!("s3://{bucket}/{prefix}")).unwrap();
            config.endpoint = Some(self.endpoint());
            config.region = Some("fsn1".into());
            config.access_key_id = Some(S3_KEY.into());
            config.secret_access_key = Some(Secret::new(self.secret.clone()));
            let storage = std::sync::Arc::new(S3Storage::new(config).await.unwrap());
            // A file deleted between the listing and its read (a writer joined it into
            // another) makes it list again.
            'listing: for _ in 0..20 {
                let mut paths: Vec<String> = storage
                    .list("")
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|o| o.path)
                    .filter(|p| p.ends_with(".parquet"))
                    .collect();
                let mut files = Vec::new();
                let mut tasks = tokio::task::JoinSet::new();
                while !paths.is_empty() || !tasks.is_empty() {
                    while tasks.len() < 16
                        && let Some(path) = paths.pop()
                    {
                        let storage = storage.clone();
                        tasks.spawn(async move {
                            match storage.get(&path).await {
                                Ok(data) => Some((path, data.to_vec())),
                                Err(firehose_sink::Error::NotFound { .. }) => None,
                                Err(e) => panic!("{path}: {e}"),
                            }
                        });
                    }
                    if let Some(done) = tasks.join_next().await {
                        match done.unwrap() {
                            Some(file) => files.push(file),
                            None => continue 'listing,
                        }
                    }
                }
                return files;
            }
            panic!("objects under s3://{bucket}/{prefix} kept disappearing while read")
        })
    }
}

/// The server deployment on private servers: `ingest` → `redis-server` → `write` → `s3s-fs`,
/// the dataset at `s3://archive/v1`.
pub(crate) struct Deployment {
    pub(crate) dir: PathBuf,
    pub(crate) redis: RedisServer,
    pub(crate) s3: S3Server,
}

/// Where the deployment's dataset lives.
pub(crate) const BUCKET: &str = "archive";
pub(crate) const PREFIX: &str = "v1";
/// The Redis stream (the default).
pub(crate) const STREAM: &str = "firehose:events";

impl Deployment {
    /// Starts the servers, Redis with `redis_settings`; `None` (after printing `NOT RUN`) when
    /// they are not installed.
    pub(crate) fn start(name: &str, redis_settings: &[&str]) -> Option<Deployment> {
        if !have(&["redis-server", "redis-cli", "s3s-fs"]) {
            return None;
        }
        let dir = temp_dir(name);
        let redis = RedisServer::start(&dir.join("redis"), redis_settings);
        let s3 = S3Server::start(&dir);
        s3.create_bucket(BUCKET);
        Some(Deployment { dir, redis, s3 })
    }

    /// `firehose ingest` from `url`, starting at `start_cursor` when Redis holds no checkpoint.
    pub(crate) fn ingest(
        &self,
        url: &str,
        metrics_addr: &str,
        start_cursor: i64,
        extra: &[&str],
    ) -> Proc {
        self.ingest_with_env(url, metrics_addr, start_cursor, extra, &[])
    }

    /// [`ingest`](Self::ingest) with environment variables (`FIREHOSE_BUFFER_SIZE`).
    pub(crate) fn ingest_with_env(
        &self,
        url: &str,
        metrics_addr: &str,
        start_cursor: i64,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let cursor = start_cursor.to_string();
        let mut args = vec!["--start-cursor", &cursor];
        args.extend_from_slice(extra);
        self.run_ingest(url, metrics_addr, &args, env)
    }

    /// `firehose ingest` from `url` as the deployment runs it: no start cursor, the dataset
    /// given (`--out`), so it resumes from the newer of Redis's checkpoint and the dataset's.
    pub(crate) fn ingest_with_dataset(&self, url: &str, metrics_addr: &str) -> Proc {
        let out = format!("s3://{BUCKET}/{PREFIX}");
        let env = self.s3.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.run_ingest(url, metrics_addr, &["--out", &out], &env)
    }

    /// [`ingest_with_dataset`](Self::ingest_with_dataset) starting at `start_cursor` when no
    /// checkpoint is found, with `extra` arguments.
    pub(crate) fn ingest_with_dataset_from(
        &self,
        url: &str,
        metrics_addr: &str,
        start_cursor: i64,
        extra: &[&str],
    ) -> Proc {
        let out = format!("s3://{BUCKET}/{PREFIX}");
        let args: Vec<&str> = ["--out", out.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        let env = self.s3.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.ingest_with_env(url, metrics_addr, start_cursor, &args, &env)
    }

    /// `firehose ingest` from `url` into this deployment's Redis, with `extra` arguments.
    fn run_ingest(
        &self,
        url: &str,
        metrics_addr: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let redis = self.redis.url();
        let mut args = vec![
            "ingest",
            "--jetstream-url",
            url,
            "--redis-url",
            &redis,
            "--redis-stream",
            STREAM,
            "--metrics-addr",
            metrics_addr,
        ];
        args.extend_from_slice(extra);
        start("ingest", &self.dir, &args, env)
    }

    /// `firehose write` as `consumer` to the dataset, with `extra` settings after the defaults
    /// of these tests (files close at 4 MiB of JSON or after 2 s).
    pub(crate) fn writer(&self, consumer: &str, metrics_addr: &str, extra: &[&str]) -> Proc {
        let redis = self.redis.url();
        let out = format!("s3://{BUCKET}/{PREFIX}");
        let mut args = vec![
            "write",
            "--redis-url",
            &redis,
            "--redis-stream",
            STREAM,
            "--out",
            &out,
            "--consumer",
            consumer,
            "--metrics-addr",
            metrics_addr,
            "--max-open-bytes",
            "4MiB",
            "--max-file-age",
            "2s",
        ];
        args.extend_from_slice(extra);
        let env = self.s3.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        start(consumer, &self.dir, &args, &env)
    }

    /// The writers' checkpoint in Redis (0 when none, or when Redis does not answer).
    pub(crate) fn checkpoint(&self) -> i64 {
        self.redis
            .hash_number(&format!("{STREAM}:state"), "checkpoint")
    }

    /// Events in Redis not acknowledged yet (0 when Redis does not answer).
    pub(crate) fn unacked(&self) -> i64 {
        self.redis.hash_number(&format!("{STREAM}:stats"), "events")
    }

    /// The dataset as stored in S3, and its dead letters.
    pub(crate) fn dataset(&self) -> (BTreeMap<Table, Vec<i64>>, usize) {
        dataset(self.s3.parquet_files(BUCKET, PREFIX))
    }
}

/// The time of the last event of `events`.
pub(crate) fn last_time(events: &BTreeMap<Table, Vec<i64>>) -> i64 {
    events
        .values()
        .filter_map(|t| t.last())
        .copied()
        .max()
        .unwrap()
}

/// A `time_us` as seconds after `origin`, for figures.
pub(crate) fn secs_after(time_us: i64, origin: i64) -> f64 {
    (time_us - origin) as f64 / 1e6
}
