//! Tests of the `latency_rules` processor: the sync engine on explicit timestamps, the config
//! diagnostics, the processor on tokio's paused clock, and property tests.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use tracescale_core::attributes;
use tracescale_core::component::{
    ComponentKind, ComponentTelemetry, Emitter, Processor, ProcessorContext,
};
use tracescale_core::config::{Built, ComponentId, build_from_toml};
use tracescale_core::health::Health;
use tracescale_core::registry;
use tracescale_core::signal::{Decision, ReplicaLimits, ScaleChange, Signal, Target, Traces};

use super::engine::test_support::{check_invariants, glob, latency, percentiles};
use super::engine::{Condition, Engine, EngineSettings, OperationMatcher, Rule, ScaleDown};

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

// ---------------------------------------------------------------------------------------------
// Helpers

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn double_kv(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(value)),
        }),
        ..Default::default()
    }
}

/// A span of `name` that ended at `end` and lasted `ms` milliseconds, in trace `trace`.
fn span(name: &str, end: u64, ms: u64) -> Span {
    span_in(name, end, ms, 1)
}

fn span_in(name: &str, end: u64, ms: u64, trace: u8) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![1; 8],
        name: name.into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: end - ms * MS,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

fn batch(service: &str, spans: Vec<Span>) -> Traces {
    Traces::new(vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn target(name: &str) -> Target {
    Target {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: name.into(),
        namespace: "shop".into(),
    }
}

/// A count rule on `service`/`operation` scaling deployment `target` by one.
fn rule(
    name: &str,
    service: &str,
    operation: &str,
    above_ms: u64,
    count: u32,
    window_s: u64,
) -> Rule {
    Rule {
        name: name.into(),
        service: service.into(),
        operation: OperationMatcher::parse(operation),
        attributes: Vec::new(),
        span_kind: None,
        above: Duration::from_millis(above_ms),
        condition: Condition::Count { count },
        window: Duration::from_secs(window_s),
        target: target("checkout"),
        change: ScaleChange::Step(1),
        limits: ReplicaLimits {
            min: Some(1),
            max: Some(10),
        },
        scale_down: None,
        inhibited_by: Vec::new(),
        inhibition_hold: Duration::from_secs(30),
        resources: None,
    }
}

fn settings() -> EngineSettings {
    EngineSettings {
        allowed_lateness: Duration::from_secs(5),
        stale_after: Duration::from_secs(60),
        max_operations: 100,
        max_window_samples: 10_000,
        event_clock: false,
    }
}

/// Observes `traces` at wall time `wall` and returns the decisions.
fn observe(engine: &mut Engine, traces: &Traces, wall: u64) -> Vec<Decision> {
    let mut out = Vec::new();
    engine.observe(traces, wall, &mut out);
    check_invariants(engine);
    out
}

fn tick(engine: &mut Engine, wall: u64) -> Vec<Decision> {
    let mut out = Vec::new();
    engine.tick(wall, &mut out);
    check_invariants(engine);
    out
}

/// `n` spans of `ms` milliseconds ending at `end`, in distinct traces.
fn spans(name: &str, n: usize, end: u64, ms: u64) -> Vec<Span> {
    (0..n)
        .map(|i| span_in(name, end, ms, i as u8 + 1))
        .collect()
}

fn window_count(engine: &Engine, rule: &str) -> usize {
    engine
        .rules()
        .find(|r| r.name == rule)
        .map(|r| r.window_count)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Engine: firing, windows, lateness

#[test]
fn n_minus_one_breaches_do_not_fire_and_n_do() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 20, 10)], settings());
    let t = T0;
    assert!(observe(&mut e, &batch("db", spans("INSERT", 19, t, 301)), t).is_empty());
    // Fast spans and spans at exactly the threshold are not breaches.
    assert!(observe(&mut e, &batch("db", spans("INSERT", 5, t, 300)), t).is_empty());
    let d = observe(&mut e, &batch("db", spans("INSERT", 1, t, 400)), t);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].rule, "slow");
    assert_eq!(d[0].change, ScaleChange::Step(1));
    assert_eq!(d[0].target, target("checkout"));
    assert_eq!(d[0].evidence.breaches, 20);
    assert_eq!(d[0].evidence.window_count, 25);
    assert_eq!(d[0].limits.max, Some(10));
    assert!(d[0].reason.contains("20 of 25 spans"), "{}", d[0].reason);
}

#[test]
fn an_inhibitor_in_breach_keeps_the_inhibited_rule_from_scaling() {
    // Workers queue because the database is slow: scale the database, not the workers.
    let mut queue = rule("worker-queue", "worker", "queue", 100, 5, 10);
    queue.target = target("worker");
    queue.inhibited_by = vec![1];
    let mut db = rule("db-slow", "db", "SELECT", 50, 5, 10);
    db.target = target("db");
    let mut e = Engine::new(vec![queue, db], settings());
    let t = T0;
    let mut both = batch("db", spans("SELECT", 5, t, 80));
    both.resource_spans
        .extend(batch("worker", spans("queue", 5, t, 400)).resource_spans);
    let d = observe(&mut e, &both, t);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].rule, "db-slow");
    assert_eq!(e.counters().inhibited, 1);
    // The database's window is clear, but its breach is recent: the queue it built up in front
    // of the workers is still draining, so the workers stay inhibited for `inhibition_hold`.
    let t = t + 11 * SEC;
    let d = observe(&mut e, &batch("worker", spans("queue", 5, t, 400)), t);
    assert!(d.is_empty(), "{d:?}");
    assert_eq!(e.counters().inhibited, 2);
    // Past the hold, queueing alone scales the workers.
    let t = t + 30 * SEC;
    let d = observe(&mut e, &batch("worker", spans("queue", 5, t, 400)), t);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].rule, "worker-queue");
    assert_eq!(d[0].target, target("worker"));
}

#[test]
fn on_the_event_clock_old_and_future_timestamps_are_just_time() {
    let s = EngineSettings {
        event_clock: true,
        ..settings()
    };
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 20, 10)], s);
    // Spans a day ahead of the wall clock (a simulation running fast) are not early.
    let future = T0 + 86_400 * SEC;
    assert!(observe(&mut e, &batch("db", spans("INSERT", 19, future, 500)), T0).is_empty());
    assert_eq!(e.counters().early, 0);
    assert_eq!(window_count(&e, "slow"), 19);
    // The wall clock does not slide the windows: a tick much later keeps them.
    assert!(tick(&mut e, T0 + 3600 * SEC).is_empty());
    assert_eq!(window_count(&e, "slow"), 19);
    assert_eq!(
        observe(
            &mut e,
            &batch("db", spans("INSERT", 1, future + SEC, 500)),
            T0
        )
        .len(),
        1
    );
}

