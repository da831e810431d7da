//! Property tests: the glob matcher against a naive one, and the engine on random input.

use super::*;

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
