//! The metrics every scale exporter (`kubernetes`, `simulated_cluster`) exports.

use std::collections::HashMap;

use metrics::Counter;
use tracescale_core::signal::Target;

use super::{Hold, Refusal};

/// The metrics every scale exporter exports, registered once.
#[derive(Clone)]
pub struct ScaleMetrics {
    component: String,
    refused: HashMap<Refusal, Counter>,
    held: HashMap<Hold, Counter>,
    changes_up: Counter,
    changes_down: Counter,
    superseded: Counter,
    event_failures: Counter,
}

impl ScaleMetrics {
    /// Registers the counters of the exporter `component`.
    pub fn new(component: &str) -> Self {
        describe();
        let refused = Refusal::ALL
            .into_iter()
            .map(|r| {
                let c = metrics::counter!(
                    "tracescale_scale_decisions_refused_total",
                    "component" => component.to_string(),
                    "reason" => r.as_str()
                );
                (r, c)
            })
            .collect();
        let held = Hold::ALL
            .into_iter()
            .map(|h| {
                let c = metrics::counter!(
                    "tracescale_scale_decisions_held_total",
                    "component" => component.to_string(),
                    "reason" => h.as_str()
                );
                (h, c)
            })
            .collect();
        let change = |direction: &'static str| {
            metrics::counter!(
                "tracescale_scale_changes_total",
                "component" => component.to_string(),
                "direction" => direction
            )
        };
        Self {
            component: component.to_string(),
            refused,
            held,
            changes_up: change("up"),
            changes_down: change("down"),
            superseded: metrics::counter!(
                "tracescale_scale_decisions_superseded_total",
                "component" => component.to_string()
            ),
            event_failures: metrics::counter!(
                "tracescale_scale_event_failures_total",
                "component" => component.to_string()
            ),
        }
    }

    /// Counts a refused decision.
    pub fn refused(&self, r: Refusal) {
        if let Some(c) = self.refused.get(&r) {
            c.increment(1);
        }
    }

    /// Counts a held decision.
    pub fn held(&self, h: Hold) {
        if let Some(c) = self.held.get(&h) {
            c.increment(1);
        }
    }

    /// Counts a change (applied, or in dry run what would have been) and publishes the
    /// target's replicas.
    pub fn changed(&self, target: &Target, from: u32, to: u32) {
        if to > from {
            self.changes_up.increment(1);
        } else {
            self.changes_down.increment(1);
        }
        self.replicas(target, to, to);
    }

    /// Counts a vertical change (container resources set).
    pub fn resized(&self) {
        metrics::counter!(
            "tracescale_scale_resizes_total",
            "component" => self.component.clone()
        )
        .increment(1);
    }

    /// Counts a decision replaced by a newer one for the same target before it was applied.
    pub fn superseded(&self) {
        self.superseded.increment(1);
    }

    /// Counts an Event that could not be recorded (the change itself was applied).
    pub fn failed_event(&self) {
        self.event_failures.increment(1);
    }

    /// Counts a retried API call, by reason (`conflict`, `unavailable`).
    pub fn retried(&self, reason: &'static str) {
        metrics::counter!(
            "tracescale_scale_api_retries_total",
            "component" => self.component.clone(),
            "reason" => reason
        )
        .increment(1);
    }

    /// Counts a failed decision, by reason (`forbidden`, `not_found`, `unreachable`, …).
    /// Failures are rare; the labelled counter is looked up per call.
    pub fn failed(&self, reason: &'static str) {
        metrics::counter!(
            "tracescale_scale_decisions_failed_total",
            "component" => self.component.clone(),
            "reason" => reason
        )
        .increment(1);
    }

    /// Publishes the replicas a target has and the replicas last asked for. The label set is
    /// bounded by `max_targets`.
    pub fn replicas(&self, target: &Target, current: u32, desired: u32) {
        let t = target.to_string();
        metrics::gauge!(
            "tracescale_scale_current_replicas",
            "component" => self.component.clone(),
            "target" => t.clone()
        )
        .set(f64::from(current));
        metrics::gauge!(
            "tracescale_scale_desired_replicas",
            "component" => self.component.clone(),
            "target" => t
        )
        .set(f64::from(desired));
    }
}

/// HELP text for `/metrics`, for every exporter that scales.
fn describe() {
    tracescale_core::telemetry::describe(
        &[
            (
                "tracescale_scale_changes_total",
                "Changes applied (or, in dry run, that would have been), by direction.",
            ),
            (
                "tracescale_scale_decisions_refused_total",
                "Decisions refused before planning, by reason.",
            ),
            (
                "tracescale_scale_decisions_held_total",
                "Decisions the policy held, by reason.",
            ),
            (
                "tracescale_scale_decisions_superseded_total",
                "Decisions replaced by a newer one for the same target before being applied.",
            ),
            (
                "tracescale_scale_decisions_failed_total",
                "Decisions that failed, by reason.",
            ),
            (
                "tracescale_scale_api_retries_total",
                "API calls retried, by reason.",
            ),
            (
                "tracescale_scale_resizes_total",
                "Vertical changes applied (container resources set).",
            ),
            (
                "tracescale_scale_event_failures_total",
                "Kubernetes Events that could not be recorded.",
            ),
        ],
        &[
            (
                "tracescale_scale_current_replicas",
                "Replicas the workload has, as last read or set.",
            ),
            (
                "tracescale_scale_desired_replicas",
                "Replicas the last decision asked for, before the policy.",
            ),
            (
                "tracescale_scale_leader",
                "With leader_election: 1 while this replica holds the Lease and acts.",
            ),
            (
                "tracescale_scale_other_autoscalers",
                "Allowed workloads another autoscaler (HPA, KEDA) was found to scale at start.",
            ),
        ],
        &[],
    );
}
