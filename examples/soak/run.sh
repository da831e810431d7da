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
QUEUE_SIZE="${QUEUE_SIZE:-64}" # batches per queue (the default): three queues of it here
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet --bin tracescale --example otlp_load
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/pipeline.toml" <<TOML
# A deliberately slow pipeline (a large forest per span, every span written as OTLP/JSON), so
# that the offered load is several times what it can process. The latency rules behind it must
# keep counting what the receiver refuses.
[receivers.otlp]
grpc = "127.0.0.1:$port"
http = "off"
[processors.hstree]
trees = 25
height = 15
train_size = 1000
[processors.latency_rules]
clock = "event" # the load generator sends the same timestamps again and again
[[processors.latency_rules.rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 20
window = "10s"
scale = { target = "statefulset/payments-db", namespace = "shop", max = 5 }
[exporters.file]
path = "/dev/null"
when_full = "block"
queue_size = $QUEUE_SIZE
[pipelines.traces]
receivers = ["otlp"]
processors = ["hstree", "latency_rules"]
exporters = ["file"]
queue_size = $QUEUE_SIZE
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
  --spans 1000 --clients "$CLIENTS" --seconds "$SECONDS_OF_LOAD" --label overload --fresh-ids > "$work/load.json"
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
sleep 2 # the queues drain and the rules publish their statistics (every second)
curl -sf "http://127.0.0.1:$tport/metrics" > "$work/metrics" || true
kill "$sampler" 2>/dev/null || true
python3 - "$work" "$stopped" "${recovered:-}" "$alive" "$LIMIT" "$after" "$QUEUE_SIZE" <<'PY'
import json, re, sys
work, stopped, recovered, alive, limit, after = sys.argv[1:7]

def metric_sum(name, **labels):
    """Sum of the samples of one metric whose labels include `labels`."""
    out = 0.0
    for line in open(f"{work}/metrics"):
        m = re.match(r"^(\w+)(\{.*\})? (\S+)$", line.strip())
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            out += float(m.group(3))
    return out

# Spans the receiver read and found valid, and the share of them it queued. Every demo trace
# has exactly one `INSERT payments` span of payments-db, the rule's operation: a third of them.
read = metric_sum("tracescale_receiver_received_total", signal="traces") - metric_sum(
    "tracescale_receiver_dropped_total", reason="invalid_span")
queued = metric_sum("tracescale_receiver_emitted_total", signal="traces")
counted = metric_sum("tracescale_latency_rules_rule_spans_total", rule="db-slow")
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
    "queue_size": int(sys.argv[7]),
    "alive_after_load": alive == "true",
    "recovery_seconds": round(float(recovered) - float(stopped), 2) if recovered else None,
    "after_recovery_spans_per_second": round(json.loads(after)["spans_per_second"]),
    "spans_read": int(read),
    "spans_queued_share": round(queued / read, 3) if read else None,
    "rule_counted_share": round(counted / (read / 3), 3) if read else None,
    "refused_spans_counted_by_rules": int(metric_sum("tracescale_latency_rules_refused_spans_observed_total")),
}, indent=2))
PY
