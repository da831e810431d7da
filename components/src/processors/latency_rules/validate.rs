//! Validation of the `latency_rules` config: every problem reported at once, each at its key
//! path, and the config turned into engine rules and settings.

use std::collections::HashMap;
use std::time::Duration;

use tracescale_core::component::BuildContext;
use tracescale_core::config::BuildError;
use tracescale_core::signal::{ContainerResources, ReplicaLimits, ScaleChange, Target};

use super::config::{ClockConfig, LatencyRulesConfig, RuleConfig, ScaleConfig, SpanKindConfig};
use super::engine::{Condition, EngineSettings, OperationMatcher, Rule, ScaleDown};
use crate::scaling::target::parse_short_target;

/// Shortest accepted `interval`: below it the tick costs more than it tells.
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Most operations with statistics (`max_operations`).
const MAX_OPERATIONS: usize = 100_000;
/// Most samples per rule window (`max_window_samples`).
const MAX_WINDOW_SAMPLES: usize = 1_000_000;
/// Most ids of refused spans remembered (`max_refused_ids`): 16 bytes or so each.
const MAX_REFUSED_IDS: usize = 10_000_000;

/// Collects the errors of one validation pass, each at its key path.
struct Problems<'c, 'a> {
    ctx: &'c BuildContext<'a>,
    errors: Vec<BuildError>,
}

impl Problems<'_, '_> {
    fn add(&mut self, key: &str, message: impl std::fmt::Display) {
        self.errors.push(self.ctx.invalid(key, message));
    }
}

