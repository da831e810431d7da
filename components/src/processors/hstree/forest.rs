//! Half-Space-Trees (Tan, Ting & Liu, IJCAI 2011) as River's `HalfSpaceTrees` implements them.
//!
//! Plain synchronous code with no I/O, so that it can be tested and benchmarked alone.
//!
//! # What is River's and what is ours
//!
//! The semantics are River's (`river/anomaly/hst.py`), so that scores agree with it on the same
//! dense features:
//!
//! - each tree is built once, from the `[0, 1]` limits of every dimension: a split dimension drawn
//!   with probability proportional to the width of its current range, a split value drawn
//!   uniformly from the middle 70 % of that range (River's `padding = 0.15`);
//! - learning walks root to leaf and adds one to the latest mass `l` of every node on the path;
//!   after every `window_size` learned points, `l` becomes the reference mass `r` and `l` resets;
//! - the score sums `r · 2^depth` over the path until, and including, the first node whose `r`
//!   is below `size_limit`, and is reported as `1 − sum / (trees · window_size · (2^(height+1) − 1))`,
//!   so that high means anomalous; before the first window is complete it is 0.
//!
//! The paper instead perturbs a work space per tree and splits at midpoints; River's padded
//! random splits are what the cross-check compares against, so they are what is built here.
//!
//! Ours is the memory layout and the cost. Each tree is an implicit complete binary tree in one
//! flat array (node `i` has children `2i + 1` and `2i + 2`), 16 bytes a node (split dimension and
//! value, reference mass `r` as a `u32`, and the number of the window `r` belongs to), all trees
//! in one allocation.
//!
//! The latest masses `l` are not counted node by node as points arrive. A score only reads a
//! node when every ancestor has `r ≥ size_limit`, so counting a point down to its leaf in every
//! tree (16 levels × 25 trees for a forest of height 15) is mostly wasted on nodes no score will
//! read. Instead the window's points are kept (`window_size` of them) and counted into `r` when
//! the window closes, top-down, descending only below nodes whose count reaches `size_limit`:
//! every node a score can reach gets exactly the mass River's `l` would have given it, and the
//! per-point work is the score's short descent plus a share of the count. Nodes not counted in
//! the last window read as 0 (their window number is stale), which makes the swap free.
//!
//! With one dimension (the default featurization) even the descents are done once per window:
//! between swaps the score is a step function of the value, compiled into sorted breakpoints
//! when the window closes, so a score is a binary search. A property test holds it equal to
//! the descent, bit for bit.

mod build;
mod walk;

use build::{Builder, Fenwick};
use walk::{Counter, StepWalker, Steps};

use std::fmt;

use crate::random::SplitMix64;

/// River's padding: a split never falls in the outer 15 % of its node's range on either side.
const PADDING: f64 = 0.15;

/// The deepest tree a forest accepts; depth scores are `2^depth`, kept exact in a `u64`.
pub const MAX_HEIGHT: u32 = 20;

/// The most nodes a forest may hold, over all its trees (16 bytes each: 256 MiB).
pub const MAX_NODES: u64 = 1 << 24;

/// The most trees a forest accepts.
pub const MAX_TREES: usize = 1024;

/// The bytes one node takes in memory.
pub const NODE_BYTES: usize = std::mem::size_of::<Node>();

/// Why a forest cannot be built with the parameters given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForestError {
    /// `trees` is 0 or above [`MAX_TREES`].
    #[error("trees must be between 1 and {MAX_TREES}, not {0}")]
    Trees(usize),
    /// `height` is 0 or above [`MAX_HEIGHT`].
    #[error("height must be between 1 and {MAX_HEIGHT}, not {0}")]
    Height(u32),
    /// `window_size` is 0.
    #[error("window_size must be at least 1")]
    Window,
    /// `size_limit` is negative, not finite, or above `window_size`.
    #[error("size_limit must be between 0 and window_size ({window}), not {limit}")]
    SizeLimit {
        /// The limit asked for.
        limit: f64,
        /// The window size.
        window: u32,
    },
    /// No dimension, or more than fit a node's split field.
    #[error("a forest needs between 1 and {max} dimensions, not {0}", max = u32::MAX)]
    Dims(usize),
    /// The forest would not fit in [`MAX_NODES`].
    #[error(
        "{trees} trees of height {height} have {nodes} nodes ({mib} MiB); the limit is {MAX_NODES} nodes"
    )]
    TooLarge {
        /// Trees asked for.
        trees: usize,
        /// Height asked for.
        height: u32,
        /// Nodes that would be needed.
        nodes: u64,
        /// Memory that would be needed, in MiB.
        mib: u64,
    },
}

