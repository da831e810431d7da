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
