//! `firehose health`: asks a running process for its `/health`, for container health checks
//! (the runtime image has no curl).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::Failure;

/// Ask a running `firehose` process whether it is healthy: exit 0 when its `/health` answers
/// 200, 1 (with the status and reasons) when it answers otherwise or does not answer.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The process's metrics address (`--metrics-addr`, or `--addr` of `serve`). An
    /// unspecified host (`0.0.0.0`, `[::]`) is asked on loopback.
    #[arg(long, env = "FIREHOSE_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    addr: SocketAddr,
    /// Give up after this long.
    #[arg(long, default_value = "3s", value_parser = crate::parse_age)]
    timeout: Duration,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let mut addr = args.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let response = http_get(addr, "/health", args.timeout)
        .map_err(|e| Failure::Data(format!("no answer from {addr}/health: {e}")))?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).unwrap_or("?");
    if status == "200" {
        println!("{}", body.trim());
        Ok(())
    } else {
        Err(Failure::Data(format!(
            "{addr} is unhealthy (HTTP {status}): {}",
            body.trim()
        )))
    }
}

/// The raw HTTP/1.1 answer (head and body, at most 1 MiB) to `GET path` on `addr`: enough for
/// our own `/health` and `/metrics`, without an HTTP client dependency.
pub(crate) fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
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
