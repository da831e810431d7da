//! Recording and replaying: the `file` exporter writes, the `file` receiver reads it back.

use std::path::Path;
use std::time::Duration;

use crate::util::{
    bin, count_spans, free_port, metric, metrics_until, run_ready, run_to_end, slow_span_request,
    stop_cleanly,
};

const LIMIT: Duration = Duration::from_secs(60);

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Three good lines around a broken one, followed: the good spans go out, the broken line is
/// counted once and logged with its number.
#[test]
fn a_malformed_line_is_counted_logged_with_its_number_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("spans.jsonl");
    let out = dir.path().join("out.jsonl");
    let good = |n| slow_span_request("checkout", n, 20, "", "");
    std::fs::write(
        &recording,
        format!(
            "{}\n{}\n{{\"resourceSpans\": 7}}\n{}\n",
            good(1),
            good(2),
            good(3)
        ),
    )
    .unwrap();
    let telemetry = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[service]
telemetry_address = "127.0.0.1:{telemetry}"
[receivers.file]
path = "{}"
follow = true
poll_interval = "20ms"
[exporters.file]
path = "{}"
[pipelines.replay]
receivers = ["file"]
exporters = ["file"]
"#,
            recording.display(),
            out.display()
        ),
    );
    let child = run_ready(&config, telemetry);
    let text = metrics_until(telemetry, "three spans sent on", |m| {
        metric(
            m,
            r#"tracescale_receiver_emitted_total{component="file",signal="traces"}"#,
        ) == 3.0
    });
    assert_eq!(
        metric(
            &text,
            r#"tracescale_receiver_dropped_total{component="file",signal="traces",reason="malformed"}"#
        ),
        1.0,
        "{text}"
    );
    let run = stop_cleanly(child, LIMIT);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(
        log.contains("skipping a malformed line") && log.contains("line=3"),
        "{log}"
    );
    assert_eq!(count_spans(&out), (3, 3));
}

#[test]
fn on_error_stop_fails_the_run_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let recording = dir.path().join("spans.jsonl");
    let out = dir.path().join("out.jsonl");
    std::fs::write(
        &recording,
        format!(
            "{}\nnot json\n{}\n",
            slow_span_request("checkout", 1, 20, "", ""),
            slow_span_request("checkout", 2, 20, "", "")
        ),
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"
[service]
telemetry_address = "off"
[receivers.file]
path = "{}"
on_error = "stop"
[exporters.file]
path = "{}"
[pipelines.replay]
receivers = ["file"]
exporters = ["file"]
"#,
            recording.display(),
            out.display()
        ),
    );
    let run = run_to_end(bin().arg("run").arg("-c").arg(&config), LIMIT);
    let log = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("line 2 of {}", recording.display())),
        "{log}"
    );
    assert_eq!(count_spans(&out), (1, 1), "what came before is delivered");
}

/// A recording made by one run (rotated, zstd) replayed by another: every span arrives.
#[test]
fn a_rotated_zstd_recording_replays_every_span() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("recorded");
    std::fs::create_dir(&recorded).unwrap();
    let record = write_config(
        dir.path(),
        &format!(
            r#"
[service]
telemetry_address = "off"
[receivers.demo_traces]
batches_per_second = 0
traces_per_batch = 20
count = 100
[exporters.file]
path = "{}"
compression = "zstd"
rotation = {{ max_megabytes = 0.05, max_backups = 0 }}
[pipelines.record]
receivers = ["demo_traces"]
exporters = ["file"]
"#,
            recorded.join("spans.jsonl.zst").display()
        ),
    );
    let run = run_to_end(bin().arg("run").arg("-c").arg(&record), LIMIT);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut files: Vec<_> = std::fs::read_dir(&recorded)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() > 2, "rotated: {files:?}");

    let out = dir.path().join("replayed.jsonl");
    let mut replay = String::from("[service]\ntelemetry_address = \"off\"\n");
    let mut ids = Vec::new();
    for (i, file) in files.iter().enumerate() {
        replay.push_str(&format!(
            "[receivers.\"file/{i}\"]\npath = \"{}\"\non_error = \"stop\"\n",
            file.display()
        ));
        ids.push(format!("\"file/{i}\""));
    }
    replay.push_str(&format!(
        "[exporters.file]\npath = \"{}\"\n[pipelines.replay]\nreceivers = [{}]\nexporters = [\"file\"]\n",
        out.display(),
        ids.join(", ")
    ));
    let replay = write_config(dir.path(), &replay);
    let run = run_to_end(bin().arg("run").arg("-c").arg(&replay), LIMIT);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (_, spans) = count_spans(&out);
    assert_eq!(spans, 100 * 20 * 3);
    let text = std::fs::read_to_string(&out).unwrap();
    let distinct: std::collections::BTreeSet<String> = text
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let mut ids = Vec::new();
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        ids.push(format!("{}/{}", s["traceId"], s["spanId"]));
                    }
                }
            }
            ids
        })
        .collect();
    assert_eq!(distinct.len(), 100 * 20 * 3, "every span once");
}
