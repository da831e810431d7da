//! Named cases: hand-built traces and each kind of bad input.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;

const TRACE: [u8; 16] = [7; 16];
const OP: Symbol = Symbol(1);
const A: Symbol = Symbol(10);
const B: Symbol = Symbol(11);
const C: Symbol = Symbol(12);
const PEER: Symbol = Symbol(13);

fn span(id: u64, parent: u64, service: Symbol, kind: Kind, start: u64, end: u64) -> SpanRecord {
    SpanRecord {
        trace_id: TRACE,
        span_id: id,
        parent_id: parent,
        start,
        end,
        service,
        operation: OP,
        peer: Symbol::NONE,
        kind,
        queue: false,
        error: false,
    }
}

fn internal(id: u64, parent: u64, service: Symbol, start: u64, end: u64) -> SpanRecord {
    span(id, parent, service, Kind::Internal, start, end)
}

/// The path as (span id, start, end), independent of slice order.
fn path(spans: &[SpanRecord]) -> Vec<(u64, u64, u64)> {
    let analysis = analyze(spans).unwrap();
    analysis
        .segments
        .iter()
        .map(|s| (spans[s.span as usize].span_id, s.start, s.end))
        .collect()
}

fn attributed(b: &TraceBreakdown) -> u64 {
    b.services
        .iter()
        .map(|s| s.own + s.queueing + s.response)
        .sum()
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

fn otlp_span(id: u8, parent: u8, name: &str, kind: i32, start: u64, end: u64) -> Span {
    Span {
        trace_id: TRACE.to_vec(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            vec![0, 0, 0, 0, 0, 0, 0, parent]
        },
        name: name.into(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Span::default()
    }
}

fn resource_spans(attributes: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes,
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }
}

// ---- extraction -------------------------------------------------------------------------

#[test]
fn extract_reads_ids_names_kind_peer_and_workload() {
    let mut catalog = SpanCatalog::new(CatalogConfig::default());
    let mut client = otlp_span(2, 1, "GET /cart", 3, 10, 20);
    client.attributes.push(kv("peer.service", "redis"));
    let batch = vec![resource_spans(
        vec![
            kv("service.name", "frontend"),
            kv("k8s.namespace.name", "shop"),
            kv("k8s.deployment.name", "frontend-v2"),
        ],
        vec![otlp_span(1, 0, "GET /", 2, 0, 100), client],
    )];
    let mut out = Vec::new();
    catalog.extract(&batch, &mut out);
    assert_eq!(out.len(), 2);
    let frontend = catalog.service_symbol("frontend").unwrap();
    assert_eq!(out[0].trace_id, TRACE);
    assert_eq!((out[0].span_id, out[0].parent_id), (1, 0));
    assert_eq!((out[1].span_id, out[1].parent_id), (2, 1));
    assert_eq!(out[0].service, frontend);
    assert_eq!(out[0].kind, Kind::Server);
    assert_eq!(out[1].kind.to_otlp() as i32, 3);
    assert_eq!(catalog.operation_name(out[1].operation), "GET /cart");
    assert_eq!(catalog.service_name(out[1].peer), "redis");
    assert_eq!(out[0].peer, Symbol::NONE);
    assert_eq!(
        catalog.workload(frontend),
        Some(&Workload {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "frontend-v2".into(),
        })
    );
    // The latest workload wins.
    let batch = vec![resource_spans(
        vec![
            kv("service.name", "frontend"),
            kv("k8s.statefulset.name", "frontend-db"),
        ],
        vec![otlp_span(3, 0, "GET /", 2, 0, 100)],
    )];
    catalog.extract(&batch, &mut out);
    let workload = catalog.workload(frontend).unwrap();
    assert_eq!(workload.kind, WorkloadKind::StatefulSet);
    assert_eq!(workload.namespace, "");
}

#[test]
fn missing_service_name_is_the_unknown_service_and_counted() {
    let mut catalog = SpanCatalog::new(CatalogConfig::default());
    let batch = vec![resource_spans(
        vec![],
        vec![otlp_span(1, 0, "a", 2, 0, 1), otlp_span(2, 1, "b", 1, 0, 1)],
    )];
    let mut out = Vec::new();
    catalog.extract(&batch, &mut out);
    assert!(out.iter().all(|s| s.service == catalog.unknown_service()));
    assert_eq!(catalog.service_name(out[0].service), UNKNOWN_SERVICE);
    assert_eq!(catalog.stats().missing_service_name, 2);
}

#[test]
fn interner_overflow_folds_into_other_and_is_counted() {
    let mut catalog = SpanCatalog::new(CatalogConfig {
        max_services: 2,
        max_operations: 1,
        ..CatalogConfig::default()
    });
    let batch: Vec<_> = (0..4)
        .map(|i| {
            resource_spans(
                vec![kv("service.name", &format!("svc-{i}"))],
                vec![otlp_span(i + 1, 0, &format!("op-{i}"), 2, 0, 1)],
            )
        })
        .collect();
    let mut out = Vec::new();
    catalog.extract(&batch, &mut out);
    assert_ne!(out[1].service, Symbol::OTHER);
    assert_eq!(out[2].service, Symbol::OTHER);
    assert_eq!(out[3].service, Symbol::OTHER);
    assert_eq!(catalog.service_name(Symbol::OTHER), OTHER_NAME);
    assert_ne!(out[0].operation, Symbol::OTHER);
    assert_eq!(out[1].operation, Symbol::OTHER);
    let stats = catalog.stats();
    assert_eq!(
        (stats.services_overflowed, stats.operations_overflowed),
        (2, 3)
    );
}

#[test]
fn queue_span_name_is_configurable_and_malformed_ids_become_zero() {
    let mut catalog = SpanCatalog::new(CatalogConfig {
        queue_span_name: "wait".into(),
        ..CatalogConfig::default()
    });
    let mut bad = otlp_span(2, 1, "queue", 1, 0, 1);
    bad.span_id = vec![1, 2, 3];
    let batch = vec![resource_spans(
        vec![kv("service.name", "a")],
        vec![otlp_span(1, 0, "wait", 1, 0, 1), bad],
    )];
    let mut out = Vec::new();
    catalog.extract(&batch, &mut out);
    assert!(out[0].queue);
    assert!(!out[1].queue);
    assert_eq!(out[1].span_id, 0);
    assert_eq!(catalog.stats().malformed_ids, 1);
}

// ---- buffer -----------------------------------------------------------------------------

fn buffer(config: BufferConfig) -> TraceBuffer {
    TraceBuffer::new(config).unwrap()
}

fn small() -> BufferConfig {
    BufferConfig {
        completion_wait: 10,
        max_wait: 100,
        max_traces: 3,
        max_spans: 10,
        max_spans_per_trace: 4,
    }
}

fn in_trace(trace: u8, mut s: SpanRecord) -> SpanRecord {
    s.trace_id = [trace; 16];
    s
}

#[test]
fn buffer_releases_a_trace_after_completion_wait_of_silence() {
    let mut b = buffer(small());
    b.push(internal(1, 0, A, 0, 10), 0);
    b.push(internal(2, 1, A, 1, 5), 8);
    let mut out = Vec::new();
    b.release(17, &mut out);
    assert!(out.is_empty(), "the second span moved the deadline to 18");
    b.release(18, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].is_complete());
    assert_eq!((out[0].first_seen, out[0].last_seen), (0, 8));
    assert_eq!(b.trace_count(), 0);
    assert_eq!(b.span_count(), 0);
    assert_eq!(b.stats().released_complete, 1);
}

