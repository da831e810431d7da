//! The three component traits, what they are handed, and the lifecycle contract.
//!
//! # Lifecycle
//!
//! A component is *built* by its factory from its TOML table ([`crate::registry`]). Building
//! validates and allocates; it must not bind a port, open a file for writing or start a task,
//! because `tracescale validate` builds every component of a file and then drops them.
//!
//! The engine then starts components downstream first (exporters, processors, receivers) and
//! stops them upstream first, as the OpenTelemetry Collector does, so that nothing is sent into a
//! component that is not running. For every component:
//!
//! - methods are never called concurrently on one instance (they take `&mut self`);
//! - no method may block forever: long work honours the deadline it is given, and a component
//!   that waits on the network bounds that wait;
//! - `shutdown` is idempotent and safe to call before `start` or after a failed `start`;
//! - `shutdown` stops intake, hands everything it holds downstream (processors emit into their
//!   [`Emitter`], exporters flush), and returns by the deadline it is given.
//!
//! Receivers stop intake by dropping every clone of their [`Output`]: the engine drains a
//! pipeline by waiting for its input channel to close, not by polling a flag.
//! A receiver whose input must end the run with an error (a replay told to stop at a broken
//! line) reports it through its [`Abort`]: the engine stops as on a signal and the run fails.

mod abort;
mod context;
mod emitter;
mod error;
mod tap;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

pub use abort::Abort;
pub(crate) use abort::Failures;
pub use context::{BuildContext, ExporterContext, ProcessorContext, ReceiverContext};
pub use emitter::Emitter;
pub use error::{BoxError, ComponentError};
pub use tap::Tap;

pub use crate::health::HealthHandle;
pub use crate::telemetry::ComponentTelemetry;
pub use crate::topology::output::{Output, SendError, TrySendError};

use crate::signal::{Signal, SignalKind, Target};

/// The three kinds of component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// Brings signals into the engine.
    Receiver,
    /// Transforms, filters or derives signals.
    Processor,
    /// Sends signals out of the engine.
    Exporter,
}

impl ComponentKind {
    /// Every kind, in config-file order.
    pub const ALL: [ComponentKind; 3] = [
        ComponentKind::Receiver,
        ComponentKind::Processor,
        ComponentKind::Exporter,
    ];

    /// The singular name: `receiver`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Receiver => "receiver",
            ComponentKind::Processor => "processor",
            ComponentKind::Exporter => "exporter",
        }
    }

    /// The config section: `receivers`.
    pub fn section(self) -> &'static str {
        match self {
            ComponentKind::Receiver => "receivers",
            ComponentKind::Processor => "processors",
            ComponentKind::Exporter => "exporters",
        }
    }
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Brings signals into the engine: listens on a socket, reads a file, simulates a system.
///
/// A receiver pushes batches into the [`Output`] it is handed at start. When the pipelines behind
/// it are full, [`Output::try_send`] says so, and a network receiver answers its client with the
/// protocol's back-off signal instead of buffering.
#[async_trait]
pub trait Receiver: Send {
    /// Starts serving. Returns once the receiver accepts data (a listener is bound), so that a
    /// failure to bind fails the start of the whole engine.
    async fn start(&mut self, ctx: ReceiverContext) -> Result<(), ComponentError>;

    /// Stops accepting, finishes or refuses requests in flight, and drops every clone of the
    /// [`Output`], by `deadline`. Idempotent; safe before `start`.
    async fn shutdown(&mut self, deadline: Instant) -> Result<(), ComponentError>;
}

/// Transforms signals between receivers and exporters.
///
/// The engine calls [`Processor::process`] with each batch of a signal the processor takes;
/// batches of other signals bypass it untouched. A processor emits zero or more batches per call.
#[async_trait]
pub trait Processor: Send {
    /// Called once before the first batch (load state, register metrics).
    async fn start(&mut self, _ctx: &ProcessorContext) -> Result<(), ComponentError> {
        Ok(())
    }

    /// Handles one batch. An error drops the batch; the engine counts it as failed.
    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError>;

    /// How often [`Processor::tick`] runs on the engine clock, if at all. Read once, at start.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Timed work: close windows, evaluate rules. Runs on tokio's clock, so tests drive it with
    /// paused time.
    async fn tick(&mut self, _out: &mut Emitter) -> Result<(), ComponentError> {
        Ok(())
    }

    /// The workloads this processor's decisions may name, each with the key path (inside the
    /// processor's table) that configures it, such as `rules[0].scale`. The config loader warns
    /// when no exporter of the pipeline would act on one of them.
    fn scale_targets(&self) -> Vec<(String, Target)> {
        Vec::new()
    }

    /// The signals this instance passes on, when its config narrows what its factory declares
    /// it emits (a processor told to consume its traces). `None`, the default: all of them.
    /// The config loader warns about an exporter that then receives nothing.
    fn emits(&self) -> Option<Vec<SignalKind>> {
        None
    }

    /// A look at the batches receivers refuse while this processor's pipeline is full or the
    /// process is over its memory limit (see [`Tap`]). Asked once, after a successful
    /// [`Processor::start`]. `None`, the default, means refused batches are not seen.
    fn tap(&self) -> Option<Arc<dyn Tap>> {
        None
    }

    /// Flushes whatever the processor holds into `out` and saves its state, by `deadline`.
    /// Called once the input is drained. Idempotent; safe before `start`.
    async fn shutdown(
        &mut self,
        _out: &mut Emitter,
        _deadline: Instant,
    ) -> Result<(), ComponentError> {
        Ok(())
    }
}

/// Sends signals out of the engine.
///
/// Each exporter has its own bounded queue in front of it, so a slow exporter does not stall
/// the others unless it is configured to block. Exporters own their retries: when
/// [`Exporter::export`] returns an error the batch is counted as failed and is not retried by the
/// engine.
#[async_trait]
pub trait Exporter: Send {
    /// Called once before the first batch (connect, open files).
    async fn start(&mut self, _ctx: &ExporterContext) -> Result<(), ComponentError> {
        Ok(())
    }

    /// Sends one batch of a signal the exporter takes.
    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError>;

    /// Returns once every batch handed to [`Exporter::export`] so far has been delivered, or
    /// given up on and counted. A disk buffer calls it before it forgets what it read, so an
    /// exporter that holds batches in memory after `export` returns (to batch or retry them)
    /// must wait for them here. The default suits an exporter whose `export` returns only once
    /// the batch is delivered.
    async fn flush(&mut self) -> Result<(), ComponentError> {
        Ok(())
    }

    /// Flushes buffered data by `deadline`. Called once the queue is drained. Idempotent; safe
    /// before `start`.
    async fn shutdown(&mut self, _deadline: Instant) -> Result<(), ComponentError> {
        Ok(())
    }

    /// For exporters that act on decisions: whether decisions for `target` would be acted on
    /// (an allow-list). `None`, the default, means the exporter does not choose targets.
    fn accepts_target(&self, _target: &Target) -> Option<bool> {
        None
    }
}
