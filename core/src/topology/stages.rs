//! The tasks that run the stages of a pipeline (a processor, an exporter, the fan-out to the
//! exporters), and what they share: counting what they drop, rate-limited warnings.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::warn;

use super::queue::{Barrier, Item, QueueRx, QueueTx, TryPushError};
use super::{ExporterInput, Stop};
use crate::component::{Emitter, Exporter, Processor};
use crate::config::WhenFull;
use crate::signal::{Signal, SignalKind};
use crate::telemetry::ComponentTelemetry;

/// The end of a pipeline: hands each batch to every exporter that takes its signal.
pub(super) struct Fanout {
    pub(super) exporters: Vec<ExporterInput>,
    pub(super) stop: Arc<Stop>,
}

impl Fanout {
    async fn send(&self, signal: Signal) {
        let kind = signal.kind();
        let items = signal.item_count();
        // Indexes, not an iterator adapter: a closure held across `.await` makes the future
        // lose `Send` (rust-lang/rust#64552).
        let last = self.exporters.iter().rposition(|e| e.takes.contains(&kind));
        let mut signal = Some(signal);
        for (i, target) in self.exporters.iter().enumerate() {
            if !target.takes.contains(&kind) {
                continue;
            }
            let batch = if Some(i) == last {
                signal.take()
            } else {
                signal.clone()
            };
            let Some(batch) = batch else { break };
            match target.when_full {
                WhenFull::DropNewest => match target.tx.try_push(batch) {
                    Ok(()) => {}
                    Err(TryPushError::Full) => {
                        target.telemetry.dropped(kind, "queue_full", items);
                    }
                    Err(TryPushError::Closed) => {
                        target.telemetry.dropped(kind, "exporter_stopped", items);
                    }
                },
                WhenFull::Block => {
                    tokio::select! {
                        biased;
                        _ = self.stop.abort.cancelled() => {
                            target.telemetry.dropped(kind, "shutdown_deadline", items);
                        }
                        sent = target.tx.push(batch) => if sent.is_err() {
                            target.telemetry.dropped(kind, "exporter_stopped", items);
                        }
                    }
                }
            }
        }
    }
}

impl Fanout {
    /// Hands a barrier to every exporter queue, behind the batches already there. A blocking
    /// queue waits for a slot; a dropping one drops the barrier when full, as it would a batch.
    async fn send_barrier(&self, barrier: Barrier) {
        for target in &self.exporters {
            match target.when_full {
                WhenFull::DropNewest => target.tx.try_push_barrier(barrier.clone()),
                WhenFull::Block => {
                    tokio::select! {
                        biased;
                        _ = self.stop.abort.cancelled() => return,
                        _ = target.tx.push_barrier(barrier.clone()) => {}
                    }
                }
            }
        }
    }
}

/// Where a stage sends what it produces.
pub(super) enum Downstream {
    Queue(QueueTx),
    Fanout(Fanout),
}

impl Downstream {
    /// Sends a batch on; false when it had to be dropped (the caller counts it).
    async fn send(&self, signal: Signal, stop: &Stop) -> bool {
        match self {
            Downstream::Fanout(f) => {
                f.send(signal).await;
                true
            }
            Downstream::Queue(tx) => tokio::select! {
                biased;
                _ = stop.abort.cancelled() => false,
                sent = tx.push(signal) => sent.is_ok(),
            },
        }
    }
}

impl Downstream {
    /// Sends a barrier on, behind everything this stage has sent.
    async fn send_barrier(&self, barrier: Barrier, stop: &Stop) {
        match self {
            Downstream::Fanout(f) => f.send_barrier(barrier).await,
            Downstream::Queue(tx) => {
                tokio::select! {
                    biased;
                    _ = stop.abort.cancelled() => {}
                    _ = tx.push_barrier(barrier) => {}
                }
            }
        }
    }
}

/// Rate-limits a repeated warning to one per period, counting what it swallowed.
pub(super) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    const PERIOD: Duration = Duration::from_secs(10);

    pub(super) fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// Some(number suppressed since the last log) when it is time to log again.
    pub(super) fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < Self::PERIOD => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

pub(super) async fn run_exporter(
    mut exporter: Box<dyn Exporter>,
    mut rx: QueueRx,
    telemetry: ComponentTelemetry,
    takes: Arc<[SignalKind]>,
    stop: Arc<Stop>,
) {
    let mut limiter = LogLimiter::new();
    loop {
        let signal = tokio::select! {
            biased;
            _ = stop.abort.cancelled() => break,
            item = rx.recv_item() => match item {
                Some(Item::Batch(signal)) => signal,
                // Everything before it has been exported: dropping it tells the sender.
                Some(Item::Barrier(_)) => continue,
                None => break,
            },
        };
        if !takes.contains(&signal.kind()) {
            continue;
        }
        if !export_one(&mut *exporter, signal, &telemetry, &stop, &mut limiter).await {
            break;
        }
    }
    count_leftovers(&mut rx, &telemetry);
    let deadline = stop.deadline();
    stop.component_shutdown("exporter", telemetry.id(), exporter.shutdown(deadline))
        .await;
}

