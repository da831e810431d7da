//! The span generator, plain synchronous code: seeded, so runs repeat exactly.

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracescale_core::signal::Traces;

use crate::random::{self, SplitMix64};

/// The call chain of the demo shop: (service, operation, span kind, median ms).
const CHAIN: [(&str, &str, SpanKind, f64); 3] = [
    ("frontend", "GET /checkout", SpanKind::Server, 4.0),
    ("checkout", "PlaceOrder", SpanKind::Server, 6.0),
    ("payments-db", "INSERT payments", SpanKind::Client, 3.0),
];

/// Generates traces frontend → checkout → payments-db with log-normal self times.
pub struct Generator {
    rng: SplitMix64,
    slow_share: f64,
}

impl Generator {
    /// A generator; the same seed gives the same ids and durations.
    pub fn new(seed: u64, slow_share: f64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            slow_share,
        }
    }

    /// A log-normal sample with the given median and σ = 0.5 (Box–Muller).
    fn lognormal(&mut self, median_ms: f64) -> f64 {
        random::log_normal(median_ms, 0.5, self.rng.standard_normal())
    }

    /// One batch of `traces` traces, grouped by service as an SDK would send them.
    pub fn batch(&mut self, traces: usize) -> Traces {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut by_service: [Vec<Span>; 3] = Default::default();
        for _ in 0..traces {
            let trace_id = [
                self.rng.next_u64().to_be_bytes(),
                self.rng.next_u64().to_be_bytes(),
            ]
            .concat();
            let slow = self.rng.next_f64() < self.slow_share;
            // Self time of each hop, innermost last; a slow trace has a slow database call.
            let mut self_ms = [0.0; 3];
            for (i, (_, _, _, median)) in CHAIN.iter().enumerate() {
                self_ms[i] = self.lognormal(*median);
            }
            if slow {
                self_ms[2] *= 40.0;
            }
            let ids: Vec<Vec<u8>> = (0..3)
                .map(|_| self.rng.next_u64().to_be_bytes().to_vec())
                .collect();
            // Each span covers its own time plus everything below it.
            let mut start = now;
            for (i, (_, operation, kind, _)) in CHAIN.iter().enumerate() {
                let total_ms: f64 = self_ms[i..].iter().sum();
                let duration = (total_ms * 1e6) as u64;
                by_service[i].push(Span {
                    trace_id: trace_id.clone(),
                    span_id: ids[i].clone(),
                    parent_span_id: if i == 0 {
                        Vec::new()
                    } else {
                        ids[i - 1].clone()
                    },
                    name: (*operation).to_string(),
                    kind: *kind as i32,
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + duration,
                    ..Default::default()
                });
                start += (self_ms[i] * 0.5 * 1e6) as u64;
            }
        }
        let resource_spans = CHAIN
            .iter()
            .zip(by_service)
            .map(|((service, ..), spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue((*service).to_string())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tracescale.demo_traces".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect();
        Traces::new(resource_spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_three_spans_per_trace_in_valid_order() {
        let mut g = Generator::new(7, 0.5);
        let t = g.batch(20);
        assert_eq!(t.span_count(), 60);
        for span in t
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            assert_eq!(span.trace_id.len(), 16);
            assert_eq!(span.span_id.len(), 8);
            assert!(span.end_time_unix_nano > span.start_time_unix_nano);
        }
    }

    #[test]
    fn a_seed_repeats_ids_and_durations() {
        let strip = |t: Traces| -> Vec<(Vec<u8>, u64)> {
            t.resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
                .map(|s| {
                    (
                        s.span_id.clone(),
                        s.end_time_unix_nano - s.start_time_unix_nano,
                    )
                })
                .collect()
        };
        let a = strip(Generator::new(3, 0.1).batch(5));
        let b = strip(Generator::new(3, 0.1).batch(5));
        assert_eq!(a, b);
    }
}
