//! Spans of refused batches: the tap that counts them, and the memory that keeps a client's
//! retry of the same spans from being counted twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry_proto::tonic::trace::v1::Span;
use tracescale_core::component::Tap;
use tracescale_core::signal::Signal;

use super::Shared;
use super::hash::Seeded;

/// Shows the batches receivers refused to the engine, so that shedding load does not blind
/// the rules to the very latencies that caused it.
pub(super) struct RulesTap(pub(super) Arc<Mutex<Shared>>);

impl Tap for RulesTap {
    fn refused(&self, signal: &Signal) {
        let Signal::Traces(traces) = signal else {
            return;
        };
        let mut shared = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = shared.wall_now();
        let Shared {
            engine,
            decisions,
            refused,
            ..
        } = &mut *shared;
        engine.observe_refused(traces, now, decisions, |span| refused.first_sight(span));
    }
}

/// Ids of spans the rules already counted from a refused batch, oldest forgotten first. Only
/// spans that a rule's operation matches are remembered.
///
/// A refused client retries, so the same span arrives again: refused again (the tap skips
/// it) or accepted ([`RefusedSpans::take`] tells the processor to keep it from the rules; it
/// still counts in the operation statistics, which refused spans do not reach). The memory is a
/// map plus a queue of insertion order. Entries carry a sequence number, so a queue entry
/// for an id that was taken and remembered again does not evict the newer entry.
#[derive(Debug)]
pub(super) struct RefusedSpans {
    ids: HashMap<u64, u64, Seeded>,
    order: VecDeque<(u64, u64)>,
    capacity: usize,
    next: u64,
    /// Spans of refused batches counted by the rules.
    pub(super) observed: u64,
    /// Spans seen again after a refusal (a retry) and not counted twice.
    pub(super) repeats: u64,
    /// Ids forgotten before their retry came: such a retry counts twice.
    pub(super) forgotten: u64,
}

/// A span's identity for this purpose: its id folded with its trace id. None without a valid
/// span id; such spans are counted every time they are seen.
fn key(span: &Span) -> Option<u64> {
    let span_id: [u8; 8] = span.span_id.as_slice().try_into().ok()?;
    let trace = span
        .trace_id
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes);
    Some(u64::from_le_bytes(span_id) ^ trace.rotate_left(32))
}

impl RefusedSpans {
    /// An empty memory of at most `capacity` ids (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            ids: HashMap::with_hasher(Seeded::random()),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            next: 0,
            observed: 0,
            repeats: 0,
            forgotten: 0,
        }
    }

    /// Whether no refused span is remembered: the processor's path then skips the lookups.
    pub(super) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// For a span of a refused batch: true, and remembered, the first time; false for a
    /// repeat.
    pub(super) fn first_sight(&mut self, span: &Span) -> bool {
        let Some(key) = key(span) else {
            self.observed += 1;
            return true;
        };
        if self.ids.contains_key(&key) {
            self.repeats += 1;
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some((old, seq)) = self.order.pop_front()
            && self.ids.get(&old) == Some(&seq)
        {
            self.ids.remove(&old);
            self.forgotten += 1;
        }
        self.ids.insert(key, self.next);
        self.order.push_back((key, self.next));
        self.next += 1;
        self.observed += 1;
        true
    }

    /// For a span that was queued: true, and forgotten, when the rules counted it already from
    /// a refused batch.
    pub(super) fn take(&mut self, span: &Span) -> bool {
        let taken = key(span).is_some_and(|key| self.ids.remove(&key).is_some());
        if taken {
            self.repeats += 1;
            if self.ids.is_empty() {
                // Stale queue entries would otherwise linger until evicted.
                self.order.clear();
            }
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(n: u8) -> Span {
        Span {
            trace_id: vec![7; 16],
            span_id: vec![n, 1, 2, 3, 4, 5, 6, 8],
            ..Default::default()
        }
    }

    #[test]
    fn a_retried_span_counts_once_whether_refused_again_or_accepted() {
        let mut r = RefusedSpans::new(10);
        assert!(r.first_sight(&span(1)));
        assert!(!r.first_sight(&span(1)), "refused again: a repeat");
        assert!(r.take(&span(1)), "accepted at last: skip it");
        assert!(!r.take(&span(1)), "only once");
        assert!(!r.take(&span(2)), "never refused: count it");
        assert!(r.is_empty());
        assert_eq!((r.observed, r.repeats, r.forgotten), (1, 2, 0));
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_oldest_first() {
        let mut r = RefusedSpans::new(3);
        for n in 0..5 {
            assert!(r.first_sight(&span(n)));
        }
        assert_eq!(r.forgotten, 2);
        assert!(r.ids.len() <= 3 && r.order.len() <= 3);
        assert!(r.first_sight(&span(0)), "forgotten, so counted again");
        assert!(!r.first_sight(&span(4)), "still remembered");
    }

    #[test]
    fn an_id_taken_and_refused_again_is_not_evicted_by_its_old_entry() {
        let mut r = RefusedSpans::new(3);
        r.first_sight(&span(1));
        r.first_sight(&span(2));
        assert!(r.take(&span(1)));
        assert!(
            r.first_sight(&span(1)),
            "refused again later: a new sighting"
        );
        // The queue is full: its oldest entry is span 1's first, which must not take the
        // new one with it.
        assert!(r.first_sight(&span(3)));
        assert_eq!(r.forgotten, 0);
        assert!(!r.first_sight(&span(1)), "span 1 is still remembered");
    }

    #[test]
    fn spans_without_a_valid_id_are_counted_every_time() {
        let mut r = RefusedSpans::new(2);
        let bad = Span::default();
        assert!(r.first_sight(&bad));
        assert!(r.first_sight(&bad));
        assert!(!r.take(&bad));
        assert!(r.is_empty());
    }
}