#[test]
fn a_quiet_trace_waiting_for_a_calls_parent_is_held_until_the_parent_arrives() {
    // A calls B; B's spans end first and arrive, then A waits in a queue for its next call and
    // nothing arrives for longer than completion_wait. Released then, A's span would come
    // alone, and the wait would read as A's own work.
    let mut b = buffer(small());
    let mut out = Vec::new();
    b.push(span(2, 1, A, Kind::Client, 5, 20), 20);
    b.push(span(3, 2, B, Kind::Server, 6, 19), 20);
    b.release(60, &mut out);
    assert!(
        out.is_empty(),
        "released while A's CLIENT span waits for its parent"
    );
    assert!(b.stats().held_for_parent > 0);
    b.push(span(1, 0, A, Kind::Server, 0, 70), 70);
    b.release(79, &mut out);
    assert!(out.is_empty());
    b.release(80, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].is_complete());
    assert_eq!(out[0].spans.len(), 3);
}

#[test]
fn a_quiet_trace_whose_top_is_a_server_span_with_a_remote_parent_is_released() {
    // Behind an ingress that propagates context without sending spans, every trace's top span
    // has a parent that never comes: it goes after completion_wait, as any quiet trace.
    let mut b = buffer(small());
    let mut out = Vec::new();
    b.push(span(2, 1, A, Kind::Server, 0, 9), 9);
    b.push(span(3, 2, A, Kind::Client, 1, 8), 9);
    b.release(19, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].roots, out[0].orphans), (0, 1));
}

