//! Tests of the `slo_scaler` engine on traces shaped like a real shop's: a frontend calling a
//! worker pool calling a database, with CLIENT and SERVER spans, queue spans and pod names.

use tracescale_core::signal::{Decision, ScaleChange};

use super::engine::{Engine, Objective, Settings, SlowWork, Workload};
use crate::scaling::target::parse_short_target;
use crate::simulation::{OtlpBuilder, SimSpan, SpanShape};
use crate::tracetree::BufferConfig;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
/// Span time starts here (Unix ns), as the simulation's epoch would.
const EPOCH: u64 = 1_700_000_000 * S;

/// One second of traffic: per request, the wait and own work of the worker and the database.
#[derive(Clone, Copy)]
struct Second {
    rps: u64,
    /// How long before the worker call each request reached the frontend.
    frontend_wait: u64,
    worker_pods: u32,
    worker_wait: u64,
    worker_own: u64,
    db_pods: u32,
    db_wait: u64,
    db_own: u64,
}

const HEALTHY: Second = Second {
    rps: 50,
    frontend_wait: 0,
    worker_pods: 2,
    worker_wait: 0,
    worker_own: 20 * MS,
    db_pods: 2,
    db_wait: 0,
    db_own: 10 * MS,
};

fn settings() -> Settings {
    let workload = |service: &str, target: &str| Workload {
        service: service.to_string(),
        target: parse_short_target(target, "shop").unwrap(),
        min: Some(1),
        max: Some(20),
    };
    Settings {
        objectives: vec![Objective {
            name: "cart".into(),
            service: "frontend".into(),
            operation: "GET /cart".into(),
            percentile: 99.0,
            target_ns: 500 * MS,
        }],
        workloads: vec![
            workload("worker", "deployment/worker"),
            workload("db", "statefulset/db"),
        ],
        interval_ns: S,
        completion_wait_ns: BufferConfig::default().completion_wait,
        short_window_s: 10,
        long_window_s: 60,
        burn_rate: 2.0,
        target_utilisation: 0.7,
        drain_within_s: 30.0,
        scale_down_after_ns: 120 * S,
        baseline_window_s: 60.0,
        cooldown_ns: 15 * S,
        slow_work: SlowWork::Scale,
        anticipate: true,
    }
}

/// An engine on `settings`, its buffer waiting for traces as long as the settings say (as the
/// processor builds it): a shorter wait in the settings would read the last seconds of every
/// window before their traces are released.
fn engine_with(settings: Settings) -> Engine {
    let buffer = BufferConfig {
        completion_wait: settings.completion_wait_ns,
        ..BufferConfig::default()
    };
    Engine::new(settings, buffer).unwrap()
}

fn engine() -> Engine {
    engine_with(settings())
}

/// Feeds `seconds` of traffic, one batch a second, evaluating as span time passes; returns
/// the decisions with the second they came in.
fn run(engine: &mut Engine, from: u64, seconds: &[Second]) -> Vec<(u64, Decision)> {
    let mut decisions = Vec::new();
    let mut id = from * 1_000_000;
    for (i, sec) in seconds.iter().enumerate() {
        let t = from + i as u64;
        let mut b = OtlpBuilder::with_shape(
            "shop",
            EPOCH,
            SpanShape {
                client_spans: true,
                queue_spans: true,
            },
        );
        for r in 0..sec.rps {
            id += 1;
            let start = t * S + r * (S / sec.rps.max(1));
            let trace = {
                let mut t = [0u8; 16];
                t[..8].copy_from_slice(&id.to_be_bytes());
                t[15] = 1;
                t
            };
            let span = |n: u8| {
                let mut s = [n; 8];
                s[..4].copy_from_slice(&(id as u32).to_be_bytes());
                s
            };
            let db_start = start + sec.worker_wait;
            let db_end = db_start + sec.db_wait + sec.db_own;
            let worker_end = db_end + sec.worker_own;
            let visit = |span_id, parent, caller, service, start, started, end, replica| SimSpan {
                trace_id: trace,
                span_id,
                parent_span_id: parent,
                caller,
                service,
                operation: match service {
                    "frontend" => "GET /cart",
                    "worker" => "GetCart",
                    _ => "SELECT",
                },
                sent: start,
                start,
                started,
                end,
                error: false,
                rejected: false,
                replica,
                caller_replica: 0,
            };
            b.push(&visit(
                span(3),
                Some(span(2)),
                Some("worker"),
                "db",
                db_start,
                db_start + sec.db_wait,
                db_end,
                (id % u64::from(sec.db_pods)) as u32,
            ));
            b.push(&visit(
                span(2),
                Some(span(1)),
                Some("frontend"),
                "worker",
                start,
                start + sec.worker_wait,
                worker_end,
                (id % u64::from(sec.worker_pods)) as u32,
            ));
            b.push(&visit(
                span(1),
                None,
                None,
                "frontend",
                start - sec.frontend_wait,
                start - sec.frontend_wait,
                worker_end + MS,
                0,
            ));
        }
        let traces = b.take();
        engine.observe(&traces.resource_spans, None);
        let mut out = Vec::new();
        engine.tick(EPOCH + (t + 1) * S, &mut out);
        decisions.extend(out.into_iter().map(|d| (t, d)));
    }
    decisions
}

