//! Behaviour of the simulation: determinism, queueing laws, the scenarios' ground truth, the
//! HPA baseline, the oracle and the scoring.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;

use super::hpa::{hpa_raw_recommendation, hpa_stabilise};
use super::presets::{db_bottleneck, mixed, worker_cap};
use super::*;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

mod spans;

#[derive(Clone, Debug)]
struct OwnedSpan {
    trace: [u8; 16],
    span: [u8; 8],
    parent: Option<[u8; 8]>,
    service: String,
    start: u64,
    end: u64,
    error: bool,
}

impl From<&SimSpan<'_>> for OwnedSpan {
    fn from(s: &SimSpan<'_>) -> Self {
        OwnedSpan {
            trace: s.trace_id,
            span: s.span_id,
            parent: s.parent_span_id,
            service: s.service.to_string(),
            start: s.start,
            end: s.end,
            error: s.error,
        }
    }
}

/// Runs `cfg` for `duration`, applying `steps` at whole seconds; returns
/// a hash of every span field, the span count and the stats rows.
fn hashed_run(
    cfg: &SimConfig,
    duration: u64,
    steps: &[(u64, &str, u32)],
) -> (u64, u64, Vec<IntervalStats>) {
    let mut sim = Sim::new(cfg).unwrap();
    let mut h = DefaultHasher::new();
    let mut n = 0u64;
    let mut rows = Vec::new();
    let mut t = 0;
    while t < duration {
        t += NANOS_PER_SEC;
        rows.extend(sim.advance_to(t, &mut |s| {
            s.hash(&mut h);
            n += 1;
        }));
        for &(at, svc, r) in steps {
            if at == t {
                sim.set_replicas(svc, r, t).unwrap();
            }
        }
    }
    (h.finish(), n, rows)
}

fn rows_in(rows: &[IntervalStats], from: u64, to: u64) -> Vec<&IntervalStats> {
    rows.iter()
        .filter(|r| r.start >= from && r.end <= to)
        .collect()
}

fn mean_ok_p99_ms(rows: &[&IntervalStats]) -> f64 {
    let v: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.e2e_ok_p99_ns)
        .map(|p| p as f64 / 1e6)
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn mean_service_p99_ms(rows: &[&IntervalStats], svc: &str) -> f64 {
    let v: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.service(svc).and_then(|s| s.p99_ns))
        .map(|p| p as f64 / 1e6)
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn violations(rows: &[&IntervalStats], slo: u64) -> usize {
    rows.iter().filter(|r| r.violates(slo)).count()
}

fn failures(rows: &[&IntervalStats]) -> u64 {
    rows.iter().map(|r| r.root_failed).sum()
}

fn doubled(sc: &Scenario, svc: &str, at: u64) -> ScheduledScaler {
    let base = sc
        .sim
        .services
        .iter()
        .find(|s| s.name == svc)
        .unwrap()
        .replicas;
    ScheduledScaler::new(vec![ScheduledStep {
        at,
        service: svc.into(),
        replicas: base * 2,
    }])
}

fn single_service(rps: f64, replicas: u32) -> SimConfig {
    SimConfig {
        seed: 7,
        root: "svc".into(),
        services: vec![ServiceConfig {
            name: "svc".into(),
            operation: "GET /".into(),
            replicas,
            min_replicas: 1,
            max_replicas: 8,
            slots_per_replica: 1,
            queue_limit: 100_000,
            median_service_ns: millis(10),
            service_sigma: 0.5,
            cores_per_replica: 1.0,
            cpu_per_request: 1.0,
            contention: 0.0,
            startup_ns: secs(5),
            calls: Vec::new(),
            hpa_target_utilisation: Some(0.5),
            kind: WorkloadKind::Deployment,
        }],
        traffic: TrafficPattern::Steady { rps },
        faults: Vec::new(),
        stats_interval_ns: NANOS_PER_SEC,
        ..SimConfig::default()
    }
}