#[test]
fn a_trace_waiting_for_a_parent_goes_at_max_wait() {
    let mut b = buffer(small());
    let mut out = Vec::new();
    b.push(span(2, 1, A, Kind::Client, 0, 5), 0);
    b.release(99, &mut out);
    assert!(out.is_empty());
    b.release(100, &mut out);
    assert_eq!(out.len(), 1);
    assert!(!out[0].is_complete());
}

#[test]
fn buffer_releases_a_trace_that_never_completes_at_max_wait() {
    let mut b = buffer(BufferConfig {
        max_spans: 100,
        max_spans_per_trace: 100,
        ..small()
    });
    let mut out = Vec::new();
    for now in (0..=100).step_by(5) {
        b.push(internal(2, 1, A, 0, 1), now);
        b.release(now, &mut out);
        if !out.is_empty() {
            break;
        }
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].last_seen, 100);
    assert_eq!((out[0].roots, out[0].orphans), (0, 1));
    assert!(!out[0].is_complete());
    let stats = b.stats();
    assert_eq!(stats.released_incomplete, 1);
    assert_eq!(stats.dropped.duplicate_span_id, 20);
}

#[test]
fn buffer_evicts_the_oldest_trace_past_max_traces() {
    let mut b = buffer(small());
    for t in 1..=4 {
        b.push(in_trace(t, internal(1, 0, A, 0, 1)), u64::from(t));
    }
    assert_eq!(b.trace_count(), 3);
    let mut out = Vec::new();
    b.flush(&mut out);
    let ids: Vec<u8> = out.iter().map(|t| t.trace_id[0]).collect();
    assert_eq!(ids, [2, 3, 4]);
    let stats = b.stats();
    assert_eq!((stats.traces_evicted, stats.dropped.evicted), (1, 1));
}

#[test]
fn buffer_evicts_older_traces_past_max_spans_and_never_the_growing_one() {
    let mut b = buffer(BufferConfig {
        max_spans_per_trace: 100,
        ..small()
    });
    for i in 1..=4 {
        b.push(in_trace(1, internal(i, 0, A, 0, 1)), 0);
    }
    for i in 1..=12 {
        b.push(in_trace(2, internal(i, 0, A, 0, 1)), 1);
        assert!(b.span_count() <= 10);
    }
    let stats = b.stats();
    assert_eq!((stats.traces_evicted, stats.dropped.evicted), (1, 4));
    assert_eq!(stats.dropped.buffer_full, 2);
    let mut out = Vec::new();
    b.flush(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].spans.len(), 10);
    assert!(out[0].truncated);
}

