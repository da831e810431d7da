//! Config of the `slo_scaler` processor: objectives, the workloads it may touch, and the few
//! knobs of its estimates; validation with key paths; the build function.

use std::time::Duration;

use serde::Deserialize;
use tracescale_core::component::{BuildContext, Processor};
use tracescale_core::config::{BuildError, HumanDuration};
use tracescale_core::signal::Target;

use super::SloScaler;
use super::engine::{Engine, Objective, Settings, SlowWork, Workload};
use crate::processors::latency_rules::config::ClockConfig;
use crate::scaling::target::parse_short_target;
use crate::tracetree::BufferConfig;

/// Config of the `slo_scaler` processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SloScalerConfig {
    /// The service-level objectives on entry operations; at least one.
    pub objectives: Vec<ObjectiveConfig>,
    /// The workloads that may be scaled, by service. Empty: every service whose spans carry
    /// `k8s.namespace.name` and `k8s.deployment.name` or `k8s.statefulset.name`.
    pub workloads: Vec<WorkloadConfig>,
    /// `wall`: time is the engine clock. `event`: time is the latest span end, for replays and
    /// simulations.
    pub clock: ClockConfig,
    /// How often objectives are evaluated and decisions made.
    pub interval: HumanDuration,
    /// A trace is complete once no span of it arrived for this long.
    pub completion_wait: HumanDuration,
    /// A trace is taken as it is at the latest this long after its first span.
    pub max_wait: HumanDuration,
    /// Traces held while they complete; past it the oldest is dropped (counted).
    pub max_traces: usize,
    /// Spans held while their traces complete; past it the oldest traces are dropped.
    pub max_spans: usize,
    /// Spans kept per trace; later ones are dropped and the trace marked truncated.
    pub max_spans_per_trace: usize,
    /// The short burn-rate window; also the window of every estimate.
    pub short_window: HumanDuration,
    /// The long burn-rate window.
    pub long_window: HumanDuration,
    /// An objective is burning when both windows spend its error budget at least this many
    /// times faster than allowed.
    pub burn_rate: f64,
    /// The utilisation sizes aim at, as the HPA's target utilisation.
    pub target_utilisation: f64,
    /// A backlog is sized to drain within this long.
    pub drain_within: HumanDuration,
    /// Healthy time an objective needs before its services may scale down.
    pub scale_down_after: HumanDuration,
    /// How fast the learned healthy baselines follow the traffic.
    pub baseline_window: HumanDuration,
    /// The same size is not asked for again within this long.
    pub cooldown: HumanDuration,
    /// A culprit whose own work is slower at the same load: `scale` anyway, or `hold`.
    pub slow_work: SlowWorkConfig,
    /// Seek the culprit as soon as the latency of a service on an objective's path keeps
    /// growing (its queue's wait, or its own work), before the objective burns.
    pub anticipate: bool,
    /// Pass the trace batches on downstream; `false` consumes them and emits only decisions.
    pub passthrough: bool,
}

impl Default for SloScalerConfig {
    fn default() -> Self {
        Self {
            objectives: Vec::new(),
            workloads: Vec::new(),
            clock: ClockConfig::Wall,
            interval: HumanDuration::from_secs(1),
            completion_wait: HumanDuration::from_secs(2),
            max_wait: HumanDuration::from_secs(30),
            max_traces: 50_000,
            max_spans: 1_000_000,
            max_spans_per_trace: 10_000,
            short_window: HumanDuration::from_secs(10),
            long_window: HumanDuration::from_secs(60),
            burn_rate: 2.0,
            target_utilisation: 0.7,
            drain_within: HumanDuration::from_secs(30),
            scale_down_after: HumanDuration::from_secs(120),
            baseline_window: HumanDuration::from_secs(120),
            cooldown: HumanDuration::from_secs(15),
            slow_work: SlowWorkConfig::Scale,
            anticipate: true,
            passthrough: true,
        }
    }
}

/// One objective: the latency of an entry operation, or of an operation the requests call, at
/// a percentile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveConfig {
    /// Unique name; decisions carry it.
    pub name: String,
    /// The `service.name` of the spans judged: the root span's, or a SERVER span's.
    pub service: String,
    /// Their name.
    pub operation: String,
    /// The percentile the target holds for; the error budget is `100 - percentile` %.
    #[serde(default = "default_percentile")]
    pub percentile: f64,
    /// The latency target.
    pub target: HumanDuration,
}

fn default_percentile() -> f64 {
    99.0
}

/// A workload the processor may scale.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// The `service.name` its spans carry.
    pub service: String,
    /// `kind/name`: `deployment/checkout`, `statefulset/payments-db`.
    pub target: String,
    /// Its namespace.
    pub namespace: String,
    /// Never below this many replicas.
    #[serde(default)]
    pub min: Option<u32>,
    /// Never above this many replicas.
    #[serde(default)]
    pub max: Option<u32>,
}

/// What to do about a culprit whose own work is slower at the same load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowWorkConfig {
    /// Scale it anyway: more replicas spread the work, the decision says it may not help.
    #[default]
    Scale,
    /// Decide nothing; the log says why.
    Hold,
}

fn nanos(d: HumanDuration) -> u64 {
    u64::try_from(d.get().as_nanos()).unwrap_or(u64::MAX)
}

