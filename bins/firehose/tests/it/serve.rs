//! `firehose serve`: token, limits, formats, metrics, over real HTTP on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::query::dataset;

const TOKEN: &str = "s3cret-token-for-tests";
/// Long enough to outlast the time limit the test server has.
const HEAVY: &str = "SELECT sum(value % 7) FROM generate_series(1, 10000000000)";

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let token_file = std::env::temp_dir().join(format!("firehose-it-token-{}", std::process::id()));
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args([
            "serve",
            "--data",
            dataset().to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ])
        .args(["--token-file", token_file.to_str().unwrap()])
        .args(extra)
        .env_remove("FIREHOSE_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Server { child, addr }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    // A reset after the answer (the server closed with part of the body unread) still leaves
    // the answer read.
    if let Err(e) = stream.read_to_end(&mut raw) {
        assert!(!raw.is_empty(), "{e}");
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 4 + size..];
        }
        body = out;
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(&s.addr, "GET", path, headers, b"")
}

const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret-token-for-tests");

#[test]
fn token_formats_and_errors() {
    let s = start(&["--max-body", "4K"]);
    // Health and metrics need no token.
    let health = get(&s, "/health", &[]);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");

    // The token.
    let r = get(&s, "/stats?day=2026-11-20", &[]);
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("token"));
    let r = get(
        &s,
        "/stats?day=2026-11-20",
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(r.status, 401);
    let r = get(
        &s,
        "/stats?day=2026-11-20",
        &[("Authorization", "Bearer s3cret-token-for-test")],
    );
    assert_eq!(r.status, 401, "a prefix of the token is not the token");
    let r = get(&s, "/stats?day=2026-11-20", &[AUTH]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let stats = r.json();
    assert_eq!(stats[0]["day"], "2026-11-20");

    // Formats: ?format= and Accept.
    let r = get(&s, "/stats?day=2026-11-20&format=csv", &[AUTH]);
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(
        r.body
            .starts_with(b"day,posts,unique_authors,avg_text_length\n2026-11-20,")
    );
    let r = get(
        &s,
        "/hourly?day=2026-11-20",
        &[AUTH, ("Accept", "application/vnd.apache.arrow.stream")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apache.arrow.stream")
    );
    assert_eq!(&r.body[..4], &[0xff; 4]);
    let r = get(&s, "/posts?day=2026-11-20&limit=3&format=ndjson", &[AUTH]);
    assert_eq!(String::from_utf8(r.body).unwrap().lines().count(), 3);
    let r = get(&s, "/top?day=2026-11-20&by=reposts&limit=2", &[AUTH]);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = get(&s, "/search?day=2026-11-20&q=it%27s%20%22x", &[AUTH]);
    assert_eq!(r.status, 200);
    let r = get(&s, "/account/did:plc:nobody?day=2026-11-20", &[AUTH]);
    assert_eq!(r.json(), serde_json::json!([]));

    // SQL, as a body, as JSON and as a parameter.
    let sql = b"SELECT count(*) AS n FROM posts WHERE operation = 'create'";
    let r = request(&s.addr, "POST", "/sql", &[AUTH], sql);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["n"], stats[0]["posts"]);
    let body = serde_json::json!({"sql": "SELECT 1 AS one"}).to_string();
    let r = request(
        &s.addr,
        "POST",
        "/sql",
        &[AUTH, ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.json(), serde_json::json!([{"one": 1}]));
    let r = get(&s, "/sql?q=SELECT%202%20AS%20two&format=csv", &[AUTH]);
    assert_eq!(r.body, b"two\n2\n");

    // Refused SQL and bad arguments: 400 with the reason.
    let r = request(&s.addr, "POST", "/sql", &[AUTH], b"DROP TABLE posts");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("DROP TABLE"));
    let r = request(
        &s.addr,
        "POST",
        "/sql",
        &[AUTH],
        b"CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
    );
    assert_eq!(r.status, 400);
    let r = get(&s, "/stats?day=yesterday", &[AUTH]);
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("yesterday"));
    let r = get(&s, "/stats?day=2026-11-20&format=xml", &[AUTH]);
    assert_eq!(r.status, 400);

    // Too large a body: 413.
    let big = vec![b' '; 16 * 1024];
    let r = request(&s.addr, "POST", "/sql", &[AUTH], &big);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].as_str().unwrap().contains("too large"));

    // Metrics count what happened.
    let metrics = String::from_utf8(get(&s, "/metrics", &[]).body).unwrap();
    for line in [
        "firehose_query_requests_total{route=\"/stats\",status=\"200\"}",
        "firehose_query_requests_total{route=\"/stats\",status=\"401\"} 3",
        "firehose_query_rejected_total{reason=\"auth\"} 3",
        "firehose_query_rejected_total{reason=\"sql\"} 2",
        "firehose_query_rejected_total{reason=\"size\"} 1",
        "firehose_query_duration_seconds",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    drop(s);
}

