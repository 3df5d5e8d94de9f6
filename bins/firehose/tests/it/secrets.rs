//! No secret in any output: the pipeline (`ingest` → Redis with a password → `write` → an
//! S3-compatible server with a secret key) and `serve` with a token run with known random
//! secrets, on working and failing paths (wrong Redis password, wrong S3 secret, bad token),
//! with debug logs on; every output (stdout, stderr, `/metrics`, `/health`, HTTP error bodies,
//! `--help`, configuration errors) is searched for the secrets.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Proc, START_US, free_port, http_get, mock, temp_dir, wait_for};
use crate::redis_auth::{redis_server, secret};

/// Everything the processes printed or answered, with where it came from.
#[derive(Default)]
struct Outputs(Vec<(String, String)>);

impl Outputs {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.0.push((what.into(), text.into()));
    }

    /// `/metrics` and `/health` of a process.
    fn endpoints(&mut self, what: &str, addr: &str) {
        for path in ["/metrics", "/health"] {
            let (status, body) = http_get(addr, path).unwrap_or((0, String::new()));
            assert!(status > 0, "{what} answers {path}");
            self.add(format!("{what} {path}"), body);
        }
    }

    fn log(&mut self, what: &str, dir: &Path) {
        let text = std::fs::read_to_string(dir.join(format!("{what}.log"))).unwrap();
        // Written to a file, not a terminal: no colour codes, which would break searches.
        assert!(
            !text.contains('\x1b'),
            "{what}'s log has escape codes: {text:.300}"
        );
        self.add(format!("{what} stderr"), text);
    }

    /// Fails naming every output that holds one of `secrets`.
    fn assert_free_of(&self, secrets: &[&str]) {
        let mut leaks = Vec::new();
        for (what, text) in &self.0 {
            for secret in secrets {
                if let Some(at) = text.find(secret) {
                    let start = text[..at]
                        .char_indices()
                        .rev()
                        .nth(80)
                        .map_or(0, |(i, _)| i);
                    let end = (at + secret.len() + 40).min(text.len());
                    let end = (end..=text.len())
                        .find(|&i| text.is_char_boundary(i))
                        .unwrap();
                    leaks.push(format!("{what}: …{}…", &text[start..end]));
                }
            }
        }
        assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    }

    fn bytes(&self) -> usize {
        self.0.iter().map(|(_, t)| t.len()).sum()
    }
}

