//! `firehose serve`: the typed calls and read-only SQL over HTTP.

use firehose_core::units::parse_duration;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use firehose_query::http::{self, ApiOptions, ApiToken, ServeOptions};
use firehose_query::{Dataset, QueryOptions};

use crate::query::{failure, query_runtime};
use crate::{Failure, parse_size};

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
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Memory all running queries may use together (e.g. `2G`).
    #[arg(long, default_value = "2G", value_parser = parse_size::<usize>)]
    memory_limit: usize,
    /// Largest request body (SQL text), e.g. `64K`.
    #[arg(long, default_value = "64K", value_parser = parse_size::<usize>)]
    max_body: usize,
    /// Give up on a client that has not sent a request's headers, or its body, within this
    /// long: the connection is closed (headers) or answered 408 (body). Without it, a client
    /// that sends half a request holds a connection forever.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    read_timeout: Duration,
    /// Most rows one answer may hold.
    #[arg(long, default_value_t = 1_000_000)]
    max_rows: usize,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let token = ApiToken::load(args.token_file.as_deref()).map_err(failure)?;
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
        http::serve(
            listener,
            app,
            serving,
            firehose_telemetry::shutdown_signal(),
        )
        .await;
        Ok(())
    })
}