#[test]
fn same_seed_and_actions_are_bit_identical() {
    let mut cfg = worker_cap().sim;
    let steps = [(secs(200), "worker", 4), (secs(250), "db", 3)];
    let a = hashed_run(&cfg, secs(300), &steps);
    let b = hashed_run(&cfg, secs(300), &steps);
    assert!(a.1 > 10_000);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
    let c = hashed_run(&cfg, secs(300), &[(secs(200), "worker", 3)]);
    assert_ne!(a.0, c.0);
    cfg.seed += 1;
    let d = hashed_run(&cfg, secs(300), &steps);
    assert_ne!(a.0, d.0);
    assert_ne!(a.2, d.2);
}

#[test]
fn littles_law_holds_at_steady_state() {
    let lambda = 100.0;
    // Four servers at roughly 28 % load.
    let mut sim = Sim::new(&single_service(lambda, 4)).unwrap();
    let warmup = secs(20);
    let end = secs(320);
    sim.advance_to(warmup, &mut |_| {});
    let (mut sum_n, mut samples) = (0.0, 0u64);
    let (mut sojourn, mut done) = (0u128, 0u64);
    let step = millis(2);
    let mut t = warmup;
    while t < end {
        t += step;
        sim.advance_to(t, &mut |s| {
            sojourn += u128::from(s.duration());
            done += 1;
        });
        sum_n += sim.in_system("svc").unwrap() as f64;
        samples += 1;
    }
    let l = sum_n / samples as f64;
    let w = sojourn as f64 / done as f64 / NANOS_PER_SEC as f64;
    let rel = (l - lambda * w).abs() / (lambda * w);
    assert!(rel < 0.07, "L = {l}, lambda * W = {}", lambda * w);
    // Light load: sojourn close to the log-normal mean service time.
    let mean_service = 0.010 * (0.5f64 * 0.5 / 2.0).exp();
    assert!((w - mean_service).abs() / mean_service < 0.1, "W = {w}");
}

#[test]
fn utilisation_matches_offered_load() {
    let cfg = single_service(100.0, 4);
    let (_, _, rows) = hashed_run(&cfg, secs(200), &[]);
    let u: f64 = rows
        .iter()
        .map(|r| r.services[0].cpu_utilisation)
        .sum::<f64>()
        / rows.len() as f64;
    let expected = 100.0 * 0.010 * (0.125f64).exp() / 4.0;
    assert!(
        (u - expected).abs() / expected < 0.05,
        "u = {u}, expected {expected}"
    );
    assert!(
        rows.iter()
            .all(|r| r.services[0].cpu_utilisation <= 1.0 + 1e-9)
    );
}

#[test]
fn more_workers_cut_worker_queueing_in_worker_cap() {
    let sc = worker_cap();
    let ph = &sc.phases[0];
    let base = run_scenario(&sc, &mut NoScaling).unwrap();
    let more = run_scenario(&sc, &mut doubled(&sc, "worker", ph.start)).unwrap();
    let (b, m) = (
        rows_in(&base.rows, ph.start, ph.end),
        rows_in(&more.rows, ph.start, ph.end),
    );
    assert!(mean_service_p99_ms(&m, "worker") < mean_service_p99_ms(&b, "worker") / 5.0);
    assert!(mean_ok_p99_ms(&m) < mean_ok_p99_ms(&b) / 5.0);
    // The right action restores the SLO apart from the startup delay.
    assert!(
        violations(&m, sc.slo_latency_ns) <= 30,
        "{}",
        violations(&m, sc.slo_latency_ns)
    );
    assert!(violations(&b, sc.slo_latency_ns) > 250);
}

#[test]
fn more_workers_do_not_help_a_thrashing_database() {
    let sc = db_bottleneck();
    let ph = &sc.phases[0];
    let slo = sc.slo_latency_ns;
    let base = run_scenario(&sc, &mut NoScaling).unwrap();
    let workers = run_scenario(&sc, &mut doubled(&sc, "worker", ph.start)).unwrap();
    let dbs = run_scenario(&sc, &mut doubled(&sc, "db", ph.start)).unwrap();
    let b = rows_in(&base.rows, ph.start, ph.end);
    let w = rows_in(&workers.rows, ph.start, ph.end);
    let d = rows_in(&dbs.rows, ph.start, ph.end);
    assert!(mean_ok_p99_ms(&w) >= mean_ok_p99_ms(&b));
    assert!(failures(&w) >= failures(&b));
    assert!(violations(&w, slo) >= violations(&b, slo));
    // More concurrent queries make each one slower.
    assert!(mean_service_p99_ms(&w, "db") > mean_service_p99_ms(&b, "db"));
    assert!(mean_ok_p99_ms(&d) < mean_ok_p99_ms(&b) / 5.0);
    assert!(violations(&d, slo) <= 80, "{}", violations(&d, slo));
    assert_eq!(failures(&d), 0);
}

