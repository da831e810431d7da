//! The `keda` exporter: serves KEDA's external scaler protocol (`externalscaler.ExternalScaler`
//! over gRPC), so that a cluster that already scales through KEDA scales on tracescale's
//! decisions, with KEDA as the actuator. See README.md for the keys and what KEDA and the HPA
//! make of the answers.
//!
//! `export` applies each decision to the board (allow-list, policy) under a short lock and
//! overwrites the activity of the targets it flipped in their watch channels; it never waits
//! on a client. The gRPC handlers read the board; a sweeper task ends activity windows on time,
//! so a StreamIsActive client hears of a target turning inactive when it does.

pub mod board;
pub mod codec;
pub mod config;
pub mod proto;
mod service;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracescale_core::component::{ComponentError, Exporter, ExporterContext};
use tracescale_core::config::field_names;
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind, Target, now_unix_nano};
use tracing::{debug, info, warn};

use crate::scaling::{Refusal, ScalerSettings, explain};
use board::{Board, Outcome};
pub use config::{KedaConfig, ServeSettings};
use service::{Shared, serve};
pub use service::{TARGET_KEY, metric_name};

/// Answers KEDA's external scaler calls from the decisions it is given.
pub struct KedaExporter {
    settings: ScalerSettings,
    serve: ServeSettings,
    running: Option<Running>,
}

/// What `start` set up.
struct Running {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: Option<JoinHandle<()>>,
    sweeper: Option<JoinHandle<()>>,
    stop: CancellationToken,
}

impl KedaExporter {
    /// An exporter for validated settings; nothing listens before `start`.
    pub fn new(settings: ScalerSettings, serve: ServeSettings) -> Self {
        Self {
            settings,
            serve,
            running: None,
        }
    }

    /// The address the listener is bound to, once started (the port, when `endpoint` asks for
    /// port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.running.as_ref().map(|r| r.address)
    }
}

#[async_trait]
impl Exporter for KedaExporter {
    async fn start(&mut self, ctx: &ExporterContext) -> Result<(), ComponentError> {
        if self.running.is_some() {
            return Ok(());
        }
        let board = Board::new(self.settings.clone(), self.serve.activity_window);
        let shared = Arc::new(Shared::new(
            board,
            self.serve.max_streams,
            ctx.id.to_string(),
        ));
        let stop = CancellationToken::new();
        let (address, server) = serve(Arc::clone(&shared), self.serve.endpoint, stop.clone())?;
        let sweeper = tokio::spawn(sweep(Arc::clone(&shared), stop.clone()));
        debug!(component = %shared.component, %address, "serving KEDA's external scaler protocol");
        ctx.health.ready(None);
        self.running = Some(Running {
            shared,
            address,
            server: Some(server),
            sweeper: Some(sweeper),
            stop,
        });
        Ok(())
    }

    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError> {
        let (Signal::Decisions(decisions), Some(running)) = (signal, &self.running) else {
            return Ok(());
        };
        let shared = &running.shared;
        let m = &shared.metrics;
        let (now, now_unix) = (shared.now(), now_unix_nano());
        let mut state = shared.lock();
        for d in &decisions {
            let applied = state.board.apply(d, now, now_unix);
            match applied.outcome {
                Outcome::Refused(r) => {
                    m.scale.refused(r);
                    if r == Refusal::NotAllowed {
                        warn!(component = %shared.component, target = %d.target, rule = %d.rule,
                            "refused a decision for a target that is not in `allow`");
                    } else {
                        debug!(component = %shared.component, target = %d.target,
                            reason = r.as_str(), "refused a decision");
                    }
                }
                Outcome::Vertical => m.scale.failed("vertical_unsupported"),
                Outcome::Held(h) => {
                    m.scale.held(h);
                    debug!(component = %shared.component, target = %d.target,
                        reason = h.as_str(), "held a decision");
                }
                Outcome::Changed { from, to, limited } => {
                    m.scale.changed(&d.target, from, to);
                    info!(component = %shared.component, target = %d.target, rule = %d.rule,
                        from, to, "{}", explain(d, from, to, limited));
                }
            }
            if let Some(active) = applied.activity {
                state.publish(&applied.key, active, m);
            }
        }
        drop(state);
        // A scale-up may have opened an activity window the sweeper must end on time.
        shared.wake.notify_one();
        Ok(())
    }

    async fn shutdown(&mut self, deadline: Instant) -> Result<(), ComponentError> {
        let Some(running) = &mut self.running else {
            return Ok(());
        };
        // Closing the channels ends every stream, so the graceful stop does not wait on them.
        running.shared.close();
        running.stop.cancel();
        for task in [running.sweeper.take(), running.server.take()]
            .into_iter()
            .flatten()
        {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                warn!(component = %running.shared.component,
                    "KEDA listener did not stop by the shutdown deadline");
            }
        }
        Ok(())
    }

    fn accepts_target(&self, target: &Target) -> Option<bool> {
        Some(self.settings.allow.allows(target))
    }
}

/// Ends activity windows on time and tells the streams.
async fn sweep(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let next = shared.lock().board.next_expiry(shared.now());
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(shared.instant(at)).await,
                None => std::future::pending().await,
            }
        };
        // Cancel safety: each branch only wakes the loop, which recomputes from the board.
        tokio::select! {
            () = stop.cancelled() => return,
            () = shared.wake.notified() => continue,
            () = due => {}
        }
        let mut state = shared.lock();
        for (key, active) in state.board.expire(shared.now()) {
            state.publish(&key, active, &shared.metrics);
        }
    }
}

inventory::submit! {
    ComponentFactory {
        type_name: "keda",
        description: "serves KEDA's external scaler protocol: KEDA scales workloads to the replicas the decisions ask for",
        takes: &[SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<KedaConfig>,
        build: Build::Exporter(config::build),
    }
}
