//! The running graph: bounded queues on every edge, one task per processor and per exporter,
//! start downstream first, stop upstream first.
//!
//! ```text
//! receiver ─┐                                           ┌─ queue ─ exporter task
//! receiver ─┴─ queue ─ processor ─ queue ─ processor ─ fan-out
//!                      task                  task       └─ queue ─ exporter task
//! ```
//!
//! Several receivers fan into one pipeline queue; a receiver listed by several pipelines sends to
//! each (all or none, see [`output::Output`]). Each exporter has one queue shared by every
//! pipeline that lists it; `when_full` decides whether a full queue drops the batch (counted) or
//! makes the pipeline wait, which pushes back to the receivers.
//!
//! Shutdown drops senders from the top: receivers stop and drop their outputs, each task drains
//! its queue, flushes its component and drops its own senders, and so on down to the exporters.
//! The deadline is the backstop: when it passes, tasks stop waiting, and whatever is still queued
//! is counted as dropped with reason `shutdown_deadline`.

mod disk;
pub mod output;
pub mod queue;
mod stages;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::component::{
    ComponentError, ComponentKind, ExporterContext, Failures, ProcessorContext, Receiver,
    ReceiverContext, Tap,
};
use crate::config::{Buffer, ComponentId, Config, WhenFull};
use crate::health::{Health, Phase};
use crate::signal::SignalKind;
use crate::telemetry::ComponentTelemetry;
use output::Output;
use queue::{QueueGauge, QueueTx, queue};
use stages::{Downstream, Fanout, run_exporter, run_forwarder, run_processor};

/// A component failed to start; everything started before it has been shut down.
#[derive(Debug, thiserror::Error)]
#[error("{kind} \"{id}\" failed to start")]
pub struct StartError {
    /// Which kind of component.
    pub kind: ComponentKind,
    /// Its id.
    pub id: ComponentId,
    /// Why.
    #[source]
    pub source: ComponentError,
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Every queue drained and every component flushed before the deadline, with nothing
    /// dropped on the way: a processor or exporter whose own shutdown failed or overran (an
    /// exporter that gave up on spans it held, say) makes this false.
    pub drained: bool,
}

/// Shared by every task: the deadline once shutdown has begun, and the token that tells tasks to
/// stop waiting when it has passed.
struct Stop {
    deadline: OnceLock<Instant>,
    grace: Duration,
    abort: CancellationToken,
    /// Set by a task whose component's own shutdown failed or overran: the queues may all have
    /// drained, yet what that component held did not reach its destination.
    lost: AtomicBool,
}

impl Stop {
    fn deadline(&self) -> Instant {
        *self.deadline.get_or_init(|| Instant::now() + self.grace)
    }

    /// Waits for a processor's or exporter's shutdown by the deadline; a failure or an overrun
    /// is logged and makes the whole shutdown incomplete.
    async fn component_shutdown(
        &self,
        kind: &'static str,
        id: &str,
        shutdown: impl Future<Output = Result<(), ComponentError>>,
    ) {
        match tokio::time::timeout_at(self.deadline(), shutdown).await {
            Ok(Ok(())) => debug!(component = id, kind, "stopped"),
            Ok(Err(err)) => {
                self.lost.store(true, Ordering::Relaxed);
                warn!(component = id, kind, error = %err, "shutdown failed");
            }
            Err(_) => {
                self.lost.store(true, Ordering::Relaxed);
                warn!(
                    component = id,
                    kind, "did not flush by the shutdown deadline"
                );
            }
        }
    }
}

/// The engine's graph, running.
pub struct RunningTopology {
    receivers: Vec<(ComponentId, Box<dyn Receiver>)>,
    tasks: JoinSet<()>,
    sampler: Option<(CancellationToken, JoinHandle<()>)>,
    stop: Arc<Stop>,
    health: Health,
    failures: Arc<Failures>,
}

/// A queue whose depth the sampler reports.
struct QueueProbe {
    name: String,
    gauge: QueueGauge,
    capacity: usize,
}

