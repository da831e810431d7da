//! The kind of a span that does not say one.
//!
//! Many span streams carry no span kinds: Jaeger and Zipkin exports, converted datasets, some
//! instrumentations. What the analysis needs from a kind is where a request arrived at a service
//! (SERVER) and which span stands for a call out of it (CLIENT), and both show where the service
//! changes between a parent and its child:
//!
//! - a span with no parent in the trace, or whose parent belongs to another service, is where a
//!   request arrived: SERVER;
//! - a span whose children (at least one) all belong to other services is the call out: CLIENT;
//! - anything else stays unspecified, which every stage reads as the service's own work.
//!
//! Only `SPAN_KIND_UNSPECIFIED` spans are inferred; a kind the instrumentation set is kept, so a
//! trace with kinds is analysed exactly as before.

use super::span::{Kind, SpanRecord};

/// The effective kind of every span of a trace, by index: the spans' own kinds, with those of
/// the `members` (the spans in the tree) inferred where unspecified. `parent(i)` is the index
/// of span `i`'s parent, `children(i)` its children's indexes.
pub(super) fn effective_kinds<'c>(
    spans: &[SpanRecord],
    members: &[u32],
    parent: impl Fn(u32) -> Option<u32>,
    children: impl Fn(u32) -> &'c [u32],
) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = spans.iter().map(|s| s.kind).collect();
    for &index in members {
        let i = index as usize;
        let span = &spans[i];
        if span.kind != Kind::Unspecified {
            continue;
        }
        let arrived = parent(index).is_none_or(|p| spans[p as usize].service != span.service);
        let kids = children(index);
        let calls_out = !kids.is_empty()
            && kids
                .iter()
                .all(|&c| spans[c as usize].service != span.service);
        kinds[i] = if arrived {
            Kind::Server
        } else if calls_out {
            Kind::Client
        } else {
            Kind::Unspecified
        };
    }
    kinds
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::{Symbol, TraceTree, analyze};
    use super::*;

    const WEB: Symbol = Symbol(10);
    const CART: Symbol = Symbol(11);

    fn span(id: u64, parent: u64, service: Symbol, kind: Kind, start: u64, end: u64) -> SpanRecord {
        SpanRecord {
            trace_id: [3; 16],
            span_id: id,
            parent_id: parent,
            start,
            end,
            service,
            operation: Symbol(1),
            peer: Symbol::NONE,
            kind,
            queue: false,
            error: false,
        }
    }

    /// web's handler (1) calls cart (2 → 3), whose handler does some work of its own (4).
    fn without_kinds() -> Vec<SpanRecord> {
        let u = Kind::Unspecified;
        vec![
            span(1, 0, WEB, u, 0, 100),
            span(2, 1, WEB, u, 10, 90),
            span(3, 2, CART, u, 30, 80),
            span(4, 3, CART, u, 40, 60),
        ]
    }

    #[test]
    fn service_changes_stand_for_server_and_client_kinds() {
        let spans = without_kinds();
        let tree = TraceTree::build(&spans).unwrap();
        let kinds: Vec<Kind> = (0..4).map(|i| tree.kind(i)).collect();
        assert_eq!(
            kinds,
            [Kind::Server, Kind::Client, Kind::Server, Kind::Unspecified]
        );
        // The call's gaps are cart's queueing and response, as with kinds.
        let b = analyze(&spans).unwrap().breakdown;
        let cart = b.service(CART).unwrap();
        assert_eq!((cart.queueing, cart.response, cart.own), (20, 10, 50));
        assert_eq!(cart.arrivals, 1);
        let edge = b.edge(WEB, CART).unwrap();
        assert_eq!((edge.queueing, edge.response), (20, 10));
        assert_eq!(b.service(WEB).unwrap().own, 20);
    }

    #[test]
    fn a_kind_the_instrumentation_set_is_kept() {
        let mut spans = without_kinds();
        spans[1].kind = Kind::Internal;
        spans[3].kind = Kind::Client;
        let tree = TraceTree::build(&spans).unwrap();
        assert_eq!(tree.kind(1), Kind::Internal, "set, so not inferred");
        assert_eq!(tree.kind(3), Kind::Client);
        // A span with children of its own service and of another is neither.
        let mut mixed = without_kinds();
        mixed.push(span(5, 2, WEB, Kind::Unspecified, 12, 20));
        let tree = TraceTree::build(&mixed).unwrap();
        assert_eq!(tree.kind(1), Kind::Unspecified);
    }
}