/// The shape of a forest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForestParams {
    /// Number of trees.
    pub trees: usize,
    /// Height of each tree: a tree has `height + 1` levels and `2^(height+1) − 1` nodes.
    pub height: u32,
    /// Points per window: after this many learned points, latest masses become reference masses.
    pub window_size: u32,
    /// A descent stops scoring at the first node whose reference mass is below this
    /// (River: `0.1 · window_size`).
    pub size_limit: f64,
    /// Number of feature dimensions, each expected in `[0, 1]`.
    pub dims: usize,
    /// Seed of the split draws: the same seed and shape give the same trees.
    pub seed: u64,
}

impl ForestParams {
    /// River's defaults (10 trees of height 8, windows of 250, `size_limit = 25`) over `dims`
    /// dimensions.
    pub fn river(dims: usize, seed: u64) -> Self {
        Self {
            trees: 10,
            height: 8,
            window_size: 250,
            size_limit: 25.0,
            dims,
            seed,
        }
    }

    /// Nodes in one tree.
    pub fn nodes_per_tree(&self) -> u64 {
        (1u64 << (self.height.min(MAX_HEIGHT) + 1)) - 1
    }

    /// Nodes in the whole forest.
    pub fn nodes(&self) -> u64 {
        self.nodes_per_tree().saturating_mul(self.trees as u64)
    }

    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), ForestError> {
        if self.trees == 0 || self.trees > MAX_TREES {
            return Err(ForestError::Trees(self.trees));
        }
        if self.height == 0 || self.height > MAX_HEIGHT {
            return Err(ForestError::Height(self.height));
        }
        if self.window_size == 0 {
            return Err(ForestError::Window);
        }
        if !(self.size_limit.is_finite()
            && self.size_limit >= 0.0
            && self.size_limit <= f64::from(self.window_size))
        {
            return Err(ForestError::SizeLimit {
                limit: self.size_limit,
                window: self.window_size,
            });
        }
        if self.dims == 0 || u32::try_from(self.dims).is_err() {
            return Err(ForestError::Dims(self.dims));
        }
        let nodes = self.nodes();
        if nodes > MAX_NODES {
            return Err(ForestError::TooLarge {
                trees: self.trees,
                height: self.height,
                nodes,
                mib: nodes.saturating_mul(NODE_BYTES as u64) >> 20,
            });
        }
        Ok(())
    }
}

/// A point the forest can descend with: its value in each dimension, expected in `[0, 1]`.
///
/// A trait rather than a slice so that sparse encodings (a one-hot operation plus a duration)
/// need not be spelled out as thousands of zeros for every span.
pub trait Point {
    /// The value in dimension `dim`.
    fn value(&self, dim: usize) -> f32;
}

impl Point for [f32] {
    /// Dimensions past the end of the slice read as 0.
    fn value(&self, dim: usize) -> f32 {
        self.get(dim).copied().unwrap_or(0.0)
    }
}

impl<const N: usize> Point for [f32; N] {
    fn value(&self, dim: usize) -> f32 {
        self.as_slice().value(dim)
    }
}

impl Point for Vec<f32> {
    fn value(&self, dim: usize) -> f32 {
        self.as_slice().value(dim)
    }
}

/// One node: the split (unused in leaves) and the reference mass, with the window it belongs to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(C)]
pub(crate) struct Node {
    threshold: f32,
    dim: u32,
    r: u32,
    epoch: u32,
}

impl Node {
    /// The reference mass as of window `epoch`: a mass counted for an older window is 0 now,
    /// because the node was not reached by enough points of the last window to be counted.
    ///
    /// Epochs wrap after 2^32 windows; a node left uncounted for exactly a multiple of that many
    /// windows would be misread, which at one window per 250 points cannot happen in practice.
    #[inline(always)]
    fn r_at(&self, epoch: u32) -> u32 {
        self.r & u32::from(self.epoch == epoch).wrapping_neg()
    }

    /// True when `point` goes right: River sends `value < threshold` left, so NaN goes right.
    #[inline(always)]
    fn goes_right<P: Point + ?Sized>(&self, point: &P) -> bool {
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        let right = !(point.value(self.dim as usize) < self.threshold);
        right
    }
}

/// The window counters of a forest, as saved with its masses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowState {
    /// Number of the current reference window (wrapping).
    pub epoch: u32,
    /// Windows completed, saturating: 0 means no reference mass exists yet.
    pub completed: u64,
}

