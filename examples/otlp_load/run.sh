#!/usr/bin/env bash
# Compares tracescale with rotel-agent (blackhole exporter) under the same load, same run:
# OTLP/gRPC at 100 and 1000 spans per request. Two tracescale pipelines: `otlp -> null` (the
# engine alone) and `otlp -> slo_scaler -> null` (trace assembly and critical paths on every
# trace).
#
#   examples/otlp_load/run.sh [SECONDS] [REPEATS]
#
# Needs rotel-agent: `scripts/test` installs it in target/interop-venv, or set ROTEL_AGENT.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-10}
repeats=${2:-3}
clients=${CLIENTS:-4}

cargo build --release --quiet --bin tracescale --example otlp_load
load=${CARGO_TARGET_DIR:-target}/release/examples/otlp_load
rotel=${ROTEL_AGENT:-$(target/interop-venv/bin/python -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')}

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
service='[service]
telemetry_address = "off"
log_level = "warn"'
cat > "$work/null.toml" <<TOML
[receivers.otlp]
grpc = "127.0.0.1:14317"
http = "off"
[exporters.null]
when_full = "block"
[pipelines.traces]
receivers = ["otlp"]
exporters = ["null"]
$service
TOML
# The demo traces' root is frontend "GET /checkout", about 15 ms end to end.
cat > "$work/slo.toml" <<TOML
[receivers.otlp]
grpc = "127.0.0.1:14317"
http = "off"
[processors.slo_scaler]
passthrough = false
objectives = [{ name = "checkout", service = "frontend", operation = "GET /checkout", target = "50ms" }]
[exporters.null]
when_full = "block"
[pipelines.traces]
receivers = ["otlp"]
processors = ["slo_scaler"]
exporters = ["null"]
$service
TOML

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

results="$work/results.jsonl"
for spans in ${SIZES:-100 1000}; do
  for r in $(seq "$repeats"); do
    for pipeline in null slo; do
      ${CARGO_TARGET_DIR:-target}/release/tracescale run -c "$work/$pipeline.toml" & pid=$!
      wait_port 14317
      "$load" --endpoint http://127.0.0.1:14317 --pid "$pid" --spans "$spans" --clients "$clients" \
        --seconds "$seconds" --fresh-ids --label "tracescale-$pipeline" >> "$results"
      kill -TERM "$pid"; wait "$pid" || true
    done

    "$rotel" start --exporter blackhole --otlp-grpc-endpoint 127.0.0.1:14318 \
      --otlp-http-endpoint 127.0.0.1:14319 >/dev/null 2>&1 & pid=$!
    wait_port 14318
    "$load" --endpoint http://127.0.0.1:14318 --pid "$pid" --spans "$spans" --clients "$clients" \
      --seconds "$seconds" --fresh-ids --label rotel-agent >> "$results"
    kill -TERM "$pid"; wait "$pid" || true
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["spans_per_second", "spans_per_cpu_second", "peak_rss_mib", "latency_p50_ms", "latency_p99_ms"]
print(f"{'collector':<16} {'spans/req':>9} " + " ".join(f"{k:>20}" for k in keys))
med = {}
labels = ["tracescale-null", "tracescale-slo", "rotel-agent"]
for label in labels:
    for spans in sorted({r["spans_per_request"] for r in rows}):
        sel = [r for r in rows if r["label"] == label and r["spans_per_request"] == spans]
        m = {k: statistics.median(r[k] for r in sel if r[k] is not None) for k in keys}
        med[(label, spans)] = m
        print(f"{label:<16} {spans:>9} " + " ".join(f"{m[k]:>20.1f}" for k in keys))
for spans in sorted({s for _, s in med}):
    r = med[("rotel-agent", spans)]
    for label in labels[:-1]:
        t = med[(label, spans)]
        print(f"ratio {label}/rotel at {spans} spans/request: "
              f"spans/CPU-s {t['spans_per_cpu_second'] / r['spans_per_cpu_second']:.2f}x, "
              f"p99 {t['latency_p99_ms'] / r['latency_p99_ms']:.2f}x, "
              f"peak RSS {t['peak_rss_mib'] / r['peak_rss_mib']:.2f}x")
PY
