//! What the `keda` exporter answers, in plain synchronous code on an injected clock: per
//! target, the replicas tracescale wants and whether the target is active, from the decisions
//! that passed the allow-list and the policy.
//!
//! KEDA does not say how many replicas a workload has, and this exporter reads nothing from
//! the cluster, so the replicas it answers are its own count: a target starts at the policy's
//! floor, and each decision moves it as the policy allows (a `step` applies to the count it
//! answered last).
//!
//! A target is *active* while it wants at least one replica, and for `activity_window` after
//! any decision asked to scale it up, even one the policy held (a breach during the cooldown
//! after a scale-down to zero still wakes it). Being at the floor is not idleness: a healthy
//! workload makes no decisions at all, so "no decision lately" must not turn a target off while
//! the floor is one or more.

use std::collections::HashMap;
use std::time::Duration;

use tracescale_core::signal::{Decision, Target};

use crate::scaling::policy::nanos;
use crate::scaling::{Hold, Plan, Refusal, Scaler, ScalerSettings};

/// What became of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused before the policy: not allowed, stale, too many targets.
    Refused(Refusal),
    /// A vertical decision (container resources): KEDA scales replicas only.
    Vertical,
    /// The policy kept the count.
    Held(Hold),
    /// The count answered to KEDA moved from `from` to `to`.
    Changed {
        /// The count before.
        from: u32,
        /// The count now.
        to: u32,
        /// The rail that trimmed the change, if one did.
        limited: Option<Hold>,
    },
}

/// One decision applied: what became of it and, when it flipped, the target's new activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The target's key: `namespace/kind/name`.
    pub key: String,
    /// What the policy made of it.
    pub outcome: Outcome,
    /// `Some(active)` when the target's activity changed.
    pub activity: Option<bool>,
}

/// What KEDA is told about one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The replicas tracescale wants.
    pub desired: u32,
    /// Whether the target is active (see the module docs).
    pub active: bool,
}

#[derive(Debug)]
struct Entry {
    desired: u32,
    /// When a decision last asked to scale the target up.
    last_up: Option<u64>,
    /// Activity as last published, to tell a change.
    active: bool,
}

/// Every target's count and activity, and the policy's memory behind them.
#[derive(Debug)]
pub struct Board {
    scaler: Scaler,
    entries: HashMap<String, Entry>,
    activity_window: u64,
}

impl Board {
    /// A board with no history.
    pub fn new(settings: ScalerSettings, activity_window: Duration) -> Self {
        Self {
            scaler: Scaler::new(settings),
            entries: HashMap::new(),
            activity_window: nanos(activity_window),
        }
    }

    /// The settings: allow-list, policy, bounds.
    pub fn settings(&self) -> &ScalerSettings {
        self.scaler.settings()
    }

    /// The floor of a target: its policy's `min_replicas`, what it answers before any decision.
    pub fn floor(&self, target: &Target) -> u32 {
        self.scaler.policy_for(target).min_replicas
    }

    /// Targets with state.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no decision has been applied yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Screens `d` (allow-list and age, against `now_unix_nano`), plans it with the policy at
    /// `now` (monotonic nanoseconds) from the count answered so far, and records the result.
    pub fn apply(&mut self, d: &Decision, now: u64, now_unix_nano: u64) -> Applied {
        let key = d.target.to_string();
        let refused = |key, r| Applied {
            key,
            outcome: Outcome::Refused(r),
            activity: None,
        };
        if let Err(r) = self.scaler.screen(d, now_unix_nano) {
            return refused(key, r);
        }
        if d.resources.is_some() {
            return Applied {
                key,
                outcome: Outcome::Vertical,
                activity: None,
            };
        }
        let floor = self.floor(&d.target);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.settings().max_targets {
            return refused(key, Refusal::TooManyTargets);
        }
        let current = self.entries.get(&key).map_or(floor, |e| e.desired);
        let plan = match self.scaler.plan(d, now, current) {
            Ok(plan) => plan,
            Err(r) => return refused(key, r),
        };
        let window = self.activity_window;
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            desired: floor,
            last_up: None,
            active: floor >= 1,
        });
        if d.change.is_up(current) {
            entry.last_up = Some(now);
        }
        let outcome = match plan {
            Plan::Hold(h) => Outcome::Held(h),
            Plan::Change { from, to, limited } => {
                self.scaler.record_change(&d.target, now, from, to);
                entry.desired = to;
                Outcome::Changed { from, to, limited }
            }
        };
        let active = is_active(entry.desired, entry.last_up, now, window);
        let activity = (active != entry.active).then_some(active);
        entry.active = active;
        Applied {
            key,
            outcome,
            activity,
        }
    }

    /// What to answer about `target` at `now`.
    pub fn view(&self, target: &Target, now: u64) -> View {
        match self.entries.get(&target.to_string()) {
            Some(e) => View {
                desired: e.desired,
                active: is_active(e.desired, e.last_up, now, self.activity_window),
            },
            None => {
                let floor = self.floor(target);
                View {
                    desired: floor,
                    active: floor >= 1,
                }
            }
        }
    }

    /// Ends the activity windows that have run out by `now`; returns the targets whose activity
    /// changed, with the new value.
    pub fn expire(&mut self, now: u64) -> Vec<(String, bool)> {
        let window = self.activity_window;
        let mut changed = Vec::new();
        for (key, e) in &mut self.entries {
            let active = is_active(e.desired, e.last_up, now, window);
            if active != e.active {
                e.active = active;
                changed.push((key.clone(), active));
            }
        }
        changed
    }

    /// When the next activity window ends (at `now` for one that already has), if a target is
    /// active only through its window: the moment to call [`Board::expire`].
    pub fn next_expiry(&self, now: u64) -> Option<u64> {
        self.entries
            .values()
            .filter(|e| e.desired == 0 && e.active)
            .map(|e| {
                e.last_up
                    .map_or(now, |at| at.saturating_add(self.activity_window))
                    .max(now)
            })
            .min()
    }
}

