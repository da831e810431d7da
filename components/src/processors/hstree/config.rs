//! The `hstree` processor's config: keys, defaults (they match the README), validation, build.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracescale_core::component::{BuildContext, Processor};
use tracescale_core::config::{BuildError, HumanDuration};

use super::HsTree;
use super::detector::Detector;
use super::features::{Levels, Overflow, STATS_HORIZON};
use super::forest::{ForestParams, MAX_HEIGHT, MAX_NODES, MAX_TREES, NODE_BYTES};
use super::warm::WarmStartConfig;

/// What the processor does with the spans it judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Forward every span; tag judged ones with their score, anomalous ones with
    /// `tracescale.anomaly = true`.
    #[default]
    Tag,
    /// Forward only anomalous spans, with their resource and scope.
    Drop,
}

/// How a span becomes a point for the forest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Features {
    /// One dimension: log-duration z-scored by the operation's own running statistics, mapped
    /// into `[0, 1]`; one forest shared by every operation.
    #[default]
    Operation,
    /// The paper's encoding: one-hot `service::operation` plus `duration / max_duration`.
    Paper,
}

/// Which detector judges spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// Half-Space-Trees.
    #[default]
    Hstree,
    /// A per-operation streaming high quantile of durations (a baseline).
    P99,
}

/// How an HS-Tree score becomes a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Calibration {
    /// Flag when the score passes its operation's running high quantile of scores, chosen so
    /// that a healthy operation has about `target_fpr` of its spans flagged.
    #[default]
    Quantile,
    /// Flag when the score reaches `min_score`, as the paper does.
    Fixed,
}

/// Config of the `hstree` processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HsTreeConfig {
    /// Number of trees in the forest.
    pub trees: usize,
    /// Height of each tree: `height + 1` levels, `2^(height+1) − 1` nodes.
    pub height: u32,
    /// Spans per window: after this many learned spans, latest masses become reference masses.
    pub window_size: u32,
    /// Reference mass below which a score's descent stops; default `window_size / 10`.
    pub size_limit: Option<f64>,
    /// Seed of the tree splits and of the feedback coin: the same seed gives the same run.
    pub seed: u64,
    /// Featurization: `"operation"` (per-operation normalised duration) or `"paper"`.
    pub features: Features,
    /// Detector: `"hstree"` or `"p99"` (per-operation streaming quantile of durations).
    pub detector: DetectorKind,
    /// Decision rule for HS-Tree scores: `"quantile"` or `"fixed"`.
    pub calibration: Calibration,
    /// Share of a healthy operation's spans to flag, in `(0, 0.5]`.
    pub target_fpr: f64,
    /// Score floor: with `"fixed"` the threshold (default 0.8), with `"quantile"` a floor under
    /// the calibrated threshold (default none).
    pub min_score: Option<f64>,
    /// Flag only spans slower than their operation's running mean log-duration.
    pub slow_only: bool,
    /// The z-score encoded as 1 by `features = "operation"`: slower spans tie with it, at the
    /// highest score, and are flagged once judged.
    pub max_z: f64,
    /// Probability that a judged span over its threshold is still learned, in `[0, 1]`.
    pub learn_flagged: f64,
    /// Spans learned before any is judged.
    pub train_size: u64,
    /// Spans of one operation that calibrate its threshold before any of them is judged.
    pub operation_warmup: u64,
    /// Duration mapped to 1 by `features = "paper"` (longer spans clamp to 1).
    pub max_duration: HumanDuration,
    /// Most distinct `service::operation` keys tracked.
    pub max_operations: usize,
    /// New operations past `max_operations`: `"pass"` (not judged) or `"evict"` (replace the
    /// least recently seen).
    pub overflow: Overflow,
    /// `"tag"` (forward all, tag judged spans) or `"drop"` (forward anomalous spans only).
    pub mode: Mode,
    /// File the model is saved to and loaded from; no persistence when unset.
    pub state_path: Option<PathBuf>,
    /// How often the model is saved while running (it is also saved at shutdown).
    pub save_interval: HumanDuration,
    /// A recording or a Tempo to learn from at start, when no saved model was loaded.
    pub warm_start: Option<WarmStartConfig>,
}

impl Default for HsTreeConfig {
    fn default() -> Self {
        Self {
            trees: 10,
            height: 8,
            window_size: 250,
            size_limit: None,
            seed: 1,
            features: Features::Operation,
            detector: DetectorKind::Hstree,
            calibration: Calibration::Quantile,
            target_fpr: 0.01,
            min_score: None,
            slow_only: true,
            max_z: 4.0,
            learn_flagged: 0.1,
            train_size: 1000,
            operation_warmup: 100,
            max_duration: HumanDuration::from_secs(10),
            max_operations: 1000,
            overflow: Overflow::Pass,
            mode: Mode::Tag,
            state_path: None,
            save_interval: HumanDuration::from_secs(60),
            warm_start: None,
        }
    }
}

/// One invalid key and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The key.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

/// How many of an operation's spans its tail estimate should lie under before it is kept.
pub(super) const TAIL_EXCEEDANCES: f64 = 20.0;

/// The most operations a config may track (the paper encoding has a dimension per operation).
pub const MAX_OPERATIONS: usize = 1_000_000;

impl HsTreeConfig {
    /// `size_limit`, or River's and the paper's `0.1 · window_size`.
    pub fn resolved_size_limit(&self) -> f64 {
        self.size_limit.unwrap_or(0.1 * f64::from(self.window_size))
    }

