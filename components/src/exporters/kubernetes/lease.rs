//! Leader election through a `coordination.k8s.io/v1` Lease, the way kube-controller-manager
//! does it, so that several tracescale replicas can run and only one of them changes
//! workloads.
//!
//! Every `retry_period` the elector reads the Lease. Holding it, it renews it. Finding it held
//! by another, it takes it over only once that holder has not renewed it for
//! `lease_duration`, measured on this process's own clock from when the record last changed,
//! so clock skew between replicas does not matter. Every write is conditional on the
//! `resourceVersion` it read, so two candidates cannot both win. A leader that cannot renew
//! for `renew_deadline` (shorter than `lease_duration`) stops acting before anyone may take
//! over. At shutdown a leader releases the Lease, so a standby takes over at its next try.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The election's settings, validated.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// Its namespace; None: the client's default namespace.
    pub namespace: Option<String>,
    /// This replica's name in `holderIdentity`.
    pub identity: String,
    /// How long a holder's last renewal keeps others out.
    pub lease_duration: Duration,
    /// How long a leader goes on acting without a successful renewal.
    pub renew_deadline: Duration,
    /// How often the Lease is read, renewed or tried.
    pub retry_period: Duration,
    /// After taking the Lease over from another holder, how long to act on nothing: the
    /// previous leader's cooldowns are not known here.
    pub quiet_after_takeover: Duration,
}

/// What the elector established, read by the exporter before every change.
#[derive(Debug, Default)]
struct State {
    /// When the Lease was last acquired or renewed by this process.
    renewed: Option<Instant>,
    /// Acting starts here (later than `renewed` after a takeover).
    acting_from: Option<Instant>,
    /// Who holds the Lease, as last read.
    holder: Option<String>,
}

/// This process's standing in the election; cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    state: Arc<Mutex<State>>,
    renew_deadline: Duration,
}

/// Why this process may not change workloads now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standby {
    /// Another replica holds the Lease (named when known).
    Follower(Option<String>),
    /// This process took the Lease over and waits out the previous leader's cooldowns.
    Settling,
}

impl Leadership {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ok when this process may change workloads now.
    pub fn acting(&self) -> Result<(), Standby> {
        let s = self.lock();
        let now = Instant::now();
        if !self.holds_at(&s, now) {
            return Err(Standby::Follower(s.holder.clone()));
        }
        match s.acting_from {
            Some(from) if now >= from => Ok(()),
            _ => Err(Standby::Settling),
        }
    }

    /// True while this process holds the Lease: renewed within `renew_deadline`, settled or
    /// not.
    fn holds(&self) -> bool {
        self.holds_at(&self.lock(), Instant::now())
    }

    fn holds_at(&self, s: &State, now: Instant) -> bool {
        s.renewed
            .is_some_and(|r| now.duration_since(r) < self.renew_deadline)
    }
}

/// Runs the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    leadership: Leadership,
    /// The other holder's record as last seen, and when it was first seen so on our clock.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
    component: String,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl Elector {
    /// An elector and the handle the exporter reads.
    pub fn new(client: Client, settings: LeaseSettings, component: &str) -> (Self, Leadership) {
        let api = match &settings.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::default_namespaced(client),
        };
        let leadership = Leadership {
            state: Arc::new(Mutex::new(State::default())),
            renew_deadline: settings.renew_deadline,
        };
        let elector = Self {
            api,
            settings,
            leadership: leadership.clone(),
            observed: None,
            component: component.to_string(),
        };
        (elector, leadership)
    }

    /// Tries, renews and finally releases the Lease until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let gauge =
            metrics::gauge!("tracescale_scale_leader", "component" => self.component.clone());
        let mut was_leading = false;
        loop {
            let attempt =
                tokio::time::timeout(self.settings.retry_period, self.try_acquire_or_renew());
            let leading = match attempt.await {
                Ok(Ok(leading)) => leading,
                Ok(Err(err)) => {
                    warn!(component = %self.component, lease = %self.settings.name, error = %err,
                        "cannot read or renew the Lease");
                    self.leadership.holds()
                }
                Err(_) => self.leadership.holds(),
            };
            if leading != was_leading {
                if leading {
                    info!(component = %self.component, lease = %self.settings.name,
                        identity = %self.settings.identity, "holds the Lease: leading");
                } else {
                    warn!(component = %self.component, lease = %self.settings.name,
                        holder = ?self.leadership.lock().holder, "not the leader: standing by");
                }
                was_leading = leading;
            }
            gauge.set(if self.leadership.acting().is_ok() {
                1.0
            } else {
                0.0
            });
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
        if was_leading {
            self.release().await;
        }
        gauge.set(0.0);
    }

    /// One round: true when this process holds the Lease afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let name = self.settings.name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                // Nobody led before: there are no cooldowns to wait out.
                Ok(_) => Ok(self.won(false)),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(self.lost(None)),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.settings.identity.as_str());
        if !mine {
            let record = (holder.clone(), spec.renew_time.clone());
            let since = match &self.observed {
                Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
                _ => Instant::now(),
            };
            self.observed = Some((record.0, record.1, since));
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.settings.lease_duration, Duration::from_secs);
            if holder.is_some() && since.elapsed() < duration {
                return Ok(self.lost(holder));
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(if mine {
            LeaseSpec {
                renew_time: Some(now()),
                lease_duration_seconds: Some(seconds(self.settings.lease_duration)),
                ..spec
            }
        } else {
            self.spec(None, transitions.saturating_add(1))
        });
        // `replace` sends the resourceVersion it read: a concurrent writer gets a 409.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            // Taken from another holder, even one that released it: that leader may have
            // changed a workload moments ago.
            Ok(_) => Ok(self.won(!mine)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(self.lost(holder)),
            Err(e) => Err(e),
        }
    }

    fn spec(&self, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(seconds(self.settings.lease_duration)),
            acquire_time: Some(acquired.unwrap_or_else(now)),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn won(&mut self, took_over: bool) -> bool {
        let now = Instant::now();
        let mut s = self.leadership.lock();
        if s.acting_from.is_none() || s.renewed.is_none() {
            let quiet = if took_over {
                self.settings.quiet_after_takeover
            } else {
                Duration::ZERO
            };
            s.acting_from = Some(now + quiet);
        }
        s.renewed = Some(now);
        s.holder = Some(self.settings.identity.clone());
        self.observed = None;
        true
    }

    fn lost(&mut self, holder: Option<String>) -> bool {
        let mut s = self.leadership.lock();
        s.renewed = None;
        s.acting_from = None;
        s.holder = holder;
        false
    }

    /// Hands the Lease back: no holder, so a standby takes it at its next try.
    async fn release(&mut self) {
        let release = async {
            let mut lease = self.api.get(&self.settings.name).await?;
            let Some(spec) = lease.spec.as_mut() else {
                return Ok(());
            };
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now());
            self.api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(self.settings.retry_period, release).await {
            Ok(Ok(())) => {
                info!(component = %self.component, lease = %self.settings.name, "released the Lease")
            }
            Ok(Err(e)) => {
                warn!(component = %self.component, error = %e, "cannot release the Lease; it expires by itself")
            }
            Err(_) => {
                warn!(component = %self.component, "releasing the Lease timed out; it expires by itself")
            }
        }
        self.lost(None);
    }
}
