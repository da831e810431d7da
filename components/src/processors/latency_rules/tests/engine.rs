//! The sync engine on explicit timestamps: firing, windows, matching, evidence, conflation and
//! scale-down.

use super::*;

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
