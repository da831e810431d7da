//! `tracescale run`: real processes, the file exporter, signals, self-telemetry.

use std::time::Duration;

use crate::util::{
    bin, count_spans, eventually, free_port, http_get, post_traces, run_ready, run_to_end, signal,
    spawn_run, stop_cleanly, wait_with_limit,
};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn a_bounded_run_exports_every_span_and_exits_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("spans.jsonl");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.demo_traces]
batches_per_second = 0
traces_per_batch = 5
count = 40
[exporters.file]
path = "{}"
when_full = "block"
[pipelines.traces]
receivers = ["demo_traces"]
exporters = ["file"]
[service]
telemetry_address = "off"
"#,
            out_path.display()
        ),
    )
    .unwrap();
    let out = run_to_end(bin().arg("run").arg("-c").arg(&config), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count_spans(&out_path), (40, 600));
}

#[test]
fn sigterm_drains_to_the_exporter_and_telemetry_answers_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("spans.jsonl");
    let config = dir.path().join("pipeline.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.demo_traces]
batches_per_second = 200
traces_per_batch = 10
[exporters.file]
path = "{}"
when_full = "block"
[pipelines.traces]
receivers = ["demo_traces"]
exporters = ["file"]
[service]
telemetry_address = "127.0.0.1:{port}"
shutdown_deadline = "20s"
"#,
            out_path.display()
        ),
    )
    .unwrap();
    let child = spawn_run(&config);

    let (status, body) = eventually(Duration::from_secs(20), "/readyz", || {
        http_get(port, "/readyz").filter(|(s, _)| *s == 200)
    });
    assert_eq!(status, 200);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["phase"], "running");
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    eventually(Duration::from_secs(20), "spans in the file", || {
        (count_spans(&out_path).1 > 0).then_some(())
    });
    let metrics = eventually(Duration::from_secs(20), "exporter metrics", || {
        http_get(port, "/metrics")
            .map(|(_, body)| body)
            .filter(|b| {
                b.contains(
                    "tracescale_exporter_emitted_total{component=\"file\",signal=\"traces\"}",
                )
            })
    });
    assert!(metrics.contains(
        "tracescale_receiver_emitted_total{component=\"demo_traces\",signal=\"traces\"}"
    ));
    assert!(metrics.contains("tracescale_queue_capacity{queue=\"exporters.file\"} 64"));
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);

    let out = stop_cleanly(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shutting down"), "{stderr}");
    // Every line is whole JSON (count_spans parses each), and spans arrived in whole batches.
    let (lines, spans) = count_spans(&out_path);
    assert_eq!(spans, lines * 30);
    assert!(
        http_get(port, "/healthz").is_none(),
        "the listener is closed after exit"
    );
}

#[test]
fn a_component_that_cannot_start_fails_the_run_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        r#"
[receivers.demo_traces]
[exporters.file]
path = "/nonexistent-dir/spans.jsonl"
[pipelines.traces]
receivers = ["demo_traces"]
exporters = ["file"]
[service]
telemetry_address = "off"
"#,
    )
    .unwrap();
    let out = run_to_end(bin().arg("run").arg("-c").arg(&config), LIMIT);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exporter \"file\" failed to start"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent-dir/spans.jsonl"), "{stderr}");
}

#[test]
fn a_busy_telemetry_port_fails_the_run_with_status_1() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.demo_traces]
[exporters.null]
[pipelines.traces]
receivers = ["demo_traces"]
exporters = ["null"]
[service]
telemetry_address = "127.0.0.1:{port}"
"#
        ),
    )
    .unwrap();
    let out = run_to_end(bin().arg("run").arg("-c").arg(&config), LIMIT);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("cannot listen on 127.0.0.1:{port}"))
    );
}

#[test]
fn the_demo_traces_pipeline_runs_to_completion() {
    let out = run_to_end(bin().args(["run", "-c", "configs/demo.toml"]), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("traces: 3 resource spans, 30 spans").count(),
        60,
        "{stderr}"
    );
}

