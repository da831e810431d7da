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

/// A scale-down below `below_ms` held for `for_s`, one replica a step.
fn scale_down(below_ms: u64, for_s: u64) -> Option<ScaleDown> {
    Some(ScaleDown {
        below: Duration::from_millis(below_ms),
        period: Duration::from_secs(for_s),
        step: 1,
    })
}

/// The registered `latency_rules` factory.
fn factory() -> &'static tracescale_core::registry::ComponentFactory {
    registry::lookup(ComponentKind::Processor, "latency_rules")
        .expect("latency_rules is registered")
}

/// Builds a processor from the TOML of its table, or the rendered diagnostics.
fn build(toml: &str) -> Result<Box<dyn Processor>, String> {
    match build_from_toml(factory(), "latency_rules", toml) {
        Ok(Built::Processor(p)) => Ok(p),
        Ok(_) => Err("not a processor".into()),
        Err(e) => Err(e.render(false)),
    }
}

/// The diagnostics of a table that must not build.
fn build_error(toml: &str) -> String {
    match build(toml) {
        Ok(_) => panic!("expected an error for:\n{toml}"),
        Err(e) => e,
    }
}

mod config;
mod engine;
mod processor;
mod properties;
