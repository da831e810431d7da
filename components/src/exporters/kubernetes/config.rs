//! Config of the `kubernetes` exporter.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tracescale_core::component::{BuildContext, Exporter};
use tracescale_core::config::{BuildError, HumanDuration};

use super::KubernetesExporter;
use super::lease::LeaseSettings;
use crate::scaling::{Keys, PolicyConfig, ScalerSettings, TargetConfig};

/// Config of the `kubernetes` exporter. See README.md for the behaviour of each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The workloads this exporter may scale, as `namespace/kind/name` patterns (`*` matches a
    /// whole segment). Required: a decision for anything else is refused and counted.
    pub allow: Vec<String>,
    /// A kubeconfig file to use instead of the in-cluster service account or `$KUBECONFIG`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its current one.
    #[serde(default)]
    pub context: Option<String>,
    /// Log and record what would be done without patching anything.
    #[serde(default)]
    pub dry_run: bool,
    /// Decisions older than this (by their timestamp) are refused as stale.
    #[serde(default = "default_max_decision_age")]
    pub max_decision_age: HumanDuration,
    /// The scaling policy: bounds, cooldown, tolerance, stabilisation and rate limits.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Per-target bounds over the policy's.
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Most distinct targets kept in memory; decisions for more are refused.
    #[serde(default = "default_max_targets")]
    pub max_targets: usize,
    /// Bound on each API call, including the client's own Retry-After waits.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// First wait after the API failed (unreachable, 429, 5xx); doubles up to `max_backoff`.
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: HumanDuration,
    /// Longest wait between attempts while the API fails.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: HumanDuration,
    /// Re-reads after a 409 Conflict before the decision fails.
    #[serde(default = "default_conflict_retries")]
    pub conflict_retries: u32,
    /// Record a Kubernetes Event (reason `TracescaleScaled`) on each changed workload.
    #[serde(default = "default_events")]
    pub events: bool,
    /// Carry out vertical decisions (rules with `scale.resources`): set container requests and
    /// limits in the workload's pod template. Off: such decisions are refused and counted.
    #[serde(default)]
    pub vertical: bool,
    /// Run several replicas: only the holder of a Lease changes workloads.
    #[serde(default)]
    pub leader_election: Option<LeaderElectionConfig>,
    /// What to do about an allowed workload that another autoscaler (a HorizontalPodAutoscaler,
    /// or KEDA through the one it creates) also scales: `warn` at start, or `refuse` its
    /// decisions too.
    #[serde(default)]
    pub on_conflict: OnConflict,
}

/// `on_conflict`: what the exporter does about a workload another autoscaler scales.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// Say so at start, one warning per workload, and scale it anyway.
    #[default]
    Warn,
    /// Say so at start, and refuse every decision for it (`refused{reason="other_autoscaler"}`).
    Refuse,
}

/// `leader_election`: the Lease that decides which replica acts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderElectionConfig {
    /// The Lease's name.
    #[serde(default = "default_lease_name")]
    pub lease: String,
    /// The Lease's namespace; unset: the kubeconfig's or the service account's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// This replica's identity; unset: `$HOSTNAME` (the pod's name), else host and pid.
    #[serde(default)]
    pub identity: Option<String>,
    /// How long a holder's last renewal keeps the others out.
    #[serde(default = "default_lease_duration")]
    pub lease_duration: HumanDuration,
    /// How long a leader goes on acting without renewing; shorter than `lease_duration`.
    #[serde(default = "default_renew_deadline")]
    pub renew_deadline: HumanDuration,
    /// How often the Lease is read, renewed or tried; shorter than `renew_deadline`.
    #[serde(default = "default_retry_period")]
    pub retry_period: HumanDuration,
}

fn default_lease_name() -> String {
    "tracescale".to_string()
}
// kube-controller-manager's defaults.
fn default_lease_duration() -> HumanDuration {
    HumanDuration::from_secs(15)
}
fn default_renew_deadline() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_retry_period() -> HumanDuration {
    HumanDuration::from_secs(2)
}

