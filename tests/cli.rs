//! The command line: exit codes, listings, validation.

use std::time::Duration;

use crate::util::{bin, run_to_end};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn version_and_help() {
    let out = run_to_end(bin().arg("--version"), LIMIT);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("tracescale {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    let out = run_to_end(bin().arg("frobnicate"), LIMIT);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn components_lists_every_built_in_with_signals_and_keys() {
    let out = run_to_end(bin().args(["components", "--json"]), LIMIT);
    assert!(out.status.success());
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (kind, ty) in tracescale_components::BUILT_IN {
        let entry = list
            .iter()
            .find(|c| c["kind"] == *kind && c["type"] == *ty)
            .unwrap_or_else(|| panic!("{kind} {ty} is not listed"));
        assert!(entry["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(entry["takes"].is_array() && entry["emits"].is_array());
    }
    let file = list
        .iter()
        .find(|c| c["kind"] == "exporter" && c["type"] == "file")
        .unwrap();
    assert_eq!(
        file["config_keys"],
        serde_json::json!(["path", "append", "compression", "rotation"])
    );
    assert_eq!(file["takes"], serde_json::json!(["traces", "decisions"]));

    let out = run_to_end(bin().arg("components"), LIMIT);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("demo_traces"));
}

#[test]
fn validate_exits_0_for_valid_files_and_2_otherwise() {
    let out = run_to_end(bin().args(["validate", "configs/demo.toml"]), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configs/demo.toml: valid"));

    let out = run_to_end(
        bin().args([
            "validate",
            "configs/demo.toml",
            "tests/fixtures/config/unknown_key.toml",
        ]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configs/demo.toml: valid"));
    assert!(stdout.contains("unknown_key.toml: invalid"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown key `verbosty`"), "{stderr}");
    assert!(stderr.contains("did you mean `verbosity`?"), "{stderr}");

    let out = run_to_end(bin().args(["validate", "no/such/file.toml"]), LIMIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read no/such/file.toml"));
}

#[test]
fn run_with_a_bad_file_exits_2_and_says_why() {
    let out = run_to_end(
        bin().args(["run", "-c", "tests/fixtures/config/dangling_id.toml"]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "pipelines.traces: references exporter \"otlp/tempo\", which is not configured (configured: debug, file)"
        ),
        "{stderr}"
    );
}

#[test]
fn every_file_in_configs_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir(crate::util::repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(err) = tracescale_core::config::load_file(&path) {
                panic!("{}", err.render(false));
            }
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

/// A sidecar shares the pod's network with the Collector, whose OTLP (4317, 4318) and metrics
/// (8888) ports it must leave free.
#[test]
fn the_sidecar_config_keeps_off_the_collectors_ports() {
    let text = std::fs::read_to_string(crate::util::repo().join("configs/sidecar.toml")).unwrap();
    let config =
        tracescale_core::config::load_file(&crate::util::repo().join("configs/sidecar.toml"))
            .unwrap_or_else(|e| panic!("{}", e.render(false)));
    let telemetry = config
        .service
        .telemetry_address
        .expect("telemetry is served");
    assert_eq!(telemetry.port(), 18888);
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for port in [":4317\"", ":4318\"", ":8888\""] {
            assert!(!line.contains(port), "{line}");
        }
    }
    assert!(text.contains("127.0.0.1:14317"), "{text}");
}
