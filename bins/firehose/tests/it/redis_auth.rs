//! The server deployment against a Redis that asks for credentials: `firehose ingest` and
//! `firehose write` through a private `redis-server` started by the test with a password
//! (`requirepass`) and an ACL user, and over TLS with certificates the test makes with
//! `openssl`. Events flow; wrong credentials or an untrusted certificate stop the process with
//! one clear line and a non-zero exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    Proc, START_US, deduplicated, expected, free_port, local_dataset, mock, start, temp_dir,
    wait_for,
};

/// A private `redis-server` (or, without it on PATH, a failure when servers are required and
/// `None` otherwise).
pub(crate) fn redis_server(dir: &Path, name: &str, args: &[&str]) -> Option<(Proc, u16)> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("FIREHOSE_REQUIRE_SERVERS").as_deref() != Ok("1"),
            "redis-server is not on PATH and FIREHOSE_REQUIRE_SERVERS=1"
        );
        eprintln!("NOT RUN: redis-server is not on PATH");
        return None;
    }
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let port = free_port();
    let tls = args.contains(&"--tls-port");
    let mut command = Command::new("redis-server");
    if tls {
        command.args(["--port", "0", "--tls-port", &port.to_string()]);
    } else {
        command.args(["--port", &port.to_string()]);
    }
    command
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&data)
        .args(args.iter().filter(|a| **a != "--tls-port"))
        .stdout(std::fs::File::create(data.join("log")).unwrap())
        .stderr(Stdio::null());
    let server = Proc(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start: {}",
            std::fs::read_to_string(data.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((server, port))
}

/// A random-looking secret, different in every run.
pub(crate) fn secret(what: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write(what.as_bytes());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{what}-{:016x}", hasher.finish())
}

/// Runs `mock-jetstream` → `ingest` → Redis → `write` → a local directory and checks the
/// dataset holds exactly the mock's events.
fn events_flow(
    dir: &Path,
    url: &str,
    ingest_env: &[(&str, &str)],
    write_env: &[(&str, &str)],
    extra: &[&str],
) {
    const EVENTS: u64 = 5_000;
    let (_mock, jetstream) = mock(61, EVENTS, &["--rate", "5000"]);
    let stream = format!("firehose-acl:{}", std::process::id());
    let ingest_addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "ingest",
        "--jetstream-url",
        &jetstream,
        "--redis-url",
        url,
        "--redis-stream",
        &stream,
        "--metrics-addr",
        &ingest_addr,
    ];
    let cursor = START_US.to_string();
    args.extend(["--start-cursor", &cursor]);
    args.extend(extra);
    let ingest = start("ingest", dir, &args, ingest_env);
    let out = dir.join("data");
    let write_addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "write",
        "--redis-url",
        url,
        "--redis-stream",
        &stream,
        "--out",
        out.to_str().unwrap(),
        "--consumer",
        "w1",
        "--metrics-addr",
        &write_addr,
        "--max-file-age",
        "1s",
    ];
    args.extend(extra);
    let write = start("write", dir, &args, write_env);
    wait_for(
        &[&write_addr],
        "firehose_writer_rows_total",
        EVENTS as f64,
        Duration::from_secs(60),
    );
    assert_eq!(ingest.terminate(), 0);
    assert_eq!(write.terminate(), 0);
    let (tables, _) = deduplicated(local_dataset(&out).0);
    assert_eq!(tables, expected(61, EVENTS, Some(5000.0)));
}

/// Runs a command that must fail; returns its stderr, after checking the exit code and that
/// it is one line.
fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_firehose"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("firehose: "), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failed in {:?}",
        started.elapsed()
    );
    stderr
}

fn write_args<'a>(url: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "write",
        "--redis-url",
        url,
        "--redis-stream",
        "firehose-acl:refused",
        "--out",
        out,
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    args.extend(extra);
    args
}

