//! Groups spans into traces and releases a trace once it has gone quiet, as the Collector's
//! tail-sampling processor does with `decision_wait`.
//!
//! Time is whatever the caller passes as `now` (unix nanoseconds): wall time for a live
//! pipeline, span time for a replay. Nothing here reads a clock.
//!
//! A trace goes quiet whenever a request in it waits: in a queue, or on a slow downstream call,
//! nothing of it ends, so no span of it arrives. A quiet trace in which a CLIENT, PRODUCER or
//! INTERNAL span has arrived without its parent (the caller's span, which ends after it) is
//! therefore held on until that parent arrives, up to `max_wait` after its first span: released
//! early, it would come out as fragments, and the caller's wait would read as its own work.
//!
//! Every bound is hard: traces, total spans and spans per trace. What does not fit is dropped
//! or evicted (oldest trace first) and counted in [`BufferStats`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::mem::size_of;

use thiserror::Error;

use super::span::{Kind, SpanRecord};

/// Bounds and waits of a [`TraceBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferConfig {
    /// Release a trace once no span arrived for this long (ns), unless a span in it still
    /// waits for a parent its own service records (see the module docs).
    pub completion_wait: u64,
    /// Release a trace at the latest this long (ns) after its first span, so that a trace fed
    /// a span now and then cannot stay forever.
    pub max_wait: u64,
    /// Traces held at once; a new trace past it evicts the oldest.
    pub max_traces: usize,
    /// Spans held at once over all traces; past it the oldest traces are evicted.
    pub max_spans: usize,
    /// Spans kept per trace; later ones are dropped and the trace marked truncated.
    pub max_spans_per_trace: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            completion_wait: 5_000_000_000,
            max_wait: 30_000_000_000,
            max_traces: 50_000,
            max_spans: 1_000_000,
            max_spans_per_trace: 50_000,
        }
    }
}

/// A configuration no buffer can honour.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BufferConfigError {
    /// A bound of zero would drop everything.
    #[error("`{0}` must be at least 1")]
    ZeroBound(&'static str),
    /// A trace would be released on its deadline before it could complete.
    #[error("`max_wait` ({max_wait} ns) is shorter than `completion_wait` ({completion_wait} ns)")]
    MaxWaitBelowCompletionWait {
        /// The configured `max_wait`.
        max_wait: u64,
        /// The configured `completion_wait`.
        completion_wait: u64,
    },
}

impl BufferConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), BufferConfigError> {
        for (name, value) in [
            ("max_traces", self.max_traces),
            ("max_spans", self.max_spans),
            ("max_spans_per_trace", self.max_spans_per_trace),
        ] {
            if value == 0 {
                return Err(BufferConfigError::ZeroBound(name));
            }
        }
        if self.max_wait < self.completion_wait {
            return Err(BufferConfigError::MaxWaitBelowCompletionWait {
                max_wait: self.max_wait,
                completion_wait: self.completion_wait,
            });
        }
        Ok(())
    }
}

/// Spans the buffer did not keep, by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DroppedSpans {
    /// The trace already held `max_spans_per_trace` spans.
    pub trace_too_long: u64,
    /// `max_spans` was reached and no other trace was left to evict.
    pub buffer_full: u64,
    /// The span ended before it started.
    pub end_before_start: u64,
    /// The trace id or span id was zero (or malformed).
    pub zero_id: u64,
    /// A span id already seen in the trace; the first one is kept.
    pub duplicate_span_id: u64,
    /// Held by a trace that was evicted.
    pub evicted: u64,
}

impl DroppedSpans {
    /// All dropped spans.
    pub fn total(&self) -> u64 {
        self.trace_too_long
            + self.buffer_full
            + self.end_before_start
            + self.zero_id
            + self.duplicate_span_id
            + self.evicted
    }
}

/// Counters since creation, to export as metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BufferStats {
    /// Spans accepted into a trace.
    pub spans_accepted: u64,
    /// Spans dropped, by reason.
    pub dropped: DroppedSpans,
    /// Traces started.
    pub traces_started: u64,
    /// Traces evicted unreleased because a bound was reached.
    pub traces_evicted: u64,
    /// Traces released with exactly one root, no orphan and nothing truncated.
    pub released_complete: u64,
    /// Traces released with no root, several roots, orphans or truncation.
    pub released_incomplete: u64,
    /// Times a quiet trace was held on because a span in it still waited for its parent.
    pub held_for_parent: u64,
    /// Traces released truncated (a subset of the two above).
    pub released_truncated: u64,
}

/// A trace the buffer let go, spans sorted by span id and free of duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedTrace {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The spans, sorted by span id, one per span id.
    pub spans: Vec<SpanRecord>,
    /// Spans were dropped because the trace was too long.
    pub truncated: bool,
    /// Spans without a parent id.
    pub roots: u32,
    /// Spans whose parent is not in the trace.
    pub orphans: u32,
    /// `now` when the first span arrived.
    pub first_seen: u64,
    /// `now` when the last span arrived.
    pub last_seen: u64,
}