fn to(d: &Decision) -> u32 {
    match d.change {
        ScaleChange::To(n) => n,
        ScaleChange::Step(_) => panic!("a size, not a step: {d:?}"),
    }
}

#[test]
fn a_healthy_shop_gets_no_scale_up() {
    let mut e = engine();
    let decisions = run(&mut e, 0, &[HEALTHY; 90]);
    assert!(decisions.iter().all(|(_, d)| to(d) <= 2), "{decisions:#?}");
    assert!(e.counters().objective_traces > 4000);
}

#[test]
fn a_saturated_worker_pool_is_the_culprit_and_is_sized_from_its_queue() {
    let mut e = engine();
    run(&mut e, 0, &[HEALTHY; 60]);
    // Twice the traffic: the worker's queue grows by half a second each second.
    let overload: Vec<Second> = (0..30)
        .map(|i| Second {
            rps: 100,
            worker_wait: 500 * MS * (i + 1),
            ..HEALTHY
        })
        .collect();
    let decisions = run(&mut e, 60, &overload);
    let (at, first) = decisions.first().expect("a decision");
    assert!(*at < 75, "decided at {at}");
    assert_eq!(first.target.name, "worker", "{}", first.reason);
    assert!(
        to(first) >= 4,
        "two pods at twice their capacity: {}",
        first.reason
    );
    assert!(first.reason.contains("culprit worker"), "{}", first.reason);
    assert!(
        decisions.iter().all(|(_, d)| d.target.name == "worker"),
        "the database is never scaled: {decisions:#?}"
    );
    assert_eq!(first.rule, "cart");
    assert!(!first.evidence.exemplars.is_empty());
}

/// More traffic than the workers serve: their queue gains 100 ms a second, and with a 2 s
/// target the first request breaches 19 seconds in. (second, decision) of each decision, with
/// anticipation on or off.
fn a_growing_queue(anticipate: bool) -> Vec<(u64, Decision)> {
    let mut settings = settings();
    settings.anticipate = anticipate;
    settings.objectives[0].target_ns = 2 * S;
    let mut e = engine_with(settings);
    run(&mut e, 0, &[HEALTHY; 60]);
    let overload: Vec<Second> = (0..40)
        .map(|i| Second {
            rps: 60,
            worker_wait: 100 * MS * (i + 1),
            ..HEALTHY
        })
        .collect();
    run(&mut e, 60, &overload)
}

#[test]
fn a_growing_queue_is_scaled_before_its_objective_burns() {
    let decisions = a_growing_queue(true);
    let (at, first) = decisions.first().expect("a decision");
    // A few seconds of growth, and the five the traces take to complete.
    assert!(*at < 70, "decided at {at}");
    assert_eq!(first.target.name, "worker", "{}", first.reason);
    assert!(to(first) > 2, "{}", first.reason);
    assert!(
        first
            .reason
            .contains("is at risk: the queue of worker on its path grows"),
        "{}",
        first.reason
    );
    // Off, the same overload waits for requests to breach and the objective to burn.
    let late = a_growing_queue(false);
    let (at, first) = late.first().expect("a decision once it burns");
    assert!(*at >= 79, "decided at {at}");
    assert!(
        first.reason.contains("burns its error budget"),
        "{}",
        first.reason
    );
}

