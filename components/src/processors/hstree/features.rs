//! Featurization: what a span becomes before a forest sees it, and the bounded table of
//! operations it is keyed by.
//!
//! Two encodings:
//!
//! - **operation** (the default): one dimension, the span's log-duration z-scored by its own
//!   operation's running statistics and mapped into `[0, 1]`. Every operation shares one forest,
//!   so memory does not grow with the number of operations, and a 2 ms and a 2 s operation are
//!   each judged against themselves.
//! - **paper**: the encoding of the paper's Python encoder, with its bug fixed — a one-hot
//!   dimension per `service::operation` (the encoder stored the key under the service name) plus
//!   `duration / max_duration`, clamped to 1, over one global forest. Kept to compare against.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::forest::Point;
use super::quantile::{P2Quantile, WindowedQuantile};

/// Spans of history a running statistic keeps, roughly: after this many, each new span moves
/// the mean by `1/HORIZON` of its distance (exponential forgetting), so a slow drift is followed
/// while a three-minute fault moves it little.
pub const STATS_HORIZON: u64 = 10_000;

/// The smallest standard deviation of a log-duration the z-score divides by: an operation whose
/// durations barely vary would otherwise turn microseconds of jitter into huge scores. 0.05 is a
/// 5 % change in duration.
pub const MIN_LOG_STD: f64 = 0.05;

/// How far from the mean, in standard deviations, a value learned from a span over its
/// threshold may pull the statistics.
pub const CLIP_Z: f64 = 3.0;

/// The natural log of a duration, with 0 ns read as 1 ns.
pub fn log_duration(duration_ns: u64) -> f64 {
    (duration_ns.max(1) as f64).ln()
}

/// Running mean and variance of an operation's log-duration.
///
/// Exact (Welford) for the first [`STATS_HORIZON`] values, exponentially weighted after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LogStats {
    /// Values seen.
    pub count: u64,
    /// Mean of the log-durations.
    #[serde(with = "super::floats::exact")]
    pub mean: f64,
    /// Variance of the log-durations.
    #[serde(with = "super::floats::exact")]
    pub var: f64,
}

impl LogStats {
    /// Adds one log-duration.
    pub fn update(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.count = self.count.saturating_add(1);
        // With α = 1/n these are the exact running mean and population variance; capping n
        // turns them into exponentially weighted ones.
        let alpha = 1.0 / self.count.min(STATS_HORIZON) as f64;
        let delta = x - self.mean;
        let step = alpha * delta;
        self.mean += step;
        self.var = (1.0 - alpha) * (self.var + delta * step);
    }

    /// Adds a log-duration from a span over its threshold, first clamped to within
    /// [`CLIP_Z`] (floored) standard deviations of the mean: a few learned fault spans would
    /// otherwise inflate the variance, which lowers every later z-score, which lets more fault
    /// spans be learned, until the fault is absorbed.
    pub fn update_clipped(&mut self, x: f64) {
        if self.count < 2 {
            self.update(x);
            return;
        }
        self.update(x.clamp(self.at_z(-CLIP_Z), self.at_z(CLIP_Z)));
    }

    /// The log-duration `z` (floored) standard deviations above the mean (below it if `z` is
    /// negative).
    pub fn at_z(&self, z: f64) -> f64 {
        self.mean + z * self.var.sqrt().max(MIN_LOG_STD)
    }

    /// How many (floored) standard deviations `x` lies above the mean; 0 before two values.
    pub fn z(&self, x: f64) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let z = (x - self.mean) / self.var.sqrt().max(MIN_LOG_STD);
        if z.is_finite() { z } else { 0.0 }
    }
}

/// The operation encoding of a z-score, `max_z` standard deviations mapping to 1.
///
/// Two-sided, `0.5 + z / (2 · max_z)`; one-sided (`slow_only`), `z / max_z`, so that every
/// span faster than its mean lands on 0: the forest then spends its splits on the slow side,
/// and only slow spans can score high. Both clamp into `[0, 1]`.
pub fn operation_feature(z: f64, one_sided: bool, max_z: f64) -> f32 {
    let x = if one_sided {
        z / max_z
    } else {
        0.5 + z / (2.0 * max_z)
    };
    if x.is_nan() {
        return 0.0;
    }
    x.clamp(0.0, 1.0) as f32
}

