//! The scaling policy: from "the rule wants N replicas" to "change the workload to M now, or
//! hold, and why". Plain synchronous code on an injected clock (monotonic nanoseconds), shared by
//! the `kubernetes` and `simulated_cluster` exporters so the demo runs the code production runs.
//!
//! The rails follow the HorizontalPodAutoscaler's `behavior` (stabilisation windows, rate-limit
//! policies with the most permissive one selected, tolerance) plus a cooldown after every change,
//! as KEDA and most shims have. The order, and the reason each step exists:
//!
//! 1. **Bounds**: the exporter's `min_replicas`/`max_replicas`, narrowed by the rule's own
//!    limits. A scale-up that the bounds turn into no change (or a scale-down) is held as
//!    `at_max`; a scale-down held at the floor is `at_min`. The exporter never moves against the
//!    decision's direction.
//! 2. **Cooldown**: no change within `cooldown` of the previous one, so a breach that persists
//!    while new replicas start is not answered twice.
//! 3. **Stabilisation**: a scale-down goes no lower than the highest recommendation (and the
//!    highest level a scale-up reached) within the down window; a scale-up goes no higher than
//!    the lowest recommendation within the up window. This is what keeps a flapping signal from
//!    flapping the workload.
//! 4. **Tolerance**: a change smaller than `tolerance` × current is not worth a rollout.
//! 5. **Rate limits**: at most `max(max_replicas_per_period, max_percent_per_period % of the
//!    replicas at the start of the period)` replicas added (or removed) within `period`.

use std::collections::VecDeque;
use std::time::Duration;

/// Most recommendations and changes kept per target: a decision flood cannot grow the history
/// without bound (decisions are conflated per evaluation cycle upstream, so a 300 s window at
/// one cycle per second needs 300).
pub const MAX_HISTORY: usize = 4096;

/// Rate limit and stabilisation for one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectionPolicy {
    /// Recommendations within this window bound the change (see the module docs).
    pub stabilization_window: Duration,
    /// At most this many replicas changed within `period`.
    pub max_replicas_per_period: u32,
    /// At most this percentage of the replicas at the start of the period changed within
    /// `period`. The larger of the two limits applies, so 0 in one leaves the other in charge,
    /// and 0 in both turns the direction off.
    pub max_percent_per_period: u32,
    /// The rate-limit period.
    pub period: Duration,
}

impl DirectionPolicy {
    /// The HPA's default scale-up behaviour: no stabilisation, 4 pods or 100 % per 15 s.
    pub const HPA_UP: DirectionPolicy = DirectionPolicy {
        stabilization_window: Duration::ZERO,
        max_replicas_per_period: 4,
        max_percent_per_period: 100,
        period: Duration::from_secs(15),
    };

    /// The HPA's default scale-down behaviour: 300 s stabilisation, 100 % per 15 s.
    pub const HPA_DOWN: DirectionPolicy = DirectionPolicy {
        stabilization_window: Duration::from_secs(300),
        max_replicas_per_period: 0,
        max_percent_per_period: 100,
        period: Duration::from_secs(15),
    };

    /// Replicas this direction may still change, given `start` replicas at the start of the
    /// period and `used` already changed within it. The most permissive of the two limits wins,
    /// as with the HPA's default `selectPolicy: Max`.
    fn allowance(&self, start: u32, used: u32, up: bool) -> u32 {
        let share = u64::from(start) * u64::from(self.max_percent_per_period);
        // Up rounds up (as the HPA does), down rounds down, so a percentage never blocks a
        // single-replica step up and never empties a workload by rounding.
        let by_percent = if up { share.div_ceil(100) } else { share / 100 };
        let by_percent = u32::try_from(by_percent).unwrap_or(u32::MAX);
        self.max_replicas_per_period
            .max(by_percent)
            .saturating_sub(used)
    }
}

