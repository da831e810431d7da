//! `tracescale replay`: a production pipeline file backtested on a recording made by the `file`
//! exporter, with the same timeline every time, however busy the machine.

use std::path::Path;
use std::time::Duration;

use crate::util::{bin, run_to_end};

const LIMIT: Duration = Duration::from_secs(120);

/// Records 10 s of demo traffic (a third of the database calls slow) with the `file` exporter.
fn record(dir: &Path) -> std::path::PathBuf {
    let recording = dir.join("recording.jsonl.zst");
    let config = dir.join("record.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.demo_traces]
batches_per_second = 20
traces_per_batch = 20
count = 200
slow_share = 0.3
seed = 7
[exporters.file]
path = "{}"
compression = "zstd"
[pipelines.traces]
receivers = ["demo_traces"]
exporters = ["file"]
[service]
telemetry_address = "off"
"#,
            recording.display()
        ),
    )
    .unwrap();
    let out = run_to_end(bin().arg("run").arg("-c").arg(&config), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    recording
}

/// The pipeline as it runs in production: OTLP in, rules on the wall clock, a cluster and a
/// trace backend out.
fn production(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("pipeline.toml");
    std::fs::write(
        &config,
        r#"
[receivers.otlp]
[processors.latency_rules]
[[processors.latency_rules.rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
percentile = 99
above = "50ms"
min_samples = 20
window = "2s"
scale = { target = "statefulset/payments-db", namespace = "shop", step = 1, max = 6 }
[exporters.cluster]
type = "kubernetes"
allow = ["shop/statefulset/payments-db"]
[exporters."otlp/tempo"]
endpoint = "http://127.0.0.1:9"
[pipelines.scaling]
receivers = ["otlp"]
processors = ["latency_rules"]
exporters = ["cluster"]
[pipelines.forward]
receivers = ["otlp"]
exporters = ["otlp/tempo"]
"#,
    )
    .unwrap();
    config
}

fn replay(config: &Path, recording: &Path, extra: &[&str]) -> String {
    let out = run_to_end(
        bin()
            .arg("replay")
            .arg("-c")
            .arg(config)
            .arg("--input")
            .arg(recording)
            .args(extra),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn replay_prints_the_same_timeline_every_time_and_touches_no_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let recording = record(dir.path());
    let config = production(dir.path());
    let first = replay(
        &config,
        &recording,
        &["--replicas", "shop/statefulset/payments-db=2"],
    );
    let lines: Vec<&str> = first.lines().collect();
    assert!(lines.len() >= 2, "{first}");
    // `2026-…T…Z would scale shop/statefulset/payments-db 2 → 3 (db-slow: …; p99 … ms, exemplar trace …)`
    assert!(
        lines[0].contains(" would scale shop/statefulset/payments-db 2 → 3 (db-slow: "),
        "{first}"
    );
    assert!(lines[0].contains("exemplar trace "), "{first}");
    assert!(
        lines.last().unwrap().ends_with("decisions") || lines.last().unwrap().ends_with("decision")
    );
    // The rule's own `max` bounds the counts it walks through.
    assert!(!first.contains("→ 7"), "{first}");

    // Same recording, same timeline: on span time, the replay's pace does not matter.
    for _ in 0..2 {
        assert_eq!(
            replay(
                &config,
                &recording,
                &["--replicas", "shop/statefulset/payments-db=2"]
            ),
            first
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&replay(&config, &recording, &["--json"])).unwrap();
    let decisions = json["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), lines.len() - 1);
    assert_eq!(decisions[0]["rule"], "db-slow");
    assert_eq!(decisions[0]["target"]["name"], "payments-db");
    assert_eq!(decisions[0]["change"], serde_json::json!({ "step": 1 }));
}

#[test]
fn replay_refuses_a_pipeline_that_makes_no_decisions_and_a_bad_replicas_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("forward.toml");
    std::fs::write(
        &config,
        r#"
[receivers.otlp]
[exporters.null]
[pipelines.traces]
receivers = ["otlp"]
exporters = ["null"]
"#,
    )
    .unwrap();
    let recording = dir.path().join("empty.jsonl");
    std::fs::write(&recording, "").unwrap();
    let out = run_to_end(
        bin()
            .args(["replay", "-c"])
            .arg(&config)
            .arg("--input")
            .arg(&recording),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no processor of the pipeline file makes decisions"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_to_end(
        bin()
            .args(["replay", "-c"])
            .arg(&config)
            .arg("--input")
            .arg(&recording)
            .args(["--replicas", "checkout=2"]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected NAMESPACE/KIND/NAME=N"));
}
