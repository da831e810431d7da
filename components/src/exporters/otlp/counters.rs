//! The exporter's own counters: spans sent, spans dropped by reason, retries. Registered once at
//! start; a copy in atomics lets tests read them without a metrics recorder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::Counter;

/// Why spans that `export` had accepted were not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DropReason {
    /// The server accepted the request but rejected these spans (`partial_success`).
    Rejected,
    /// The server refused the request with a status retrying cannot fix.
    PermanentError,
    /// Retries are disabled, or `max_elapsed_time` passed.
    RetriesExhausted,
    /// The shutdown deadline passed before the spans could be sent.
    Shutdown,
}

impl DropReason {
    const ALL: [DropReason; 4] = [
        DropReason::Rejected,
        DropReason::PermanentError,
        DropReason::RetriesExhausted,
        DropReason::Shutdown,
    ];

    /// The `reason` label.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            DropReason::Rejected => "rejected",
            DropReason::PermanentError => "permanent_error",
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::Shutdown => "shutdown",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What has been counted so far.
#[derive(Debug, Default)]
pub(super) struct Tally {
    sent: AtomicU64,
    retries: AtomicU64,
    dropped: [AtomicU64; 4],
}

impl Tally {
    /// Spans the server accepted.
    pub(super) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Requests sent again after a failure.
    pub(super) fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Spans dropped for `reason`.
    pub(super) fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Ordering::Relaxed)
    }
}

/// The counter handles of one exporter instance.
#[derive(Clone)]
pub(super) struct Counters {
    sent: Counter,
    retries: Counter,
    dropped: [Counter; 4],
    tally: Arc<Tally>,
}

impl Counters {
    /// Registers the counters, labelled with the exporter's id.
    pub(super) fn new(component: &str) -> Self {
        tracescale_core::telemetry::describe(
            &[
                (
                    "tracescale_exporter_otlp_sent_spans_total",
                    "Spans the endpoint accepted.",
                ),
                (
                    "tracescale_exporter_otlp_dropped_spans_total",
                    "Spans not delivered, by reason.",
                ),
                (
                    "tracescale_exporter_otlp_retries_total",
                    "Requests sent again after a retryable failure.",
                ),
            ],
            &[],
            &[],
        );
        let label = component.to_string();
        Self {
            sent: metrics::counter!(
                "tracescale_exporter_otlp_sent_spans_total",
                "component" => label.clone()
            ),
            retries: metrics::counter!(
                "tracescale_exporter_otlp_retries_total",
                "component" => label.clone()
            ),
            dropped: DropReason::ALL.map(|reason| {
                metrics::counter!(
                    "tracescale_exporter_otlp_dropped_spans_total",
                    "component" => label.clone(),
                    "reason" => reason.as_str()
                )
            }),
            tally: Arc::default(),
        }
    }

    /// Counts spans the server accepted.
    pub(super) fn sent(&self, spans: u64) {
        self.sent.increment(spans);
        self.tally.sent.fetch_add(spans, Ordering::Relaxed);
    }

    /// Counts one request sent again.
    pub(super) fn retried(&self) {
        self.retries.increment(1);
        self.tally.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts dropped spans.
    pub(super) fn dropped(&self, reason: DropReason, spans: u64) {
        if spans == 0 {
            return;
        }
        self.dropped[reason.index()].increment(spans);
        self.tally.dropped[reason.index()].fetch_add(spans, Ordering::Relaxed);
    }

    /// What has been counted so far.
    pub(super) fn tally(&self) -> &Tally {
        &self.tally
    }
}
