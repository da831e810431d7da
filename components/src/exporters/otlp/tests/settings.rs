//! The config diagnostics, and every README example built.

use super::*;

// ---------------------------------------------------------------------------------------------
// Config

/// The error messages of a table that must not build.
fn build_errors(table: &str) -> Vec<String> {
    match build_from_toml(factory(), "otlp", table) {
        Ok(_) => panic!("built:\n{table}"),
        Err(e) => e.diagnostics().iter().map(|d| d.message.clone()).collect(),
    }
}

#[test]
fn bad_configs_are_refused_with_the_key() {
    let cases = [
        ("endpoint = \"tempo:4317\"", "exporters.otlp.endpoint:"),
        ("endpoint = \"http://\"", "exporters.otlp.endpoint:"),
        ("endpoint = \"not a url\"", "exporters.otlp.endpoint:"),
        ("endpoint = \"ftp://tempo:4317\"", "unsupported scheme"),
        (
            "endpoint = \"http://tempo:4317\"\ntls = { ca_file = \"/ca.pem\" }",
            "`tls` is set but the endpoint is not https://",
        ),
        (
            "endpoint = \"https://tempo:4317\"\ntls = { cert_file = \"/c.pem\" }",
            "needs both `cert_file` and `key_file`",
        ),
        ("endpoint = \"http://tempo:4317/v1\"", "gRPC does not use"),
        (
            "endpoint = \"http://tempo:4318?x=1\"\nprotocol = \"http/protobuf\"",
            "query",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nprotocol = \"http/json\"",
            "exporters.otlp.protocol: unknown value `http/json`",
        ),
        (
            "endpoint = \"http://tempo:4317\"\ncompression = \"brotli\"",
            "unknown value `brotli`",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nsend_batch_size = 0",
            "exporters.otlp.send_batch_size: must be between 1",
        ),
        (
            "endpoint = \"http://tempo:4317\"\ntimeout = \"0s\"",
            "exporters.otlp.timeout: must be more than 0",
        ),
        (
            "endpoint = \"http://tempo:4317\"\ntimeout_per_request = \"0s\"",
            "exporters.otlp.timeout_per_request: must be more than 0",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nretry_on_failure = { initial_interval = \"10s\", max_interval = \"1s\" }",
            "exporters.otlp.retry_on_failure.max_interval: must be at least",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nretry_on_failure = { multiplier = 0.5 }",
            "retry_on_failure.multiplier",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nretry_on_failure = { randomization_factor = 2.0 }",
            "retry_on_failure.randomization_factor",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nretry_on_failure = { max_elapsed = \"1m\" }",
            "unknown key `max_elapsed`",
        ),
        (
            "endpoint = \"https://tempo:4317\"\ntls = { insecure = true }",
            "unknown key `insecure`",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nheaders = { \"content-type\" = \"text/plain\" }",
            "exporters.otlp.headers.content-type: is set by the exporter",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nheaders = { \"bad header\" = \"x\" }",
            "is not a valid header name",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nheaders = { x-tenant = \"caf\u{e9}\" }",
            "visible ASCII",
        ),
        ("protocol = \"grpc\"", "missing required key `endpoint`"),
        (
            "endpoint = \"http://tempo:4317\"\nsend_batch_sise = 10",
            "unknown key `send_batch_sise`",
        ),
    ];
    for (table, want) in cases {
        let errors = build_errors(table);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{table}\nwanted {want:?} in {errors:#?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = build_errors(
        "endpoint = \"http://tempo:4317/v1\"\nsend_batch_size = 0\ntimeout = \"0s\"\ntls = {}",
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn http_requests_go_to_v1_traces_under_the_endpoint() {
    for (endpoint, want) in [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://gw:8080/otlp", "http://gw:8080/otlp/v1/traces"),
    ] {
        let s = settings(&format!(
            "endpoint = \"{endpoint}\"\nprotocol = \"http/protobuf\""
        ));
        match s.target {
            config::Target::Http(uri) => assert_eq!(uri.to_string(), want),
            config::Target::Grpc(_) => panic!("gRPC target for HTTP"),
        }
    }
}

#[test]
fn a_port_that_does_not_match_the_protocol_is_a_warning() {
    let config: OtlpExporterConfig = toml::from_str("endpoint = \"http://tempo:4318\"").unwrap();
    let mut warnings = Vec::new();
    assert!(config.check(&mut warnings).is_ok());
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].key, "endpoint");
}

#[test]
fn defaults_match_the_readme() {
    let s = settings("endpoint = \"http://tempo:4317\"");
    assert!(matches!(s.target, config::Target::Grpc(_)));
    assert_eq!(s.compression, Compression::Gzip);
    assert_eq!(s.send_batch_size, 8192);
    assert_eq!(s.capacity(), 16384);
    assert_eq!(s.timeout, Duration::from_millis(200));
    assert_eq!(s.timeout_per_request, Duration::from_secs(10));
    assert!(s.retry.enabled);
    assert_eq!(s.retry.initial_interval, Duration::from_secs(1));
    assert_eq!(s.retry.max_interval, Duration::from_secs(30));
    assert_eq!(s.retry.max_elapsed_time, Some(Duration::from_secs(300)));
    assert!(s.headers.is_empty());
}

// ---------------------------------------------------------------------------------------------
// README

const README: &str = include_str!("../README.md");

/// The `[exporters.…]` tables of the README's TOML blocks, without the engine keys, as the
/// conformance test reads them. Each block is one table of `key = value` lines.
fn readme_examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in README.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => block = Some(Vec::new()),
            (Some(_), l) if l.starts_with("```") => {
                let lines = block.take().unwrap();
                let header = lines[0].trim();
                let id = header
                    .strip_prefix("[exporters.")
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap()
                    .trim_matches('"')
                    .to_string();
                let table: Vec<&str> = lines[1..]
                    .iter()
                    .copied()
                    .filter(|l| !l.starts_with("queue_size") && !l.starts_with("when_full"))
                    .collect();
                out.push((id, table.join("\n")));
            }
            (Some(b), _) => b.push(line),
            (None, _) => {}
        }
    }
    out
}

#[test]
fn every_config_key_has_a_readme_row() {
    for key in (factory().config_keys)()
        .iter()
        .copied()
        .chain(["queue_size", "when_full"])
    {
        assert!(
            README.contains(&format!("| `{key}` |")),
            "no row for `{key}`"
        );
    }
    for key in [
        "enabled",
        "initial_interval",
        "max_interval",
        "max_elapsed_time",
        "multiplier",
        "randomization_factor",
    ] {
        assert!(
            README.contains(&format!("| `retry_on_failure.{key}` |")),
            "no row for `retry_on_failure.{key}`"
        );
    }
}

#[tokio::test]
async fn the_readme_examples_build_and_the_first_starts_and_stops_by_its_deadline() {
    let examples = readme_examples();
    assert!(examples.len() >= 2);
    for (id, table) in &examples {
        if let Err(e) = build_from_toml(factory(), id, table) {
            panic!("[exporters.{id}] does not build:\n{}", e.render(false));
        }
    }
    let (id, table) = &examples[0];
    let Ok(Built::Exporter(mut exporter)) = build_from_toml(factory(), id, table) else {
        panic!("not an exporter");
    };
    exporter
        .start(&testing::exporter_context(id))
        .await
        .unwrap();
    exporter
        .export(signal(vec![resource("a", 20)]))
        .await
        .unwrap();
    // Nothing listens at the example's endpoint: the spans are given up on, by the deadline.
    let began = std::time::Instant::now();
    let stopped = exporter
        .shutdown(Instant::now() + Duration::from_millis(300))
        .await;
    assert!(stopped.is_err());
    assert!(began.elapsed() < Duration::from_secs(2));
    exporter.shutdown(in_secs(1)).await.unwrap();
}
