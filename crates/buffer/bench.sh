#!/usr/bin/env bash
# Buffer throughput next to Redis's own: starts a throwaway redis-server (AOF on, everysec,
# noeviction, as in production) on a free loopback port, measures raw XADD of 550-byte values
# with redis-benchmark (-P 64), then runs our push -> read -> ack benchmark for the memory and
# Redis backends against the same server, and prints the figures side by side.
#
#   crates/buffer/bench.sh                 # 1,000,000 raw XADDs
#   XADD_N=2000000 crates/buffer/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
XADD_N=${XADD_N:-1000000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/firehose-target}

for tool in redis-server redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install redis-server redis-tools)" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/firehose-bench.XXXXXX")
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --appendonly yes --appendfsync everysec \
  --maxmemory-policy noeviction --save '' --daemonize no >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$port" ping >/dev/null || { cat "$work/log"; exit 1; }

value=$(head -c 550 /dev/zero | tr '\0' 'x')
echo "==> redis-benchmark -p $port -P 64 -n $XADD_N -q XADD bench '*' f <550 bytes>"
raw_line=$(redis-benchmark -p "$port" -P 64 -n "$XADD_N" -q XADD bench '*' f "$value" 2>/dev/null | tr '\r' '\n' | grep 'requests per second' | tail -1)
raw=$(sed -E 's/.*: ([0-9.]+) requests per second.*/\1/' <<<"$raw_line")
echo "raw XADD: $raw events/s"
redis-cli -p "$port" del bench >/dev/null

echo "==> REDIS_URL=redis://127.0.0.1:$port/0 cargo bench -p firehose-buffer --bench throughput"
REDIS_URL="redis://127.0.0.1:$port/0" cargo bench -q -p firehose-buffer --bench throughput 2>&1 |
  tee "$work/bench.out"

echo
echo "==> Summary (events of 550 bytes; raw = redis-benchmark -P 64 XADD, one event per entry)"
python3 - "$raw" "$work/bench.out" <<'PY'
import re, sys
raw = float(sys.argv[1])
units = {"elem/s": 1, "Kelem/s": 1e3, "Melem/s": 1e6, "Gelem/s": 1e9}
name = None
rows = []
for line in open(sys.argv[2]):
    m = re.match(r"^(push_read_ack/\S+)", line)
    if m:
        name = m.group(1)
    m = re.search(r"thrpt:\s*\[\S+ \S+ (\S+) (\S+)", line)
    if m and name:
        rows.append((name, float(m.group(1)) * units[m.group(2)]))
        name = None
print(f"{'benchmark':32} {'events/s':>12} {'MB/s':>8} {'x raw XADD':>10}")
print(f"{'redis-benchmark XADD -P 64':32} {raw:12,.0f} {raw*550/1e6:8.1f} {1.0:10.2f}")
for n, v in rows:
    print(f"{n:32} {v:12,.0f} {v*550/1e6:8.1f} {v/raw:10.2f}")
PY
