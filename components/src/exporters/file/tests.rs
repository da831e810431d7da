use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracescale_core::signal::{Evidence, ScaleChange, Target};

use super::*;

fn traces() -> Signal {
    Signal::Traces(Traces::new(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![0xab; 16],
                span_id: vec![0x01; 8],
                name: "GET /cart".into(),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_000_250_000_000,
                attributes: vec![KeyValue {
                    key: "http.status_code".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(200)),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }]))
}

fn decision() -> Decision {
    Decision {
        target: Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
            namespace: "shop".into(),
        },
        change: ScaleChange::Step(1),
        limits: Default::default(),
        rule: "checkout-slow".into(),
        reason: "20 of 25 spans above 300ms within 10s".into(),
        evidence: Evidence::default(),
        resources: None,
        timestamp_unix_nano: 1,
    }
}

#[test]
fn traces_are_otlp_json_with_hex_ids_and_string_int64() {
    let mut e = FileExporter::new(FileConfig {
        path: "unused".into(),
        append: false,
    });
    e.encode(traces()).unwrap();
    let line = std::str::from_utf8(&e.line).unwrap();
    assert!(line.ends_with('\n'));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "abababababababababababababababab");
    assert_eq!(span["spanId"], "0101010101010101");
    assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
    assert_eq!(span["name"], "GET /cart");
    assert_eq!(span["attributes"][0]["value"]["intValue"], "200");
}

#[test]
fn decisions_are_tagged_lines() {
    let mut e = FileExporter::new(FileConfig {
        path: "unused".into(),
        append: false,
    });
    e.encode(Signal::Decisions(vec![decision(), decision()]))
        .unwrap();
    let text = std::str::from_utf8(&e.line).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["signal"], "decision");
    assert_eq!(v["rule"], "checkout-slow");
    assert_eq!(v["target"]["name"], "checkout");
    assert_eq!(v["change"]["step"], 1);
}

#[tokio::test]
async fn writes_and_truncates_unless_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    std::fs::write(&path, "old\n").unwrap();
    for append in [false, true] {
        let mut e = FileExporter::new(FileConfig {
            path: path.clone(),
            append,
        });
        let ctx = tracescale_core::testing::exporter_context("file");
        e.start(&ctx).await.unwrap();
        e.export(traces()).await.unwrap();
        e.shutdown(Instant::now()).await.unwrap();
        e.shutdown(Instant::now()).await.unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("old"));
    assert_eq!(text.lines().count(), 2);
}

#[tokio::test]
async fn a_missing_directory_fails_start_with_the_path() {
    let mut e = FileExporter::new(FileConfig {
        path: "/nonexistent-dir/out.jsonl".into(),
        append: false,
    });
    let ctx = tracescale_core::testing::exporter_context("file");
    let err = e.start(&ctx).await.unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/out.jsonl"),
        "{err}"
    );
}
