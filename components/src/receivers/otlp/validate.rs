//! Span validation: the checks a span must pass before it enters a pipeline. Plain code, no I/O.

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

/// Why a span was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The trace id is not 16 bytes, or is all zeros.
    TraceId,
    /// The span id is not 8 bytes, or is all zeros.
    SpanId,
    /// The parent span id is neither empty nor 8 bytes.
    ParentSpanId,
    /// The span ends before it starts.
    EndBeforeStart,
}

impl Invalid {
    /// The sentence a client reads in `partial_success.error_message`.
    pub fn message(self) -> &'static str {
        match self {
            Invalid::TraceId => "trace id must be 16 bytes and not all zeros",
            Invalid::SpanId => "span id must be 8 bytes and not all zeros",
            Invalid::ParentSpanId => "parent span id must be empty or 8 bytes",
            Invalid::EndBeforeStart => "end time is before start time",
        }
    }
}

/// Checks one span.
pub fn check(span: &Span) -> Result<(), Invalid> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(Invalid::TraceId);
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(Invalid::SpanId);
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Err(Invalid::ParentSpanId);
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(Invalid::EndBeforeStart);
    }
    Ok(())
}

/// What [`retain_valid`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Spans removed.
    pub spans: usize,
    /// Spans kept.
    pub kept: usize,
    /// The reason of the first removed span, for the client's message.
    pub first: Option<Invalid>,
}

/// Removes invalid spans in place, and resource and scope groups left empty, keeping the rest
/// with their resource and scope.
pub fn retain_valid(resource_spans: &mut Vec<ResourceSpans>) -> Rejected {
    let mut rejected = Rejected::default();
    for rs in resource_spans.iter_mut() {
        for ss in &mut rs.scope_spans {
            ss.spans.retain(|span| match check(span) {
                Ok(()) => {
                    rejected.kept += 1;
                    true
                }
                Err(reason) => {
                    rejected.spans += 1;
                    rejected.first.get_or_insert(reason);
                    false
                }
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;
    use proptest::prelude::*;
    use prost::Message;

    fn span(trace: Vec<u8>, id: Vec<u8>, parent: Vec<u8>, start: u64, end: u64) -> Span {
        Span {
            trace_id: trace,
            span_id: id,
            parent_span_id: parent,
            name: "op".into(),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Span::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    /// What a receiver does with a body: decode, then keep the valid spans. Every outcome is a
    /// clean error or spans that all pass `check`, with every span accounted for.
    fn decode_and_validate(body: &[u8], json: bool) {
        let decoded = if json {
            serde_json::from_slice::<ExportTraceServiceRequest>(body).map_err(|e| e.to_string())
        } else {
            ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
        };
        let Ok(mut req) = decoded else {
            return;
        };
        let before: usize = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        let rejected = retain_valid(&mut req.resource_spans);
        assert_eq!(rejected.kept + rejected.spans, before);
        assert_eq!(rejected.first.is_some(), rejected.spans > 0);
        for rs in &req.resource_spans {
            assert!(!rs.scope_spans.is_empty());
            for ss in &rs.scope_spans {
                assert!(!ss.spans.is_empty());
                for s in &ss.spans {
                    assert_eq!(check(s), Ok(()));
                }
            }
        }
    }

    fn arb_span() -> impl Strategy<Value = Span> {
        (
            prop::collection::vec(any::<u8>(), 0..20),
            prop::collection::vec(any::<u8>(), 0..12),
            prop::collection::vec(any::<u8>(), 0..12),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(t, i, p, a, b)| span(t, i, p, a, b))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_are_a_clean_error_or_valid_spans(body in prop::collection::vec(any::<u8>(), 0..2048)) {
            decode_and_validate(&body, false);
            decode_and_validate(&body, true);
        }

        #[test]
        fn mutated_requests_are_a_clean_error_or_valid_spans(
            spans in prop::collection::vec(arb_span(), 1..8),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let req = request(spans);
            for (json, mut body) in [
                (false, req.encode_to_vec()),
                (true, serde_json::to_vec(&req).unwrap()),
            ] {
                decode_and_validate(&body, json);
                for (at, byte) in &flips {
                    let i = at.index(body.len());
                    body[i] ^= *byte;
                }
                decode_and_validate(&body, json);
                body.truncate(cut.index(body.len() + 1));
                decode_and_validate(&body, json);
            }
        }

        #[test]
        fn retain_valid_keeps_exactly_the_spans_that_pass(spans in prop::collection::vec(arb_span(), 0..32)) {
            let expected: Vec<Span> = spans.iter().filter(|s| check(s).is_ok()).cloned().collect();
            let mut req = request(spans.clone());
            let r = retain_valid(&mut req.resource_spans);
            let kept: Vec<Span> = req
                .resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .collect();
            prop_assert_eq!(&kept, &expected);
            prop_assert_eq!(r.spans, spans.len() - expected.len());
        }
    }

    #[test]
    fn each_rule_has_its_reason() {
        let ok = || span(vec![1; 16], vec![1; 8], vec![], 1, 2);
        assert_eq!(check(&ok()), Ok(()));
        assert_eq!(
            check(&Span {
                trace_id: vec![0; 16],
                ..ok()
            }),
            Err(Invalid::TraceId)
        );
        assert_eq!(
            check(&Span {
                span_id: vec![1; 7],
                ..ok()
            }),
            Err(Invalid::SpanId)
        );
        assert_eq!(
            check(&Span {
                parent_span_id: vec![1; 4],
                ..ok()
            }),
            Err(Invalid::ParentSpanId)
        );
        assert_eq!(
            check(&Span {
                end_time_unix_nano: 0,
                ..ok()
            }),
            Err(Invalid::EndBeforeStart)
        );
    }
}