impl LatencyRulesConfig {
    /// Checks the whole config and turns it into engine rules and settings. Every problem is
    /// reported at once, each at its key path (`rules[2].window`).
    pub fn validate(
        &self,
        ctx: &BuildContext<'_>,
    ) -> Result<(Vec<Rule>, EngineSettings), BuildError> {
        let mut p = Problems {
            ctx,
            errors: Vec::new(),
        };
        let interval = self.interval.get();
        if interval < MIN_INTERVAL {
            p.add("interval", "must be at least 10ms");
        }
        if self.stale_after.get() < interval {
            p.add(
                "stale_after",
                format!("must be at least `interval` ({})", self.interval),
            );
        }
        if self.max_operations > MAX_OPERATIONS {
            p.add(
                "max_operations",
                format!("must be at most {MAX_OPERATIONS}"),
            );
        }
        if !(1..=MAX_WINDOW_SAMPLES).contains(&self.max_window_samples) {
            p.add(
                "max_window_samples",
                format!("must be between 1 and {MAX_WINDOW_SAMPLES}"),
            );
        }
        if !(1..=MAX_REFUSED_IDS).contains(&self.max_refused_ids) {
            p.add(
                "max_refused_ids",
                format!("must be between 1 and {MAX_REFUSED_IDS}"),
            );
        }
        if self.rules.is_empty() {
            ctx.warn(
                "rules",
                "no rules: the processor only exports per-operation latency statistics",
            );
        }

        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if let Some(&first) = names.get(rule.name.as_str()) {
                p.add(
                    &format!("{at}.name"),
                    format!(
                        "duplicate rule name {:?}: rules[{first}] has it already",
                        rule.name
                    ),
                );
            } else {
                names.insert(&rule.name, i);
            }
            if let Some(rule) = self.rule(&at, rule, &mut p) {
                rules.push(rule);
            }
        }
        // Names are checked whatever else is wrong, so that a missing one is not left for the
        // next round of `validate`.
        self.resolve_inhibitors(&mut rules, &names, &mut p);
        self.warn_on_mixed_limits(&rules, ctx);
        if !p.errors.is_empty() {
            return Err(BuildContext::errors(p.errors));
        }
        Ok((
            rules,
            EngineSettings {
                allowed_lateness: self.allowed_lateness.get(),
                stale_after: self.stale_after.get(),
                max_operations: self.max_operations,
                max_window_samples: self.max_window_samples,
                event_clock: self.clock == ClockConfig::Event,
            },
        ))
    }

    /// Turns `inhibited_by` names into rule indexes (once every rule is valid, so that the
    /// indexes line up), and reports names that are no rule.
    fn resolve_inhibitors(
        &self,
        rules: &mut [Rule],
        names: &HashMap<&str, usize>,
        p: &mut Problems<'_, '_>,
    ) {
        let complete = rules.len() == self.rules.len();
        for (i, r) in self.rules.iter().enumerate() {
            for (j, name) in r.inhibited_by.iter().enumerate() {
                let at = format!("rules[{i}].inhibited_by[{j}]");
                match names.get(name.as_str()) {
                    Some(&k) if k == i => p.add(&at, "a rule cannot inhibit itself"),
                    Some(&k) if complete => rules[i].inhibited_by.push(k),
                    Some(_) => {}
                    None => {
                        let mut known: Vec<&str> = names.keys().copied().collect();
                        known.sort_unstable();
                        p.add(
                            &at,
                            format!("no rule is named {name:?} (rules: {})", known.join(", ")),
                        );
                    }
                }
            }
        }
    }

    /// Checks one rule; None when it has errors (they are in `p`).
    fn rule(&self, at: &str, r: &RuleConfig, p: &mut Problems<'_, '_>) -> Option<Rule> {
        let before = p.errors.len();
        if r.name.trim().is_empty() {
            p.add(&format!("{at}.name"), "must not be empty");
        }
        if r.service.trim().is_empty() {
            p.add(
                &format!("{at}.service"),
                "must name a service (the resource attribute service.name)",
            );
        }
        if r.operation.trim().is_empty() {
            p.add(
                &format!("{at}.operation"),
                "must name an operation (the span name); \"*\" matches every operation of the service",
            );
        }
        if r.attributes.keys().any(|k| k.trim().is_empty()) {
            p.add(
                &format!("{at}.attributes"),
                "attribute names must not be empty",
            );
        }
        let above = r.above.get();
        if above.is_zero() {
            p.add(&format!("{at}.above"), "must be greater than 0");
        }
        let window = r.window.get();
        if window < self.interval.get() {
            p.add(
                &format!("{at}.window"),
                format!(
                    "must be at least `interval` ({}): the window is evaluated every interval",
                    self.interval
                ),
            );
        }
        let condition = self.condition(at, r, p);
        let (target, change, limits) = scale(at, &r.scale, p);
        if r.scale.resources.is_some() && r.scale_down.is_some() {
            p.add(
                &format!("{at}.scale_down"),
                "a vertical action (`scale.resources`) has no way down; drop `scale_down`",
            );
        }
        let scale_down = r.scale_down.as_ref().map(|d| {
            let below = d.below.get();
            if below.is_zero() {
                p.add(&format!("{at}.scale_down.below"), "must be greater than 0");
            } else if below > above {
                p.add(
                    &format!("{at}.scale_down.below"),
                    format!(
                        "must not exceed `above` ({}): the rule would scale down spans it scales up for",
                        r.above
                    ),
                );
            }
            if d.period.get() < self.interval.get() {
                p.add(
                    &format!("{at}.scale_down.for"),
                    format!("must be at least `interval` ({})", self.interval),
                );
            }
            if d.step == 0 || i32::try_from(d.step).is_err() {
                p.add(&format!("{at}.scale_down.step"), "must be at least 1");
            }
            ScaleDown {
                below,
                period: d.period.get(),
                step: d.step,
            }
        });
        if p.errors.len() > before {
            return None;
        }
        Some(Rule {
            name: r.name.clone(),
            service: r.service.clone(),
            operation: OperationMatcher::parse(&r.operation),
            attributes: r
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            span_kind: r.span_kind.map(SpanKindConfig::otlp),
            above,
            condition: condition?,
            window,
            target: target?,
            change: change?,
            limits,
            scale_down,
            inhibited_by: Vec::new(),
            inhibition_hold: r.inhibition_hold.get(),
            resources: r.scale.resources.clone(),
        })
    }

    fn condition(&self, at: &str, r: &RuleConfig, p: &mut Problems<'_, '_>) -> Option<Condition> {
        let cap = self.max_window_samples;
        match (r.count, r.percentile) {
            (Some(_), Some(_)) => {
                p.add(
                    &format!("{at}.percentile"),
                    "set either `count` or `percentile`, not both",
                );
                None
            }
            (None, None) => {
                p.add(
                    at,
                    "needs a condition: `count = N` (breaches within the window) or `percentile = P`",
                );
                None
            }
            (Some(count), None) => {
                if r.min_samples.is_some() {
                    p.add(
                        &format!("{at}.min_samples"),
                        "only applies with `percentile`",
                    );
                }
                if count == 0 {
                    p.add(&format!("{at}.count"), "must be at least 1");
                } else if count as usize > cap {
                    p.add(
                        &format!("{at}.count"),
                        format!(
                            "cannot exceed `max_window_samples` ({cap}): the window never holds more"
                        ),
                    );
                }
                Some(Condition::Count { count })
            }
            (None, Some(percentile)) => {
                if !(percentile > 0.0 && percentile <= 100.0) {
                    p.add(
                        &format!("{at}.percentile"),
                        "must be greater than 0 and at most 100",
                    );
                }
                let min_samples = r.min_samples.unwrap_or(10);
                if min_samples as usize > cap {
                    p.add(
                        &format!("{at}.min_samples"),
                        format!(
                            "cannot exceed `max_window_samples` ({cap}): the window never holds more"
                        ),
                    );
                }
                Some(Condition::Percentile {
                    percentile,
                    min_samples: min_samples.max(1),
                })
            }
        }
    }

    /// Two rules scaling one target with different bounds: the bounds a decision carries then
    /// depend on which rule won the cycle, which is rarely what was meant.
    fn warn_on_mixed_limits(&self, rules: &[Rule], ctx: &BuildContext<'_>) {
        for (j, rule) in rules.iter().enumerate() {
            if let Some(first) = rules[..j]
                .iter()
                .find(|r| r.target == rule.target && r.limits != rule.limits)
            {
                let at = self
                    .rules
                    .iter()
                    .position(|r| r.name == rule.name)
                    .unwrap_or(j);
                ctx.warn(
                    &format!("rules[{at}].scale"),
                    format!(
                        "scales {} with other min/max than rule {:?}; each decision carries the bounds of the rule that won",
                        rule.target, first.name
                    ),
                );
            }
        }
    }
}

