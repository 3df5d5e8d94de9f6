//! Metrics, health and logs for the long-running `firehose` processes.
//!
//! Library crates (the Jetstream source, the buffer, the writer, the query API) emit metrics
//! through the [`metrics`] facade and know nothing of how they are exported; this crate is the
//! one place that chooses: a Prometheus recorder, served with a health status over HTTP.
//!
//! - [`Telemetry::install`] installs the Prometheus recorder once per process and renders
//!   `/metrics`, adding the process's own figures (`process_resident_memory_bytes`,
//!   `process_cpu_seconds_total`) and free space of watched directories
//!   (`firehose_disk_available_bytes`, `firehose_disk_size_bytes`).
//! - [`router`] answers `GET /metrics` and `GET /health` (200 or 503 with a JSON status from a
//!   [`HealthCheck`]); [`bind`] binds an address and serves it until a shutdown future
//!   completes.
//! - [`init_logging`] sets up `tracing`: human-readable by default, JSON lines on request,
//!   filtered by `RUST_LOG` (default `info`).
//!
//! The names every process exports are listed in `docs/METRICS.md`.
//!
//! ```
//! use std::sync::Arc;
//! use firehose_telemetry::{Health, HealthCheck};
//! // What `/health` answers: 503 with the reasons, when a check says so.
//! let check: HealthCheck = Arc::new(|| {
//!     let mut health = Health::ok();
//!     health.healthy = false;
//!     health.reasons.push("the buffer is full".into());
//!     health
//! });
//! let answer = check().to_json();
//! assert_eq!(answer["status"], "unhealthy");
//! assert_eq!(answer["reasons"][0], "the buffer is full");
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;

/// Errors of the telemetry setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another metrics recorder was installed before ours.
    #[error("cannot install the Prometheus recorder: {0}")]
    Recorder(String),
    /// The metrics address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Buckets for every `*_duration_seconds` histogram: from a millisecond to two minutes.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The process's Prometheus recorder and what `/metrics` adds to it when rendered.
#[derive(Clone)]
pub struct Telemetry {
    handle: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
    disks: Arc<Mutex<Vec<PathBuf>>>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

static INSTALLED: OnceLock<Telemetry> = OnceLock::new();

impl Telemetry {
    /// Installs the Prometheus recorder as the process's global recorder, or returns the one
    /// installed by an earlier call.
    pub fn install() -> Result<Telemetry, Error> {
        if let Some(t) = INSTALLED.get() {
            return Ok(t.clone());
        }
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".into()),
                DURATION_BUCKETS,
            )
            .map_err(|e| Error::Recorder(e.to_string()))?
            .build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).map_err(|e| Error::Recorder(e.to_string()))?;
        let process = metrics_process::Collector::default();
        process.describe();
        let telemetry = Telemetry {
            handle,
            process: Arc::new(process),
            disks: Arc::default(),
        };
        Ok(INSTALLED.get_or_init(|| telemetry).clone())
    }

    /// Reports the free and total space of the filesystem holding `path` on every render, as
    /// `firehose_disk_available_bytes{path}` and `firehose_disk_size_bytes{path}`.
    pub fn watch_disk(&self, path: impl Into<PathBuf>) {
        if let Ok(mut disks) = self.disks.lock() {
            disks.push(path.into());
        }
    }

    /// The metrics in Prometheus text format, with fresh process and disk figures.
    pub fn render(&self) -> String {
        self.process.collect();
        if let Ok(disks) = self.disks.lock() {
            for path in disks.iter() {
                let label = path.display().to_string();
                if let (Ok(free), Ok(total)) = (fs4::available_space(path), fs4::total_space(path))
                {
                    metrics::gauge!("firehose_disk_available_bytes", "path" => label.clone())
                        .set(free as f64);
                    metrics::gauge!("firehose_disk_size_bytes", "path" => label).set(total as f64);
                }
            }
        }
        self.handle.render()
    }
}

/// A health status: `/health` answers 200 when `healthy`, 503 otherwise, with `body` as JSON.
#[derive(Debug, Clone)]
pub struct Health {
    /// Whether the process works as it should.
    pub healthy: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
    /// Figures to show (buffer depth, oldest age, connection state…), merged into the JSON.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Health {
    /// Healthy, with no details.
    pub fn ok() -> Self {
        Health {
            healthy: true,
            reasons: Vec::new(),
            details: serde_json::Map::new(),
        }
    }

    /// A status whose details are the fields of `report` (a struct that serializes to a JSON
    /// object; its own `status` and `reasons`, if any, give way to these).
    pub fn with_details(
        healthy: bool,
        reasons: Vec<String>,
        report: &impl serde::Serialize,
    ) -> Self {
        let details = match serde_json::to_value(report) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("status");
                map.remove("reasons");
                map
            }
            _ => serde_json::Map::new(),
        };
        Health {
            healthy,
            reasons,
            details,
        }
    }

    /// The JSON answer: `{"status": "ok"|"unhealthy", "reasons": [...], ...details}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = self.details.clone();
        body.insert(
            "status".into(),
            (if self.healthy { "ok" } else { "unhealthy" }).into(),
        );
        body.insert("reasons".into(), self.reasons.clone().into());
        serde_json::Value::Object(body)
    }
}

/// What `/health` asks: a cheap function of the process's current state.
pub type HealthCheck = Arc<dyn Fn() -> Health + Send + Sync>;

#[derive(Clone)]
struct AppState {
    telemetry: Telemetry,
    health: HealthCheck,
}

