//! The exporter's worker: the task that talks to the API. It takes the pending decisions, plans
//! each with the scaling policy, patches the scale (or the pod template, for a vertical
//! decision) with the read `resourceVersion` as precondition, records the Event, and backs off
//! while the API is unavailable.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::{Backoff, BackoffPolicy, Jitter, Spread};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracescale_core::component::HealthHandle;
use tracescale_core::signal::{ContainerResources, Decision, Target, now_unix_nano};
use tracescale_core::words::count;
use tracing::{debug, error, info, warn};

use super::api::{self, ApiError, KubeApi};
use super::autoscalers::{self, Check, Conflicts};
use super::config::{ApiSettings, OnConflict};
use super::lease::Leadership;
use super::{Shared, acting};
use crate::scaling::{Hold, Plan, Refusal, ScaleMetrics, Scaler, explain};

/// The task that talks to the API.
pub(super) struct Worker {
    pub(super) api: KubeApi,
    pub(super) settings: ApiSettings,
    pub(super) scaler: Scaler,
    pub(super) shared: Arc<Shared>,
    pub(super) metrics: ScaleMetrics,
    pub(super) health: HealthHandle,
    pub(super) component: String,
    pub(super) epoch: Instant,
    /// `(target, reason)` pairs already logged at error level: a 403 is said once, not per
    /// decision, until the target succeeds again.
    pub(super) reported: HashSet<(Target, &'static str)>,
    pub(super) leadership: Option<Leadership>,
    /// The allowed workloads another autoscaler scales; `None` until the HPAs could be listed.
    pub(super) conflicts: Option<Conflicts>,
    /// The HPAs could not be listed yet (the API did not answer), and that was said.
    pub(super) conflicts_pending_said: bool,
}

/// How a pass over the pending decisions ended.
enum Pass {
    Done,
    /// The API failed; wait this long before the next pass.
    Unavailable(Duration),
}

impl Worker {
    pub(super) async fn run(mut self, drain: CancellationToken) {
        // Waits between passes while the API fails: doubling up to `max_backoff`, each up to
        // a quarter shorter so that many exporters do not retry in step.
        let mut backoff = Backoff::new(BackoffPolicy {
            initial: self.settings.initial_backoff,
            max: self.settings.max_backoff,
            multiplier: 2.0,
            spread: Spread::shorter(0.25),
        });
        let mut jitter = Jitter::from_entropy();
        let mut retry_at: Option<Instant> = None;
        self.check_autoscalers().await;
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
                    backoff.reset();
                }
                Pass::Unavailable(server_wait) => {
                    let wait = backoff.next(&mut jitter, Some(server_wait));
                    retry_at = Some(Instant::now() + wait);
                    let held = self.shared.lock().len() as u64;
                    self.health.not_ready(format!(
                        "kubernetes API unavailable; holding {}, retrying in {wait:?}",
                        count(held, "decision")
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
        if self.conflicts.is_none() {
            self.check_autoscalers().await;
        }
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
            if self.settings.on_conflict == OnConflict::Refuse
                && let Some(other) = self.conflicts.as_ref().and_then(|c| c.of(&d.target))
            {
                self.metrics.refused(Refusal::OtherAutoscaler);
                debug!(component = %self.component, target = %d.target, rule = %d.rule,
                    autoscaler = %other, "refused a decision: another autoscaler scales the target");
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

    /// Lists the HorizontalPodAutoscalers of the allowed namespaces and says, once per
    /// workload, which allowed workload another autoscaler scales too.
    async fn check_autoscalers(&mut self) {
        let (conflicts, forbidden) = match autoscalers::check(
            &self.api,
            &self.scaler.settings().allow,
        )
        .await
        {
            Check::Listed {
                conflicts,
                forbidden,
            } => (conflicts, forbidden),
            Check::Unavailable(detail) => {
                if !std::mem::replace(&mut self.conflicts_pending_said, true) {
                    info!(component = %self.component, %detail,
                            "could not list HorizontalPodAutoscalers yet; other autoscalers on the allowed workloads are checked once the API answers");
                }
                return;
            }
        };
        if !forbidden.is_empty() {
            let namespaces = if forbidden.iter().any(String::is_empty) {
                "any namespace".to_string()
            } else {
                format!("namespace(s) {}", forbidden.join(", "))
            };
            info!(component = %self.component,
                "not checking for other autoscalers (HPA, KEDA) on the allowed workloads: the service account may not \"list\" horizontalpodautoscalers in API group autoscaling in {namespaces}; grant it to have them checked");
        }
        let refuse = self.settings.on_conflict == OnConflict::Refuse;
        for other in conflicts.sorted() {
            let what = if refuse {
                "its decisions are refused (on_conflict = \"refuse\")"
            } else {
                "the two will undo each other's changes; let one of them own the workload, or set on_conflict = \"refuse\""
            };
            warn!(component = %self.component, target = %other.target,
                "{other} also scales {}: {what}", other.target);
        }
        metrics::gauge!("tracescale_scale_other_autoscalers", "component" => self.component.clone())
            .set(conflicts.len() as f64);
        self.conflicts = Some(conflicts);
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
