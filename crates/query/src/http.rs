//! The HTTP API over a [`Dataset`]: the typed calls and read-only SQL, answering JSON, CSV,
//! Arrow IPC or Parquet. Behind the `http` feature.
//!
//! [`router`] gives an `axum` [`Router`] that an embedder mounts in its own app, under any
//! path; [`serve`] runs a router with the hardening a public listener needs. Routes: `POST
//! /sql` (the statement as the body, or `{"sql": "..."}`), `GET /sql?q=`, `GET /stats`,
//! `/posts`, `/search`, `/hourly`, `/top`, `/account/{did}` (each with `day=` or
//! `from=`&`to=`); `?format=json|ndjson|csv|arrow|parquet|table` or the `Accept` header picks
//! the output.
//!
//! A key design decision made in this module is that **every limit is enforced before a query
//! runs**: the bearer token (compared in constant time, never logged), the body read within a
//! deadline and a size (408, 413), a permit among [`ApiOptions::max_concurrent`] (503 at once
//! rather than a queue); the query itself then runs under the dataset's time, memory and row
//! limits. [`serve`] adds a deadline for a request's headers and a cap on open connections, so
//! slow or idle clients cannot exhaust the process's file descriptors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use firehose_query::http::{self, ApiOptions, ServeOptions};
//! use firehose_query::{Dataset, QueryOptions};
//! let dataset = Dataset::open("./data", QueryOptions::default()).await?;
//! // Mounted under /archive in an app that has routes of its own.
//! let app = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "my service" }))
//!     .nest("/archive", http::router(dataset, ApiOptions::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! http::serve(listener, app, ServeOptions::default(), std::future::pending()).await;
//! # Ok(()) }
//! ```

use std::fmt;
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
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

pub use firehose_telemetry::{ServeOptions, serve};

use crate::output::{self, Format};
use crate::{Dataset, Engagement, Error, PostQuery, Rows, TimeRange};

/// The bearer token clients must send (`Authorization: Bearer ...`). Its `Debug` output
/// never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// A token; `None` when it is empty (after trimming), which would let anyone in.
    pub fn new(token: &str) -> Option<ApiToken> {
        let token = token.trim();
        (!token.is_empty()).then(|| ApiToken(token.to_owned()))
    }

    /// The token in the file at `path` (a mounted secret) when there is one, else in the
    /// variable `FIREHOSE_API_TOKEN`; `Ok(None)` when neither is set. An empty token is an
    /// error: it would let anyone in.
    pub fn load(path: Option<&std::path::Path>) -> Result<Option<ApiToken>, Error> {
        let text = match path {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|e| Error::InvalidArgument {
                        what: "token file",
                        reason: format!("cannot read {}: {e}", path.display()),
                    })?,
                )
            }
            None => std::env::var("FIREHOSE_API_TOKEN").ok(),
        };
        text.map(|text| {
            ApiToken::new(&text).ok_or_else(|| Error::InvalidArgument {
                what: "API token",
                reason: "it is empty".into(),
            })
        })
        .transpose()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// The API's limits.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The token clients must send; `None` asks for none (keep the listener on loopback).
    pub token: Option<ApiToken>,
    /// Queries running at once; more are answered 503 at once (default 4).
    pub max_concurrent: usize,
    /// Largest request body, in bytes (default 64 KiB).
    pub max_body: usize,
    /// A request's body must arrive within this long, or it is answered 408 (default 10 s).
    pub read_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            token: None,
            max_concurrent: 4,
            max_body: 64 << 10,
            read_timeout: Duration::from_secs(10),
        }
    }
}

struct AppState {
    dataset: Dataset,
    token: Option<ApiToken>,
    permits: Semaphore,
    max_body: usize,
    read_timeout: Duration,
}

/// Registers the API's metrics at zero, so alerts see their first change:
/// `firehose_query_requests_total{route,status}`, `firehose_query_duration_seconds{route}`,
/// `firehose_query_rejected_total{reason}`.
pub fn describe_metrics() {
    for reason in ["auth", "sql", "size", "busy", "timeout", "slow"] {
        metrics::counter!("firehose_query_rejected_total", "reason" => reason).increment(0);
    }
    metrics::counter!("firehose_query_requests_total", "route" => "/sql", "status" => "200")
        .increment(0);
    let _ = metrics::histogram!("firehose_query_duration_seconds", "route" => "/sql");
}

/// The API's routes over `dataset`, with the token check, the body deadline and limit, the
/// concurrency limit and the request metrics. Mount it anywhere (`Router::nest`).
pub fn router(dataset: Dataset, options: ApiOptions) -> Router {
    let max_body = options.max_body;
    let state = Arc::new(AppState {
        dataset,
        token: options.token,
        permits: Semaphore::new(options.max_concurrent.max(1)),
        max_body,
        read_timeout: options.read_timeout,
    });
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
        let same: bool = given.as_bytes().ct_eq(token.0.as_bytes()).into();
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

/// Reads the request's body within [`ApiOptions::read_timeout`] (408 past it) and
/// [`ApiOptions::max_body`] (413 over it), before the handler sees it: a client sending its body slowly holds nothing for long.
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
        TimeRange::from_parts(
            self.day.as_deref(),
            self.from.as_deref(),
            self.to.as_deref(),
        )
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