impl SloScalerConfig {
    /// Checks every key, collecting all problems before failing.
    pub fn validate(&self, ctx: &BuildContext<'_>) -> Result<(Settings, BufferConfig), BuildError> {
        let mut errors = Vec::new();
        if self.objectives.is_empty() {
            errors.push(ctx.invalid(
                "objectives",
                "declare at least one objective: name, service, operation, target",
            ));
        }
        let mut objectives = Vec::new();
        for (i, o) in self.objectives.iter().enumerate() {
            let at = |k: &str| format!("objectives[{i}].{k}");
            if o.name.trim().is_empty() {
                errors.push(ctx.invalid(&at("name"), "must not be empty"));
            }
            if self.objectives[..i].iter().any(|p| p.name == o.name) {
                errors.push(ctx.invalid(&at("name"), format!("{:?} is declared twice", o.name)));
            }
            if !(o.percentile > 0.0 && o.percentile < 100.0) {
                errors.push(ctx.invalid(&at("percentile"), "must be above 0 and below 100"));
            }
            if o.target.get().is_zero() {
                errors.push(ctx.invalid(&at("target"), "must be longer than 0s"));
            }
            objectives.push(Objective {
                name: o.name.clone(),
                service: o.service.clone(),
                operation: o.operation.clone(),
                percentile: o.percentile,
                target_ns: nanos(o.target),
            });
        }
        let mut workloads = Vec::new();
        for (i, w) in self.workloads.iter().enumerate() {
            let at = |k: &str| format!("workloads[{i}].{k}");
            if self.workloads[..i].iter().any(|p| p.service == w.service) {
                errors
                    .push(ctx.invalid(&at("service"), format!("{:?} is listed twice", w.service)));
            }
            if w.namespace.trim().is_empty() {
                errors.push(ctx.invalid(&at("namespace"), "must not be empty"));
            }
            if let (Some(min), Some(max)) = (w.min, w.max)
                && min > max
            {
                errors.push(ctx.invalid(&at("min"), format!("{min} is above max ({max})")));
            }
            match parse_short_target(&w.target, w.namespace.trim()) {
                Ok(target) => workloads.push(Workload {
                    service: w.service.clone(),
                    target,
                    min: w.min,
                    max: w.max,
                }),
                Err(message) => errors.push(ctx.invalid(&at("target"), message)),
            }
        }
        let positive = |key: &str, d: HumanDuration, errors: &mut Vec<BuildError>| {
            if d.get().is_zero() {
                errors.push(ctx.invalid(key, "must be longer than 0s"));
            }
        };
        positive("interval", self.interval, &mut errors);
        positive("short_window", self.short_window, &mut errors);
        positive("drain_within", self.drain_within, &mut errors);
        positive("baseline_window", self.baseline_window, &mut errors);
        if self.long_window.get() < self.short_window.get() {
            errors.push(ctx.invalid("long_window", "must be at least short_window"));
        }
        if self.short_window.get() < Duration::from_secs(1) {
            errors.push(ctx.invalid("short_window", "must be at least 1s"));
        }
        if !(self.burn_rate.is_finite() && self.burn_rate > 0.0) {
            errors.push(ctx.invalid("burn_rate", "must be a number above 0"));
        }
        if !(self.target_utilisation > 0.0 && self.target_utilisation <= 1.0) {
            errors.push(ctx.invalid("target_utilisation", "must be above 0 and at most 1"));
        }
        let buffer = BufferConfig {
            completion_wait: nanos(self.completion_wait),
            max_wait: nanos(self.max_wait),
            max_traces: self.max_traces,
            max_spans: self.max_spans,
            max_spans_per_trace: self.max_spans_per_trace,
        };
        if let Err(e) = buffer.validate() {
            errors.push(ctx.invalid("max_wait", e));
        }
        if !errors.is_empty() {
            return Err(BuildContext::errors(errors));
        }
        let settings = Settings {
            objectives,
            workloads,
            interval_ns: nanos(self.interval),
            completion_wait_ns: nanos(self.completion_wait),
            short_window_s: self.short_window.get().as_secs().max(1),
            long_window_s: self.long_window.get().as_secs().max(1),
            burn_rate: self.burn_rate,
            target_utilisation: self.target_utilisation,
            drain_within_s: self.drain_within.get().as_secs_f64(),
            scale_down_after_ns: nanos(self.scale_down_after),
            baseline_window_s: self.baseline_window.get().as_secs_f64(),
            cooldown_ns: nanos(self.cooldown),
            slow_work: match self.slow_work {
                SlowWorkConfig::Scale => SlowWork::Scale,
                SlowWorkConfig::Hold => SlowWork::Hold,
            },
            anticipate: self.anticipate,
        };
        Ok((settings, buffer))
    }

    /// The targets of the listed workloads, with their key paths, for the allow-list check.
    pub fn targets(&self) -> Vec<(String, Target)> {
        self.workloads
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                parse_short_target(&w.target, w.namespace.trim())
                    .ok()
                    .map(|t| (format!("workloads[{i}].target"), t))
            })
            .collect()
    }
}

/// The factory's build function: parse, validate, build.
pub(super) fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let config: SloScalerConfig = ctx.parse()?;
    let (settings, buffer) = config.validate(ctx)?;
    let engine = Engine::new(settings, buffer).map_err(|e| ctx.invalid("max_wait", e))?;
    Ok(Box::new(SloScaler::new(&config, engine)))
}