/// Every knob of the policy, with the defaults the exporters document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Never fewer replicas than this.
    pub min_replicas: u32,
    /// Never more replicas than this.
    pub max_replicas: u32,
    /// No change within this long of the previous change to the same target.
    pub cooldown: Duration,
    /// Changes smaller than this share of the current replicas are held (0.1 = 10 %).
    pub tolerance: f64,
    /// Scale-up behaviour.
    pub scale_up: DirectionPolicy,
    /// Scale-down behaviour.
    pub scale_down: DirectionPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_replicas: 1,
            max_replicas: 10,
            cooldown: Duration::from_secs(30),
            tolerance: 0.0,
            scale_up: DirectionPolicy::HPA_UP,
            scale_down: DirectionPolicy::HPA_DOWN,
        }
    }
}

/// Why the policy held a decision instead of changing the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hold {
    /// The decision asks for the replicas the workload has.
    NoChange,
    /// A scale-up, but the workload is at its maximum.
    AtMax,
    /// A scale-down, but the workload is at its minimum.
    AtMin,
    /// Within `cooldown` of the previous change.
    Cooldown,
    /// The stabilisation window keeps the current count.
    Stabilizing,
    /// The change is within `tolerance`.
    WithinTolerance,
    /// The rate limit for this direction is used up for the current period.
    RateLimited,
}

impl Hold {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::NoChange => "no_change",
            Hold::AtMax => "at_max",
            Hold::AtMin => "at_min",
            Hold::Cooldown => "cooldown",
            Hold::Stabilizing => "stabilizing",
            Hold::WithinTolerance => "within_tolerance",
            Hold::RateLimited => "rate_limited",
        }
    }

    /// Every reason, for registering metrics up front.
    pub const ALL: [Hold; 7] = [
        Hold::NoChange,
        Hold::AtMax,
        Hold::AtMin,
        Hold::Cooldown,
        Hold::Stabilizing,
        Hold::WithinTolerance,
        Hold::RateLimited,
    ];
}

/// What the policy says to do with one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Set the replicas from `from` to `to`. `limited` names the rail that made `to` smaller
    /// than asked, if any.
    Change {
        /// The replicas read from the workload.
        from: u32,
        /// The replicas to set.
        to: u32,
        /// The rail that trimmed the change (`at_max`, `rate_limited`, …), if one did.
        limited: Option<Hold>,
    },
    /// Leave the workload alone.
    Hold(Hold),
}

/// The policy's memory of one target: recommendations and changes, on the injected clock.
#[derive(Debug, Clone, Default)]
pub struct TargetState {
    /// `(at, replicas)` the decisions asked for, after bounds.
    recommendations: VecDeque<(u64, u32)>,
    /// `(at, from, to)` of every applied change.
    changes: VecDeque<(u64, u32, u32)>,
}

