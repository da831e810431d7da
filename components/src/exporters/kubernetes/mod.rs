//! The `kubernetes` exporter: carries scale decisions out through the scale subresource of
//! Deployments, StatefulSets, ReplicaSets and any resource that serves `/scale`, within an
//! allow-list and the scaling policy, and explains every change with an Event and a log line.
//! See README.md for every key and the behaviour under faults.
//!
//! `export` never waits on the API: it screens each decision (allow-list, age), keeps the newest
//! per target and wakes a worker task. The worker reads the scale, plans with the policy,
//! patches with the read `resourceVersion` as precondition, and records the Event. While the API
//! is unreachable or throttling, the worker holds the newest decision per target and retries
//! with exponential backoff, and `/readyz` says so; when the API returns, the newest decision
//! that is still fresh is applied once.

pub mod api;
mod autoscalers;
pub mod config;
pub mod lease;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_autoscalers;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracescale_core::component::{ComponentError, Exporter, ExporterContext};
use tracescale_core::config::field_names;
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Decision, Signal, SignalKind, Target, now_unix_nano};
use tracing::{debug, warn};

use crate::scaling::{Refusal, ScaleMetrics, Scaler, ScalerSettings};
use api::KubeApi;
pub use config::{ApiSettings, KubernetesConfig};
use lease::{Elector, Leadership, Standby};
use worker::Worker;

/// Scales Kubernetes workloads through their scale subresource.
pub struct KubernetesExporter {
    settings: ScalerSettings,
    api: ApiSettings,
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    drain: CancellationToken,
    metrics: Option<ScaleMetrics>,
    component: String,
    /// With `leader_election`: whether this replica may act, and the elector's task.
    leadership: Option<Leadership>,
    elector: Option<(JoinHandle<()>, CancellationToken)>,
}

/// What `export` hands the worker: the newest decision per target.
struct Shared {
    pub(super) pending: Mutex<HashMap<Target, Decision>>,
    pub(super) notify: Notify,
}

impl Shared {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Target, Decision>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KubernetesExporter {
    /// An exporter for validated settings; nothing connects before `start`.
    pub fn new(settings: ScalerSettings, api: ApiSettings) -> Self {
        Self {
            settings,
            api,
            shared: Arc::new(Shared {
                pending: Mutex::new(HashMap::new()),
                notify: Notify::new(),
            }),
            worker: None,
            drain: CancellationToken::new(),
            metrics: None,
            component: String::new(),
            leadership: None,
            elector: None,
        }
    }
}

/// Ok when this replica may change workloads: it holds the Lease and has settled, or there is
/// no election.
fn acting(leadership: Option<&Leadership>) -> Result<(), Standby> {
    leadership.map_or(Ok(()), Leadership::acting)
}

#[async_trait]
impl Exporter for KubernetesExporter {
    async fn start(&mut self, ctx: &ExporterContext) -> Result<(), ComponentError> {
        if self.worker.is_some() {
            return Ok(());
        }
        let client = api::connect(&self.api)
            .await
            .map_err(ComponentError::other)?;
        self.component = ctx.id.to_string();
        let metrics = ScaleMetrics::new(&self.component);
        self.metrics = Some(metrics.clone());
        ctx.health
            .ready(self.api.dry_run.then(|| "dry run".to_string()));
        if let Some(election) = self.api.leader_election.clone() {
            let (elector, leadership) = Elector::new(client.clone(), election, &self.component);
            let stop = CancellationToken::new();
            self.elector = Some((tokio::spawn(elector.run(stop.clone())), stop));
            self.leadership = Some(leadership);
        }
        let worker = Worker {
            api: KubeApi::new(client, self.api.request_timeout),
            settings: self.api.clone(),
            scaler: Scaler::new(self.settings.clone()),
            shared: self.shared.clone(),
            metrics,
            health: ctx.health.clone(),
            component: self.component.clone(),
            epoch: Instant::now(),
            reported: HashSet::new(),
            leadership: self.leadership.clone(),
            conflicts: None,
            conflicts_pending_said: false,
        };
        let drain = self.drain.clone();
        self.worker = Some(tokio::spawn(worker.run(drain)));
        Ok(())
    }

    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError> {
        let Signal::Decisions(decisions) = signal else {
            return Ok(());
        };
        let now = now_unix_nano();
        let standby = acting(self.leadership.as_ref()).err();
        let mut pending = self.shared.lock();
        for d in decisions {
            let screened = match &standby {
                // Another replica acts on its own copy of these decisions.
                Some(_) => Err(Refusal::Standby),
                None => self.settings.screen(&d, now),
            };
            if let Err(r) = screened {
                if let Some(m) = &self.metrics {
                    m.refused(r);
                }
                if r == Refusal::NotAllowed {
                    warn!(component = %self.component, target = %d.target, rule = %d.rule,
                        "refused a decision for a target that is not in `allow`");
                } else {
                    debug!(component = %self.component, target = %d.target, reason = r.as_str(),
                        "refused a decision");
                }
                continue;
            }
            if !pending.contains_key(&d.target) && pending.len() >= self.settings.max_targets {
                if let Some(m) = &self.metrics {
                    m.refused(Refusal::TooManyTargets);
                }
                continue;
            }
            if pending.insert(d.target.clone(), d).is_some()
                && let Some(m) = &self.metrics
            {
                m.superseded();
            }
        }
        drop(pending);
        self.shared.notify.notify_one();
        Ok(())
    }

    async fn shutdown(&mut self, deadline: Instant) -> Result<(), ComponentError> {
        self.drain.cancel();
        let Some(mut worker) = self.worker.take() else {
            return Ok(());
        };
        if tokio::time::timeout_at(deadline, &mut worker)
            .await
            .is_err()
        {
            worker.abort();
            let left = self.shared.lock().len();
            warn!(component = %self.component, pending = left,
                "shutdown deadline reached with decisions not applied");
            if let Some(m) = &self.metrics {
                for _ in 0..left {
                    m.failed("shutdown");
                }
            }
        }
        // The Lease is released only once this replica has stopped changing workloads.
        if let Some((mut elector, stop)) = self.elector.take() {
            stop.cancel();
            if tokio::time::timeout_at(deadline, &mut elector)
                .await
                .is_err()
            {
                elector.abort();
            }
        }
        Ok(())
    }

    fn accepts_target(&self, target: &Target) -> Option<bool> {
        Some(self.settings.allow.allows(target))
    }
}

inventory::submit! {
    ComponentFactory {
        type_name: "kubernetes",
        description: "scales Kubernetes workloads through the scale subresource, within an allow-list and a policy",
        takes: &[SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<KubernetesConfig>,
        build: Build::Exporter(config::build),
    }
}
