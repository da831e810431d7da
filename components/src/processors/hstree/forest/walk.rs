//! The descents of a score: the step function of a one-dimensional forest and the counting of a
//! closed window's points into a tree.

use super::{Node, Point};

/// The score of a one-dimensional forest as a step function: `sums[i]` holds on
/// `[bounds[i], bounds[i + 1])`, the first bound being −∞.
#[derive(Debug, Clone, Default)]
pub(super) struct Steps {
    pub(super) bounds: Vec<f32>,
    pub(super) sums: Vec<u64>,
    /// Interval starts `(start, tree, sum)`, kept to reuse the allocation.
    pub(super) scratch: Vec<(f32, u32, u64)>,
}

impl Steps {
    /// The sum at `x`; `None` before the first compilation. NaN goes right at every node, as
    /// +∞ does.
    #[inline]
    pub(super) fn sum_at(&self, x: f32) -> Option<u64> {
        if self.sums.is_empty() {
            return None;
        }
        let x = if x.is_nan() { f32::INFINITY } else { x };
        let i = self.bounds.partition_point(|b| *b <= x);
        self.sums.get(i.checked_sub(1)?).copied()
    }
}

/// Walks one tree of a one-dimensional forest to list where its descents stop.
pub(super) struct StepWalker<'a> {
    pub(super) tree: &'a [Node],
    pub(super) t: u32,
    pub(super) epoch: u32,
    pub(super) stop_below: u32,
    pub(super) height: u32,
    pub(super) out: &'a mut Vec<(f32, u32, u64)>,
}

impl StepWalker<'_> {
    /// Lists the intervals `[lo, hi)` on which the tree's descent stops at or below node `i`,
    /// as `(lo, tree, sum)`. `sum` carries the ancestors' `r · 2^depth`.
    pub(super) fn walk(&mut self, i: usize, depth: u32, lo: f32, hi: f32, sum: u64) {
        if lo >= hi {
            return;
        }
        let Some(node) = self.tree.get(i) else {
            return;
        };
        let r = node.r_at(self.epoch);
        let sum = sum + (u64::from(r) << depth);
        // A node without mass has none below it either, so the sum is final there even when
        // `size_limit` is 0 and a descent would go on.
        if r < self.stop_below || r == 0 || depth == self.height {
            self.out.push((lo, self.t, sum));
            return;
        }
        let split = node.threshold.clamp(lo, hi);
        self.walk(2 * i + 1, depth + 1, lo, split, sum);
        self.walk(2 * i + 2, depth + 1, split, hi, sum);
    }
}

/// Counts a closed window's points into one tree.
pub(super) struct Counter<'a, P> {
    pub(super) points: &'a [P],
    pub(super) epoch: u32,
    /// At least 1: an empty node has nothing below it to count.
    pub(super) stop_below: u32,
    pub(super) height: u32,
}

impl<P: Point> Counter<'_, P> {
    /// Sets the mass of node `i` to the number of `points` reaching it (their indices are in
    /// `reach`) and, if the node is heavy enough to be descended by a score, counts its
    /// children.
    pub(super) fn count(&self, tree: &mut [Node], i: usize, depth: u32, reach: &mut [u32]) {
        let Some(node) = tree.get_mut(i) else {
            return;
        };
        let mass = reach.len() as u32;
        node.r = mass;
        node.epoch = self.epoch;
        if mass < self.stop_below || depth == self.height {
            return;
        }
        let node = *node;
        // Left (value < threshold) first, as an in-place partition.
        let mut split = 0;
        for k in 0..reach.len() {
            let goes_left = self
                .points
                .get(reach[k] as usize)
                .is_some_and(|p| !node.goes_right(p));
            if goes_left {
                reach.swap(k, split);
                split += 1;
            }
        }
        let (left, right) = reach.split_at_mut(split);
        self.count(tree, 2 * i + 1, depth + 1, left);
        self.count(tree, 2 * i + 2, depth + 1, right);
    }

    /// As [`Counter::count`], for one dimension: `values` are the points reaching node `i`,
    /// sorted, so the left child's are a prefix found by binary search.
    pub(super) fn count_sorted(&self, tree: &mut [Node], i: usize, depth: u32, values: &[f32]) {
        let Some(node) = tree.get_mut(i) else {
            return;
        };
        let mass = values.len() as u32;
        node.r = mass;
        node.epoch = self.epoch;
        if mass < self.stop_below || depth == self.height {
            return;
        }
        let threshold = node.threshold;
        let (left, right) = values.split_at(values.partition_point(|v| *v < threshold));
        self.count_sorted(tree, 2 * i + 1, depth + 1, left);
        self.count_sorted(tree, 2 * i + 2, depth + 1, right);
    }
}