fn is_active(desired: u32, last_up: Option<u64>, now: u64, window: u64) -> bool {
    desired >= 1 || last_up.is_some_and(|at| now.saturating_sub(at) < window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaling::{AllowList, AllowPattern, Policy};
    use tracescale_core::signal::{
        ContainerResources, Evidence, ReplicaLimits, ScaleChange, Target,
    };

    const S: u64 = 1_000_000_000;
    /// Wall-clock time of the decisions: they are never stale here.
    const WALL: u64 = 1_700_000_000 * S;

    fn target(name: &str) -> Target {
        Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
            namespace: "shop".into(),
        }
    }

    fn decision(name: &str, change: ScaleChange) -> Decision {
        Decision {
            target: target(name),
            change,
            limits: ReplicaLimits::default(),
            rule: "r".into(),
            reason: "test".into(),
            evidence: Evidence::default(),
            resources: None,
            timestamp_unix_nano: WALL,
        }
    }

    /// No cooldown, no stabilisation, no rate limit: each decision moves the count.
    fn board(min: u32, max_targets: usize) -> Board {
        let mut policy = Policy {
            min_replicas: min,
            max_replicas: 5,
            cooldown: Duration::ZERO,
            ..Policy::default()
        };
        for d in [&mut policy.scale_up, &mut policy.scale_down] {
            d.stabilization_window = Duration::ZERO;
            d.max_replicas_per_period = u32::MAX;
        }
        Board::new(
            ScalerSettings {
                allow: AllowList::new(vec![AllowPattern::parse("shop/deployment/*").unwrap()]),
                policy,
                overrides: Vec::new(),
                max_decision_age: Duration::from_secs(30),
                max_targets,
            },
            Duration::from_secs(60),
        )
    }

    fn outcome(b: &mut Board, d: &Decision, at: u64) -> Outcome {
        b.apply(d, at, WALL).outcome
    }

    #[test]
    fn a_target_answers_its_floor_until_a_decision_moves_it() {
        let mut b = board(2, 10);
        let v = b.view(&target("checkout"), 0);
        assert_eq!(
            v,
            View {
                desired: 2,
                active: true
            }
        );
        // A step applies to the count answered so far, within the policy's bounds.
        let up = decision("checkout", ScaleChange::Step(2));
        assert_eq!(
            outcome(&mut b, &up, S),
            Outcome::Changed {
                from: 2,
                to: 4,
                limited: None
            }
        );
        assert_eq!(b.view(&target("checkout"), S).desired, 4);
        assert_eq!(
            outcome(&mut b, &up, 2 * S),
            Outcome::Changed {
                from: 4,
                to: 5,
                limited: Some(Hold::AtMax)
            }
        );
        assert_eq!(outcome(&mut b, &up, 3 * S), Outcome::Held(Hold::AtMax));
        let to = decision("checkout", ScaleChange::To(1));
        assert_eq!(
            outcome(&mut b, &to, 4 * S),
            Outcome::Changed {
                from: 5,
                to: 2,
                limited: Some(Hold::AtMin)
            }
        );
        // Other targets are untouched.
        assert_eq!(b.view(&target("cart"), 4 * S).desired, 2);
    }

    #[test]
    fn the_policy_holds_as_for_the_kubernetes_exporter() {
        let mut b = board(1, 10);
        b.scaler = Scaler::new(ScalerSettings {
            policy: Policy {
                cooldown: Duration::from_secs(30),
                ..b.settings().policy
            },
            ..b.settings().clone()
        });
        let up = decision("checkout", ScaleChange::Step(1));
        assert!(matches!(
            outcome(&mut b, &up, 0),
            Outcome::Changed { to: 2, .. }
        ));
        assert_eq!(outcome(&mut b, &up, 10 * S), Outcome::Held(Hold::Cooldown));
        assert!(matches!(
            outcome(&mut b, &up, 30 * S),
            Outcome::Changed { to: 3, .. }
        ));
    }

    #[test]
    fn refusals_leave_no_state() {
        let mut b = board(1, 1);
        let other = Decision {
            target: Target {
                namespace: "kube-system".into(),
                ..target("coredns")
            },
            ..decision("coredns", ScaleChange::Step(1))
        };
        assert_eq!(
            outcome(&mut b, &other, 0),
            Outcome::Refused(Refusal::NotAllowed)
        );
        let stale = Decision {
            timestamp_unix_nano: WALL - 31 * S,
            ..decision("checkout", ScaleChange::Step(1))
        };
        assert_eq!(outcome(&mut b, &stale, 0), Outcome::Refused(Refusal::Stale));
        let vertical = Decision {
            resources: Some(ContainerResources::default()),
            ..decision("checkout", ScaleChange::Step(0))
        };
        assert_eq!(outcome(&mut b, &vertical, 0), Outcome::Vertical);
        assert!(b.is_empty());
        // max_targets = 1: the second target is refused, the first still moves.
        let up = decision("checkout", ScaleChange::Step(1));
        assert!(matches!(outcome(&mut b, &up, 0), Outcome::Changed { .. }));
        assert_eq!(
            outcome(&mut b, &decision("cart", ScaleChange::Step(1)), 0),
            Outcome::Refused(Refusal::TooManyTargets)
        );
        assert!(matches!(outcome(&mut b, &up, S), Outcome::Changed { .. }));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn activity_follows_the_count_and_a_window_after_each_scale_up() {
        let mut b = board(0, 10);
        let t = target("checkout");
        assert!(!b.view(&t, 0).active, "a floor of zero starts inactive");
        let up = b.apply(&decision("checkout", ScaleChange::Step(1)), S, WALL);
        assert_eq!(up.activity, Some(true));
        let down = b.apply(&decision("checkout", ScaleChange::Step(-1)), 2 * S, WALL);
        assert!(matches!(down.outcome, Outcome::Changed { to: 0, .. }));
        // At zero, but within a minute of the scale-up: still active.
        assert_eq!(down.activity, None);
        assert!(b.view(&t, 2 * S).active);
        assert_eq!(b.next_expiry(2 * S), Some(61 * S));
        assert!(b.expire(60 * S).is_empty());
        assert_eq!(b.expire(61 * S), vec![(t.to_string(), false)]);
        assert!(!b.view(&t, 61 * S).active);
        assert_eq!(b.next_expiry(61 * S), None);
        // A scale-up the policy holds (at max, here) still wakes the target for a window.
        let mut capped = board(0, 10);
        capped.scaler = Scaler::new(ScalerSettings {
            policy: Policy {
                max_replicas: 0,
                ..capped.settings().policy
            },
            ..capped.settings().clone()
        });
        let held = capped.apply(&decision("checkout", ScaleChange::Step(1)), S, WALL);
        assert_eq!(held.outcome, Outcome::Held(Hold::AtMax));
        assert_eq!(held.activity, Some(true));
        assert_eq!(capped.expire(61 * S), vec![(t.to_string(), false)]);
    }

    #[test]
    fn a_floor_of_one_or_more_is_always_active() {
        let mut b = board(1, 10);
        let t = target("checkout");
        assert!(b.view(&t, 0).active);
        b.apply(&decision("checkout", ScaleChange::Step(1)), 0, WALL);
        let down = b.apply(&decision("checkout", ScaleChange::Step(-1)), S, WALL);
        assert_eq!(down.activity, None);
        assert!(b.expire(3600 * S).is_empty());
        assert_eq!(b.next_expiry(3600 * S), None);
    }
}
