//! The forest alone, and the features it reads: River's scores, windows and shapes, and the
//! per-operation statistics.

use super::*;

// ---------------------------------------------------------------------------------------------
// Forest

#[test]
fn scores_follow_rivers_formula_exactly() {
    // One tree of height 1, windows of 4, no size limit: after four points at 0 the root has
    // r = 4, its left child r = 4, its right child r = 0; max score = 1 · 4 · (2² − 1) = 12.
    let mut forest = Forest::new(ForestParams {
        size_limit: 0.0,
        ..params(1, 1, 4, 1, 3)
    })
    .unwrap();
    for _ in 0..4 {
        assert_eq!(
            forest.score_learn(&[0.0f32]),
            0.0,
            "no reference window yet"
        );
    }
    assert!((forest.score(&[0.0f32]) - (1.0 - 12.0 / 12.0)).abs() < 1e-12);
    assert!((forest.score(&[1.0f32]) - (1.0 - 4.0 / 12.0)).abs() < 1e-12);
}

#[test]
fn scoring_stops_at_the_first_node_below_the_size_limit_including_it() {
    // size_limit 3: the root (r = 4) continues, the right child (r = 0) is added and stops.
    let mut forest = Forest::new(ForestParams {
        size_limit: 3.0,
        ..params(1, 2, 4, 1, 3)
    })
    .unwrap();
    for _ in 0..4 {
        forest.learn(&[0.0f32]);
    }
    // Left path: 4·1 + 4·2 + 4·4 = 28 of max 4 · 7 = 28.
    assert_eq!(forest.score(&[0.0f32]), 0.0);
    assert!((forest.score(&[1.0f32]) - (1.0 - 4.0 / 28.0)).abs() < 1e-12);
}

#[test]
fn scores_stay_in_the_unit_interval() {
    let mut rng = SplitMix64::new(9);
    let mut forest = Forest::new(params(5, 6, 50, 3, 1)).unwrap();
    for _ in 0..2000 {
        let x = [rng.next_f64() as f32, rng.next_f64() as f32, 2.0];
        let s = forest.score_learn(&x);
        assert!((0.0..=1.0).contains(&s), "{s}");
    }
}

#[test]
fn an_outlier_scores_higher_than_inliers_after_training() {
    for dims in [1, 3] {
        let mut rng = SplitMix64::new(4);
        let mut forest = Forest::<Vec<f32>>::new(params(25, 8, 250, dims, 11)).unwrap();
        let inlier = |rng: &mut SplitMix64| -> Vec<f32> {
            (0..dims)
                .map(|_| (0.3 + 0.05 * rng.standard_normal()) as f32)
                .collect()
        };
        for _ in 0..2000 {
            forest.learn(&inlier(&mut rng));
        }
        let inliers: Vec<f64> = (0..200).map(|_| forest.score(&inlier(&mut rng))).collect();
        let mean = inliers.iter().sum::<f64>() / inliers.len() as f64;
        let outlier = forest.score(vec![0.95f32; dims].as_slice());
        assert!(
            outlier > mean + 0.05,
            "dims {dims}: outlier {outlier}, inliers {mean}"
        );
        let max = inliers.iter().copied().fold(0.0, f64::max);
        assert!(
            outlier > max,
            "dims {dims}: outlier {outlier}, max inlier {max}"
        );
    }
}

