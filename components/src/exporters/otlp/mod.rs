//! The `otlp` exporter: forwards traces to Tempo, Jaeger or an OpenTelemetry Collector over
//! OTLP/gRPC or OTLP/HTTP (protobuf), in batches, with retries and bounded memory.
//!
//! `export` hands spans to a sender task started in `start` and returns as soon as they fit in
//! the exporter's buffer (two batches' worth); when it is full, `export` waits, which pushes back
//! on the engine's queue in front of the exporter. The sender batches by size and by time, sends
//! with retries (`sender`), and drains by the deadline on shutdown.

mod batch;
pub(crate) mod config;
mod counters;
mod retry;
mod sender;
pub(crate) mod tls;
mod transport;

use std::sync::Arc;

use async_trait::async_trait;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tracescale_core::component::{BuildContext, ComponentError, Exporter, ExporterContext};
use tracescale_core::config::{BuildError, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};
use tracing::debug;

pub use config::{Compression, OtlpExporterConfig, Protocol, RetryConfig};

use batch::Pending;
use config::ExporterSettings;
use counters::{Counters, DropReason};
use sender::{Control, Sender};
use transport::Transport;

/// What can go wrong while the exporter runs. Failed requests are not errors of `export`: they
/// are retried, or dropped and counted, by the sender task.
#[derive(Debug, thiserror::Error)]
pub enum OtlpExporterError {
    /// `export` was called before `start`.
    #[error("the otlp exporter was not started")]
    NotStarted,
    /// `export` or `start` was called after `shutdown`.
    #[error("the otlp exporter is shut down")]
    ShutDown,
    /// A signal the exporter does not take reached it.
    #[error("the otlp exporter takes traces, not {0}")]
    WrongSignal(SignalKind),
    /// A chunk of spans larger than the buffer; `send_batch_size` is validated so that it is not.
    #[error("a chunk of {0} spans does not fit in the otlp exporter's buffer")]
    TooLarge(usize),
    /// The sender task ended while the exporter was running.
    #[error("the otlp exporter's sender task has stopped")]
    SenderStopped,
    /// The sender task panicked.
    #[error("the otlp exporter's sender task failed")]
    SenderFailed(#[source] JoinError),
    /// Spans held at shutdown were not delivered by the deadline.
    #[error("{dropped} spans could not be sent to {endpoint} before the shutdown deadline")]
    DroppedAtShutdown {
        /// Spans given up on.
        dropped: u64,
        /// Where they were going.
        endpoint: String,
    },
}

/// Sends traces to an OTLP endpoint. Built from [`OtlpExporterConfig`].
pub struct OtlpExporter {
    settings: Arc<ExporterSettings>,
    state: State,
    /// The exporter's id, once started.
    id: String,
    counters: Option<Counters>,
}

enum State {
    Built,
    Running(Running),
    Stopped,
}

/// The exporter's half of a running sender.
struct Running {
    /// Spans for the sender; what it holds is bounded by `room`, not by this channel.
    tx: mpsc::Sender<Vec<ResourceSpans>>,
    /// Span permits: the exporter's buffer, shared with the sender.
    room: Arc<Semaphore>,
    /// Tells the sender the shutdown deadline.
    deadline: watch::Sender<Option<Instant>>,
    /// Tells the sender to send what it holds now.
    flush: Arc<Notify>,
    task: AbortOnDrop,
}

/// Aborts the sender task when the exporter is dropped without a shutdown.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl OtlpExporter {
    fn new(settings: ExporterSettings) -> Self {
        Self {
            settings: Arc::new(settings),
            state: State::Built,
            id: String::new(),
            counters: None,
        }
    }
}

