//! `firehose serve`: the typed calls and read-only SQL over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use firehose_query::output::{self, Format};
use firehose_query::{Dataset, Engagement, Error, PostQuery, QueryOptions, Rows, TimeRange};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::query::{failure, parse_size, query_runtime};
use crate::{Failure, parse_age};

/// Serve the typed calls and read-only SQL over HTTP, answering JSON, CSV or Arrow IPC
/// (`?format=json|ndjson|csv|arrow|parquet|table`, or the Accept header). Routes: `POST /sql`
/// (the statement as the body, or `{"sql": "..."}`), `GET /sql?q=`, `GET /stats`, `/posts`,
/// `/search`, `/hourly`, `/top`, `/account/{did}` (each with `day=` or `from=`&`to=`),
/// `GET /metrics`, `GET /health`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The dataset: a local directory, or `s3://bucket/prefix`.
    #[arg(long, env = "FIREHOSE_DATA")]
    data: String,
    /// Address to listen on. Loopback by default: put a reverse proxy with TLS in front to
    /// expose it.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// A file holding the bearer token clients must send (`Authorization: Bearer ...`).
    /// Without it, the token comes from `FIREHOSE_API_TOKEN`; without either, no token is
    /// asked for.
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// Queries running at once; more are answered 503 at once.
    #[arg(long, default_value_t = 4)]
    max_concurrent: usize,
    /// Cancel a query after this long (answered 504).
    #[arg(long, default_value = "30s", value_parser = parse_age)]
    timeout: Duration,
    /// Memory all running queries may use together (e.g. `2G`).
    #[arg(long, default_value = "2G", value_parser = parse_size)]
    memory_limit: usize,
    /// Largest request body (SQL text), e.g. `64K`.
    #[arg(long, default_value = "64K", value_parser = parse_size)]
    max_body: usize,
    /// Give up on a client that has not sent a request's headers, or its body, within this
    /// long: the connection is closed (headers) or answered 408 (body). Without it, a client
    /// that sends half a request holds a connection forever.
    #[arg(long, default_value = "10s", value_parser = parse_age)]
    read_timeout: Duration,
    /// Most rows one answer may hold.
    #[arg(long, default_value_t = 1_000_000)]
    max_rows: usize,
}

struct AppState {
    dataset: Dataset,
    token: Option<String>,
    permits: Semaphore,
    max_body: usize,
    read_timeout: Duration,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            Some(text.trim().to_owned())
        }
        None => std::env::var("FIREHOSE_API_TOKEN").ok(),
    };
    if token.as_deref().is_some_and(str::is_empty) {
        return Err(Failure::Usage("the API token is empty".into()));
    }
    if token.is_none() && !args.addr.ip().is_loopback() {
        eprintln!(
            "firehose serve: warning: listening on {} without a token: anyone who reaches it can query",
            args.addr
        );
    }
    let options = QueryOptions {
        timeout: args.timeout,
        memory_limit: args.memory_limit,
        max_rows: args.max_rows,
        ..QueryOptions::default()
    };
    let runtime = query_runtime()?;
    runtime.block_on(async {
        let dataset = Dataset::open(&args.data, options).await.map_err(failure)?;
        let metrics = install_metrics()?;
        let state = Arc::new(AppState {
            dataset,
            token,
            permits: Semaphore::new(args.max_concurrent.max(1)),
            max_body: args.max_body,
            read_timeout: args.read_timeout,
        });
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.addr)))?;
        println!("listening on http://{local}");
        let app = router(state, args.max_body).merge(telemetry_routes(metrics));
        serve_http(listener, app, args.read_timeout, shutdown_signal()).await;
        Ok(())
    })
}

/// Serves `app` on `listener` until `shutdown`, then gives open requests up to 30 s to finish.
///
/// What `axum::serve` does, plus a deadline for a request's headers: without one, a client
/// that opens a connection and sends half its headers holds a socket and a task for as long as
/// it likes, and enough of them exhaust the process's file descriptors.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
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
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
        });
    }
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("Requests still open 30 s after the shutdown signal were dropped.");
    }
}

