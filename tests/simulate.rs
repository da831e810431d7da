//! The main job: `tracescale demo` and `tracescale simulate` run a simulated shop through a
//! pipeline and compare it with the baselines. Figures are reported, not asserted: these
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
fn simulate_prints_json_for_every_baseline_and_writes_the_chart() {
    let dir = tempfile::TempDir::new().unwrap();
    let svg = dir.path().join("run.svg");
    let out = run_to_end(
        bin().args([
            "simulate",
            "-c",
            "configs/scenario-worker-cap.toml",
            "--compare",
            "cpu-hpa,rps",
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
    let runs = [
        &v["pipeline"],
        &v["baselines"]["cpu-hpa"],
        &v["baselines"]["rps"],
    ];
    for run in runs {
        for key in [
            "slo_violation_seconds",
            "replica_seconds",
            "first_correct_action_seconds",
            "wrong_target_actions",
        ] {
            assert!(run.get(key).is_some(), "{key} missing: {v}");
        }
        // Twelve minutes of three services with at least one replica each.
        assert!(
            run["replica_seconds"].as_f64().unwrap() >= 3.0 * 720.0,
            "{v}"
        );
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg"), "{chart}");
    for policy in ["trace-driven", "cpu-hpa", "rps"] {
        assert!(
            chart.contains(&format!(r#"data-policy="{policy}""#)),
            "{policy}"
        );
    }
    assert_eq!(
        chart.matches("<polyline").count(),
        3 * 4,
        "p99 and three services, for each of three policies"
    );
}

#[test]
fn simulate_refuses_an_unknown_or_repeated_baseline() {
    for compare in ["cpu-hpa,keda", "rps,rps"] {
        let out = run_to_end(
            bin().args([
                "simulate",
                "-c",
                "configs/scenario-worker-cap.toml",
                "--compare",
                compare,
            ]),
            LIMIT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{compare}: {stderr}");
        assert!(stderr.contains("--compare"), "{compare}: {stderr}");
    }
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

/// Keeps the machine's cores busy until dropped, so a run competes for the CPU.
struct CpuHog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn simulate_json(config: &std::path::Path) -> String {
    let out = run_to_end(
        bin().args([
            "simulate",
            "-c",
            config.to_str().unwrap(),
            "--compare",
            "cpu-hpa",
            "--json",
        ]),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The simulation waits for the pipeline after every step, so a run's figures are the same
/// whether it is paced at 60x or runs flat out on a machine whose cores are all taken.
#[test]
fn simulate_gives_the_same_figures_at_any_speed_and_under_cpu_load() {
    let dir = tempfile::TempDir::new().unwrap();
    for entry in std::fs::read_dir("configs").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Every scenario, and one slo_scaler file: that processor buckets spans by the second,
        // so it also checks that a run cuts its seconds at the same simulated instants whenever
        // it starts (the other slo files add run time, not coverage).
        if !(name.starts_with("scenario-") || name == "slo-db-bottleneck.toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut doc: toml::Table = toml::from_str(&text).unwrap();
        assert!(
            doc.get("receivers")
                .and_then(|r| r.get("simulated_traces"))
                .is_some(),
            "{name}: no simulated_traces receiver"
        );
        shop_from(&mut doc, path.parent().unwrap());
        receiver_speed(&mut doc, 60.0);
        let paced = dir.path().join(format!("paced-{name}"));
        std::fs::write(&paced, toml::to_string(&doc).unwrap()).unwrap();
        receiver_speed(&mut doc, 0.0);
        let flat_out = dir.path().join(format!("flat-out-{name}"));
        std::fs::write(&flat_out, toml::to_string(&doc).unwrap()).unwrap();

        let expected = simulate_json(&paced);
        let hog = CpuHog::start();
        let loaded = simulate_json(&flat_out);
        drop(hog);
        assert_eq!(
            loaded, expected,
            "{name}: speed 0 under load against speed 60"
        );
    }
}

/// Names the receiver's shop file from `dir`, where the pipeline file came from, since the
/// copy is run from elsewhere.
fn shop_from(doc: &mut toml::Table, dir: &std::path::Path) {
    if let Some(r) = doc
        .get_mut("receivers")
        .and_then(|r| r.get_mut("simulated_traces"))
        .and_then(toml::Value::as_table_mut)
        && let Some(shop) = r.get("shop").and_then(toml::Value::as_str)
    {
        let absolute = std::fs::canonicalize(dir.join(shop)).unwrap();
        r.insert(
            "shop".into(),
            toml::Value::String(absolute.display().to_string()),
        );
    }
}

fn receiver_speed(doc: &mut toml::Table, speed: f64) {
    if let Some(r) = doc
        .get_mut("receivers")
        .and_then(|r| r.get_mut("simulated_traces"))
        .and_then(toml::Value::as_table_mut)
    {
        r.insert("speed".into(), toml::Value::Float(speed));
    }
}

/// A pipeline file next to a copy of `shop`, naming it by a path relative to the pipeline file.
fn pipeline_with_shop(dir: &std::path::Path, shop: &std::path::Path) -> std::path::PathBuf {
    std::fs::copy(shop, dir.join("shop.toml")).unwrap();
    let pipeline = dir.join("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[receivers.simulated_traces]\nshop = \"shop.toml\"\nspeed = 0\n\n\
         [exporters.null]\n\n\
         [pipelines.traces]\nreceivers = [\"simulated_traces\"]\nexporters = [\"null\"]\n\n\
         [service]\ntelemetry_address = \"off\"\n",
    )
    .unwrap();
    pipeline
}

#[test]
fn every_kind_of_mistake_in_a_shop_file_gets_its_diagnostic_and_exit_2() {
    let fixtures = crate::util::repo().join("tests/fixtures/shops");
    let cases = [
        (
            "unknown-service",
            "shop.toml:17:22: services[0].calls[0].service: unknown service \"bak\" \
             (services: front, back)",
        ),
        (
            "cycle",
            "services[1].calls[0].service: calls go round in a cycle (front → back → front)",
        ),
        (
            "negative-rate",
            "shop.toml:7:7: traffic.rps: -20 is not a rate: give 0 to 100000 requests per second",
        ),
        (
            "non-finite-rate",
            "shop.toml:7:7: traffic.rps: inf is not a rate",
        ),
        (
            "fault-missing-service",
            "faults[0].service: unknown service \"db\" (services: front, back)",
        ),
        (
            "fault-missing-edge",
            "faults[0].callee: no such call edge: \"back\" does not call \"front\"",
        ),
        (
            "min-above-max",
            "services[1].min_replicas: min_replicas (5) is above max_replicas (4)",
        ),
        (
            "zero-slots",
            "services[1].slots_per_replica: must be at least 1",
        ),
        (
            "probability",
            "services[0].calls[0].probability: 1.2 is outside [0, 1]",
        ),
        ("unknown-key", "services[1]: unknown key `medain`"),
    ];
    for (name, expected) in cases {
        let dir = tempfile::TempDir::new().unwrap();
        let pipeline = pipeline_with_shop(dir.path(), &fixtures.join(format!("bad-{name}.toml")));
        for command in [&["simulate", "-c"][..], &["validate"][..]] {
            let out = run_to_end(bin().args(command).arg(&pipeline), LIMIT);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {command:?}: {stderr}");
            assert!(
                stderr.contains("receivers.simulated_traces.shop: "),
                "{name}: the diagnostic points at the `shop` key:\n{stderr}"
            );
            assert!(
                stderr.contains(&format!("{}:", dir.path().join("shop.toml").display())),
                "{name}: the shop file is named:\n{stderr}"
            );
            assert!(stderr.contains(expected), "{name}: {expected}\n{stderr}");
        }
    }
    // The base the fixtures break loads.
    let dir = tempfile::TempDir::new().unwrap();
    let pipeline = pipeline_with_shop(dir.path(), &fixtures.join("base.toml"));
    let out = run_to_end(bin().arg("validate").arg(&pipeline), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_shop_file_runs_like_the_built_in_scenario_of_the_same_name() {
    let dir = tempfile::TempDir::new().unwrap();
    let repo = crate::util::repo();
    std::fs::create_dir(dir.path().join("shops")).unwrap();
    std::fs::copy(
        repo.join("configs/shops/worker-cap.toml"),
        dir.path().join("shops/worker-cap.toml"),
    )
    .unwrap();
    let text = std::fs::read_to_string(repo.join("configs/scenario-worker-cap.toml")).unwrap();
    assert!(text.contains("scenario = \"worker-cap\""));
    let by_file = dir.path().join("by-file.toml");
    std::fs::write(
        &by_file,
        text.replace(
            "scenario = \"worker-cap\"",
            "shop = \"shops/worker-cap.toml\"",
        ),
    )
    .unwrap();
    let run = |config: &std::path::Path| {
        let out = run_to_end(
            bin()
                .args([
                    "simulate",
                    "--compare",
                    "cpu-hpa",
                    "--json",
                    "--speed",
                    "0",
                    "-c",
                ])
                .arg(config),
            LIMIT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(
        run(&by_file),
        run(&repo.join("configs/scenario-worker-cap.toml"))
    );
}

/// The shop file `text` as an inline `topology` under the receiver.
fn inline_topology(text: &str) -> String {
    let mut out = String::from(
        "[receivers.simulated_traces]\nspeed = 0\n\n[receivers.simulated_traces.topology]\n",
    );
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("[[") {
            out.push_str(&format!("[[receivers.simulated_traces.topology.{name}\n"));
        } else if let Some(name) = line.strip_prefix('[') {
            out.push_str(&format!("[receivers.simulated_traces.topology.{name}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(
        "\n[exporters.null]\n\n[pipelines.traces]\nreceivers = [\"simulated_traces\"]\n\
         exporters = [\"null\"]\n\n[service]\ntelemetry_address = \"off\"\n",
    );
    out
}

#[test]
fn an_inline_topology_is_checked_like_a_shop_file_at_its_own_keys() {
    let fixtures = crate::util::repo().join("tests/fixtures/shops");
    let dir = tempfile::TempDir::new().unwrap();
    let good = dir.path().join("good.toml");
    let base = std::fs::read_to_string(fixtures.join("base.toml")).unwrap();
    std::fs::write(&good, inline_topology(&base)).unwrap();
    let out = run_to_end(bin().arg("validate").arg(&good), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, expected) in [
        (
            "zero-slots",
            "receivers.simulated_traces.topology.services[1].slots_per_replica: must be at least 1",
        ),
        (
            "cycle",
            "receivers.simulated_traces.topology.services[1].calls[0].service: calls go round",
        ),
        (
            "unknown-key",
            "receivers.simulated_traces.topology.services[1]: unknown key `medain`",
        ),
    ] {
        let bad = dir.path().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(fixtures.join(format!("bad-{name}.toml"))).unwrap();
        std::fs::write(&bad, inline_topology(&text)).unwrap();
        let out = run_to_end(bin().arg("validate").arg(&bad), LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expected), "{name}: {expected}\n{stderr}");
    }
}
