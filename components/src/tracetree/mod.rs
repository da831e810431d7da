//! Trace-tree analysis: from OTLP spans to each trace's critical path and its per-service
//! attribution, for an SLO-driven scaler and an attribution evaluator.
//!
//! The stages, each usable alone and all synchronous:
//!
//! 1. [`SpanCatalog::extract`] turns `ResourceSpans` into 64-byte [`SpanRecord`]s, interning
//!    service and operation names in bounded [`Interner`]s and remembering each service's
//!    Kubernetes workload.
//! 2. [`TraceBuffer`] groups records by trace and releases a trace once it has gone quiet
//!    (`completion_wait`, at most `max_wait`), with hard bounds on traces and spans. Time is
//!    passed in by the caller.
//! 3. [`TraceTree::build`] arranges a trace's spans as a tree, tolerating orphans, duplicates,
//!    invalid spans and clock skew, and refusing parent cycles. Spans without a kind get the
//!    one the service changes around them imply ([`TraceTree::kind`]), so span streams without
//!    kinds (Jaeger or Zipkin exports, converted datasets) are analysed too.
//! 4. [`critical_path`] walks the last-finishing child (Jaeger, FIRM) into [`Segment`]s that
//!    exactly cover the root.
//! 5. [`breakdown`] attributes the path to services as own work, queueing and response, per
//!    edge, and counts arrivals and their own work per service.
//!
//! [`analyze`] runs 3–5. Nothing recurses, so a 50,000-span chain costs heap, not stack.
//!
//! Memory: a buffered span costs its 64-byte record, the slack of its trace's `Vec` (which
//! grows by doubling: a 40-span trace has room for 64) and its share of the trace's map entry,
//! deadline and arrival-order slots (about 170 bytes a trace). [`TraceBuffer::memory_bytes`]
//! reports the total: measured at 88 bytes a span for 8-span traces and 107 for 40-span ones.

mod analysis;
mod breakdown;
mod buffer;
mod critical_path;
mod intern;
mod kinds;
mod span;
mod tree;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use analysis::{AnalysisStats, TraceAnalysis, analyze};
pub use breakdown::{EdgeGaps, ServiceBreakdown, TraceBreakdown, breakdown};
pub use buffer::{
    BufferConfig, BufferConfigError, BufferStats, DroppedSpans, ReleasedTrace, TraceBuffer,
};
pub use critical_path::{Segment, critical_path, critical_path_into};
pub use intern::{Interner, OTHER_NAME, Symbol};
pub use span::{
    CatalogConfig, CatalogStats, DEFAULT_QUEUE_SPAN_NAME, Kind, SpanCatalog, SpanRecord,
    UNKNOWN_SERVICE, Workload, WorkloadKind,
};
pub use tree::{TraceTree, TreeError, TreeStats};