#[test]
fn seeded_runs_repeat_exactly() {
    let run = |seed| {
        let mut rng = SplitMix64::new(5);
        let mut forest = Forest::new(params(10, 8, 100, 2, seed)).unwrap();
        (0..1000)
            .map(|_| forest.score_learn(&[rng.next_f64() as f32, rng.next_f64() as f32]))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn windows_swap_latest_into_reference_and_reset() {
    let mut forest = Forest::new(params(1, 3, 10, 1, 2)).unwrap();
    // The root splits inside [0.15, 0.85]: 0.05 goes left (node 1), 0.95 right (node 2).
    for _ in 0..9 {
        forest.learn(&[0.05f32]);
    }
    assert_eq!(forest.latest_mass(0, 0), 9);
    assert_eq!(forest.reference_mass(0, 0), 0);
    assert!(!forest.is_ready());
    forest.learn(&[0.05f32]);
    assert!(forest.is_ready());
    assert_eq!(
        (forest.reference_mass(0, 0), forest.latest_mass(0, 0)),
        (10, 0)
    );
    assert_eq!(
        (forest.reference_mass(0, 1), forest.reference_mass(0, 2)),
        (10, 0)
    );

    for _ in 0..3 {
        forest.learn(&[0.95f32]);
    }
    assert_eq!(
        (forest.reference_mass(0, 0), forest.latest_mass(0, 0)),
        (10, 3)
    );
    assert_eq!(forest.latest_mass(0, 2), 3);
    for _ in 0..7 {
        forest.learn(&[0.95f32]);
    }
    // Second window: everything went right.
    assert_eq!(
        (forest.reference_mass(0, 1), forest.reference_mass(0, 2)),
        (0, 10)
    );
    for _ in 0..10 {
        forest.learn(&[0.95f32]);
    }
    // Node 1 was last visited two windows ago: its reference mass is 0, not its stale count.
    assert_eq!(
        (forest.reference_mass(0, 1), forest.latest_mass(0, 1)),
        (0, 0)
    );
    assert_eq!(forest.window().completed, 3);
}

#[test]
fn a_point_not_kept_leaves_no_mass() {
    let mut rng = SplitMix64::new(1);
    let mut forest = Forest::new(params(4, 5, 20, 1, 3)).unwrap();
    for _ in 0..30 {
        forest.learn(&[rng.next_f64() as f32]);
    }
    let before = forest.clone();
    let score = forest.score_learn_if(&[0.7f32], |_| false);
    assert_eq!(score, before.score(&[0.7f32]));
    assert_eq!(forest.window(), before.window());
    for tree in 0..4 {
        for node in 0..63 {
            assert_eq!(
                forest.latest_mass(tree, node),
                before.latest_mass(tree, node)
            );
        }
    }
}

#[test]
fn read_only_score_matches_score_then_learn() {
    let mut rng = SplitMix64::new(8);
    let mut forest = Forest::new(params(6, 7, 40, 2, 4)).unwrap();
    for _ in 0..500 {
        let x = [rng.next_f64() as f32, rng.next_f64() as f32];
        let read_only = forest.score(&x);
        assert_eq!(forest.score_learn(&x), read_only);
    }
}

#[test]
fn nan_goes_right_as_in_river_and_does_not_panic() {
    let mut forest = Forest::new(params(3, 4, 5, 1, 1)).unwrap();
    for _ in 0..20 {
        let s = forest.score_learn(&[f32::NAN]);
        assert!((0.0..=1.0).contains(&s));
    }
    // Every NaN went right at the root, so the left child never gained mass.
    assert_eq!(forest.reference_mass(0, 1), 0);
    assert_eq!(forest.reference_mass(0, 2), 5);
}

#[test]
fn bad_shapes_are_refused() {
    assert_eq!(
        Forest::<[f32; 1]>::new(params(0, 8, 250, 1, 1)).unwrap_err(),
        ForestError::Trees(0)
    );
    assert_eq!(
        Forest::<[f32; 1]>::new(params(1, 21, 250, 1, 1)).unwrap_err(),
        ForestError::Height(21)
    );
    assert_eq!(
        Forest::<[f32; 1]>::new(params(1, 8, 0, 1, 1)).unwrap_err(),
        ForestError::Window
    );
    assert_eq!(
        Forest::<[f32; 1]>::new(params(1, 8, 250, 0, 1)).unwrap_err(),
        ForestError::Dims(0)
    );
    assert!(matches!(
        Forest::<[f32; 1]>::new(params(1000, 20, 250, 1, 1)).unwrap_err(),
        ForestError::TooLarge { .. }
    ));
}

#[test]
fn the_paper_encoding_reads_one_hot_dimensions() {
    let p = OneHot {
        slot: 2,
        duration: 0.25,
    };
    assert_eq!(
        (p.value(0), p.value(1), p.value(3), p.value(4)),
        (0.25, 0.0, 1.0, 0.0)
    );
    let mut forest = Forest::new(params(5, 6, 20, 11, 1)).unwrap();
    for slot in 0..10 {
        let s = forest.score_learn(&OneHot {
            slot,
            duration: 0.1,
        });
        assert!((0.0..=1.0).contains(&s));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn forest_scores_are_in_range_for_any_input(
        seed in any::<u64>(),
        trees in 1usize..6,
        height in 1u32..9,
        window in 1u32..40,
        points in prop::collection::vec((any::<f32>(), any::<f32>(), any::<bool>()), 1..300),
    ) {
        let mut forest = Forest::new(params(trees, height, window, 2, seed)).unwrap();
        for (a, b, keep) in points {
            let s = forest.score_learn_if(&[a, b], |_| keep);
            prop_assert!((0.0..=1.0).contains(&s), "{}", s);
            let r = forest.score(&[a, b]);
            prop_assert!((0.0..=1.0).contains(&r), "{}", r);
        }
    }

    #[test]
    fn the_step_function_scores_exactly_as_descending(
        seed in any::<u64>(),
        trees in 1usize..12,
        height in 1u32..12,
        window in 1u32..60,
        limit in 0.0f64..1.0,
        learn in prop::collection::vec(prop_oneof![
            3 => 0.0f32..1.0,
            1 => Just(0.0f32),
            1 => any::<f32>(),
        ], 1..400),
        probes in prop::collection::vec(any::<f32>(), 1..50),
    ) {
        let mut forest = Forest::<[f32; 1]>::new(ForestParams {
            size_limit: limit * f64::from(window),
            ..params(trees, height, window, 1, seed)
        })
        .unwrap();
        for x in learn {
            forest.learn(&[x]);
            let probe = [x * 0.5];
            prop_assert_eq!(forest.score(&probe), forest.score_by_descent(&probe));
        }
        for x in probes.into_iter().chain([0.0, 1.0, -0.0, f32::NAN, f32::INFINITY]) {
            prop_assert_eq!(forest.score(&[x]), forest.score_by_descent(&[x]));
        }
    }

    #[test]
    fn windows_conserve_counts(
        seed in any::<u64>(),
        height in 1u32..7,
        n in 0u32..50,
        xs in prop::collection::vec(0.0f32..1.0, 50),
    ) {
        // Every learned point adds one to exactly one node per level; within a window the
        // latest masses of each level sum to the points learned so far.
        let mut forest = Forest::new(params(2, height, 50, 1, seed)).unwrap();
        for x in xs.iter().take(n as usize) {
            forest.learn(&[*x]);
        }
        for tree in 0..2 {
            for depth in 0..=height {
                let first = (1usize << depth) - 1;
                let sum: u32 = (first..2 * first + 1).map(|i| forest.latest_mass(tree, i)).sum();
                prop_assert_eq!(sum, n);
            }
        }
    }

    #[test]
    fn detector_verdicts_are_sane_for_any_span(
        spans in prop::collection::vec(
            ("[a-c]{0,2}", "[x-z]{0,2}", any::<u64>(), any::<u64>()),
            1..200,
        ),
        features in prop_oneof![Just(Features::Operation), Just(Features::Paper)],
        kind in prop_oneof![Just(DetectorKind::Hstree), Just(DetectorKind::P99)],
    ) {
        let mut d = detector(|c| {
            c.trees = 3;
            c.height = 4;
            c.window_size = 10;
            c.train_size = 20;
            c.operation_warmup = 3;
            c.max_operations = 4;
            c.features = features;
            c.detector = kind;
        });
        for (service, op, duration, end) in spans {
            let v = d.observe(&service, &op, duration, end);
            prop_assert!((0.0..=1.0).contains(&v.score), "{:?}", v);
            prop_assert!(!(v.anomalous && (v.training || v.overflow)), "{:?}", v);
        }
        prop_assert!(d.operations().len() <= 4);
    }
}

// ---------------------------------------------------------------------------------------------
// Featurization

#[test]
fn log_stats_are_exact_before_the_horizon() {
    let mut s = LogStats::default();
    for x in [1.0, 2.0, 3.0, 4.0] {
        s.update(x);
    }
    assert!((s.mean - 2.5).abs() < 1e-12);
    assert!((s.var - 1.25).abs() < 1e-12);
    assert!((s.z(2.5)).abs() < 1e-12);
    assert!(s.z(2.5 + 1.25f64.sqrt()) - 1.0 < 1e-12);
    s.update(f64::NAN);
    assert_eq!(s.count, 4);
}

#[test]
fn log_stats_forget_after_the_horizon() {
    let mut s = LogStats::default();
    for _ in 0..STATS_HORIZON {
        s.update(0.0);
    }
    for _ in 0..STATS_HORIZON {
        s.update(1.0);
    }
    // An exact mean would be 0.5; exponential forgetting has moved most of the way to 1.
    assert!(s.mean > 0.6 && s.mean < 0.7, "{}", s.mean);
}

#[test]
fn a_constant_operation_does_not_blow_up_z() {
    let mut s = LogStats::default();
    for _ in 0..100 {
        s.update(5.0);
    }
    // 10 % slower is two floored standard deviations, not infinity.
    let z = s.z(5.0 + 0.1);
    assert!((z - 2.0).abs() < 1e-9, "{z}");
}

#[test]
fn operation_feature_maps_z_into_the_unit_interval() {
    assert_eq!(operation_feature(0.0, false, 4.0), 0.5);
    assert_eq!(operation_feature(4.0, false, 4.0), 1.0);
    assert_eq!(operation_feature(-100.0, false, 4.0), 0.0);
    assert_eq!(operation_feature(2.0, false, 4.0), 0.75);
    assert_eq!(operation_feature(-2.0, true, 4.0), 0.0);
    assert_eq!(operation_feature(2.0, true, 4.0), 0.5);
    assert_eq!(operation_feature(9.0, true, 4.0), 1.0);
    assert_eq!(operation_feature(8.0, true, 16.0), 0.5);
    assert_eq!(paper_duration(5_000, 10_000), 0.5);
    assert_eq!(paper_duration(50_000, 10_000), 1.0);
}

#[test]
fn operations_are_keyed_by_service_and_operation() {
    // The paper's encoder keyed by service name: two operations of one service collided.
    let mut ops = Operations::new(3, LEVELS);
    assert_eq!(
        ops.lookup("cart", "GetCart", Overflow::Pass),
        Lookup::Slot(0)
    );
    assert_eq!(
        ops.lookup("cart", "AddItem", Overflow::Pass),
        Lookup::Slot(1)
    );
    assert_eq!(
        ops.lookup("shop", "GetCart", Overflow::Pass),
        Lookup::Slot(2)
    );
    assert_eq!(
        ops.lookup("cart", "GetCart", Overflow::Pass),
        Lookup::Slot(0)
    );
    assert_eq!(
        ops.lookup("cart", "Empty", Overflow::Pass),
        Lookup::Overflow
    );
    assert_eq!(ops.len(), 3);
}

#[test]
fn eviction_replaces_the_least_recently_seen_operation() {
    let mut ops = Operations::new(2, LEVELS);
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let Lookup::Slot(slot) = ops.lookup("s", name, Overflow::Evict) else {
            panic!()
        };
        ops.get_mut(slot).unwrap().last_seen_unix_nano = 10 - i as u64;
    }
    // "b" was seen at 9, "a" at 10: "b" goes.
    assert_eq!(ops.lookup("s", "c", Overflow::Evict), Lookup::Evicted(1));
    assert!(ops.find("s", "b").is_none());
    assert_eq!(ops.find("s", "c").unwrap().seen, 0);
    assert_eq!(ops.lookup("s", "a", Overflow::Evict), Lookup::Slot(0));
}
