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
pub mod config;
pub mod lease;
pub mod testing;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracescale_core::component::{ComponentError, Exporter, ExporterContext, HealthHandle};
use tracescale_core::config::field_names;
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{
    ContainerResources, Decision, Signal, SignalKind, Target, now_unix_nano,
};
use tracing::{debug, error, info, warn};

use crate::scaling::{Hold, Plan, Refusal, ScaleMetrics, Scaler, Settings, explain};
use api::{ApiError, KubeApi};
pub use config::{ApiSettings, KubernetesConfig};
use lease::{Elector, Leadership, Standby};

/// Scales Kubernetes workloads through their scale subresource.
pub struct KubernetesExporter {
    settings: Settings,
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
    pending: Mutex<HashMap<Target, Decision>>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Target, Decision>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KubernetesExporter {
    /// An exporter for validated settings; nothing connects before `start`.
    pub fn new(settings: Settings, api: ApiSettings) -> Self {
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

/// The task that talks to the API.
struct Worker {
    api: KubeApi,
    settings: ApiSettings,
    scaler: Scaler,
    shared: Arc<Shared>,
    metrics: ScaleMetrics,
    health: HealthHandle,
    component: String,
    epoch: Instant,
    /// `(target, reason)` pairs already logged at error level: a 403 is said once, not per
    /// decision, until the target succeeds again.
    reported: HashSet<(Target, &'static str)>,
    leadership: Option<Leadership>,
}

/// How a pass over the pending decisions ended.
enum Pass {
    Done,
    /// The API failed; wait this long before the next pass.
    Unavailable(Duration),
}

impl Worker {
    async fn run(mut self, drain: CancellationToken) {
        let mut backoff = self.settings.initial_backoff;
        let mut retry_at: Option<Instant> = None;
        loop {
            // Cancel safety: `notified` and `sleep_until` lose nothing when dropped; pending
            // decisions stay in the shared map until a pass takes them.
            let draining = match retry_at {
                Some(at) => tokio::select! {
                    () = tokio::time::sleep_until(at) => false,
                    () = drain.cancelled() => true,
                },
                None => tokio::select! {
                    () = self.shared.notify.notified() => false,
                    () = drain.cancelled() => true,
                },
            };
            match self.pass().await {
                Pass::Done => {
                    if retry_at.take().is_some() {
                        self.health.ready(None);
                        info!(component = %self.component, "kubernetes API reachable again");
                    }
                    backoff = self.settings.initial_backoff;
                }
                Pass::Unavailable(server_wait) => {
                    let wait = jitter(backoff).max(server_wait);
                    backoff = (backoff * 2).min(self.settings.max_backoff);
                    retry_at = Some(Instant::now() + wait);
                    let held = self.shared.lock().len();
                    self.health.not_ready(format!(
                        "kubernetes API unavailable; holding {held} decision(s), retrying in {wait:?}"
                    ));
                }
            }
            if draining {
                return;
            }
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    async fn pass(&mut self) -> Pass {
        let batch: Vec<Decision> = self.shared.lock().drain().map(|(_, d)| d).collect();
        let mut batch = batch.into_iter();
        while let Some(d) = batch.next() {
            if acting(self.leadership.as_ref()).is_err() {
                // Leadership was lost since the decision came in: the new leader acts.
                self.metrics.refused(Refusal::Standby);
                continue;
            }
            if let Err(r) = self.scaler.screen(&d, now_unix_nano()) {
                self.metrics.refused(r);
                continue;
            }
            match self.apply(&d).await {
                Ok(()) => {
                    self.reported.retain(|(t, _)| *t != d.target);
                }
                Err(ApiError::Transient {
                    detail,
                    retry_after,
                }) => {
                    self.metrics.retried("unavailable");
                    warn!(component = %self.component, target = %d.target, %detail,
                        "kubernetes API unavailable; holding the decision");
                    // Hand this and the rest back, unless a newer decision arrived meanwhile.
                    let mut pending = self.shared.lock();
                    for d in std::iter::once(d).chain(batch) {
                        pending.entry(d.target.clone()).or_insert(d);
                    }
                    return Pass::Unavailable(retry_after.unwrap_or_default());
                }
                Err(e) => {
                    self.metrics.failed(e.reason());
                    if self.reported.len() < self.scaler.settings().max_targets
                        && self.reported.insert((d.target.clone(), e.reason()))
                    {
                        error!(component = %self.component, target = %d.target, rule = %d.rule,
                            error = %e, "cannot scale the target");
                    } else {
                        debug!(component = %self.component, target = %d.target, error = %e,
                            "cannot scale the target");
                    }
                }
            }
        }
        Pass::Done
    }

    async fn apply(&mut self, d: &Decision) -> Result<(), ApiError> {
        if let Some(want) = &d.resources {
            return self.apply_vertical(d, want).await;
        }
        let t = &d.target;
        for _ in 0..=self.settings.conflict_retries {
            let state = self.api.get_scale(t).await?;
            let now = self.now();
            let plan = match self.scaler.plan(d, now, state.replicas) {
                Ok(plan) => plan,
                Err(r) => {
                    self.metrics.refused(r);
                    return Ok(());
                }
            };
            let (from, to, limited) = match plan {
                Plan::Hold(h) => {
                    self.metrics.held(h);
                    self.metrics
                        .replicas(t, state.replicas, d.change.desired(state.replicas));
                    debug!(component = %self.component, target = %t, rule = %d.rule,
                        replicas = state.replicas, reason = h.as_str(), "held a decision");
                    return Ok(());
                }
                Plan::Change { from, to, limited } => (from, to, limited),
            };
            let message = explain(d, from, to, limited);
            if self.settings.dry_run {
                self.scaler.record_change(t, now, from, to);
                self.metrics.changed(t, from, to);
                info!(component = %self.component, target = %t, rule = %d.rule, from, to,
                    dry_run = true, "{message}");
                return Ok(());
            }
            match self
                .api
                .patch_scale(t, to, state.resource_version.as_deref())
                .await
            {
                Ok(applied) => {
                    self.scaler.record_change(t, now, from, applied);
                    self.metrics.changed(t, from, applied);
                    info!(component = %self.component, target = %t, rule = %d.rule, from,
                        to = applied, "{message}");
                    self.record_event(t, state.uid, api::EVENT_REASON, &message)
                        .await;
                    return Ok(());
                }
                Err(ApiError::Conflict) => {
                    self.metrics.retried("conflict");
                    debug!(component = %self.component, target = %t,
                        "409 Conflict; reading the scale again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::Rejected(format!(
            "still conflicting after {} re-reads",
            self.settings.conflict_retries
        )))
    }
}

impl Worker {
    /// Records the Event of an applied change, if `events` is on. A refusal leaves the change
    /// standing: it is counted and said once per target.
    async fn record_event(&mut self, t: &Target, uid: Option<String>, reason: &str, message: &str) {
        if !self.settings.events {
            return;
        }
        if let Err(e) = self.api.event_with_reason(t, uid, reason, message).await {
            self.metrics.failed_event();
            if self.reported.insert((t.clone(), "event")) {
                warn!(component = %self.component, target = %t, error = %e,
                    "changed the workload, but could not record the Event");
            }
        }
    }

    /// A vertical decision: the same rails (allow-list and age were checked on the way in;
    /// cooldown, dry run, conditional patch, Event), applied to the pod template.
    async fn apply_vertical(
        &mut self,
        d: &Decision,
        want: &ContainerResources,
    ) -> Result<(), ApiError> {
        let t = &d.target;
        if !self.settings.vertical {
            self.metrics.failed("vertical_disabled");
            if self.reported.insert((t.clone(), "vertical_disabled")) {
                warn!(component = %self.component, target = %t, rule = %d.rule,
                    "refused a vertical decision: set `vertical = true` to allow resource changes");
            }
            return Ok(());
        }
        for _ in 0..=self.settings.conflict_retries {
            let (current, rv, uid) = self.api.get_container_resources(t, &want.container).await?;
            let now = self.now();
            if current.satisfies(want) {
                self.metrics.held(Hold::NoChange);
                return Ok(());
            }
            if self.scaler.cooling_down(t, now) {
                self.metrics.held(Hold::Cooldown);
                return Ok(());
            }
            let message = format!(
                "set container {:?} resources to {} (was {}): rule {:?}: {}",
                want.container,
                describe(&want.requests, &want.limits),
                describe(&current.requests, &current.limits),
                d.rule,
                d.reason
            );
            if self.settings.dry_run {
                self.scaler.record_vertical(t, now);
                info!(component = %self.component, target = %t, rule = %d.rule, dry_run = true,
                    "{message}");
                return Ok(());
            }
            match self
                .api
                .patch_container_resources(t, want, rv.as_deref())
                .await
            {
                Ok(()) => {
                    self.scaler.record_vertical(t, now);
                    self.metrics.resized();
                    info!(component = %self.component, target = %t, rule = %d.rule, "{message}");
                    self.record_event(t, uid, api::RESIZE_EVENT_REASON, &message)
                        .await;
                    return Ok(());
                }
                Err(ApiError::Conflict) => self.metrics.retried("conflict"),
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::Rejected(format!(
            "still conflicting after {} re-reads",
            self.settings.conflict_retries
        )))
    }
}

fn describe(
    requests: &std::collections::BTreeMap<String, String>,
    limits: &std::collections::BTreeMap<String, String>,
) -> String {
    let part = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (requests.is_empty(), limits.is_empty()) {
        (true, true) => "nothing".to_string(),
        (false, true) => format!("requests {}", part(requests)),
        (true, false) => format!("limits {}", part(limits)),
        (false, false) => format!("requests {}; limits {}", part(requests), part(limits)),
    }
}

/// Up to a quarter less than `d`, so that many exporters do not retry in step.
fn jitter(d: Duration) -> Duration {
    crate::backoff::jittered(d, crate::backoff::Spread::shorter(0.25))
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
