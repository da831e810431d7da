//! The detector: featurization, forest, calibration and feedback behind one synchronous call,
//! [`Detector::observe`], so that an evaluator can replay a labeled CSV without the engine.

use super::config::{Calibration, DetectorKind, Features, HsTreeConfig};
use super::features::{
    Lookup, OneHot, Operations, log_duration, operation_feature, paper_duration,
};
use super::forest::{Forest, ForestParams, WindowState};
use crate::random::SplitMix64;

/// Mixed into the seed of the feedback coin so that it does not repeat the split draws.
const COIN_SEED: u64 = 0x5EED_C01F_0000_0001;

/// What the detector says about one span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Anomaly score in `[0, 1]`, higher is more anomalous. For `detector = "hstree"` the
    /// HS-Tree score (0 until the forest's first window is complete); for `detector = "p99"`
    /// `duration / (duration + threshold)`, so 0.5 is the threshold.
    pub score: f64,
    /// True when the span is judged anomalous. Never true while `training`.
    pub anomalous: bool,
    /// True when the span was learned but not judged: the model has not learned `train_size`
    /// spans yet, or the span's operation has not calibrated its threshold yet.
    pub training: bool,
    /// True when the span's operation is over `max_operations` and `overflow = "pass"`: the
    /// span was neither judged nor learned.
    pub overflow: bool,
}

impl Verdict {
    const OVERFLOW: Verdict = Verdict {
        score: 0.0,
        anomalous: false,
        training: false,
        overflow: true,
    };
}

/// Totals since the detector was built or loaded, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DetectorCounters {
    /// Spans judged.
    pub judged: u64,
    /// Spans judged anomalous.
    pub flagged: u64,
    /// Spans learned.
    pub learned: u64,
    /// Spans passed because their operation was over the cap.
    pub overflowed: u64,
    /// Operations evicted to make room for a new one.
    pub evicted: u64,
}

/// Why a detector cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct DetectorError {
    /// The config key at fault.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// A streaming anomaly detector over span durations, keyed by `service::operation`.
///
/// ```no_run
/// use tracescale_components::processors::hstree::{Detector, HsTreeConfig};
///
/// let mut detector = Detector::new(&HsTreeConfig::default())?;
/// let verdict = detector.observe("checkout", "PlaceOrder", 6_000_000, 1_700_000_000_000_000_000);
/// assert!(verdict.training);
/// # Ok::<(), tracescale_components::processors::hstree::DetectorError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Detector {
    pub(super) config: HsTreeConfig,
    pub(super) model: Model,
    pub(super) ops: Operations,
    pub(super) seen: u64,
    pub(super) coin: SplitMix64,
    pub(super) counters: DetectorCounters,
    max_duration_ns: u64,
    /// [`HsTreeConfig::tail_spans`].
    tail_spans: u64,
    /// Scores of the points 0 and 1 of the operation encoding, with the window count they were
    /// computed at (reference masses change only when a window completes). 0 is every span
    /// faster than its mean under `slow_only`, 1 every span past the slow clamp and the ceiling
    /// of the threshold: together most spans, and 0 has the longest descent.
    pub(super) extremes: [Option<(u64, f64)>; 2],
}

/// The model behind a detector.
#[derive(Debug, Clone)]
pub(super) enum Model {
    /// One forest over the one-dimensional operation encoding.
    Operation(Forest<[f32; 1]>),
    /// One forest over the paper's one-hot encoding.
    Paper(Forest<OneHot>),
    /// The p99 baseline: no forest.
    P99,
}

impl Model {
    fn window(&self) -> Option<WindowState> {
        match self {
            Model::Operation(f) => Some(f.window()),
            Model::Paper(f) => Some(f.window()),
            Model::P99 => None,
        }
    }

    fn params(&self) -> Option<&ForestParams> {
        match self {
            Model::Operation(f) => Some(f.params()),
            Model::Paper(f) => Some(f.params()),
            Model::P99 => None,
        }
    }
}