/// A Half-Space-Trees forest over points of type `P`.
#[derive(Clone)]
pub struct Forest<P = Vec<f32>> {
    params: ForestParams,
    per_tree: usize,
    /// `r < stop_below` ends a score's descent: `size_limit` rounded up, masses being integers.
    stop_below: u32,
    max_score: f64,
    nodes: Vec<Node>,
    window: WindowState,
    /// The points learned in the current window, counted into `r` when it closes.
    latest: Vec<P>,
    /// Indices into `latest`, partitioned down each tree when a window closes.
    scratch: Vec<u32>,
    /// The window's values sorted, when there is one dimension: each node's count is then a
    /// binary search rather than a pass over its points.
    sorted: Vec<f32>,
    /// With one dimension, the score as a step function of the value, rebuilt when a window
    /// closes: reference masses change only then.
    steps: Steps,
}

impl<P> fmt::Debug for Forest<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forest")
            .field("params", &self.params)
            .field("window", &self.window)
            .field("latest", &self.latest.len())
            .finish_non_exhaustive()
    }
}

impl<P: Point + Clone> Forest<P> {
    /// Builds the trees; masses start at 0.
    pub fn new(params: ForestParams) -> Result<Self, ForestError> {
        params.validate()?;
        let per_tree = params.nodes_per_tree() as usize;
        let mut nodes = vec![Node::default(); per_tree * params.trees];
        let mut rng = SplitMix64::new(params.seed);
        let mut limits = vec![(0.0f64, 1.0f64); params.dims];
        let mut widths = Fenwick::new(params.dims, 1.0);
        for tree in nodes.chunks_exact_mut(per_tree) {
            let mut builder = Builder {
                tree,
                height: params.height,
                limits: &mut limits,
                widths: &mut widths,
                rng: &mut rng,
            };
            builder.split(0, 0);
        }
        let max_score = params.trees as f64
            * f64::from(params.window_size)
            * ((1u64 << (params.height + 1)) - 1) as f64;
        Ok(Self {
            stop_below: params.size_limit.ceil() as u32,
            max_score,
            per_tree,
            nodes,
            window: WindowState::default(),
            latest: Vec::with_capacity(params.window_size as usize),
            scratch: Vec::with_capacity(params.window_size as usize),
            sorted: Vec::new(),
            steps: Steps::default(),
            params,
        })
    }

    /// The parameters the forest was built with.
    pub fn params(&self) -> &ForestParams {
        &self.params
    }

    /// The window counters.
    pub fn window(&self) -> WindowState {
        self.window
    }

    /// Points learned in the current window.
    pub fn latest_len(&self) -> usize {
        self.latest.len()
    }

    /// True once a first window is complete: before that every score is 0, as in River.
    pub fn is_ready(&self) -> bool {
        self.window.completed > 0
    }

    /// The smallest difference between two scores: one unit of mass at the root,
    /// `1 / (trees · window_size · (2^(height+1) − 1))`.
    pub fn score_step(&self) -> f64 {
        1.0 / self.max_score
    }

    /// Scores `point` against the reference masses, then learns it: River's `score_one`
    /// followed by `learn_one`.
    pub fn score_learn(&mut self, point: &P) -> f64 {
        self.score_learn_if(point, |_| true)
    }

    /// Scores `point` and learns it only if `keep(score)` says so.
    pub fn score_learn_if(&mut self, point: &P, keep: impl FnOnce(f64) -> bool) -> f64 {
        let score = self.score(point);
        if keep(score) {
            self.learn(point);
        }
        score
    }

    /// Learns `point` without scoring it: it joins the current window, and the window's
    /// points are counted into the reference masses when it is full.
    pub fn learn(&mut self, point: &P) {
        self.latest.push(point.clone());
        if self.latest.len() >= self.params.window_size as usize {
            self.close_window();
        }
    }

    /// Scores `point` without learning it: one descent per tree, from the root to the first
    /// node whose reference mass is below `size_limit`.
    ///
    /// The trees descend together, a level at a time, in groups of `LANES`: their descents
    /// are independent, so the loads of a level are in flight at once instead of one tree
    /// waiting on the next. A tree that stopped keeps re-reading its last node with its
    /// contribution masked out, which costs less than the branch that would skip it.
    ///
    /// With one dimension the descents are done once per window instead: between two window
    /// swaps the score is a step function of the value, kept as sorted breakpoints, and a
    /// score is one binary search.
    pub fn score<Q: Point + ?Sized>(&self, point: &Q) -> f64 {
        if !self.is_ready() {
            return 0.0;
        }
        let sum = match self.steps.sum_at(point.value(0)) {
            Some(sum) if self.params.dims == 1 => sum,
            _ => self.descend(point),
        };
        (1.0 - sum as f64 / self.max_score).clamp(0.0, 1.0)
    }

