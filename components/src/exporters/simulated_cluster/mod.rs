//! The `simulated_cluster` exporter: the `kubernetes` exporter's allow-list and policy over the
//! workloads of a `simulated_traces` receiver, on simulated time. For the demo and the scaling
//! evaluation. See README.md.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use tracescale_core::component::{BuildContext, ComponentError, Exporter, ExporterContext};
use tracescale_core::config::{BuildError, HumanDuration, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind, Target};
use tracing::{debug, info, warn};

use crate::scaling::{
    Hold, Keys, Plan, PolicyConfig, Refusal, ScaleMetrics, Scaler, ScalerSettings, TargetConfig,
    explain,
};
use crate::simulation::{ServiceView, SimCluster, cluster};

/// Config of the `simulated_cluster` exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedClusterConfig {
    /// The `cluster` of the `simulated_traces` receiver whose workloads this scales.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// The workloads this exporter may scale, as `namespace/kind/name` patterns.
    #[serde(default = "default_allow")]
    pub allow: Vec<String>,
    /// Decisions older than this on simulated time are refused as stale.
    #[serde(default = "default_max_decision_age")]
    pub max_decision_age: HumanDuration,
    /// The scaling policy, as for the `kubernetes` exporter.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Per-target bounds over the policy's.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Most distinct targets kept in memory.
    #[serde(default = "default_max_targets")]
    pub max_targets: usize,
}

fn default_cluster() -> String {
    "default".to_string()
}
fn default_allow() -> Vec<String> {
    vec!["*/*/*".to_string()]
}
fn default_max_decision_age() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_max_targets() -> usize {
    1000
}

/// Scales simulated services.
pub struct SimulatedCluster {
    /// The shared state, looked up once: the registry is process-wide and locked.
    cluster: Arc<SimCluster>,
    scaler: Scaler,
    metrics: Option<ScaleMetrics>,
    component: String,
}

impl SimulatedCluster {
    fn service_of(&self, target: &Target, namespace: &str) -> Option<String> {
        (target.namespace == namespace).then(|| target.name.clone())
    }
}

/// A target reaches a simulated service only through the service's workload kind:
/// `statefulset/db` for a StatefulSet, `deployment/worker` for a Deployment.
/// A planned change within the simulated workload's own replica bounds, as a workload's
/// minimum or a quota would keep it: one they refuse entirely is held, so that no change is
/// recorded and no cooldown starts for a change that did not happen.
fn within_bounds(plan: Plan, (min, max): (u32, u32)) -> Plan {
    let Plan::Change { from, to, limited } = plan else {
        return plan;
    };
    let bounded = to.clamp(min, max.max(min));
    let at = if bounded < to {
        Hold::AtMax
    } else {
        Hold::AtMin
    };
    if bounded == from {
        Plan::Hold(at)
    } else {
        Plan::Change {
            from,
            to: bounded,
            limited: if bounded == to { limited } else { Some(at) },
        }
    }
}

fn reaches(target: &Target, view: &ServiceView) -> bool {
    target.kind.eq_ignore_ascii_case(view.kind.as_str())
}