impl Detector {
    /// A fresh detector for `config`; fails on the first invalid key.
    pub fn new(config: &HsTreeConfig) -> Result<Self, DetectorError> {
        if let Some(problem) = config.problems().into_iter().next() {
            return Err(DetectorError {
                key: problem.key,
                message: problem.message,
            });
        }
        let invalid = |e: super::forest::ForestError| DetectorError {
            key: "trees",
            message: e.to_string(),
        };
        let model = match (config.detector, config.features) {
            (DetectorKind::P99, _) => Model::P99,
            (DetectorKind::Hstree, Features::Operation) => {
                Model::Operation(Forest::new(forest_params(config)).map_err(invalid)?)
            }
            (DetectorKind::Hstree, Features::Paper) => {
                Model::Paper(Forest::new(forest_params(config)).map_err(invalid)?)
            }
        };
        Ok(Self {
            model,
            ops: Operations::new(config.max_operations, config.levels()),
            tail_spans: config.tail_spans(),
            seen: 0,
            coin: SplitMix64::new(config.seed ^ COIN_SEED),
            counters: DetectorCounters::default(),
            extremes: [None; 2],
            max_duration_ns: u64::try_from(config.max_duration.get().as_nanos())
                .unwrap_or(u64::MAX),
            config: config.clone(),
        })
    }

    /// The config the detector was built from.
    pub fn config(&self) -> &HsTreeConfig {
        &self.config
    }

    /// The forest's shape, for `detector = "hstree"`.
    pub fn forest_params(&self) -> Option<&ForestParams> {
        self.model.params()
    }

    /// The forest's window counters, for `detector = "hstree"`.
    pub fn forest_window(&self) -> Option<WindowState> {
        self.model.window()
    }

    /// The operations known.
    pub fn operations(&self) -> &Operations {
        &self.ops
    }

    /// Totals since the detector was built or loaded.
    pub fn counters(&self) -> DetectorCounters {
        self.counters
    }

    /// Spans learned or observed towards `train_size`.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Share of `train_size` done, in `[0, 1]`.
    pub fn training_progress(&self) -> f64 {
        if self.config.train_size == 0 {
            return 1.0;
        }
        (self.seen as f64 / self.config.train_size as f64).min(1.0)
    }

