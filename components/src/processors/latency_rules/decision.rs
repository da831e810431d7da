//! From rules that want a change to decisions: inhibition, conflation per target, and the
//! decision itself with its reason and evidence.

use std::fmt::{self, Write as _};
use std::time::Duration;

use tracescale_core::signal::{Decision, Evidence, MAX_EXEMPLARS, ScaleChange};

use super::engine::Engine;
use super::percentile::{nearest_ranks, percentile_of};
use super::rule::{Condition, RuleState};

/// A decision a rule wants in this cycle, before conflation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub(super) rule: usize,
    pub(super) target: usize,
    pub(super) change: ScaleChange,
    pub(super) up: bool,
}

impl Engine {
    /// Drops the scale-ups of rules one of whose inhibitors has any breach in its window, or
    /// had one within the rule's `inhibition_hold`. Not only while the inhibitor fires: a
    /// dependency that has just been scaled still drains the queues its slowness built up in
    /// front of its callers, and a single slow span of it in the window is enough to doubt
    /// that the callers are the cause.
    pub(super) fn inhibit(&mut self, candidates: &mut Vec<Candidate>, clock: u64) {
        let before = candidates.len();
        let rules = &mut self.rules;
        candidates.retain(|c| {
            if !c.up {
                return true;
            }
            let inhibitors = rules[c.rule].rule.inhibited_by.clone();
            let hold =
                u64::try_from(rules[c.rule].rule.inhibition_hold.as_nanos()).unwrap_or(u64::MAX);
            !inhibitors.into_iter().any(|i| {
                let inhibitor = &mut rules[i];
                inhibitor.expire(clock);
                inhibitor.window.breaches > 0
                    || (inhibitor.newest_breach > 0
                        && clock.saturating_sub(inhibitor.newest_breach) <= hold)
            })
        });
        self.counters.inhibited += (before - candidates.len()) as u64;
    }

    /// Merges the candidates of each target into one decision: the largest scale-up wins, a
    /// scale-down only survives when no scale-up exists and no rule on the target is stale or
    /// cooling down, and the smallest scale-down wins.
    pub(super) fn conflate(
        &mut self,
        candidates: &mut [Candidate],
        clock: u64,
        out: &mut Vec<Decision>,
    ) {
        // Stable sort: within a target, rules stay in the order they are listed.
        candidates.sort_by_key(|c| (c.target, c.rule));
        for group in candidates.chunk_by(|a, b| a.target == b.target) {
            let target = group[0].target;
            let any_up = group.iter().any(|c| c.up);
            let winner = if any_up {
                // Every rule that fired upwards spent its breaches, winner or not.
                for c in group.iter().filter(|c| c.up) {
                    let rule = &mut self.rules[c.rule];
                    rule.disarmed_until = rule.newest_breach.saturating_add(rule.window_nanos);
                }
                group.iter().filter(|c| c.up).max_by(|a, b| {
                    up_rank(a.change)
                        .cmp(&up_rank(b.change))
                        .then(b.rule.cmp(&a.rule))
                })
            } else {
                let holding = self.rules_by_target[target].iter().any(|&r| {
                    let rule = &self.rules[r];
                    rule.stale || clock < rule.disarmed_until
                });
                if holding {
                    self.counters.held += group.len() as u64;
                    continue;
                }
                group.iter().max_by(|a, b| {
                    down_rank(a.change)
                        .cmp(&down_rank(b.change))
                        .then(b.rule.cmp(&a.rule))
                })
            };
            let Some(winner) = winner.copied() else {
                continue;
            };
            let merged = group.len() - 1;
            self.counters.conflated += merged as u64;
            // Any change to the target restarts the stabilisation period of every rule on it,
            // so that two rules cannot walk it down on consecutive ticks.
            for &r in &self.rules_by_target[target] {
                self.rules[r].quiet_since = clock;
            }
            let mut decision = self.decide(winner, clock);
            if merged > 0 {
                decision.reason.push_str(" (conflated with ");
                let losers = group.iter().filter(|c| c.rule != winner.rule);
                for (i, c) in losers.enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    let _ = write!(decision.reason, "{sep}{}", self.rules[c.rule].rule.name);
                }
                decision.reason.push(')');
            }
            let rule = &mut self.rules[winner.rule];
            if winner.up {
                rule.scaled_up += 1;
            } else {
                rule.scaled_down += 1;
            }
            out.push(decision);
        }
    }

    /// Builds the decision of a winning candidate, with its evidence.
    pub(super) fn decide(&mut self, c: Candidate, clock: u64) -> Decision {
        let rule = &self.rules[c.rule];
        let evidence = evidence(rule, &mut self.scratch);
        let what = format!("{} {}", rule.rule.service, rule.rule.operation.as_str());
        let reason = if c.up {
            match rule.rule.condition {
                Condition::Count { count } => format!(
                    "{} of {} of {what} above {} within {} (rule needs {count})",
                    evidence.breaches,
                    spans(evidence.window_count),
                    Latency(rule.rule.above),
                    Latency(rule.rule.window),
                ),
                Condition::Percentile { percentile, .. } => {
                    let value = percentile_of(&mut self.scratch, percentile);
                    format!(
                        "p{percentile} of {what} is {} over {} within {}, above {}",
                        Latency(Duration::from_nanos(value)),
                        spans(evidence.window_count),
                        Latency(rule.rule.window),
                        Latency(rule.rule.above),
                    )
                }
            }
        } else {
            let below = rule.rule.scale_down.map(|d| d.below).unwrap_or_default();
            format!(
                "no span of {what} at or above {} for {} ({} within {})",
                Latency(below),
                Latency(Duration::from_nanos(rule.period)),
                spans(evidence.window_count),
                Latency(rule.rule.window),
            )
        };
        Decision {
            target: self.targets[c.target].clone(),
            change: c.change,
            limits: rule.rule.limits,
            rule: rule.rule.name.clone(),
            reason,
            evidence,
            resources: rule.rule.resources.clone(),
            timestamp_unix_nano: clock,
        }
    }
}

