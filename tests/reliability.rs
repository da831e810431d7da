//! Reliability under signals, crashes and overload: acknowledged spans survive SIGTERM under
//! load, the hstree model survives `kill -9` and a truncated state file, and the rules still see
//! the spans that memory pressure makes the receivers refuse.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tracescale_components::receivers::demo_traces::Generator;

use crate::util::{
    bin, count_spans, eventually, free_port, http_get, metrics_until, post_traces, run_ready,
    signal, slow_span_request, spawn_run, stop_cleanly, wait_listening, wait_with_limit,
};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn sigterm_under_load_loses_no_acknowledged_span() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("spans.jsonl");
    let config = dir.path().join("pipeline.toml");
    let grpc = free_port();
    let telemetry = free_port();
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "off"
[exporters.file]
path = "{}"
when_full = "block"
[pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
shutdown_deadline = "30s"
"#,
            out_path.display()
        ),
    )
    .unwrap();
    let child = run_ready(&config, telemetry);

    // Four clients send as fast as they are answered, counting the spans of every request
    // answered with success, until the server stops answering.
    const CLIENTS: u64 = 4;
    let acknowledged = Arc::new(AtomicU64::new(0));
    let sent_some = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let acknowledged = acknowledged.clone();
        let sent_some = sent_some.clone();
        clients.push(runtime.spawn(async move {
            let Ok(mut client) =
                TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await
            else {
                return;
            };
            let mut generator = Generator::new(c + 1, 0.1);
            loop {
                let traces = generator.batch(10);
                let spans = traces.span_count() as u64;
                let request = ExportTraceServiceRequest {
                    resource_spans: traces.resource_spans,
                };
                match client.export(request).await {
                    Ok(_) => {
                        acknowledged.fetch_add(spans, Ordering::SeqCst);
                        sent_some.store(true, Ordering::SeqCst);
                    }
                    // Refused (shutting down, back-off) or the connection is gone.
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    eventually(Duration::from_secs(20), "acknowledged spans", || {
        (acknowledged.load(Ordering::SeqCst) > 5_000).then_some(())
    });
    assert!(sent_some.load(Ordering::SeqCst));
    signal(&child, "TERM");
    let out = wait_with_limit(child, LIMIT);
    runtime.block_on(async {
        for c in clients {
            let _ = tokio::time::timeout(Duration::from_secs(20), c).await;
        }
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let acked = acknowledged.load(Ordering::SeqCst);
    let (_, exported) = count_spans(&out_path);
    let exported = exported as u64;
    assert!(
        exported >= acked,
        "acknowledged {acked} spans but exported only {exported}"
    );
    // At most the requests in flight when the listener closed were taken but not answered.
    assert!(
        exported <= acked + CLIENTS * 30,
        "exported {exported} spans, acknowledged {acked}"
    );
}

fn hstree_config(dir: &std::path::Path, state: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.demo_traces]
batches_per_second = 100
traces_per_batch = 10
[processors.hstree]
train_size = 500
state_path = "{}"
save_interval = "1s"
[exporters.null]
[pipelines.traces]
receivers = ["demo_traces"]
processors = ["hstree"]
exporters = ["null"]
[service]
log_level = "info"
telemetry_address = "off"
"#,
            state.display()
        ),
    )
    .unwrap();
    config
}

/// Runs the pipeline for a moment and stops it with SIGTERM; returns its stderr.
fn run_briefly(config: &std::path::Path) -> String {
    let child = spawn_run(config);
    std::thread::sleep(Duration::from_millis(1500));
    let out = stop_cleanly(child, LIMIT);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_hstree_model_survives_kill_9_and_a_truncated_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("hstree.state");
    let config = hstree_config(dir.path(), &state);

    // Learning, then killed without a chance to save at shutdown.
    let child = bin()
        .arg("run")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "a periodic save", || {
        std::fs::metadata(&state)
            .ok()
            .filter(|m| m.len() > 0)
            .map(|_| ())
    });
    // One more save interval, so the model has learned past its first save.
    std::thread::sleep(Duration::from_millis(1200));
    signal(&child, "KILL");
    let _ = wait_with_limit(child, LIMIT);

    // The restart loads what the periodic save wrote.
    let stderr = run_briefly(&config);
    let loaded = stderr
        .lines()
        .find(|l| l.contains("loaded the saved hstree model"))
        .unwrap_or_else(|| panic!("no load after kill -9:\n{stderr}"));
    let learned: u64 = loaded
        .split("learned=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{loaded}"));
    assert!(learned > 0, "{loaded}");
    assert!(!stderr.contains("fresh hstree model"), "{stderr}");

    // A state file cut in half (a crash mid-copy, a full disk): a warning and a fresh model.
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    let stderr = run_briefly(&config);
    assert!(
        stderr.contains("starting with a fresh hstree model"),
        "{stderr}"
    );
    // And it saved a whole model again at shutdown.
    let stderr = run_briefly(&config);
    assert!(stderr.contains("loaded the saved hstree model"), "{stderr}");
}

#[test]
fn above_the_memory_limit_receivers_back_off_and_readyz_fails() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let (http, telemetry) = (free_port(), free_port());
    // A limit every process is above: refusals and an unready service from the start.
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
[exporters.null]
[pipelines.traces]
receivers = ["otlp"]
exporters = ["null"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
memory_limit = "16MiB"
memory_spike_limit = "8MiB"
"#
        ),
    )
    .unwrap();
    let child = spawn_run(&config);
    let (_, body) = eventually(Duration::from_secs(20), "readyz to fail on memory", || {
        http_get(telemetry, "/readyz").filter(|(s, b)| *s == 503 && b.contains("memory_limit"))
    });
    assert!(body.contains("service/memory_limiter"), "{body}");
    // /readyz fails on memory from the start, before the receiver may have bound its port.
    wait_listening(http);
    let span = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x","startTimeUnixNano":"10","endTimeUnixNano":"20"}]}]}]}"#;
    let response = post_traces(http, "Content-Type: application/json", span.as_bytes());
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: "),
        "{response}"
    );
    let metrics = metrics_until(telemetry, "the refusal counted", |b| {
        b.contains("reason=\"refused_memory_limit\"} 1")
    });
    assert!(metrics.contains("tracescale_process_resident_memory_bytes"));
    stop_cleanly(child, LIMIT);
}

