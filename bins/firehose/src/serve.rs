//! `firehose serve`: the typed calls and read-only SQL over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use firehose_query::http::{self, ApiOptions, ApiToken, ServeOptions};
use firehose_query::{Dataset, QueryOptions};

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

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failure::Usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            Some(text)
        }
        None => std::env::var("FIREHOSE_API_TOKEN").ok(),
    };
    let token = match token {
        Some(text) => Some(
            ApiToken::new(&text).ok_or_else(|| Failure::Usage("the API token is empty".into()))?,
        ),
        None => None,
    };
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
    let api = ApiOptions {
        token,
        max_concurrent: args.max_concurrent,
        max_body: args.max_body,
        read_timeout: args.read_timeout,
    };
    let runtime = query_runtime()?;
    runtime.block_on(async {
        let dataset = Dataset::open(&args.data, options).await.map_err(failure)?;
        let telemetry =
            firehose_telemetry::Telemetry::install().map_err(|e| Failure::Usage(e.to_string()))?;
        http::describe_metrics();
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.addr)))?;
        println!("listening on http://{local}");
        // `GET /metrics` (Prometheus text) and `GET /health`, without a token.
        let app = http::router(dataset, api).merge(firehose_telemetry::router(
            telemetry,
            Arc::new(firehose_telemetry::Health::ok),
        ));
        let serving = ServeOptions {
            header_timeout: args.read_timeout,
            ..ServeOptions::default()
        };
        http::serve(listener, app, serving, shutdown_signal()).await;
        Ok(())
    })
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
