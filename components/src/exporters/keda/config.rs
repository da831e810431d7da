//! Config of the `keda` exporter.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tracescale_core::component::{BuildContext, Exporter};
use tracescale_core::config::{BuildError, HumanDuration};

use super::KedaExporter;
use crate::scaling::{Keys, PolicyConfig, ScalerSettings, TargetConfig};

/// Most StreamIsActive streams `max_streams` may allow.
pub const MAX_STREAMS: usize = 100_000;

/// Config of the `keda` exporter. See README.md for the behaviour of each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KedaConfig {
    /// Where KEDA's operator connects: the gRPC listener of the external scaler protocol.
    #[serde(default = "default_endpoint")]
    pub endpoint: SocketAddr,
    /// The workloads KEDA may ask about and decisions may move, as `namespace/kind/name`
    /// patterns (`*` matches a whole segment). Required.
    pub allow: Vec<String>,
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
    /// How long a decision that asked to scale a target up keeps it active, even at zero.
    #[serde(default = "default_activity_window")]
    pub activity_window: HumanDuration,
    /// Most StreamIsActive streams open at once, over all clients; more are refused.
    #[serde(default = "default_max_streams")]
    pub max_streams: usize,
}

fn default_endpoint() -> SocketAddr {
    // KEDA's own external-scaler examples listen on 6000; loopback until the operator opens it,
    // as the OTLP receiver does.
    SocketAddr::from(([127, 0, 0, 1], 6000))
}
fn default_max_decision_age() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_max_targets() -> usize {
    1000
}
fn default_activity_window() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_max_streams() -> usize {
    1000
}

/// The validated settings of the gRPC side.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// `endpoint`.
    pub endpoint: SocketAddr,
    /// `activity_window`.
    pub activity_window: Duration,
    /// `max_streams`.
    pub max_streams: usize,
}

impl KedaConfig {
    /// Validates every key, reporting each problem at its key path.
    pub fn validate(
        &self,
        ctx: &BuildContext<'_>,
    ) -> Result<(ScalerSettings, ServeSettings), BuildError> {
        let mut errors = Vec::new();
        if self.allow.is_empty() {
            errors.push(ctx.invalid(
                "allow",
                "list the workloads KEDA may ask about, for example [\"shop/deployment/*\"]; an empty list would refuse every request",
            ));
        }
        if !(1..=MAX_STREAMS).contains(&self.max_streams) {
            errors.push(ctx.invalid(
                "max_streams",
                format!("must be between 1 and {MAX_STREAMS}"),
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
        let settings = match scaling {
            Ok(s) if errors.is_empty() => s,
            Ok(_) => return Err(BuildContext::errors(errors)),
            Err(e) => {
                errors.push(e);
                return Err(BuildContext::errors(errors));
            }
        };
        Ok((
            settings,
            ServeSettings {
                endpoint: self.endpoint,
                activity_window: self.activity_window.get(),
                max_streams: self.max_streams,
            },
        ))
    }
}

/// The factory's build function.
pub(super) fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    let config: KedaConfig = ctx.parse()?;
    let (settings, serve) = config.validate(ctx)?;
    Ok(Box::new(KedaExporter::new(settings, serve)))
}
