//! Per-service attribution of a trace's critical path: what an SLO-driven scaler needs to know
//! which service to scale, and what an attribution evaluator checks.
//!
//! Kinds are the tree's effective ones ([`TraceTree::kind`]): a span stream without kinds is
//! read from where the service changes.
//!
//! Every nanosecond of the critical path goes to exactly one service, as one of:
//!
//! - `own`: the service's own spans, except CLIENT spans and explicit queue spans;
//! - `queueing`: an explicit queue span of the service, or the part of a caller's CLIENT span
//!   before the service's SERVER span started (the request waited to be picked up);
//! - `response`: the part of a caller's CLIENT span after the service's SERVER span ended.
//!
//! So `own + queueing + response`, summed over services, is the root's duration. The CLIENT
//! gaps are also kept per edge (caller, callee), so that a later evaluator can tell network
//! delay (on every edge touching one service) from queueing (on the callee's inbound edges).
//! A CLIENT span with no SERVER child stands for an uninstrumented callee: its time goes to the
//! `peer.service` or `server.address` the span names, as a pseudo-service, else to the caller.
//!
//! `downstream` is different: the critical-path time inside the service's spans that was
//! attributed to another service. It overlaps the above and does not sum to anything.
//!
//! Per service, the SERVER spans of the trace (arrivals) and their summed own work are counted
//! too, as a scaler computes utilisation as arrival rate × own work (Little's law). A SERVER
//! span's own work is its duration less the time covered by the service's outgoing calls (its
//! CLIENT spans), queue spans and spans of other services below it.

use std::collections::HashMap;

use super::critical_path::Segment;
use super::intern::Symbol;
use super::span::{Kind, SpanRecord};
use super::tree::TraceTree;

/// One service's share of one trace. Times are in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceBreakdown {
    /// The service (or the peer a CLIENT span named).
    pub service: Symbol,
    /// True when no span of the trace belongs to it: a peer named by a CLIENT span only.
    pub pseudo: bool,
    /// Critical-path time in its own work.
    pub own: u64,
    /// Critical-path time waiting before its work started.
    pub queueing: u64,
    /// Critical-path time between the end of its SERVER span and its caller's CLIENT span.
    pub response: u64,
    /// Critical-path time inside its spans attributed to other services.
    pub downstream: u64,
    /// Its SERVER spans in the trace.
    pub arrivals: u32,
    /// The summed own work of those SERVER spans, on the critical path or not.
    pub server_own_work: u64,
}

/// The CLIENT→SERVER gaps on the critical path of one caller→callee edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EdgeGaps {
    /// The service of the CLIENT span.
    pub caller: Symbol,
    /// The service of the SERVER span.
    pub callee: Symbol,
    /// Before the SERVER span started.
    pub queueing: u64,
    /// After the SERVER span ended.
    pub response: u64,
}

/// The per-service attribution of one trace's critical path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TraceBreakdown {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The root's duration: the end-to-end latency.
    pub duration: u64,
    /// The root span's service.
    pub root_service: Symbol,
    /// The root span's operation.
    pub root_operation: Symbol,
    /// By ascending service symbol.
    pub services: Vec<ServiceBreakdown>,
    /// By ascending (caller, callee).
    pub edges: Vec<EdgeGaps>,
}

impl TraceBreakdown {
    /// The entry of `service`, if the trace touched it.
    pub fn service(&self, service: Symbol) -> Option<&ServiceBreakdown> {
        self.services
            .binary_search_by_key(&service, |s| s.service)
            .ok()
            .map(|i| &self.services[i])
    }

    /// The gaps of the `caller` → `callee` edge, if it was on the critical path.
    pub fn edge(&self, caller: Symbol, callee: Symbol) -> Option<&EdgeGaps> {
        self.edges
            .binary_search_by_key(&(caller, callee), |e| (e.caller, e.callee))
            .ok()
            .map(|i| &self.edges[i])
    }
}

#[derive(Clone, Copy, Default)]
struct Activity {
    /// Spans of the service on the walk's ancestor stack.
    depth: u32,
    /// Path time and time attributed to the service when it became active.
    entered_at: u64,
    attributed_at: u64,
    attributed: u64,
}