#[test]
fn breaches_older_than_the_window_expire() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 20, 10)], settings());
    assert!(observe(&mut e, &batch("db", spans("INSERT", 19, T0, 500)), T0).is_empty());
    // 10 s later the first 19 have left the window: one more breach is 1, not 20.
    let t = T0 + 10 * SEC;
    assert!(observe(&mut e, &batch("db", spans("INSERT", 1, t, 500)), t).is_empty());
    assert_eq!(window_count(&e, "slow"), 1);
    // And on the engine clock alone, with no spans, the window empties.
    assert!(tick(&mut e, t + 20 * SEC).is_empty());
    assert_eq!(window_count(&e, "slow"), 0);
}

#[test]
fn breaches_just_inside_the_window_count() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 20, 10)], settings());
    assert!(observe(&mut e, &batch("db", spans("INSERT", 19, T0, 500)), T0).is_empty());
    let t = T0 + 10 * SEC - 1;
    assert_eq!(
        observe(&mut e, &batch("db", spans("INSERT", 1, t, 500)), t).len(),
        1
    );
}

#[test]
fn late_spans_inside_the_bound_count_and_later_ones_are_dropped_and_counted() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 3, 30)], settings());
    let now = T0 + 100 * SEC;
    assert!(observe(&mut e, &batch("db", vec![span("INSERT", now, 500)]), now).is_empty());
    // 4 s behind the event clock: inside the 5 s bound, counted (and the ring stays sorted).
    let d = observe(
        &mut e,
        &batch("db", vec![span("INSERT", now - 4 * SEC, 500)]),
        now,
    );
    assert!(d.is_empty());
    assert_eq!(window_count(&e, "slow"), 2);
    // 6 s behind: dropped and counted, even though it would sit inside the 30 s window.
    let d = observe(
        &mut e,
        &batch("db", vec![span("INSERT", now - 6 * SEC, 500)]),
        now,
    );
    assert!(d.is_empty());
    assert_eq!(window_count(&e, "slow"), 2);
    assert_eq!(e.counters().late, 1);
    // Early spans (a host clock ahead by more than the bound) are dropped too.
    let ahead = now + 6 * SEC;
    observe(&mut e, &batch("db", vec![span("INSERT", ahead, 500)]), now);
    assert_eq!(e.counters().early, 1);
    assert_eq!(window_count(&e, "slow"), 2);
    let d = observe(
        &mut e,
        &batch("db", vec![span("INSERT", now - 2 * SEC, 500)]),
        now,
    );
    assert_eq!(d.len(), 1);
}

#[test]
fn the_event_clock_follows_span_end_times_and_the_wall_clock_in_silence() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 3, 10)], settings());
    // Spans arrive 3 s after they ended: the clock follows them, not the wall clock.
    let wall = T0 + 3 * SEC;
    observe(&mut e, &batch("db", vec![span("INSERT", T0, 500)]), wall);
    assert_eq!(e.clock(), T0);
    // In silence it trails the wall clock by `allowed_lateness`.
    tick(&mut e, T0 + 60 * SEC);
    assert_eq!(e.clock(), T0 + 55 * SEC);
}

#[test]
fn invalid_spans_are_counted_and_ignored() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 1, 10)], settings());
    let mut bad = span("INSERT", T0, 500);
    bad.end_time_unix_nano = bad.start_time_unix_nano - 1;
    let mut zero = span("INSERT", T0, 500);
    zero.end_time_unix_nano = 0;
    assert!(observe(&mut e, &batch("db", vec![bad, zero]), T0).is_empty());
    assert_eq!(e.counters().invalid, 2);
    assert_eq!(e.operation_total("db", "INSERT"), None);
}

// ---------------------------------------------------------------------------------------------
// Engine: matching

#[test]
fn rules_match_service_operation_glob_attributes_and_kind() {
    let mut exact = rule("exact", "checkout", "GET /cart", 100, 1, 10);
    exact.attributes = vec![("http.route".into(), "/cart".into())];
    exact.target = target("a");
    let mut globbed = rule("glob", "checkout", "GET *", 100, 1, 10);
    globbed.span_kind = Some(SpanKind::Client as i32);
    globbed.target = target("b");
    let mut e = Engine::new(vec![exact, globbed], settings());

    // Wrong service, missing attribute, wrong kind: nothing.
    assert!(
        observe(
            &mut e,
            &batch("other", vec![span("GET /cart", T0, 500)]),
            T0
        )
        .is_empty()
    );
    assert!(
        observe(
            &mut e,
            &batch("checkout", vec![span("GET /cart", T0, 500)]),
            T0
        )
        .is_empty()
    );

    let mut s = span("GET /cart", T0, 500);
    s.attributes = vec![string_kv("http.route", "/cart")];
    let d = observe(&mut e, &batch("checkout", vec![s]), T0);
    assert_eq!(
        d.iter().map(|d| d.rule.as_str()).collect::<Vec<_>>(),
        ["exact"]
    );

    // A client span of an operation first seen now feeds the glob rule.
    let mut s = span("GET /orders", T0, 500);
    s.kind = SpanKind::Client as i32;
    let d = observe(&mut e, &batch("checkout", vec![s]), T0);
    assert_eq!(
        d.iter().map(|d| d.rule.as_str()).collect::<Vec<_>>(),
        ["glob"]
    );
}

#[test]
fn glob_patterns() {
    assert!(glob("*", ""));
    assert!(glob("*", "anything"));
    assert!(glob("GET *", "GET /cart"));
    assert!(glob("*payments", "INSERT payments"));
    assert!(glob("a*b*c", "aXbYc"));
    assert!(glob("a*b*c", "abc"));
    assert!(!glob("a*b*c", "acb"));
    assert!(!glob("GET *", "POST /cart"));
    assert!(glob("**", "x"));
    assert!(glob("é*", "éa"));
}

#[test]
fn glob_rules_still_match_when_max_operations_is_reached() {
    let mut r = rule("glob", "svc", "op-*", 100, 2, 10);
    r.target = target("a");
    let mut e = Engine::new(
        vec![r],
        EngineSettings {
            max_operations: 1,
            ..settings()
        },
    );
    observe(&mut e, &batch("svc", vec![span("op-1", T0, 500)]), T0);
    assert_eq!(e.operation_count(), 1);
    // op-2 gets no statistics slot, but the glob rule still sees it.
    let d = observe(&mut e, &batch("svc", vec![span("op-2", T0, 500)]), T0);
    assert_eq!(d.len(), 1);
    assert_eq!(e.counters().operations_overflow, 1);
    // Other services are counted as overflow only.
    observe(&mut e, &batch("elsewhere", vec![span("x", T0, 5)]), T0);
    assert_eq!(e.counters().operations_overflow, 2);
    assert_eq!(e.operation_count(), 1);
}

