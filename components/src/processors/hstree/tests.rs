//! Tests of the forest, featurization, calibration, persistence and the processor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use tracescale_core::attributes::{ANOMALY, ANOMALY_SCORE, UNKNOWN_SERVICE, service_name};
use tracescale_core::component::{ComponentKind, Emitter, Processor};
use tracescale_core::config::{Built, build_from_toml};
use tracescale_core::registry;
use tracescale_core::signal::{Decision, ScaleChange, Signal, Target, Traces};
use tracescale_core::testing;

use super::features::{
    Levels, LogStats, Lookup, OneHot, Operations, Overflow, STATS_HORIZON, operation_feature,
    paper_duration,
};
use super::forest::{Forest, ForestError, ForestParams, Point};
use super::*;
use crate::random::SplitMix64;

// ---------------------------------------------------------------------------------------------
// Helpers

fn params(trees: usize, height: u32, window: u32, dims: usize, seed: u64) -> ForestParams {
    ForestParams {
        trees,
        height,
        window_size: window,
        size_limit: 0.1 * f64::from(window),
        dims,
        seed,
    }
}

/// Operations of a realistic stream: (service, operation, median duration in ns).
const OPS: [(&str, &str, f64); 6] = [
    ("frontend", "GET /", 2.0e6),
    ("frontend", "GET /product", 12.0e6),
    ("cart", "GetCart", 0.8e6),
    ("checkout", "PlaceOrder", 150.0e6),
    ("catalog", "ListProducts", 0.05e6),
    ("payments", "Charge", 2.0e9),
];

/// One healthy span: an operation drawn uniformly, a log-normal duration with σ = 0.3.
fn healthy(rng: &mut SplitMix64) -> (usize, u64) {
    let i = (rng.next_u64() % OPS.len() as u64) as usize;
    let d = OPS[i].2 * (0.3 * rng.standard_normal()).exp();
    (i, d as u64)
}

const LEVELS: Levels = Levels {
    score: 0.99,
    tail: 0.99,
};

/// One healthy span whose operation has a second, slow mode: 1 span in 25 takes about 10× the
/// median (a cache miss, a pause), so that about 2 % of spans lie 4 standard deviations slow.
fn heavy_tailed(rng: &mut SplitMix64) -> (usize, u64) {
    let (i, d) = healthy(rng);
    if rng.next_f64() < 0.04 {
        (i, (d as f64 * 10.0) as u64)
    } else {
        (i, d)
    }
}

