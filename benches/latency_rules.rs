//! Rule evaluation per span: the `latency_rules` engine observing batches of spans (and ticking
//! once per batch, as a 1 s interval would) with 10 and 100 rules, single-threaded, so the
//! throughput is spans per second per core. Each batch covers one second of event time, so the
//! windows (10 s) fill and slide as in steady state.
//!
//! `latency_rules/overload` compares, through the processor, a batch that was queued
//! (`process`) with one a receiver refused (the processor's tap, which also remembers the span
//! ids) and with a client's retry of a refused batch (every span a repeat).
//!
//! Run: `cargo bench --bench latency_rules -- --warm-up-time 1 --measurement-time 3`.

// A bench that cannot set itself up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracescale_components::processors::latency_rules::engine::{
    Condition, Engine, EngineSettings, OperationMatcher, Rule, ScaleDown,
};
use tracescale_components::random::SplitMix64;
use tracescale_core::component::{Emitter, Processor};
use tracescale_core::config::{Built, build_from_toml};
use tracescale_core::registry;
use tracescale_core::signal::{ReplicaLimits, ScaleChange, Signal, Target, Traces};

// Link the built-in components, so the registry has `latency_rules`.
use tracescale_components as _;

const SERVICES: usize = 10;
/// Operations per service that no rule names: they only feed the statistics.
const OTHER_OPERATIONS: usize = 4;
/// Event time one batch covers; the wall clock moves by as much per iteration.
const BATCH_NANOS: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

fn service(i: usize) -> String {
    format!("service-{}", i % SERVICES)
}

/// `n` count rules spread over the services, one exact operation each, on 5 targets; every
/// fourth has a way back down and every tenth is a percentile rule.
fn rules(n: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| Rule {
            name: format!("rule-{i}"),
            service: service(i),
            operation: OperationMatcher::Exact(format!("operation-{i}")),
            attributes: Vec::new(),
            span_kind: None,
            above: Duration::from_millis(300),
            condition: if i % 10 == 9 {
                Condition::Percentile {
                    percentile: 99.0,
                    min_samples: 50,
                }
            } else {
                Condition::Count { count: 50 }
            },
            window: Duration::from_secs(10),
            target: Target {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: format!("workload-{}", i % 5),
                namespace: "shop".into(),
            },
            change: ScaleChange::Step(1),
            limits: ReplicaLimits {
                min: Some(1),
                max: Some(10),
            },
            scale_down: (i % 4 == 0).then_some(ScaleDown {
                below: Duration::from_millis(100),
                period: Duration::from_secs(60),
                step: 1,
            }),
            inhibited_by: Vec::new(),
            inhibition_hold: Duration::from_secs(30),
            resources: None,
        })
        .collect()
}

/// One batch: a resource per service; 80 % of spans on rule operations, the rest on other
/// operations of the service; ~1 % slower than the threshold; end times ascending with a little
/// disorder, as batches from several SDKs have.
fn batch(rule_count: usize, spans: usize, seed: u64) -> Traces {
    let mut rng = SplitMix64::new(seed);
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES];
    for k in 0..spans {
        let r = rng.next_u64();
        let (svc, name) = if r % 10 < 8 {
            let rule = (r >> 8) as usize % rule_count;
            (rule % SERVICES, format!("operation-{rule}"))
        } else {
            let svc = (r >> 8) as usize % SERVICES;
            let other = (r >> 16) as usize % OTHER_OPERATIONS;
            (svc, format!("other-{other}"))
        };
        let slow = rng.next_u64().is_multiple_of(100);
        let ms = if slow {
            300 + rng.next_u64() % 700
        } else {
            1 + rng.next_u64() % 120
        };
        let mut end = T0 + BATCH_NANOS * k as u64 / spans as u64;
        if k % 16 == 0 {
            end -= 2_000_000;
        }
        let trace = [rng.next_u64().to_be_bytes(), rng.next_u64().to_be_bytes()].concat();
        by_service[svc].push(Span {
            trace_id: trace,
            span_id: rng.next_u64().to_be_bytes().to_vec(),
            name,
            kind: SpanKind::Server as i32,
            start_time_unix_nano: end - ms * 1_000_000,
            end_time_unix_nano: end,
            ..Default::default()
        });
    }
    Traces::new(
        by_service
            .into_iter()
            .enumerate()
            .map(|(i, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service(i))),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    )
}

