//! What the scale exporters share: the allow-list, the policy, the per-target state, the config
//! keys that set them, the metrics and the sentence that explains a change.
//!
//! The `kubernetes` exporter and the `simulated_cluster` exporter differ only in where replicas
//! are read and written; everything that decides whether and how far to scale lives here, so the
//! demo and the evaluation exercise the code an operator runs.

pub mod allow;
pub mod policy;
pub mod target;
mod telemetry;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;
use tracescale_core::component::BuildContext;
use tracescale_core::config::{BuildError, HumanDuration};
use tracescale_core::signal::{Decision, Target};
use tracescale_core::words::count;

pub use allow::{AllowList, AllowPattern};
pub use policy::{DirectionPolicy, Hold, Plan, Policy, TargetState};
pub use telemetry::ScaleMetrics;

/// Most distinct targets one exporter keeps state for (`max_targets` upper bound).
pub const MAX_TARGETS: usize = 100_000;

/// The `policy` table of a scale exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Never fewer replicas than this, whatever a rule asks.
    pub min_replicas: u32,
    /// Never more replicas than this, whatever a rule asks.
    pub max_replicas: u32,
    /// No change to a target within this long of its previous change.
    pub cooldown: HumanDuration,
    /// Changes smaller than this share of the current replicas are held (0.1 = 10 %).
    pub tolerance: f64,
    /// Scale-up behaviour (defaults: the HPA's).
    pub scale_up: DirectionConfig,
    /// Scale-down behaviour (defaults: the HPA's).
    pub scale_down: DirectionConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            min_replicas: p.min_replicas,
            max_replicas: p.max_replicas,
            cooldown: HumanDuration(p.cooldown),
            tolerance: p.tolerance,
            scale_up: DirectionConfig::default(),
            scale_down: DirectionConfig::default(),
        }
    }
}

/// `policy.scale_up` / `policy.scale_down`; an absent key takes the HPA's default for that
/// direction.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionConfig {
    /// Recommendations within this window bound the change (up: 0s, down: 5m).
    pub stabilization_window: Option<HumanDuration>,
    /// At most this many replicas changed per `period` (up: 4, down: 0).
    pub max_replicas_per_period: Option<u32>,
    /// At most this percentage of the replicas changed per `period` (100 both ways).
    pub max_percent_per_period: Option<u32>,
    /// The rate-limit period (15s).
    pub period: Option<HumanDuration>,
}

impl DirectionConfig {
    fn resolve(&self, default: DirectionPolicy) -> DirectionPolicy {
        DirectionPolicy {
            stabilization_window: self
                .stabilization_window
                .map_or(default.stabilization_window, HumanDuration::get),
            max_replicas_per_period: self
                .max_replicas_per_period
                .unwrap_or(default.max_replicas_per_period),
            max_percent_per_period: self
                .max_percent_per_period
                .unwrap_or(default.max_percent_per_period),
            period: self.period.map_or(default.period, HumanDuration::get),
        }
    }
}

/// One `[[targets]]` entry: bounds for the targets a pattern covers, over the policy's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// A `namespace/kind/name` pattern; the first entry that covers a target applies.
    pub target: String,
    /// Overrides `policy.min_replicas` for these targets.
    #[serde(default)]
    pub min_replicas: Option<u32>,
    /// Overrides `policy.max_replicas` for these targets.
    #[serde(default)]
    pub max_replicas: Option<u32>,
}

/// Bounds for the targets a pattern covers.
#[derive(Debug, Clone)]
pub struct Override {
    /// Which targets.
    pub pattern: AllowPattern,
    /// Their floor, if it differs from the policy's.
    pub min_replicas: Option<u32>,
    /// Their ceiling, if it differs from the policy's.
    pub max_replicas: Option<u32>,
}

/// Everything a [`Scaler`] needs, validated.
#[derive(Debug, Clone)]
pub struct ScalerSettings {
    /// The workloads that may be scaled.
    pub allow: AllowList,
    /// The default policy.
    pub policy: Policy,
    /// Per-target bounds.
    pub overrides: Vec<Override>,
    /// Decisions older than this (by their timestamp) are refused.
    pub max_decision_age: Duration,
    /// Most targets with state; decisions for more are refused.
    pub max_targets: usize,
}

