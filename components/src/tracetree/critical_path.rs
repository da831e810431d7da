//! The critical path of a trace: the last-finishing-child walk of Jaeger's critical-path view
//! and of FIRM (Qiu et al., OSDI 2020).
//!
//! From the root with a cursor at its end, take the child that finishes last at or before the
//! cursor; the time between that child's end and the cursor is the parent's own, the walk goes
//! into the child, and the cursor moves to the child's start. What remains down to the parent's
//! start is the parent's own. Children are first clipped to their (clipped) parent; a child
//! wholly outside it is skipped. A child that ends after the cursor overlaps one already taken
//! and is skipped too.
//!
//! The walk keeps its own stack, so depth costs heap, not call stack. The segments cover the
//! root's interval exactly, without overlap.

use super::tree::TraceTree;

/// A stretch of the critical path spent in one span's own time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    /// The span, by index in the trace's span slice.
    pub span: u32,
    /// Unix nanoseconds.
    pub start: u64,
    /// Unix nanoseconds; greater than `start`.
    pub end: u64,
}

impl Segment {
    /// `end - start`.
    pub fn duration(&self) -> u64 {
        self.end - self.start
    }
}

/// A walk in progress over one span.
struct Frame<'t> {
    span: u32,
    start: u64,
    end: u64,
    cursor: u64,
    /// The span's children, by ascending end; the walk consumes them from the back.
    pending: &'t [u32],
}

/// The critical path of `tree`'s root, as segments by ascending time. Empty segments (zero
/// length) are left out, so a zero-length root gives none.
pub fn critical_path(tree: &TraceTree<'_>) -> Vec<Segment> {
    let mut segments = Vec::new();
    critical_path_into(tree, &mut segments);
    segments
}

/// [`critical_path`] into a caller's buffer (cleared first), to reuse its allocation.
pub fn critical_path_into(tree: &TraceTree<'_>, segments: &mut Vec<Segment>) {
    segments.clear();
    let root = tree.span(tree.root());
    let mut stack = vec![Frame {
        span: tree.root(),
        start: root.start,
        end: root.end,
        cursor: root.end,
        pending: tree.children(tree.root()),
    }];
    while let Some(top) = stack.last_mut() {
        let mut next = None;
        while let Some((&child, rest)) = top.pending.split_last() {
            top.pending = rest;
            let c = tree.span(child);
            if c.end < top.start || c.start > top.end {
                continue;
            }
            let end = c.end.min(top.end);
            if end > top.cursor {
                continue;
            }
            next = Some((child, c.start.max(top.start), end));
            break;
        }
        match next {
            Some((child, start, end)) => {
                if end < top.cursor {
                    segments.push(Segment {
                        span: top.span,
                        start: end,
                        end: top.cursor,
                    });
                }
                top.cursor = start;
                let pending = tree.children(child);
                stack.push(Frame {
                    span: child,
                    start,
                    end,
                    cursor: end,
                    pending,
                });
            }
            None => {
                if top.start < top.cursor {
                    segments.push(Segment {
                        span: top.span,
                        start: top.start,
                        end: top.cursor,
                    });
                }
                stack.pop();
            }
        }
    }
    segments.reverse();
}