    /// The quantile of learned values each operation's calibrator tracks.
    ///
    /// A healthy operation has `target_fpr` of its spans over the threshold, and only
    /// `learn_flagged` of those are learned, so among learned values a share
    /// `ρ·fpr / (1 − fpr + ρ·fpr)` lies over the threshold. Tracking that quantile of what is
    /// learned puts the threshold at the `1 − target_fpr` quantile of the healthy stream, while
    /// a fault's spans enter the calibrator at only `learn_flagged` of their rate.
    pub fn calibration_level(&self) -> f64 {
        let (fpr, rho) = (self.target_fpr, self.learn_flagged);
        1.0 - rho * fpr / (1.0 - fpr + rho * fpr)
    }

    /// The quantile levels of each operation's estimators: the calibrator's, and the tail's,
    /// `1 − target_fpr`, so that the spans past the saturation of the encoding, which tie at
    /// the highest score and are flagged, are no more than a healthy operation may have.
    pub fn levels(&self) -> Levels {
        Levels {
            score: self.calibration_level(),
            tail: 1.0 - self.target_fpr,
            slowest_window: self.slowest_window(),
        }
    }

    /// Spans per window of each operation's slowest quantile: half the memory of its
    /// log-duration statistics, so that the quantile covers about the stretch the encoding is
    /// normalised over, and never fewer than [`HsTreeConfig::tail_spans`].
    pub fn slowest_window(&self) -> u64 {
        (STATS_HORIZON / 2).max(self.tail_spans())
    }

    /// Spans of an operation whose z-scores are learned into its tail, after as many have
    /// settled its statistics: enough for about [`TAIL_EXCEEDANCES`] of them to lie past it.
    pub fn tail_spans(&self) -> u64 {
        (TAIL_EXCEEDANCES / self.target_fpr).ceil() as u64
    }

    /// Every invalid key, in key order.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key, message: String| out.push(Problem { key, message });
        let hstree = self.detector == DetectorKind::Hstree;
        if self.trees == 0 || self.trees > MAX_TREES {
            bad("trees", format!("must be between 1 and {MAX_TREES}"));
        }
        if self.height == 0 || self.height > MAX_HEIGHT {
            bad("height", format!("must be between 1 and {MAX_HEIGHT}"));
        }
        if self.window_size == 0 {
            bad("window_size", "must be at least 1".to_string());
        }
        if let Some(limit) = self.size_limit
            && !(limit.is_finite() && limit >= 0.0 && limit <= f64::from(self.window_size))
        {
            bad(
                "size_limit",
                format!("must be between 0 and window_size ({})", self.window_size),
            );
        }
        if !(self.target_fpr > 0.0 && self.target_fpr <= 0.5) {
            bad("target_fpr", "must be in (0, 0.5]".to_string());
        }
        if let Some(min) = self.min_score
            && !(0.0..=1.0).contains(&min)
        {
            bad("min_score", "must be between 0 and 1".to_string());
        }
        if !(self.max_z.is_finite() && self.max_z > 0.0 && self.max_z <= 1000.0) {
            bad("max_z", "must be above 0 and at most 1000".to_string());
        }
        let quantile_based = !hstree || self.calibration == Calibration::Quantile;
        if !(0.0..=1.0).contains(&self.learn_flagged) {
            bad("learn_flagged", "must be between 0 and 1".to_string());
        } else if quantile_based && self.learn_flagged == 0.0 {
            bad(
                "learn_flagged",
                "must be above 0 when a quantile sets the threshold: a threshold that never \
                 learns from the spans over it can only fall"
                    .to_string(),
            );
        }
        if self.max_duration.get().is_zero() {
            bad("max_duration", "must be longer than 0".to_string());
        }
        if self.max_operations == 0 || self.max_operations > MAX_OPERATIONS {
            bad(
                "max_operations",
                format!("must be between 1 and {MAX_OPERATIONS}"),
            );
        }
        if self
            .state_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            bad("state_path", "must name a file".to_string());
        }
        if self.save_interval.get() < std::time::Duration::from_secs(1) {
            bad("save_interval", "must be at least 1s".to_string());
        }
        if let Some(warm) = &self.warm_start {
            for (key, message) in warm.problems() {
                bad(key, message);
            }
        }
        if hstree && out_of_room(self) {
            let nodes = ForestParams {
                trees: self.trees,
                height: self.height,
                window_size: 1,
                size_limit: 0.0,
                dims: 1,
                seed: 0,
            }
            .nodes();
            bad(
                "trees",
                format!(
                    "{} trees of height {} need {nodes} nodes ({} MiB); the limit is {MAX_NODES} \
                     nodes: fewer trees or a lower height",
                    self.trees,
                    self.height,
                    nodes.saturating_mul(NODE_BYTES as u64) >> 20
                ),
            );
        }
        out
    }
}

/// True when trees and height are each valid but together too large.
fn out_of_room(config: &HsTreeConfig) -> bool {
    let valid =
        (1..=MAX_TREES).contains(&config.trees) && (1..=MAX_HEIGHT).contains(&config.height);
    valid && ((1u64 << (config.height + 1)) - 1).saturating_mul(config.trees as u64) > MAX_NODES
}

/// The factory's build function: parse, validate every key, build the detector (which
/// allocates the forest but touches no file).
pub(super) fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let config: HsTreeConfig = ctx.parse()?;
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(BuildContext::errors(
            problems.into_iter().map(|p| ctx.invalid(p.key, p.message)),
        ));
    }
    if config.detector == DetectorKind::Hstree && config.train_size < u64::from(config.window_size)
    {
        ctx.warn(
            "train_size",
            format!(
                "is below window_size ({}): the forest has no reference window before judging \
                 starts, so operations calibrate late",
                config.window_size
            ),
        );
    }
    let detector = Detector::new(&config).map_err(|e| ctx.invalid(e.key, e.message))?;
    Ok(Box::new(HsTree::new(
        ctx.id().to_string(),
        config,
        detector,
    )))
}