#[test]
fn a_database_whose_work_keeps_growing_is_scaled_before_its_objective_burns() {
    // Queries contending for the database's cores: each takes 150 ms longer than the one a
    // second before, and with a 5 s target the first request breaches half a minute in.
    let mut settings = settings();
    settings.objectives[0].target_ns = 5 * S;
    let mut e = engine_with(settings);
    run(&mut e, 0, &[HEALTHY; 60]);
    let thrashing: Vec<Second> = (0..20)
        .map(|i| Second {
            db_own: HEALTHY.db_own + 150 * MS * (i + 1),
            ..HEALTHY
        })
        .collect();
    let decisions = run(&mut e, 60, &thrashing);
    let (at, first) = decisions.first().expect("a decision");
    assert!(*at < 70, "decided at {at}");
    assert_eq!(first.target.name, "db", "{}", first.reason);
    assert!(to(first) > 2, "{}", first.reason);
    assert!(
        first
            .reason
            .contains("is at risk: the own work of db on its path grows"),
        "{}",
        first.reason
    );
    assert!(
        decisions.iter().all(|(_, d)| d.target.name == "db"),
        "the workers waiting on it are never scaled: {decisions:#?}"
    );
}

#[test]
fn a_slowdown_that_happened_is_not_growth() {
    // The database thirty times slower at once, then steady: the objective's 10 s target
    // holds, and nothing is at risk.
    let mut settings = settings();
    settings.objectives[0].target_ns = 10 * S;
    let mut e = engine_with(settings);
    run(&mut e, 0, &[HEALTHY; 60]);
    let slower = [Second {
        db_own: 300 * MS,
        ..HEALTHY
    }; 30];
    let decisions = run(&mut e, 60, &slower);
    assert!(decisions.is_empty(), "{decisions:#?}");
}

/// After a healthy minute, the database's own work is `db_own` per query and the workers'
/// wait grows by `wait_growth` each second: the database must be the only one scaled.
fn the_slow_database_is_scaled_not_the_workers(db_own: u64, wait_growth: u64) -> Decision {
    let mut e = engine();
    run(&mut e, 0, &[HEALTHY; 60]);
    let slow: Vec<Second> = (0..30)
        .map(|i| Second {
            db_own,
            worker_wait: wait_growth * (i + 1),
            ..HEALTHY
        })
        .collect();
    let decisions = run(&mut e, 60, &slow);
    let (_, first) = decisions.first().expect("a decision");
    assert_eq!(first.target.name, "db", "{}", first.reason);
    assert!(
        decisions.iter().all(|(_, d)| d.target.name == "db"),
        "the workers are never scaled: {decisions:#?}"
    );
    first.clone()
}

#[test]
fn a_slow_database_is_the_culprit_not_the_workers_waiting_on_it() {
    // The database thrashes: its own work grows; the workers hold their slots waiting for it,
    // so they queue too.
    let first = the_slow_database_is_scaled_not_the_workers(300 * MS, 200 * MS);
    assert!(to(&first) > 2, "{}", first.reason);
}

#[test]
fn workers_whose_queue_races_while_they_wait_on_a_slow_database_are_a_symptom() {
    // The same traffic; the database six times slower. The workers serve fewer requests a
    // second while their slots wait on it, so their queue grows fast (0.8 s a second, as if
    // five times the traffic arrived): the arrivals, not that growth, say whether they would
    // be overloaded with the database at its healthy speed.
    the_slow_database_is_scaled_not_the_workers(60 * MS, 800 * MS);
}