    /// Scores, judges and (depending on the verdict) learns one span.
    ///
    /// `end_unix_nano` is the span's end time; it orders operations for eviction.
    pub fn observe(
        &mut self,
        service: &str,
        operation: &str,
        duration_ns: u64,
        end_unix_nano: u64,
    ) -> Verdict {
        let slot = match self.ops.lookup(service, operation, self.config.overflow) {
            Lookup::Slot(slot) => slot,
            Lookup::Evicted(slot) => {
                self.counters.evicted += 1;
                slot
            }
            Lookup::Overflow => {
                self.counters.overflowed += 1;
                return Verdict::OVERFLOW;
            }
        };
        let config = &self.config;
        let Some(op) = self.ops.get_mut(slot) else {
            return Verdict::OVERFLOW;
        };
        op.last_seen_unix_nano = end_unix_nano;
        op.seen = op.seen.saturating_add(1);
        self.seen = self.seen.saturating_add(1);

        let log_d = log_duration(duration_ns);
        let z = op.stats.z(log_d);
        let quantile = op.calibrator.quantile();
        let slowest = op.slowest.quantile();
        let saturation = op.saturation(config.max_z);
        let judged = self.seen > config.train_size
            && op.calibrator.count() >= config.operation_warmup.max(1);
        let slow = !config.slow_only || z > 0.0;
        let coin = &mut self.coin;
        let learn_flagged = config.learn_flagged;
        // The feedback policy for the operation's statistics and calibrator: a judged span over
        // its threshold is learned with probability `learn_flagged`, so that a fault is taken
        // in slowly while a lasting shift is still followed.
        let mut learn_exceeding = || coin.next_f64() < learn_flagged;

        let (score, exceeds, learned, calibrate_with) = match &mut self.model {
            Model::P99 => {
                // The p99 detector: the threshold is the operation's running high quantile of
                // durations, and a duration is its own score.
                let d = duration_ns as f64;
                let score = match quantile {
                    Some(q) if d + q > 0.0 => d / (d + q),
                    Some(_) => 0.5,
                    None => 0.0,
                };
                let exceeds = judged && quantile.is_some_and(|q| d > q);
                let learned = !exceeds || learn_exceeding();
                (score, exceeds, learned, Some(d))
            }
            model => {
                let x = operation_feature(z, config.slow_only, saturation);
                let one_hot = OneHot {
                    slot,
                    duration: paper_duration(duration_ns, self.max_duration_ns),
                };
                let (ready, score) = match &*model {
                    Model::Operation(f) => (f.is_ready(), cached(f, x, &mut self.extremes)),
                    Model::Paper(f) => (f.is_ready(), f.score(&one_hot)),
                    Model::P99 => (false, 0.0),
                };
                let floor = config.min_score.unwrap_or(0.0);
                let exceeds = judged
                    && match (config.calibration, &*model) {
                        (Calibration::Fixed, _) => {
                            score >= config.min_score.unwrap_or(DEFAULT_FIXED_MIN_SCORE)
                        }
                        // The highest score the current windows give is that of the slowest
                        // possible span, and slow tails tie with it: a quantile that reached
                        // it (a past window's ceiling, or a burst of tied spans) would let no
                        // span through, so the threshold is capped there and compared with
                        // `>=`.
                        // Spans at the ceiling tie, so among them only those past the
                        // operation's slowest quantile are flagged.
                        (Calibration::Quantile, Model::Operation(f)) => {
                            let ceiling = cached(f, 1.0, &mut self.extremes);
                            score >= quantile.unwrap_or(1.0).min(ceiling).max(floor)
                                && (score < ceiling || slowest.is_none_or(|q| log_d > q))
                        }
                        // The paper's encoding barely splits on duration, so the slowest span
                        // of an operation ties with its ordinary ones: no cap, and a strict
                        // comparison, or every tied span would pass.
                        (Calibration::Quantile, _) => score > quantile.unwrap_or(1.0).max(floor),
                    };
                // The forest never learns a span over its threshold (unless everything is to
                // be learned, as in River): its reference masses are the healthy shape of the
                // normalised durations, which a lasting shift does not change once the
                // operation's statistics have followed it.
                if !exceeds || learn_flagged >= 1.0 {
                    match model {
                        Model::Operation(f) => f.learn(&[x]),
                        Model::Paper(f) => f.learn(&one_hot),
                        Model::P99 => {}
                    }
                }
                let learned = !exceeds || learn_exceeding();
                // Scores of a forest without a completed window are all 0; they say nothing
                // about the operation's spread.
                (score, exceeds, learned, ready.then_some(score))
            }
        };

        if learned {
            if exceeds {
                op.stats.update_clipped(log_d);
            } else {
                op.stats.update(log_d);
            }
            if let Some(value) = calibrate_with {
                op.calibrator.observe(value);
            }
            self.counters.learned += 1;
        }
        // A span past the slowest quantile is taken into it at `learn_flagged` of its rate
        // whether or not the forest flagged it, as the calibrator takes flagged spans, so that
        // the quantile sits at `1 − target_fpr` of the stream and not above it; and no further
        // than the saturation, so that a fault cannot carry it past its own spans.
        if matches!(self.model, Model::Operation(_)) {
            let past = judged && slowest.is_some_and(|q| log_d > q);
            let take = if exceeds {
                learned
            } else {
                !past || self.coin.next_f64() < learn_flagged
            };
            if take {
                let value = match slowest {
                    Some(q) if log_d > q => log_d.min(q.max(op.stats.at_z(saturation))),
                    _ => log_d,
                };
                op.slowest.observe(value);
            }
        }
        // The tail is learned once the statistics have settled, from every span, judged or
        // not (leaving the flagged ones out would only ever pull it down), and then kept: a
        // fault later in the operation's life must not move where the encoding saturates.
        if op.stats.count >= self.tail_spans && op.tail.count() < self.tail_spans {
            op.tail.observe(if config.slow_only { z } else { z.abs() });
        }
        let anomalous = exceeds && slow;
        if judged {
            self.counters.judged += 1;
        }
        if anomalous {
            op.flagged = op.flagged.saturating_add(1);
            self.counters.flagged += 1;
        }
        Verdict {
            score,
            anomalous,
            training: !judged,
            overflow: false,
        }
    }
}

/// The score of `x` under the current windows, from the cache when `x` is 0 or 1.
fn cached(forest: &Forest<[f32; 1]>, x: f32, cache: &mut [Option<(u64, f64)>; 2]) -> f64 {
    let slot = if x == 0.0 {
        0
    } else if x == 1.0 {
        1
    } else {
        return forest.score(&[x]);
    };
    let completed = forest.window().completed;
    match cache[slot] {
        Some((at, score)) if at == completed => score,
        _ => {
            let score = forest.score(&[x]);
            cache[slot] = Some((completed, score));
            score
        }
    }
}

/// The `min_score` of `calibration = "fixed"` when none is set.
pub const DEFAULT_FIXED_MIN_SCORE: f64 = 0.8;

/// The forest shape a config asks for.
pub(super) fn forest_params(config: &HsTreeConfig) -> ForestParams {
    ForestParams {
        trees: config.trees,
        height: config.height,
        window_size: config.window_size,
        size_limit: config.resolved_size_limit(),
        dims: match config.features {
            Features::Operation => 1,
            Features::Paper => config.max_operations.saturating_add(1),
        },
        seed: config.seed,
    }
}