impl ScalerSettings {
    /// Checks the allow-list and the decision's age against `now_unix_nano` (wall or simulated
    /// time: the clock decisions are stamped with).
    pub fn screen(&self, d: &Decision, now_unix_nano: u64) -> Result<(), Refusal> {
        if !self.allow.allows(&d.target) {
            return Err(Refusal::NotAllowed);
        }
        let age = now_unix_nano.saturating_sub(d.timestamp_unix_nano);
        if age > policy::nanos(self.max_decision_age) {
            return Err(Refusal::Stale);
        }
        Ok(())
    }
}

/// The keys the scale exporters share, validated at their key paths.
pub struct Keys<'a> {
    /// `allow`.
    pub allow: &'a [String],
    /// `policy`.
    pub policy: &'a PolicyConfig,
    /// `targets`.
    pub targets: &'a [TargetConfig],
    /// `max_decision_age`.
    pub max_decision_age: HumanDuration,
    /// `max_targets`.
    pub max_targets: usize,
}

impl Keys<'_> {
    /// Validates the keys, reporting every problem at its key path.
    pub fn validate(&self, ctx: &BuildContext<'_>) -> Result<ScalerSettings, BuildError> {
        let mut errors = Vec::new();
        let mut patterns = Vec::new();
        for (i, text) in self.allow.iter().enumerate() {
            match AllowPattern::parse(text) {
                Ok(p) => patterns.push(p),
                Err(e) => errors.push(ctx.invalid(&format!("allow[{i}]"), e)),
            }
        }
        let p = self.policy;
        if p.max_replicas == 0 {
            errors.push(ctx.invalid("policy.max_replicas", "must be at least 1"));
        }
        if p.min_replicas > p.max_replicas {
            errors.push(ctx.invalid(
                "policy.min_replicas",
                format!(
                    "must not exceed `max_replicas` ({}), or no replica count is allowed",
                    p.max_replicas
                ),
            ));
        }
        if !(0.0..1.0).contains(&p.tolerance) {
            errors.push(ctx.invalid(
                "policy.tolerance",
                "must be in [0, 1): it is a share of the current replicas",
            ));
        }
        for (dir, c) in [("scale_up", &p.scale_up), ("scale_down", &p.scale_down)] {
            if c.period.is_some_and(|d| d.get().is_zero()) {
                errors.push(ctx.invalid(&format!("policy.{dir}.period"), "must be longer than 0s"));
            }
        }
        let mut overrides = Vec::new();
        for (i, t) in self.targets.iter().enumerate() {
            match AllowPattern::parse(&t.target) {
                Ok(pattern) => {
                    let min = t.min_replicas.unwrap_or(p.min_replicas);
                    let max = t.max_replicas.unwrap_or(p.max_replicas);
                    if max == 0 || min > max {
                        errors.push(ctx.invalid(
                            &format!("targets[{i}]"),
                            format!("bounds {min}..={max} allow no replica count"),
                        ));
                    }
                    if !patterns.is_empty() && !patterns.iter().any(|a| covers(a, &pattern)) {
                        ctx.warn(
                            &format!("targets[{i}].target"),
                            format!(
                                "{:?} is not covered by `allow`: its decisions are refused",
                                t.target
                            ),
                        );
                    }
                    overrides.push(Override {
                        pattern,
                        min_replicas: t.min_replicas,
                        max_replicas: t.max_replicas,
                    });
                }
                Err(e) => errors.push(ctx.invalid(&format!("targets[{i}].target"), e)),
            }
        }
        if !(1..=MAX_TARGETS).contains(&self.max_targets) {
            errors.push(ctx.invalid(
                "max_targets",
                format!("must be between 1 and {MAX_TARGETS}"),
            ));
        }
        if self.max_decision_age.get().is_zero() {
            errors.push(ctx.invalid("max_decision_age", "must be longer than 0s"));
        }
        if !errors.is_empty() {
            return Err(BuildContext::errors(errors));
        }
        Ok(ScalerSettings {
            allow: AllowList::new(patterns),
            policy: Policy {
                min_replicas: p.min_replicas,
                max_replicas: p.max_replicas,
                cooldown: p.cooldown.get(),
                tolerance: p.tolerance,
                scale_up: p.scale_up.resolve(DirectionPolicy::HPA_UP),
                scale_down: p.scale_down.resolve(DirectionPolicy::HPA_DOWN),
            },
            overrides,
            max_decision_age: self.max_decision_age.get(),
            max_targets: self.max_targets,
        })
    }
}