#[test]
fn buffer_truncates_a_trace_past_max_spans_per_trace() {
    let mut b = buffer(small());
    for i in 1..=6 {
        b.push(internal(i, 0, A, 0, 1), 0);
    }
    let mut out = Vec::new();
    b.flush(&mut out);
    assert_eq!(out[0].spans.len(), 4);
    assert!(out[0].truncated);
    assert!(!out[0].is_complete());
    let stats = b.stats();
    assert_eq!(stats.dropped.trace_too_long, 2);
    assert_eq!(stats.released_truncated, 1);
}

#[test]
fn buffer_drops_and_counts_inverted_spans_and_zero_ids() {
    let mut b = buffer(small());
    b.push(internal(1, 0, A, 10, 9), 0);
    b.push(internal(0, 0, A, 0, 9), 0);
    b.push(in_trace(0, internal(1, 0, A, 0, 9)), 0);
    assert_eq!(b.trace_count(), 0);
    let dropped = b.stats().dropped;
    assert_eq!((dropped.end_before_start, dropped.zero_id), (1, 2));
    assert_eq!(dropped.total(), 3);
}

#[test]
fn buffer_keeps_the_first_of_duplicate_span_ids() {
    let mut b = buffer(small());
    b.push(internal(5, 0, A, 0, 10), 0);
    b.push(internal(5, 0, B, 0, 20), 0);
    b.push(internal(6, 5, A, 1, 2), 0);
    let mut out = Vec::new();
    b.flush(&mut out);
    assert_eq!(out[0].spans.len(), 2);
    assert_eq!(out[0].spans[0].service, A);
    assert_eq!(b.stats().dropped.duplicate_span_id, 1);
    assert!(out[0].is_complete());
}

#[test]
fn buffer_config_is_validated() {
    let zero = BufferConfig {
        max_traces: 0,
        ..small()
    };
    assert_eq!(
        TraceBuffer::new(zero).unwrap_err(),
        BufferConfigError::ZeroBound("max_traces")
    );
    let inverted = BufferConfig {
        max_wait: 1,
        ..small()
    };
    assert!(TraceBuffer::new(inverted).is_err());
}

#[test]
fn memory_per_buffered_span_is_measured() {
    assert_eq!(std::mem::size_of::<SpanRecord>(), 64);
    for spans_per_trace in [8u64, 40] {
        let mut b = buffer(BufferConfig::default());
        let traces = 2_000u64;
        for t in 0..traces {
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(t + 1).to_be_bytes());
            for i in 1..=spans_per_trace {
                let mut s = internal(i, i - 1, A, 0, 1);
                s.trace_id = trace_id;
                b.push(s, t);
            }
        }
        let per_span = b.memory_bytes() as f64 / b.span_count() as f64;
        println!("{spans_per_trace}-span traces: {per_span:.1} bytes per buffered span");
        assert!(per_span < 120.0, "{per_span}");
    }
}

// ---- tree and critical path -------------------------------------------------------------

#[test]
fn chain_path_alternates_between_parent_and_child() {
    let spans = [
        internal(1, 0, A, 0, 100),
        internal(2, 1, B, 10, 90),
        internal(3, 2, C, 20, 70),
    ];
    assert_eq!(
        path(&spans),
        [
            (1, 0, 10),
            (2, 10, 20),
            (3, 20, 70),
            (2, 70, 90),
            (1, 90, 100)
        ]
    );
    let b = analyze(&spans).unwrap().breakdown;
    assert_eq!(b.service(A).unwrap().own, 20);
    assert_eq!(b.service(B).unwrap().own, 30);
    assert_eq!(b.service(C).unwrap().own, 50);
    assert_eq!(b.service(A).unwrap().downstream, 80);
    assert_eq!(b.service(B).unwrap().downstream, 50);
    assert_eq!(b.service(C).unwrap().downstream, 0);
    assert_eq!(attributed(&b), 100);
}

#[test]
fn fan_out_follows_the_slowest_parallel_child() {
    let spans = [
        internal(1, 0, A, 0, 100),
        internal(2, 1, B, 10, 40),
        internal(3, 1, C, 10, 80),
        internal(4, 1, B, 15, 60),
    ];
    assert_eq!(path(&spans), [(1, 0, 10), (3, 10, 80), (1, 80, 100)]);
    let b = analyze(&spans).unwrap().breakdown;
    assert_eq!(b.service(B).unwrap().own, 0);
    assert_eq!(b.service(C).unwrap().own, 70);
}