impl TargetState {
    /// Decides what to do with a decision asking for `desired` replicas while the workload has
    /// `current`, at `now` (nanoseconds on a monotonic clock). `rule_min`/`rule_max` are the
    /// decision's own limits. Records the recommendation; call [`TargetState::record_change`]
    /// once a change is applied.
    pub fn plan(
        &mut self,
        policy: &Policy,
        now: u64,
        current: u32,
        desired: u32,
        rule_min: Option<u32>,
        rule_max: Option<u32>,
    ) -> Plan {
        self.prune(policy, now);
        if desired == current {
            return Plan::Hold(Hold::NoChange);
        }
        let up = desired > current;

        // 1. Bounds. The exporter's bounds are the authority: a rule cannot widen them.
        let max = rule_max.map_or(policy.max_replicas, |m| m.min(policy.max_replicas));
        let min = rule_min
            .map_or(policy.min_replicas, |m| m.max(policy.min_replicas))
            .min(max);
        let bounded = desired.clamp(min, max);
        let mut limited =
            (bounded != desired).then_some(if up { Hold::AtMax } else { Hold::AtMin });
        if up && bounded <= current {
            return Plan::Hold(Hold::AtMax);
        }
        if !up && bounded >= current {
            return Plan::Hold(Hold::AtMin);
        }
        push_bounded(&mut self.recommendations, (now, bounded));

        // 2. Cooldown.
        if let Some(&(at, _, _)) = self.changes.back()
            && now.saturating_sub(at) < nanos(policy.cooldown)
        {
            return Plan::Hold(Hold::Cooldown);
        }

        // 3. Stabilisation.
        let mut target = bounded;
        if up {
            let window = nanos(policy.scale_up.stabilization_window);
            let lowest = self
                .recommendations
                .iter()
                .filter(|(at, _)| now.saturating_sub(*at) < window)
                .map(|&(_, r)| r)
                .chain(std::iter::once(bounded))
                .min()
                .unwrap_or(bounded);
            target = target.min(lowest);
            if target <= current {
                return Plan::Hold(Hold::Stabilizing);
            }
        } else {
            let window = nanos(policy.scale_down.stabilization_window);
            let highest_rec = self
                .recommendations
                .iter()
                .filter(|(at, _)| now.saturating_sub(*at) < window)
                .map(|&(_, r)| r)
                .chain(std::iter::once(bounded));
            // A level a scale-up reached within the window counts as a recommendation: decisions
            // are sparse, and "we needed 5 two minutes ago" is exactly what the window protects.
            let highest_up = self
                .changes
                .iter()
                .filter(|(at, from, to)| now.saturating_sub(*at) < window && to > from)
                .map(|&(_, _, to)| to);
            let highest = highest_rec.chain(highest_up).max().unwrap_or(bounded);
            target = target.max(highest);
            if target >= current {
                return Plan::Hold(Hold::Stabilizing);
            }
        }

        // 4. Tolerance.
        if current > 0 {
            let ratio = f64::from(target.abs_diff(current)) / f64::from(current);
            if ratio <= policy.tolerance {
                return Plan::Hold(Hold::WithinTolerance);
            }
        }

        // 5. Rate limits, against the replicas at the start of the period.
        let direction = if up {
            &policy.scale_up
        } else {
            &policy.scale_down
        };
        let since = now.saturating_sub(nanos(direction.period));
        let used: u32 = self
            .changes
            .iter()
            .filter(|(at, from, to)| *at >= since && (to > from) == up)
            .map(|&(_, from, to)| from.abs_diff(to))
            .sum();
        let start = if up {
            current.saturating_sub(used)
        } else {
            current.saturating_add(used)
        };
        let allowed = direction.allowance(start, used, up);
        if allowed == 0 {
            return Plan::Hold(Hold::RateLimited);
        }
        let capped = if up {
            target.min(current.saturating_add(allowed))
        } else {
            target.max(current.saturating_sub(allowed))
        };
        if capped != target {
            limited = Some(Hold::RateLimited);
            target = capped;
        }
        Plan::Change {
            from: current,
            to: target,
            limited,
        }
    }

    /// Remembers a change that was applied at `now`: it starts the cooldown and counts against
    /// the rate limit and the down window.
    pub fn record_change(&mut self, now: u64, from: u32, to: u32) {
        push_bounded(&mut self.changes, (now, from, to));
    }

    /// When the last change was applied, if any.
    pub fn last_change(&self) -> Option<u64> {
        self.changes.back().map(|&(at, _, _)| at)
    }

    fn prune(&mut self, policy: &Policy, now: u64) {
        let keep = [
            policy.scale_up.stabilization_window,
            policy.scale_down.stabilization_window,
            policy.scale_up.period,
            policy.scale_down.period,
            policy.cooldown,
        ]
        .into_iter()
        .max()
        .unwrap_or_default();
        let since = now.saturating_sub(nanos(keep));
        while self
            .recommendations
            .front()
            .is_some_and(|(at, _)| *at < since)
        {
            self.recommendations.pop_front();
        }
        // The last change is kept whatever its age: it is the cooldown's anchor.
        while self.changes.len() > 1 && self.changes.front().is_some_and(|(at, _, _)| *at < since) {
            self.changes.pop_front();
        }
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T) {
    if q.len() >= MAX_HISTORY {
        q.pop_front();
    }
    q.push_back(item);
}

/// Nanoseconds of a duration, saturating.
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn quiet() -> Policy {
        Policy {
            min_replicas: 1,
            max_replicas: 10,
            cooldown: Duration::ZERO,
            tolerance: 0.0,
            scale_up: DirectionPolicy {
                stabilization_window: Duration::ZERO,
                max_replicas_per_period: u32::MAX,
                max_percent_per_period: 0,
                period: Duration::from_secs(15),
            },
            scale_down: DirectionPolicy {
                stabilization_window: Duration::ZERO,
                max_replicas_per_period: u32::MAX,
                max_percent_per_period: 0,
                period: Duration::from_secs(15),
            },
        }
    }

