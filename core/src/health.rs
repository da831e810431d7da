//! Liveness and readiness: what `/healthz` and `/readyz` answer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// Where the engine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Components are being started.
    Starting,
    /// Every component started.
    Running,
    /// Shutdown has begun; not ready.
    ShuttingDown,
}

/// The readiness of the engine and of each component that reported.
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    phase: AtomicU8,
    components: Mutex<BTreeMap<String, ComponentStatus>>,
}

/// How a component is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working.
    Ok,
    /// Working, with a problem it is riding out, such as a backend that refuses requests while
    /// the exporter retries. Still ready: traffic sent elsewhere would meet the same backend,
    /// and back-pressure already tells clients to slow down.
    Degraded,
    /// Cannot do its job; holds the whole engine not ready.
    NotReady,
}

/// What one component last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComponentStatus {
    /// False holds the whole engine not ready.
    pub ready: bool,
    /// `ok`, `degraded` or `not_ready`.
    pub status: Status,
    /// Why, for people reading `/readyz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The body of `/readyz`.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// True when the engine is running and no component said it is not ready.
    pub ready: bool,
    /// The worst of the components' statuses; `not_ready` too when the engine is not running.
    pub status: Status,
    /// The engine's phase.
    pub phase: Phase,
    /// What each component reported, by `kind/id`.
    pub components: BTreeMap<String, ComponentStatus>,
}

impl Health {
    /// A fresh state, in the starting phase.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves to another phase.
    pub fn set_phase(&self, phase: Phase) {
        let v = match phase {
            Phase::Starting => 0,
            Phase::Running => 1,
            Phase::ShuttingDown => 2,
        };
        self.inner.phase.store(v, Ordering::Release);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.inner.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::ShuttingDown,
        }
    }

    /// Forgets what the pipelines' components reported, keeping the engine's own entries
    /// (`service/…`): a reload replaces the components, and a removed one must not linger in
    /// `/readyz`.
    pub fn forget_components(&self) {
        self.inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| key.starts_with("service/"));
    }

    /// A handle for one component to report through.
    pub fn handle(&self, key: impl Into<String>) -> HealthHandle {
        HealthHandle {
            health: self.clone(),
            key: key.into(),
        }
    }

    /// The readiness report.
    pub fn readiness(&self) -> Readiness {
        let components = self
            .inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let phase = self.phase();
        let worst = components
            .values()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok);
        let status = if phase == Phase::Running {
            worst
        } else {
            Status::NotReady
        };
        Readiness {
            ready: status != Status::NotReady,
            status,
            phase,
            components,
        }
    }
}

/// Lets one component say whether it is ready, and why not.
#[derive(Clone)]
pub struct HealthHandle {
    health: Health,
    key: String,
}

impl HealthHandle {
    /// Reports the component ready, with an optional detail for `/readyz`.
    pub fn ready(&self, detail: Option<String>) {
        self.set(ComponentStatus {
            ready: true,
            status: Status::Ok,
            detail,
        });
    }

    /// Reports the component working but with a problem it is riding out, saying which.
    pub fn degraded(&self, detail: impl Into<String>) {
        self.set(ComponentStatus {
            ready: true,
            status: Status::Degraded,
            detail: Some(detail.into()),
        });
    }

    /// Reports the component not ready, saying why.
    pub fn not_ready(&self, detail: impl Into<String>) {
        self.set(ComponentStatus {
            ready: false,
            status: Status::NotReady,
            detail: Some(detail.into()),
        });
    }

    fn set(&self, status: ComponentStatus) {
        self.health
            .inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.key.clone(), status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_running_and_every_component_is() {
        let h = Health::new();
        assert!(!h.readiness().ready);
        h.set_phase(Phase::Running);
        assert!(h.readiness().ready);
        let c = h.handle("exporter/cluster");
        c.not_ready("API server unreachable");
        assert!(!h.readiness().ready);
        c.ready(None);
        assert!(h.readiness().ready);
        c.degraded("backend refuses; retrying");
        let degraded = h.readiness();
        assert!(degraded.ready);
        assert_eq!(degraded.status, Status::Degraded);
        h.set_phase(Phase::ShuttingDown);
        assert!(!h.readiness().ready);
    }
}