/// The template batch moved `k` batches later in event time.
fn shifted(template: &Traces, k: u64) -> Traces {
    let mut t = template.clone();
    let shift = k * BATCH_NANOS;
    for span in t
        .resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
    {
        span.start_time_unix_nano += shift;
        span.end_time_unix_nano += shift;
    }
    t
}

fn evaluate(c: &mut Criterion) {
    // 10000 spans is about a Collector batch (8192 by default) and no longer fits in L2, so the
    // engine pays for reading the spans from memory; 1000 spans shows the engine alone.
    for spans in [10_000, 1_000] {
        let mut group = c.benchmark_group(format!("latency_rules/{spans}_span_batches"));
        group.throughput(Throughput::Elements(spans as u64));
        for rule_count in [10, 100] {
            let template = batch(rule_count, spans, 7);
            let mut engine = Engine::new(rules(rule_count), EngineSettings::default());
            let mut decisions = Vec::new();
            let mut k = 0u64;
            group.bench_function(format!("{rule_count}_rules"), |b| {
                b.iter_batched_ref(
                    || {
                        k += 1;
                        (shifted(&template, k), T0 + (k + 1) * BATCH_NANOS)
                    },
                    |(traces, wall)| {
                        engine.observe(traces, *wall, &mut decisions);
                        engine.tick(*wall, &mut decisions);
                        black_box(decisions.len());
                        decisions.clear();
                    },
                    BatchSize::LargeInput,
                );
            });
        }
        group.finish();
    }
}

/// The template batch with new span ids, so that the tap sees spans it never saw.
fn renamed(template: &Traces, k: u64) -> Traces {
    let mut t = template.clone();
    for span in t
        .resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
    {
        let id = u64::from_be_bytes(span.span_id.as_slice().try_into().unwrap_or_default());
        span.span_id = (id ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .to_be_bytes()
            .to_vec();
    }
    t
}

/// The processor for `rules(n)`, built from TOML as a pipeline file would, on event time so
/// the bench's timestamps count.
fn processor(rule_count: usize) -> Box<dyn Processor> {
    let mut toml = String::from("clock = \"event\"\npassthrough = false\n");
    for i in 0..rule_count {
        toml.push_str(&format!(
            "[[rules]]\nname = \"rule-{i}\"\nservice = \"{}\"\noperation = \"operation-{i}\"\nabove = \"300ms\"\ncount = 20\nwindow = \"10s\"\nscale = {{ target = \"deployment/target-{}\", namespace = \"bench\" }}\n",
            service(i),
            i % 5
        ));
    }
    let factory = registry::all()
        .into_iter()
        .find(|f| f.type_name == "latency_rules")
        .expect("latency_rules is registered");
    match build_from_toml(factory, "latency_rules", &toml) {
        Ok(Built::Processor(p)) => p,
        Ok(_) => panic!("not a processor"),
        Err(e) => panic!("{}", e.render(false)),
    }
}

fn overload(c: &mut Criterion) {
    let spans = 1_000;
    let rule_count = 10;
    let template = batch(rule_count, spans, 7);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("latency_rules/overload");
    group.throughput(Throughput::Elements(spans as u64));

    let mut queued = processor(rule_count);
    let mut out = Emitter::new();
    let mut k = 0u64;
    group.bench_function("queued", |b| {
        b.iter_batched(
            || {
                k += 1;
                Signal::Traces(renamed(&shifted(&template, k), k))
            },
            |signal| {
                rt.block_on(queued.process(signal, &mut out))
                    .expect("process");
                black_box(out.take());
            },
            BatchSize::LargeInput,
        );
    });

    let refused = processor(rule_count);
    let tap = refused.tap().expect("a tap");
    let mut k = 0u64;
    group.bench_function("refused", |b| {
        b.iter_batched_ref(
            || {
                k += 1;
                Signal::Traces(renamed(&shifted(&template, k), k))
            },
            |signal| tap.refused(signal),
            BatchSize::LargeInput,
        );
    });

    let retried = Signal::Traces(renamed(&shifted(&template, k + 1), k + 1));
    tap.refused(&retried);
    group.bench_function("retried", |b| b.iter(|| tap.refused(&retried)));
    group.finish();
}

criterion_group!(benches, evaluate, overload);
criterion_main!(benches);