#[test]
fn scenarios_are_healthy_before_and_violate_during_faults() {
    for sc in [worker_cap(), db_bottleneck(), mixed()] {
        let r = run_scenario(&sc, &mut NoScaling).unwrap();
        let slo = sc.slo_latency_ns;
        let before = rows_in(&r.rows, 0, sc.phases[0].start);
        assert_eq!(violations(&before, slo), 0, "{}", sc.name);
        assert!(
            before.iter().all(|x| x.e2e_p99_ns.unwrap() < slo / 2),
            "{}",
            sc.name
        );
        for ph in &sc.phases {
            let during = rows_in(&r.rows, ph.start, ph.end);
            let v = violations(&during, slo);
            assert!(
                v * 10 >= during.len() * 9,
                "{}: {v} of {}",
                sc.name,
                during.len()
            );
        }
        assert_eq!(r.report.first_correct_action_seconds, None);
        assert!(r.report.slo_violation_seconds > 200.0);
    }
}

#[test]
fn span_trees_are_consistent() {
    let cfg = worker_cap().sim;
    let mut sim = Sim::new(&cfg).unwrap();
    let mut spans: Vec<OwnedSpan> = Vec::new();
    let mut last_end = 0;
    let mut ordered = true;
    // Covers the spike, so rejections and propagated errors occur.
    for t in 1..=300 {
        sim.advance_to(secs(t), &mut |s| {
            ordered &= s.end >= last_end;
            last_end = s.end;
            spans.push(s.into());
        });
    }
    assert!(ordered, "spans must come in end order");
    let by_id: HashMap<[u8; 8], &OwnedSpan> = spans.iter().map(|s| (s.span, s)).collect();
    assert_eq!(by_id.len(), spans.len(), "span ids are unique");
    let finished_roots: std::collections::HashSet<[u8; 16]> = spans
        .iter()
        .filter(|s| s.parent.is_none())
        .map(|s| s.trace)
        .collect();
    let mut checked = 0;
    let mut errors = 0;
    for s in &spans {
        assert!(s.end >= s.start);
        assert_eq!(s.parent.is_none(), s.service == "frontend");
        errors += usize::from(s.error);
        if !finished_roots.contains(&s.trace) {
            continue;
        }
        if let Some(p) = s.parent {
            let parent = by_id.get(&p).expect("parent span present");
            assert_eq!(parent.trace, s.trace);
            assert!(parent.start <= s.start && s.end <= parent.end);
            if s.error {
                assert!(parent.error, "failures propagate to the caller");
            }
            checked += 1;
        }
    }
    assert!(checked > 10_000);
    assert!(errors > 0, "the spike should overflow the worker queue");
}

#[test]
fn replica_changes_respect_startup_and_bounds() {
    let mut sim = Sim::new(&single_service(10.0, 2)).unwrap();
    sim.advance_to(secs(1), &mut |_| {});
    assert_eq!(sim.set_replicas("svc", 20, secs(1)).unwrap(), 8);
    assert_eq!(sim.replicas("svc"), Some(8));
    assert_eq!(sim.ready_replicas("svc"), Some(2));
    sim.advance_to(secs(6) - 1, &mut |_| {});
    assert_eq!(sim.ready_replicas("svc"), Some(2));
    sim.advance_to(secs(6), &mut |_| {});
    assert_eq!(sim.ready_replicas("svc"), Some(8));
    // Scale-down is immediate; cancelling starting replicas comes first.
    sim.set_replicas("svc", 6, secs(6)).unwrap();
    assert_eq!(sim.ready_replicas("svc"), Some(6));
    sim.set_replicas("svc", 8, secs(6)).unwrap();
    sim.set_replicas("svc", 7, secs(6)).unwrap();
    assert_eq!(
        (sim.replicas("svc"), sim.ready_replicas("svc")),
        (Some(7), Some(6))
    );
    sim.advance_to(secs(12), &mut |_| {});
    assert_eq!(
        (sim.replicas("svc"), sim.ready_replicas("svc")),
        (Some(7), Some(7))
    );
    assert_eq!(sim.set_replicas("svc", 0, secs(12)).unwrap(), 1);
    assert!(sim.set_replicas("svc", 2, secs(11)).is_err());
    assert!(sim.set_replicas("nope", 2, secs(12)).is_err());
    // A change scheduled ahead of the clock lands at its time.
    sim.set_replicas("svc", 3, secs(13)).unwrap();
    assert_eq!(sim.replicas("svc"), Some(1));
    sim.advance_to(secs(13), &mut |_| {});
    assert_eq!(sim.replicas("svc"), Some(3));
}

