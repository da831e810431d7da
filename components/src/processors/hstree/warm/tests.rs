//! Warm start from a recording and from an in-process Tempo.

mod tempo;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tracescale_core::component::{Emitter, Processor};
use tracescale_core::error::error_chain;
use tracescale_core::signal::{Signal, Traces};
use tracescale_core::testing;

use super::super::tests::count_warnings;
use super::super::{Detector, HsTree, HsTreeConfig};
use crate::random::SplitMix64;

/// Healthy `checkout/PlaceOrder` spans of about 10 ms, `per_batch` to a resource.
fn healthy(batches: usize, per_batch: usize, seed: u64) -> Vec<ResourceSpans> {
    let mut rng = SplitMix64::new(seed);
    let mut n = 0u64;
    (0..batches)
        .map(|_| {
            let spans = (0..per_batch)
                .map(|_| {
                    n += 1;
                    let start = 1_700_000_000_000_000_000 + n * 1_000_000;
                    let d = (10.0e6 * (0.2 * rng.standard_normal()).exp()) as u64;
                    Span {
                        trace_id: (u128::from(n) + 1).to_be_bytes().to_vec(),
                        span_id: (n + 1).to_be_bytes().to_vec(),
                        name: "PlaceOrder".to_string(),
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + d,
                        ..Default::default()
                    }
                })
                .collect();
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".to_string(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("checkout".to_string())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect()
}

/// Writes `batches` as OTLP/JSON lines, gzip-compressed when the name ends in `.gz`.
fn write_recording(path: &Path, batches: &[ResourceSpans]) {
    let mut text = Vec::new();
    for rs in batches {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![rs.clone()],
        };
        text.extend(serde_json::to_vec(&request).unwrap());
        text.push(b'\n');
    }
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&text).unwrap();
        text = gz.finish().unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// A processor from `hstree` keys in TOML.
fn processor(toml_text: &str) -> HsTree {
    let config: HsTreeConfig = toml::from_str(toml_text).unwrap();
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let detector = Detector::new(&config).unwrap();
    HsTree::new("hstree".to_string(), config, detector)
}

/// Whether one healthy span sent now is judged (tagged with a score) rather than training.
async fn judges_at_once(p: &mut HsTree) -> bool {
    let mut out = Emitter::new();
    let batch = healthy(1, 1, 99).remove(0);
    p.process(Signal::Traces(Traces::new(vec![batch])), &mut out)
        .await
        .unwrap();
    let signals = out.take();
    let Some(Signal::Traces(t)) = signals.first() else {
        panic!("no traces out")
    };
    !t.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .is_empty()
}

fn warm_file(path: &Path, extra: &str) -> String {
    format!(
        "warm_start = {{ file = {:?} {extra} }}",
        path.display().to_string()
    )
}

#[tokio::test]
async fn a_gzip_recording_is_learned_before_the_first_span_so_it_is_judged_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recording.jsonl.gz");
    write_recording(&path, &healthy(15, 100, 1));
    let mut p = processor(&warm_file(&path, ""));
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert_eq!(p.detector().seen(), 1500, "every span of the recording");
    assert!(judges_at_once(&mut p).await, "past train_size: judged");

    let mut cold = processor("");
    cold.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert!(!judges_at_once(&mut cold).await, "without it: training");
}

#[tokio::test]
async fn a_protobuf_recording_is_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recording.bin");
    let mut bytes = Vec::new();
    for rs in healthy(3, 50, 2) {
        ExportTraceServiceRequest {
            resource_spans: vec![rs],
        }
        .encode_length_delimited(&mut bytes)
        .unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    let mut p = processor(&warm_file(&path, ", format = \"otlp_proto\""));
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert_eq!(p.detector().seen(), 150);
}

#[tokio::test]
async fn a_missing_or_truncated_recording_starts_cold_with_a_warning_or_fails_when_required() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl");
    let (warnings, _guard) = count_warnings();
    let mut p = processor(&warm_file(&missing, ""));
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
    assert_eq!(p.detector().seen(), 0, "cold");

    let mut p = processor(&warm_file(&missing, ", required = true"));
    let err = p
        .start(&testing::processor_context("hstree"))
        .await
        .unwrap_err();
    let message = error_chain(&err);
    assert!(message.contains("missing.jsonl"), "{message}");

    // A gzip stream cut short: what came before is not kept, the model starts cold.
    let truncated = dir.path().join("cut.jsonl.gz");
    write_recording(&truncated, &healthy(15, 100, 3));
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut p = processor(&warm_file(&truncated, ", required = true"));
    let err = p
        .start(&testing::processor_context("hstree"))
        .await
        .unwrap_err();
    let message = error_chain(&err);
    assert!(
        message.contains("cut.jsonl.gz") && message.contains("cannot read line"),
        "{message}"
    );
    let mut p = processor(&warm_file(&truncated, ""));
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert_eq!(p.detector().seen(), 0, "nothing half-learned");
}

#[tokio::test]
async fn an_empty_recording_is_a_failed_warm_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.jsonl");
    std::fs::write(&path, "not json\n\n").unwrap();
    let mut p = processor(&warm_file(&path, ", required = true"));
    let err = p
        .start(&testing::processor_context("hstree"))
        .await
        .unwrap_err();
    assert!(
        error_chain(&err).contains("no valid span"),
        "{}",
        error_chain(&err)
    );
}

#[tokio::test]
async fn the_warm_model_is_saved_and_a_loaded_model_skips_the_warm_start() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("recording.jsonl");
    write_recording(&recording, &healthy(12, 100, 4));
    let state = dir.path().join("hstree.model");
    let toml_text = format!(
        "state_path = {:?}\n{}",
        state.display().to_string(),
        warm_file(&recording, "")
    );
    let mut first = processor(&toml_text);
    first
        .start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert!(state.exists(), "saved right after the warm start");

    // The saved model is loaded and the recording is not learned a second time.
    let mut second = processor(&toml_text);
    second
        .start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    assert_eq!(second.detector().seen(), 1200);
}

#[test]
fn warm_start_keys_are_checked() {
    let problems = |text: &str| {
        toml::from_str::<HsTreeConfig>(text)
            .unwrap()
            .problems()
            .into_iter()
            .map(|p| p.key)
            .collect::<Vec<_>>()
    };
    assert_eq!(problems("warm_start = {}"), ["warm_start.file"]);
    assert_eq!(
        problems("warm_start = { file = \"a\", tempo = \"http://t:3200\" }"),
        ["warm_start.file"]
    );
    assert_eq!(
        problems("warm_start = { tempo = \"tempo:3200\" }"),
        ["warm_start.tempo"]
    );
    assert_eq!(
        problems("warm_start = { tempo = \"http://t:3200\", start = \"yesterday\" }"),
        ["warm_start.start"]
    );
    assert_eq!(
        problems(
            "warm_start = { tempo = \"http://t:3200\", start = \"2024-05-01T12:00:00Z\", \
             end = \"2024-05-01T11:00:00Z\" }"
        ),
        ["warm_start.start"]
    );
    assert_eq!(
        problems("warm_start = { tempo = \"http://t:3200\", limit = 0 }"),
        ["warm_start.limit"]
    );
    assert!(
        problems(
            "warm_start = { tempo = \"https://t:3200\", start = \"-30m\", end = \"-5m\", \
             org_id = \"team-a\", headers = { Authorization = \"Bearer x\" } }"
        )
        .is_empty()
    );
    assert!(toml::from_str::<HsTreeConfig>("warm_start = { fil = \"a\" }").is_err());
}
