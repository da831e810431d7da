//! Building a tree River's way, and the dimension widths it draws splits from.

use super::{Node, PADDING};
use crate::random::SplitMix64;

/// Builds one tree River's way, recursively over implicit indices.
pub(super) struct Builder<'a> {
    pub(super) tree: &'a mut [Node],
    pub(super) height: u32,
    pub(super) limits: &'a mut [(f64, f64)],
    pub(super) widths: &'a mut Fenwick,
    pub(super) rng: &'a mut SplitMix64,
}

impl Builder<'_> {
    pub(super) fn split(&mut self, i: usize, depth: u32) {
        if depth == self.height {
            return;
        }
        let dim = self
            .widths
            .sample(self.rng.next_f64() * self.widths.total());
        let (a, b) = self.limits[dim];
        let width = b - a;
        let at = a + PADDING * width + self.rng.next_f64() * (1.0 - 2.0 * PADDING) * width;
        if let Some(node) = self.tree.get_mut(i) {
            node.dim = dim as u32;
            node.threshold = at as f32;
        }
        self.limits[dim] = (a, at);
        self.widths.add(dim, (at - a) - width);
        self.split(2 * i + 1, depth + 1);
        self.limits[dim] = (at, b);
        self.widths.add(dim, (b - at) - (at - a));
        self.split(2 * i + 2, depth + 1);
        self.limits[dim] = (a, b);
        self.widths.add(dim, width - (b - at));
    }
}

/// A Fenwick tree of dimension widths, to draw a dimension in proportion to its width in
/// O(log dims): the paper's one-hot encoding has a dimension per operation.
pub(super) struct Fenwick {
    pub(super) tree: Vec<f64>,
}

impl Fenwick {
    pub(super) fn new(len: usize, value: f64) -> Self {
        let mut f = Self {
            tree: vec![0.0; len + 1],
        };
        for i in 0..len {
            f.add(i, value);
        }
        f
    }

    pub(super) fn add(&mut self, index: usize, delta: f64) {
        let mut i = index + 1;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    pub(super) fn total(&self) -> f64 {
        let mut i = self.tree.len() - 1;
        let mut sum = 0.0;
        while i > 0 {
            sum += self.tree[i];
            i &= i - 1;
        }
        sum
    }

    /// The first index whose running sum exceeds `target`; the last index when rounding puts
    /// `target` past the end.
    pub(super) fn sample(&self, mut target: f64) -> usize {
        let len = self.tree.len() - 1;
        let mut pos = 0usize;
        let mut step = len.next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next <= len && self.tree[next] <= target {
                pos = next;
                target -= self.tree[next];
            }
            step >>= 1;
        }
        pos.min(len - 1)
    }
}
