//! Helpers: the shared server's URL, throwaway servers, unique stream keys.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use firehose_buffer::redis::{RedisBuffer, RedisBufferBuilder};

fn require_servers() -> bool {
    std::env::var("FIREHOSE_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Report a test that cannot run: fail when servers are required, else say so and go on.
pub(crate) fn not_run(test: &str, why: &str) {
    assert!(
        !require_servers(),
        "{test}: {why}, and FIREHOSE_REQUIRE_SERVERS=1 requires it"
    );
    eprintln!("NOT RUN: {test}: {why} (set it, or run scripts/test, to run this test)");
    println!("NOT RUN: {test}: {why}");
}

/// The shared server's URL, or `None` (after reporting) when `REDIS_URL` is unset.
pub(crate) fn redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            not_run(test, "REDIS_URL is not set");
            None
        }
    }
}

/// A stream key no other test (or earlier run) uses.
pub(crate) fn unique_stream(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "firehose-test:{test}:{}:{nanos}:{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A builder for `stream` on the server at `url`, with short retry and block times.
pub(crate) fn builder(url: &str, stream: &str) -> RedisBufferBuilder {
    RedisBufferBuilder::new()
        .with_url(url)
        .with_stream(stream)
        .with_group("writers")
        .with_max_block(Duration::from_secs(2))
        .with_retry_for(Duration::from_secs(30))
}

/// Delete the keys a test's buffer made.
pub(crate) async fn cleanup(buffer: &RedisBuffer, url: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
        let stream = buffer.stream();
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(stream)
            .arg(format!("{stream}:stats"))
            .arg(format!("{stream}:meta"))
            .query_async(&mut conn)
            .await;
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A throwaway `redis-server`, killed (and its directory removed) on drop.
pub(crate) struct RedisServer {
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Whether `port` is a TLS port (then the plain port is disabled).
    tls: bool,
}

impl RedisServer {
    /// Start a server with these extra arguments, or `None` (after reporting) when there is
    /// no `redis-server` on `PATH`.
    pub(crate) fn start(test: &str, args: &[&str]) -> Option<Self> {
        Self::start_inner(test, args, false, None)
    }

    /// Start a TLS server in `dir` (which holds the certificates).
    pub(crate) fn start_tls(test: &str, dir: PathBuf, args: &[&str]) -> Option<Self> {
        Self::start_inner(test, args, true, Some(dir))
    }

    fn start_inner(test: &str, args: &[&str], tls: bool, dir: Option<PathBuf>) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            not_run(test, "redis-server is not on PATH");
            return None;
        }
        let dir = dir.unwrap_or_else(|| temp_dir(test));
        let mut server = Self {
            port: free_port(),
            dir,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            tls,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if self.tls {
            cmd.args(["--port", "0", "--tls-port"]);
        } else {
            cmd.arg("--port");
        }
        cmd.arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn redis-server");
        self.child = Some(child);
        self.wait_listening();
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("redis-server exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not listen on {}: {}",
            self.port,
            self.log()
        );
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kill the server hard (SIGKILL: no shutdown, no final fsync).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port and directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique_stream(test).replace(':', "-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Run a command, panicking with its output when it fails.
pub(crate) fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