    fn to_of(p: Plan) -> Option<u32> {
        match p {
            Plan::Change { to, .. } => Some(to),
            Plan::Hold(_) => None,
        }
    }

    #[test]
    fn never_above_max_nor_below_min() {
        let p = quiet();
        let mut s = TargetState::default();
        assert_eq!(
            s.plan(&p, 0, 8, 20, None, None),
            Plan::Change {
                from: 8,
                to: 10,
                limited: Some(Hold::AtMax)
            }
        );
        assert_eq!(s.plan(&p, S, 10, 11, None, None), Plan::Hold(Hold::AtMax));
        assert_eq!(to_of(s.plan(&p, 2 * S, 3, 0, None, None)), Some(1));
        assert_eq!(s.plan(&p, 3 * S, 1, 0, None, None), Plan::Hold(Hold::AtMin));
        // The rule's limits narrow the exporter's, never widen them.
        assert_eq!(to_of(s.plan(&p, 4 * S, 2, 9, None, Some(4))), Some(4));
        assert_eq!(to_of(s.plan(&p, 5 * S, 2, 30, None, Some(50))), Some(10));
        assert_eq!(
            s.plan(&p, 6 * S, 3, 2, Some(3), None),
            Plan::Hold(Hold::AtMin)
        );
        // Above max already (changed by hand) and asked to go up: held, not scaled down.
        assert_eq!(
            s.plan(&p, 7 * S, 12, 13, None, None),
            Plan::Hold(Hold::AtMax)
        );
        assert_eq!(
            s.plan(&p, 8 * S, 4, 4, None, None),
            Plan::Hold(Hold::NoChange)
        );
    }

    #[test]
    fn cooldown_holds_until_it_has_passed() {
        let p = Policy {
            cooldown: Duration::from_secs(30),
            ..quiet()
        };
        let mut s = TargetState::default();
        assert_eq!(to_of(s.plan(&p, 0, 2, 3, None, None)), Some(3));
        s.record_change(0, 2, 3);
        assert_eq!(
            s.plan(&p, 29 * S, 3, 4, None, None),
            Plan::Hold(Hold::Cooldown)
        );
        assert_eq!(to_of(s.plan(&p, 30 * S, 3, 4, None, None)), Some(4));
    }

    #[test]
    fn a_plan_that_was_not_applied_does_not_start_the_cooldown() {
        let p = Policy {
            cooldown: Duration::from_secs(30),
            ..quiet()
        };
        let mut s = TargetState::default();
        assert_eq!(to_of(s.plan(&p, 0, 2, 3, None, None)), Some(3));
        assert_eq!(to_of(s.plan(&p, S, 2, 3, None, None)), Some(3));
    }

    #[test]
    fn down_window_keeps_the_highest_recent_level() {
        let p = Policy {
            scale_down: DirectionPolicy {
                stabilization_window: Duration::from_secs(300),
                ..quiet().scale_down
            },
            ..quiet()
        };
        let mut s = TargetState::default();
        assert_eq!(to_of(s.plan(&p, 0, 2, 5, None, None)), Some(5));
        s.record_change(0, 2, 5);
        // A minute later the rule wants 4: the scale-up to 5 is inside the window.
        assert_eq!(
            s.plan(&p, 60 * S, 5, 4, None, None),
            Plan::Hold(Hold::Stabilizing)
        );
        assert_eq!(
            s.plan(&p, 299 * S, 5, 4, None, None),
            Plan::Hold(Hold::Stabilizing)
        );
        // Past the window, and every recommendation since was 4.
        assert_eq!(to_of(s.plan(&p, 301 * S, 5, 4, None, None)), Some(4));
    }

    #[test]
    fn down_window_takes_the_highest_recommendation_not_the_newest() {
        let p = Policy {
            scale_down: DirectionPolicy {
                stabilization_window: Duration::from_secs(60),
                ..quiet().scale_down
            },
            ..quiet()
        };
        let mut s = TargetState::default();
        // Recommendations 4 then 2 within the window, current 6: go to 4, not 2.
        assert_eq!(to_of(s.plan(&p, 0, 6, 4, None, None)), Some(4));
        assert_eq!(to_of(s.plan(&p, 10 * S, 6, 2, None, None)), Some(4));
        assert_eq!(to_of(s.plan(&p, 61 * S, 6, 2, None, None)), Some(2));
    }