#[test]
fn spans_refused_under_memory_pressure_still_reach_the_rules_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let decisions = dir.path().join("decisions.jsonl");
    let (http, telemetry) = (free_port(), free_port());
    // A limit every process is above: every request is refused, none is queued.
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
[processors.latency_rules]
passthrough = false
[[processors.latency_rules.rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 5
window = "1m"
scale = {{ target = "statefulset/payments-db", namespace = "shop", max = 5 }}
[exporters."file/decisions"]
path = "{}"
[pipelines.scaling]
receivers = ["otlp"]
processors = ["latency_rules"]
exporters = ["file/decisions"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
memory_limit = "16MiB"
memory_spike_limit = "8MiB"
"#,
            decisions.display()
        ),
    )
    .unwrap();
    let child = spawn_run(&config);
    eventually(Duration::from_secs(20), "readyz to fail on memory", || {
        http_get(telemetry, "/readyz").filter(|(s, _)| *s == 503)
    });
    // /readyz fails on memory from the start, before the receiver may have bound its port.
    wait_listening(http);
    // Four slow spans, each sent twice as a client that is told to back off retries: four
    // breaches, not eight, so the rule (count = 5) holds.
    for n in 1..=4 {
        for _ in 0..2 {
            let response = post_traces(
                http,
                "Content-Type: application/json",
                slow_span_request("payments-db", n, 500, "", "").as_bytes(),
            );
            assert!(response.starts_with("HTTP/1.1 429"), "{response}");
        }
    }
    let metrics = metrics_until(telemetry, "the repeats counted", |b| {
        b.contains(
            "tracescale_latency_rules_repeated_spans_skipped_total{component=\"latency_rules\"} 4",
        )
    });
    assert!(
        metrics.contains(
            "tracescale_latency_rules_refused_spans_observed_total{component=\"latency_rules\"} 4"
        ),
        "{metrics}"
    );
    assert!(
        std::fs::read_to_string(&decisions)
            .unwrap_or_default()
            .is_empty()
    );
    // The fifth breach fires the rule, though not one of these spans was ever queued.
    let response = post_traces(
        http,
        "Content-Type: application/json",
        slow_span_request("payments-db", 5, 500, "", "").as_bytes(),
    );
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    let line = eventually(Duration::from_secs(10), "a decision", || {
        std::fs::read_to_string(&decisions)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string))
    });
    let decision: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(decision["target"]["name"], "payments-db", "{line}");
    assert_eq!(decision["rule"], "db-slow", "{line}");
    assert_eq!(decision["evidence"]["breaches"], 5, "{line}");
    stop_cleanly(child, LIMIT);
}

