//! The bounded queue on every edge of the topology: at most `queue_size` batches and at most
//! `queue_items` items (spans or decisions) in them.
//!
//! A bound in batches alone leaves memory to the batch size the clients choose: 64 batches of
//! 8192 spans hold 128 times what 64 batches of 64 spans do. The item bound is what makes a
//! queue's memory a matter of configuration. A batch larger than the whole item bound still
//! passes, alone, so no batch is refused for ever.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::signal::Signal;

/// What travels in a queue: a batch, holding its share of the item bound until it is taken
/// out, or a barrier that follows the batches sent before it.
pub(crate) enum Queued {
    Batch {
        signal: Signal,
        _items: OwnedSemaphorePermit,
    },
    Barrier(Barrier),
}

/// A marker that travels behind the batches sent before it, through every stage, to every
/// exporter of a pipeline. The sender learns that all of it has been handled when the last
/// clone is dropped: each stage drops its clone once everything queued ahead of it is done.
#[derive(Clone, Debug)]
pub(crate) struct Barrier {
    _held: mpsc::Sender<()>,
}

impl Barrier {
    /// A barrier, and the future that resolves once every clone of it is dropped.
    pub(crate) fn new() -> (Self, impl Future<Output = ()> + Send) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        (Self { _held: tx }, async move {
            // Nothing is ever sent: `recv` returns None once every sender is gone.
            while rx.recv().await.is_some() {}
        })
    }
}

impl Queued {
    fn into_item(self) -> Item {
        match self {
            Queued::Batch { signal, .. } => Item::Batch(signal),
            Queued::Barrier(b) => Item::Barrier(b),
        }
    }
}

/// What a stage takes out of its queue.
pub(crate) enum Item {
    Batch(Signal),
    Barrier(Barrier),
}

/// The sending end; cheap to clone.
#[derive(Clone)]
pub(crate) struct QueueTx {
    tx: mpsc::Sender<Queued>,
    items: Arc<Semaphore>,
    max_items: usize,
}

/// Why a batch did not go in now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TryPushError {
    /// No room, in batches or in items.
    Full,
    /// The receiving stage is gone.
    Closed,
}

/// Room for one batch in one queue, taken ahead of sending it (a receiver feeding several
/// pipelines takes room in all of them before it sends to any).
pub(crate) struct Room<'a> {
    slot: mpsc::Permit<'a, Queued>,
    items: OwnedSemaphorePermit,
}

impl Room<'_> {
    pub(crate) fn send(self, signal: Signal) {
        self.slot.send(Queued::Batch {
            signal,
            _items: self.items,
        });
    }
}

/// A queue of at most `batches` batches and `items` items (both at least 1).
pub(crate) fn queue(batches: usize, items: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(batches.max(1));
    let max_items = items.clamp(1, Semaphore::MAX_PERMITS);
    let tx = QueueTx {
        tx,
        items: Arc::new(Semaphore::new(max_items)),
        max_items,
    };
    (tx, QueueRx { rx })
}

impl QueueTx {
    /// The item permits a batch takes: its item count, capped at the whole bound.
    fn weight(&self, signal: &Signal) -> u32 {
        u32::try_from(signal.item_count().min(self.max_items)).unwrap_or(u32::MAX)
    }

