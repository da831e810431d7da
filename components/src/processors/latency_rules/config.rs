//! Config of the `latency_rules` processor: the serde structs, their defaults, and the build
//! function the factory calls (validation is in `validate.rs`).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde::Deserialize;
use tracescale_core::component::{BuildContext, Processor};
use tracescale_core::config::{BuildError, HumanDuration};
use tracescale_core::signal::ContainerResources;

use super::LatencyRules;

/// Config of the `latency_rules` processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyRulesConfig {
    /// The rules, evaluated independently; decisions for one target are conflated.
    pub rules: Vec<RuleConfig>,
    /// How often every rule is evaluated on the engine clock (windows slide, rules re-arm,
    /// scale-downs and staleness are decided). Rules fed by a batch are also evaluated on
    /// arrival.
    pub interval: HumanDuration,
    /// How long after the event clock a span may arrive and still count in the windows.
    pub allowed_lateness: HumanDuration,
    /// A rule that received no matching span for this long (on the wall clock, from the last
    /// one's arrival; on event time, span time) is stale: it holds (no scale-down) and
    /// `/readyz` says so.
    pub stale_after: HumanDuration,
    /// Pass the trace batches on downstream; `false` consumes them and emits only decisions.
    pub passthrough: bool,
    /// Distinct service::operation pairs with latency statistics; spans of further operations
    /// are counted in `tracescale_latency_rules_operations_overflow_total`.
    pub max_operations: usize,
    /// Samples each rule window holds at most; beyond, the oldest is evicted and counted.
    pub max_window_samples: usize,
    /// `wall`: windows follow the engine clock, late and early spans are refused. `event`:
    /// time is the latest span end alone, for replays and simulations whose timestamps are not
    /// now.
    pub clock: ClockConfig,
    /// Count the spans of batches the receivers refused (pipeline full, memory limit), so that
    /// shedding load does not blind the rules.
    pub observe_refused: bool,
    /// Ids of refused spans remembered, so that a client's retry of them is not counted
    /// twice; the oldest is forgotten first.
    pub max_refused_ids: usize,
}

/// Which clock the windows follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockConfig {
    /// The engine's wall clock, with span end times as the event clock.
    #[default]
    Wall,
    /// Span end times alone.
    Event,
}

impl Default for LatencyRulesConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            interval: HumanDuration::from_secs(1),
            allowed_lateness: HumanDuration::from_secs(5),
            stale_after: HumanDuration::from_secs(60),
            passthrough: true,
            max_operations: 1000,
            max_window_samples: 10_000,
            clock: ClockConfig::Wall,
            observe_refused: true,
            max_refused_ids: 100_000,
        }
    }
}

/// One rule: which spans, when to scale up, what to scale, and the way back down.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name; decisions and metrics carry it.
    pub name: String,
    /// The resource attribute `service.name` of the spans.
    pub service: String,
    /// The span name, exact or a glob where `*` stands for any run of characters.
    pub operation: String,
    /// Span attributes that must be present with these string values.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Only spans of this kind.
    #[serde(default)]
    pub span_kind: Option<SpanKindConfig>,
    /// A span breaches when it lasts longer than this.
    pub above: HumanDuration,
    /// Scale up when this many breaches fall within the window.
    #[serde(default)]
    pub count: Option<u32>,
    /// Scale up when this percentile (nearest rank) of the window is above `above`.
    #[serde(default)]
    pub percentile: Option<f64>,
    /// Spans a percentile rule's window must hold before it may fire; default 10.
    #[serde(default)]
    pub min_samples: Option<u32>,
    /// Length of the sliding window, on event time.
    pub window: HumanDuration,
    /// What to scale up, and by how much.
    pub scale: ScaleConfig,
    /// The way back down.
    #[serde(default)]
    pub scale_down: Option<ScaleDownConfig>,
    /// Names of rules whose condition, while it holds, keeps this rule from scaling up.
    #[serde(default)]
    pub inhibited_by: Vec<String>,
    /// How long after an inhibitor's newest breach the inhibition still holds.
    #[serde(default = "default_inhibition_hold")]
    pub inhibition_hold: HumanDuration,
}

/// Thirty seconds: the time `slo_scaler` gives a backlog to drain (`drain_within`).
fn default_inhibition_hold() -> HumanDuration {
    HumanDuration::from_secs(30)
}

/// The workload a rule scales and the change it asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleConfig {
    /// Short form `kind/name`: `deployment/checkout`, `statefulset/db`, `replicaset/x`.
    #[serde(default)]
    pub target: Option<String>,
    /// Full form: API group and version, such as `argoproj.io/v1alpha1`.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Full form: resource kind, such as `Rollout`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Full form: object name.
    #[serde(default)]
    pub name: Option<String>,
    /// Namespace of the workload.
    pub namespace: String,
    /// Replicas added per scale-up; default 1 unless `to` is set.
    #[serde(default)]
    pub step: Option<u32>,
    /// Scale up to exactly this many replicas instead of stepping.
    #[serde(default)]
    pub to: Option<u32>,
    /// Never below this many replicas; 0 allows scaling to zero.
    #[serde(default = "default_min")]
    pub min: u32,
    /// Never above this many replicas.
    #[serde(default)]
    pub max: Option<u32>,
    /// A vertical action instead: set this container's requests and limits in the workload's
    /// pod template (the exporter must have `vertical = true`).
    #[serde(default)]
    pub resources: Option<ContainerResources>,
}

fn default_min() -> u32 {
    1
}

/// Scale down when every matching span of a stabilisation period was fast.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleDownConfig {
    /// Every matching span of the period must be faster than this.
    pub below: HumanDuration,
    /// The stabilisation period.
    #[serde(rename = "for")]
    pub period: HumanDuration,
    /// Replicas removed per scale-down.
    #[serde(default = "default_step")]
    pub step: u32,
}

fn default_step() -> u32 {
    1
}

/// Span kinds, as OTLP names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKindConfig {
    /// `SPAN_KIND_UNSPECIFIED`.
    Unspecified,
    /// `SPAN_KIND_INTERNAL`.
    Internal,
    /// `SPAN_KIND_SERVER`.
    Server,
    /// `SPAN_KIND_CLIENT`.
    Client,
    /// `SPAN_KIND_PRODUCER`.
    Producer,
    /// `SPAN_KIND_CONSUMER`.
    Consumer,
}

impl SpanKindConfig {
    pub(super) fn otlp(self) -> i32 {
        let kind = match self {
            SpanKindConfig::Unspecified => SpanKind::Unspecified,
            SpanKindConfig::Internal => SpanKind::Internal,
            SpanKindConfig::Server => SpanKind::Server,
            SpanKindConfig::Client => SpanKind::Client,
            SpanKindConfig::Producer => SpanKind::Producer,
            SpanKindConfig::Consumer => SpanKind::Consumer,
        };
        kind as i32
    }
}

/// The factory's build function: parse, validate, build the engine.
pub(super) fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let config: LatencyRulesConfig = ctx.parse()?;
    let (rules, settings) = config.validate(ctx)?;
    Ok(Box::new(LatencyRules::new(&config, rules, settings)))
}