/// The shared telemetry (Prometheus recorder with real histograms, process figures), with the
/// query API's metrics registered at zero so alerts see their first change.
fn install_metrics() -> Result<firehose_telemetry::Telemetry, Failure> {
    let telemetry =
        firehose_telemetry::Telemetry::install().map_err(|e| Failure::Usage(e.to_string()))?;
    for reason in ["auth", "sql", "size", "busy", "timeout", "slow"] {
        metrics::counter!("firehose_query_rejected_total", "reason" => reason).increment(0);
    }
    metrics::counter!("firehose_query_requests_total", "route" => "/sql", "status" => "200")
        .increment(0);
    let _ = metrics::histogram!("firehose_query_duration_seconds", "route" => "/sql");
    Ok(telemetry)
}

/// `GET /metrics` (Prometheus text) and `GET /health`, without a token.
fn telemetry_routes(telemetry: firehose_telemetry::Telemetry) -> Router {
    firehose_telemetry::router(telemetry, Arc::new(firehose_telemetry::Health::ok))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// The API routes, with the token check, the body limit and the request metrics.
fn router(state: Arc<AppState>, max_body: usize) -> Router {
    Router::new()
        .route("/sql", get(sql_get).post(sql_post))
        .route("/stats", get(stats))
        .route("/posts", get(posts))
        .route("/search", get(search))
        .route("/hourly", get(hourly))
        .route("/top", get(top))
        .route("/account/{did}", get(account))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            read_body,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ))
        .route_layer(middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// Counts requests by route and status, and times them.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("firehose_query_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("firehose_query_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn rejected(reason: &'static str) {
    metrics::counter!("firehose_query_rejected_total", "reason" => reason).increment(1);
}

/// Checks the bearer token in constant time; the token is never logged or echoed.
async fn authorize(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let same: bool = given.as_bytes().ct_eq(token.as_bytes()).into();
        if !same {
            rejected("auth");
            let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

/// Reads the request's body within `--read-timeout` (408 past it) and `--max-body` (413 over
/// it), before the handler sees it: a client sending its body slowly holds nothing for long.
async fn read_body(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, state.max_body);
    let bytes = match tokio::time::timeout(state.read_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                rejected("size");
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the request body is too large",
                );
            }
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            );
        }
        Err(_) => {
            rejected("slow");
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// A request the API cannot take: `400` with the reason.
#[derive(Debug)]
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, &self.0)
    }
}

