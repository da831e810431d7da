//! Trace-tree analysis per span: extraction from OTLP `ResourceSpans` (one per service per
//! trace, as a receiver hands them over), assembly in the `TraceBuffer`, release, critical path
//! and per-service breakdown, for three trace shapes:
//!
//! - `shop`: 3 services, 8 spans (a queue span and an uninstrumented peer included);
//! - `fan_out`: a gateway calling 9 services in parallel, 10 services, 40 spans;
//! - `chain`: 25 services each calling the next, 50 spans.
//!
//! Each iteration handles a batch of 64 traces; throughput is in spans, so criterion's time per
//! element is the time per span.
//!
//! Run: `cargo bench --bench tracetree -- --warm-up-time 1 --measurement-time 3`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracescale_components::tracetree::{
    BufferConfig, CatalogConfig, SpanCatalog, TraceBuffer, analyze,
};

const TRACES: usize = 64;
const MS: u64 = 1_000_000;

/// SplitMix64, so runs repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A span of a trace template; times in ms from the trace start.
struct Node {
    service: String,
    name: String,
    kind: i32,
    parent: Option<usize>,
    start: u64,
    end: u64,
    peer: Option<&'static str>,
}

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const INTERNAL: i32 = 1;

fn node(service: &str, name: &str, kind: i32, parent: Option<usize>, start: u64, end: u64) -> Node {
    Node {
        service: service.into(),
        name: name.into(),
        kind,
        parent,
        start,
        end,
        peer: None,
    }
}

fn shop() -> Vec<Node> {
    let mut redis = node("cart", "HGET", CLIENT, Some(3), 14, 17);
    redis.peer = Some("redis");
    vec![
        node("frontend", "GET /cart", SERVER, None, 0, 60),
        node("frontend", "render", INTERNAL, Some(0), 50, 58),
        node("frontend", "cart.Get", CLIENT, Some(0), 5, 25),
        node("cart", "cart.Get", SERVER, Some(2), 7, 23),
        redis,
        node("frontend", "checkout.Quote", CLIENT, Some(0), 28, 48),
        node("checkout", "checkout.Quote", SERVER, Some(5), 31, 46),
        node("checkout", "queue", INTERNAL, Some(6), 32, 40),
    ]
}

fn fan_out() -> Vec<Node> {
    let mut nodes = vec![
        node("gateway", "GET /home", SERVER, None, 0, 100),
        node("gateway", "auth", INTERNAL, Some(0), 1, 4),
        node("gateway", "merge", INTERNAL, Some(0), 90, 98),
        node("gateway", "encode", INTERNAL, Some(0), 98, 99),
    ];
    for i in 0..9u64 {
        let service = format!("backend-{i}");
        let client = nodes.len();
        nodes.push(node(
            "gateway",
            &format!("{service}.Get"),
            CLIENT,
            Some(0),
            5,
            20 + 7 * i,
        ));
        nodes.push(node(&service, "Get", SERVER, Some(client), 6, 19 + 7 * i));
        nodes.push(node(
            &service,
            "compute",
            INTERNAL,
            Some(client + 1),
            7,
            10 + 3 * i,
        ));
        let mut db = node(
            &service,
            "SELECT",
            CLIENT,
            Some(client + 1),
            11 + 3 * i,
            18 + 7 * i,
        );
        db.peer = Some("postgres");
        nodes.push(db);
    }
    nodes
}

fn chain() -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..25u64 {
        let service = format!("tier-{i}");
        let parent = nodes.len().checked_sub(1);
        nodes.push(node(&service, "handle", SERVER, parent, 2 * i, 200 - 2 * i));
        if i < 24 {
            let server = nodes.len() - 1;
            nodes.push(node(
                &service,
                "call",
                CLIENT,
                Some(server),
                2 * i + 1,
                199 - 2 * i,
            ));
        } else {
            nodes.push(node(
                &service,
                "work",
                INTERNAL,
                Some(nodes.len() - 1),
                50,
                150,
            ));
        }
    }
    nodes
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// `TRACES` instances of `template`, one `ResourceSpans` per service per trace.
fn batch(template: &[Node], rng: &mut Rng) -> Vec<ResourceSpans> {
    let mut out = Vec::new();
    for t in 0..TRACES as u64 {
        let trace_id = [rng.next().to_be_bytes(), rng.next().to_be_bytes()].concat();
        let ids: Vec<[u8; 8]> = template
            .iter()
            .map(|_| (rng.next() | 1).to_be_bytes())
            .collect();
        let base = 1_700_000_000_000_000_000 + t * 1_000 * MS;
        let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
        for (i, n) in template.iter().enumerate() {
            by_service.entry(&n.service).or_default().push(Span {
                trace_id: trace_id.clone(),
                span_id: ids[i].to_vec(),
                parent_span_id: n.parent.map(|p| ids[p].to_vec()).unwrap_or_default(),
                name: n.name.clone(),
                kind: n.kind,
                start_time_unix_nano: base + n.start * MS,
                end_time_unix_nano: base + n.end * MS,
                attributes: n
                    .peer
                    .map(|p| vec![string_kv("peer.service", p)])
                    .unwrap_or_default(),
                ..Span::default()
            });
        }
        for (service, spans) in by_service {
            out.push(ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        string_kv("service.name", service),
                        string_kv("k8s.namespace.name", "shop"),
                        string_kv("k8s.deployment.name", service),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            });
        }
    }
    out
}

fn analysis(c: &mut Criterion) {
    let mut rng = Rng(42);
    let mut group = c.benchmark_group("tracetree/extract_assemble_analyze");
    for (name, template) in [("shop", shop()), ("fan_out", fan_out()), ("chain", chain())] {
        let batch = batch(&template, &mut rng);
        let spans = (TRACES * template.len()) as u64;
        group.throughput(Throughput::Elements(spans));
        let mut catalog = SpanCatalog::new(CatalogConfig::default());
        let config = BufferConfig::default();
        let mut buffer = TraceBuffer::new(config).unwrap_or_else(|e| panic!("{e}"));
        let mut records = Vec::new();
        let mut released = Vec::new();
        let mut now = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                records.clear();
                released.clear();
                catalog.extract(black_box(&batch), &mut records);
                for record in records.drain(..) {
                    buffer.push(record, now);
                }
                now += config.completion_wait;
                buffer.release(now, &mut released);
                assert_eq!(released.len(), TRACES);
                for trace in &released {
                    let analysis = analyze(&trace.spans).unwrap_or_else(|e| panic!("{e}"));
                    black_box(analysis);
                }
            });
        });
    }
    group.finish();
}

criterion_group!(benches, analysis);
criterion_main!(benches);
