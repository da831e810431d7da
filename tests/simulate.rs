//! The main job: `tracescale demo` and `tracescale simulate` run a simulated shop through a
//! pipeline and compare it with the CPU baseline. Figures are reported, not asserted: these
//! tests check that the runs complete and report what the README says they report.

use std::time::Duration;

use crate::util::{bin, run_to_end};

const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn demo_runs_to_completion_with_a_live_view_and_the_comparison() {
    let out = run_to_end(bin().arg("demo"), LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The live view: status lines through the whole run, and every change with its reason.
    assert!(
        stdout.lines().filter(|l| l.starts_with("t=")).count() >= 10,
        "{stdout}"
    );
    assert!(
        stdout.contains("t= 720s"),
        "the view shows the end of the run:\n{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains('▲') && l.contains("rule \"")),
        "no scale-up with its rule in the live view:\n{stdout}"
    );
    for row in [
        "SLO-violation seconds",
        "replica-seconds",
        "fault → first correct action (s)",
        "actions on a wrong target",
        "trace-driven",
        "cpu-hpa",
    ] {
        assert!(stdout.contains(row), "{row} missing:\n{stdout}");
    }
}

#[test]
fn simulate_prints_json_for_both_scalers_and_writes_the_chart() {
    let dir = tempfile::TempDir::new().unwrap();
    let svg = dir.path().join("run.svg");
    let out = run_to_end(
        bin().args([
            "simulate",
            "-c",
            "configs/scenario-worker-cap.toml",
            "--compare",
            "cpu-hpa",
            "--json",
            "--plot",
            svg.to_str().unwrap(),
        ]),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    for run in ["pipeline", "baseline"] {
        for key in [
            "slo_violation_seconds",
            "replica_seconds",
            "first_correct_action_seconds",
            "wrong_target_actions",
        ] {
            assert!(v[run].get(key).is_some(), "{run}.{key} missing: {v}");
        }
        // Twelve minutes of three services with at least one replica each.
        assert!(
            v[run]["replica_seconds"].as_f64().unwrap() >= 3.0 * 720.0,
            "{v}"
        );
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg"), "{chart}");
    assert!(chart.contains("trace-driven") && chart.contains("cpu-hpa"));
    assert_eq!(
        chart.matches("<polyline").count(),
        2 * 4,
        "p99 and three services, twice"
    );
}

#[test]
fn simulate_refuses_a_file_without_a_simulation() {
    let out = run_to_end(
        bin().args([
            "simulate",
            "-c",
            "configs/demo.toml",
            "--compare",
            "cpu-hpa",
        ]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no simulated_traces receiver"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