#[test]
fn sequential_children_are_all_on_the_path() {
    let spans = [
        internal(1, 0, A, 0, 100),
        internal(2, 1, B, 10, 40),
        internal(3, 1, C, 50, 80),
        // Overlaps child 3, which finished last: skipped.
        internal(4, 1, C, 30, 60),
    ];
    assert_eq!(
        path(&spans),
        [
            (1, 0, 10),
            (2, 10, 40),
            (1, 40, 50),
            (3, 50, 80),
            (1, 80, 100)
        ]
    );
}

#[test]
fn client_server_gap_is_the_callees_queueing_and_response() {
    let spans = [
        span(1, 0, A, Kind::Server, 0, 100),
        span(2, 1, A, Kind::Client, 10, 90),
        span(3, 2, B, Kind::Server, 30, 80),
    ];
    let b = analyze(&spans).unwrap().breakdown;
    let a = b.service(A).unwrap();
    let callee = b.service(B).unwrap();
    assert_eq!((a.own, a.queueing, a.response), (20, 0, 0));
    assert_eq!((callee.own, callee.queueing, callee.response), (50, 20, 10));
    assert_eq!(a.downstream, 80);
    let edge = b.edge(A, B).unwrap();
    assert_eq!((edge.queueing, edge.response), (20, 10));
    assert_eq!((a.arrivals, a.server_own_work), (1, 20));
    assert_eq!((callee.arrivals, callee.server_own_work), (1, 50));
    assert_eq!((b.duration, b.root_service, b.root_operation), (100, A, OP));
    assert_eq!(attributed(&b), 100);
}

#[test]
fn explicit_queue_span_is_queueing_of_its_service() {
    let mut queue = internal(2, 1, A, 0, 30);
    queue.queue = true;
    let spans = [
        span(1, 0, A, Kind::Server, 0, 100),
        queue,
        internal(3, 1, A, 30, 90),
    ];
    let b = analyze(&spans).unwrap().breakdown;
    let a = b.service(A).unwrap();
    assert_eq!((a.own, a.queueing), (70, 30));
    assert_eq!(a.server_own_work, 70);
}

#[test]
fn client_without_server_child_goes_to_its_peer_or_the_caller() {
    let mut to_peer = span(2, 1, A, Kind::Client, 10, 50);
    to_peer.peer = PEER;
    let spans = [
        span(1, 0, A, Kind::Server, 0, 100),
        to_peer,
        span(3, 1, A, Kind::Client, 60, 90),
    ];
    let b = analyze(&spans).unwrap().breakdown;
    let peer = b.service(PEER).unwrap();
    assert!(peer.pseudo);
    assert_eq!(peer.own, 40);
    let a = b.service(A).unwrap();
    assert!(!a.pseudo);
    assert_eq!(a.own, 60);
    assert_eq!(a.downstream, 40);
    assert_eq!(a.server_own_work, 30);
    assert!(b.edges.is_empty());
}

#[test]
fn children_overflowing_their_parent_are_clipped() {
    let spans = [
        internal(1, 0, A, 10, 100),
        internal(2, 1, B, 80, 130),
        internal(3, 1, C, 0, 30),
    ];
    assert_eq!(path(&spans), [(3, 10, 30), (1, 30, 80), (2, 80, 100)]);
    let analysis = analyze(&spans).unwrap();
    assert_eq!(analysis.tree.clipped, 2);
    assert_eq!(attributed(&analysis.breakdown), 90);
}

#[test]
fn child_wholly_outside_its_parent_is_skew_and_ignored() {
    let spans = [
        internal(1, 0, A, 100, 200),
        internal(2, 1, B, 250, 300),
        internal(3, 1, B, 10, 50),
    ];
    assert_eq!(path(&spans), [(1, 100, 200)]);
    assert_eq!(analyze(&spans).unwrap().tree.skewed, 2);
}