/// The queue in front of one exporter, as the pipelines' fan-outs see it.
#[derive(Clone)]
struct ExporterInput {
    tx: QueueTx,
    when_full: WhenFull,
    /// What its type takes, narrowed by its `signals` key.
    takes: Arc<[SignalKind]>,
    telemetry: ComponentTelemetry,
    /// It keeps a disk buffer.
    durable: bool,
}

/// Where the receivers of one pipeline send, and what sees the batches they refuse.
struct PipelineInput {
    receivers: Vec<ComponentId>,
    tx: QueueTx,
    taps: Vec<Arc<dyn Tap>>,
    /// Some exporter of the pipeline keeps a disk buffer.
    durable: bool,
}

impl RunningTopology {
    /// A component's health handle, listed in `/readyz` as `ok` from the start, so that every
    /// component shows, not only those that have something to report.
    fn listed(&self, key: String) -> crate::health::HealthHandle {
        let handle = self.health.handle(key);
        handle.ready(None);
        handle
    }

    /// Starts every component of a loaded config: exporters, then processors, then receivers.
    pub async fn start(config: Config, health: Health) -> Result<Self, StartError> {
        let stop = Arc::new(Stop {
            deadline: OnceLock::new(),
            grace: config.service.shutdown_deadline.get(),
            abort: CancellationToken::new(),
            lost: AtomicBool::new(false),
        });
        let mut running = RunningTopology {
            receivers: Vec::new(),
            tasks: JoinSet::new(),
            sampler: None,
            stop: stop.clone(),
            health: health.clone(),
            failures: Failures::new(),
        };
        let mut probes = Vec::new();
        match running.start_inner(config, &mut probes).await {
            Ok(()) => {
                running.sampler = Some(spawn_sampler(probes));
                Ok(running)
            }
            Err(err) => {
                running.shutdown().await;
                Err(err)
            }
        }
    }