#[test]
fn scale_down_lets_in_flight_work_finish() {
    let mut cfg = single_service(200.0, 4);
    cfg.services[0].slots_per_replica = 4;
    let mut sim = Sim::new(&cfg).unwrap();
    sim.advance_to(secs(5), &mut |_| {});
    sim.set_replicas("svc", 1, secs(5)).unwrap();
    let mut errors = 0;
    let rows = sim.advance_to(secs(10), &mut |s| errors += usize::from(s.error));
    assert_eq!(errors, 0);
    assert!(
        rows.iter()
            .all(|r| r.services[0].busy_slots <= 4 || r.start == secs(5))
    );
}

#[test]
fn config_errors_are_reported() {
    let mut cfg = single_service(1.0, 1);
    cfg.services[0].calls.push(CallConfig::to("svc"));
    assert!(matches!(Sim::new(&cfg), Err(SimError::CallCycle(_))));
    cfg.services[0].calls[0].service = "missing".into();
    assert!(matches!(Sim::new(&cfg), Err(SimError::UnknownService(_))));
    cfg.services[0].calls.clear();
    cfg.services[0].slots_per_replica = 0;
    assert!(matches!(Sim::new(&cfg), Err(SimError::InvalidConfig(_))));
}

#[test]
fn traffic_patterns() {
    let ramp = TrafficPattern::Ramp {
        from_rps: 10.0,
        to_rps: 30.0,
        over: secs(10),
    };
    assert_eq!(ramp.rate_at(secs(5)), 20.0);
    assert_eq!(ramp.rate_at(secs(50)), 30.0);
    let spike = TrafficPattern::Spike {
        base_rps: 1.0,
        peak_rps: 5.0,
        at: secs(10),
        duration: secs(5),
    };
    assert_eq!(spike.rate_at(secs(9)), 1.0);
    assert_eq!(spike.rate_at(secs(10)), 5.0);
    assert_eq!(spike.rate_at(secs(15)), 1.0);
    let day = TrafficPattern::Diurnal {
        mean_rps: 100.0,
        amplitude: 0.5,
        period: secs(100),
    };
    assert!((day.rate_at(secs(25)) - 150.0).abs() < 1e-9);
    assert!((day.rate_at(secs(75)) - 50.0).abs() < 1e-9);
    // Thinning follows the pattern.
    let mut cfg = single_service(0.0, 4);
    cfg.traffic = TrafficPattern::Spike {
        base_rps: 20.0,
        peak_rps: 200.0,
        at: secs(50),
        duration: secs(50),
    };
    let (_, _, rows) = hashed_run(&cfg, secs(100), &[]);
    let arrivals = |a: usize, b: usize| {
        rows[a..b]
            .iter()
            .map(|r| r.services[0].arrivals)
            .sum::<u64>() as f64
    };
    assert!((arrivals(0, 50) / 50.0 - 20.0).abs() < 3.0);
    assert!((arrivals(50, 100) / 50.0 - 200.0).abs() < 10.0);
}

