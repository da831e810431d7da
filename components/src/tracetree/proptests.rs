//! Properties over random forests of spans: the path covers the root exactly, attribution sums
//! to the root's duration, arrival order does not matter, and the buffer keeps its bounds.

use proptest::prelude::*;

use super::*;

const TRACE: [u8; 16] = [3; 16];

/// One generated span: parent index (`None` = root or orphan), offsets relative to the parent,
/// service, kind and queue flag.
type Gen = (Option<prop::sample::Index>, i64, u64, u32, u8, bool, bool);

fn gen_span() -> impl Strategy<Value = Gen> {
    (
        prop::option::weighted(0.9, any::<prop::sample::Index>()),
        -50i64..1_000,
        0u64..1_000,
        0u32..5,
        0u8..4,
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.2),
    )
}

/// A forest: span `i`'s parent is an earlier span (or none, or a missing id), children mostly
/// inside their parent but sometimes overflowing or outside it.
fn forest() -> impl Strategy<Value = Vec<SpanRecord>> {
    prop::collection::vec(gen_span(), 1..60).prop_map(|gens| {
        let mut spans: Vec<SpanRecord> = Vec::with_capacity(gens.len());
        for (i, (parent, offset, len, service, kind, queue, peer)) in gens.into_iter().enumerate() {
            // Scrambled but distinct ids, so id order is not arrival order.
            let id = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let parent = parent.filter(|_| i > 0).map(|p| spans[p.index(i)]);
            let (parent_id, base) = match parent {
                Some(p) => (p.span_id, p.start),
                None if offset % 7 == 0 => (0xdead, 10_000),
                None => (0, 10_000),
            };
            let start = base.saturating_add_signed(offset);
            let kind = match kind {
                0 => Kind::Internal,
                1 => Kind::Server,
                2 => Kind::Client,
                _ => Kind::Unspecified,
            };
            spans.push(SpanRecord {
                trace_id: TRACE,
                span_id: id,
                parent_id,
                start,
                end: start + len,
                service: Symbol(10 + service),
                operation: Symbol(1),
                peer: if peer { Symbol(20) } else { Symbol::NONE },
                kind,
                queue,
                error: false,
            });
        }
        spans
    })
}

fn forest_and_shuffle() -> impl Strategy<Value = (Vec<SpanRecord>, Vec<SpanRecord>)> {
    forest().prop_flat_map(|spans| (Just(spans.clone()), Just(spans).prop_shuffle()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn segments_cover_the_root_exactly_without_overlap(spans in forest()) {
        let analysis = analyze(&spans).unwrap();
        let root = spans[analysis.root as usize];
        let segments = &analysis.segments;
        if root.duration() == 0 {
            prop_assert!(segments.is_empty());
        } else {
            prop_assert_eq!(segments[0].start, root.start);
            prop_assert_eq!(segments[segments.len() - 1].end, root.end);
            for pair in segments.windows(2) {
                prop_assert_eq!(pair[0].end, pair[1].start);
            }
            for s in segments {
                prop_assert!(s.start < s.end);
                // Each segment lies inside its own span.
                let span = spans[s.span as usize];
                prop_assert!(span.start <= s.start && s.end <= span.end);
            }
        }
    }

    #[test]
    fn attribution_sums_to_the_root_duration(spans in forest()) {
        let b = analyze(&spans).unwrap().breakdown;
        let attributed: u64 = b.services.iter().map(|s| s.own + s.queueing + s.response).sum();
        prop_assert_eq!(attributed, b.duration);
        let edges: u64 = b.edges.iter().map(|e| e.queueing + e.response).sum();
        let gaps: u64 = b.services.iter().map(|s| s.response).sum();
        prop_assert!(edges >= gaps);
        for s in &b.services {
            prop_assert!(s.downstream <= b.duration);
        }
    }

    #[test]
    fn arrival_order_does_not_change_the_result((spans, shuffled) in forest_and_shuffle()) {
        let a = analyze(&spans).unwrap();
        let b = analyze(&shuffled).unwrap();
        let ids = |spans: &[SpanRecord], segments: &[Segment]| -> Vec<(u64, u64, u64)> {
            segments.iter().map(|s| (spans[s.span as usize].span_id, s.start, s.end)).collect()
        };
        prop_assert_eq!(ids(&spans, &a.segments), ids(&shuffled, &b.segments));
        prop_assert_eq!(a.breakdown, b.breakdown);
        prop_assert_eq!(a.tree, b.tree);
    }

    #[test]
    fn buffer_keeps_its_bounds_and_accounts_for_every_span(
        pushes in prop::collection::vec((0u8..12, 0u64..40, 0u64..5, any::<bool>()), 0..400),
        max_traces in 1usize..6,
        max_spans in 1usize..30,
        max_spans_per_trace in 1usize..10,
    ) {
        let config = BufferConfig {
            completion_wait: 5,
            max_wait: 20,
            max_traces,
            max_spans,
            max_spans_per_trace,
        };
        let mut buffer = TraceBuffer::new(config).unwrap();
        let mut released = Vec::new();
        let mut now = 0u64;
        for (trace, id, step, inverted) in pushes {
            now += step;
            let start = 100;
            let span = SpanRecord {
                trace_id: [trace; 16],
                span_id: id,
                parent_id: 0,
                start,
                end: if inverted && id % 5 == 0 { start - 1 } else { start + 1 },
                service: Symbol(1),
                operation: Symbol(1),
                peer: Symbol::NONE,
                kind: Kind::Server,
                queue: false,
                error: false,
            };
            buffer.push(span, now);
            prop_assert!(buffer.trace_count() <= max_traces);
            prop_assert!(buffer.span_count() <= max_spans);
            buffer.release(now, &mut released);
        }
        let held = buffer.span_count() as u64;
        buffer.flush(&mut released);
        prop_assert_eq!(buffer.trace_count(), 0);
        let stats = buffer.stats();
        let released_spans: u64 = released.iter().map(|t| t.spans.len() as u64).sum();
        prop_assert!(released.iter().all(|t| t.spans.len() <= max_spans_per_trace));
        prop_assert_eq!(
            stats.spans_accepted,
            released_spans + stats.dropped.evicted + stats.dropped.duplicate_span_id
        );
        prop_assert!(held <= stats.spans_accepted);
        prop_assert_eq!(
            stats.released_complete + stats.released_incomplete,
            released.len() as u64
        );
        for trace in &released {
            prop_assert!(trace.spans.windows(2).all(|w| w[0].span_id < w[1].span_id));
        }
    }
}