    async fn start_inner(
        &mut self,
        config: Config,
        probes: &mut Vec<QueueProbe>,
    ) -> Result<(), StartError> {
        let Config {
            receivers,
            exporters,
            pipelines,
            ..
        } = config;

        let mut exporter_inputs: Vec<(ComponentId, ExporterInput)> = Vec::new();
        for spec in exporters {
            let telemetry = ComponentTelemetry::for_signals(
                ComponentKind::Exporter,
                &spec.id,
                &spec.signals,
                &spec.signals,
            );
            let ctx = ExporterContext {
                id: spec.id.clone(),
                telemetry: telemetry.clone(),
                health: self.listed(format!("exporter/{}", spec.id)),
            };
            let mut exporter = spec.instance;
            exporter.start(&ctx).await.map_err(|source| StartError {
                kind: ComponentKind::Exporter,
                id: spec.id.clone(),
                source,
            })?;
            let (tx, rx) = queue(spec.queue_size, spec.queue_items);
            probes.push(QueueProbe {
                name: format!("exporters.{}", spec.id),
                gauge: tx.probe(),
                capacity: spec.queue_size,
            });
            let takes: Arc<[SignalKind]> = spec.signals.into();
            let durable = matches!(spec.buffer, Buffer::Disk { .. });
            match spec.buffer {
                Buffer::Memory => {
                    self.tasks.spawn(run_exporter(
                        exporter,
                        rx,
                        telemetry.clone(),
                        takes.clone(),
                        self.stop.clone(),
                    ));
                }
                Buffer::Disk { path, max_size } => {
                    let (buffer, acknowledged) =
                        disk::DiskBuffer::open(spec.id.as_str(), &path, max_size.bytes())
                            .await
                            .map_err(|err| StartError {
                                kind: ComponentKind::Exporter,
                                id: spec.id.clone(),
                                source: ComponentError::other(err),
                            })?;
                    let buffer = Arc::new(buffer);
                    self.tasks.spawn(disk::run_writer(
                        buffer.clone(),
                        rx,
                        telemetry.clone(),
                        ctx.health.clone(),
                        self.stop.clone(),
                    ));
                    self.tasks.spawn(disk::run_reader(
                        buffer,
                        acknowledged,
                        exporter,
                        telemetry.clone(),
                        takes.clone(),
                        self.stop.clone(),
                    ));
                }
            }
            exporter_inputs.push((
                spec.id,
                ExporterInput {
                    tx,
                    when_full: spec.when_full,
                    takes,
                    telemetry,
                    durable,
                },
            ));
            debug!(exporter = %ctx.id, "exporter started");
        }

        let mut pipeline_inputs: Vec<PipelineInput> = Vec::new();
        for pipeline in pipelines {
            let fanout = Fanout {
                exporters: pipeline
                    .exporters
                    .iter()
                    .filter_map(|id| {
                        exporter_inputs
                            .iter()
                            .find(|(eid, _)| eid == id)
                            .map(|(_, input)| input.clone())
                    })
                    .collect(),
                stop: self.stop.clone(),
            };
            let durable = fanout.exporters.iter().any(|e| e.durable);
            // Build the chain from its end: each processor's input queue is the previous
            // stage's downstream.
            let mut downstream = Downstream::Fanout(fanout);
            let mut taps = Vec::new();
            let mut stage_name = format!("pipelines.{}.exporters", pipeline.name);
            for spec in pipeline.processors.into_iter().rev() {
                let telemetry = ComponentTelemetry::for_signals(
                    ComponentKind::Processor,
                    &spec.id,
                    spec.factory.takes,
                    spec.factory.emits,
                );
                let ctx = ProcessorContext {
                    id: spec.id.clone(),
                    pipeline: pipeline.name.clone(),
                    telemetry: telemetry.clone(),
                    health: self.listed(format!("processor/{}/{}", pipeline.name, spec.id)),
                };
                let mut processor = spec.instance;
                processor.start(&ctx).await.map_err(|source| StartError {
                    kind: ComponentKind::Processor,
                    id: spec.id.clone(),
                    source,
                })?;
                taps.extend(processor.tap());
                let (tx, rx) = queue(pipeline.queue_size, pipeline.queue_items);
                probes.push(QueueProbe {
                    name: format!("pipelines.{}.processors.{}", pipeline.name, spec.id),
                    gauge: tx.probe(),
                    capacity: pipeline.queue_size,
                });
                self.tasks.spawn(run_processor(
                    processor,
                    spec.factory.takes,
                    rx,
                    downstream,
                    telemetry,
                    self.stop.clone(),
                ));
                downstream = Downstream::Queue(tx);
                stage_name = format!("pipelines.{}.processors.{}", pipeline.name, spec.id);
            }
            let entry = match downstream {
                Downstream::Queue(tx) => tx,
                Downstream::Fanout(fanout) => {
                    let (tx, rx) = queue(pipeline.queue_size, pipeline.queue_items);
                    probes.push(QueueProbe {
                        name: stage_name,
                        gauge: tx.probe(),
                        capacity: pipeline.queue_size,
                    });
                    self.tasks.spawn(run_forwarder(rx, fanout));
                    tx
                }
            };
            info!(pipeline = %pipeline.name, signals = ?pipeline.signals, "pipeline started");
            pipeline_inputs.push(PipelineInput {
                receivers: pipeline.receivers,
                tx: entry,
                taps,
                durable,
            });
        }
        // The fan-outs hold their own clones; these would keep exporter queues open forever.
        drop(exporter_inputs);

        for spec in receivers {
            let feeds: Vec<&PipelineInput> = pipeline_inputs
                .iter()
                .filter(|p| p.receivers.contains(&spec.id))
                .collect();
            let targets = feeds.iter().map(|p| p.tx.clone()).collect();
            let taps = feeds.iter().flat_map(|p| p.taps.iter().cloned()).collect();
            let telemetry = ComponentTelemetry::for_signals(
                ComponentKind::Receiver,
                &spec.id,
                spec.factory.emits,
                spec.factory.emits,
            );
            let ctx = ReceiverContext {
                id: spec.id.clone(),
                output: Output::new(
                    targets,
                    taps,
                    feeds.iter().any(|p| p.durable),
                    telemetry.clone(),
                ),
                telemetry,
                health: self.listed(format!("receiver/{}", spec.id)),
                abort: self.failures.handle(spec.id.clone()),
            };
            let mut receiver = spec.instance;
            let started = receiver.start(ctx).await;
            // Registered even on failure, so that shutdown reaches it.
            self.receivers.push((spec.id.clone(), receiver));
            started.map_err(|source| StartError {
                kind: ComponentKind::Receiver,
                id: spec.id,
                source,
            })?;
        }
        Ok(())
    }

