//! What `/metrics` shows an operator: HELP text for the metrics, and no series for a signal a
//! component can never see.

use std::time::Duration;

use crate::util::{free_port, metrics_until, run_ready, stop_cleanly};

#[test]
fn metrics_have_help_text_and_no_series_for_signals_a_component_cannot_take() {
    let dir = tempfile::tempdir().unwrap();
    let (http, telemetry, keda) = (free_port(), free_port(), free_port());
    let config = dir.path().join("pipeline.toml");
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
name = "checkout-slow"
service = "checkout"
operation = "PlaceOrder"
above = "300ms"
count = 20
window = "10s"
scale = {{ target = "deployment/checkout", namespace = "shop" }}

[exporters."file/decisions"]
path = "{}"
signals = ["decisions"]

[pipelines.scaling]
receivers = ["otlp"]
processors = ["latency_rules"]
exporters = ["file/decisions"]

[processors.probabilistic_sampler]
sampling_percentage = 50

[processors.slo_scaler]
objectives = [{{ name = "checkout", service = "frontend", operation = "GET /checkout", target = "500ms" }}]

[exporters.keda]
endpoint = "127.0.0.1:{keda}"
allow = ["shop/deployment/*"]

[pipelines.objectives]
receivers = ["otlp"]
processors = ["probabilistic_sampler", "slo_scaler"]
exporters = ["keda"]

[service]
telemetry_address = "127.0.0.1:{telemetry}"
"#,
            dir.path().join("decisions.jsonl").display()
        ),
    )
    .unwrap();
    let child = run_ready(&config, telemetry);
    // The rules publish their gauges at their first tick.
    let text = metrics_until(telemetry, "the rules' gauges", |m| {
        m.contains("tracescale_latency_rules_rule_stale{")
            && m.contains("tracescale_slo_scaler_buffered_traces{")
    });
    // Every family on the page has its HELP line, whichever component registered it.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no HELP for {name}\n{text}"
        );
    }
    for name in [
        "tracescale_receiver_received_total",
        "tracescale_exporter_received_total",
        "tracescale_queue_depth",
        "tracescale_latency_rules_rule_stale",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} "))),
            "no HELP for {name}\n{text}"
        );
    }
    let series = |prefix: &str| text.lines().any(|l| l.starts_with(prefix));
    assert!(series(
        "tracescale_exporter_received_total{component=\"file/decisions\",signal=\"decisions\"}"
    ));
    assert!(
        !series(
            "tracescale_exporter_received_total{component=\"file/decisions\",signal=\"traces\"}"
        ),
        "{text}"
    );
    assert!(
        !series("tracescale_receiver_received_total{component=\"otlp\",signal=\"decisions\"}"),
        "{text}"
    );
    assert!(
        !series(
            "tracescale_processor_received_total{component=\"latency_rules\",signal=\"decisions\"}"
        ),
        "{text}"
    );
    stop_cleanly(child, Duration::from_secs(20));
}
