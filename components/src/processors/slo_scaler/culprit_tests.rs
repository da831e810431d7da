//! Tests of the culprit ranking on shop-shaped traces: a frontend whose handler calls the cart
//! (which reads its cache), the catalogue twice and the currency service in turn, each call a
//! CLIENT span around the callee's SERVER span, with or without span kinds.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::engine::{Engine, Objective, Ranking, Settings, SlowWork};
use crate::tracetree::BufferConfig;

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;
const EPOCH: u64 = 1_700_000_000 * S;
const CALLEES: [(&str, &str, u64); 4] = [
    ("cart", "GetCart", 5 * MS),
    ("catalog", "GetProduct", 8 * MS),
    ("catalog", "GetProduct", 8 * MS),
    ("currency", "Convert", 4 * MS),
];

/// What a fault changes in every trace of a second.
#[derive(Clone, Copy, Default)]
struct Fault {
    /// The callee whose calls change.
    callee: &'static str,
    /// Added to the callee's own work (its CPU taken).
    work: u64,
    /// Added before the callee's SERVER span starts (its requests wait or are delayed).
    before: u64,
    /// Added after it ends (its replies are delayed).
    after: u64,
    /// Added after every call of the frontend (the frontend slow to read its replies).
    frontend_reply: u64,
    /// Added before the cache's SERVER span starts (the cart's requests to it delayed).
    cart_requests: u64,
}

fn settings() -> Settings {
    Settings {
        objectives: vec![Objective {
            name: "home".into(),
            service: "frontend".into(),
            operation: "GET /".into(),
            percentile: 99.0,
            target_ns: 100 * MS,
        }],
        workloads: Vec::new(),
        interval_ns: S,
        completion_wait_ns: 2 * S,
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

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn resource(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", service),
                kv("k8s.pod.name", &format!("{service}-0")),
            ],
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }
}

/// One second of traffic, 40 traces; `kinds` false leaves every span's kind unspecified.
fn second(t: u64, fault: Fault, kinds: bool) -> Vec<ResourceSpans> {
    let kind = |k: SpanKind| if kinds { k as i32 } else { 0 };
    let mut by_service: Vec<(&str, Vec<Span>)> = Vec::new();
    let mut push = |service: &'static str, span: Span| match by_service
        .iter_mut()
        .find(|(s, _)| *s == service)
    {
        Some((_, spans)) => spans.push(span),
        None => by_service.push((service, vec![span])),
    };
    for r in 0..40u64 {
        let id = t * 1000 + r;
        let trace_id = [&id.to_be_bytes()[..], &[7u8; 8][..]].concat();
        let span_id = |n: u64| (id * 16 + n + 1).to_be_bytes().to_vec();
        let start = EPOCH + t * S + r * (S / 40);
        let mut at = start + 2 * MS;
        for (n, (callee, operation, work)) in CALLEES.iter().enumerate() {
            let f = if fault.callee == *callee {
                fault
            } else {
                Fault::default()
            };
            let server_start = at + MS + f.before;
            let mut server_end = server_start + work + f.work;
            if *callee == "cart" {
                // Half its work, then a read of its cache, then the other half.
                let call = server_start + (work + f.work) / 2;
                let cache_start = call + MS / 2 + fault.cart_requests;
                let cache_end = cache_start + MS;
                let call_end = cache_end + MS / 2;
                push(
                    "cart",
                    Span {
                        trace_id: trace_id.clone(),
                        span_id: span_id(14),
                        parent_span_id: span_id(2),
                        name: "GET".into(),
                        kind: kind(SpanKind::Client),
                        start_time_unix_nano: call,
                        end_time_unix_nano: call_end,
                        ..Span::default()
                    },
                );
                push(
                    "cache",
                    Span {
                        trace_id: trace_id.clone(),
                        span_id: span_id(15),
                        parent_span_id: span_id(14),
                        name: "GET".into(),
                        kind: kind(SpanKind::Server),
                        start_time_unix_nano: cache_start,
                        end_time_unix_nano: cache_end,
                        ..Span::default()
                    },
                );
                server_end += call_end - call;
            }
            let client_end = server_end + MS + f.after + fault.frontend_reply;
            let n = n as u64 * 2;
            push(
                "frontend",
                Span {
                    trace_id: trace_id.clone(),
                    span_id: span_id(n + 1),
                    parent_span_id: span_id(0),
                    name: (*operation).into(),
                    kind: kind(SpanKind::Client),
                    start_time_unix_nano: at,
                    end_time_unix_nano: client_end,
                    ..Span::default()
                },
            );
            push(
                callee,
                Span {
                    trace_id: trace_id.clone(),
                    span_id: span_id(n + 2),
                    parent_span_id: span_id(n + 1),
                    name: (*operation).into(),
                    kind: kind(SpanKind::Server),
                    start_time_unix_nano: server_start,
                    end_time_unix_nano: server_end,
                    ..Span::default()
                },
            );
            at = client_end + MS;
        }
        push(
            "frontend",
            Span {
                trace_id: trace_id.clone(),
                span_id: span_id(0),
                name: "GET /".into(),
                kind: kind(SpanKind::Server),
                start_time_unix_nano: start,
                end_time_unix_nano: at + MS,
                ..Span::default()
            },
        );
    }
    by_service
        .into_iter()
        .map(|(service, spans)| resource(service, spans))
        .collect()
}