#[test]
fn a_queue_that_drains_by_itself_asks_for_nothing() {
    let mut e = engine();
    run(&mut e, 0, &[HEALTHY; 60]);
    // A ten-second burst the workers cannot serve: their queue grows by 200 ms a second.
    let burst: Vec<Second> = (0..10)
        .map(|i| Second {
            rps: 100,
            worker_wait: 200 * MS * (i + 1),
            ..HEALTHY
        })
        .collect();
    run(&mut e, 60, &burst);
    // Then the backlog shrinks by 200 ms a second at healthy traffic, and is gone.
    let mut after: Vec<Second> = (0..10)
        .map(|i| Second {
            worker_wait: 2000 * MS - 200 * MS * (i + 1),
            ..HEALTHY
        })
        .collect();
    after.extend([HEALTHY; 10]);
    let decisions = run(&mut e, 70, &after);
    // The evaluation in second t reads up to t - 5 (the completion wait): from t = 79 the last
    // five seconds hold only the draining queue.
    assert!(
        decisions.iter().all(|(t, _)| *t < 79),
        "nothing once the queue is seen draining: {decisions:#?}"
    );
}

/// Twenty seconds in which requests still reach the frontend at 50 a second, but it forwards
/// half of them and holds the rest, ten seconds' worth by the end. With `db_slow`, because the
/// database is slow (the workers wait on it and queue); without, for a cause outside the
/// workloads (a rate limit in front of the workers, say).
fn frontend_holds(e: &mut Engine, db_slow: bool) {
    run(e, 0, &[HEALTHY; 60]);
    let slow: Vec<Second> = (0..20)
        .map(|i| Second {
            rps: 25,
            frontend_wait: i * S / 2,
            db_own: if db_slow { 300 * MS } else { HEALTHY.db_own },
            worker_wait: if db_slow { 200 * MS * (i + 1) } else { 0 },
            ..HEALTHY
        })
        .collect();
    run(e, 60, &slow);
}

/// The frontend sends on what it held, at one and a half times
/// the traffic for twenty seconds (requests that reached it ten seconds ago, down to now), the
/// database's own work `db_own`; then all is healthy. Decisions from second 80.
fn frontend_sends_what_it_held(e: &mut Engine, db_own: u64) -> Vec<(u64, Decision)> {
    let mut drain: Vec<Second> = (0..20)
        .map(|i| Second {
            rps: 75,
            frontend_wait: 10 * S - i * S / 2,
            worker_wait: 300 * MS,
            db_own,
            ..HEALTHY
        })
        .collect();
    drain.extend([HEALTHY; 10]);
    run(e, 80, &drain)
}

#[test]
fn a_backlog_draining_through_a_saturated_service_asks_for_nothing() {
    let mut e = engine();
    frontend_holds(&mut e, true);
    // The workers pass the backlog at full capacity, their wait flat: more workers would be
    // wasted once it is through.
    let decisions = frontend_sends_what_it_held(&mut e, HEALTHY.db_own);
    assert!(
        decisions.iter().all(|(_, d)| d.target.name != "worker"),
        "{decisions:#?}"
    );
}

#[test]
fn a_database_slowed_by_a_backlog_the_entry_traffic_does_not_explain_is_not_scaled() {
    let mut e = engine();
    frontend_holds(&mut e, false);
    // The database twice as slow under the backlog; once it is through, back at its healthy
    // load.
    let decisions = frontend_sends_what_it_held(&mut e, 2 * HEALTHY.db_own);
    assert!(
        decisions.iter().all(|(_, d)| d.target.name != "db"),
        "{decisions:#?}"
    );
}

#[test]
fn a_database_slowed_by_the_backlog_of_workers_just_scaled_is_not_scaled() {
    let mut e = engine();
    run(&mut e, 0, &[HEALTHY; 60]);
    // The traffic doubled and the workers were given replicas: their queue now shrinks by a
    // tenth of a second each second, and the database is twice as slow while they pass it on.
    let drain: Vec<Second> = (0..15)
        .map(|i| Second {
            rps: 100,
            worker_pods: 4,
            worker_wait: 2000 * MS - 100 * MS * i,
            db_own: 20 * MS,
            ..HEALTHY
        })
        .collect();
    let decisions = run(&mut e, 60, &drain);
    assert!(
        decisions.iter().all(|(_, d)| d.target.name != "db"),
        "{decisions:#?}"
    );
}

