#!/usr/bin/env bash
# The disk buffer against the memory queue, same run: `otlp -> null` with the exporter's queue in
# memory and with `buffer = { type = "disk" }`, at 100 and 1000 spans per request; then the
# recovery after kill -9 of a forwarder holding about a million spans on disk.
#
#   examples/otlp_load/disk.sh [SECONDS] [REPEATS] [BUFFERED_SPANS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-8}
repeats=${2:-3}
buffered=${3:-1000000}
clients=${CLIENTS:-4}

cargo build --release --quiet --bin tracescale --example otlp_load
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d "${TMPDIR:-/var/tmp}/tracescale-disk.XXXXXX")
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

pipeline() { # NAME EXPORTER-TYPE ENDPOINT-LINE BUFFER-LINE TELEMETRY
  cat > "$work/$1.toml" <<TOML
[receivers.otlp]
grpc = "127.0.0.1:14317"
http = "off"
[exporters."$2/out"]
$3
$4
[pipelines.traces]
receivers = ["otlp"]
exporters = ["$2/out"]
[service]
telemetry_address = "$5"
log_level = "warn"
TOML
}
disk="buffer = { type = \"disk\", path = \"$work/buffer\", max_size = \"8GiB\" }"
pipeline memory null "" "" off
pipeline disk null "" "$disk" off
# Nothing listens on 14399: everything the forwarder takes stays in its buffer.
pipeline stuck otlp "endpoint = \"http://127.0.0.1:14399\"
retry_on_failure = { max_elapsed_time = \"0s\" }" "$disk" 127.0.0.1:14388
pipeline drain null "" "$disk" 127.0.0.1:14388

wait_port() { for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
metric() { curl -s "http://127.0.0.1:14388/metrics" | awk -v m="$1" '$1 ~ "^"m { s += $2 } END { print s + 0 }'; }

results="$work/results.jsonl"
for spans in ${SIZES:-100 1000}; do
  for r in $(seq "$repeats"); do
    for name in memory disk; do
      rm -rf "$work/buffer"
      "$bin/tracescale" run -c "$work/$name.toml" & pid=$!
      wait_port 14317
      "$bin/examples/otlp_load" --endpoint http://127.0.0.1:14317 --pid "$pid" --spans "$spans" \
        --clients "$clients" --seconds "$seconds" --fresh-ids --label "$name" >> "$results"
      kill -TERM "$pid"; wait "$pid" || true
    done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["spans_per_second", "spans_per_cpu_second", "latency_p50_ms", "latency_p99_ms"]
print(f"{'queue':<8} {'spans/req':>9} " + " ".join(f"{k:>20}" for k in keys))
med = {}
for label in ["memory", "disk"]:
    for spans in sorted({r["spans_per_request"] for r in rows}):
        sel = [r for r in rows if r["label"] == label and r["spans_per_request"] == spans]
        m = {k: statistics.median(r[k] for r in sel) for k in keys}
        med[(label, spans)] = m
        print(f"{label:<8} {spans:>9} " + " ".join(f"{m[k]:>20.2f}" for k in keys))
for spans in sorted({s for _, s in med}):
    d, m = med[("disk", spans)], med[("memory", spans)]
    print(f"disk/memory at {spans} spans/request: spans/CPU-s {d['spans_per_cpu_second'] / m['spans_per_cpu_second']:.2f}x, "
          f"spans/s {d['spans_per_second'] / m['spans_per_second']:.2f}x, p99 {d['latency_p99_ms'] / m['latency_p99_ms']:.2f}x")
PY

# Recovery: fill the buffer behind a dead backend, kill -9, restart draining into `null`.
rm -rf "$work/buffer"
"$bin/tracescale" run -c "$work/stuck.toml" & pid=$!
wait_port 14317
while :; do
  "$bin/examples/otlp_load" --endpoint http://127.0.0.1:14317 --spans 1000 --clients "$clients" \
    --seconds 2 --fresh-ids --label fill > /dev/null
  emitted=$(metric 'tracescale_receiver_emitted_total')
  [ "${emitted%.*}" -ge "$buffered" ] && break
done
bytes=$(metric 'tracescale_buffer_bytes')
kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
start=$(date +%s.%N)
"$bin/tracescale" run -c "$work/drain.toml" & pid=$!
wait_port 14317
ready=$(date +%s.%N)
until [ "$(metric 'tracescale_buffer_bytes')" = "0" ]; do sleep 0.05; done
done_at=$(date +%s.%N)
drained=$(metric 'tracescale_exporter_emitted_total')
kill -TERM "$pid"; wait "$pid" || true
python3 -c "
start, ready, done = $start, $ready, $done_at
print(f'recovery after kill -9: {$bytes / 2**20:.0f} MiB on disk, {$drained:.0f} spans replayed; '
      f'accepting again after {ready - start:.2f} s, buffer empty after {done - start:.2f} s '
      f'({$drained / (done - start):.0f} spans/s)')
"