    /// Resolves when every pipeline has drained by itself: every receiver finished and dropped
    /// its output (a bounded replay, a demo that ran its course). Cancel safe.
    pub async fn finished(&mut self) {
        while let Some(joined) = self.tasks.join_next().await {
            log_join(joined);
        }
    }

    /// Resolves once a receiver has asked to end the run with an error. Owned, so that it can
    /// be awaited next to [`RunningTopology::finished`]. Cancel safe.
    pub fn failed(&self) -> impl Future<Output = ()> + use<> {
        let failures = self.failures.clone();
        async move { failures.reported().await }
    }

    /// The first error a receiver ended the run with, taken out.
    pub fn take_failure(&self) -> Option<(ComponentId, ComponentError)> {
        self.failures.take()
    }

    /// Stops receivers, drains every queue, flushes processors and exporters, all by the
    /// configured deadline; past it, what is left is counted as dropped.
    pub async fn shutdown(mut self) -> ShutdownReport {
        self.health.set_phase(Phase::ShuttingDown);
        let deadline = self.stop.deadline();
        for (id, mut receiver) in self.receivers.drain(..) {
            match tokio::time::timeout_at(deadline, receiver.shutdown(deadline)).await {
                Ok(Ok(())) => debug!(receiver = %id, "receiver stopped"),
                Ok(Err(err)) => warn!(receiver = %id, error = %err, "receiver shutdown failed"),
                Err(_) => warn!(receiver = %id, "receiver did not stop by the shutdown deadline"),
            }
        }
        let drained = tokio::time::timeout_at(deadline, async {
            while let Some(joined) = self.tasks.join_next().await {
                log_join(joined);
            }
        })
        .await
        .is_ok();
        if !drained {
            warn!("shutdown deadline passed; dropping what is still queued");
            self.stop.abort.cancel();
            // Let tasks count what they drop; then stop waiting for good.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(joined) = self.tasks.join_next().await {
                    log_join(joined);
                }
            })
            .await;
            self.tasks.abort_all();
        }
        if let Some((token, task)) = self.sampler.take() {
            token.cancel();
            let _ = task.await;
        }
        ShutdownReport {
            drained: drained && !self.stop.lost.load(Ordering::Relaxed),
        }
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined
        && err.is_panic()
    {
        tracing::error!(error = %err, "a pipeline task panicked");
    }
}

fn spawn_sampler(probes: Vec<QueueProbe>) -> (CancellationToken, JoinHandle<()>) {
    let token = CancellationToken::new();
    let stopped = token.clone();
    let handle = crate::telemetry::install();
    let task = tokio::spawn(async move {
        let gauges: Vec<_> = probes
            .iter()
            .map(|p| {
                let queue = || ("queue", p.name.clone());
                metrics::gauge!("tracescale_queue_capacity", &[queue()]).set(p.capacity as f64);
                metrics::gauge!("tracescale_queue_items_capacity", &[queue()])
                    .set(p.gauge.max_items() as f64);
                (
                    metrics::gauge!("tracescale_queue_depth", &[queue()]),
                    metrics::gauge!("tracescale_queue_items", &[queue()]),
                )
            })
            .collect();
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stopped.cancelled() => break,
                _ = interval.tick() => {}
            }
            for (probe, (batches, items)) in probes.iter().zip(&gauges) {
                let (b, i) = probe.gauge.depth(probe.capacity);
                batches.set(b as f64);
                items.set(i as f64);
            }
            handle.run_upkeep();
        }
    });
    (token, task)
}