    /// The score's sum `Σ r · 2^depth` by descending every tree.
    fn descend<Q: Point + ?Sized>(&self, point: &Q) -> u64 {
        let epoch = self.window.epoch;
        let height = self.params.height;
        let per_tree = self.per_tree;
        let mut sum = 0u64;
        for (group, first) in (0..self.params.trees).step_by(LANES).enumerate() {
            let lanes = LANES.min(self.params.trees - first);
            let base = group * LANES * per_tree;
            let mut at = [0usize; LANES];
            let mut live = [0u64; LANES];
            live[..lanes].fill(u64::MAX);
            for depth in 0..=height {
                let mut any = 0u64;
                for lane in 0..lanes {
                    let Some(node) = self.nodes.get(base + lane * per_tree + at[lane]) else {
                        continue;
                    };
                    let r = node.r_at(epoch);
                    sum += (u64::from(r) << depth) & live[lane];
                    let go_on = r >= self.stop_below && depth < height;
                    live[lane] &= u64::from(go_on).wrapping_neg();
                    let next = 2 * at[lane] + 1 + usize::from(node.goes_right(point));
                    at[lane] = if live[lane] != 0 { next } else { at[lane] };
                    any |= live[lane];
                }
                if any == 0 {
                    break;
                }
            }
        }
        sum
    }

    /// The score computed by descending the trees even when a step function exists: the
    /// reference the step function is tested against.
    pub fn score_by_descent<Q: Point + ?Sized>(&self, point: &Q) -> f64 {
        if !self.is_ready() {
            return 0.0;
        }
        (1.0 - self.descend(point) as f64 / self.max_score).clamp(0.0, 1.0)
    }

    /// The reference mass `r` of node `node` (implicit index) of tree `tree`. Exact for every
    /// node a score can reach; below a node lighter than `size_limit` it reads 0.
    pub fn reference_mass(&self, tree: usize, node: usize) -> u32 {
        self.node(tree, node)
            .map_or(0, |n| n.r_at(self.window.epoch))
    }

    /// The latest mass `l` of node `node` (implicit index) of tree `tree`: how many points of
    /// the current window reach it. Counted on demand, for tests and inspection.
    pub fn latest_mass(&self, tree: usize, node: usize) -> u32 {
        if tree >= self.params.trees || node >= self.per_tree {
            return 0;
        }
        let depth = usize::BITS - 1 - (node + 1).leading_zeros();
        let base = tree * self.per_tree;
        let reaches = |point: &P| {
            let mut i = 0usize;
            for _ in 0..depth {
                let Some(n) = self.nodes.get(base + i) else {
                    return false;
                };
                i = 2 * i + 1 + usize::from(n.goes_right(point));
            }
            i == node
        };
        self.latest.iter().filter(|p| reaches(p)).count() as u32
    }

    fn node(&self, tree: usize, node: usize) -> Option<&Node> {
        if tree >= self.params.trees || node >= self.per_tree {
            return None;
        }
        self.nodes.get(tree * self.per_tree + node)
    }

    /// Turns the window's points into reference masses: per tree, the point indices are
    /// partitioned top-down, and a node is split further only while it holds at least
    /// `size_limit` points, because a score never reads below a lighter node.
    fn close_window(&mut self) {
        self.window.epoch = self.window.epoch.wrapping_add(1);
        self.window.completed = self.window.completed.saturating_add(1);
        let counter = Counter {
            points: &self.latest,
            epoch: self.window.epoch,
            stop_below: self.stop_below.max(1),
            height: self.params.height,
        };
        if self.params.dims == 1 {
            // NaN goes right at every node, as +∞ does; mapping it there keeps the order total
            // and the "goes left" prefix of every range contiguous.
            self.sorted.clear();
            self.sorted.extend(self.latest.iter().map(|p| {
                let v = p.value(0);
                if v.is_nan() { f32::INFINITY } else { v }
            }));
            self.sorted.sort_unstable_by(f32::total_cmp);
            for tree in self.nodes.chunks_exact_mut(self.per_tree) {
                counter.count_sorted(tree, 0, 0, &self.sorted);
            }
            self.compile_steps();
        } else {
            for tree in self.nodes.chunks_exact_mut(self.per_tree) {
                self.scratch.clear();
                self.scratch.extend(0..self.latest.len() as u32);
                counter.count(tree, 0, 0, &mut self.scratch);
            }
        }
        self.latest.clear();
    }