#[test]
fn a_custom_component_from_outside_the_crates_runs_from_a_pipeline_file() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("spans.jsonl");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.demo_traces]
batches_per_second = 0
count = 10
[processors.drop_operations]
operations = ["INSERT payments"]
[exporters.file]
path = "{}"
when_full = "block"
[pipelines.traces]
receivers = ["demo_traces"]
processors = ["drop_operations"]
exporters = ["file"]
[service]
telemetry_address = "off"
"#,
            out_path.display()
        ),
    )
    .unwrap();
    let out = run_to_end(crate::util::example("custom_processor").arg(&config), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&out_path).unwrap();
    assert!(!text.contains("INSERT payments"));
    assert!(text.contains("PlaceOrder"));
    assert_eq!(
        count_spans(&out_path).1,
        10 * 10 * 2,
        "two of three spans per trace remain"
    );

    // The stock binary does not know the example's component.
    let out = run_to_end(bin().args(["validate"]).arg(&config), LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown processor type `drop_operations`")
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    // Nothing listens at the endpoint: the exporter keeps retrying, so the drain would take
    // the whole minute of the deadline.
    let dead = free_port();
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.demo_traces]
batches_per_second = 50
[exporters.otlp]
endpoint = "http://127.0.0.1:{dead}"
when_full = "block"
[pipelines.traces]
receivers = ["demo_traces"]
exporters = ["otlp"]
[service]
telemetry_address = "off"
shutdown_deadline = "60s"
"#
        ),
    )
    .unwrap();
    let child = spawn_run(&config);
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, "INT");
    let out = wait_with_limit(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("second signal"));
}

#[test]
fn otlp_spans_in_become_a_decision_in_the_file_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("decisions.jsonl");
    let grpc = free_port();
    // Two processes: the shop's spans leave one through the otlp exporter and come into the
    // other over OTLP/gRPC, where the rules see them. Every database call is slow. (In one
    // process, the receiver would stop at shutdown before the exporter had sent it the last
    // batch.)
    let scaling = dir.path().join("scaling.toml");
    std::fs::write(
        &scaling,
        format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "off"
[processors.latency_rules]
interval = "200ms"
[[processors.latency_rules.rules]]
name = "payments-db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "50ms"
count = 20
window = "10s"
scale = {{ target = "statefulset/payments-db", namespace = "shop", step = 1, max = 5 }}
[exporters.file]
path = "{}"
when_full = "block"
[pipelines.scaling]
receivers = ["otlp"]
processors = ["latency_rules"]
exporters = ["file"]
[service]
telemetry_address = "off"
"#,
            out_path.display()
        ),
    )
    .unwrap();
    let shop = dir.path().join("shop.toml");
    std::fs::write(
        &shop,
        format!(
            r#"
[receivers.demo_traces]
batches_per_second = 20
traces_per_batch = 5
slow_share = 1.0
[exporters.otlp]
endpoint = "http://127.0.0.1:{grpc}"
timeout = "50ms"
when_full = "block"
[pipelines.shop]
receivers = ["demo_traces"]
exporters = ["otlp"]
[service]
telemetry_address = "off"
"#
        ),
    )
    .unwrap();
    let scaler = spawn_run(&scaling);
    let sender = spawn_run(&shop);
    let decision = eventually(Duration::from_secs(30), "a decision line", || {
        let text = std::fs::read_to_string(&out_path).ok()?;
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["signal"] == "decision")
    });
    // The sender first, so that what it still holds reaches a receiver that is up.
    stop_cleanly(sender, LIMIT);
    stop_cleanly(scaler, LIMIT);
    assert_eq!(decision["rule"], "payments-db-slow");
    assert_eq!(decision["target"]["kind"], "StatefulSet");
    assert_eq!(decision["target"]["name"], "payments-db");
    assert_eq!(decision["target"]["namespace"], "shop");
    assert_eq!(decision["change"]["step"], 1);
    assert!(decision["evidence"]["breaches"].as_u64().unwrap() >= 20);
    assert!(decision["evidence"]["p99"].as_f64().unwrap() > 50.0);
    let exemplars = decision["evidence"]["exemplars"].as_array().unwrap();
    assert!(!exemplars.is_empty() && exemplars.len() <= 5);
    assert!(exemplars.iter().all(|e| e.as_str().unwrap().len() == 32));
}