#[test]
fn ingest_and_write_through_redis_with_a_password_and_an_acl_user() {
    let dir = temp_dir("redis-auth");
    let default_password = secret("default");
    let writer_password = secret("writer");
    let requirepass = default_password.clone();
    let acl_password = format!(">{writer_password}");
    // The ACL user may touch only the stream's keys, with the commands the buffer documents.
    let Some((_server, port)) = redis_server(
        &dir,
        "redis",
        &[
            "--requirepass",
            &requirepass,
            "--user",
            "writer",
            "on",
            &acl_password,
            "~firehose-acl:*",
            "+@stream",
            "+@hash",
            "+evalsha",
            "+eval",
            "+script|load",
            "+info",
            "+ping",
        ],
    ) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    // ingest as the default user (password from the environment), write as the ACL user.
    events_flow(
        &dir,
        &url,
        &[("FIREHOSE_REDIS_PASSWORD", &default_password)],
        &[
            ("FIREHOSE_REDIS_USERNAME", "writer"),
            ("FIREHOSE_REDIS_PASSWORD", &writer_password),
        ],
        &[],
    );

    let out = dir.join("refused");
    let out = out.to_str().unwrap();
    let wrong = secret("wrong");
    for (env, what) in [
        (
            vec![
                ("FIREHOSE_REDIS_USERNAME", "writer"),
                ("FIREHOSE_REDIS_PASSWORD", wrong.as_str()),
            ],
            "wrong password",
        ),
        (vec![("FIREHOSE_REDIS_USERNAME", "nobody")], "no password"),
        (vec![], "no credentials"),
    ] {
        let stderr = fails(&write_args(&url, out, &[]), &env);
        assert!(
            stderr.contains("cannot open the Redis buffer"),
            "{what}: {stderr}"
        );
        for secret in [&wrong, &writer_password, &default_password] {
            assert!(!stderr.contains(secret.as_str()), "{what}: {stderr}");
        }
    }
    // A wrong password in the URL is not echoed either.
    let with_wrong = format!("redis://writer:{wrong}@127.0.0.1:{port}/0");
    let stderr = fails(&write_args(&with_wrong, out, &[]), &[]);
    assert!(!stderr.contains(&wrong), "{stderr}");
    assert!(!Path::new(out).exists(), "nothing written");
}

/// Makes a throwaway CA and a server certificate for localhost and 127.0.0.1 signed by it.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=firehose test CA",
        "-days",
        "1",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

#[test]
fn ingest_and_write_through_redis_over_tls() {
    let dir = temp_dir("redis-tls");
    let (ca, cert, key) = certificates(&dir);
    let password = secret("tls");
    let Some((_server, port)) = redis_server(
        &dir,
        "redis",
        &[
            "--tls-port",
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            &password,
        ],
    ) else {
        return;
    };
    let url = format!("rediss://localhost:{port}/0");
    let ca_path = ca.to_str().unwrap();
    // The CA by flag for one process, by environment for the other.
    events_flow(
        &dir,
        &url,
        &[("FIREHOSE_REDIS_PASSWORD", &password)],
        &[("FIREHOSE_REDIS_PASSWORD", &password)],
        &["--redis-tls-ca-cert", ca_path],
    );
    let env_ca = [
        ("FIREHOSE_REDIS_PASSWORD", password.as_str()),
        ("FIREHOSE_REDIS_TLS_CA_CERT", ca_path),
    ];

    let out = dir.join("refused");
    let out = out.to_str().unwrap();
    // Without our CA the server is not trusted: refused at once (not retried like an outage
    // for the default minute); plain text to the TLS port gets nowhere (an outage to the
    // client, so retried: shortened here); the right CA with a wrong password is refused.
    let stderr = fails(
        &write_args(&url, out, &[]),
        &[("FIREHOSE_REDIS_PASSWORD", &password)],
    );
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    let quick = ("FIREHOSE_REDIS_RETRY_FOR_MS", "1000");
    let plain = format!("redis://127.0.0.1:{port}/0");
    fails(
        &write_args(&plain, out, &[]),
        &[("FIREHOSE_REDIS_PASSWORD", &password), quick],
    );
    let wrong = secret("wrong");
    let stderr = fails(
        &write_args(&url, out, &[]),
        &[
            ("FIREHOSE_REDIS_PASSWORD", wrong.as_str()),
            ("FIREHOSE_REDIS_TLS_CA_CERT", ca_path),
            quick,
        ],
    );
    assert!(
        !stderr.contains(&wrong) && !stderr.contains(&password),
        "{stderr}"
    );
    // And with the environment's CA it is trusted: `write` starts (and stops on SIGTERM).
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = write_args(&url, out, &[]);
    let last = args.len() - 1;
    args[last] = &addr;
    let write = start("write-env-ca", &dir, &args, &env_ca);
    wait_for(
        &[&addr],
        "firehose_buffer_capacity_bytes",
        1.0,
        Duration::from_secs(30),
    );
    assert_eq!(write.terminate(), 0);
}
