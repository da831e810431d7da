//! Per-operation latency statistics: histogram counts of every span of a service::operation,
//! whether or not a rule looks at it.

/// Upper bounds, in seconds, of the per-operation latency histogram buckets; a last bucket
/// (`+Inf`) takes the rest.
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for integer comparisons on the hot path.
const LATENCY_BUCKETS_NANOS: [u64; 13] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Number of histogram buckets, `+Inf` included.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKETS_NANOS.len() + 1;

/// Latency counts of one service::operation since the last drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyCounts {
    /// Spans per bucket of [`LATENCY_BUCKETS_SECONDS`], `+Inf` last (not cumulative).
    pub buckets: [u64; LATENCY_BUCKET_COUNT],
    /// Spans.
    pub count: u64,
    /// Sum of the durations, in nanoseconds.
    pub sum_nanos: u64,
}

impl LatencyCounts {
    pub(super) fn record(&mut self, duration: u64) {
        let bucket = LATENCY_BUCKETS_NANOS.partition_point(|&bound| bound < duration);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(duration);
    }
}

/// Statistics of one service::operation.
#[derive(Debug)]
pub(super) struct OperationStats {
    pub(super) service: usize,
    pub(super) operation: Box<str>,
    pub(super) pending: LatencyCounts,
    pub(super) total: u64,
}