/// The status of a query error, counting refusals by reason.
fn query_error(e: &Error) -> Response {
    let status = match e {
        Error::Refused { .. } => {
            rejected("sql");
            StatusCode::BAD_REQUEST
        }
        Error::InvalidArgument { .. } | Error::TooManyRows { .. } => StatusCode::BAD_REQUEST,
        Error::Timeout { .. } => {
            rejected("timeout");
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string())
}

/// Picks the output format: `?format=` first, then the Accept header, JSON by default.
fn negotiate(format: Option<&str>, headers: &HeaderMap) -> Result<Format, BadRequest> {
    if let Some(name) = format {
        return match name {
            "json" => Ok(Format::JsonArray),
            "ndjson" => Ok(Format::Json),
            other => other
                .parse::<Format>()
                .map_err(|e| BadRequest(e.to_string())),
        };
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    for (mime, format) in [
        ("application/vnd.apache.arrow.stream", Format::Arrow),
        ("text/csv", Format::Csv),
        ("application/x-ndjson", Format::Json),
        ("application/vnd.apache.parquet", Format::Parquet),
        ("text/plain", Format::Table),
        ("application/json", Format::JsonArray),
    ] {
        if accept.contains(mime) {
            return Ok(format);
        }
    }
    Ok(Format::JsonArray)
}

/// Runs a query under the concurrency limit and writes its answer.
async fn answer<F>(state: &AppState, format: Format, query: F) -> Response
where
    F: std::future::Future<Output = Result<Rows, Error>>,
{
    let Ok(_permit) = state.permits.try_acquire() else {
        rejected("busy");
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many queries are running; try again shortly",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let rows = match query.await {
        Ok(rows) => rows,
        Err(e) => return query_error(&e),
    };
    match output::to_bytes(format, &rows) {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, format.content_type())],
            Body::from(bytes),
        )
            .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[derive(Debug, Deserialize)]
struct RangeParams {
    day: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
    limit: Option<usize>,
    // Calls' own parameters; absent where they do not apply.
    q: Option<String>,
    author: Option<String>,
    lang: Option<String>,
    reply: Option<bool>,
    contains: Option<String>,
    by: Option<String>,
}

impl RangeParams {
    fn range(&self) -> Result<TimeRange, Error> {
        match (&self.day, &self.from, &self.to) {
            (Some(day), None, None) => TimeRange::parse_day(day),
            (None, Some(from), Some(to)) => TimeRange::parse(from, to),
            _ => Err(Error::InvalidArgument {
                what: "time range",
                reason: "give day=YYYY-MM-DD, or from= and to=".into(),
            }),
        }
    }
}

type Params = Result<Query<RangeParams>, axum::extract::rejection::QueryRejection>;

/// The parameters, or a JSON 400.
fn params(p: Params) -> Result<RangeParams, BadRequest> {
    p.map(|Query(p)| p).map_err(|e| BadRequest(e.body_text()))
}

macro_rules! typed_route {
    ($name:ident, |$ds:ident, $p:ident, $range:ident| $call:expr) => {
        async fn $name(
            State(state): State<Arc<AppState>>,
            headers: HeaderMap,
            p: Params,
        ) -> Response {
            let $p = match params(p) {
                Ok(p) => p,
                Err(r) => return r.into_response(),
            };
            let format = match negotiate($p.format.as_deref(), &headers) {
                Ok(f) => f,
                Err(r) => return r.into_response(),
            };
            let $range = match $p.range() {
                Ok(r) => r,
                Err(e) => return query_error(&e),
            };
            let $ds = &state.dataset;
            answer(&state, format, $call).await
        }
    };
}

typed_route!(stats, |ds, p, range| ds.daily_stats(range));
typed_route!(hourly, |ds, p, range| ds.events_per_hour(range));
typed_route!(posts, |ds, p, range| ds.posts(&PostQuery {
    range,
    author: p.author.clone(),
    lang: p.lang.clone(),
    is_reply: p.reply,
    text_contains: p.contains.clone(),
    limit: p.limit.unwrap_or(100),
}));
typed_route!(search, |ds, p, range| async {
    let text = p.q.clone().unwrap_or_default();
    ds.search_posts(&text, range, p.limit.unwrap_or(100)).await
});
typed_route!(top, |ds, p, range| async {
    let by = match p.by.as_deref() {
        None | Some("likes") => Engagement::Likes,
        Some("reposts") => Engagement::Reposts,
        Some(other) => {
            return Err(Error::InvalidArgument {
                what: "by",
                reason: format!("{other:?}: use likes or reposts"),
            });
        }
    };
    ds.top_posts(by, range, p.limit.unwrap_or(20)).await
});

async fn account(
    State(state): State<Arc<AppState>>,
    Path(did): Path<String>,
    headers: HeaderMap,
    p: Params,
) -> Response {
    let p = match params(p) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let format = match negotiate(p.format.as_deref(), &headers) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let range = match p.range() {
        Ok(r) => r,
        Err(e) => return query_error(&e),
    };
    answer(&state, format, state.dataset.account_activity(&did, range)).await
}

#[derive(Debug, Deserialize)]
struct SqlParams {
    q: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SqlBody {
    sql: String,
}

async fn sql_get(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    p: Result<Query<SqlParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(p)) = p else {
        return error(StatusCode::BAD_REQUEST, "bad query parameters");
    };
    let format = match negotiate(p.format.as_deref(), &headers) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let Some(sql) = p.q else {
        return error(StatusCode::BAD_REQUEST, "give the statement as q=");
    };
    answer(&state, format, state.dataset.sql(&sql)).await
}

async fn sql_post(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    p: Result<Query<SqlParams>, axum::extract::rejection::QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            rejected("size");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            );
        }
        Err(e) => return error(e.status(), &e.body_text()),
    };
    let Ok(Query(p)) = p else {
        return error(StatusCode::BAD_REQUEST, "bad query parameters");
    };
    let format = match negotiate(p.format.as_deref(), &headers) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let sql = if is_json {
        match serde_json::from_slice::<SqlBody>(&body) {
            Ok(b) => b.sql,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad JSON body: {e}")),
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(s) => s,
            Err(_) => return error(StatusCode::BAD_REQUEST, "the SQL is not UTF-8"),
        }
    };
    answer(&state, format, state.dataset.sql(&sql)).await
}
