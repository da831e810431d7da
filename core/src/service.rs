//! Load → start → run → stop: what `tracescale run` does, for any binary that links components.

use std::future::Future;

use tracing::{info, warn};

use crate::component::ComponentError;
use crate::config::Config;
use crate::health::{Health, Phase};
use crate::telemetry::TelemetryServer;
use crate::topology::{RunningTopology, StartError};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The telemetry listener could not be bound.
    #[error("cannot start self-telemetry")]
    Telemetry(#[source] ComponentError),
    /// A component failed to start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The deadline passed before every queue drained; what was left is counted as dropped.
    #[error("shutdown deadline passed before the pipelines drained")]
    Incomplete,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future resolved (a signal).
    Signal,
    /// Every receiver finished by itself and the pipelines drained.
    Finished,
}

/// Runs a loaded config until `shutdown` resolves or every pipeline drains by itself, then shuts
/// down in order within `[service] shutdown_deadline`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<Stopped, RunError> {
    let health = Health::new();
    let telemetry = match config.service.telemetry_address {
        Some(address) => {
            let server = TelemetryServer::start(address, health.clone())
                .await
                .map_err(RunError::Telemetry)?;
            info!(address = %server.address(), "serving /metrics, /healthz and /readyz");
            Some(server)
        }
        None => None,
    };
    let path = config.path.clone();
    let limiter_stop = tokio_util::sync::CancellationToken::new();
    let limiter = config.service.memory_limits().map(|limits| {
        tokio::spawn(crate::memory::run(
            limits,
            health.handle("service/memory_limiter"),
            limiter_stop.clone(),
        ))
    });
    let result = run_topology(config, health, shutdown).await;
    limiter_stop.cancel();
    if let Some(limiter) = limiter {
        let _ = limiter.await;
    }
    if let Some(server) = telemetry {
        server.stop().await;
    }
    if let Ok(stopped) = &result {
        info!(config = %path.display(), ?stopped, "stopped");
    }
    result
}

async fn run_topology(
    config: Config,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> Result<Stopped, RunError> {
    let mut topology = RunningTopology::start(config, health.clone()).await?;
    health.set_phase(Phase::Running);
    info!("all components started");
    let stopped = tokio::select! {
        _ = shutdown => Stopped::Signal,
        _ = topology.finished() => Stopped::Finished,
    };
    if stopped == Stopped::Signal {
        info!("shutting down: receivers stop, queues drain, processors and exporters flush");
    }
    let report = topology.shutdown().await;
    if report.drained {
        Ok(stopped)
    } else {
        Err(RunError::Incomplete)
    }
}

/// Resolves on the first SIGINT or SIGTERM. A second one exits the process at once with status
/// 1, for an operator who does not want to wait for the drain.
pub async fn os_signal() {
    wait_for_signal().await;
    tokio::spawn(async {
        wait_for_signal().await;
        warn!("second signal: exiting without draining");
        std::process::exit(1);
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            warn!("cannot install signal handlers; falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