fn detector(toml_overrides: impl FnOnce(&mut HsTreeConfig)) -> Detector {
    let mut config = HsTreeConfig::default();
    toml_overrides(&mut config);
    Detector::new(&config).unwrap()
}

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn span(n: u64, name: &str, duration_ns: u64) -> Span {
    let start = 1_700_000_000_000_000_000 + n * 1_000_000;
    let mut trace_id = vec![0u8; 16];
    trace_id[..8].copy_from_slice(&(n + 1).to_be_bytes());
    Span {
        trace_id,
        span_id: (n + 1).to_be_bytes().to_vec(),
        name: name.to_string(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration_ns,
        ..Default::default()
    }
}

fn batch_of(service: &str, spans: Vec<Span>) -> Signal {
    Signal::Traces(Traces::new(vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![attr(
                "service.name",
                any_value::Value::StringValue(service.to_string()),
            )],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "test".to_string(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]))
}

fn spans_of(signals: &[Signal]) -> Vec<Span> {
    signals
        .iter()
        .flat_map(|s| match s {
            Signal::Traces(t) => t.resource_spans.clone(),
            Signal::Decisions(_) => Vec::new(),
        })
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn build(toml_text: &str) -> Box<dyn Processor> {
    let factory = registry::lookup(ComponentKind::Processor, "hstree").unwrap();
    match build_from_toml(factory, "hstree", toml_text) {
        Ok(Built::Processor(p)) => p,
        Ok(_) => panic!("not a processor"),
        Err(e) => panic!("{}", e.render(false)),
    }
}

fn build_error(toml_text: &str) -> String {
    let factory = registry::lookup(ComponentKind::Processor, "hstree").unwrap();
    match build_from_toml(factory, "hstree", toml_text) {
        Ok(_) => panic!("built: {toml_text}"),
        Err(e) => e.render(false),
    }
}

/// A processor fed `n` healthy `checkout/PlaceOrder` spans of about 10 ms, in batches of 100.
async fn trained(p: &mut Box<dyn Processor>, n: u64, rng: &mut SplitMix64) -> Vec<Signal> {
    let mut out = Emitter::new();
    let mut i = 0;
    while i < n {
        let spans = (i..(i + 100).min(n))
            .map(|k| {
                span(
                    k,
                    "PlaceOrder",
                    (10.0e6 * (0.2 * rng.standard_normal()).exp()) as u64,
                )
            })
            .collect();
        p.process(batch_of("checkout", spans), &mut out)
            .await
            .unwrap();
        i += 100;
    }
    out.take()
}

/// Counts WARN events on the current thread while installed.
struct WarnCounter(Arc<AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn count_warnings() -> (Arc<AtomicUsize>, tracing::subscriber::DefaultGuard) {
    let count = Arc::new(AtomicUsize::new(0));
    let guard = tracing::subscriber::set_default(WarnCounter(count.clone()));
    (count, guard)
}

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

// ---------------------------------------------------------------------------------------------
// Detector: training, calibration, feedback

#[test]
fn nothing_is_judged_while_training() {
    let mut d = detector(|c| {
        c.train_size = 300;
        c.operation_warmup = 10;
        c.window_size = 50;
    });
    let mut rng = SplitMix64::new(1);
    for i in 0..300 {
        let (op, dur) = healthy(&mut rng);
        let v = d.observe(OPS[op].0, OPS[op].1, dur, i);
        assert!(v.training && !v.anomalous, "span {i}: {v:?}");
    }
    assert_eq!(d.training_progress(), 1.0);
    let (op, dur) = healthy(&mut rng);
    assert!(!d.observe(OPS[op].0, OPS[op].1, dur, 300).training);
    // A new operation calibrates before it is judged.
    for i in 0..10 {
        assert!(d.observe("new", "op", 1_000_000, 400 + i).training);
    }
    assert!(!d.observe("new", "op", 1_000_000, 500).training);
}

/// The share of healthy spans flagged, and whether 30× slow spans are caught.
fn healthy_flag_rate_and_recall(config: impl FnOnce(&mut HsTreeConfig)) -> (f64, f64) {
    let mut d = detector(config);
    let mut rng = SplitMix64::new(21);
    for i in 0..30_000 {
        let (op, dur) = healthy(&mut rng);
        d.observe(OPS[op].0, OPS[op].1, dur, i);
    }
    let (mut flagged, mut judged, mut caught) = (0, 0, 0);
    for i in 0..20_000u64 {
        let (op, dur) = healthy(&mut rng);
        let v = d.observe(OPS[op].0, OPS[op].1, dur, 30_000 + i);
        judged += u32::from(!v.training);
        flagged += u32::from(v.anomalous);
        if i % 100 == 0 {
            let v = d.observe(OPS[op].0, OPS[op].1, dur * 30, 30_000 + i);
            caught += u32::from(v.anomalous);
        }
    }
    (
        f64::from(flagged) / f64::from(judged),
        f64::from(caught) / 200.0,
    )
}

#[test]
fn quantile_calibration_flags_about_target_fpr_and_catches_slow_spans() {
    let (rate, recall) = healthy_flag_rate_and_recall(|_| {});
    assert!(rate > 0.001 && rate < 0.02, "healthy flag rate {rate}");
    assert!(recall > 0.95, "recall {recall}");
}

#[test]
fn the_encoding_saturates_at_each_operations_own_tail_which_a_later_fault_does_not_move() {
    let mut d = detector(|_| {});
    let tail_spans = d.config().tail_spans();
    let mut rng = SplitMix64::new(22);
    for i in 0..60_000 {
        let (op, dur) = heavy_tailed(&mut rng);
        d.observe(OPS[op].0, OPS[op].1, dur, i);
    }
    let max_z = d.config().max_z;
    let tails: Vec<f64> = d
        .operations()
        .iter()
        .map(|op| op.saturation(max_z))
        .collect();
    for op in d.operations().iter() {
        // About 2 % of these spans lie `max_z` deviations slow: saturating there tied them
        // all with the slowest possible span, and flagged every one, whatever `target_fpr`.
        assert!(
            op.saturation(max_z) > max_z,
            "{}: saturates at {}",
            op.operation,
            op.saturation(max_z)
        );
        assert_eq!(op.tail.count(), tail_spans, "{}", op.operation);
    }
    // A long fault on one operation: its tail is kept, so the fault stays past it.
    for i in 0..20_000 {
        let (op, dur) = heavy_tailed(&mut rng);
        let dur = if op == 2 { dur * 8 } else { dur };
        d.observe(OPS[op].0, OPS[op].1, dur, 60_000 + i);
    }
    let after: Vec<f64> = d
        .operations()
        .iter()
        .map(|op| op.saturation(max_z))
        .collect();
    assert_eq!(tails, after);
}

#[test]
fn a_fixed_min_score_flags_most_of_a_healthy_stream() {
    // The reason for calibration: on the one-dimensional z-scored feature, normal spans score
    // above 0.8, so the paper's fixed threshold flags most of them.
    let (rate, _) = healthy_flag_rate_and_recall(|c| {
        c.calibration = Calibration::Fixed;
        c.min_score = Some(0.8);
        c.slow_only = false;
        c.learn_flagged = 1.0;
    });
    assert!(rate > 0.5, "healthy flag rate {rate}");
}

#[test]
fn the_p99_baseline_flags_about_one_percent_and_catches_slow_spans() {
    let (rate, recall) = healthy_flag_rate_and_recall(|c| c.detector = DetectorKind::P99);
    assert!(rate > 0.002 && rate < 0.02, "healthy flag rate {rate}");
    assert!(recall > 0.95, "recall {recall}");
}

#[test]
fn p99_scores_are_half_at_the_threshold() {
    let mut d = detector(|c| {
        c.detector = DetectorKind::P99;
        c.train_size = 0;
        c.operation_warmup = 1;
    });
    for i in 0..1000 {
        d.observe("s", "o", 1000, i);
    }
    let v = d.observe("s", "o", 1000, 1000);
    assert_eq!((v.score, v.anomalous), (0.5, false));
    let v = d.observe("s", "o", 3000, 1001);
    assert_eq!((v.score, v.anomalous), (0.75, true));
}

#[test]
fn the_paper_encoding_runs_and_scores_in_range() {
    let mut d = detector(|c| {
        c.features = Features::Paper;
        c.max_operations = 16;
    });
    let mut rng = SplitMix64::new(2);
    for i in 0..5000 {
        let (op, dur) = healthy(&mut rng);
        let v = d.observe(OPS[op].0, OPS[op].1, dur, i);
        assert!((0.0..=1.0).contains(&v.score));
    }
    assert_eq!(d.forest_params().unwrap().dims, 17);
}

#[test]
fn fast_spans_are_not_flagged_when_slow_only() {
    let mut d = detector(|_| {});
    let mut rng = SplitMix64::new(3);
    for i in 0..20_000 {
        let (op, dur) = healthy(&mut rng);
        d.observe(OPS[op].0, OPS[op].1, dur, i);
    }
    for i in 0..100 {
        let v = d.observe("cart", "GetCart", 10_000, 20_000 + i);
        assert!(!v.anomalous && !v.training, "{v:?}");
    }
}

/// Flags among `cart/GetCart` spans late in a long fault that makes them 8× slower while the
/// other operations stay healthy; and the flag rate of the same operation after a lasting 2×
/// shift has had time to be learned.
fn fault_then_shift(learn_flagged: f64) -> (f64, f64) {
    let mut d = detector(|c| c.learn_flagged = learn_flagged);
    let mut rng = SplitMix64::new(5);
    let mut t = 0;
    let mut run = |d: &mut Detector, rng: &mut SplitMix64, n: usize, slowdown: f64, count_after| {
        let (mut flagged, mut cart) = (0u32, 0u32);
        for i in 0..n {
            let (op, mut dur) = healthy(rng);
            if op == 2 {
                dur = (dur as f64 * slowdown) as u64;
            }
            let v = d.observe(OPS[op].0, OPS[op].1, dur, t);
            t += 1;
            if op == 2 && i >= count_after {
                cart += 1;
                flagged += u32::from(v.anomalous);
            }
        }
        f64::from(flagged) / f64::from(cart.max(1))
    };
    run(&mut d, &mut rng, 30_000, 1.0, 0);
    // 18 000 spans: 3 000 of the faulty operation, as many as a 3-minute fault at ~17/s.
    let late_fault = run(&mut d, &mut rng, 18_000, 8.0, 15_000);
    run(&mut d, &mut rng, 30_000, 1.0, 0);
    run(&mut d, &mut rng, 300_000, 2.0, 0);
    let after_shift = run(&mut d, &mut rng, 30_000, 2.0, 0);
    (late_fault, after_shift)
}

#[test]
fn a_long_fault_is_not_absorbed_but_a_lasting_shift_is_learned() {
    let (late_fault, after_shift) = fault_then_shift(0.1);
    assert!(
        late_fault > 0.95,
        "{late_fault} of the late fault spans flagged"
    );
    assert!(after_shift < 0.05, "{after_shift} flagged after the shift");
}

#[test]
fn operations_over_the_cap_pass_unjudged() {
    let mut d = detector(|c| {
        c.max_operations = 1;
        c.train_size = 0;
    });
    assert!(!d.observe("a", "x", 1, 0).overflow);
    let v = d.observe("a", "y", 1, 1);
    assert!(v.overflow && !v.anomalous && !v.training);
    assert_eq!(d.counters().overflowed, 1);
    let mut d = detector(|c| {
        c.max_operations = 1;
        c.overflow = Overflow::Evict;
    });
    d.observe("a", "x", 1, 0);
    assert!(!d.observe("a", "y", 1, 1).overflow);
    assert_eq!(d.counters().evicted, 1);
}

#[test]
fn detector_runs_repeat_exactly() {
    let run = || {
        let mut d = detector(|c| c.window_size = 100);
        let mut rng = SplitMix64::new(6);
        (0..5000)
            .map(|i| {
                let (op, dur) = healthy(&mut rng);
                let dur = if i % 97 == 0 { dur * 20 } else { dur };
                let v = d.observe(OPS[op].0, OPS[op].1, dur, i);
                (v.score.to_bits(), v.anomalous)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn invalid_configs_name_the_key() {
    let problems = HsTreeConfig {
        height: 0,
        target_fpr: 0.9,
        learn_flagged: 0.0,
        ..Default::default()
    }
    .problems();
    let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
    assert_eq!(keys, ["height", "target_fpr", "learn_flagged"]);
    let err = Detector::new(&HsTreeConfig {
        trees: 1024,
        height: 20,
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.key, "trees");
    assert!(err.message.contains("nodes"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Persistence

fn trained_detector(config: impl FnOnce(&mut HsTreeConfig)) -> (Detector, SplitMix64) {
    let mut d = detector(config);
    let mut rng = SplitMix64::new(7);
    for i in 0..3000 {
        let (op, dur) = healthy(&mut rng);
        d.observe(OPS[op].0, OPS[op].1, dur, i);
    }
    (d, rng)
}

#[test]
fn state_round_trips_and_the_restored_model_continues_identically() {
    for kind in [DetectorKind::Hstree, DetectorKind::P99] {
        let (mut a, mut rng) = trained_detector(|c| c.detector = kind);
        let mut b = detector(|c| c.detector = kind);
        b.restore(&a.to_bytes()).unwrap();
        assert_eq!(b.seen(), a.seen());
        assert_eq!(b.operations().len(), a.operations().len());
        for i in 0..2000 {
            let (op, dur) = healthy(&mut rng);
            let dur = if i % 50 == 0 { dur * 10 } else { dur };
            assert_eq!(
                a.observe(OPS[op].0, OPS[op].1, dur, i),
                b.observe(OPS[op].0, OPS[op].1, dur, i)
            );
        }
        assert!(a.to_bytes() == b.to_bytes(), "saved states differ");
    }
}

#[test]
fn corrupt_and_truncated_bytes_are_refused_and_leave_the_model_unchanged() {
    let (a, _) = trained_detector(|_| {});
    let bytes = a.to_bytes();
    let mut fresh = detector(|_| {});
    let before = fresh.to_bytes();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    for bad in [
        &flipped[..],
        &bytes[..bytes.len() - 1],
        &bytes[..10],
        b"not a model at all, not at all",
    ] {
        assert!(matches!(fresh.restore(bad), Err(DecodeError::Corrupt(_))));
        assert!(
            fresh.to_bytes() == before,
            "a refused file changed the model"
        );
    }
}

#[test]
fn a_file_written_with_other_parameters_is_incompatible() {
    let (a, _) = trained_detector(|_| {});
    let mut other = detector(|c| c.height = 9);
    match other.restore(&a.to_bytes()) {
        Err(DecodeError::Incompatible { key, file, config }) => {
            assert_eq!(
                (key, file.as_str(), config.as_str()),
                ("height", "Some(8)", "Some(9)")
            );
        }
        other => panic!("{other:?}"),
    }
    // Keys that do not shape the model may change.
    let mut relaxed = detector(|c| {
        c.mode = Mode::Drop;
        c.train_size = 5;
        c.min_score = Some(0.5);
    });
    relaxed.restore(&a.to_bytes()).unwrap();
}

#[test]
fn save_and_load_go_through_a_file_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let (a, _) = trained_detector(|_| {});
    a.save_to(&path).unwrap();
    assert!(!dir.path().join("model.bin.tmp").exists());
    let mut b = detector(|_| {});
    b.load_from(&path).unwrap();
    assert!(a.to_bytes() == b.to_bytes(), "loaded state differs");
    assert!(matches!(
        b.load_from(&dir.path().join("absent")),
        Err(StateError::Missing { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Processor

#[test]
fn builds_from_toml_and_reports_bad_keys_at_their_place() {
    build("trees = 25\nheight = 15\nmode = \"drop\"\nstate_path = \"/tmp/x\"");
    let err = build_error("height = 0\ntarget_fpr = 2.0");
    assert!(err.contains("processors.hstree.height"), "{err}");
    assert!(err.contains("processors.hstree.target_fpr"), "{err}");
    let err = build_error("treez = 3");
    assert!(err.contains("did you mean `trees`"), "{err}");
    let err = build_error("features = \"dense\"");
    assert!(err.contains("operation"), "{err}");
}

#[test]
fn building_touches_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let p = build(&format!("state_path = {:?}", path.display().to_string()));
    assert_eq!(p.tick_interval(), Some(Duration::from_secs(60)));
    drop(p);
    assert!(!path.exists());
    assert_eq!(build("").tick_interval(), None);
}

#[tokio::test]
async fn tag_mode_forwards_everything_and_tags_judged_spans() {
    let mut p = build("train_size = 500\noperation_warmup = 50\nwindow_size = 100");
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    let mut rng = SplitMix64::new(1);
    let training = trained(&mut p, 500, &mut rng).await;
    let spans = spans_of(&training);
    assert_eq!(spans.len(), 500);
    assert!(
        spans.iter().all(|s| s.attributes.is_empty()),
        "training spans are not tagged"
    );

    let mut out = Emitter::new();
    let mut batch: Vec<Span> = (0..99)
        .map(|k| {
            span(
                1000 + k,
                "PlaceOrder",
                (10.0e6 * (0.2 * rng.standard_normal()).exp()) as u64,
            )
        })
        .collect();
    batch.push(span(2000, "PlaceOrder", 400_000_000));
    p.process(batch_of("checkout", batch), &mut out)
        .await
        .unwrap();
    let spans = spans_of(&out.take());
    assert_eq!(spans.len(), 100);
    for s in &spans {
        let Some(any_value::Value::DoubleValue(score)) = attribute(s, ANOMALY_SCORE) else {
            panic!("no score on {s:?}")
        };
        assert!((0.0..=1.0).contains(score));
    }
    let slow = spans.last().unwrap();
    assert_eq!(
        attribute(slow, ANOMALY),
        Some(&any_value::Value::BoolValue(true))
    );
    let flagged = spans
        .iter()
        .filter(|s| attribute(s, ANOMALY).is_some())
        .count();
    assert!(flagged < 10, "{flagged} of 100 flagged");
}

#[tokio::test]
async fn drop_mode_forwards_only_anomalous_spans_with_their_resource_and_scope() {
    let mut p =
        build("mode = \"drop\"\ntrain_size = 500\noperation_warmup = 50\nwindow_size = 100");
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    let mut rng = SplitMix64::new(2);
    // Drop mode forwards nothing while training.
    assert!(trained(&mut p, 500, &mut rng).await.is_empty());

    let mut out = Emitter::new();
    let mut batch: Vec<Span> = (0..50)
        .map(|k| {
            span(
                1000 + k,
                "PlaceOrder",
                (10.0e6 * (0.2 * rng.standard_normal()).exp()) as u64,
            )
        })
        .collect();
    batch.insert(25, span(3000, "PlaceOrder", 500_000_000));
    p.process(batch_of("checkout", batch), &mut out)
        .await
        .unwrap();
    let out = out.take();
    let spans = spans_of(&out);
    assert!(
        spans
            .iter()
            .any(|s| s.end_time_unix_nano - s.start_time_unix_nano == 500_000_000)
    );
    assert!(spans.len() <= 3, "{} spans kept", spans.len());
    let Signal::Traces(t) = &out[0] else { panic!() };
    let rs = &t.resource_spans[0];
    assert_eq!(service_name(rs.resource.as_ref()), "checkout");
    assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "test");
    assert!(spans.iter().all(|s| attribute(s, ANOMALY_SCORE).is_none()));

    // A batch with nothing anomalous emits nothing at all.
    let mut out = Emitter::new();
    let calm = (0..10)
        .map(|k| span(4000 + k, "PlaceOrder", 10_000_000))
        .collect();
    p.process(batch_of("checkout", calm), &mut out)
        .await
        .unwrap();
    assert!(out.is_empty());
}

#[tokio::test]
async fn invalid_spans_are_counted_and_never_learned() {
    let mut bad_time = span(1, "PlaceOrder", 1000);
    bad_time.end_time_unix_nano = bad_time.start_time_unix_nano - 1;
    let mut no_trace = span(2, "PlaceOrder", 1000);
    no_trace.trace_id = vec![0; 16];
    let mut short_span_id = span(3, "PlaceOrder", 1000);
    short_span_id.span_id = vec![1, 2];
    let bad = vec![bad_time, no_trace, short_span_id];

    let mut tag = HsTree::new(
        "hstree".into(),
        HsTreeConfig::default(),
        Detector::new(&HsTreeConfig::default()).unwrap(),
    );
    tag.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    let mut out = Emitter::new();
    tag.process(batch_of("checkout", bad.clone()), &mut out)
        .await
        .unwrap();
    let spans = spans_of(&out.take());
    assert_eq!(spans.len(), 3, "tag mode passes invalid spans through");
    assert!(spans.iter().all(|s| s.attributes.is_empty()));
    assert_eq!(tag.detector().seen(), 0);

    let config = HsTreeConfig {
        mode: Mode::Drop,
        ..Default::default()
    };
    let mut drop = HsTree::new(
        "hstree".into(),
        config.clone(),
        Detector::new(&config).unwrap(),
    );
    drop.process(batch_of("checkout", bad), &mut out)
        .await
        .unwrap();
    assert!(out.is_empty(), "drop mode drops them");
}

#[tokio::test]
async fn spans_without_a_service_name_are_keyed_as_unknown_service() {
    let mut p = HsTree::new(
        "hstree".into(),
        HsTreeConfig::default(),
        Detector::new(&HsTreeConfig::default()).unwrap(),
    );
    let mut out = Emitter::new();
    let signal = Signal::Traces(Traces::new(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![span(1, "op", 10)],
            ..Default::default()
        }],
        ..Default::default()
    }]));
    p.process(signal, &mut out).await.unwrap();
    assert!(
        p.detector()
            .operations()
            .find(UNKNOWN_SERVICE, "op")
            .is_some()
    );
}

#[tokio::test]
async fn decisions_pass_through_untouched() {
    let decision = Decision {
        target: Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
            namespace: "shop".into(),
        },
        change: ScaleChange::Step(1),
        limits: Default::default(),
        rule: "checkout-slow".into(),
        reason: "slow".into(),
        evidence: Default::default(),
        resources: None,
        timestamp_unix_nano: 1,
    };
    let mut p = build("mode = \"drop\"");
    let mut out = Emitter::new();
    p.process(Signal::Decisions(vec![decision.clone()]), &mut out)
        .await
        .unwrap();
    assert_eq!(out.take(), vec![Signal::Decisions(vec![decision])]);
}

#[tokio::test]
async fn the_model_is_saved_at_shutdown_and_loaded_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hstree.model");
    let toml_text = format!(
        "state_path = {:?}\nsave_interval = \"1s\"",
        path.display().to_string()
    );
    let ctx = testing::processor_context("hstree");

    let (warnings, _guard) = count_warnings();
    let mut first = build(&toml_text);
    first.start(&ctx).await.unwrap();
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        1,
        "a missing file is a warning"
    );
    let mut rng = SplitMix64::new(3);
    trained(&mut first, 1200, &mut rng).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut out = Emitter::new();
    first.shutdown(&mut out, deadline).await.unwrap();
    let saved = std::fs::read(&path).unwrap();
    first.shutdown(&mut out, deadline).await.unwrap();
    assert!(
        std::fs::read(&path).unwrap() == saved,
        "second shutdown is a no-op"
    );

    let mut second = build(&toml_text);
    second.start(&ctx).await.unwrap();
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        1,
        "a good file loads silently"
    );
    // The restored model is past training: the first span is judged and tagged.
    let mut out = Emitter::new();
    second
        .process(
            batch_of("checkout", vec![span(9, "PlaceOrder", 10_000_000)]),
            &mut out,
        )
        .await
        .unwrap();
    let spans = spans_of(&out.take());
    assert!(attribute(&spans[0], ANOMALY_SCORE).is_some());
    // Ticks save too.
    second.tick(&mut out).await.unwrap();
    assert!(std::fs::read(&path).unwrap() != saved, "the tick saved");
}

#[tokio::test]
async fn a_corrupt_or_incompatible_file_gives_a_warning_and_a_fresh_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hstree.model");
    let toml_text = format!("state_path = {:?}", path.display().to_string());
    let ctx = testing::processor_context("hstree");
    let (warnings, _guard) = count_warnings();

    std::fs::write(&path, b"TSHSTREE garbage that is not a model").unwrap();
    let mut p = build(&toml_text);
    p.start(&ctx).await.unwrap();
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
    let mut out = Emitter::new();
    p.process(
        batch_of("checkout", vec![span(1, "PlaceOrder", 1000)]),
        &mut out,
    )
    .await
    .unwrap();
    assert!(
        spans_of(&out.take())[0].attributes.is_empty(),
        "fresh model: training"
    );

    let (trained_model, _) = trained_detector(|c| c.trees = 5);
    trained_model.save_to(&path).unwrap();
    let mut p = build(&toml_text);
    p.start(&ctx).await.unwrap();
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        2,
        "other trees: incompatible"
    );
}

#[tokio::test]
async fn a_save_that_cannot_be_written_fails_the_tick_not_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("hstree.model");
    let mut p = build(&format!("state_path = {:?}", path.display().to_string()));
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    let mut out = Emitter::new();
    p.process(
        batch_of("checkout", vec![span(1, "PlaceOrder", 1000)]),
        &mut out,
    )
    .await
    .unwrap();
    let err = p.tick(&mut out).await.unwrap_err();
    assert!(err.to_string().contains("hstree.model"), "{err}");
    p.process(
        batch_of("checkout", vec![span(2, "PlaceOrder", 1000)]),
        &mut out,
    )
    .await
    .unwrap();
}