#[test]
fn the_longest_of_several_roots_is_analysed_and_the_rest_are_orphans() {
    let spans = [
        internal(1, 0, A, 0, 50),
        internal(2, 99, B, 0, 80),
        internal(3, 2, C, 10, 20),
    ];
    let analysis = analyze(&spans).unwrap();
    assert_eq!(spans[analysis.root as usize].span_id, 2);
    assert_eq!((analysis.tree.roots, analysis.tree.orphans), (2, 1));
    assert_eq!(analysis.breakdown.duration, 80);
    let mut stats = AnalysisStats::default();
    stats.record(&Ok(analysis));
    assert_eq!(stats.orphan_roots, 1);
}

#[test]
fn parent_cycles_are_refused_and_counted() {
    let cycle = [
        internal(1, 0, A, 0, 100),
        internal(2, 3, B, 10, 20),
        internal(3, 2, B, 10, 20),
        internal(4, 3, B, 10, 20),
    ];
    let outcome = analyze(&cycle);
    assert_eq!(outcome, Err(TreeError::Cycle { spans: 3 }));
    let self_parent = [internal(1, 1, A, 0, 10)];
    let outcome2 = analyze(&self_parent);
    assert_eq!(outcome2, Err(TreeError::Cycle { spans: 1 }));
    let mut stats = AnalysisStats::default();
    stats.record(&outcome);
    stats.record(&outcome2);
    stats.record(&analyze(&[]));
    assert_eq!((stats.refused_cycle, stats.refused_empty), (2, 1));
}

#[test]
fn duplicate_span_ids_keep_the_first_and_invalid_spans_are_left_out() {
    let spans = [
        internal(1, 0, A, 0, 100),
        internal(2, 1, B, 10, 20),
        internal(2, 1, C, 10, 90),
        internal(3, 1, C, 50, 40),
        internal(0, 1, C, 10, 95),
    ];
    let analysis = analyze(&spans).unwrap();
    assert_eq!((analysis.tree.duplicates, analysis.tree.invalid), (1, 2));
    assert_eq!(path(&spans), [(1, 0, 10), (2, 10, 20), (1, 20, 100)]);
}

#[test]
fn a_50_000_span_chain_is_walked_without_recursion() {
    let n = 50_000u64;
    let services = [A, B, C];
    let spans: Vec<SpanRecord> = (1..=n)
        .map(|i| {
            let kind = if i % 2 == 0 {
                Kind::Client
            } else {
                Kind::Server
            };
            span(i, i - 1, services[(i / 2 % 3) as usize], kind, i, 3 * n - i)
        })
        .collect();
    let analysis = analyze(&spans).unwrap();
    assert_eq!(analysis.segments.len(), 2 * n as usize - 1);
    assert_eq!(attributed(&analysis.breakdown), analysis.breakdown.duration);
    let arrivals: u32 = analysis.breakdown.services.iter().map(|s| s.arrivals).sum();
    assert_eq!(arrivals, n as u32 / 2);
}

#[test]
fn a_zero_length_root_has_an_empty_path() {
    let spans = [internal(1, 0, A, 5, 5), internal(2, 1, B, 5, 5)];
    let analysis = analyze(&spans).unwrap();
    assert!(analysis.segments.is_empty());
    assert_eq!(analysis.breakdown.duration, 0);
}

#[test]
fn downstream_counts_a_service_once_however_often_it_recurs() {
    // A → B → A → C: A's spans contain C's time once, not twice.
    let spans = [
        internal(1, 0, A, 0, 100),
        internal(2, 1, B, 10, 90),
        internal(3, 2, A, 20, 80),
        internal(4, 3, C, 30, 70),
    ];
    let b = analyze(&spans).unwrap().breakdown;
    assert_eq!(b.service(A).unwrap().own, 40);
    assert_eq!(b.service(A).unwrap().downstream, 60);
    assert_eq!(b.service(B).unwrap().downstream, 60);
}
