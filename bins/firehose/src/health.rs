//! `firehose health`: asks a running process for its `/health`, for container health checks
//! (the runtime image has no curl).

use firehose_core::units::parse_duration;
use std::net::SocketAddr;
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
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    timeout: Duration,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let addr = args.addr;
    let answer = firehose_telemetry::probe_health(addr, args.timeout)
        .map_err(|e| Failure::Data(format!("no answer from {addr}/health: {e}")))?;
    if answer.status == 200 {
        println!("{}", answer.body);
        return Ok(());
    }
    Err(Failure::Data(format!(
        "{addr} is unhealthy (HTTP {}): {}",
        answer.status, answer.body
    )))
}
