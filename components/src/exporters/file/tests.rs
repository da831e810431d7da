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
        compression: None,
        rotation: None,
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
        compression: None,
        rotation: None,
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
            compression: None,
            rotation: None,
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
        compression: None,
        rotation: None,
    });
    let ctx = tracescale_core::testing::exporter_context("file");
    let err = e.start(&ctx).await.unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent-dir/out.jsonl"),
        "{err}"
    );
}

/// Every span id in `traces`, in order.
fn ids(resource_spans: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans]) -> Vec<Vec<u8>> {
    resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.span_id.clone())
        .collect()
}

/// What the `file` receiver reads from `path`: span ids in order.
async fn read_back(path: &std::path::Path) -> Vec<Vec<u8>> {
    use crate::receivers::file::{FileReceiver, FileReceiverConfig};
    use tracescale_core::component::Receiver;
    let config: FileReceiverConfig = toml::from_str(&format!(
        "path = {:?}\non_error = \"stop\"",
        path.display().to_string()
    ))
    .unwrap();
    let (output, mut rx) = tracescale_core::testing::output("file", 4);
    let (ctx, failed) = tracescale_core::testing::receiver_context_watched("file", output);
    let mut receiver = FileReceiver::new(config);
    receiver.start(ctx).await.unwrap();
    let mut got = Vec::new();
    while let Some(Signal::Traces(t)) = rx.recv().await {
        got.extend(ids(&t.resource_spans));
    }
    receiver.shutdown(Instant::now()).await.unwrap();
    let error = tokio::time::timeout(std::time::Duration::from_millis(1), failed.error()).await;
    assert!(error.is_err(), "{}: {error:?}", path.display());
    got
}

fn rotating(
    path: std::path::PathBuf,
    compression: Option<Compression>,
    max_backups: usize,
) -> FileConfig {
    FileConfig {
        path,
        append: false,
        compression,
        rotation: Some(RotationConfig {
            max_megabytes: 0.02,
            max_days: 0,
            max_backups,
            localtime: false,
            every: None,
        }),
    }
}

/// The files in `dir`, by name: backups in the order they were written, then the current one.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn rotated_and_compressed_files_replay_every_span_in_order() {
    for (compression, name) in [
        (None, "spans.jsonl"),
        (Some(Compression::Gzip), "spans.jsonl.gz"),
        (Some(Compression::Zstd), "spans.jsonl.zst"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut e = FileExporter::new(rotating(dir.path().join(name), compression, 1000));
        e.start(&tracescale_core::testing::exporter_context("file"))
            .await
            .unwrap();
        let mut generator = crate::receivers::demo_traces::Generator::new(3, 0.1);
        let mut sent = Vec::new();
        for _ in 0..200 {
            let batch = generator.batch(5);
            sent.extend(ids(&batch.resource_spans));
            e.export(Signal::Traces(batch)).await.unwrap();
        }
        e.shutdown(Instant::now()).await.unwrap();
        let files = files(dir.path());
        assert!(files.len() > 3, "{name}: {files:?}");
        assert!(files.last().unwrap().ends_with(name), "{files:?}");
        let mut got = Vec::new();
        for file in &files {
            let size = std::fs::metadata(file).unwrap().len();
            if compression.is_none() {
                assert!(size <= 20_971, "{}: {size} bytes", file.display());
            }
            got.extend(read_back(file).await);
        }
        assert_eq!(got, sent, "{name}");
    }
}

#[tokio::test]
async fn only_the_newest_max_backups_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let mut e = FileExporter::new(rotating(path.clone(), None, 2));
    e.start(&tracescale_core::testing::exporter_context("file"))
        .await
        .unwrap();
    let mut generator = crate::receivers::demo_traces::Generator::new(3, 0.1);
    let mut last = Vec::new();
    for _ in 0..60 {
        let batch = generator.batch(5);
        last.extend(ids(&batch.resource_spans));
        e.export(Signal::Traces(batch)).await.unwrap();
    }
    e.shutdown(Instant::now()).await.unwrap();
    let files = files(dir.path());
    assert_eq!(files.len(), 3, "{files:?}");
    let mut got = Vec::new();
    for file in &files {
        got.extend(read_back(file).await);
    }
    assert!(last.ends_with(&got), "the newest spans are kept");
}

#[tokio::test(start_paused = true)]
async fn every_rotates_a_file_at_its_first_write_past_the_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl");
    let mut config = rotating(path.clone(), None, 0);
    if let Some(r) = config.rotation.as_mut() {
        r.max_megabytes = 100.0;
        r.every = Some(tracescale_core::config::HumanDuration::from_secs(3600));
    }
    let mut e = FileExporter::new(config);
    e.start(&tracescale_core::testing::exporter_context("file"))
        .await
        .unwrap();
    e.export(traces()).await.unwrap();
    tokio::time::advance(std::time::Duration::from_secs(3599)).await;
    e.export(traces()).await.unwrap();
    assert_eq!(files(dir.path()).len(), 1);
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    e.export(traces()).await.unwrap();
    e.shutdown(Instant::now()).await.unwrap();
    let files = files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(
        std::fs::read_to_string(&files[0]).unwrap().lines().count(),
        2
    );
    assert_eq!(
        std::fs::read_to_string(&files[1]).unwrap().lines().count(),
        1
    );
}

#[tokio::test]
async fn a_compressed_file_is_readable_by_standard_tools_after_shutdown_and_while_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spans.jsonl.gz");
    let mut e = FileExporter::new(FileConfig {
        path: path.clone(),
        append: false,
        compression: Some(Compression::Gzip),
        rotation: None,
    });
    e.start(&tracescale_core::testing::exporter_context("file"))
        .await
        .unwrap();
    e.export(traces()).await.unwrap();
    // Flushed but not finished: a reader gets the batch, then an unexpected end.
    let mut text = String::new();
    let partial = std::fs::read(&path).unwrap();
    let read = std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(&partial[..]),
        &mut text,
    );
    assert!(read.is_err());
    assert_eq!(text.lines().count(), 1);
    e.export(traces()).await.unwrap();
    e.shutdown(Instant::now()).await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap()),
        &mut text,
    )
    .unwrap();
    assert_eq!(text.lines().count(), 2);
}

#[test]
fn compression_needs_the_matching_extension() {
    let factory = tracescale_core::registry::lookup(
        tracescale_core::component::ComponentKind::Exporter,
        "file",
    )
    .unwrap();
    let build = |t: &str| tracescale_core::config::build_from_toml(factory, "file", t);
    assert!(build("path = \"a.jsonl.zst\"\ncompression = \"zstd\"").is_ok());
    let err = build("path = \"a.jsonl\"\ncompression = \"gzip\"")
        .err()
        .unwrap();
    assert!(
        err.render(false).contains("ending in .gz"),
        "{}",
        err.render(false)
    );
    let err = build("path = \"a.jsonl\"\nrotation = { max_megabytes = 0 }")
        .err()
        .unwrap();
    assert!(
        err.render(false).contains("max_megabytes"),
        "{}",
        err.render(false)
    );
}
