//! What a simulation produces: one span per service visit, one statistics row per interval, and
//! the replica changes scalers made.

/// One service visit, shaped like a tracing span so trace-driven scalers can
/// consume it directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SimSpan<'a> {
    /// Shared by every span of one external request.
    pub trace_id: [u8; 16],
    /// Unique per visit.
    pub span_id: [u8; 8],
    /// The calling visit, `None` for the root.
    pub parent_span_id: Option<[u8; 8]>,
    /// The calling visit's service, `None` for the root.
    pub caller: Option<&'a str>,
    /// Visited service.
    pub service: &'a str,
    /// The service's operation name.
    pub operation: &'a str,
    /// When the caller sent the request: before `start` by the network delay of the call edge.
    pub sent: u64,
    /// Arrival at the service, so queueing is inside the span.
    pub start: u64,
    /// When a slot took the request: `start..started` is the time it queued.
    pub started: u64,
    /// Completion, after all downstream calls.
    pub end: u64,
    /// Rejected by a full queue, or failed because a callee did.
    pub error: bool,
    /// Rejected by a full queue: it never held a slot, so it has no queue wait or work.
    pub rejected: bool,
    /// The replica of the service that served it (`k8s.pod.name` is `<service>-<replica>`).
    pub replica: u32,
    /// The caller's replica, which made the call (0 for the root).
    pub caller_replica: u32,
}

impl SimSpan<'_> {
    /// Span length in nanoseconds.
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Per-service figures for one statistics interval.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceIntervalStats {
    /// Service name.
    pub service: String,
    /// Visits that arrived (admitted or rejected).
    pub arrivals: u64,
    /// Admitted visits that finished.
    pub completions: u64,
    /// Visits turned away by a full queue.
    pub rejections: u64,
    /// Finished visits that failed because a callee failed.
    pub errors: u64,
    /// Median latency of finished visits.
    pub p50_ns: Option<u64>,
    /// 99th percentile latency of finished visits.
    pub p99_ns: Option<u64>,
    /// Waiting requests at the end of the interval.
    pub queue_len: usize,
    /// Occupied slots at the end of the interval.
    pub busy_slots: u32,
    /// Replicas able to serve at the end of the interval.
    pub ready_replicas: u32,
    /// Replicas asked for (ready plus starting) at the end of the interval.
    pub desired_replicas: u32,
    /// CPU used over CPU available on ready replicas during the interval.
    pub cpu_utilisation: f64,
}

/// One closed statistics interval `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalStats {
    /// Interval start.
    pub start: u64,
    /// Interval end (exclusive).
    pub end: u64,
    /// Per-service rows in configuration order.
    pub services: Vec<ServiceIntervalStats>,
    /// Root requests that finished successfully.
    pub root_ok: u64,
    /// Root requests rejected or failed.
    pub root_failed: u64,
    /// End-to-end p50 with failed requests counted as infinitely slow.
    pub e2e_p50_ns: Option<u64>,
    /// End-to-end p99 with failed requests counted as infinitely slow
    /// (`u64::MAX`), so shedding load cannot hide an SLO breach.
    pub e2e_p99_ns: Option<u64>,
    /// End-to-end p99 over successful requests only.
    pub e2e_ok_p99_ns: Option<u64>,
}

impl IntervalStats {
    /// Row of a service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceIntervalStats> {
        self.services.iter().find(|s| s.service == name)
    }

    /// Whether the interval breaches an end-to-end p99 latency objective.
    pub fn violates(&self, slo_ns: u64) -> bool {
        self.e2e_p99_ns.is_some_and(|p| p > slo_ns)
    }
}

/// A replica change made by a scaler, kept for reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleAction {
    /// When it was applied.
    pub time: u64,
    /// Scaled service.
    pub service: String,
    /// Desired replicas before.
    pub from: u32,
    /// Desired replicas after.
    pub to: u32,
}

impl ScaleAction {
    /// Whether capacity was added.
    pub fn is_scale_up(&self) -> bool {
        self.to > self.from
    }
}