/// Sends one raw HTTP/1.1 request and returns the status code.
fn raw_post(port: u16, headers: &str, body: &[u8]) -> u16 {
    let response = post_traces(port, headers, body);
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn every_refused_otlp_request_is_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let (http, telemetry) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
bearer_token = "s3cret"
max_request_size = "1KiB"
[exporters.null]
[pipelines.traces]
receivers = ["otlp"]
exporters = ["null"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
"#
        ),
    )
    .unwrap();
    let child = run_ready(&config, telemetry);
    let auth = "Authorization: Bearer s3cret";
    let proto = format!("{auth}\r\nContent-Type: application/x-protobuf");
    assert_eq!(raw_post(http, &proto, b"\x0a\xff\xff\xff\xff"), 400);
    assert_eq!(raw_post(http, &proto, &[0u8; 2048]), 413);
    assert_eq!(
        raw_post(http, &format!("{auth}\r\nContent-Type: text/plain"), b"x"),
        415
    );
    assert_eq!(
        raw_post(http, "Content-Type: application/x-protobuf", b""),
        401
    );
    // A span whose end precedes its start: accepted as a request, the span dropped.
    let bad_span = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x","startTimeUnixNano":"20","endTimeUnixNano":"10"}]}]}]}"#;
    let json = format!("{auth}\r\nContent-Type: application/json");
    assert_eq!(raw_post(http, &json, bad_span.as_bytes()), 200);
    // Still serving, and the good request is counted as received.
    let good = bad_span.replace("\"10\"", "\"30\"");
    assert_eq!(raw_post(http, &json, good.as_bytes()), 200);

    let metrics = eventually(Duration::from_secs(10), "refusal counters", || {
        http_get(telemetry, "/metrics")
            .map(|(_, body)| body)
            .filter(|b| b.contains("reason=\"unauthenticated\""))
    });
    for reason in [
        "malformed",
        "too_large",
        "unsupported_media_type",
        "unauthenticated",
    ] {
        let line = format!(
            "tracescale_receiver_otlp_refused_requests_total{{component=\"otlp\",transport=\"http\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    assert!(metrics.contains(
        "tracescale_receiver_dropped_total{component=\"otlp\",signal=\"traces\",reason=\"invalid_span\"} 1"
    ));
    assert!(
        metrics
            .contains("tracescale_receiver_emitted_total{component=\"otlp\",signal=\"traces\"} 1")
    );
    stop_cleanly(child, LIMIT);
}

/// Sends already-encoded bytes as the request message, as a broken client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

#[test]
fn every_refused_grpc_request_is_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let (grpc, telemetry) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "off"
bearer_token = "s3cret"
max_request_size = "1KiB"
[exporters.null]
[pipelines.traces]
receivers = ["otlp"]
exporters = ["null"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
"#
        ),
    )
    .unwrap();
    let child = run_ready(&config, telemetry);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let codes = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let path = http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        );
        let call = |body: Vec<u8>, token: Option<&str>| {
            let mut client = tonic::client::Grpc::new(channel.clone());
            let path = path.clone();
            let mut request = tonic::Request::new(body);
            if let Some(t) = token {
                request
                    .metadata_mut()
                    .insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            async move {
                client.ready().await.unwrap();
                client
                    .unary::<Vec<u8>, Vec<u8>, _>(request, path, RawCodec)
                    .await
                    .map_or_else(|s| s.code(), |_| tonic::Code::Ok)
            }
        };
        let unauthenticated = call(Vec::new(), None).await;
        let malformed = call(b"\x0a\xff\xff\xff\xff".to_vec(), Some("s3cret")).await;
        let too_large = call(vec![0u8; 4096], Some("s3cret")).await;
        let fine = call(Vec::new(), Some("s3cret")).await;
        (unauthenticated, malformed, too_large, fine)
    });
    assert_eq!(codes.0, tonic::Code::Unauthenticated);
    assert_eq!(codes.1, tonic::Code::InvalidArgument);
    assert_ne!(codes.2, tonic::Code::Ok);
    assert_eq!(codes.3, tonic::Code::Ok, "still serving after the refusals");
    let metrics = eventually(Duration::from_secs(10), "refusal counters", || {
        http_get(telemetry, "/metrics")
            .map(|(_, body)| body)
            .filter(|b| b.contains("transport=\"grpc\",reason=\"too_large\""))
    });
    for reason in ["malformed", "too_large", "unauthenticated"] {
        let line = format!(
            "tracescale_receiver_otlp_refused_requests_total{{component=\"otlp\",transport=\"grpc\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    stop_cleanly(child, LIMIT);
}

#[test]
fn failed_tls_handshakes_are_counted_on_both_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    let (grpc, http, telemetry) = (free_port(), free_port(), free_port());
    let tls = crate::util::repo().join("tests/fixtures/tls");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"
tls = {{ cert_file = {:?}, key_file = {:?} }}
[exporters.null]
[pipelines.traces]
receivers = ["otlp"]
exporters = ["null"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
"#,
            tls.join("server.pem").display().to_string(),
            tls.join("server.key").display().to_string()
        ),
    )
    .unwrap();
    let child = run_ready(&config, telemetry);
    // Plain text to each TLS listener: no answer, one counted refusal each.
    for port in [http, grpc] {
        let response = post_traces(port, "Content-Type: application/json", b"{}");
        assert!(!response.starts_with("HTTP/1.1"), "{response}");
    }
    let metrics = crate::util::metrics_until(telemetry, "the refusals counted", |b| {
        b.contains("transport=\"http\",reason=\"tls_handshake\"} 1")
            && b.contains("transport=\"grpc\",reason=\"tls_handshake\"} 1")
    });
    assert!(metrics.contains("tls_handshake"));
    stop_cleanly(child, LIMIT);
}