impl ReleasedTrace {
    /// One root, no orphan, nothing truncated: the trace is probably whole.
    pub fn is_complete(&self) -> bool {
        self.roots == 1 && self.orphans == 0 && !self.truncated
    }
}

#[derive(Debug)]
struct Entry {
    spans: Vec<SpanRecord>,
    first_seen: u64,
    last_seen: u64,
    /// Tells this trace from an earlier, evicted or released one of the same id.
    seq: u64,
    truncated: bool,
}

impl Entry {
    /// True when a span's parent, which its own process records, has not arrived: a CLIENT,
    /// PRODUCER or INTERNAL span is started inside a span of the same service, which ends
    /// after it. A SERVER or CONSUMER span's parent may be remote and never exported (an
    /// ingress that propagates context without sending spans), so it is not waited for.
    fn awaits_local_parent(&mut self) -> bool {
        let local = |s: &SpanRecord| {
            s.parent_id != 0 && matches!(s.kind, Kind::Client | Kind::Producer | Kind::Internal)
        };
        // The root ends last: once it is here, a missing parent is lost, not late.
        if self.spans.iter().any(|s| s.parent_id == 0) || !self.spans.iter().any(local) {
            return false;
        }
        // In place and stable, as the release sorts them: arrival order among duplicates is
        // kept, and the spans already sorted make the next sort cheap.
        self.spans.sort_by_key(|s| s.span_id);
        let spans = &self.spans;
        spans.iter().any(|s| local(s) && parent_missing(spans, s))
    }

    fn deadline(&self, config: &BufferConfig) -> u64 {
        self.last_seen
            .saturating_add(config.completion_wait)
            .min(self.first_seen.saturating_add(config.max_wait))
    }
}

/// True when `span` has a parent id that no span of `sorted` (sorted by span id) carries.
fn parent_missing(sorted: &[SpanRecord], span: &SpanRecord) -> bool {
    span.parent_id != 0
        && sorted
            .binary_search_by_key(&span.parent_id, |s| s.span_id)
            .is_err()
}

/// Holds spans by trace until each trace is complete; see the module docs.
#[derive(Debug)]
pub struct TraceBuffer {
    config: BufferConfig,
    traces: HashMap<[u8; 16], Entry>,
    /// One live entry per trace, `(deadline, seq, id)`; a popped entry whose trace moved its
    /// deadline is pushed back, since deadlines only move later.
    deadlines: BinaryHeap<Reverse<(u64, u64, [u8; 16])>>,
    /// Traces in arrival order, for eviction; stale entries are skipped.
    order: VecDeque<(u64, [u8; 16])>,
    spans: usize,
    next_seq: u64,
    stats: BufferStats,
}

