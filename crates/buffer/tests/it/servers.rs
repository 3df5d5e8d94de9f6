//! Cases that need a server configured in a particular way. Each starts its own
//! `redis-server`.

use std::time::Duration;

use bytes::Bytes;
use firehose_buffer::{Batch, Buffer, BufferExt, EntryId, Error};

use crate::server::{RedisServer, builder, run, temp_dir, unique_stream};

fn batch(first: u64, n: u64) -> Batch {
    Batch::new(
        (first..first + n)
            .map(|i| Bytes::from(format!("{{\"seq\":{i},\"pad\":\"{}\"}}", "x".repeat(500))))
            .collect(),
        1_700_000_000_000_000 + first,
    )
}

fn seqs(entries: &[firehose_buffer::Entry]) -> Vec<u64> {
    entries
        .iter()
        .flat_map(|e| e.batch.events().iter())
        .map(|ev| {
            let s = std::str::from_utf8(ev).unwrap();
            let rest = &s["{\"seq\":".len()..];
            rest[..rest.find(',').unwrap()].parse().unwrap()
        })
        .collect()
}

/// A server whose `maxmemory-policy` evicts keys is refused, unless explicitly allowed.
#[tokio::test]
async fn evicting_server_refused() {
    let test = "evicting_server_refused";
    let Some(server) = RedisServer::start(
        test,
        &["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"],
    ) else {
        return;
    };
    let stream = unique_stream(test);
    let err = builder(&server.url(), &stream).build().await.unwrap_err();
    match &err {
        Error::Eviction { policy, .. } => assert_eq!(policy, "allkeys-lru"),
        other => panic!("expected an eviction error, got {other}"),
    }
    assert!(err.to_string().contains("noeviction"), "{err}");

    let b = builder(&server.url(), &stream)
        .with_allow_eviction(true)
        .build()
        .await
        .expect("eviction explicitly allowed");
    b.append(batch(0, 1)).await.unwrap();
    let s = b.stats().await.unwrap();
    let mem = s.server_memory.expect("server memory reported");
    assert_eq!(mem.max_bytes, Some(64 * 1024 * 1024));
    assert!(mem.used_bytes > 0);
    assert!(s.server_utilisation().is_some_and(|u| u > 0.0 && u < 1.0));
}

/// A server killed mid-stream (SIGKILL) and restarted with `appendfsync always` loses nothing,
/// acknowledged or not: what was acknowledged is not delivered again, what was pending is
/// re-delivered to its consumer, what was waiting is delivered. Operations in flight during
/// the outage retry until the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_appendfsync_always_loses_nothing() {
    let test = "restart_with_appendfsync_always_loses_nothing";
    let Some(mut server) = RedisServer::start(
        test,
        &[
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--maxmemory-policy",
            "noeviction",
        ],
    ) else {
        return;
    };
    let stream = unique_stream(test);
    let b = builder(&server.url(), &stream).build().await.unwrap();
    for i in 0..50 {
        b.append(batch(i * 4, 4)).await.unwrap();
    }
    let pending = b.read("worker", 20, Duration::ZERO).await.unwrap();
    assert_eq!(pending.len(), 20);
    let acked: Vec<EntryId> = pending[..10].iter().map(|e| e.id).collect();
    assert_eq!(b.ack(&acked).await.unwrap(), 10);

    server.kill();
    // An append while the server is down waits for it (retrying), then lands.
    let late = async { b.append(batch(200, 4)).await.unwrap() };
    let restart = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.restart();
    };
    let (late_id, ()) = tokio::join!(late, restart);

    let s = b.stats().await.unwrap();
    assert_eq!(s.entries_pending, 10, "{s:?}");
    assert_eq!(s.entries_waiting, 31, "{s:?}");
    assert_eq!(s.events_unacked(), 41 * 4, "{s:?}");

    // The worker restarts (a new handle) and gets its 10 pending entries first, then the rest.
    let again = builder(&server.url(), &stream).build().await.unwrap();
    let mut got = Vec::new();
    loop {
        let entries = again
            .read("worker", 7, Duration::from_millis(200))
            .await
            .unwrap();
        if entries.is_empty() {
            break;
        }
        got.extend(entries);
    }
    let ids: Vec<EntryId> = got.iter().map(|e| e.id).collect();
    assert_eq!(
        ids[..10],
        pending[10..].iter().map(|e| e.id).collect::<Vec<_>>()[..]
    );
    assert!(
        !ids.iter().any(|id| acked.contains(id)),
        "acknowledged entry delivered again"
    );
    assert_eq!(*ids.last().unwrap(), late_id);
    let mut all = seqs(&got);
    all.sort_unstable();
    let want: Vec<u64> = (40..204).collect();
    assert_eq!(all, want, "nothing lost, nothing doubled");
    again.ack_entries(&got).await.unwrap();
    assert_eq!(again.stats().await.unwrap().events_unacked(), 0);
}

