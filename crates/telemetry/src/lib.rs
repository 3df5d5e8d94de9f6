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

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
    /// The HTTP server failed.
    #[error("metrics server on {addr}: {source}")]
    Serve {
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

/// Binds `addr` (port 0 picks a free port), then returns the bound address and a future that
/// serves `router` until `shutdown` completes. Binding first lets a caller report a bad
/// address as a configuration error before anything else starts.
pub async fn bind(
    addr: SocketAddr,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = Result<(), Error>>), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let serve = async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|source| Error::Serve {
                addr: bound,
                source,
            })
    };
    Ok((bound, serve))
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        server.await.unwrap().unwrap();
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
