//! The parent/child structure of one trace, built without recursion so that a 50,000-span
//! chain cannot overflow the stack.
//!
//! Spans are addressed by their index in the slice the tree was built from. Bad input is
//! tolerated and counted in [`TreeStats`]: invalid spans and repeated span ids are left out,
//! spans whose parent is absent become extra roots. Only a parent cycle is refused.
//!
//! Each span also gets an effective [`Kind`]: its own, or, when the instrumentation left it
//! unspecified, the one the service changes around it imply (see [`super::kinds`]).

use std::cmp::Reverse;

use thiserror::Error;

use super::kinds::effective_kinds;
use super::span::{Kind, SpanRecord};

/// Why a trace could not be analysed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TreeError {
    /// No span with a non-zero id that ends after it starts.
    #[error("the trace has no valid span")]
    Empty,
    /// Some spans are their own ancestors, so the trace has no consistent time nesting.
    #[error("{spans} spans sit on or below a parent cycle")]
    Cycle {
        /// Spans that no root reaches.
        spans: usize,
    },
    /// More spans than a `u32` index can address.
    #[error("the trace has {0} spans, more than can be indexed")]
    TooLarge(usize),
}

/// What building the tree counted, per trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeStats {
    /// Spans in the tree.
    pub spans: u32,
    /// Spans without a parent in the trace (no parent id, or a parent that never arrived).
    pub roots: u32,
    /// Roots other than the one analysed: parts of the trace hanging off a missing span.
    pub orphans: u32,
    /// Spans left out because an earlier span had the same id.
    pub duplicates: u32,
    /// Spans left out for a zero span id or an end before the start.
    pub invalid: u32,
    /// Children that start before or end after their parent, and are clipped to it.
    pub clipped: u32,
    /// Children wholly outside their parent (clock skew), ignored by the critical path.
    pub skewed: u32,
}

/// A trace's spans arranged as a tree; see the module docs.
#[derive(Debug, Clone)]
pub struct TraceTree<'a> {
    spans: &'a [SpanRecord],
    parent: Vec<u32>,
    child_offsets: Vec<u32>,
    children: Vec<u32>,
    kinds: Vec<Kind>,
    root: u32,
    stats: TreeStats,
}

/// Marks "no parent" in the parent array.
const NONE: u32 = u32::MAX;

