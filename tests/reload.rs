//! SIGHUP reloads the pipeline file of a running `tracescale run`: a changed file replaces the
//! pipelines, on the same ports; an invalid one is reported and the running pipelines stay.

use std::path::Path;
use std::time::Duration;

use crate::util::{
    count_spans, eventually, free_port, http_get, metric, metrics_until, post_traces, run_ready,
    signal, slow_span_request, stop_cleanly,
};

const LIMIT: Duration = Duration::from_secs(20);

/// OTLP/HTTP on `http` into a file exporter writing `out`.
fn pipeline(http: u16, telemetry: u16, out: &Path) -> String {
    format!(
        r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"

[exporters."file/out"]
path = "{}"

[pipelines.traces]
receivers = ["otlp"]
exporters = ["file/out"]

[service]
telemetry_address = "127.0.0.1:{telemetry}"
"#,
        out.display()
    )
}

fn send(http: u16, n: u32) {
    let body = slow_span_request("checkout", n, 20, "", "");
    let response = post_traces(http, "Content-Type: application/json", body.as_bytes());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

fn spans_in(path: &Path, n: usize) {
    eventually(LIMIT, &format!("{n} span(s) in {}", path.display()), || {
        (count_spans(path).1 == n).then_some(())
    });
}

fn reloads(telemetry: u16, result: &str, n: f64) {
    let series = format!("tracescale_config_reloads_total{{result=\"{result}\"}}");
    metrics_until(telemetry, &format!("{n} reload(s) {result}"), |m| {
        metric(m, &series) == n
    });
}

#[test]
fn sighup_reloads_a_changed_file_and_keeps_the_pipelines_on_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let (http, telemetry) = (free_port(), free_port());
    let (first, second) = (
        dir.path().join("first.jsonl"),
        dir.path().join("second.jsonl"),
    );
    let config = dir.path().join("pipeline.toml");
    std::fs::write(&config, pipeline(http, telemetry, &first)).unwrap();
    let child = run_ready(&config, telemetry);
    send(http, 1);
    spans_in(&first, 1);

    // A changed file: the exporter writes elsewhere, the receiver listens on the same port.
    std::fs::write(&config, pipeline(http, telemetry, &second)).unwrap();
    signal(&child, "HUP");
    reloads(telemetry, "ok", 1.0);
    eventually(LIMIT, "ready after the reload", || {
        http_get(telemetry, "/readyz").filter(|(s, _)| *s == 200)
    });
    send(http, 2);
    spans_in(&second, 1);
    assert_eq!(
        count_spans(&first).1,
        1,
        "the old exporter got nothing more"
    );

    // An invalid file: said, counted, and the running pipelines go on as they were.
    std::fs::write(
        &config,
        pipeline(http, telemetry, &second).replace("grpc = \"off\"", "grcp = \"off\""),
    )
    .unwrap();
    signal(&child, "HUP");
    reloads(telemetry, "invalid", 1.0);
    send(http, 3);
    spans_in(&second, 2);

    let out = stop_cleanly(child, LIMIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reload refused: the file is invalid; the running pipelines stay"),
        "{stderr}"
    );
    assert!(
        stderr.contains("receivers.otlp: unknown key `grcp`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("reloaded: the new pipelines run"),
        "{stderr}"
    );
}
