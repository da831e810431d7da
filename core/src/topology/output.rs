//! The receiver's end of a pipeline.

use std::sync::Arc;

use super::queue::{Barrier, QueueTx, Room, TryPushError};
use crate::component::Tap;
use crate::signal::Signal;
use crate::telemetry::ComponentTelemetry;

/// Where a receiver pushes batches: the input queue of every pipeline that lists it.
///
/// Cloning is cheap. A pipeline drains and stops once every clone of every `Output` feeding it
/// is dropped, so a receiver stops intake by dropping its clones.
#[derive(Clone)]
pub struct Output {
    inner: Arc<Inner>,
}

struct Inner {
    pipelines: Vec<QueueTx>,
    /// The taps of the processors of those pipelines: they see what is refused.
    taps: Vec<Arc<dyn Tap>>,
    /// Some pipeline ends in a disk-buffered exporter: OK waits for the sync.
    durable: bool,
    telemetry: ComponentTelemetry,
}

/// The pipelines are closed (the engine is stopping); the batch comes back.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline is shut down")]
pub struct SendError(pub Signal);

/// The pipelines are closed (the engine is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the pipeline is shut down")]
pub struct ClosedError;

/// Why [`Output::try_send`] did not take a batch; the batch comes back either way.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// A pipeline's queue is full: answer the client with back-off.
    #[error("the pipeline is full")]
    Full(Signal),
    /// The engine is stopping: answer the client that the service is unavailable.
    #[error("the pipeline is shut down")]
    Closed(Signal),
}

impl TrySendError {
    /// The batch that was not taken.
    pub fn into_inner(self) -> Signal {
        match self {
            TrySendError::Full(s) | TrySendError::Closed(s) => s,
        }
    }
}

impl Output {
    pub(crate) fn new(
        pipelines: Vec<QueueTx>,
        taps: Vec<Arc<dyn Tap>>,
        durable: bool,
        telemetry: ComponentTelemetry,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pipelines,
                taps,
                durable,
                telemetry,
            }),
        }
    }

    /// Sends a batch to every pipeline, waiting for room. Cancel safe: if the future is dropped
    /// before it completes, no pipeline received the batch.
    pub async fn send(&self, signal: Signal) -> Result<(), SendError> {
        let pipelines = &self.inner.pipelines;
        let mut rooms = Vec::with_capacity(pipelines.len());
        for tx in pipelines {
            match tx.room(&signal).await {
                Some(room) => rooms.push(room),
                None => return Err(SendError(signal)),
            }
        }
        self.deliver(rooms, signal);
        Ok(())
    }

    /// Sends a batch to every pipeline if all of them have room now; otherwise none gets it,
    /// and the pipelines' taps see it (see [`Tap`]).
    pub fn try_send(&self, signal: Signal) -> Result<(), TrySendError> {
        let pipelines = &self.inner.pipelines;
        let mut rooms = Vec::with_capacity(pipelines.len());
        for tx in pipelines {
            match tx.try_room(&signal) {
                Ok(room) => rooms.push(room),
                Err(TryPushError::Full) => {
                    drop(rooms);
                    self.shed(&signal);
                    return Err(TrySendError::Full(signal));
                }
                Err(TryPushError::Closed) => return Err(TrySendError::Closed(signal)),
            }
        }
        self.deliver(rooms, signal);
        Ok(())
    }

    /// Waits until every batch this output sent before the call has been handled by every
    /// processor and exporter of its pipelines: processed, and what that produced (decisions
    /// included) exported or refused. A receiver that must not run ahead of its pipeline, such
    /// as a simulation that applies the decisions its own spans caused, calls it between steps.
    ///
    /// Batches that a full `drop_newest` exporter queue drops do not hold it up. Cancel safe.
    pub async fn settle(&self) -> Result<(), ClosedError> {
        let (barrier, settled) = Barrier::new();
        for tx in &self.inner.pipelines {
            if !tx.push_barrier(barrier.clone()).await {
                return Err(ClosedError);
            }
        }
        drop(barrier);
        settled.await;
        Ok(())
    }

    /// Waits until what this output sent is as safe as its pipelines promise, before a
    /// receiver answers OK: when a pipeline ends in an exporter with a disk buffer, until the
    /// batches are synced to disk (and handled by that pipeline's other exporters, as
    /// [`Output::settle`] waits); otherwise at once, the batches being in the pipelines' queues.
    pub async fn confirm(&self) -> Result<(), ClosedError> {
        if self.inner.durable {
            self.settle().await
        } else {
            Ok(())
        }
    }

    /// Shows a batch the receiver refuses for a reason of its own, such as the memory limit, to
    /// the pipelines' taps. [`Output::try_send`] does this itself when a pipeline is full.
    pub fn shed(&self, signal: &Signal) {
        for tap in &self.inner.taps {
            tap.refused(signal);
        }
    }

    /// True when some pipeline has no room for another batch now.
    pub fn is_full(&self) -> bool {
        self.inner.pipelines.iter().any(QueueTx::is_full)
    }

    /// True once the engine has closed the pipelines.
    pub fn is_closed(&self) -> bool {
        self.inner.pipelines.iter().any(QueueTx::is_closed)
    }

    fn deliver(&self, mut rooms: Vec<Room<'_>>, signal: Signal) {
        let (kind, items) = (signal.kind(), signal.item_count());
        if let Some(last) = rooms.pop() {
            for room in rooms {
                room.send(signal.clone());
            }
            last.send(signal);
        }
        self.inner.telemetry.emitted(kind, items);
    }
}