/// Checks `scale` and resolves its target.
fn scale(
    at: &str,
    s: &ScaleConfig,
    p: &mut Problems<'_, '_>,
) -> (Option<Target>, Option<ScaleChange>, ReplicaLimits) {
    let at = format!("{at}.scale");
    let namespace = s.namespace.trim();
    if namespace.is_empty() {
        p.add(&format!("{at}.namespace"), "must not be empty");
    }
    let full = s.api_version.is_some() || s.kind.is_some() || s.name.is_some();
    let target = match (&s.target, full) {
        (Some(_), true) => {
            p.add(
                &format!("{at}.target"),
                "set either `target = \"kind/name\"` or `api_version`, `kind` and `name`, not both",
            );
            None
        }
        (Some(short), false) => short_target(&format!("{at}.target"), short, namespace, p),
        (None, true) => match (&s.api_version, &s.kind, &s.name) {
            (Some(api_version), Some(kind), Some(name))
                if !api_version.trim().is_empty()
                    && !kind.trim().is_empty()
                    && !name.trim().is_empty() =>
            {
                Some(Target {
                    api_version: api_version.trim().to_string(),
                    kind: kind.trim().to_string(),
                    name: name.trim().to_string(),
                    namespace: namespace.to_string(),
                })
            }
            _ => {
                p.add(
                    &at,
                    "the full form needs non-empty `api_version`, `kind` and `name`",
                );
                None
            }
        },
        (None, false) => {
            p.add(
                &at,
                "needs a target: `target = \"deployment/NAME\"` or `api_version`, `kind` and `name`",
            );
            None
        }
    };
    if let Some(r) = &s.resources {
        check_resources(&format!("{at}.resources"), r, p);
        if s.step.is_some() || s.to.is_some() {
            p.add(
                &format!("{at}.resources"),
                "a vertical action sets resources and leaves the replicas alone: drop `step` and `to`",
            );
        }
        let limits = ReplicaLimits {
            min: Some(s.min),
            max: s.max,
        };
        return (target, Some(ScaleChange::Step(0)), limits);
    }
    let change = match (s.step, s.to) {
        (Some(_), Some(_)) => {
            p.add(&format!("{at}.to"), "set either `step` or `to`, not both");
            None
        }
        (_, Some(to)) => {
            if to < s.min || s.max.is_some_and(|max| to > max) {
                p.add(&format!("{at}.to"), "must lie between `min` and `max`");
            }
            Some(ScaleChange::To(to))
        }
        (step, None) => {
            let step = step.unwrap_or(1);
            match i32::try_from(step) {
                Ok(n) if n > 0 => Some(ScaleChange::Step(n)),
                _ => {
                    p.add(
                        &format!("{at}.step"),
                        "must be at least 1 (the way down is `scale_down`)",
                    );
                    None
                }
            }
        }
    };
    if let Some(max) = s.max {
        if s.min > max {
            p.add(
                &format!("{at}.min"),
                format!("min ({}) is greater than max ({max})", s.min),
            );
        }
        if max == 0 {
            p.add(&format!("{at}.max"), "must be at least 1");
        }
    }
    let limits = ReplicaLimits {
        min: Some(s.min),
        max: s.max,
    };
    (target, change, limits)
}

/// A Kubernetes quantity as the API accepts it: a decimal number with an optional suffix.
fn is_quantity(q: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P",
    ];
    let number = SUFFIXES
        .iter()
        .find_map(|s| q.strip_suffix(s))
        .or_else(|| q.strip_suffix('E'))
        .unwrap_or(q);
    !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.chars().filter(|&c| c == '.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit())
}

fn check_resources(at: &str, r: &ContainerResources, p: &mut Problems<'_, '_>) {
    if r.container.trim().is_empty() {
        p.add(
            &format!("{at}.container"),
            "must name a container of the pod template",
        );
    }
    if r.requests.is_empty() && r.limits.is_empty() {
        p.add(at, "set `requests`, `limits` or both");
    }
    for (what, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in map {
            if name.trim().is_empty() {
                p.add(&format!("{at}.{what}"), "resource names must not be empty");
            }
            if !is_quantity(q) {
                p.add(
                    &format!("{at}.{what}.{name}"),
                    format!(
                        "{q:?} is not a Kubernetes quantity (such as \"500m\", \"1\" or \"256Mi\")"
                    ),
                );
            }
        }
    }
}

/// Resolves `kind/name` with the short kinds.
fn short_target(
    key: &str,
    short: &str,
    namespace: &str,
    p: &mut Problems<'_, '_>,
) -> Option<Target> {
    match parse_short_target(short, namespace) {
        Ok(target) => Some(target),
        Err(message) => {
            p.add(key, message);
            None
        }
    }
}