/// The paper's duration feature: `duration / max_duration`, clamped to 1.
pub fn paper_duration(duration_ns: u64, max_duration_ns: u64) -> f32 {
    if max_duration_ns == 0 {
        return 1.0;
    }
    (duration_ns as f64 / max_duration_ns as f64).min(1.0) as f32
}

/// The paper's encoding of one span: dimension 0 is the duration feature, dimension
/// `slot + 1` is 1 for the span's operation, every other dimension is 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneHot {
    /// The operation's slot in the table.
    pub slot: usize,
    /// `duration / max_duration`, clamped to 1.
    pub duration: f32,
}

impl Point for OneHot {
    #[inline]
    fn value(&self, dim: usize) -> f32 {
        if dim == 0 {
            self.duration
        } else if dim == self.slot + 1 {
            1.0
        } else {
            0.0
        }
    }
}

/// What the table knows about one `service::operation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// `service.name` of the span's resource.
    pub service: String,
    /// The span's name.
    pub operation: String,
    /// Spans of this operation observed (learned or not).
    pub seen: u64,
    /// Spans flagged.
    pub flagged: u64,
    /// End time of the latest span, nanoseconds since the Unix epoch: eviction picks the oldest.
    pub last_seen_unix_nano: u64,
    /// Log-duration statistics: the operation encoding and the slow-side check.
    pub stats: LogStats,
    /// Running high quantile of the operation's scores (hstree) or durations (p99).
    pub calibrator: P2Quantile,
    /// High quantile of the operation's recent log-durations, at the calibrator's level and
    /// learned as it is. Spans past the encoding's saturation tie at the highest score, which
    /// cannot rank them: of those, only the ones slower than this are flagged, so a healthy
    /// operation with a slow mode (a cache miss in every 25 calls) is flagged no more often
    /// than `target_fpr` asks, and a slow stretch of load is not flagged whole.
    pub slowest: WindowedQuantile,
    /// The z-score that only `target_fpr / 2` of the operation's spans exceed, learned from
    /// its first spans (a warm start's, when there is one) and then kept: the operation
    /// encoding saturates there, or at `max_z` if that is higher.
    pub tail: P2Quantile,
}

impl Operation {
    fn new(service: &str, operation: &str, levels: Levels) -> Self {
        Self {
            service: service.to_string(),
            operation: operation.to_string(),
            seen: 0,
            flagged: 0,
            last_seen_unix_nano: 0,
            stats: LogStats::default(),
            calibrator: P2Quantile::new(levels.score),
            slowest: WindowedQuantile::new(levels.score, levels.slowest_window),
            tail: P2Quantile::new(levels.tail),
        }
    }

    /// The z-score the operation encoding maps to 1: the learned tail, at least `max_z`.
    pub fn saturation(&self, max_z: f64) -> f64 {
        self.tail.quantile().map_or(max_z, |tail| tail.max(max_z))
    }
}

/// The quantile levels an operation's estimators track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    /// Of the calibrator: scores (hstree) or durations (p99).
    pub score: f64,
    /// Of the tail: z-scores.
    pub tail: f64,
    /// Log-durations per window of the slowest quantile.
    pub slowest_window: u64,
}

/// What happens to a new operation once `max_operations` are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Its spans are not judged and not learned; the known operations keep their state.
    #[default]
    Pass,
    /// It replaces the operation seen least recently, which loses its state.
    Evict,
}

/// How a span's operation was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A known operation, or a new one that fit.
    Slot(usize),
    /// A new operation that replaced the least recently seen one.
    Evicted(usize),
    /// A new operation over the cap, passed under [`Overflow::Pass`].
    Overflow,
}