/// Builds the attribution; see [`TraceBreakdown`] and the module docs.
struct Builder {
    index: HashMap<Symbol, usize>,
    services: Vec<ServiceBreakdown>,
    activity: Vec<Activity>,
    edges: HashMap<(Symbol, Symbol), EdgeGaps>,
    /// Path time attributed so far.
    elapsed: u64,
    /// Per span index, its service's slot, filled by [`arrivals`] so that the walk does not
    /// hash a symbol per span.
    span_slot: Vec<u32>,
}

impl Builder {
    fn slot(&mut self, service: Symbol) -> usize {
        *self.index.entry(service).or_insert_with(|| {
            self.services.push(ServiceBreakdown {
                service,
                pseudo: true,
                ..ServiceBreakdown::default()
            });
            self.activity.push(Activity::default());
            self.services.len() - 1
        })
    }

    fn enter(&mut self, i: usize) {
        let a = &mut self.activity[i];
        if a.depth == 0 {
            a.entered_at = self.elapsed;
            a.attributed_at = a.attributed;
        }
        a.depth += 1;
    }

    fn leave(&mut self, i: usize) {
        let a = &mut self.activity[i];
        a.depth -= 1;
        if a.depth == 0 {
            let inside = self.elapsed - a.entered_at;
            let own_share = a.attributed - a.attributed_at;
            self.services[i].downstream += inside - own_share;
        }
    }

    fn attribute(&mut self, i: usize, duration: u64, part: Part) {
        if duration == 0 {
            return;
        }
        let s = &mut self.services[i];
        match part {
            Part::Own => s.own += duration,
            Part::Queueing => s.queueing += duration,
            Part::Response => s.response += duration,
        }
        self.activity[i].attributed += duration;
        self.elapsed += duration;
    }

    fn edge(&mut self, caller: Symbol, callee: Symbol) -> &mut EdgeGaps {
        self.edges.entry((caller, callee)).or_insert(EdgeGaps {
            caller,
            callee,
            ..EdgeGaps::default()
        })
    }
}

#[derive(Clone, Copy)]
enum Part {
    Own,
    Queueing,
    Response,
}

/// Not yet looked up, in the per-span SERVER-child memo.
const UNKNOWN: u32 = u32::MAX;
/// Looked up: no SERVER child.
const ABSENT: u32 = u32::MAX - 1;

/// Attributes `segments`, the critical path of `tree` by ascending time, to services.
pub fn breakdown(tree: &TraceTree<'_>, segments: &[Segment]) -> TraceBreakdown {
    let spans = tree.spans();
    let root = tree.span(tree.root());
    let mut b = Builder {
        index: HashMap::new(),
        services: Vec::new(),
        activity: Vec::new(),
        edges: HashMap::new(),
        elapsed: 0,
        span_slot: vec![u32::MAX; spans.len()],
    };
    arrivals(tree, &mut b);

    // The ancestors of the current segment's span, root first; segments of a subtree are
    // contiguous in time, so each span is pushed and popped once.
    let mut stack: Vec<u32> = Vec::new();
    let mut on_stack = vec![false; spans.len()];
    let mut server_child = vec![UNKNOWN; spans.len()];
    let mut chain: Vec<u32> = Vec::new();
    for segment in segments {
        let s = segment.span;
        chain.clear();
        let mut cursor = Some(s);
        while let Some(i) = cursor {
            if on_stack[i as usize] {
                break;
            }
            chain.push(i);
            cursor = tree.parent(i);
        }
        while let Some(&top) = stack.last() {
            if Some(top) == cursor {
                break;
            }
            stack.pop();
            on_stack[top as usize] = false;
            b.leave(b.span_slot[top as usize] as usize);
        }
        for &i in chain.iter().rev() {
            stack.push(i);
            on_stack[i as usize] = true;
            b.enter(b.span_slot[i as usize] as usize);
        }

        let span = &spans[s as usize];
        let duration = segment.duration();
        let own = b.span_slot[s as usize] as usize;
        if span.queue {
            b.attribute(own, duration, Part::Queueing);
        } else if tree.kind(s) == Kind::Client {
            let memo = &mut server_child[s as usize];
            if *memo == UNKNOWN {
                *memo = tree
                    .children(s)
                    .iter()
                    .rev()
                    .copied()
                    .find(|&c| tree.kind(c) == Kind::Server)
                    .unwrap_or(ABSENT);
            }
            if *memo == ABSENT {
                let to = if span.peer.is_some() {
                    b.slot(span.peer)
                } else {
                    own
                };
                b.attribute(to, duration, Part::Own);
            } else {
                let server = *memo;
                attribute_client_gap(&mut b, spans, s, server, segment);
            }
        } else {
            b.attribute(own, duration, Part::Own);
        }
    }
    while let Some(top) = stack.pop() {
        b.leave(b.span_slot[top as usize] as usize);
    }

    let mut services = b.services;
    services.sort_unstable_by_key(|s| s.service);
    let mut edges: Vec<EdgeGaps> = b.edges.into_values().collect();
    edges.sort_unstable_by_key(|e| (e.caller, e.callee));
    TraceBreakdown {
        trace_id: root.trace_id,
        duration: root.duration(),
        root_service: root.service,
        root_operation: root.operation,
        services,
        edges,
    }
}