#[test]
fn operation_statistics_count_every_service_and_operation() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 20, 10)], settings());
    observe(&mut e, &batch("db", spans("INSERT", 3, T0, 2)), T0);
    observe(&mut e, &batch("web", spans("GET /", 2, T0, 700)), T0);
    assert_eq!(e.operation_total("db", "INSERT"), Some(3));
    assert_eq!(e.operation_total("web", "GET /"), Some(2));
    let mut drained = Vec::new();
    e.drain_operation_stats(|slot, service, operation, counts| {
        drained.push((slot, service.to_string(), operation.to_string(), *counts));
    });
    assert_eq!(drained.len(), 2);
    let (_, _, _, db) = drained.iter().find(|d| d.1 == "db").unwrap();
    assert_eq!(db.count, 3);
    assert_eq!(db.buckets[1], 3, "2 ms falls in the 2.5 ms bucket");
    assert_eq!(db.sum_nanos, 6 * MS);
    let (_, _, _, web) = drained.iter().find(|d| d.1 == "web").unwrap();
    assert_eq!(web.buckets[9], 2, "700 ms falls in the 1 s bucket");
    // Drained counts reset; totals do not.
    let mut again = 0;
    e.drain_operation_stats(|_, _, _, _| again += 1);
    assert_eq!(again, 0);
    assert_eq!(e.operation_total("db", "INSERT"), Some(3));
}

#[test]
fn a_full_window_evicts_its_oldest_samples_and_counts_them() {
    let mut e = Engine::new(
        vec![rule("slow", "db", "INSERT", 300, 3, 60)],
        EngineSettings {
            max_window_samples: 4,
            ..settings()
        },
    );
    for i in 0..6 {
        let t = T0 + i * SEC;
        observe(&mut e, &batch("db", vec![span("INSERT", t, 10)]), t);
    }
    let status = e.rules().next().unwrap();
    assert_eq!(status.window_count, 4);
    assert_eq!(status.evicted, 2);
}

// ---------------------------------------------------------------------------------------------
// Engine: re-arming, percentiles, evidence

#[test]
fn a_fired_rule_rearms_only_once_its_breaches_left_the_window() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 3, 10)], settings());
    assert_eq!(
        observe(&mut e, &batch("db", spans("INSERT", 3, T0, 500)), T0).len(),
        1
    );
    // Breaches persist: no decision while the ones that fired are still in the window.
    for s in 1..10 {
        let t = T0 + s * SEC;
        assert!(observe(&mut e, &batch("db", spans("INSERT", 3, t, 500)), t).is_empty());
        assert!(tick(&mut e, t).is_empty());
    }
    // At T0 + 10 s the first breaches leave; the window holds 27 newer ones, and it fires again.
    let t = T0 + 10 * SEC;
    let d = tick(&mut e, t + 5 * SEC);
    assert_eq!(d.len(), 1);
    assert_eq!(e.rules().next().unwrap().scaled_up, 2);
}

#[test]
fn percentile_rules_need_min_samples_and_fire_on_the_percentile() {
    let mut r = rule("p90", "db", "INSERT", 300, 1, 10);
    r.condition = Condition::Percentile {
        percentile: 90.0,
        min_samples: 10,
    };
    let mut e = Engine::new(vec![r], settings());
    // 5 slow spans but only 5 samples: below min_samples.
    assert!(observe(&mut e, &batch("db", spans("INSERT", 5, T0, 500)), T0).is_empty());
    // 85 fast ones: p90 of 90 samples is rank 81, a fast one.
    assert!(observe(&mut e, &batch("db", spans("INSERT", 85, T0, 10)), T0).is_empty());
    // 5 slow more: 10 of 95 slow, rank 86 is slow.
    let d = observe(&mut e, &batch("db", spans("INSERT", 5, T0, 500)), T0);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].reason.starts_with("p90 of db INSERT is 500ms"),
        "{}",
        d[0].reason
    );
}

#[test]
fn evidence_carries_percentiles_the_slowest_traces_and_the_anomaly_score() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 3, 10)], settings());
    // 100 spans of 1..=100 ms in distinct traces, then three slow ones, two in one trace.
    let mut all: Vec<Span> = (1..=100u64)
        .map(|ms| span_in("INSERT", T0, ms, ms as u8))
        .collect();
    let mut a = span_in("INSERT", T0, 900, 200);
    a.attributes = vec![double_kv(attributes::ANOMALY_SCORE, 0.93)];
    let mut b = span_in("INSERT", T0, 800, 200);
    b.attributes = vec![double_kv(attributes::ANOMALY_SCORE, 0.97)];
    let c = span_in("INSERT", T0, 700, 201);
    all.extend([a, b, c]);
    let d = observe(&mut e, &batch("db", all), T0);
    assert_eq!(d.len(), 1);
    let ev = &d[0].evidence;
    assert_eq!(ev.window, Duration::from_secs(10));
    assert_eq!(ev.window_count, 103);
    assert_eq!(ev.breaches, 3);
    assert_eq!(ev.p50, Duration::from_millis(52));
    assert_eq!(ev.p95, Duration::from_millis(98));
    assert_eq!(ev.p99, Duration::from_millis(800));
    // Slowest first, one per trace: 200 (900 ms), 201 (700 ms), then 100, 99, 98 ms.
    let hex = |b: u8| format!("{b:02x}").repeat(16);
    assert_eq!(
        ev.exemplars,
        [hex(200), hex(201), hex(100), hex(99), hex(98)]
    );
    let score = ev.anomaly_score.unwrap();
    assert!((score - 0.97).abs() < 1e-6, "{score}");
    assert_eq!(d[0].timestamp_unix_nano, T0);
}

#[test]
fn evidence_has_no_anomaly_score_when_spans_were_not_tagged() {
    let mut e = Engine::new(vec![rule("slow", "db", "INSERT", 300, 1, 10)], settings());
    let d = observe(&mut e, &batch("db", spans("INSERT", 1, T0, 500)), T0);
    assert_eq!(d[0].evidence.anomaly_score, None);
}

// ---------------------------------------------------------------------------------------------
// Engine: conflation