#[async_trait]
impl Exporter for OtlpExporter {
    async fn start(&mut self, ctx: &ExporterContext) -> Result<(), ComponentError> {
        match self.state {
            State::Built => {}
            State::Running(_) => return Ok(()),
            State::Stopped => return Err(ComponentError::other(OtlpExporterError::ShutDown)),
        }
        let counters = Counters::new(&ctx.id.to_string());
        let capacity = self.settings.capacity();
        let room = Arc::new(Semaphore::new(capacity));
        // Every chunk holds at least one span, so `capacity` chunks never block a sender that
        // already holds permits for them.
        let (tx, rx) = mpsc::channel(capacity);
        let (deadline, deadline_rx) = watch::channel(None);
        let flush = Arc::new(Notify::new());
        let sender = Sender::new(
            ctx,
            Arc::clone(&self.settings),
            Transport::new(&self.settings).map_err(ComponentError::other)?,
            rx,
            Arc::clone(&room),
            Control {
                deadline: deadline_rx,
                flush: Arc::clone(&flush),
            },
            counters.clone(),
        );
        let task = AbortOnDrop(tokio::spawn(sender.run()));
        debug!(component = %ctx.id, endpoint = %self.settings.endpoint, "otlp exporter started");
        self.id = ctx.id.to_string();
        self.counters = Some(counters);
        self.state = State::Running(Running {
            tx,
            room,
            deadline,
            flush,
            task,
        });
        Ok(())
    }

    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError> {
        let traces = match signal {
            Signal::Traces(traces) => traces,
            other => {
                return Err(ComponentError::other(OtlpExporterError::WrongSignal(
                    other.kind(),
                )));
            }
        };
        let running = match &self.state {
            State::Running(running) => running,
            State::Built => return Err(ComponentError::other(OtlpExporterError::NotStarted)),
            State::Stopped => return Err(ComponentError::other(OtlpExporterError::ShutDown)),
        };
        let mut spans = Pending::new();
        spans.push(traces.resource_spans);
        while !spans.is_empty() {
            // A chunk is at most one batch, so it always fits in the buffer once the sender has
            // made room.
            let (chunk, n) = spans.take(self.settings.send_batch_size);
            let permits = u32::try_from(n)
                .map_err(|_| ComponentError::other(OtlpExporterError::TooLarge(n)))?;
            // Cancel safety: the permit goes back if this future is dropped before the send.
            let permit = running
                .room
                .acquire_many(permits)
                .await
                .map_err(|_| ComponentError::other(OtlpExporterError::SenderStopped))?;
            running
                .tx
                .send(chunk)
                .await
                .map_err(|_| ComponentError::other(OtlpExporterError::SenderStopped))?;
            // From here the sender owns these spans and gives the permits back.
            permit.forget();
        }
        Ok(())
    }

    /// Sends the partial batch now, without waiting for `timeout`, and returns once everything
    /// handed over is sent or dropped: each span holds a permit until then (and is counted), so
    /// taking every permit means nothing is held.
    async fn flush(&mut self) -> Result<(), ComponentError> {
        let State::Running(running) = &self.state else {
            return Ok(());
        };
        running.flush.notify_one();
        let all = u32::try_from(self.settings.capacity()).map_err(|_| {
            ComponentError::other(OtlpExporterError::TooLarge(self.settings.capacity()))
        })?;
        let held = running
            .room
            .acquire_many(all)
            .await
            .map_err(|_| ComponentError::other(OtlpExporterError::SenderStopped))?;
        drop(held);
        Ok(())
    }

    async fn shutdown(&mut self, deadline: Instant) -> Result<(), ComponentError> {
        let Running {
            tx,
            room,
            deadline: deadline_tx,
            mut task,
            ..
        } = match std::mem::replace(&mut self.state, State::Stopped) {
            State::Running(running) => running,
            State::Built | State::Stopped => return Ok(()),
        };
        let counters = self.counters.clone();
        let dropped_before = counters
            .as_ref()
            .map_or(0, |c| c.tally().dropped(DropReason::Shutdown));
        deadline_tx.send_replace(Some(deadline));
        // Closing the channel tells the sender to send what it holds and stop.
        drop(tx);
        let joined = tokio::time::timeout_at(deadline, &mut task.0).await;
        let result = match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(ComponentError::other(OtlpExporterError::SenderFailed(err))),
            Err(_) => {
                // The sender bounds its own work by the deadline, so this is a last resort.
                task.0.abort();
                let _ = (&mut task.0).await;
                // Spans still holding a permit were neither sent nor counted.
                let lost = self.settings.capacity() - room.available_permits();
                if let Some(c) = &counters {
                    c.dropped(DropReason::Shutdown, lost as u64);
                }
                Ok(())
            }
        };
        if let Some(c) = &counters {
            let tally = c.tally();
            debug!(
                component = %self.id,
                sent = tally.sent(),
                retries = tally.retries(),
                "otlp exporter stopped"
            );
            let dropped = tally.dropped(DropReason::Shutdown) - dropped_before;
            // The engine logs this and turns it into an incomplete shutdown (exit status 1), so a
            // supervisor sees that spans answered OK were lost.
            if dropped > 0 && result.is_ok() {
                return Err(ComponentError::other(
                    OtlpExporterError::DroppedAtShutdown {
                        dropped,
                        endpoint: self.settings.endpoint.to_string(),
                    },
                ));
            }
        }
        result
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    let config: OtlpExporterConfig = ctx.parse()?;
    let settings = config.validate(ctx)?;
    Ok(Box::new(OtlpExporter::new(settings)))
}

inventory::submit! {
    ComponentFactory {
        type_name: "otlp",
        description: "sends traces over OTLP/gRPC or OTLP/HTTP to Tempo, Jaeger or a Collector",
        takes: &[SignalKind::Traces],
        emits: &[],
        config_keys: field_names::<OtlpExporterConfig>,
        build: Build::Exporter(build),
    }
}

#[cfg(test)]
mod tests;
