//! Load → start → run → stop: what `tracescale run` does, for any binary that links components.
//! A reload (SIGHUP) loads the file again, and when it is valid drains the running pipelines
//! and starts the new ones; an invalid file is reported and the running pipelines stay.

use std::future::Future;

use tracing::{error, info, warn};

use crate::component::ComponentError;
use crate::config::{self, ComponentId, Config, ServiceConfig};
use crate::error::error_chain;
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
    /// A receiver ended the run with an error; the pipelines were drained first.
    #[error("receiver \"{id}\" stopped the run")]
    Failed {
        /// The receiver.
        id: ComponentId,
        /// Why.
        #[source]
        source: ComponentError,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The shutdown future resolved (a signal).
    Signal,
    /// Every receiver finished by itself and the pipelines drained.
    Finished,
}

/// Where requests to reload the pipeline file come from.
pub struct Reloads {
    source: ReloadSource,
}

enum ReloadSource {
    None,
    #[cfg(unix)]
    Hangup(tokio::signal::unix::Signal),
    Channel(tokio::sync::mpsc::Receiver<()>),
}

impl Reloads {
    /// No reloads.
    pub fn none() -> Self {
        Self {
            source: ReloadSource::None,
        }
    }

    /// SIGHUP, as daemons and the OpenTelemetry Collector take it. Installing the handler
    /// also keeps SIGHUP from ending the process. Not on Unix: none.
    pub fn sighup() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::hangup()) {
                Ok(hangup) => {
                    return Self {
                        source: ReloadSource::Hangup(hangup),
                    };
                }
                Err(err) => {
                    warn!(error = %err, "cannot install a SIGHUP handler; reloads are off");
                }
            }
        }
        Self::none()
    }

    /// A reload each time something is sent on `rx`: for embedding programs and tests.
    pub fn channel(rx: tokio::sync::mpsc::Receiver<()>) -> Self {
        Self {
            source: ReloadSource::Channel(rx),
        }
    }

    /// The next request; never resolves when there are none to come. Cancel safe.
    async fn next(&mut self) {
        let got = match &mut self.source {
            ReloadSource::None => None,
            #[cfg(unix)]
            ReloadSource::Hangup(hangup) => hangup.recv().await,
            ReloadSource::Channel(rx) => rx.recv().await,
        };
        if got.is_none() {
            self.source = ReloadSource::None;
            std::future::pending::<()>().await;
        }
    }
}

/// Runs a loaded config until `shutdown` resolves or every pipeline drains by itself, then shuts
/// down in order within `[service] shutdown_deadline`.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<Stopped, RunError> {
    run_reloading(config, shutdown, Reloads::none()).await
}

/// [`run`], reloading the pipeline file on each request from `reloads`: a valid file replaces
/// the running pipelines (they drain first, within the shutdown deadline), an invalid one is
/// reported and changes nothing. Counted in `tracescale_config_reloads_total{result}`.
pub async fn run_reloading(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloads: Reloads,
) -> Result<Stopped, RunError> {
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
    let result = run_topology(config, health, shutdown, reloads).await;
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
    mut reloads: Reloads,
) -> Result<Stopped, RunError> {
    let mut running = Running {
        path: config.path.clone(),
        source: config.source.clone(),
        service: config.service.clone(),
    };
    let mut topology = RunningTopology::start(config, health.clone()).await?;
    health.set_phase(Phase::Running);
    info!("all components started");
    tokio::pin!(shutdown);
    let stopped = loop {
        // Cancel safety: `finished` joins tasks and `next` reads a signal stream; neither loses
        // anything when another branch wins.
        let failed = topology.failed();
        tokio::select! {
            _ = &mut shutdown => break Stopped::Signal,
            _ = topology.finished() => break Stopped::Finished,
            _ = failed => break Stopped::Finished,
            _ = reloads.next() => {
                topology = running.reload(topology, &health).await?;
            }
        }
    };
    // Taken before the shutdown, which a failing receiver's own stop must not hide.
    let failure = topology.take_failure();
    if stopped == Stopped::Signal || failure.is_some() {
        info!("shutting down: receivers stop, queues drain, processors and exporters flush");
    }
    let report = topology.shutdown().await;
    if let Some((id, source)) = failure {
        return Err(RunError::Failed { id, source });
    }
    if report.drained {
        Ok(stopped)
    } else {
        Err(RunError::Incomplete)
    }
}

/// What a reload needs to know of the config that runs.
struct Running {
    path: std::path::PathBuf,
    /// The running file's text, to start it again if the new one fails to start.
    source: String,
    service: ServiceConfig,
}

impl Running {
    /// Loads the file again. Invalid: reported, and `topology` goes on. Valid: `topology`
    /// drains and the new one starts; if that fails, the previous text starts again.
    async fn reload(
        &mut self,
        topology: RunningTopology,
        health: &Health,
    ) -> Result<RunningTopology, RunError> {
        let path = self.path.display().to_string();
        info!(config = %path, "reload requested: checking the file");
        let loaded = match std::fs::read_to_string(&self.path) {
            Ok(text) => config::load_str(&self.path, &text).map(|c| (c, text)),
            Err(err) => Err(config::ConfigError::cannot_read(&self.path, &err)),
        };
        let (config, text) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                count_reload("invalid");
                error!(config = %path, errors = err.error_count(),
                    "reload refused: the file is invalid; the running pipelines stay\n{}",
                    err.render(false));
                return Ok(topology);
            }
        };
        if config.warning_count > 0 {
            warn!(config = %path, "the reloaded file has warnings\n{}", config.warnings);
        } else if !config.warnings.is_empty() {
            info!(config = %path, "the reloaded file has notes\n{}", config.warnings);
        }
        for key in self.service.restart_only_changes(&config.service) {
            warn!(config = %path, key = %format!("service.{key}"),
                "changed in the file, but takes effect at the next start, not at a reload");
        }
        info!(config = %path, "reloading: the running pipelines drain, then the new ones start");
        let report = topology.shutdown().await;
        if !report.drained {
            warn!(
                "the shutdown deadline passed while draining for the reload; what was still queued is counted as dropped"
            );
        }
        health.forget_components();
        health.set_phase(Phase::Starting);
        let started = match RunningTopology::start(config, health.clone()).await {
            Ok(topology) => {
                count_reload("ok");
                self.source = text;
                info!(config = %path, "reloaded: the new pipelines run");
                topology
            }
            Err(err) => {
                count_reload("failed");
                error!(config = %path, error = %error_chain(&err),
                    "the reloaded pipelines failed to start; starting the previous ones again");
                health.forget_components();
                let previous = config::load_str(&self.path, &self.source).map_err(|e| {
                    error!(error = %e, "the previous file no longer loads");
                    RunError::Start(err)
                })?;
                RunningTopology::start(previous, health.clone()).await?
            }
        };
        health.set_phase(Phase::Running);
        Ok(started)
    }
}

/// Counts a reload by its outcome: `ok`, `invalid` (the file did not load; nothing changed) or
/// `failed` (it loaded but did not start; the previous pipelines run again).
fn count_reload(result: &'static str) {
    metrics::counter!("tracescale_config_reloads_total", "result" => result).increment(1);
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