#[test]
fn decisions_for_one_target_in_one_cycle_conflate_and_the_largest_scale_up_wins() {
    let mut small = rule("small", "db", "INSERT", 300, 1, 10);
    small.change = ScaleChange::Step(1);
    let mut big = rule("big", "db", "SELECT", 300, 1, 10);
    big.change = ScaleChange::Step(3);
    let mut elsewhere = rule("elsewhere", "db", "DELETE", 300, 1, 10);
    elsewhere.target = target("other");
    let mut e = Engine::new(vec![small, big, elsewhere], settings());
    let traces = batch(
        "db",
        vec![
            span("INSERT", T0, 500),
            span("SELECT", T0, 500),
            span("DELETE", T0, 500),
        ],
    );
    let d = observe(&mut e, &traces, T0);
    assert_eq!(d.len(), 2);
    let checkout = d.iter().find(|d| d.target == target("checkout")).unwrap();
    assert_eq!(checkout.rule, "big");
    assert_eq!(checkout.change, ScaleChange::Step(3));
    assert!(
        checkout.reason.ends_with("(conflated with small)"),
        "{}",
        checkout.reason
    );
    assert_eq!(e.counters().conflated, 1);
    // The loser spent its breaches too: it does not fire on the next cycle.
    assert!(tick(&mut e, T0 + SEC).is_empty());
}

#[test]
fn an_absolute_scale_up_beats_a_step() {
    let mut step = rule("step", "db", "INSERT", 300, 1, 10);
    step.change = ScaleChange::Step(5);
    let mut to = rule("to", "db", "SELECT", 300, 1, 10);
    to.change = ScaleChange::To(4);
    let mut e = Engine::new(vec![step, to], settings());
    let d = observe(
        &mut e,
        &batch("db", vec![span("INSERT", T0, 500), span("SELECT", T0, 500)]),
        T0,
    );
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].change, ScaleChange::To(4));
}

fn scale_down(below_ms: u64, for_s: u64) -> Option<ScaleDown> {
    Some(ScaleDown {
        below: Duration::from_millis(below_ms),
        period: Duration::from_secs(for_s),
        step: 1,
    })
}

#[test]
fn a_scale_down_is_dropped_when_a_scale_up_for_the_target_exists_in_the_cycle() {
    // `up` fires at a tick, when its fast samples expire and its p50 turns slow; `down` has been
    // quiet for exactly its period at that same tick.
    let mut up = rule("up", "db", "INSERT", 300, 1, 10);
    up.condition = Condition::Percentile {
        percentile: 50.0,
        min_samples: 1,
    };
    let mut down = rule("down", "db", "SELECT", 300, 1_000, 10);
    down.scale_down = scale_down(100, 30);
    let mut e = Engine::new(vec![up, down], settings());
    let wall = |s: u64| T0 + s * SEC;
    // Start at 0 s, and `down`'s spans from then on: its calm is observed to 30 s.
    assert!(tick(&mut e, wall(0)).is_empty());
    for s in 0..=30 {
        let mut spans = vec![span("SELECT", wall(s), 10)];
        if s == 15 {
            spans.extend(self::spans("INSERT", 3, wall(s), 10));
        }
        if s == 22 {
            spans.extend(self::spans("INSERT", 2, wall(s), 500));
        }
        assert!(
            observe(&mut e, &batch("db", spans), wall(s)).is_empty(),
            "at {s}"
        );
    }
    let d = tick(&mut e, wall(35));
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].rule, "up");
    assert!(
        d[0].reason.ends_with("(conflated with down)"),
        "{}",
        d[0].reason
    );
}

// ---------------------------------------------------------------------------------------------
// Engine: the way down, staleness

/// A rule that never scales up in these tests but scales down after `for_s` of fast spans.
fn down_rule(for_s: u64) -> Rule {
    let mut r = rule("db", "db", "INSERT", 300, 1_000, 10);
    r.scale_down = scale_down(100, for_s);
    r
}

#[test]
fn scale_down_comes_after_the_stabilisation_period_only() {
    let mut e = Engine::new(vec![down_rule(60)], settings());
    // Fast spans every second; the stabilisation period starts with the engine.
    let mut downs = Vec::new();
    for s in 0..=200u64 {
        let t = T0 + s * SEC;
        observe(&mut e, &batch("db", vec![span("INSERT", t, 20)]), t);
        // A span at the threshold (not below it) restarts the period.
        if s == 100 {
            observe(&mut e, &batch("db", vec![span("INSERT", t, 100)]), t);
        }
        for d in tick(&mut e, t) {
            assert_eq!(d.change, ScaleChange::Step(-1));
            assert_eq!(d.limits.min, Some(1));
            downs.push(s);
        }
    }
    // The first period starts with the engine and the first span, at 0 s, and ends at 60 s; the
    // next, due at 120 s, is cut short by the slow span at 100 s and ends at 160 s.
    assert_eq!(downs, [60, 160]);
}

#[test]
fn a_stale_operation_holds_and_says_so() {
    let mut e = Engine::new(
        vec![down_rule(60)],
        EngineSettings {
            stale_after: Duration::from_secs(20),
            ..settings()
        },
    );
    // 10 s of fast spans, then silence.
    for s in 0..10u64 {
        let t = T0 + s * SEC;
        observe(&mut e, &batch("db", vec![span("INSERT", t, 20)]), t);
        assert!(tick(&mut e, t).is_empty());
    }
    assert!(!e.take_stale_change());
    let mut stale_at = None;
    for s in 10..300u64 {
        // No scale-down ever: a missing signal is not a fast one.
        assert!(tick(&mut e, T0 + s * SEC).is_empty(), "at {s}");
        if stale_at.is_none() && e.rules().next().unwrap().stale {
            stale_at = Some(s);
            assert!(e.take_stale_change());
        }
    }
    // The last span arrived at 9 s: stale `stale_after` later, whatever `allowed_lateness` is.
    assert_eq!(stale_at, Some(29));
    // When spans come back the rule is fresh again, and the period restarts with them.
    let t = T0 + 300 * SEC;
    observe(&mut e, &batch("db", vec![span("INSERT", t, 20)]), t);
    assert!(tick(&mut e, t).is_empty());
    assert!(!e.rules().next().unwrap().stale);
    assert!(e.take_stale_change());
}

#[test]
fn a_rule_that_never_saw_a_span_goes_stale_and_holds() {
    let mut e = Engine::new(
        vec![down_rule(10)],
        EngineSettings {
            stale_after: Duration::from_secs(20),
            ..settings()
        },
    );
    for s in 0..60u64 {
        assert!(tick(&mut e, T0 + s * SEC).is_empty());
    }
    assert!(e.rules().next().unwrap().stale);
}