/// The operations known, bounded by `max_operations`, keyed by `service` then `operation` so
/// that a lookup borrows the span's strings instead of building a key.
#[derive(Debug, Clone)]
pub struct Operations {
    index: HashMap<String, HashMap<String, usize>>,
    slots: Vec<Operation>,
    max: usize,
    levels: Levels,
}

impl Operations {
    /// An empty table for at most `max` operations whose estimators track `levels`.
    pub fn new(max: usize, levels: Levels) -> Self {
        Self {
            index: HashMap::new(),
            slots: Vec::new(),
            max,
            levels,
        }
    }

    /// Finds or adds `service::operation`.
    pub fn lookup(&mut self, service: &str, operation: &str, policy: Overflow) -> Lookup {
        if let Some(&slot) = self.index.get(service).and_then(|ops| ops.get(operation)) {
            return Lookup::Slot(slot);
        }
        if self.slots.len() < self.max {
            let slot = self.slots.len();
            self.slots
                .push(Operation::new(service, operation, self.levels));
            self.insert_key(service, operation, slot);
            return Lookup::Slot(slot);
        }
        match policy {
            Overflow::Pass => Lookup::Overflow,
            Overflow::Evict => {
                let Some(slot) = self
                    .slots
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, op)| op.last_seen_unix_nano)
                    .map(|(i, _)| i)
                else {
                    return Lookup::Overflow;
                };
                let old = &self.slots[slot];
                if let Some(ops) = self.index.get_mut(&old.service) {
                    ops.remove(&old.operation);
                    if ops.is_empty() {
                        self.index.remove(&old.service);
                    }
                }
                self.slots[slot] = Operation::new(service, operation, self.levels);
                self.insert_key(service, operation, slot);
                Lookup::Evicted(slot)
            }
        }
    }

    fn insert_key(&mut self, service: &str, operation: &str, slot: usize) {
        self.index
            .entry(service.to_string())
            .or_default()
            .insert(operation.to_string(), slot);
    }

    /// The operation in `slot`.
    pub fn get(&self, slot: usize) -> Option<&Operation> {
        self.slots.get(slot)
    }

    /// The operation in `slot`, to update.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Operation> {
        self.slots.get_mut(slot)
    }

    /// The operation `service::operation`, if known.
    pub fn find(&self, service: &str, operation: &str) -> Option<&Operation> {
        let slot = *self.index.get(service)?.get(operation)?;
        self.slots.get(slot)
    }

    /// Number of operations known.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no operation is known.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every operation, by slot.
    pub fn iter(&self) -> impl Iterator<Item = &Operation> {
        self.slots.iter()
    }

    /// Rebuilds a table from saved operations; fails on duplicates or too many.
    pub(crate) fn from_saved(
        slots: Vec<Operation>,
        max: usize,
        levels: Levels,
    ) -> Result<Self, String> {
        if slots.len() > max {
            return Err(format!(
                "{} operations, more than max_operations ({max})",
                slots.len()
            ));
        }
        let mut table = Self::new(max, levels);
        for (slot, op) in slots.iter().enumerate() {
            if table.find(&op.service, &op.operation).is_some() {
                return Err(format!(
                    "operation {}::{} appears twice",
                    op.service, op.operation
                ));
            }
            if op.slowest.window() != levels.slowest_window {
                return Err(format!(
                    "operation {}::{} windows its slowest quantile over {} spans, expected {}",
                    op.service,
                    op.operation,
                    op.slowest.window(),
                    levels.slowest_window
                ));
            }
            for (tracked, expected) in [
                (op.calibrator.quantile_level(), levels.score),
                (op.slowest.quantile_level(), levels.score),
                (op.tail.quantile_level(), levels.tail),
            ] {
                if !super::floats::close(tracked, expected) {
                    return Err(format!(
                        "operation {}::{} tracks quantile {tracked}, expected {expected}",
                        op.service, op.operation,
                    ));
                }
            }
            table.insert_key(&op.service, &op.operation, slot);
        }
        table.slots = slots;
        Ok(table)
    }
}
