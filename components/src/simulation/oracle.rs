//! A bound, not a scaler: each fault phase's right target at its maximum from the moment the
//! phase starts until it ends, and at its starting count otherwise.
//!
//! It knows every fault as it begins, needs no detection, asks once and is not held by an
//! exporter's policy (cooldown, step or rate limits); what it cannot skip is what a scaler that
//! acts on the right target cannot skip either: the new replicas' start-up, and the backlog
//! that builds meanwhile and must drain. Its SLO-violation seconds are what perfect knowledge of
//! the faults buys from the right targets alone. A scaler can do better only with capacity it
//! holds before a fault (left over from an earlier one, or added to services a phase does not
//! name), never by reacting sooner.

use std::collections::BTreeMap;

use super::engine::Sim;
use super::records::{IntervalStats, ScaleAction};
use super::scenario::{FaultPhase, ReplicaController};

/// The right targets of a scenario's phases, each at its maximum while one of its phases lasts.
pub struct Oracle {
    phases: Vec<FaultPhase>,
    /// Right target → its replicas when the run began.
    initial: BTreeMap<String, u32>,
}

impl Oracle {
    /// The oracle of `phases`, on the simulator as it starts.
    pub fn new(sim: &Sim, phases: &[FaultPhase]) -> Self {
        let initial = phases
            .iter()
            .filter_map(|p| {
                sim.replicas(&p.right_target)
                    .map(|n| (p.right_target.clone(), n))
            })
            .collect();
        Self {
            phases: phases.to_vec(),
            initial,
        }
    }

    /// The replicas `service` should have at `now`.
    fn wanted(&self, sim: &Sim, service: &str, initial: u32, now: u64) -> u32 {
        let in_phase = self
            .phases
            .iter()
            .any(|p| p.right_target == service && p.start <= now && now < p.end);
        if in_phase {
            sim.replica_bounds(service).map_or(initial, |(_, max)| max)
        } else {
            initial
        }
    }
}

impl ReplicaController for Oracle {
    fn on_tick(&mut self, sim: &mut Sim, _closed: &[IntervalStats]) -> Vec<ScaleAction> {
        let now = sim.now();
        let mut actions = Vec::new();
        for (service, &initial) in &self.initial {
            let want = self.wanted(sim, service, initial, now);
            if sim.replicas(service) != Some(want)
                && let Ok(Some(action)) = sim.scale(service, want)
            {
                actions.push(action);
            }
        }
        actions
    }
}