#[test]
fn a_stale_rule_holds_the_scale_down_of_another_rule_on_its_target() {
    let mut quiet = rule("quiet", "db", "SELECT", 300, 1_000, 10);
    quiet.scale_down = scale_down(100, 100_000);
    let mut e = Engine::new(
        vec![down_rule(30), quiet],
        EngineSettings {
            stale_after: Duration::from_secs(20),
            ..settings()
        },
    );
    for s in 0..120u64 {
        let t = T0 + s * SEC;
        observe(&mut e, &batch("db", vec![span("INSERT", t, 20)]), t);
        assert!(tick(&mut e, t).is_empty(), "at {s}");
    }
    assert!(e.counters().held > 0);
}

// ---------------------------------------------------------------------------------------------
// Config

fn factory() -> &'static tracescale_core::registry::ComponentFactory {
    registry::lookup(ComponentKind::Processor, "latency_rules")
        .expect("latency_rules is registered")
}

const FULL: &str = r#"
interval = "1s"
allowed_lateness = "5s"
stale_after = "1m"
passthrough = true
max_operations = 1000
max_window_samples = 10000

[[rules]]
name = "payments-db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 20
window = "10s"
scale = { target = "statefulset/payments-db", namespace = "shop", step = 1, max = 5 }

[[rules]]
name = "checkout-p99"
service = "checkout"
operation = "POST *"
attributes = { "http.route" = "/cart" }
span_kind = "server"
percentile = 99
above = "800ms"
min_samples = 50
window = "30s"
scale = { api_version = "argoproj.io/v1alpha1", kind = "Rollout", name = "checkout", namespace = "shop", to = 6, min = 2, max = 10 }
scale_down = { below = "200ms", for = "5m", step = 1 }
"#;

fn build(toml: &str) -> Result<Box<dyn Processor>, String> {
    match build_from_toml(factory(), "latency_rules", toml) {
        Ok(Built::Processor(p)) => Ok(p),
        Ok(_) => Err("not a processor".into()),
        Err(e) => Err(e.render(false)),
    }
}

fn build_error(toml: &str) -> String {
    match build(toml) {
        Ok(_) => panic!("expected an error for:\n{toml}"),
        Err(e) => e,
    }
}

#[test]
fn the_full_example_builds() {
    let p = build(FULL).unwrap();
    assert_eq!(p.tick_interval(), Some(Duration::from_secs(1)));
    build("").unwrap();
}

const GOOD_RULE: &str = r#"
[[rules]]
name = "a"
service = "svc"
operation = "op"
above = "300ms"
count = 5
window = "10s"
scale = { target = "deployment/svc", namespace = "shop" }
"#;

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    let e = build_error(&GOOD_RULE.replace("window =", "windw ="));
    // The caret points at the key: line 8, column 1 of the table.
    assert!(e.contains("<inline>:8:1"), "{e}");
    assert!(e.contains("unknown key `windw`"), "{e}");
    assert!(e.contains("did you mean `window`"), "{e}");
    let e =
        build_error(&GOOD_RULE.replace("namespace = \"shop\"", "namespace = \"shop\", stpe = 1"));
    assert!(e.contains("unknown key `stpe`"), "{e}");
    let e = build_error(&format!("intervl = \"1s\"\n{GOOD_RULE}"));
    assert!(e.contains("unknown key `intervl`"), "{e}");
}