#[test]
fn replicas_that_just_began_serving_are_given_a_window_before_sizing_again() {
    let mut e = engine();
    run(&mut e, 0, &[HEALTHY; 60]);
    // The database thrashes and the workers queue behind it.
    let slow = |db_pods, t: u64| Second {
        db_own: 300 * MS,
        db_pods,
        worker_wait: 200 * MS * (t - 59),
        ..HEALTHY
    };
    let mut t = 60;
    let first = loop {
        assert!(t < 90, "no decision");
        if let Some((_, d)) = run(&mut e, t, &[slow(2, t)]).pop() {
            break d;
        }
        t += 1;
    };
    assert_eq!(first.target.name, "db", "{}", first.reason);
    // The replicas asked for begin to serve; the window still holds the seconds before them,
    // at the old capacity, so sizing from it now would ask for as many again.
    let asked = to(&first);
    let next: Vec<Second> = (t + 1..t + 9).map(|t| slow(asked, t)).collect();
    let settling = run(&mut e, t + 1, &next);
    assert!(
        settling.iter().all(|(_, d)| to(d) <= asked),
        "asked for {asked} at {t}, then {settling:#?}"
    );
}

#[test]
fn a_breach_that_has_ended_asks_for_nothing_more() {
    let mut e = engine();
    run(&mut e, 0, &[HEALTHY; 60]);
    let slow = Second {
        db_own: 600 * MS,
        ..HEALTHY
    };
    let during = run(&mut e, 60, &[slow; 10]);
    assert!(
        during.iter().any(|(_, d)| d.target.name == "db"),
        "the slow database is scaled while it is slow: {during:#?}"
    );
    // Healthy again, and then the replicas asked for come up: the short window still holds
    // the slow seconds, but the last few are within budget.
    let mut after = vec![HEALTHY; 8];
    after.extend(
        [Second {
            db_pods: 4,
            ..HEALTHY
        }; 14],
    );
    let decisions = run(&mut e, 70, &after);
    assert!(
        decisions.iter().all(|(t, _)| *t < 78),
        "nothing once the last seconds are healthy: {decisions:#?}"
    );
}

/// An objective may be on an operation the request calls: the database's own SERVER spans,
/// judged on their duration, burn while the entry operation's lax objective does not.
#[test]
fn an_objective_on_a_call_burns_on_that_calls_spans() {
    let lax_entry = Objective {
        name: "cart".into(),
        service: "frontend".into(),
        operation: "GET /cart".into(),
        percentile: 99.0,
        target_ns: 10 * S,
    };
    let slow: Vec<Second> = (0..30)
        .map(|_| Second {
            db_own: 300 * MS,
            ..HEALTHY
        })
        .collect();

    let mut entry_only = engine_with(Settings {
        objectives: vec![lax_entry.clone()],
        ..settings()
    });
    run(&mut entry_only, 0, &[HEALTHY; 60]);
    assert!(run(&mut entry_only, 60, &slow).is_empty());

    let mut with_call = engine_with(Settings {
        objectives: vec![
            lax_entry,
            Objective {
                name: "select".into(),
                service: "db".into(),
                operation: "SELECT".into(),
                percentile: 99.0,
                target_ns: 100 * MS,
            },
        ],
        ..settings()
    });
    run(&mut with_call, 0, &[HEALTHY; 60]);
    let decisions = run(&mut with_call, 60, &slow);
    let (_, first) = decisions.first().expect("a decision");
    assert_eq!(first.rule, "select", "{}", first.reason);
    assert_eq!(first.target.name, "db", "{}", first.reason);
}

#[test]
fn evaluations_keep_to_the_interval_whenever_batches_arrive() {
    // Batches every 0.6 s: an evaluation is due every second, not a second after the batch
    // that ran the last one (which would make it one every 1.2 s).
    let mut e = engine();
    let mut out = Vec::new();
    for i in 0..100u64 {
        e.tick(EPOCH + i * 600 * MS, &mut out);
    }
    // 59.4 s of ticks, the first evaluation due a second after the first tick.
    assert_eq!(e.counters().evaluations, 59);
    // A gap skips the missed evaluations and returns to the grid.
    e.tick(EPOCH + 100 * S + 300 * MS, &mut out);
    e.tick(EPOCH + 100 * S + 900 * MS, &mut out);
    e.tick(EPOCH + 101 * S + 100 * MS, &mut out);
    assert_eq!(e.counters().evaluations, 61);
}