/// `GET /metrics` and `GET /health`. Merge it into a larger router to serve both beside an API.
pub fn router(telemetry: Telemetry, health: HealthCheck) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/health", get(health_page))
        .with_state(AppState { telemetry, health })
}

async fn metrics_page(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.telemetry.render(),
    )
        .into_response()
}

async fn health_page(State(state): State<AppState>) -> Response {
    let health = (state.health)();
    let status = if health.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(health.to_json())).into_response()
}

/// How [`serve`] treats connections.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A connection that has not sent a request's headers within this long is closed
    /// (default 10 s).
    pub header_timeout: Duration,
    /// Connections open at once; further ones wait in the listener's backlog (default 1024).
    pub max_connections: usize,
    /// After the shutdown signal, how long open requests may take to finish (default 30 s).
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            grace: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then gives open requests
/// [`ServeOptions::grace`] to finish.
///
/// What `axum::serve` does, plus a deadline for a request's headers and a cap on open
/// connections: without them, clients that open connections and send half their headers hold
/// a socket and a task each for as long as they like, and enough of them exhaust the
/// process's file descriptors.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    let connections = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait instead of spinning.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "A connection ended with an error.");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(options.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?options.grace, "Requests still open after the grace period were dropped.");
    }
}

/// Binds `addr` (port 0 picks a free port), then returns the bound address and a future that
/// serves `router` (with [`serve`]'s header deadline and connection cap) until `shutdown`
/// completes. Binding first lets a caller report a bad
/// address as a configuration error before anything else starts.
pub async fn bind(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = ()>), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let serving = serve(listener, router, ServeOptions::default(), shutdown);
    Ok((bound, serving))
}

/// The raw HTTP/1.1 answer (head and body, at most 1 MiB) to `GET path` on `addr`, blocking:
/// enough to ask a process for its own `/health` and `/metrics` (container health checks, the
/// load tool) without an HTTP client dependency.
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: std::time::Duration,
) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response)?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// What a process's `/health` answered: [`probe_health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthAnswer {
    /// The HTTP status (200 when healthy).
    pub status: u16,
    /// The body: the JSON of [`Health`], trimmed.
    pub body: String,
}

/// Asks the process serving `/health` at `addr` how it is (container health checks; the
/// runtime image has no curl). An unspecified host (`0.0.0.0`, `[::]`) is asked on loopback.
pub fn probe_health(
    mut addr: SocketAddr,
    timeout: std::time::Duration,
) -> std::io::Result<HealthAnswer> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let response = http_get(addr, "/health", timeout)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:.80}")))?;
    Ok(HealthAnswer {
        status,
        body: body.trim().to_owned(),
    })
}

/// Completes on the first SIGINT (Ctrl-C) or SIGTERM: the shutdown signal of a long-running
/// process. Where SIGTERM cannot be watched, on Ctrl-C alone.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Sends `tracing` events to stderr in `format`, filtered by `RUST_LOG` (default `info`).
/// Does nothing if a subscriber is already set.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: in journald, `docker logs` or a file they are
    // escape codes that break searches.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let telemetry = Telemetry::install().unwrap();
        telemetry.watch_disk(std::env::temp_dir());
        metrics::counter!("firehose_test_things_total").increment(3);
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = healthy.clone();
        let check: HealthCheck = Arc::new(move || {
            let mut h = Health::ok();
            if !flag.load(std::sync::atomic::Ordering::Relaxed) {
                h.healthy = false;
                h.reasons.push("buffer full".into());
            }
            h.details.insert("depth".into(), 7.into());
            h
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, serve) = bind(
            "127.0.0.1:0".parse().unwrap(),
            router(telemetry, check),
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
        let server = tokio::spawn(serve);

        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("firehose_test_things_total 3"),
            "{metrics}"
        );
        assert!(
            metrics.contains("process_resident_memory_bytes"),
            "{metrics}"
        );
        assert!(
            metrics.contains("firehose_disk_available_bytes{path="),
            "{metrics}"
        );

        let ok = get(addr, "/health").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains(r#""status":"ok""#) && ok.contains(r#""depth":7"#),
            "{ok}"
        );
        healthy.store(false, std::sync::atomic::Ordering::Relaxed);
        let bad = get(addr, "/health").await;
        assert!(bad.starts_with("HTTP/1.1 503"), "{bad}");
        assert!(bad.contains("buffer full"), "{bad}");

        tx.send(()).unwrap();
        server.await.unwrap();
    }

    /// A router answering `GET /` with `ok`, served with `options` on a free port.
    async fn serve_ok(options: ServeOptions) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, options, std::future::pending()));
        addr
    }

    #[tokio::test]
    async fn a_client_that_sends_half_its_headers_is_cut_off() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = serve_ok(ServeOptions {
            header_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        })
        .await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        assert!(
            closed.is_ok(),
            "the connection is closed past the header deadline"
        );
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_for_one_to_close() {
        let addr = serve_ok(ServeOptions {
            max_connections: 1,
            ..ServeOptions::default()
        })
        .await;
        let first = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The first connection holds the only slot: the second is not served meanwhile.
        let second = tokio::time::timeout(Duration::from_millis(500), get(addr, "/")).await;
        assert!(second.is_err(), "served past the cap: {second:?}");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(5), get(addr, "/")).await;
        assert!(third.unwrap().starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_taken_address_is_a_bind_error() {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr, Router::new(), std::future::pending())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, Error::Bind { .. }), "{err}");
    }
}
