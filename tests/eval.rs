//! `tracescale eval` and `tracescale synth`: labeled span CSVs in, detection quality out.

use std::time::Duration;

use crate::util::{bin, run_to_end};

const LIMIT: Duration = Duration::from_secs(60);

/// A labeled CSV of two operations with log-normal-ish durations; rows in `slow` are label 1,
/// fault `f1`, and 20× slower.
fn labeled_csv(rows: usize, slow: std::ops::Range<usize>) -> String {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out = String::from(
        "trace_id,span_id,parent_span_id,service,operation,start_unix_nano,end_unix_nano,label,fault_id,fault_type\n",
    );
    let mut clock = 1_700_000_000_000_000_000u64;
    for i in 0..rows {
        let (operation, median_ns) = if i % 2 == 0 {
            ("get", 1e6)
        } else {
            ("put", 5e6)
        };
        // Sum of four uniforms: roughly normal, mean 2, sd 0.58.
        let gauss = (0..4).map(|_| uniform()).sum::<f64>() - 2.0;
        let mut duration = median_ns * (0.5 * gauss).exp();
        let anomalous = slow.contains(&i);
        if anomalous {
            duration *= 20.0;
        }
        clock += 1_000_000;
        let (label, fault) = if anomalous { (1, "f1,delay") } else { (0, ",") };
        out.push_str(&format!(
            "t{i},s{i},,shop,{operation},{},{clock},{label},{fault}\n",
            clock - duration as u64
        ));
    }
    out
}

const EVAL_PIPELINE: &str = r#"
[service]
telemetry_address = "off"

[receivers.demo_traces]

[processors.hstree]
train_size = 300
window_size = 100

[exporters.null]

[pipelines.p]
receivers = ["demo_traces"]
processors = ["hstree"]
exporters = ["null"]
"#;

/// Runs `tracescale eval --json` of the `hstree` processor of `pipeline` on `csv`; it must
/// succeed and print one JSON report.
fn eval_json(pipeline: &std::path::Path, csv: &std::path::Path) -> serde_json::Value {
    let out = run_to_end(
        bin()
            .args(["eval", "-c"])
            .arg(pipeline)
            .args(["--processor", "hstree", "--input"])
            .arg(csv)
            .arg("--json"),
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

#[test]
fn eval_replays_a_labeled_csv_and_reports_detection_quality() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("spans.csv");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&csv, labeled_csv(3000, 2000..2200)).expect("write csv");
    std::fs::write(&pipeline, EVAL_PIPELINE).expect("write pipeline");
    let report = eval_json(&pipeline, &csv);
    for key in [
        "precision",
        "recall",
        "f1",
        "fpr",
        "auc",
        "accuracy",
        "tp",
        "fp",
        "fn",
        "tn",
        "training_spans",
        "faults",
        "faults_detected",
        "median_detection_delay_seconds",
        "ns_per_span",
        "spans",
    ] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    let count = |k: &str| report[k].as_u64().expect("a count");
    let ratio = |k: &str| report[k].as_f64().expect("a number");
    assert_eq!(count("spans"), 3000, "{report}");
    assert_eq!(
        count("tp") + count("fp") + count("fn") + count("tn") + count("training_spans"),
        3000,
        "{report}"
    );
    assert!(ratio("recall") > 0.5, "{report}");
    assert!(ratio("fpr") < 0.2, "{report}");
    assert!(ratio("auc") > 0.8, "{report}");
    assert_eq!(count("faults"), 1, "{report}");
    assert_eq!(count("faults_detected"), 1, "{report}");
}

#[test]
fn eval_with_an_unknown_processor_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("spans.csv");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&csv, labeled_csv(10, 0..0)).expect("write csv");
    std::fs::write(&pipeline, EVAL_PIPELINE).expect("write pipeline");
    let out = run_to_end(
        bin()
            .args(["eval", "-c"])
            .arg(&pipeline)
            .args(["--processor", "hstree/missing", "--input"])
            .arg(&csv),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no processor `hstree/missing`"), "{stderr}");
}

const SYNTH_PIPELINE: &str = r#"
[service]
telemetry_address = "off"

[receivers.demo_traces]

[processors.hstree]

[exporters.null]

[pipelines.p]
receivers = ["demo_traces"]
processors = ["hstree"]
exporters = ["null"]
"#;

#[test]
fn synth_writes_a_labeled_csv_that_eval_scores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("s.csv.gz");
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(&pipeline, SYNTH_PIPELINE).expect("write pipeline");
    let out = run_to_end(
        bin()
            .args(["synth", "--output"])
            .arg(&csv)
            .args(["--seed", "3", "--traces", "4000"]),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // "FILE: N spans, 4000 traces, …"
    let rows: u64 = stderr
        .split(": ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a span count in {stderr:?}"));
    assert!(stderr.contains("4000 traces"), "{stderr}");

    let report = eval_json(&pipeline, &csv);
    let count = |k: &str| report[k].as_u64().expect("a count");
    let ratio = |k: &str| report[k].as_f64().expect("a number");
    assert_eq!(count("spans"), rows, "{report}");
    assert_eq!(count("faults"), 6, "{report}");
    assert!(count("faults_detected") >= 4, "{report}");
    // The labels are noisy on purpose (ancestors, the early part of growing faults): the
    // default detector reaches recall ≈ 0.22 and AUC ≈ 0.82 on this file.
    assert!(ratio("recall") > 0.15, "{report}");
    assert!(ratio("auc") > 0.7, "{report}");
    assert!(ratio("fpr") < 0.05, "{report}");
}
