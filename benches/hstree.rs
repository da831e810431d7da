//! The HS-Tree filter per span, single-threaded: the bare forest (`Forest::score_learn`, one
//! descent per tree that scores and learns) and the whole detector (`Detector::observe`:
//! operation lookup, per-operation normalisation, forest, calibration, feedback), each at
//! 25 trees × height 15 and at River's 10 × 8, on a realistic stream.
//!
//! The stream: 55 operations (as in the Nezha OnlineBoutique data) with log-normal durations
//! whose medians run from 50 µs to 2 s, and 1 % of spans 10× slow. Throughput is in spans, so
//! criterion's time per element is the time per span.
//!
//! A third group replays the synthetic generator's labeled traces through the detector with its
//! defaults, from a fresh model each iteration (training included), as `tracescale eval` does.
//!
//! Run: `cargo bench --bench hstree -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tracescale_components::eval::{self, synth, synth::SynthConfig};
use tracescale_components::processors::hstree::features::{
    LogStats, log_duration, operation_feature,
};
use tracescale_components::processors::hstree::forest::{Forest, ForestParams};
use tracescale_components::processors::hstree::{Detector, HsTreeConfig};
use tracescale_components::random::SplitMix64;

const OPERATIONS: usize = 55;
const SPANS: usize = 10_000;
/// Spans learned before timing, so that windows have turned and the caches hold a steady state.
const WARM_UP_SPANS: usize = 200_000;
const SHAPES: [(usize, u32); 2] = [(25, 15), (10, 8)];

/// A span of the stream: operation index, duration in ns.
struct StreamSpan {
    op: usize,
    duration_ns: u64,
}

fn stream(len: usize, seed: u64) -> Vec<StreamSpan> {
    let mut rng = SplitMix64::new(seed);
    (0..len)
        .map(|_| {
            // Busy operations are called more: a skewed choice, as in real traces.
            let op = ((rng.next_f64().powi(2)) * OPERATIONS as f64) as usize;
            let median_ns = 50e3 * (4e4f64).powf(op as f64 / (OPERATIONS - 1) as f64);
            let sigma = 0.3 + 0.3 * (op % 3) as f64 / 2.0;
            let slow = if rng.next_f64() < 0.01 { 10.0 } else { 1.0 };
            StreamSpan {
                op,
                duration_ns: (median_ns * slow * (sigma * rng.standard_normal()).exp()) as u64,
            }
        })
        .collect()
}

fn names() -> Vec<(String, String)> {
    (0..OPERATIONS)
        .map(|i| (format!("service-{}", i % 10), format!("operation-{i}")))
        .collect()
}

/// The one-dimensional feature the detector feeds the forest, computed with per-operation
/// statistics learned over the whole stream.
fn features(spans: &[StreamSpan]) -> Vec<f32> {
    let mut stats = vec![LogStats::default(); OPERATIONS];
    spans
        .iter()
        .map(|s| {
            let x = log_duration(s.duration_ns);
            let z = stats[s.op].z(x);
            stats[s.op].update(x);
            operation_feature(z, true, 4.0)
        })
        .collect()
}

fn forest(c: &mut Criterion) {
    let warm = features(&stream(WARM_UP_SPANS, 1));
    let timed = features(&stream(SPANS, 2));
    let mut group = c.benchmark_group("hstree/forest_score_learn");
    group.throughput(Throughput::Elements(SPANS as u64));
    for (trees, height) in SHAPES {
        let mut forest = Forest::new(ForestParams {
            trees,
            height,
            window_size: 250,
            size_limit: 25.0,
            dims: 1,
            seed: 1,
        })
        .unwrap_or_else(|e| panic!("{e}"));
        for x in &warm {
            forest.score_learn(&[*x]);
        }
        group.bench_function(
            BenchmarkId::from_parameter(format!("{trees}x{height}")),
            |b| {
                b.iter(|| {
                    for x in &timed {
                        black_box(forest.score_learn(black_box(&[*x])));
                    }
                })
            },
        );
    }
    group.finish();
}

fn detector(c: &mut Criterion) {
    let names = names();
    let warm = stream(WARM_UP_SPANS, 1);
    let timed = stream(SPANS, 2);
    let mut group = c.benchmark_group("hstree/detector_observe");
    group.throughput(Throughput::Elements(SPANS as u64));
    for (trees, height) in SHAPES {
        let config = HsTreeConfig {
            trees,
            height,
            ..Default::default()
        };
        let mut detector = Detector::new(&config).unwrap_or_else(|e| panic!("{e}"));
        let mut t = 0u64;
        for s in &warm {
            let (service, operation) = &names[s.op];
            detector.observe(service, operation, s.duration_ns, t);
            t += 1;
        }
        group.bench_function(
            BenchmarkId::from_parameter(format!("{trees}x{height}")),
            |b| {
                b.iter(|| {
                    for s in &timed {
                        let (service, operation) = &names[s.op];
                        black_box(detector.observe(service, operation, s.duration_ns, t));
                        t += 1;
                    }
                })
            },
        );
    }
    group.finish();
}

/// The detector with its defaults replaying the synthetic generator's labeled traces (the
/// shop of `tracescale synth`, six injected faults), as `tracescale eval` does: operation
/// lookup by name, judging, calibration and feedback, per span.
fn replay_synth(c: &mut Criterion) {
    let mut csv = Vec::new();
    let config = SynthConfig {
        traces: 5_000,
        ..SynthConfig::default()
    };
    synth::generate(&config, &mut csv).unwrap_or_else(|e| panic!("{e}"));
    let spans = eval::parse_csv(Path::new("synth.csv"), csv.as_slice(), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("hstree/replay_synth");
    group.throughput(Throughput::Elements(spans.rows.len() as u64));
    group.sample_size(10);
    group.bench_function("defaults", |b| {
        b.iter(|| {
            let mut detector =
                Detector::new(&HsTreeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
            black_box(eval::replay(&mut detector, &spans, None))
        })
    });
    group.finish();
}

criterion_group!(benches, forest, detector, replay_synth);
criterion_main!(benches);