#[test]
fn semantic_errors_name_their_key_path_and_are_all_reported() {
    let text = format!(
        "interval = \"2s\"\n{GOOD_RULE}{}{}{}",
        // rules[1]: empty matchers, window shorter than interval, min > max.
        GOOD_RULE
            .replace("name = \"a\"", "name = \"b\"")
            .replace("service = \"svc\"", "service = \"\"")
            .replace("operation = \"op\"", "operation = \"\"")
            .replace("window = \"10s\"", "window = \"1s\"")
            .replace(
                "namespace = \"shop\"",
                "namespace = \"shop\", min = 5, max = 3"
            ),
        // rules[2]: duplicate name, unknown short kind.
        GOOD_RULE.replace("deployment/svc", "daemonset/svc"),
        // rules[3]: both conditions; scale-down above the threshold.
        GOOD_RULE.replace("name = \"a\"", "name = \"d\"").replace(
            "count = 5",
            "count = 5\npercentile = 99\nscale_down = { below = \"1s\", for = \"1m\" }"
        ),
    );
    let e = build_error(&text);
    for expected in [
        "rules[1].service: must name a service",
        "rules[1].operation: must name an operation",
        "rules[1].window: must be at least `interval` (2s)",
        "rules[1].scale.min: min (5) is greater than max (3)",
        "rules[2].name: duplicate rule name \"a\": rules[0] has it already",
        "rules[2].scale.target: unknown kind \"daemonset\"",
        "rules[3].percentile: set either `count` or `percentile`, not both",
        "rules[3].scale_down.below: must not exceed `above` (300ms)",
    ] {
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
    // Positions: the rendered diagnostic points into the file.
    assert!(e.contains("<inline>:"), "{e}");
}

#[test]
fn more_semantic_errors() {
    for (from, to, expected) in [
        ("count = 5", "", "rules[0]: needs a condition"),
        (
            "count = 5",
            "count = 0",
            "rules[0].count: must be at least 1",
        ),
        (
            "count = 5",
            "count = 20000",
            "rules[0].count: cannot exceed `max_window_samples`",
        ),
        (
            "count = 5",
            "percentile = 0",
            "rules[0].percentile: must be greater than 0",
        ),
        (
            "count = 5",
            "count = 5\nmin_samples = 3",
            "rules[0].min_samples: only applies",
        ),
        (
            "above = \"300ms\"",
            "above = \"0s\"",
            "rules[0].above: must be greater than 0",
        ),
        (
            "target = \"deployment/svc\", ",
            "",
            "rules[0].scale: needs a target",
        ),
        (
            "deployment/svc",
            "deployment",
            "rules[0].scale.target: write it as \"kind/name\"",
        ),
        (
            "target = \"deployment/svc\"",
            "target = \"deployment/svc\", kind = \"Rollout\"",
            "set either `target",
        ),
        (
            "target = \"deployment/svc\"",
            "api_version = \"apps/v1\", kind = \"Deployment\"",
            "the full form needs",
        ),
        (
            "namespace = \"shop\"",
            "namespace = \"\"",
            "rules[0].scale.namespace: must not be empty",
        ),
        (
            "namespace = \"shop\"",
            "namespace = \"shop\", step = 0",
            "rules[0].scale.step: must be at least 1",
        ),
        (
            "namespace = \"shop\"",
            "namespace = \"shop\", step = 1, to = 3",
            "rules[0].scale.to: set either",
        ),
        (
            "namespace = \"shop\"",
            "namespace = \"shop\", to = 30, max = 10",
            "rules[0].scale.to: must lie between",
        ),
        (
            "operation = \"op\"",
            "operation = \"op\"\nattributes = { \"\" = \"x\" }",
            "attribute names must not be empty",
        ),
        (
            "operation = \"op\"",
            "operation = \"op\"\nspan_kind = \"sever\"",
            "did you mean `server`",
        ),
        (
            "window = \"10s\"",
            "window = \"10s\"\nscale_down = { below = \"100ms\", for = \"10ms\" }",
            "rules[0].scale_down.for: must be at least `interval`",
        ),
        (
            "window = \"10s\"",
            "window = \"10 parsecs\"",
            "<inline>:8:10",
        ),
    ] {
        let text = GOOD_RULE.replace(from, to);
        let e = build_error(&text);
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
    for (top, expected) in [
        ("interval = \"1ms\"", "interval: must be at least 10ms"),
        (
            "stale_after = \"100ms\"",
            "stale_after: must be at least `interval`",
        ),
        (
            "max_window_samples = 0",
            "max_window_samples: must be between 1",
        ),
        (
            "max_operations = 1000000",
            "max_operations: must be at most",
        ),
    ] {
        let e = build_error(&format!("{top}\n{GOOD_RULE}"));
        assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
    }
}

#[test]
fn every_toml_block_of_the_readme_builds() {
    let readme = include_str!("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => current = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert_eq!(blocks.len(), 2, "a minimal and a full example");
    for block in blocks {
        let doc: toml::Table = toml::from_str(&block).unwrap();
        let processors = doc["processors"].as_table().unwrap();
        assert_eq!(processors.len(), 1);
        let id = processors.keys().next().unwrap();
        assert!(id.starts_with("latency_rules"));
        // The component's own table: drop its header, and root its rules.
        let quoted = if id.contains('/') {
            format!("\"{id}\"")
        } else {
            id.clone()
        };
        let text = block
            .replace(&format!("[processors.{quoted}]\n"), "")
            .replace(&format!("[[processors.{quoted}.rules]]"), "[[rules]]");
        assert!(!text.contains("[processors"), "{text}");
        if let Err(e) = build_from_toml(factory(), id, &text) {
            panic!("[processors.{id}] does not build:\n{}", e.render(false));
        }
    }
    // Every key of the config tables is documented.
    for key in tracescale_core::config::field_names::<super::LatencyRulesConfig>() {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "{key} is not documented"
        );
    }
}

#[test]
fn short_targets_map_to_their_api_kinds() {
    for short in ["deployment/x", "statefulset/x", "ReplicaSet/x"] {
        build(&GOOD_RULE.replace("deployment/svc", short)).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The processor, on tokio's paused clock

const PROCESSOR: &str = r#"
interval = "1s"
allowed_lateness = "5s"
stale_after = "30s"

[[rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 3
window = "10s"
scale = { target = "statefulset/payments-db", namespace = "shop", step = 1, max = 5 }
scale_down = { below = "100ms", for = "1m", step = 1 }
"#;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap()
}

fn context(health: &Health) -> ProcessorContext {
    let id = ComponentId::parse("latency_rules").unwrap();
    ProcessorContext {
        telemetry: ComponentTelemetry::new(ComponentKind::Processor, &id),
        health: health.handle("processor/scaling/latency_rules"),
        pipeline: "scaling".into(),
        id,
    }
}

fn decisions(out: &mut Emitter) -> (Vec<Decision>, usize) {
    let mut decisions = Vec::new();
    let mut spans = 0;
    for signal in out.take() {
        match signal {
            Signal::Decisions(d) => decisions.extend(d),
            Signal::Traces(t) => spans += t.span_count(),
        }
    }
    (decisions, spans)
}

/// A batch of `n` payments-db spans of `ms` that ended `ago` before the processor's clock.
fn db_batch(base: u64, n: usize, ms: u64) -> Signal {
    Signal::Traces(batch("payments-db", spans("INSERT payments", n, base, ms)))
}

#[tokio::test(start_paused = true)]
async fn the_processor_fires_on_arrival_and_passes_traces_on() {
    let health = Health::new();
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&health)).await.unwrap();
    let base = unix_now();
    let mut out = Emitter::new();
    p.process(db_batch(base, 2, 500), &mut out).await.unwrap();
    let (d, spans) = decisions(&mut out);
    assert!(d.is_empty());
    assert_eq!(spans, 2);
    p.process(db_batch(base, 1, 500), &mut out).await.unwrap();
    let (d, spans) = decisions(&mut out);
    assert_eq!(d.len(), 1);
    assert_eq!(spans, 1);
    assert_eq!(d[0].target.kind, "StatefulSet");
    assert_eq!(d[0].target.to_string(), "shop/statefulset/payments-db");
    assert_eq!(
        d[0].limits,
        ReplicaLimits {
            min: Some(1),
            max: Some(5)
        }
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    p.shutdown(&mut out, deadline).await.unwrap();
    p.shutdown(&mut out, deadline).await.unwrap();
    assert!(out.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn refused_spans_count_through_the_tap_and_a_retry_counts_once() {
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    let tap = p.tap().expect("the processor offers a tap by default");
    let base = unix_now();
    let batch_of_two = db_batch(base, 2, 500);
    tap.refused(&batch_of_two);
    // The client retries: refused again, then let in.
    tap.refused(&batch_of_two);
    let mut out = Emitter::new();
    p.process(batch_of_two, &mut out).await.unwrap();
    let (d, spans) = decisions(&mut out);
    assert!(
        d.is_empty(),
        "two breaches counted once each stay below count = 3"
    );
    assert_eq!(spans, 2, "the accepted batch still passes on");

    // A third breach that is only ever refused: the rule fires, and since a tap cannot emit,
    // the decision leaves with the next tick.
    let third = Signal::Traces(batch(
        "payments-db",
        vec![span_in("INSERT payments", base, 500, 9)],
    ));
    tap.refused(&third);
    tokio::time::advance(Duration::from_secs(1)).await;
    p.tick(&mut out).await.unwrap();
    let (d, _) = decisions(&mut out);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].target.to_string(), "shop/statefulset/payments-db");
    assert_eq!(d[0].evidence.breaches, 3);
}

#[tokio::test]
async fn observe_refused_false_offers_no_tap() {
    let p = build(&format!("observe_refused = false\n{PROCESSOR}")).unwrap();
    assert!(p.tap().is_none());
    assert!(build_error("max_refused_ids = 0").contains("max_refused_ids"));
}

#[tokio::test(start_paused = true)]
async fn on_event_time_scale_downs_follow_span_time_not_the_wall_clock() {
    let mut p = build(&format!("clock = \"event\"\n{PROCESSOR}")).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    // A minute and a half of calm, fast spans, replayed in an instant of wall time, with no
    // tick at all: the scale-down (below 100 ms for 1 m) is decided as the spans cross it.
    let base = unix_now();
    let mut out = Emitter::new();
    let mut downs = Vec::new();
    for second in 0..90 {
        p.process(db_batch(base + second * SEC, 5, 20), &mut out)
            .await
            .unwrap();
        let (d, _) = decisions(&mut out);
        downs.extend(d.into_iter().map(|d| (second, d.change)));
    }
    assert_eq!(downs.len(), 1, "{downs:?}");
    let (second, change) = downs[0];
    assert_eq!(change, ScaleChange::Step(-1));
    assert!(
        (60..=62).contains(&second),
        "decided at {second} s of span time"
    );
    // The wall-clock tick evaluates nothing on event time.
    tokio::time::advance(Duration::from_secs(3600)).await;
    p.tick(&mut out).await.unwrap();
    assert!(decisions(&mut out).0.is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_passthrough_only_decisions_leave() {
    let mut p = build(&format!("passthrough = false\n{PROCESSOR}")).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    let mut out = Emitter::new();
    p.process(db_batch(unix_now(), 3, 500), &mut out)
        .await
        .unwrap();
    let (d, spans) = decisions(&mut out);
    assert_eq!((d.len(), spans), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn windows_slide_on_the_engine_clock() {
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    let base = unix_now();
    let mut out = Emitter::new();
    p.process(db_batch(base, 2, 500), &mut out).await.unwrap();
    // 20 s pass with no spans: the two breaches have left the window.
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(1)).await;
        p.tick(&mut out).await.unwrap();
    }
    let now = base + 20 * SEC;
    p.process(db_batch(now, 1, 500), &mut out).await.unwrap();
    assert!(decisions(&mut out).0.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_processor_scales_down_after_the_period_and_a_stale_operation_holds_in_readyz() {
    let health = Health::new();
    health.set_phase(tracescale_core::health::Phase::Running);
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&health)).await.unwrap();
    let base = unix_now();
    let mut out = Emitter::new();
    let mut downs = Vec::new();
    // Two minutes of fast spans: one scale-down per minute-long period.
    for s in 0..=120u64 {
        p.process(db_batch(base + s * SEC, 1, 20), &mut out)
            .await
            .unwrap();
        p.tick(&mut out).await.unwrap();
        let (d, _) = decisions(&mut out);
        downs.extend(d.iter().map(|d| (s, d.change)));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(downs.len(), 2, "{downs:?}");
    assert!(downs.iter().all(|(_, c)| *c == ScaleChange::Step(-1)));
    // Not before a whole minute of calm was seen, from the start.
    assert_eq!((downs[0].0, downs[1].0), (60, 120), "{downs:?}");

    // Then silence: the rule goes stale, holds, and /readyz says so without going unready.
    for _ in 0..180 {
        p.tick(&mut out).await.unwrap();
        assert!(decisions(&mut out).0.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let readiness = health.readiness();
    assert!(readiness.ready);
    let status = &readiness.components["processor/scaling/latency_rules"];
    assert!(status.ready);
    let detail = status.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("db-slow") && detail.contains("stale"),
        "{detail}"
    );

    // Spans again: the detail clears.
    let now = unix_now() + 300 * SEC;
    p.process(db_batch(now, 1, 20), &mut out).await.unwrap();
    p.tick(&mut out).await.unwrap();
    let readiness = health.readiness();
    assert_eq!(
        readiness.components["processor/scaling/latency_rules"].detail,
        None
    );
}

#[tokio::test(start_paused = true)]
async fn decisions_batches_pass_through_untouched() {
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    let mut out = Emitter::new();
    let d = Decision {
        target: target("x"),
        change: ScaleChange::Step(1),
        limits: ReplicaLimits::default(),
        rule: "upstream".into(),
        reason: "test".into(),
        evidence: Default::default(),
        resources: None,
        timestamp_unix_nano: 1,
    };
    p.process(Signal::Decisions(vec![d.clone()]), &mut out)
        .await
        .unwrap();
    assert_eq!(out.take(), vec![Signal::Decisions(vec![d])]);
}

#[test]
fn latencies_read_well() {
    assert_eq!(latency(Duration::from_millis(300)), "300ms");
    assert_eq!(latency(Duration::from_micros(1250)), "1.25ms");
    assert_eq!(latency(Duration::from_micros(250)), "250µs");
    assert_eq!(latency(Duration::from_secs(300)), "5m");
    assert_eq!(latency(Duration::from_secs(12)), "12s");
    assert_eq!(latency(Duration::from_secs(8)), "8s");
    assert_eq!(latency(Duration::from_millis(1500)), "1.5s");
    assert_eq!(latency(Duration::ZERO), "0ms");
}

// ---------------------------------------------------------------------------------------------
// Properties

/// A naive recursive matcher to check the iterative one against.
fn glob_reference(p: &[u8], t: &[u8]) -> bool {
    match (p.first(), t.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_reference(&p[1..], t) || (!t.is_empty() && glob_reference(p, &t[1..]))
        }
        (Some(a), Some(b)) if a == b => glob_reference(&p[1..], &t[1..]),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn glob_agrees_with_the_reference(pattern in "[ab*]{0,8}", text in "[ab]{0,10}") {
        prop_assert_eq!(glob(&pattern, &text), glob_reference(pattern.as_bytes(), text.as_bytes()));
    }

    #[test]
    fn percentiles_are_nearest_ranks_of_the_sorted_values(
        mut values in proptest::collection::vec(0u64..50, 1..300)
    ) {
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let at = |p: f64| sorted[((p / 100.0 * sorted.len() as f64).ceil() as usize).max(1) - 1];
        prop_assert_eq!(percentiles(&mut values), [at(50.0), at(95.0), at(99.0)]);
    }

    /// Every matching span is either in the window, expired, late or early: windows conserve
    /// counts, stay sorted, and hold exactly the accepted spans younger than the window.
    #[test]
    fn windows_conserve_counts(
        steps in proptest::collection::vec(
            (0u64..3_000, proptest::collection::vec((0u64..20_000, 0u64..600), 0..20)),
            1..40,
        )
    ) {
        let window = 10 * SEC;
        let mut e = Engine::new(vec![rule("r", "s", "op", 300, 1_000_000, 10)], EngineSettings {
            max_window_samples: 1_000_000,
            ..settings()
        });
        let mut wall = T0;
        let mut fed = 0u64;
        let mut accepted: Vec<(u64, u64)> = Vec::new();
        for (advance_ms, batch_spec) in steps {
            wall += advance_ms * MS;
            let mut spans_now = Vec::new();
            for (back_ms, ms) in batch_spec {
                // Ends from 12 s before to 8 s after the wall clock: some late, some early.
                let end = wall + back_ms * MS - 12 * SEC;
                spans_now.push(span("op", end, ms));
            }
            let before = e.counters();
            let clock_before = e.clock();
            fed += spans_now.len() as u64;
            // Replay the engine's rule to know which spans it should accept.
            let mut watermark = clock_before;
            for s in &spans_now {
                let end = s.end_time_unix_nano;
                let clock = watermark.max(wall.saturating_sub(5 * SEC));
                if end >= clock.saturating_sub(5 * SEC) && end <= wall + 5 * SEC {
                    watermark = watermark.max(end);
                    accepted.push((end, (end - s.start_time_unix_nano)));
                }
            }
            observe(&mut e, &batch("s", spans_now), wall);
            let after = e.counters();
            prop_assert!(after.late >= before.late && after.early >= before.early);
            tick(&mut e, wall);
            let clock = e.clock();
            let expected = accepted.iter().filter(|(end, _)| *end > clock - window).count();
            let status = e.rules().next().unwrap();
            prop_assert_eq!(status.window_count, expected);
            let breaches = accepted
                .iter()
                .filter(|(end, d)| *end > clock - window && *d > 300 * MS)
                .count();
            prop_assert_eq!(status.breaches, breaches);
        }
        let c = e.counters();
        prop_assert_eq!(accepted.len() as u64 + c.late + c.early, fed);
    }

    /// Whatever the rules and spans, a cycle yields at most one decision per target, and never
    /// a scale-down for a target that also scales up.
    #[test]
    fn one_decision_per_target_per_cycle(
        rules_spec in proptest::collection::vec((0usize..3, 0usize..3, 1u32..4, proptest::bool::ANY), 1..8),
        batches in proptest::collection::vec(
            proptest::collection::vec((0usize..3, 0u64..800), 0..30),
            1..30,
        )
    ) {
        let rules: Vec<Rule> = rules_spec
            .iter()
            .enumerate()
            .map(|(i, &(op, t, count, down))| {
                let mut r = rule(&format!("r{i}"), "s", &format!("op{op}"), 300, count, 5);
                r.target = target(&format!("t{t}"));
                r.change = ScaleChange::Step(i as i32 + 1);
                if down {
                    r.scale_down = scale_down(300, 5);
                }
                r
            })
            .collect();
        let mut e = Engine::new(rules, EngineSettings {
            stale_after: Duration::from_secs(3),
            ..settings()
        });
        let mut wall = T0;
        for spec in batches {
            wall += SEC;
            let spans_now: Vec<Span> = spec
                .iter()
                .map(|&(op, ms)| span(&format!("op{op}"), wall, ms))
                .collect();
            for out in [observe(&mut e, &batch("s", spans_now), wall), tick(&mut e, wall)] {
                let mut targets: Vec<&Target> = out.iter().map(|d| &d.target).collect();
                targets.sort();
                let n = targets.len();
                targets.dedup();
                prop_assert_eq!(targets.len(), n, "two decisions for one target: {:?}", out);
            }
        }
    }
}

#[test]
fn a_vertical_rule_carries_its_resources_and_needs_valid_quantities() {
    let ok = r#"
[[rules]]
name = "checkout-cpu"
service = "checkout"
operation = "PlaceOrder"
above = "300ms"
count = 5
window = "10s"
scale = { target = "deployment/checkout", namespace = "shop", resources = { container = "app", requests = { cpu = "500m", memory = "256Mi" } } }
"#;
    let built = build_from_toml(factory(), "latency_rules", ok);
    assert!(
        built.is_ok(),
        "{}",
        built.err().map(|e| e.render(false)).unwrap_or_default()
    );
    let bad = r#"
[[rules]]
name = "checkout-cpu"
service = "checkout"
operation = "PlaceOrder"
above = "300ms"
count = 5
window = "10s"
scale = { target = "deployment/checkout", namespace = "shop", step = 2, resources = { container = "", requests = { cpu = "half" } } }
scale_down = { below = "100ms", for = "1m" }
"#;
    let Err(e) = build_from_toml(factory(), "latency_rules", bad) else {
        panic!("built");
    };
    let text = e.render(false);
    for needle in [
        "is not a Kubernetes quantity",
        "must name a container",
        "drop `step` and `to`",
        "has no way down",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
}

#[test]
fn a_vertical_rule_decides_with_its_resources() {
    let mut r = rule("cpu", "db", "INSERT", 300, 2, 10);
    r.change = ScaleChange::Step(0);
    r.resources = Some(tracescale_core::signal::ContainerResources {
        container: "app".into(),
        requests: [("cpu".to_string(), "1".to_string())].into(),
        limits: Default::default(),
    });
    let mut e = Engine::new(vec![r], settings());
    let d = observe(&mut e, &batch("db", spans("INSERT", 2, T0, 400)), T0);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].change, ScaleChange::Step(0));
    assert_eq!(d[0].resources.as_ref().unwrap().requests["cpu"], "1");
}

#[test]
fn refused_spans_feed_the_rules_once_but_not_the_statistics() {
    let mut engine = Engine::new(vec![rule("r", "svc", "op", 300, 3, 10)], settings());
    let refused = batch(
        "svc",
        vec![
            span_in("op", T0, 500, 1),
            span_in("op", T0, 500, 2),
            span_in("other", T0, 500, 3),
        ],
    );
    let mut asked = Vec::new();
    let mut out = Vec::new();
    engine.observe_refused(&refused, T0, &mut out, |span| {
        asked.push(span.trace_id[0]);
        true
    });
    assert_eq!(
        asked,
        vec![1, 2],
        "only spans a rule's operation matches are asked about"
    );
    assert_eq!(window_count(&engine, "r"), 2);
    assert_eq!(
        engine.operation_total("svc", "op"),
        None,
        "statistics count processed spans"
    );
    // The retry is accepted: the statistics count it, the rules do not count it again.
    engine.observe_where(&refused, T0, &mut out, |_| false);
    assert_eq!(window_count(&engine, "r"), 2);
    assert_eq!(engine.operation_total("svc", "op"), Some(2));
    assert_eq!(engine.operation_total("svc", "other"), Some(1));
    // Refused again, the tap's memory said no: nothing is counted.
    engine.observe_refused(&refused, T0, &mut out, |_| false);
    assert_eq!(window_count(&engine, "r"), 2);
    assert!(out.is_empty());
    // A third breach fires the rule.
    let third = batch("svc", vec![span_in("op", T0, 500, 4)]);
    engine.observe_refused(&third, T0, &mut out, |_| true);
    assert_eq!(out.len(), 1);
    check_invariants(&engine);
}