#[async_trait]
impl Exporter for SimulatedCluster {
    async fn start(&mut self, ctx: &ExporterContext) -> Result<(), ComponentError> {
        self.component = ctx.id.to_string();
        self.metrics = Some(ScaleMetrics::new(&self.component));
        ctx.health.ready(None);
        Ok(())
    }

    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError> {
        let Signal::Decisions(decisions) = signal else {
            return Ok(());
        };
        for d in decisions {
            let mut state = self.cluster.lock();
            let metrics = self.metrics.as_ref();
            if let Err(r) = self.scaler.screen(&d, state.unix_now()) {
                if let Some(m) = metrics {
                    m.refused(r);
                };
                if r == Refusal::NotAllowed {
                    warn!(component = %self.component, target = %d.target,
                        "refused a decision for a target that is not in `allow`");
                }
                continue;
            }
            if d.resources.is_some() {
                // The simulation models replicas, not container sizes.
                if let Some(m) = metrics {
                    m.failed("vertical_unsupported");
                }
                continue;
            }
            let Some(service) = self.service_of(&d.target, &state.namespace) else {
                if let Some(m) = metrics {
                    m.failed("not_found");
                };
                continue;
            };
            let Some(view) = state
                .services
                .get(&service)
                .copied()
                .filter(|v| reaches(&d.target, v))
            else {
                if let Some(m) = metrics {
                    m.failed("not_found");
                };
                debug!(component = %self.component, target = %d.target,
                    "no such simulated workload");
                continue;
            };
            // A change asked for but not yet applied counts as the current count.
            let current = state
                .requests
                .iter()
                .rev()
                .find(|r| r.0 == service)
                .map_or(view.desired, |r| r.1);
            let now = state.now;
            let plan = self
                .scaler
                .plan(&d, now, current)
                .map(|p| within_bounds(p, view.bounds));
            match plan {
                Err(r) => {
                    if let Some(m) = metrics {
                        m.refused(r);
                    }
                }
                Ok(Plan::Hold(h)) => {
                    if let Some(m) = metrics {
                        m.held(h);
                    };
                    debug!(component = %self.component, target = %d.target,
                        reason = h.as_str(), "held a decision");
                }
                Ok(Plan::Change { from, to, limited }) => {
                    let message = explain(&d, from, to, limited);
                    self.scaler.record_change(&d.target, now, from, to);
                    if let Some(m) = metrics {
                        m.changed(&d.target, from, to);
                    };
                    info!(component = %self.component, target = %d.target, rule = %d.rule,
                        from, to, simulated_seconds = now / 1_000_000_000, "{message}");
                    state.requests.push((service, to, d.rule.clone(), message));
                }
            }
        }
        Ok(())
    }

    fn accepts_target(&self, target: &Target) -> Option<bool> {
        Some(self.scaler.settings().allow.allows(target))
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    let config: SimulatedClusterConfig = ctx.parse()?;
    let settings: ScalerSettings = Keys {
        allow: &config.allow,
        policy: &config.policy,
        targets: &config.targets,
        max_decision_age: config.max_decision_age,
        max_targets: config.max_targets,
    }
    .validate(ctx)?;
    if config.cluster.trim().is_empty() {
        return Err(ctx.invalid("cluster", "must not be empty"));
    }
    Ok(Box::new(SimulatedCluster {
        cluster: cluster(&config.cluster),
        scaler: Scaler::new(settings),
        metrics: None,
        component: String::new(),
    }))
}

inventory::submit! {
    ComponentFactory {
        type_name: "simulated_cluster",
        description: "applies scale decisions to a simulated_traces receiver's services, with the kubernetes exporter's policy",
        takes: &[SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<SimulatedClusterConfig>,
        build: Build::Exporter(build),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulation::WorkloadKind;

    fn target(kind: &str, name: &str) -> Target {
        Target {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "shop".into(),
        }
    }

    fn view(kind: WorkloadKind) -> ServiceView {
        ServiceView {
            desired: 1,
            ready: 1,
            kind,
            bounds: (1, 10),
        }
    }

    #[test]
    fn a_change_the_workloads_bounds_refuse_is_held_and_one_they_cut_is_limited() {
        let change = |from, to| Plan::Change {
            from,
            to,
            limited: None,
        };
        assert_eq!(within_bounds(change(2, 1), (2, 8)), Plan::Hold(Hold::AtMin));
        assert_eq!(
            within_bounds(change(8, 12), (2, 8)),
            Plan::Hold(Hold::AtMax)
        );
        assert_eq!(
            within_bounds(change(4, 1), (2, 8)),
            Plan::Change {
                from: 4,
                to: 2,
                limited: Some(Hold::AtMin)
            }
        );
        assert_eq!(
            within_bounds(change(2, 12), (2, 8)),
            Plan::Change {
                from: 2,
                to: 8,
                limited: Some(Hold::AtMax)
            }
        );
        assert_eq!(within_bounds(change(2, 5), (2, 8)), change(2, 5));
        assert_eq!(
            within_bounds(Plan::Hold(Hold::Cooldown), (2, 8)),
            Plan::Hold(Hold::Cooldown)
        );
    }

    #[test]
    fn a_target_reaches_a_service_only_through_its_kind() {
        let db = view(WorkloadKind::StatefulSet);
        let worker = view(WorkloadKind::Deployment);
        assert!(reaches(&target("StatefulSet", "db"), &db));
        assert!(!reaches(&target("Deployment", "db"), &db));
        assert!(reaches(&target("Deployment", "worker"), &worker));
        assert!(!reaches(&target("StatefulSet", "worker"), &worker));
        assert_eq!(
            target("StatefulSet", "db").to_string(),
            "shop/statefulset/db"
        );
    }
}