#[test]
fn hpa_raw_recommendation_follows_the_formula() {
    // Within tolerance: keep.
    assert_eq!(hpa_raw_recommendation(4, 4, 0.65, 0.6, 0.1), 4);
    assert_eq!(hpa_raw_recommendation(4, 4, 0.55, 0.6, 0.1), 4);
    // Outside: ceil(current * ratio).
    assert_eq!(hpa_raw_recommendation(4, 4, 0.9, 0.6, 0.1), 6);
    assert_eq!(hpa_raw_recommendation(3, 3, 0.61 * 1.2, 0.61, 0.1), 4);
    assert_eq!(hpa_raw_recommendation(4, 4, 0.1, 0.6, 0.1), 1);
    assert_eq!(hpa_raw_recommendation(4, 4, 0.0, 0.6, 0.1), 0);
    // Starting replicas count as idle when scaling up.
    assert_eq!(hpa_raw_recommendation(4, 2, 0.9, 0.6, 0.1), 4);
    assert_eq!(hpa_raw_recommendation(4, 2, 1.8, 0.6, 0.1), 6);
    assert_eq!(hpa_raw_recommendation(0, 0, 1.0, 0.6, 0.1), 0);
}

#[test]
fn hpa_stabilises_scale_down_only() {
    let hist: VecDeque<(u64, u32)> = [(0, 6), (15, 3), (30, 2)].into_iter().collect();
    assert_eq!(hpa_stabilise(6, 2, &hist), 6);
    let hist: VecDeque<(u64, u32)> = [(0, 4), (15, 3), (30, 2)].into_iter().collect();
    assert_eq!(hpa_stabilise(6, 2, &hist), 4);
    let hist: VecDeque<(u64, u32)> = [(0, 1), (15, 9)].into_iter().collect();
    assert_eq!(hpa_stabilise(3, 9, &hist), 9);
}

/// Drives an HPA on a single service whose load changes at 100 s.
fn hpa_run(before: f64, after: f64, replicas: u32, max: u32) -> (Vec<ScaleAction>, Sim) {
    let mut cfg = single_service(before, replicas);
    cfg.services[0].slots_per_replica = 16;
    cfg.services[0].max_replicas = max;
    cfg.traffic = TrafficPattern::Spike {
        base_rps: before,
        peak_rps: after,
        at: secs(100),
        duration: secs(10_000),
    };
    let mut sim = Sim::new(&cfg).unwrap();
    let mut hpa = Hpa::new(&sim, HpaConfig::default());
    let mut actions = Vec::new();
    for t in 1..=800 {
        sim.advance_to(secs(t), &mut |_| {});
        actions.extend(hpa.step(&mut sim));
    }
    (actions, sim)
}

#[test]
fn hpa_scales_up_at_once_and_down_after_the_window() {
    // 4 replicas at 50 % target: 80 rps ~ 0.23 util, 400 rps ~ 1.1.
    let (actions, sim) = hpa_run(400.0, 80.0, 4, 20);
    assert!(actions.iter().all(|a| a.time % secs(15) == 0));
    let ups: Vec<_> = actions.iter().filter(|a| a.is_scale_up()).collect();
    assert!(!ups.is_empty() && ups[0].time == secs(15), "{actions:?}");
    assert!(ups[0].to <= 2 * ups[0].from.max(2));
    let first_down = actions.iter().find(|a| !a.is_scale_up()).unwrap();
    // The load drops at 100 s; the last high recommendation (sync at
    // 90 s) is held for the 300 s window.
    assert_eq!(first_down.time, secs(90 + 300), "{first_down:?}");
    assert!(sim.replicas("svc").unwrap() <= 2);
}

#[test]
fn hpa_respects_max_and_tolerance() {
    let (actions, sim) = hpa_run(50.0, 2000.0, 2, 5);
    assert!(actions.iter().all(|a| a.to <= 5));
    assert_eq!(sim.replicas("svc"), Some(5));
    // 2 replicas, 0.5 target, 90 rps ~ 0.51 util: inside the tolerance.
    let (actions, _) = hpa_run(90.0, 90.0, 2, 8);
    assert!(actions.is_empty(), "{actions:?}");
}

