//! What running components are handed at start.

use super::Abort;
use crate::config::ComponentId;
use crate::health::HealthHandle;
use crate::telemetry::ComponentTelemetry;
use crate::topology::output::Output;

pub use crate::config::BuildContext;

/// Handed to a receiver at start.
pub struct ReceiverContext {
    /// The receiver's id.
    pub id: ComponentId,
    /// Where to push batches; drop every clone of it to stop.
    pub output: Output,
    /// Counters labelled with the receiver's id.
    pub telemetry: ComponentTelemetry,
    /// Lets the receiver report that it is not ready.
    pub health: HealthHandle,
    /// Lets the receiver end the whole run with an error.
    pub abort: Abort,
}

/// Handed to a processor at start.
pub struct ProcessorContext {
    /// The processor's id.
    pub id: ComponentId,
    /// The pipeline this instance belongs to.
    pub pipeline: String,
    /// Counters labelled with the processor's id.
    pub telemetry: ComponentTelemetry,
    /// Lets the processor report that it is not ready.
    pub health: HealthHandle,
}

/// Handed to an exporter at start.
pub struct ExporterContext {
    /// The exporter's id.
    pub id: ComponentId,
    /// Counters labelled with the exporter's id.
    pub telemetry: ComponentTelemetry,
    /// Lets the exporter report that it is not ready.
    pub health: HealthHandle,
}
