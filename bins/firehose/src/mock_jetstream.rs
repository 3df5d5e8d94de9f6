//! `firehose mock-jetstream`: a Jetstream v1 server on loopback for tests, demos and load.

use std::io::Write;
use std::time::Duration;

use firehose_mock_jetstream::cli::MockArgs;
use firehose_mock_jetstream::{MockConfig, MockServer};

use crate::Failure;

pub(crate) fn run(args: MockArgs) -> Result<(), Failure> {
    let usage = |e: firehose_mock_jetstream::Error| Failure::Usage(e.to_string());
    let config = args.config().map_err(usage)?;
    let progress_every = args.progress_every().map_err(usage)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(config, progress_every))
}

async fn serve(config: MockConfig, progress_every: Duration) -> Result<(), Failure> {
    let server = MockServer::start(config)
        .await
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", server.url())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Usage(format!("cannot write the URL: {e}")))?;
    eprintln!("mock-jetstream: listening on {}", server.url());
    let progress = async {
        if progress_every.is_zero() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(progress_every).await;
            eprintln!("mock-jetstream: {}", server.sent());
        }
    };
    tokio::select! {
        () = firehose_telemetry::shutdown_signal() => {}
        () = progress => {}
    }
    let sent = server.sent();
    let broken = server.broken_frames();
    server.shutdown().await;
    eprintln!("mock-jetstream: stopped; {sent}");
    if !broken.is_empty() {
        let counts: Vec<String> = broken
            .iter()
            .map(|b| {
                let dropped = if b.dropped { "*" } else { "" };
                format!("{}={}{dropped}", b.connection, b.sent)
            })
            .collect();
        eprintln!(
            "mock-jetstream: broken frames per connection (connection=frames, * when the drop \
             fault ended it): {}",
            counts.join(" ")
        );
    }
    Ok(())
}