/// Starts a long-running subcommand with debug logs into `dir/<name>.log`.
fn start_debug(name: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_firehose"))
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "debug")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// Runs a command to its end; returns its stdout and stderr together.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A private s3s-fs with `secret` as its secret key, and a bucket in it.
fn s3_server(dir: &Path, access_key: &str, secret: &str) -> Option<(Proc, String)> {
    if Command::new("s3s-fs").arg("--help").output().is_err() {
        assert!(
            std::env::var("FIREHOSE_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "s3s-fs is not on PATH and FIREHOSE_REQUIRE_SERVERS=1"
        );
        eprintln!("NOT RUN: s3s-fs is not on PATH");
        return None;
    }
    let root = dir.join("s3");
    std::fs::create_dir_all(root.join("archive")).unwrap();
    let port = free_port();
    let server = Proc(
        Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", access_key, "--secret-key", secret])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((server, format!("http://127.0.0.1:{port}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("s3s-fs did not start");
}

#[test]
fn no_secret_shows_in_logs_metrics_health_errors_or_help() {
    let dir = temp_dir("secrets");
    let redis_password = secret("redispw");
    let s3_secret = secret("s3secret");
    let api_token = secret("apitoken");
    let wrong = secret("wrongpw");
    let secrets = [
        redis_password.as_str(),
        s3_secret.as_str(),
        api_token.as_str(),
        wrong.as_str(),
    ];
    let Some((_redis, redis_port)) =
        redis_server(&dir, "redis", &["--requirepass", &redis_password])
    else {
        return;
    };
    let Some((_s3, endpoint)) = s3_server(&dir, "firehose-secrets", &s3_secret) else {
        return;
    };
    let mut outputs = Outputs::default();
    let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
    let redis_url_with_password = format!("redis://:{redis_password}@127.0.0.1:{redis_port}/0");
    let password_env = [("FIREHOSE_REDIS_PASSWORD", redis_password.as_str())];
    let aws = |secret: &str| -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", endpoint.clone()),
            ("AWS_REGION", "fsn1".into()),
            ("AWS_ACCESS_KEY_ID", "firehose-secrets".into()),
            ("AWS_SECRET_ACCESS_KEY", secret.into()),
        ]
    };

    // The working pipeline: ingest with the password in the URL, write with it in the
    // environment, to S3 with the secret key.
    let (_mock, jetstream) = mock(71, 3_000, &["--rate", "3000"]);
    let stream = format!("firehose-secrets:{}", std::process::id());
    let cursor = START_US.to_string();
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let ingest = start_debug(
        "ingest",
        &dir,
        &[
            "ingest",
            "--jetstream-url",
            &jetstream,
            "--redis-url",
            &redis_url_with_password,
            "--redis-stream",
            &stream,
            "--metrics-addr",
            &ingest_addr,
            "--start-cursor",
            &cursor,
        ],
        &[],
    );
    let write_addr = format!("127.0.0.1:{}", free_port());
    let write_args = |addr: &str| -> Vec<String> {
        [
            "write",
            "--redis-url",
            &redis_url,
            "--redis-stream",
            &stream,
            "--out",
            "s3://archive/v1",
            "--metrics-addr",
            addr,
            "--max-file-age",
            "1s",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = write_args(&write_addr);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, String)> = aws(&s3_secret)
        .into_iter()
        .chain([("FIREHOSE_REDIS_PASSWORD", redis_password.clone())])
        .collect();
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let write = start_debug("write", &dir, &args, &env_ref);
    wait_for(
        &[&write_addr],
        "firehose_writer_rows_total",
        3_000.0,
        Duration::from_secs(60),
    );
    outputs.endpoints("ingest", &ingest_addr);
    outputs.endpoints("write", &write_addr);

    // A writer with the wrong S3 secret: its batches fail and are retried, unhealthy.
    let bad_addr = format!("127.0.0.1:{}", free_port());
    let args = write_args(&bad_addr);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--consumer", "wrong-s3"]);
    let bad_env: Vec<(&str, String)> = aws(&wrong)
        .into_iter()
        .chain([("FIREHOSE_REDIS_PASSWORD", redis_password.clone())])
        .collect();
    let bad_env_ref: Vec<(&str, &str)> = bad_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // Fresh events for it: a second mock feeding the same stream.
    let (_mock2, jetstream2) = mock(72, 2_000, &["--rate", "2000"]);
    let ingest2_addr = format!("127.0.0.1:{}", free_port());
    drop(write); // SIGKILL: the good writer leaves the new events to the bad one
    let bad = start_debug("write-wrong-s3", &dir, &args, &bad_env_ref);
    let ingest2 = start_debug(
        "ingest2",
        &dir,
        &[
            "ingest",
            "--jetstream-url",
            &jetstream2,
            "--redis-url",
            &redis_url,
            "--redis-stream",
            &stream,
            "--metrics-addr",
            &ingest2_addr,
            "--start-cursor",
            &cursor,
        ],
        &password_env,
    );
    wait_for(
        &[&bad_addr],
        "firehose_writer_failures_total",
        3.0,
        Duration::from_secs(60),
    );
    outputs.endpoints("write with the wrong S3 secret", &bad_addr);
    let (status, _) = http_get(&bad_addr, "/health").unwrap();
    assert_eq!(status, 503, "failing storage shows in /health");
    outputs.endpoints("ingest2", &ingest2_addr);
    drop(bad);
    assert_eq!(ingest.terminate(), 0);
    assert_eq!(ingest2.terminate(), 0);
    for name in ["ingest", "write", "write-wrong-s3", "ingest2"] {
        outputs.log(name, &dir);
    }
    let bad_log = std::fs::read_to_string(dir.join("write-wrong-s3.log")).unwrap();
    assert!(
        bad_log.contains("Storing a batch failed"),
        "the wrong secret was used and failed: {}",
        &bad_log[..bad_log.len().min(2000)]
    );

    // Wrong and missing Redis passwords, in the environment and in the URL.
    let url_wrong = format!("redis://:{wrong}@127.0.0.1:{redis_port}/0");
    for (url, env) in [
        (
            &redis_url,
            vec![("FIREHOSE_REDIS_PASSWORD", wrong.as_str())],
        ),
        (&url_wrong, vec![]),
        (&redis_url, vec![]),
    ] {
        let (code, text) = run(
            &[
                "write",
                "--redis-url",
                url,
                "--out",
                dir.join("unused").to_str().unwrap(),
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            &env,
        );
        assert_eq!(code, Some(2), "{text}");
        outputs.add("write with a wrong Redis password", text);
    }

    // serve with a token: wrong, missing and right tokens, bad SQL.
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{api_token}\n")).unwrap();
    let data = dir.join("empty-dataset");
    std::fs::create_dir_all(&data).unwrap();
    let serve_addr = format!("127.0.0.1:{}", free_port());
    let serve = start_debug(
        "serve",
        &dir,
        &[
            "serve",
            "--data",
            data.to_str().unwrap(),
            "--addr",
            &serve_addr,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    );
    for _ in 0..300 {
        if http_get(&serve_addr, "/health").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let almost = format!("{api_token}x");
    let prefix = &api_token[..api_token.len() - 1];
    for (token, sql) in [
        (None, "SELECT 1"),
        (Some(almost.as_str()), "SELECT 1"),
        (Some(prefix), "SELECT 1"),
        (Some(api_token.as_str()), "SELEC nonsense"),
        (Some(api_token.as_str()), "DROP TABLE posts"),
        (Some(api_token.as_str()), "SELECT count(*) FROM posts"),
    ] {
        let reply = http_request(&serve_addr, token, sql);
        outputs.add(format!("serve /sql with {token:?}"), reply);
    }
    outputs.endpoints("serve", &serve_addr);
    drop(serve);
    outputs.log("serve", &dir);
    let serve_log = std::fs::read_to_string(dir.join("serve.log")).unwrap();
    assert!(serve_log.contains("listening on"), "{serve_log}");

    // --help of every command, with every secret in the environment.
    let env_secrets = [
        ("FIREHOSE_REDIS_URL", redis_url_with_password.as_str()),
        ("FIREHOSE_REDIS_PASSWORD", redis_password.as_str()),
        ("AWS_SECRET_ACCESS_KEY", s3_secret.as_str()),
        ("FIREHOSE_API_TOKEN", api_token.as_str()),
    ];
    for command in [
        "run", "ingest", "write", "serve", "query", "import", "compact",
    ] {
        let (code, text) = run(&[command, "--help"], &env_secrets);
        assert_eq!(code, Some(0), "{text}");
        outputs.add(format!("{command} --help"), text);
    }

    // Configuration: a file holding the Redis URL with its password, shown by --help, and a
    // file whose syntax error is on that line.
    let config = dir.join("firehose.toml");
    std::fs::write(
        &config,
        format!("redis-url = \"{redis_url_with_password}\"\nout = \"./data\"\n"),
    )
    .unwrap();
    let (_, text) = run(
        &["write", "--config", config.to_str().unwrap(), "--help"],
        &[],
    );
    outputs.add("write --config --help", text);
    let broken = dir.join("broken.toml");
    std::fs::write(
        &broken,
        format!("out = \"./data\"\nredis-url = \"{redis_url_with_password}\n"),
    )
    .unwrap();
    let (code, text) = run(&["write", "--config", broken.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{text}");
    outputs.add("write with a broken config file", text);
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, format!("redis-password = \"{redis_password}\"\n")).unwrap();
    let (code, text) = run(&["write", "--config", unknown.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{text}");
    outputs.add("write with an unknown setting", text);
    let bad_url = format!("redis://:{redis_password}@[::1/0");
    let (code, text) = run(
        &[
            "write",
            "--redis-url",
            &bad_url,
            "--metrics-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("not a redis URL"), "{text}");
    outputs.add("write with a malformed Redis URL", text);

    eprintln!(
        "searched {} outputs, {} bytes, for {} secrets",
        outputs.0.len(),
        outputs.bytes(),
        secrets.len()
    );
    assert!(
        outputs
            .0
            .iter()
            .any(|(what, text)| what == "write /metrics"
                && text.contains("firehose_writer_rows_total")),
        "the outputs hold the metrics"
    );
    outputs.assert_free_of(&secrets);
}

/// `POST /sql` with an optional bearer token; the whole answer, head and body.
fn http_request(addr: &str, token: Option<&str>, sql: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "POST /sql HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n{sql}",
        sql.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}