/// Splits a CLIENT span's own segment around its SERVER child: before it is the callee's
/// queueing, after it the callee's response, and any part while the server ran (only when a
/// sibling overlapped it) the caller's own.
fn attribute_client_gap(
    b: &mut Builder,
    spans: &[SpanRecord],
    client: u32,
    server: u32,
    segment: &Segment,
) {
    let (caller_slot, callee_slot) = (
        b.span_slot[client as usize] as usize,
        b.span_slot[server as usize] as usize,
    );
    let server = &spans[server as usize];
    let before = segment.end.min(server.start).saturating_sub(segment.start);
    let after = segment.end.saturating_sub(segment.start.max(server.end));
    let during = segment.duration() - before - after;
    b.attribute(callee_slot, before, Part::Queueing);
    b.attribute(callee_slot, after, Part::Response);
    b.attribute(caller_slot, during, Part::Own);
    if before > 0 || after > 0 {
        let edge = b.edge(spans[client as usize].service, server.service);
        edge.queueing += before;
        edge.response += after;
    }
}

/// Counts the SERVER spans under the root and their own work, and registers every service
/// present (so that `pseudo` is false for them).
fn arrivals(tree: &TraceTree<'_>, b: &mut Builder) {
    let spans = tree.spans();
    let mut stack = vec![tree.root()];
    let mut region = Vec::new();
    let mut waits: Vec<(u64, u64)> = Vec::new();
    while let Some(i) = stack.pop() {
        stack.extend_from_slice(tree.children(i));
        let span = &spans[i as usize];
        let slot = b.slot(span.service);
        b.span_slot[i as usize] = slot as u32;
        b.services[slot].pseudo = false;
        if tree.kind(i) != Kind::Server {
            continue;
        }
        // The span's region: same-service descendants down to the first wait.
        waits.clear();
        region.clear();
        region.extend_from_slice(tree.children(i));
        while let Some(c) = region.pop() {
            let child = &spans[c as usize];
            let waits_here = child.service != span.service
                || child.queue
                || matches!(tree.kind(c), Kind::Client | Kind::Server);
            if waits_here {
                let (start, end) = (child.start.max(span.start), child.end.min(span.end));
                if start < end {
                    waits.push((start, end));
                }
            } else {
                region.extend_from_slice(tree.children(c));
            }
        }
        let s = &mut b.services[slot];
        s.arrivals += 1;
        s.server_own_work += span.duration() - union_length(&mut waits);
    }
}

/// The total length of the union of `intervals` (sorted in place).
fn union_length(intervals: &mut [(u64, u64)]) -> u64 {
    intervals.sort_unstable();
    let mut total = 0;
    let mut current: Option<(u64, u64)> = None;
    for &(start, end) in intervals.iter() {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(0, |(s, e)| e - s)
}
