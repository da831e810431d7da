//! The project's claim, asserted: on every shipped scenario, over seeds 1 to 10, the shipped
//! trace-driven pipeline keeps the SLO at least as well as the Kubernetes HPA on CPU in nine
//! seeds of ten or more, and never scales a workload that is not the cause. The runs are exact
//! at any speed (the simulation waits for the pipeline after every step), so they run flat out.

use std::time::Duration;

use crate::util::{bin, run_to_end};

#[test]
fn every_shipped_scenario_beats_the_cpu_hpa_in_nine_seeds_of_ten_without_a_wrong_target() {
    let mut scenarios: Vec<_> = std::fs::read_dir("configs")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("scenario-"))
        })
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 5, "{scenarios:?}");
    let mut failures = Vec::new();
    for config in &scenarios {
        let out = run_to_end(
            bin().args([
                "simulate",
                "-c",
                config.to_str().unwrap(),
                "--compare",
                "cpu-hpa",
                "--seeds",
                "1..10",
                "--speed",
                "0",
                "--json",
            ]),
            Duration::from_secs(900),
        );
        assert!(
            out.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let wins = report["versus"]["cpu-hpa"]["wins"].as_u64().unwrap();
        let seeds = report["versus"]["cpu-hpa"]["seeds"].as_u64().unwrap();
        let wrong = report["pipeline"]["wrong_target_actions"].as_u64().unwrap();
        assert_eq!(seeds, 10, "{}", config.display());
        if wins < 9 || wrong > 0 {
            failures.push(format!(
                "{}: at most the HPA's SLO-violation seconds in {wins} of {seeds} seeds, \
                 {wrong} actions on a wrong target",
                config.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