impl TraceBuffer {
    /// An empty buffer.
    pub fn new(config: BufferConfig) -> Result<Self, BufferConfigError> {
        config.validate()?;
        Ok(TraceBuffer {
            config,
            traces: HashMap::new(),
            deadlines: BinaryHeap::new(),
            order: VecDeque::new(),
            spans: 0,
            next_seq: 0,
            stats: BufferStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BufferConfig {
        &self.config
    }

    /// Adds a span that arrived at `now`.
    pub fn push(&mut self, span: SpanRecord, now: u64) {
        if span.trace_id == [0; 16] || span.span_id == 0 {
            self.stats.dropped.zero_id += 1;
            return;
        }
        if span.end < span.start {
            self.stats.dropped.end_before_start += 1;
            return;
        }
        let id = span.trace_id;
        if let Some(entry) = self.traces.get_mut(&id) {
            entry.last_seen = entry.last_seen.max(now);
            if entry.spans.len() >= self.config.max_spans_per_trace {
                entry.truncated = true;
                self.stats.dropped.trace_too_long += 1;
                return;
            }
        } else {
            if self.traces.len() >= self.config.max_traces {
                self.evict_oldest(None);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let entry = Entry {
                spans: Vec::new(),
                first_seen: now,
                last_seen: now,
                seq,
                truncated: false,
            };
            self.deadlines
                .push(Reverse((entry.deadline(&self.config), seq, id)));
            self.order.push_back((seq, id));
            self.traces.insert(id, entry);
            self.stats.traces_started += 1;
        }
        while self.spans >= self.config.max_spans {
            if !self.evict_oldest(Some(id)) {
                self.stats.dropped.buffer_full += 1;
                if let Some(entry) = self.traces.get_mut(&id) {
                    entry.truncated = true;
                }
                return;
            }
        }
        if let Some(entry) = self.traces.get_mut(&id) {
            entry.spans.push(span);
            self.spans += 1;
            self.stats.spans_accepted += 1;
        }
    }

    /// Appends to `out` every trace whose deadline is at or before `now`, oldest deadline first.
    pub fn release(&mut self, now: u64, out: &mut Vec<ReleasedTrace>) {
        while let Some(&Reverse((deadline, seq, id))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(entry) = self.traces.get(&id) else {
                continue;
            };
            if entry.seq != seq {
                continue;
            }
            let actual = entry.deadline(&self.config);
            if actual > now {
                self.deadlines.push(Reverse((actual, seq, id)));
                continue;
            }
            let latest = entry.first_seen.saturating_add(self.config.max_wait);
            if now < latest
                && self
                    .traces
                    .get_mut(&id)
                    .is_some_and(Entry::awaits_local_parent)
            {
                // Quiet only because a request is still waiting downstream or in a queue: its
                // spans come when it ends. Look again a `completion_wait` later.
                let again = now.saturating_add(self.config.completion_wait.max(1));
                self.deadlines.push(Reverse((again.min(latest), seq, id)));
                self.stats.held_for_parent += 1;
                continue;
            }
            if let Some(entry) = self.traces.remove(&id) {
                out.push(self.finish(id, entry));
            }
        }
        self.compact();
    }

    /// Releases every trace held, oldest first, as at shutdown.
    pub fn flush(&mut self, out: &mut Vec<ReleasedTrace>) {
        while let Some((seq, id)) = self.order.pop_front() {
            if self.traces.get(&id).is_some_and(|e| e.seq == seq)
                && let Some(entry) = self.traces.remove(&id)
            {
                out.push(self.finish(id, entry));
            }
        }
        self.deadlines.clear();
    }

    /// Traces held.
    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Spans held over all traces.
    pub fn span_count(&self) -> usize {
        self.spans
    }

    /// Counters since creation.
    pub fn stats(&self) -> BufferStats {
        self.stats
    }

    /// Heap bytes held by the buffer's containers, from their capacities (the allocator's own
    /// overhead excluded), so that memory can be exported and bounded.
    pub fn memory_bytes(&self) -> usize {
        let spans: usize = self
            .traces
            .values()
            .map(|e| e.spans.capacity() * size_of::<SpanRecord>())
            .sum();
        // A hashbrown slot is the key-value pair plus one control byte.
        let map = self.traces.capacity() * (size_of::<([u8; 16], Entry)>() + 1);
        let heap = self.deadlines.capacity() * size_of::<Reverse<(u64, u64, [u8; 16])>>();
        let order = self.order.capacity() * size_of::<(u64, [u8; 16])>();
        spans + map + heap + order
    }

    /// Evicts the oldest trace other than `keep`; false when there is none.
    fn evict_oldest(&mut self, keep: Option<[u8; 16]>) -> bool {
        let mut kept = None;
        let mut evicted = false;
        while let Some((seq, id)) = self.order.pop_front() {
            if self.traces.get(&id).is_none_or(|e| e.seq != seq) {
                continue;
            }
            if Some(id) == keep {
                kept = Some((seq, id));
                continue;
            }
            if let Some(entry) = self.traces.remove(&id) {
                self.spans -= entry.spans.len();
                self.stats.traces_evicted += 1;
                self.stats.dropped.evicted += entry.spans.len() as u64;
                evicted = true;
                break;
            }
        }
        if let Some(kept) = kept {
            self.order.push_front(kept);
        }
        if evicted {
            self.compact();
        }
        evicted
    }

    /// Sorts and de-duplicates the trace's spans and counts how it was released.
    fn finish(&mut self, trace_id: [u8; 16], entry: Entry) -> ReleasedTrace {
        let Entry {
            mut spans,
            first_seen,
            last_seen,
            truncated,
            ..
        } = entry;
        self.spans -= spans.len();
        // Stable, so the first of duplicate ids is the one kept.
        spans.sort_by_key(|s| s.span_id);
        let before = spans.len();
        spans.dedup_by_key(|s| s.span_id);
        self.stats.dropped.duplicate_span_id += (before - spans.len()) as u64;
        let mut roots = 0u32;
        let mut orphans = 0u32;
        for span in &spans {
            if span.parent_id == 0 {
                roots += 1;
            } else if parent_missing(&spans, span) {
                orphans += 1;
            }
        }
        let released = ReleasedTrace {
            trace_id,
            spans,
            truncated,
            roots,
            orphans,
            first_seen,
            last_seen,
        };
        if released.is_complete() {
            self.stats.released_complete += 1;
        } else {
            self.stats.released_incomplete += 1;
        }
        if truncated {
            self.stats.released_truncated += 1;
        }
        released
    }

    /// Drops stale heap and queue entries once they outnumber the live ones, so that churn
    /// cannot grow them past a small multiple of `max_traces`.
    fn compact(&mut self) {
        let live = self.traces.len();
        if self.order.len() > 2 * live + 64 {
            let traces = &self.traces;
            self.order
                .retain(|(seq, id)| traces.get(id).is_some_and(|e| e.seq == *seq));
        }
        if self.deadlines.len() > 2 * live + 64 {
            let traces = &self.traces;
            self.deadlines
                .retain(|Reverse((_, seq, id))| traces.get(id).is_some_and(|e| e.seq == *seq));
        }
    }
}