#[test]
fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let (grpc, http, upstream) = (free_port(), free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"
bearer_token = "${{env:TRACESCALE_TEST_TOKEN}}"
[exporters.otlp]
endpoint = "http://127.0.0.1:{upstream}"
headers = {{ authorization = "Bearer ${{env:TRACESCALE_TEST_UPSTREAM}}" }}
timeout = "10ms"
[pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp"]
[service]
log_level = "trace"
telemetry_address = "off"
"#
        ),
    )
    .unwrap();
    let child = bin()
        .arg("run")
        .arg("-c")
        .arg(&config)
        .env("TRACESCALE_TEST_TOKEN", "receiver-secret-31337")
        .env("TRACESCALE_TEST_UPSTREAM", "upstream-secret-42424")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "the listener", || {
        std::net::TcpStream::connect(("127.0.0.1", http)).ok()
    });
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x","startTimeUnixNano":"10","endTimeUnixNano":"20"}]}]}]}"#;
    let post = |auth: &str| {
        post_traces(
            http,
            &format!("{auth}Content-Type: application/json"),
            body.as_bytes(),
        )
    };
    // A wrong token, a right one (whose spans the exporter then fails to forward upstream).
    assert!(post("Authorization: Bearer wrong-guess\r\n").starts_with("HTTP/1.1 401"));
    assert!(post("Authorization: Bearer receiver-secret-31337\r\n").starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "TERM");
    let out = wait_with_limit(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "logs at trace level"
    );
    for secret in [
        "receiver-secret-31337",
        "upstream-secret-42424",
        "wrong-guess",
    ] {
        assert!(!stderr.contains(secret), "{secret} was logged:\n{stderr}");
    }
}

/// ADR 7: queues block by default, so a dead trace backend slows its own pipeline and then
/// the receiver; decisions live in a pipeline of their own and keep flowing, the refused spans
/// reaching the rules through their tap.
#[test]
fn a_dead_trace_backend_delays_no_decision() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let decisions = dir.path().join("decisions.jsonl");
    // Nothing listens on `dead`: the backend is down for the whole test.
    let (http, telemetry, dead) = (free_port(), free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
[processors.latency_rules]
passthrough = false
[[processors.latency_rules.rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 5
window = "1m"
scale = {{ target = "statefulset/payments-db", namespace = "shop", max = 5 }}
[exporters."file/decisions"]
path = "{}"
[exporters."otlp/backend"]
protocol = "http/protobuf"
endpoint = "http://127.0.0.1:{dead}"
send_batch_size = 1
queue_size = 1
[pipelines.scaling]
receivers = ["otlp"]
processors = ["latency_rules"]
exporters = ["file/decisions"]
[pipelines.forward]
receivers = ["otlp"]
exporters = ["otlp/backend"]
queue_size = 1
[service]
telemetry_address = "127.0.0.1:{telemetry}"
shutdown_deadline = "1s"
"#,
            decisions.display()
        ),
    )
    .unwrap();
    let child = spawn_run(&config);
    wait_listening(http);
    // Slow spans, one per request; the first few fill the forward pipeline, the rest are
    // refused with back-off. Every one of them reaches the rule once.
    let mut refused = 0;
    for n in 1..=8 {
        let response = post_traces(
            http,
            "Content-Type: application/json",
            slow_span_request("payments-db", n, 500, "", "").as_bytes(),
        );
        if response.starts_with("HTTP/1.1 429") || response.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else {
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
    }
    assert!(refused > 0, "the dead backend never pushed back");
    let line = eventually(Duration::from_secs(10), "a decision", || {
        std::fs::read_to_string(&decisions)
            .ok()
            .and_then(|text| text.lines().next().map(str::to_string))
    });
    let decision: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(decision["rule"], "db-slow", "{line}");
    // Spans still held for the dead backend at the deadline: counted, and the run says so.
    signal(&child, "TERM");
    let out = wait_with_limit(child, LIMIT);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