    #[test]
    fn up_window_takes_the_lowest_recommendation() {
        let p = Policy {
            scale_up: DirectionPolicy {
                stabilization_window: Duration::from_secs(60),
                ..quiet().scale_up
            },
            ..quiet()
        };
        let mut s = TargetState::default();
        assert_eq!(to_of(s.plan(&p, 0, 2, 3, None, None)), Some(3));
        assert_eq!(to_of(s.plan(&p, 10 * S, 2, 8, None, None)), Some(3));
        assert_eq!(to_of(s.plan(&p, 61 * S, 2, 8, None, None)), Some(8));
    }

    #[test]
    fn tolerance_ignores_small_changes() {
        let p = Policy {
            tolerance: 0.1,
            max_replicas: 100,
            ..quiet()
        };
        let mut s = TargetState::default();
        assert_eq!(
            s.plan(&p, 0, 10, 11, None, None),
            Plan::Hold(Hold::WithinTolerance)
        );
        assert_eq!(to_of(s.plan(&p, 0, 10, 12, None, None)), Some(12));
        assert_eq!(to_of(s.plan(&p, 0, 2, 3, None, None)), Some(3));
    }

    #[test]
    fn rate_limit_takes_the_most_permissive_policy_per_period() {
        let p = Policy {
            scale_up: DirectionPolicy {
                max_replicas_per_period: 2,
                max_percent_per_period: 50,
                ..quiet().scale_up
            },
            ..quiet()
        };
        let mut s = TargetState::default();
        // From 4: 2 replicas or 50 % of 4 = 2 → at most 6.
        assert_eq!(
            s.plan(&p, 0, 4, 10, None, None),
            Plan::Change {
                from: 4,
                to: 6,
                limited: Some(Hold::RateLimited)
            }
        );
        s.record_change(0, 4, 6);
        assert_eq!(
            s.plan(&p, 5 * S, 6, 10, None, None),
            Plan::Hold(Hold::RateLimited)
        );
        // The period has passed: from 6, max(2, 3) = 3 more.
        assert_eq!(to_of(s.plan(&p, 16 * S, 6, 10, None, None)), Some(9));
        // Down is unlimited here.
        assert_eq!(to_of(s.plan(&p, 17 * S, 9, 1, None, None)), Some(1));
    }

    #[test]
    fn zero_in_both_limits_turns_a_direction_off() {
        let p = Policy {
            scale_down: DirectionPolicy {
                max_replicas_per_period: 0,
                max_percent_per_period: 0,
                ..quiet().scale_down
            },
            ..quiet()
        };
        let mut s = TargetState::default();
        assert_eq!(
            s.plan(&p, 0, 5, 2, None, None),
            Plan::Hold(Hold::RateLimited)
        );
        assert_eq!(to_of(s.plan(&p, 0, 5, 6, None, None)), Some(6));
    }

    #[test]
    fn hpa_defaults_allow_doubling_or_four_pods() {
        let p = Policy {
            cooldown: Duration::ZERO,
            ..Policy::default()
        };
        let mut s = TargetState::default();
        assert_eq!(to_of(s.plan(&p, 0, 1, 10, None, None)), Some(5));
        let mut s = TargetState::default();
        assert_eq!(to_of(s.plan(&p, 0, 5, 10, None, None)), Some(10));
    }

    #[test]
    fn history_is_bounded_under_a_decision_flood() {
        let p = Policy {
            cooldown: Duration::from_secs(3600),
            scale_up: DirectionPolicy {
                stabilization_window: Duration::from_secs(3600),
                ..quiet().scale_up
            },
            ..quiet()
        };
        let mut s = TargetState::default();
        for i in 0..(MAX_HISTORY as u64 * 3) {
            let _ = s.plan(&p, i, 2, 3, None, None);
        }
        assert!(s.recommendations.len() <= MAX_HISTORY);
    }
}