    /// Rebuilds the step function of a one-dimensional forest from the reference masses.
    ///
    /// Each tree's score is constant over the interval of each node where its descent stops;
    /// the forest's is the sum, constant between the union of those intervals' bounds.
    fn compile_steps(&mut self) {
        let mut starts = std::mem::take(&mut self.steps.scratch);
        starts.clear();
        for (t, tree) in self.nodes.chunks_exact(self.per_tree).enumerate() {
            StepWalker {
                tree,
                t: t as u32,
                epoch: self.window.epoch,
                stop_below: self.stop_below,
                height: self.params.height,
                out: &mut starts,
            }
            .walk(0, 0, f32::NEG_INFINITY, f32::INFINITY, 0);
        }
        // Stable: where one tree's intervals share a start, the later (non-empty) one wins.
        starts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut per_tree = vec![0u64; self.params.trees];
        let mut total = 0u64;
        self.steps.bounds.clear();
        self.steps.sums.clear();
        for &(start, tree, sum) in &starts {
            let Some(current) = per_tree.get_mut(tree as usize) else {
                continue;
            };
            total = total - *current + sum;
            *current = sum;
            match self.steps.bounds.last() {
                Some(last) if *last == start => {
                    if let Some(s) = self.steps.sums.last_mut() {
                        *s = total;
                    }
                }
                _ => {
                    self.steps.bounds.push(start);
                    self.steps.sums.push(total);
                }
            }
        }
        self.steps.scratch = starts;
    }

    /// The points of the current window.
    pub(crate) fn latest(&self) -> &[P] {
        &self.latest
    }

    /// Appends every node's reference mass and window number, 8 bytes a node, little-endian.
    pub(crate) fn write_masses(&self, out: &mut Vec<u8>) {
        out.reserve(self.nodes.len() * MASS_BYTES);
        for node in &self.nodes {
            out.extend_from_slice(&node.r.to_le_bytes());
            out.extend_from_slice(&node.epoch.to_le_bytes());
        }
    }

    /// The number of bytes [`Forest::write_masses`] writes.
    pub(crate) fn masses_len(&self) -> usize {
        self.nodes.len() * MASS_BYTES
    }

    /// Replaces masses, window counters and the current window's points with saved ones.
    /// Checks everything before changing anything: a mass above the window size, or a full
    /// window, cannot come from a forest of this shape.
    pub(crate) fn restore(
        &mut self,
        bytes: &[u8],
        window: WindowState,
        latest: Vec<P>,
    ) -> Result<(), String> {
        if bytes.len() != self.masses_len() {
            return Err(format!(
                "{} bytes of masses, expected {}",
                bytes.len(),
                self.masses_len()
            ));
        }
        if latest.len() >= self.params.window_size as usize {
            return Err(format!(
                "{} points in the current window, window_size is {}",
                latest.len(),
                self.params.window_size
            ));
        }
        let limit = self.params.window_size;
        let word = |c: &[u8], i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&c[4 * i..4 * i + 4]);
            u32::from_le_bytes(b)
        };
        if bytes.chunks_exact(MASS_BYTES).any(|c| word(c, 0) > limit) {
            return Err(format!("a mass exceeds window_size {limit}"));
        }
        for (node, c) in self.nodes.iter_mut().zip(bytes.chunks_exact(MASS_BYTES)) {
            node.r = word(c, 0);
            node.epoch = word(c, 1);
        }
        self.window = window;
        self.latest = latest;
        if self.params.dims == 1 && self.is_ready() {
            self.compile_steps();
        }
        Ok(())
    }
}

/// Trees a score descends together.
const LANES: usize = 8;

/// Bytes per node in a saved forest: `r` and the window number.
const MASS_BYTES: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenwick_draws_in_proportion_to_width() {
        let mut f = Fenwick::new(4, 1.0);
        f.add(1, -1.0);
        assert!((f.total() - 3.0).abs() < 1e-12);
        assert_eq!(f.sample(0.5), 0);
        assert_eq!(f.sample(1.5), 2);
        assert_eq!(f.sample(2.5), 3);
        assert_eq!(f.sample(99.0), 3);
    }

    #[test]
    fn splits_stay_inside_the_padded_range() {
        let forest = Forest::<[f32; 1]>::new(ForestParams::river(1, 7)).unwrap();
        let root = forest.nodes[0];
        assert!((0.15..=0.85).contains(&root.threshold), "{root:?}");
        let left = forest.nodes[1];
        assert!(left.threshold < root.threshold);
        let right = forest.nodes[2];
        assert!(right.threshold > root.threshold);
    }

    #[test]
    fn node_is_sixteen_bytes() {
        assert_eq!(NODE_BYTES, 16);
    }
}