/// 90 healthy seconds, then 30 of the fault; the rankings made while the objective burned.
fn rankings(fault: Fault, kinds: bool) -> Vec<Ranking> {
    // The buffer waits as long as the settings say, as the processor builds it.
    let settings = settings();
    let buffer = BufferConfig {
        completion_wait: settings.completion_wait_ns,
        ..BufferConfig::default()
    };
    let mut engine = Engine::new(settings, buffer).unwrap();
    engine.record_rankings();
    let mut rankings = Vec::new();
    for t in 0..120 {
        let f = if t < 90 { Fault::default() } else { fault };
        engine.observe(&second(t, f, kinds), None);
        engine.tick(EPOCH + (t + 1) * S, &mut Vec::new());
        rankings.extend(engine.take_rankings());
    }
    assert!(engine.counters().objective_traces > 4000);
    rankings
}

/// The service every ranking names first.
fn named(rankings: &[Ranking]) -> &str {
    let first = rankings
        .first()
        .and_then(|r| r.culprits.first())
        .map(|c| c.0.as_str())
        .expect("the objective burns and a culprit is named");
    for r in rankings {
        assert_eq!(
            r.culprits.first().map(|c| c.0.as_str()),
            Some(first),
            "every ranking names the same culprit: {rankings:#?}"
        );
    }
    first
}

#[test]
fn a_callee_whose_replies_are_delayed_is_named_though_its_own_work_did_not_grow() {
    // Network delay on the catalogue: the gaps of the calls into it grow, its SERVER spans do
    // not. It is called twice per trace, the cart once.
    let fault = Fault {
        callee: "catalog",
        after: 60 * MS,
        ..Fault::default()
    };
    for kinds in [true, false] {
        let r = rankings(fault, kinds);
        assert_eq!(named(&r), "catalog", "kinds: {kinds}");
        assert!(
            !r[0].culprits.iter().any(|c| c.0 == "frontend"),
            "the caller's other calls did not slow: it explains none of it: {:?}",
            r[0].culprits
        );
    }
}

#[test]
fn a_service_whose_network_is_delayed_is_named_not_the_callee_its_requests_reach_late() {
    // Network delay on the cart: its replies to the frontend and its requests to its cache
    // leave late. Its own work does not grow; the cache's call gaps grow as much as its own.
    let fault = Fault {
        callee: "cart",
        after: 35 * MS,
        cart_requests: 35 * MS,
        ..Fault::default()
    };
    for kinds in [true, false] {
        let r = rankings(fault, kinds);
        assert_eq!(named(&r), "cart", "kinds: {kinds}");
        assert!(
            !r[0].culprits.iter().any(|c| c.0 == "cache"),
            "the cart's other calls slowed as much: it explains the cache's too: {:?}",
            r[0].culprits
        );
    }
}

#[test]
fn a_caller_slow_to_read_its_replies_is_named_not_its_busiest_callee() {
    // CPU contention on the frontend: every call it makes ends later after its callee answered.
    // The catalogue's calls grow most in total, but the frontend's all grew alike.
    let fault = Fault {
        frontend_reply: 25 * MS,
        ..Fault::default()
    };
    for kinds in [true, false] {
        assert_eq!(named(&rankings(fault, kinds)), "frontend", "kinds: {kinds}");
    }
}

#[test]
fn a_callee_whose_cpu_is_taken_is_named_from_its_own_work() {
    // CPU contention on the cart: its own work is thirteen times longer, and its requests wait
    // for the CPU before its SERVER span starts.
    let fault = Fault {
        callee: "cart",
        work: 60 * MS,
        before: 10 * MS,
        ..Fault::default()
    };
    for kinds in [true, false] {
        assert_eq!(named(&rankings(fault, kinds)), "cart", "kinds: {kinds}");
    }
}