impl LeaderElectionConfig {
    fn validate(&self, ctx: &BuildContext<'_>, errors: &mut Vec<BuildError>) {
        let at = |key: &str| format!("leader_election.{key}");
        if self.lease.trim().is_empty() {
            errors.push(ctx.invalid(&at("lease"), "must not be empty"));
        }
        if self
            .identity
            .as_deref()
            .is_some_and(|i| i.trim().is_empty())
        {
            errors.push(ctx.invalid(&at("identity"), "must not be empty"));
        }
        if self
            .namespace
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            errors.push(ctx.invalid(&at("namespace"), "must not be empty"));
        }
        let (lease, renew, retry) = (
            self.lease_duration.get(),
            self.renew_deadline.get(),
            self.retry_period.get(),
        );
        if lease < Duration::from_secs(1) {
            errors.push(ctx.invalid(&at("lease_duration"), "must be at least 1s"));
        }
        if renew >= lease {
            errors.push(ctx.invalid(
                &at("renew_deadline"),
                format!(
                    "must be shorter than `lease_duration` ({}): a leader must stop before another may take over",
                    self.lease_duration
                ),
            ));
        }
        if retry.is_zero() || retry >= renew {
            errors.push(ctx.invalid(
                &at("retry_period"),
                format!(
                    "must be longer than 0s and shorter than `renew_deadline` ({})",
                    self.renew_deadline
                ),
            ));
        }
    }

    fn settings(&self, quiet_after_takeover: Duration) -> LeaseSettings {
        let identity = self.identity.clone().unwrap_or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("tracescale-{}", std::process::id()))
        });
        LeaseSettings {
            name: self.lease.clone(),
            namespace: self.namespace.clone(),
            identity,
            lease_duration: self.lease_duration.get(),
            renew_deadline: self.renew_deadline.get(),
            retry_period: self.retry_period.get(),
            quiet_after_takeover,
        }
    }
}

fn default_max_decision_age() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_max_targets() -> usize {
    1000
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_initial_backoff() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_max_backoff() -> HumanDuration {
    // The HPA's sync period: an API that comes back is used again within it, and one request
    // per 15 s is no load on a recovering API server.
    HumanDuration::from_secs(15)
}
fn default_conflict_retries() -> u32 {
    5
}
fn default_events() -> bool {
    true
}

/// The validated settings of the Kubernetes side.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `context`.
    pub context: Option<String>,
    /// `dry_run`.
    pub dry_run: bool,
    /// `request_timeout`.
    pub request_timeout: Duration,
    /// `initial_backoff`.
    pub initial_backoff: Duration,
    /// `max_backoff`.
    pub max_backoff: Duration,
    /// `conflict_retries`.
    pub conflict_retries: u32,
    /// `events`.
    pub events: bool,
    /// `vertical`.
    pub vertical: bool,
    /// `leader_election`, resolved; None: this replica always acts.
    pub leader_election: Option<LeaseSettings>,
    /// `on_conflict`.
    pub on_conflict: OnConflict,
}

impl KubernetesConfig {
    /// Validates every key, reporting each problem at its key path.
    pub fn validate(
        &self,
        ctx: &BuildContext<'_>,
    ) -> Result<(ScalerSettings, ApiSettings), BuildError> {
        let mut errors = Vec::new();
        if self.allow.is_empty() {
            errors.push(ctx.invalid(
                "allow",
                "list the workloads this exporter may scale, for example [\"shop/deployment/*\"]; an empty list would refuse every decision",
            ));
        }
        let scaling = Keys {
            allow: &self.allow,
            policy: &self.policy,
            targets: &self.targets,
            max_decision_age: self.max_decision_age,
            max_targets: self.max_targets,
        }
        .validate(ctx);
        if self.request_timeout.get().is_zero() {
            errors.push(ctx.invalid("request_timeout", "must be longer than 0s"));
        }
        if self.initial_backoff.get().is_zero() {
            errors.push(ctx.invalid("initial_backoff", "must be longer than 0s"));
        }
        if self.max_backoff.get() < self.initial_backoff.get() {
            errors.push(ctx.invalid(
                "max_backoff",
                format!(
                    "must be at least `initial_backoff` ({})",
                    self.initial_backoff
                ),
            ));
        }
        if self.context.as_deref().is_some_and(|c| c.trim().is_empty()) {
            errors.push(ctx.invalid("context", "must not be empty"));
        }
        if let Some(election) = &self.leader_election {
            election.validate(ctx, &mut errors);
        }
        let settings = match scaling {
            Ok(s) if errors.is_empty() => s,
            Ok(_) => return Err(BuildContext::errors(errors)),
            Err(e) => {
                errors.push(e);
                return Err(BuildContext::errors(errors));
            }
        };
        let leader_election = self
            .leader_election
            .as_ref()
            .map(|e| e.settings(settings.policy.cooldown));
        Ok((
            settings,
            ApiSettings {
                kubeconfig: self.kubeconfig.clone(),
                context: self.context.clone(),
                dry_run: self.dry_run,
                request_timeout: self.request_timeout.get(),
                initial_backoff: self.initial_backoff.get(),
                max_backoff: self.max_backoff.get(),
                conflict_retries: self.conflict_retries,
                events: self.events,
                vertical: self.vertical,
                leader_election,
                on_conflict: self.on_conflict,
            },
        ))
    }
}

/// The factory's build function.
pub(super) fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    let config: KubernetesConfig = ctx.parse()?;
    let (settings, api) = config.validate(ctx)?;
    Ok(Box::new(KubernetesExporter::new(settings, api)))
}
