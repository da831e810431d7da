//! Helpers for testing components outside a running engine: an [`Output`] whose batches land in
//! a channel you read, and the contexts the engine would hand a component. Compiled only for
//! tests, benches and examples: the `testing` feature.

use std::sync::Arc;

use crate::component::{
    ComponentKind, ExporterContext, Failures, ProcessorContext, ReceiverContext,
};
use crate::config::ComponentId;
use crate::health::Health;
use crate::telemetry::ComponentTelemetry;
use crate::topology::output::Output;
use crate::topology::queue::{QueueRx, queue};

fn id(id: &str) -> ComponentId {
    // Test helpers take ids from test code; a bad one is a bug in the test.
    ComponentId::parse(id).unwrap_or_else(|e| panic!("{e}"))
}

/// An output feeding one queue of `capacity` batches (and no item bound), and the queue's
/// receiving end.
pub fn output(receiver_id: &str, capacity: usize) -> (Output, QueueRx) {
    output_with_taps(receiver_id, capacity, Vec::new())
}

/// Like [`output`], with `taps` that see what the queue had no room for.
pub fn output_with_taps(
    receiver_id: &str,
    capacity: usize,
    taps: Vec<std::sync::Arc<dyn crate::component::Tap>>,
) -> (Output, QueueRx) {
    let (tx, rx) = queue(capacity, usize::MAX);
    let telemetry = ComponentTelemetry::new(ComponentKind::Receiver, &id(receiver_id));
    (Output::new(vec![tx], taps, false, telemetry), rx)
}

/// The context a receiver gets at start, around `output`.
pub fn receiver_context(receiver_id: &str, output: Output) -> ReceiverContext {
    let id = id(receiver_id);
    ReceiverContext {
        telemetry: ComponentTelemetry::new(ComponentKind::Receiver, &id),
        health: Health::new().handle(format!("receiver/{id}")),
        abort: Failures::new().handle(id.clone()),
        output,
        id,
    }
}

/// Like [`receiver_context`], with a look at the error the receiver ends the run with.
pub fn receiver_context_watched(receiver_id: &str, output: Output) -> (ReceiverContext, Failed) {
    let mut ctx = receiver_context(receiver_id, output);
    let failures = Failures::new();
    ctx.abort = failures.handle(ctx.id.clone());
    (ctx, Failed(failures))
}

/// What a receiver started with [`receiver_context_watched`] reported through its
/// [`crate::component::Abort`].
pub struct Failed(Arc<Failures>);

impl Failed {
    /// Waits for the receiver to end the run, and returns the error with its causes.
    pub async fn error(&self) -> String {
        self.0.reported().await;
        self.0
            .take()
            .map(|(_, err)| crate::error::error_chain(&err))
            .unwrap_or_default()
    }
}

/// The context a processor gets at start.
pub fn processor_context(processor_id: &str) -> ProcessorContext {
    let id = id(processor_id);
    ProcessorContext {
        telemetry: ComponentTelemetry::new(ComponentKind::Processor, &id),
        health: Health::new().handle(format!("processor/test/{id}")),
        pipeline: "test".to_string(),
        id,
    }
}

/// The context an exporter gets at start.
pub fn exporter_context(exporter_id: &str) -> ExporterContext {
    let id = id(exporter_id);
    ExporterContext {
        telemetry: ComponentTelemetry::new(ComponentKind::Exporter, &id),
        health: Health::new().handle(format!("exporter/{id}")),
        id,
    }
}