/// A rough "pattern `a` covers every target pattern `b` covers", for the config warning.
fn covers(a: &AllowPattern, b: &AllowPattern) -> bool {
    let (a, b) = (a.to_string(), b.to_string());
    a.split('/')
        .zip(b.split('/'))
        .all(|(x, y)| x == "*" || x.eq_ignore_ascii_case(y))
}

/// Why a decision was refused before the policy saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The target is on no allow-list pattern.
    NotAllowed,
    /// The decision is older than `max_decision_age`.
    Stale,
    /// The exporter already keeps state for `max_targets` targets.
    TooManyTargets,
    /// Another replica holds the leader-election Lease, or this one has just taken it over
    /// and waits out the previous leader's cooldowns.
    Standby,
    /// Another autoscaler (an HPA, or KEDA through one) scales the workload, and the exporter
    /// is set to leave such workloads alone.
    OtherAutoscaler,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not_allowed",
            Refusal::Stale => "stale",
            Refusal::TooManyTargets => "too_many_targets",
            Refusal::Standby => "standby",
            Refusal::OtherAutoscaler => "other_autoscaler",
        }
    }

    /// Every reason, for registering metrics up front.
    pub const ALL: [Refusal; 5] = [
        Refusal::NotAllowed,
        Refusal::Stale,
        Refusal::TooManyTargets,
        Refusal::Standby,
        Refusal::OtherAutoscaler,
    ];
}

/// Screens decisions and plans changes for many targets; the exporter supplies the clock and
/// the current replicas.
#[derive(Debug)]
pub struct Scaler {
    settings: ScalerSettings,
    states: HashMap<Target, TargetState>,
}

