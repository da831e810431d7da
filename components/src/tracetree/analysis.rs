//! One call from a released trace to its critical path and breakdown, and the counters a
//! caller exports over many traces.

use super::breakdown::{TraceBreakdown, breakdown};
use super::critical_path::{Segment, critical_path};
use super::span::SpanRecord;
use super::tree::{TraceTree, TreeError, TreeStats};

/// The analysis of one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceAnalysis {
    /// What building the tree counted (orphans, skew, duplicates, ...).
    pub tree: TreeStats,
    /// The index of the analysed root in the span slice.
    pub root: u32,
    /// The critical path by ascending time; spans by index in the span slice.
    pub segments: Vec<Segment>,
    /// The per-service attribution of the critical path.
    pub breakdown: TraceBreakdown,
}

/// Builds the tree of `spans` (one trace, any order), walks its critical path and attributes it.
pub fn analyze(spans: &[SpanRecord]) -> Result<TraceAnalysis, TreeError> {
    let tree = TraceTree::build(spans)?;
    let segments = critical_path(&tree);
    let breakdown = breakdown(&tree, &segments);
    Ok(TraceAnalysis {
        tree: tree.stats(),
        root: tree.root(),
        segments,
        breakdown,
    })
}

/// Counters over many analysed traces, to export as metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnalysisStats {
    /// Traces analysed.
    pub analysed: u64,
    /// Traces refused because they had no valid span.
    pub refused_empty: u64,
    /// Traces refused for a parent cycle.
    pub refused_cycle: u64,
    /// Traces refused for having more spans than can be indexed.
    pub refused_too_large: u64,
    /// Roots besides the analysed one, over all analysed traces.
    pub orphan_roots: u64,
    /// Spans left out for a repeated span id.
    pub duplicate_spans: u64,
    /// Spans left out for a zero id or an end before the start.
    pub invalid_spans: u64,
    /// Children clipped to their parent.
    pub clipped_children: u64,
    /// Children wholly outside their parent (clock skew).
    pub skewed_children: u64,
}

impl AnalysisStats {
    /// Counts the outcome of one [`analyze`] call.
    pub fn record(&mut self, outcome: &Result<TraceAnalysis, TreeError>) {
        match outcome {
            Ok(analysis) => {
                let t = &analysis.tree;
                self.analysed += 1;
                self.orphan_roots += u64::from(t.orphans);
                self.duplicate_spans += u64::from(t.duplicates);
                self.invalid_spans += u64::from(t.invalid);
                self.clipped_children += u64::from(t.clipped);
                self.skewed_children += u64::from(t.skewed);
            }
            Err(TreeError::Empty) => self.refused_empty += 1,
            Err(TreeError::Cycle { .. }) => self.refused_cycle += 1,
            Err(TreeError::TooLarge(_)) => self.refused_too_large += 1,
        }
    }
}