/// Hands one batch to an exporter and counts the outcome. False when the shutdown deadline
/// passed first (the batch is counted as dropped).
pub(super) async fn export_one(
    exporter: &mut dyn Exporter,
    signal: Signal,
    telemetry: &ComponentTelemetry,
    stop: &Stop,
    limiter: &mut LogLimiter,
) -> bool {
    let (kind, items) = (signal.kind(), signal.item_count());
    telemetry.received(kind, items);
    let result = tokio::select! {
        biased;
        _ = stop.abort.cancelled() => {
            telemetry.dropped(kind, "shutdown_deadline", items);
            return false;
        }
        result = exporter.export(signal) => result,
    };
    match result {
        Ok(()) => telemetry.emitted(kind, items),
        Err(err) => {
            telemetry.failed(kind, items);
            if let Some(suppressed) = limiter.ready() {
                warn!(exporter = telemetry.id(), error = %err, items, suppressed, "export failed");
            }
        }
    }
    true
}

pub(super) async fn run_processor(
    mut processor: Box<dyn Processor>,
    takes: &'static [SignalKind],
    mut rx: QueueRx,
    downstream: Downstream,
    telemetry: ComponentTelemetry,
    stop: Arc<Stop>,
) {
    let mut ticker = processor.tick_interval().map(|period| {
        let mut t = tokio::time::interval_at(Instant::now() + period, period);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    });
    let mut out = Emitter::new();
    let mut limiter = LogLimiter::new();
    loop {
        // Cancel safety: `recv` and `Interval::tick` lose nothing when the other branch wins.
        tokio::select! {
            biased;
            _ = stop.abort.cancelled() => break,
            item = rx.recv_item() => {
                let signal = match item {
                    Some(Item::Batch(signal)) => signal,
                    Some(Item::Barrier(barrier)) => {
                        // Behind whatever the batches before it produced.
                        forward(&mut out, &downstream, &telemetry, &stop).await;
                        downstream.send_barrier(barrier, &stop).await;
                        continue;
                    }
                    None => break,
                };
                let (kind, items) = (signal.kind(), signal.item_count());
                if !takes.contains(&kind) {
                    if !downstream.send(signal, &stop).await {
                        telemetry.dropped(kind, "shutdown_deadline", items);
                    }
                    continue;
                }
                telemetry.received(kind, items);
                if let Err(err) = processor.process(signal, &mut out).await {
                    telemetry.failed(kind, items);
                    if let Some(suppressed) = limiter.ready() {
                        warn!(processor = telemetry.id(), error = %err, items, suppressed, "processing failed; batch dropped");
                    }
                }
            }
            _ = tick(&mut ticker) => {
                if let Err(err) = processor.tick(&mut out).await
                    && let Some(suppressed) = limiter.ready()
                {
                    warn!(processor = telemetry.id(), error = %err, suppressed, "timed work failed");
                }
            }
        }
        forward(&mut out, &downstream, &telemetry, &stop).await;
    }
    count_leftovers(&mut rx, &telemetry);
    let deadline = stop.deadline();
    stop.component_shutdown(
        "processor",
        telemetry.id(),
        processor.shutdown(&mut out, deadline),
    )
    .await;
    forward(&mut out, &downstream, &telemetry, &stop).await;
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn forward(
    out: &mut Emitter,
    downstream: &Downstream,
    telemetry: &ComponentTelemetry,
    stop: &Stop,
) {
    for signal in out.drain() {
        let (kind, items) = (signal.kind(), signal.item_count());
        if downstream.send(signal, stop).await {
            telemetry.emitted(kind, items);
        } else {
            telemetry.dropped(kind, "shutdown_deadline", items);
        }
    }
}

pub(super) async fn run_forwarder(mut rx: QueueRx, fanout: Fanout) {
    loop {
        tokio::select! {
            biased;
            _ = fanout.stop.abort.cancelled() => break,
            item = rx.recv_item() => match item {
                Some(Item::Batch(signal)) => fanout.send(signal).await,
                Some(Item::Barrier(barrier)) => fanout.send_barrier(barrier).await,
                None => break,
            },
        }
    }
    // Past the deadline: what is left never reaches an exporter; charge it to the first one
    // that would have taken it, so the loss shows up in that exporter's dropped count.
    rx.close();
    while let Ok(signal) = rx.try_recv() {
        let kind = signal.kind();
        if let Some(e) = fanout.exporters.iter().find(|e| e.takes.contains(&kind)) {
            e.telemetry
                .dropped(kind, "shutdown_deadline", signal.item_count());
        }
    }
}

/// Counts as dropped whatever is still queued when a stage stops early.
pub(super) fn count_leftovers(rx: &mut QueueRx, telemetry: &ComponentTelemetry) {
    rx.close();
    while let Ok(signal) = rx.try_recv() {
        telemetry.dropped(signal.kind(), "shutdown_deadline", signal.item_count());
    }
}
