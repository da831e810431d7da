#!/usr/bin/env bash
# Overload soak: offers tracescale several times the load it can process for SECONDS (default
# 60), with a memory limit, and reports peak RSS against the limit, the share of requests
# refused, whether the process survived, and how long it took to accept data again after the
# load stopped. See README.md next to this file.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_OF_LOAD="${1:-60}"
CLIENTS="${CLIENTS:-16}"
LIMIT="${LIMIT:-256MiB}"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet --bin tracescale --example otlp_load
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/pipeline.toml" <<TOML
# A deliberately slow pipeline (a large forest per span, every span written as OTLP/JSON), so
# that the offered load is several times what it can process.
[receivers.otlp]
grpc = "127.0.0.1:$port"
http = "off"
[processors.hstree]
trees = 25
height = 15
train_size = 1000
[exporters.file]
path = "/dev/null"
when_full = "block"
[pipelines.traces]
receivers = ["otlp"]
processors = ["hstree"]
exporters = ["file"]
[service]
log_level = "warn"
telemetry_address = "127.0.0.1:$tport"
memory_limit = "$LIMIT"
TOML
target/release/tracescale run -c "$work/pipeline.toml" 2> "$work/stderr" &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$tport/readyz" > /dev/null && break; sleep 0.1; done

# Sample the resident set size every second while the load runs.
( while kill -0 "$pid" 2>/dev/null; do grep VmRSS /proc/$pid/status | awk '{print $2}'; sleep 1; done ) > "$work/rss" &
sampler=$!
target/release/examples/otlp_load --endpoint "http://127.0.0.1:$port" --pid "$pid" \
  --spans 1000 --clients "$CLIENTS" --seconds "$SECONDS_OF_LOAD" --label overload > "$work/load.json"
stopped=$(date +%s.%N)

# Recovery: the first moment a request is accepted with no refusal.
recovered=""
for _ in $(seq 600); do
  probe=$(target/release/examples/otlp_load --endpoint "http://127.0.0.1:$port" --spans 30 --clients 1 --seconds 0.2 --label probe)
  if python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["requests_ok"]>0 and r["requests_refused"]==0 else 1)' "$probe"; then
    recovered=$(date +%s.%N); break
  fi
done
after=$(target/release/examples/otlp_load --endpoint "http://127.0.0.1:$port" --pid "$pid" --spans 1000 --clients 1 --seconds 5 --label after)
alive=$(kill -0 "$pid" 2>/dev/null && echo true || echo false)
metrics=$(curl -sf "http://127.0.0.1:$tport/metrics" || true)
kill "$sampler" 2>/dev/null || true
python3 - "$work" "$stopped" "${recovered:-}" "$alive" "$LIMIT" "$after" <<'PY'
import json, sys
work, stopped, recovered, alive, limit, after = sys.argv[1:7]
load = json.load(open(f"{work}/load.json"))
rss = [int(x) / 1024 for x in open(f"{work}/rss").read().split()]
total = load["requests_ok"] + load["requests_refused"]
print(json.dumps({
    "offered_seconds": round(load["seconds"], 1),
    "clients": load["clients"],
    "requests": total,
    "refused_share": round(load["requests_refused"] / total, 3) if total else None,
    "accepted_spans_per_second": round(load["spans_per_second"]),
    "peak_rss_mib": round(max(rss), 1) if rss else None,
    "peak_rss_hwm_mib": load["peak_rss_mib"],
    "memory_limit": limit,
    "alive_after_load": alive == "true",
    "recovery_seconds": round(float(recovered) - float(stopped), 2) if recovered else None,
    "after_recovery_spans_per_second": round(json.loads(after)["spans_per_second"]),
}, indent=2))
PY