/// A statistics row of one service, `service`, with `reps` replicas and `p99` end to end.
fn one_service_row(service: &str, start: u64, p99: Option<u64>, reps: u32) -> IntervalStats {
    IntervalStats {
        start,
        end: start + NANOS_PER_SEC,
        services: vec![ServiceIntervalStats {
            service: service.into(),
            arrivals: 0,
            completions: 0,
            rejections: 0,
            errors: 0,
            p50_ns: None,
            p99_ns: None,
            queue_len: 0,
            busy_slots: 0,
            ready_replicas: reps,
            desired_replicas: reps,
            cpu_utilisation: 0.0,
        }],
        root_ok: 0,
        root_failed: 0,
        e2e_p50_ns: p99,
        e2e_p99_ns: p99,
        e2e_ok_p99_ns: p99,
    }
}

#[test]
fn report_counts_violations_cost_and_targets() {
    let sc = mixed();
    let row = |start: u64, p99: Option<u64>, reps: u32| one_service_row("worker", start, p99, reps);
    let rows = vec![
        row(0, Some(millis(100)), 2),
        row(secs(1), Some(millis(900)), 2),
        row(secs(2), Some(u64::MAX), 3),
        row(secs(3), None, 3),
    ];
    let act = |t: u64, s: &str, from: u32, to: u32| ScaleAction {
        time: secs(t),
        service: s.into(),
        from,
        to,
    };
    let actions = vec![
        act(30, "worker", 2, 3),
        act(70, "db", 2, 3),
        act(75, "worker", 3, 4),
        act(100, "db", 3, 2),
        act(620, "worker", 2, 3),
        act(650, "db", 2, 4),
    ];
    let r = RunScore::compute(&sc, &rows, &actions);
    assert_eq!(r.slo_violation_seconds, 2.0);
    assert_eq!(r.replica_seconds, 10.0);
    assert_eq!(r.first_correct_action_seconds, Some(15.0));
    assert_eq!(r.phases[1].first_correct_action_seconds, Some(50.0));
    assert_eq!(r.wrong_target_actions, 2);
}

#[test]
fn every_built_in_scenario_is_named() {
    for name in SCENARIOS {
        assert!(scenario(name).is_some(), "{name}");
    }
    assert!(scenario("nope").is_none());
}

#[test]
fn the_chart_escapes_names() {
    let mut scenario = mixed();
    scenario.name = "a<b & \"c\"".to_string();
    let rows = [one_service_row("db<'1'>", 0, Some(millis(1)), 1)];
    let chart = chart::svg(
        &scenario,
        &[chart::Series {
            label: "pipe & <run>",
            rows: &rows,
            summary: None,
        }],
    );
    assert!(chart.contains("a&lt;b &amp; &quot;c&quot;"), "{chart}");
    assert!(chart.contains("db&lt;&apos;1&apos;&gt;"), "{chart}");
    assert!(chart.contains("pipe &amp; &lt;run&gt;"), "{chart}");
    assert!(
        !chart.contains("db<'1'>") && !chart.contains("<run>"),
        "{chart}"
    );
}

#[test]
fn the_oracle_holds_each_right_target_at_its_maximum_through_its_phase() {
    let sc = mixed();
    let run = run_scenario(
        &sc,
        &mut Oracle::new(&Sim::new(&sc.sim).unwrap(), &sc.phases),
    )
    .unwrap();
    // Up once at each phase's start, to the service's maximum; back once at its end.
    assert_eq!(run.actions.len(), 2 * sc.phases.len(), "{:#?}", run.actions);
    for (phase, pair) in sc.phases.iter().zip(run.actions.chunks(2)) {
        let (up, down) = (&pair[0], &pair[1]);
        let max = Sim::new(&sc.sim)
            .unwrap()
            .replica_bounds(&phase.right_target)
            .unwrap()
            .1;
        assert_eq!(up.service, phase.right_target);
        assert_eq!((up.to, down.to), (max, up.from), "{pair:#?}");
        let tick = sc.sim.stats_interval_ns;
        assert!(
            up.time >= phase.start && up.time < phase.start + tick,
            "{up:?}"
        );
        assert!(
            down.time >= phase.end && down.time < phase.end + tick,
            "{down:?}"
        );
    }
    assert_eq!(run.report.wrong_target_actions, 0);
    // Replicas still start up: the first seconds of each phase still violate the SLO.
    let first = rows_in(
        &run.rows,
        sc.phases[0].start,
        sc.phases[0].start + 10_000_000_000,
    );
    assert!(violations(&first, sc.slo_latency_ns) > 0);
}