#[test]
fn time_and_concurrency_limits() {
    let mut s = start(&["--timeout", "2s", "--max-concurrent", "1"]);
    let addr = s.addr.clone();
    let slow = std::thread::spawn(move || {
        let path = format!("/sql?q={}", HEAVY.replace(' ', "%20"));
        request(&addr, "GET", &path, &[AUTH], b"")
    });
    std::thread::sleep(Duration::from_millis(500));
    let busy = get(&s, "/sql?q=SELECT%201", &[AUTH]);
    assert_eq!(busy.status, 503);
    assert_eq!(busy.header("retry-after"), Some("1"));
    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 504);
    assert!(
        slow.json()["error"]
            .as_str()
            .unwrap()
            .contains("time limit")
    );
    // Free again.
    assert_eq!(get(&s, "/sql?q=SELECT%201", &[AUTH]).status, 200);
    let metrics = String::from_utf8(get(&s, "/metrics", &[]).body).unwrap();
    assert!(
        metrics.contains("firehose_query_rejected_total{reason=\"busy\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("firehose_query_rejected_total{reason=\"timeout\"} 1"),
        "{metrics}"
    );
    // The token never shows in the server's output.
    let _ = s.child.kill();
    let mut stderr = String::new();
    s.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

/// SQL that parses into a very deep tree (a long flat chain of operators) used to overflow
/// the stack of the worker thread and abort the whole server: one 60 KB request took it down.
/// It is refused before it is parsed, chains within the bound run, and the server stays up.
#[test]
fn deeply_nested_sql_is_refused_and_the_server_stays_up() {
    let mut s = start(&[]);
    let chain = format!("SELECT {}1 AS x", "1+".repeat(30_000));
    let r = request(&s.addr, "POST", "/sql", &[AUTH], chain.as_bytes());
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("nests too deeply"),
        "{}",
        r.json()
    );
    // Chains just within the bound, of each kind that builds a deep tree, are answered.
    let within = firehose_sql_guard::MAX_NESTING - 10;
    let casts = within / 3;
    for (sql, expect) in [
        (
            format!("SELECT {}1 AS x", "1+".repeat(within)),
            serde_json::json!([{ "x": within + 1 }]),
        ),
        (
            format!("SELECT {}true AS x", "false OR ".repeat(within / 2)),
            serde_json::json!([{ "x": true }]),
        ),
        (
            format!("SELECT {}1 AS x", "2::BIGINT - ".repeat(casts)),
            // 2 - 2 - ... - 1, left to right.
            serde_json::json!([{ "x": 2 - 2 * (casts as i64 - 1) - 1 }]),
        ),
    ] {
        let r = request(&s.addr, "POST", "/sql", &[AUTH], sql.as_bytes());
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json(), expect);
    }
    let unions = format!(
        "SELECT count(*) AS n FROM ({}SELECT 1 AS one)",
        "SELECT 1 AS one UNION ALL ".repeat(within / 5)
    );
    let r = request(&s.addr, "POST", "/sql", &[AUTH], unions.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()[0]["n"], within / 5 + 1);
    assert_eq!(get(&s, "/health", &[]).status, 200);
    assert!(s.child.try_wait().unwrap().is_none(), "the server is up");
}

