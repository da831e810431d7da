//! `[service] log_format = "json"`: one JSON object per line on stderr, for log collectors.

use std::time::Duration;

use crate::util::{bin, run_to_end};

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        r#"
[receivers.demo_traces]
count = 2
batches_per_second = 20

[exporters.null]

[pipelines.traces]
receivers = ["demo_traces"]
exporters = ["null"]

[service]
log_format = "json"
telemetry_address = "off"
"#,
    )
    .unwrap();
    let out = run_to_end(
        bin().arg("run").arg("-c").arg(&config),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in &lines {
        assert!(
            line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(
            line["level"].is_string() && line["message"].is_string(),
            "{line}"
        );
    }
    let started = lines
        .iter()
        .find(|l| l["message"] == "pipeline started")
        .expect("the pipeline's start is logged");
    assert_eq!(started["pipeline"], "traces");
    assert!(
        stderr.starts_with("{\"timestamp\":"),
        "the timestamp leads each line: {stderr}"
    );
}
