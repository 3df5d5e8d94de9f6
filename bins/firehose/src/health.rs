//! `firehose health`: asks a running process for its `/health`, for container health checks
//! (the runtime image has no curl).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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
    let response = firehose_telemetry::http_get(addr, "/health", args.timeout)
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