/// Read-only over HTTP: statements that would write a file, read one, or change a setting
/// are refused with 400 and change nothing; a request without the token runs nothing.
#[test]
fn sql_over_http_is_read_only() {
    let s = start(&[]);
    let target = std::env::temp_dir().join(format!("firehose-it-stolen-{}", std::process::id()));
    let _ = std::fs::remove_file(&target);
    let before = request(
        &s.addr,
        "POST",
        "/sql",
        &[AUTH],
        b"SELECT count(*) AS n FROM posts",
    );
    assert_eq!(before.status, 200);
    let copy = format!("COPY posts TO '{}' STORED AS PARQUET", target.display());
    let r = request(&s.addr, "POST", "/sql", &[], copy.as_bytes());
    assert_eq!(r.status, 401, "no token, nothing runs");
    for sql in [
        copy.clone(),
        format!("COPY (SELECT 1) TO '{}' STORED AS CSV", target.display()),
        format!(
            "CREATE EXTERNAL TABLE stolen STORED AS PARQUET LOCATION '{}'",
            target.display()
        ),
        "SELECT * FROM read_csv('/etc/passwd')".to_owned(),
        "SET datafusion.execution.batch_size = 1".to_owned(),
        "WITH gone AS (DELETE FROM posts RETURNING *) SELECT * FROM gone".to_owned(),
        "DROP TABLE posts".to_owned(),
    ] {
        let r = request(&s.addr, "POST", "/sql", &[AUTH], sql.as_bytes());
        assert_eq!(r.status, 400, "{sql}: {}", String::from_utf8_lossy(&r.body));
        let r = get(
            &s,
            &format!(
                "/sql?q={}",
                sql.replace('%', "%25")
                    .replace(' ', "%20")
                    .replace('\'', "%27")
            ),
            &[AUTH],
        );
        assert_eq!(r.status, 400, "GET {sql}");
    }
    assert!(!target.exists(), "no file was written");
    let after = request(
        &s.addr,
        "POST",
        "/sql",
        &[AUTH],
        b"SELECT count(*) AS n FROM posts",
    );
    assert_eq!(after.json(), before.json(), "nothing changed");
}

/// Without `--addr`, the API listens on loopback only; listening elsewhere without a token
/// is warned about.
#[test]
fn serve_listens_on_loopback_by_default() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(["serve", "--data", dataset().to_str().unwrap()])
        .env_remove("FIREHOSE_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Port 8080 may be taken on this machine; either way the address is loopback.
    assert!(
        line.trim() == "listening on http://127.0.0.1:8080"
            || stderr.contains("cannot listen on 127.0.0.1:8080"),
        "{line} {stderr}"
    );
    assert!(!stderr.contains("without a token"), "{stderr}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(["serve", "--data", dataset().to_str().unwrap()])
        .args(["--addr", "0.0.0.0:0"])
        .env_remove("FIREHOSE_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(line.starts_with("listening on http://0.0.0.0:"), "{line}");
    assert!(
        stderr.contains("without a token: anyone who reaches it can query"),
        "{stderr}"
    );
}

/// A client that sends half its headers, or its body too slowly, is given up on after
/// `--read-timeout`: the connection is closed, or the request answered 408. (Before, a
/// connection with half its headers stayed open as long as the client liked.)
#[test]
fn slow_clients_are_given_up_on() {
    let s = start(&["--read-timeout", "2s"]);
    let started = std::time::Instant::now();
    let mut half = TcpStream::connect(&s.addr).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = half.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let started = std::time::Instant::now();
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        slow,
        "POST /sql HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\nSELECT"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8));

    // Others are served meanwhile and after.
    assert_eq!(get(&s, "/sql?q=SELECT%201", &[AUTH]).status, 200);
    let metrics = String::from_utf8(get(&s, "/metrics", &[]).body).unwrap();
    assert!(
        metrics.contains("firehose_query_rejected_total{reason=\"slow\"} 1"),
        "{metrics}"
    );
}