impl Scaler {
    /// A scaler with no history.
    pub fn new(settings: ScalerSettings) -> Self {
        Self {
            settings,
            states: HashMap::new(),
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &ScalerSettings {
        &self.settings
    }

    /// Checks the allow-list and the decision's age (see [`ScalerSettings::screen`]).
    pub fn screen(&self, d: &Decision, now_unix_nano: u64) -> Result<(), Refusal> {
        self.settings.screen(d, now_unix_nano)
    }

    /// Plans the change for `d` given the workload's `current` replicas, at `now` on the
    /// monotonic clock the policy's windows run on.
    pub fn plan(&mut self, d: &Decision, now: u64, current: u32) -> Result<Plan, Refusal> {
        let policy = self.policy_for(&d.target);
        if !self.states.contains_key(&d.target) && self.states.len() >= self.settings.max_targets {
            return Err(Refusal::TooManyTargets);
        }
        let state = self.states.entry(d.target.clone()).or_default();
        Ok(state.plan(
            &policy,
            now,
            current,
            d.change.desired(current),
            d.limits.min,
            d.limits.max,
        ))
    }

    /// Remembers an applied change: cooldown, rate limits and the down window count from it.
    pub fn record_change(&mut self, target: &Target, now: u64, from: u32, to: u32) {
        if let Some(state) = self.states.get_mut(target) {
            state.record_change(now, from, to);
        }
    }

    /// True while `target` is within the cooldown of its last change, at `now`.
    pub fn cooling_down(&self, target: &Target, now: u64) -> bool {
        let cooldown = policy::nanos(self.policy_for(target).cooldown);
        self.states
            .get(target)
            .and_then(TargetState::last_change)
            .is_some_and(|at| now.saturating_sub(at) < cooldown)
    }

    /// Remembers a vertical change: it starts the cooldown like any other change. A target new
    /// to the scaler is added unless `max_targets` is reached.
    pub fn record_vertical(&mut self, target: &Target, now: u64) {
        if !self.states.contains_key(target) && self.states.len() >= self.settings.max_targets {
            return;
        }
        self.states
            .entry(target.clone())
            .or_default()
            .record_change(now, 0, 0);
    }

    /// The policy for one target: the default with its `[[targets]]` bounds, if any.
    pub fn policy_for(&self, target: &Target) -> Policy {
        let mut policy = self.settings.policy;
        if let Some(o) = self
            .settings
            .overrides
            .iter()
            .find(|o| o.pattern.matches(target))
        {
            policy.min_replicas = o.min_replicas.unwrap_or(policy.min_replicas);
            policy.max_replicas = o.max_replicas.unwrap_or(policy.max_replicas);
        }
        policy
    }
}

/// One sentence for the Event and the log: what changed, which rule, and what it saw.
pub fn explain(d: &Decision, from: u32, to: u32, limited: Option<Hold>) -> String {
    let dir = if to > from { "up" } else { "down" };
    let e = &d.evidence;
    let mut s = format!(
        "scaled {dir} from {from} to {}: rule {:?}: {}",
        count(to, "replica"),
        d.rule,
        d.reason
    );
    if e.window_count > 0 {
        let _ = write!(
            s,
            " (window {:?}: {} of {} breached; p50 {:.1}ms, p95 {:.1}ms, p99 {:.1}ms",
            e.window,
            e.breaches,
            count(e.window_count, "span"),
            e.p50.as_secs_f64() * 1e3,
            e.p95.as_secs_f64() * 1e3,
            e.p99.as_secs_f64() * 1e3
        );
        if let Some(score) = e.anomaly_score {
            let _ = write!(s, "; anomaly score {score:.2}");
        }
        if let Some(trace) = e.exemplars.first() {
            let _ = write!(s, "; slowest trace {trace}");
        }
        s.push(')');
    }
    if let Some(h) = limited {
        let _ = write!(s, "; limited by {}", h.as_str());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracescale_core::signal::{Evidence, ReplicaLimits, ScaleChange};

    fn decision(ns: &str, name: &str, at: u64) -> Decision {
        Decision {
            target: Target {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.into(),
                namespace: ns.into(),
            },
            change: ScaleChange::Step(1),
            limits: ReplicaLimits::default(),
            rule: "r".into(),
            reason: "p99 above 300ms".into(),
            evidence: Evidence::default(),
            resources: None,
            timestamp_unix_nano: at,
        }
    }

    fn settings(allow: &[&str]) -> ScalerSettings {
        ScalerSettings {
            allow: AllowList::new(
                allow
                    .iter()
                    .map(|a| AllowPattern::parse(a).unwrap())
                    .collect(),
            ),
            policy: Policy::default(),
            overrides: vec![Override {
                pattern: AllowPattern::parse("shop/deployment/db").unwrap(),
                min_replicas: Some(2),
                max_replicas: Some(3),
            }],
            max_decision_age: Duration::from_secs(30),
            max_targets: 2,
        }
    }

    #[test]
    fn screens_the_allow_list_and_the_age() {
        let s = Scaler::new(settings(&["shop/deployment/*"]));
        let now = 100_000_000_000;
        assert_eq!(s.screen(&decision("shop", "checkout", now), now), Ok(()));
        assert_eq!(
            s.screen(&decision("kube-system", "coredns", now), now),
            Err(Refusal::NotAllowed)
        );
        assert_eq!(
            s.screen(&decision("shop", "checkout", now - 31_000_000_000), now),
            Err(Refusal::Stale)
        );
    }

    #[test]
    fn caps_the_number_of_targets_and_applies_overrides() {
        let mut s = Scaler::new(settings(&["*/*/*"]));
        assert!(matches!(
            s.plan(&decision("shop", "db", 0), 0, 3),
            Ok(Plan::Hold(Hold::AtMax))
        ));
        assert!(s.plan(&decision("shop", "a", 0), 0, 1).is_ok());
        assert_eq!(
            s.plan(&decision("shop", "b", 0), 0, 1),
            Err(Refusal::TooManyTargets)
        );
        // Known targets still plan.
        assert!(s.plan(&decision("shop", "a", 0), 1, 1).is_ok());
    }

    #[test]
    fn explanation_names_rule_and_evidence() {
        let mut d = decision("shop", "checkout", 0);
        d.evidence = Evidence {
            window: Duration::from_secs(10),
            window_count: 40,
            breaches: 25,
            p99: Duration::from_millis(412),
            exemplars: vec!["4bf92f3577b34da6a3ce929d0e0e4736".into()],
            ..Evidence::default()
        };
        let s = explain(&d, 2, 3, None);
        assert!(
            s.starts_with("scaled up from 2 to 3 replicas: rule \"r\""),
            "{s}"
        );
        assert!(s.contains("25 of 40 spans breached"), "{s}");
        assert!(s.contains("p99 412.0ms"), "{s}");
        assert!(s.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{s}");
        // Plurals as people write them.
        d.evidence.window_count = 1;
        d.evidence.breaches = 1;
        let s = explain(&d, 2, 1, None);
        assert!(s.starts_with("scaled down from 2 to 1 replica: "), "{s}");
        assert!(s.contains("1 of 1 span breached"), "{s}");
    }
}