impl<'a> TraceTree<'a> {
    /// Builds the tree of one trace's spans, in any order.
    pub fn build(spans: &'a [SpanRecord]) -> Result<Self, TreeError> {
        let n = spans.len();
        if n >= NONE as usize {
            return Err(TreeError::TooLarge(n));
        }
        let mut stats = TreeStats::default();
        // Valid spans by id; the sort is stable so the first of a repeated id comes first.
        let mut by_id: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                let s = &spans[i as usize];
                s.span_id != 0 && s.end >= s.start
            })
            .collect();
        stats.invalid = (n - by_id.len()) as u32;
        by_id.sort_by_key(|&i| spans[i as usize].span_id);
        let before = by_id.len();
        by_id.dedup_by_key(|&mut i| spans[i as usize].span_id);
        stats.duplicates = (before - by_id.len()) as u32;
        if by_id.is_empty() {
            return Err(TreeError::Empty);
        }
        stats.spans = by_id.len() as u32;

        let mut parent = vec![NONE; n];
        let mut roots = Vec::new();
        let mut child_count = vec![0u32; n + 1];
        for &i in &by_id {
            let span = &spans[i as usize];
            let found = (span.parent_id != 0)
                .then(|| {
                    by_id.binary_search_by_key(&span.parent_id, |&j| spans[j as usize].span_id)
                })
                .and_then(Result::ok);
            match found {
                Some(k) => {
                    let p = by_id[k];
                    parent[i as usize] = p;
                    child_count[p as usize] += 1;
                }
                None => roots.push(i),
            }
        }

        // Children in one array, each parent's slice sorted by end so the walk can go backwards.
        let mut child_offsets = vec![0u32; n + 1];
        for i in 0..n {
            child_offsets[i + 1] = child_offsets[i] + child_count[i];
        }
        let mut fill = child_offsets.clone();
        let mut children = vec![0u32; child_offsets[n] as usize];
        for &i in &by_id {
            let p = parent[i as usize];
            if p != NONE {
                children[fill[p as usize] as usize] = i;
                fill[p as usize] += 1;
            }
        }
        for p in 0..n {
            let range = child_offsets[p] as usize..child_offsets[p + 1] as usize;
            if range.len() > 1 {
                children[range].sort_unstable_by_key(|&c| {
                    let s = &spans[c as usize];
                    (s.end, s.start, s.span_id)
                });
            }
        }

        // A span in a cycle has a parent, so it is no root, and no root reaches it.
        let mut reached = 0usize;
        let mut stack = roots.clone();
        while let Some(i) = stack.pop() {
            reached += 1;
            let range = child_offsets[i as usize] as usize..child_offsets[i as usize + 1] as usize;
            stack.extend_from_slice(&children[range]);
        }
        if reached < by_id.len() {
            return Err(TreeError::Cycle {
                spans: by_id.len() - reached,
            });
        }

        // The longest root is the request; ties go to the earliest, then the smallest id, so
        // arrival order never matters.
        let root = roots
            .iter()
            .copied()
            .max_by_key(|&i| {
                let s = &spans[i as usize];
                (s.duration(), Reverse(s.start), Reverse(s.span_id))
            })
            .ok_or(TreeError::Empty)?;
        stats.roots = roots.len() as u32;
        stats.orphans = stats.roots - 1;

        for &i in &by_id {
            let p = parent[i as usize];
            if p == NONE {
                continue;
            }
            let (c, p) = (&spans[i as usize], &spans[p as usize]);
            if c.end < p.start || c.start > p.end {
                stats.skewed += 1;
            } else if c.start < p.start || c.end > p.end {
                stats.clipped += 1;
            }
        }

        let kinds = effective_kinds(
            spans,
            &by_id,
            |i| Some(parent[i as usize]).filter(|&p| p != NONE),
            |i| {
                let i = i as usize;
                &children[child_offsets[i] as usize..child_offsets[i + 1] as usize]
            },
        );
        Ok(TraceTree {
            spans,
            parent,
            child_offsets,
            children,
            kinds,
            root,
            stats,
        })
    }

    /// The spans the tree was built from, indexed as everywhere in the tree.
    pub fn spans(&self) -> &'a [SpanRecord] {
        self.spans
    }

    /// The span at `index`.
    pub fn span(&self, index: u32) -> &'a SpanRecord {
        &self.spans[index as usize]
    }

    /// The analysed root: the longest span without a parent in the trace.
    pub fn root(&self) -> u32 {
        self.root
    }

    /// The parent of `index`, if it is in the trace.
    pub fn parent(&self, index: u32) -> Option<u32> {
        self.parent
            .get(index as usize)
            .copied()
            .filter(|&p| p != NONE)
    }

    /// The children of `index`, by ascending end (then start, then span id).
    pub fn children(&self, index: u32) -> &[u32] {
        let i = index as usize;
        match (self.child_offsets.get(i), self.child_offsets.get(i + 1)) {
            (Some(&from), Some(&to)) => &self.children[from as usize..to as usize],
            _ => &[],
        }
    }

    /// The effective kind of `index`: the span's own, or, when unspecified, SERVER where a
    /// request arrived at its service and CLIENT for a call out of it (see [`super::kinds`]).
    pub fn kind(&self, index: u32) -> Kind {
        self.kinds
            .get(index as usize)
            .copied()
            .unwrap_or(Kind::Unspecified)
    }

    /// What building the tree counted.
    pub fn stats(&self) -> TreeStats {
        self.stats
    }
}