/// Scale-ups compare by this: an absolute `to` beats any step (it says where to go, a step only
/// how far), then larger wins.
fn up_rank(change: ScaleChange) -> (u8, i64) {
    match change {
        ScaleChange::To(n) => (1, i64::from(n)),
        ScaleChange::Step(n) => (0, i64::from(n)),
    }
}

/// Scale-downs compare by this: the smallest step down (the most cautious) wins.
fn down_rank(change: ScaleChange) -> i64 {
    match change {
        ScaleChange::Step(n) => i64::from(n),
        ScaleChange::To(n) => i64::from(n),
    }
}

/// What a rule's window holds, for a decision.
fn evidence(rule: &RuleState, scratch: &mut Vec<u64>) -> Evidence {
    let samples = &rule.window.samples;
    scratch.clear();
    scratch.extend(samples.iter().map(|s| s.duration));
    let [p50, p95, p99] = nearest_ranks(scratch, [50.0, 95.0, 99.0]);

    // The slowest distinct traces, slowest first.
    let mut slowest: Vec<(u64, [u8; 16])> = Vec::with_capacity(MAX_EXEMPLARS + 1);
    let mut anomaly: Option<f32> = None;
    for s in samples {
        if s.duration > rule.above && !s.score.is_nan() {
            anomaly = Some(anomaly.map_or(s.score, |a| a.max(s.score)));
        }
        if s.trace_id == [0; 16] {
            continue;
        }
        let full = slowest.len() == MAX_EXEMPLARS;
        if full && slowest.last().is_some_and(|&(d, _)| d >= s.duration) {
            continue;
        }
        if let Some(i) = slowest.iter().position(|&(_, t)| t == s.trace_id) {
            if slowest[i].0 >= s.duration {
                continue;
            }
            slowest.remove(i);
        }
        let at = slowest.partition_point(|&(d, _)| d >= s.duration);
        slowest.insert(at, (s.duration, s.trace_id));
        slowest.truncate(MAX_EXEMPLARS);
    }
    Evidence {
        window: rule.rule.window,
        window_count: samples.len() as u64,
        breaches: rule.window.breaches as u64,
        p50: Duration::from_nanos(p50),
        p95: Duration::from_nanos(p95),
        p99: Duration::from_nanos(p99),
        exemplars: slowest.iter().map(|(_, t)| const_hex::encode(t)).collect(),
        anomaly_score: anomaly.map(f64::from),
    }
}

fn spans(n: u64) -> String {
    tracescale_core::words::count(n, "span")
}

/// A latency for people: `300ms`, `1.25s`, `8s`, `5m`, `250µs`.
pub(super) struct Latency(pub(super) Duration);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            f.write_str("0ms")
        } else if nanos < 1_000_000 {
            write!(f, "{}µs", trim(nanos as f64 / 1e3))
        } else if nanos < 1_000_000_000 {
            write!(f, "{}ms", trim(nanos as f64 / 1e6))
        } else if nanos.is_multiple_of(60_000_000_000) {
            write!(f, "{}m", nanos / 60_000_000_000)
        } else {
            write!(f, "{}s", trim(nanos as f64 / 1e9))
        }
    }
}

/// Up to two decimals, without trailing zeroes.
pub(super) fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}