/// A dropped connection (the server kills every client) is survived the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_reconnect() {
    let test = "dropped_connections_reconnect";
    let Some(server) = RedisServer::start(test, &["--appendonly", "yes"]) else {
        return;
    };
    let stream = unique_stream(test);
    let b = builder(&server.url(), &stream).build().await.unwrap();
    b.append(batch(0, 2)).await.unwrap();
    let first = b.read("c", 10, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 1);

    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();

    b.append(batch(2, 2)).await.unwrap();
    b.ack_entries(&first).await.unwrap();
    let second = b.read("c", 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(seqs(&second), vec![2, 3]);
    b.ack_entries(&second).await.unwrap();
    assert_eq!(b.stats().await.unwrap().events_unacked(), 0);
}

/// Password (`requirepass`) and ACL user authentication work; credentials stay out of
/// `Debug`, `Display` and errors.
#[tokio::test]
async fn password_and_acl_user() {
    let test = "password_and_acl_user";
    let Some(server) = RedisServer::start(
        test,
        &[
            "--requirepass",
            "default-s3cret",
            "--user",
            "writer",
            "on",
            ">writer-s3cret",
            "~firehose-test:*",
            "+@stream",
            "+@hash",
            "+evalsha",
            "+eval",
            "+script|load",
            "+info",
        ],
    ) else {
        return;
    };
    let port = server.port;
    let stream = unique_stream(test);

    // Password in the URL.
    let url = format!("redis://:default-s3cret@127.0.0.1:{port}/0");
    let b = builder(&url, &stream).build().await.expect("password auth");
    b.append(batch(0, 1)).await.unwrap();
    for text in [format!("{b:?}"), b.to_string()] {
        assert!(!text.contains("s3cret"), "{text}");
    }
    let builder_debug = format!("{:?}", builder(&url, &stream));
    assert!(!builder_debug.contains("s3cret"), "{builder_debug}");

    // ACL user with the documented permissions, password set separately.
    let acl = builder(&format!("redis://127.0.0.1:{port}/0"), &stream)
        .with_username("writer")
        .with_password("writer-s3cret")
        .build()
        .await
        .expect("ACL user auth");
    let got = acl.read("c", 10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    acl.ack_entries(&got).await.unwrap();
    assert_eq!(acl.stats().await.unwrap().events_unacked(), 0);
    let debug = format!("{acl:?}");
    assert!(!debug.contains("s3cret"), "{debug}");

    // Wrong or missing credentials fail, without echoing the secret.
    let err = builder(
        &format!("redis://writer:wrong-s3cret@127.0.0.1:{port}/0"),
        &stream,
    )
    .with_retry_for(Duration::from_millis(500))
    .build()
    .await
    .unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
    assert!(
        builder(&format!("redis://127.0.0.1:{port}/0"), &stream)
            .with_retry_for(Duration::from_millis(500))
            .build()
            .await
            .is_err()
    );
}

/// TLS (`rediss://`) with a throwaway CA and server certificate made with `openssl`.
#[tokio::test]
async fn tls() {
    let test = "tls";
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        crate::server::not_run(test, "openssl is not on PATH");
        return;
    }
    let dir = temp_dir(test);
    run(
        &dir,
        "openssl",
        &[
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
        ],
    );
    run(
        &dir,
        "openssl",
        &[
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
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(
        &dir,
        "openssl",
        &[
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
        ],
    );
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let ca = dir.join("ca.crt");
    let Some(server) = RedisServer::start_tls(
        test,
        dir.clone(),
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    ) else {
        return;
    };
    let url = format!("rediss://localhost:{}/0", server.port);
    let stream = unique_stream(test);
    let b = builder(&url, &stream)
        .with_tls_ca_cert(&ca)
        .build()
        .await
        .unwrap_or_else(|e| panic!("TLS connect: {e}\n{}", server.log()));
    b.append(batch(0, 3)).await.unwrap();
    let got = b.read("c", 10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(seqs(&got), vec![0, 1, 2]);
    b.ack_entries(&got).await.unwrap();

    // Without our CA, the server's certificate is not trusted: a configuration error, refused
    // at once rather than retried like an outage for `retry_for`.
    let started = std::time::Instant::now();
    let err = builder(&url, &stream)
        .with_retry_for(Duration::from_secs(30))
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused in {:?}",
        started.elapsed()
    );
}