    /// Room for `signal` now, or why not.
    pub(crate) fn try_room(&self, signal: &Signal) -> Result<Room<'_>, TryPushError> {
        let items = match Arc::clone(&self.items).try_acquire_many_owned(self.weight(signal)) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(TryPushError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(TryPushError::Closed),
        };
        match self.tx.try_reserve() {
            Ok(slot) => Ok(Room { slot, items }),
            Err(mpsc::error::TrySendError::Full(())) => Err(TryPushError::Full),
            Err(mpsc::error::TrySendError::Closed(())) => Err(TryPushError::Closed),
        }
    }

    /// Room for `signal`, waiting for it; None when the queue is closed. Cancel safe: nothing
    /// is held once the future is dropped.
    pub(crate) async fn room(&self, signal: &Signal) -> Option<Room<'_>> {
        let items = Arc::clone(&self.items)
            .acquire_many_owned(self.weight(signal))
            .await
            .ok()?;
        let slot = self.tx.reserve().await.ok()?;
        Some(Room { slot, items })
    }

    /// Sends now if there is room; otherwise the batch is dropped and the caller counts it.
    pub(crate) fn try_push(&self, signal: Signal) -> Result<(), TryPushError> {
        let room = self.try_room(&signal)?;
        room.send(signal);
        Ok(())
    }

    /// Sends, waiting for room; the batch comes back when the queue is closed.
    pub(crate) async fn push(&self, signal: Signal) -> Result<(), Signal> {
        match self.room(&signal).await {
            Some(room) => {
                room.send(signal);
                Ok(())
            }
            None => Err(signal),
        }
    }

    /// Queues a barrier behind what is queued, waiting for a slot; false when the queue is
    /// closed. Barriers take a slot but no item permits.
    pub(crate) async fn push_barrier(&self, barrier: Barrier) -> bool {
        self.tx.send(Queued::Barrier(barrier)).await.is_ok()
    }

    /// Queues a barrier if a slot is free now. A barrier that does not fit is dropped, which
    /// releases its waiter early: only a dropping (`drop_newest`) queue does that.
    pub(crate) fn try_push_barrier(&self, barrier: Barrier) {
        let _ = self.tx.try_send(Queued::Barrier(barrier));
    }

    /// True when no batch fits now, in number or in items (one of a single item, at least).
    pub(crate) fn is_full(&self) -> bool {
        self.tx.capacity() == 0 || self.items.available_permits() == 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// A handle for the queue gauges that does not keep the queue open.
    pub(crate) fn probe(&self) -> QueueGauge {
        QueueGauge {
            tx: self.tx.downgrade(),
            items: Arc::clone(&self.items),
            max_items: self.max_items,
        }
    }
}

/// Reads a queue's depth for the metrics without keeping it open.
pub(crate) struct QueueGauge {
    tx: mpsc::WeakSender<Queued>,
    items: Arc<Semaphore>,
    max_items: usize,
}

impl QueueGauge {
    /// Batches and items in the queue now.
    pub(crate) fn depth(&self, capacity: usize) -> (usize, usize) {
        // A short-lived upgrade: it cannot hold a queue open past this statement.
        let batches = self
            .tx
            .upgrade()
            .map_or(0, |tx| capacity.saturating_sub(tx.capacity()));
        let items = self
            .max_items
            .saturating_sub(self.items.available_permits());
        (batches, items)
    }

    pub(crate) fn max_items(&self) -> usize {
        self.max_items
    }
}

/// The receiving end. Taking a batch out frees its room.
pub struct QueueRx {
    rx: mpsc::Receiver<Queued>,
}

impl QueueRx {
    /// The next batch; None once every sender is gone and the queue is empty. Barriers are
    /// passed over (and so released).
    pub async fn recv(&mut self) -> Option<Signal> {
        loop {
            if let Item::Batch(signal) = self.recv_item().await? {
                return Some(signal);
            }
        }
    }

    /// The next batch if one is queued now; barriers are passed over.
    pub fn try_recv(&mut self) -> Result<Signal, mpsc::error::TryRecvError> {
        loop {
            if let Item::Batch(signal) = self.try_recv_item()? {
                return Ok(signal);
            }
        }
    }

    /// The next batch or barrier.
    pub(crate) async fn recv_item(&mut self) -> Option<Item> {
        self.rx.recv().await.map(Queued::into_item)
    }

    pub(crate) fn try_recv_item(&mut self) -> Result<Item, mpsc::error::TryRecvError> {
        self.rx.try_recv().map(Queued::into_item)
    }

    /// Refuses further batches; those queued can still be taken.
    pub fn close(&mut self) {
        self.rx.close();
    }
}
