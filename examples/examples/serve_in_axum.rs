//! Serve the archive's HTTP API from your own axum app: the API mounted under `/archive` beside
//! a route of the app's own, one request to each. The dataset is 5,000 generated events
//! written to a temporary directory.
//!
//! `cargo run -p firehose-examples --example serve_in_axum`

use std::io::{Read, Write};

use firehose_examples::write_sample_dataset;
use firehose_query::http::{self, ApiOptions, ServeOptions};
use firehose_query::{Dataset, QueryOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("firehose-axum-{}", std::process::id()));
    let day = write_sample_dataset(&dir, 5_000).await?;
    let dataset = Dataset::open(dir.to_str().ok_or("path")?, QueryOptions::default()).await?;

    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "my own service\n" }))
        .nest("/archive", http::router(dataset, ApiOptions::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, app, ServeOptions::default(), async {
        let _ = stopped.await;
    }));

    // A blocking client, so the example needs no HTTP client crate.
    let path = format!("/archive/stats?day={day}&format=ndjson");
    let (own, stats) = tokio::task::spawn_blocking(move || {
        let own = get(addr, "/")?;
        let stats = get(addr, &path)?;
        Ok::<_, std::io::Error>((own, stats))
    })
    .await??;
    println!("GET /\n{own}");
    println!("GET /archive/stats?day={day}\n{stats}");
    assert!(own.starts_with("HTTP/1.1 200") && stats.starts_with("HTTP/1.1 200"));

    let _ = stop.send(());
    server.await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `GET path` over a plain socket; the whole answer, headers included.
fn get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}
