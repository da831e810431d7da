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
    slowest_window: 5_000,
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

/// Counts WARN events on the current thread until the guard is dropped.
pub(super) fn count_warnings() -> (Arc<AtomicUsize>, tracing::subscriber::DefaultGuard) {
    let count = Arc::new(AtomicUsize::new(0));
    let guard = tracing::subscriber::set_default(WarnCounter(count.clone()));
    (count, guard)
}

/// A detector trained on 3000 healthy spans, and the generator to go on with.
fn trained_detector(config: impl FnOnce(&mut HsTreeConfig)) -> (Detector, SplitMix64) {
    let mut d = detector(config);
    let mut rng = SplitMix64::new(7);
    for i in 0..3000 {
        let (op, dur) = healthy(&mut rng);
        d.observe(OPS[op].0, OPS[op].1, dur, i);
    }
    (d, rng)
}

mod detector;
mod forest;
mod persistence;
mod processor;
