//! The sender task: batches what `export` hands it by size and by time, sends each batch with
//! retries, counts the outcome, and on shutdown drains by the deadline.
//!
//! Memory is bounded by a semaphore of span permits shared with `export`: `export` takes permits
//! before it hands spans over, and the sender gives them back once a batch is sent or dropped.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracescale_core::component::ExporterContext;
use tracescale_core::health::HealthHandle;
use tracing::warn;

use super::batch::Pending;
use super::config::ExporterSettings;
use super::counters::{Counters, DropReason};
use super::retry::Verdict;
use super::transport::{Accepted, Transport};
use crate::backoff::{Backoff, Jitter};

/// The shortest gap between two warnings of one kind from one exporter.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Set once, by shutdown: the deadline by which everything must be sent or dropped.
pub(super) type Deadline = watch::Receiver<Option<Instant>>;

/// How the exporter steers its sender besides handing it spans.
pub(super) struct Control {
    /// The shutdown deadline.
    pub(super) deadline: Deadline,
    /// Notified by a flush: send everything handed over so far now, the partial batch too,
    /// rather than after `timeout`.
    pub(super) flush: Arc<Notify>,
}

/// What happened to one batch.
enum Outcome {
    Delivered(Accepted),
    Dropped(DropReason),
}

/// The background half of the exporter.
pub(super) struct Sender {
    id: String,
    settings: Arc<ExporterSettings>,
    transport: Transport,
    rx: mpsc::Receiver<Vec<ResourceSpans>>,
    room: Arc<Semaphore>,
    deadline: Deadline,
    flush_now: Arc<Notify>,
    pending: Pending,
    /// When the oldest span in `pending` arrived (or the last batch was sent): the timeout
    /// counts from here.
    since: Option<Instant>,
    counters: Counters,
    jitter: Jitter,
    drop_log: LogLimiter,
    partial_log: LogLimiter,
    retry_log: LogLimiter,
    health: HealthHandle,
    /// The last attempt failed and is being retried: `/readyz` says `degraded`.
    degraded: bool,
}

impl Sender {
    /// A sender for the exporter of `ctx` (its id, its health), fed by `rx`, giving permits
    /// back to `room`.
    pub(super) fn new(
        ctx: &ExporterContext,
        settings: Arc<ExporterSettings>,
        transport: Transport,
        rx: mpsc::Receiver<Vec<ResourceSpans>>,
        room: Arc<Semaphore>,
        control: Control,
        counters: Counters,
    ) -> Self {
        Self {
            id: ctx.id.to_string(),
            settings,
            transport,
            rx,
            room,
            deadline: control.deadline,
            flush_now: control.flush,
            pending: Pending::new(),
            since: None,
            counters,
            jitter: Jitter::from_entropy(),
            drop_log: LogLimiter::default(),
            partial_log: LogLimiter::default(),
            retry_log: LogLimiter::default(),
            health: ctx.health.clone(),
            degraded: false,
        }
    }

    /// Runs until the exporter closes the channel, then sends what is left.
    pub(super) async fn run(mut self) {
        loop {
            let flush_at = self
                .since
                .and_then(|t| t.checked_add(self.settings.timeout));
            // Cancel safety: when the timer wins, `recv` has taken nothing from the channel.
            tokio::select! {
                chunk = self.rx.recv() => match chunk {
                    Some(resource_spans) => self.take(resource_spans).await,
                    None => break,
                },
                () = sleep_until_some(flush_at) => self.flush(true).await,
                () = self.flush_now.notified() => {
                    // Everything handed over before the flush was asked for is in the channel.
                    while let Ok(resource_spans) = self.rx.try_recv() {
                        self.take(resource_spans).await;
                    }
                    self.flush(true).await;
                }
            }
        }
        self.flush(true).await;
    }

    /// Adds spans to the pending batch, sending it once full.
    async fn take(&mut self, resource_spans: Vec<ResourceSpans>) {
        if self.pending.is_empty() {
            self.since = Some(Instant::now());
        }
        self.pending.push(resource_spans);
        if self.pending.len() >= self.settings.send_batch_size {
            self.flush(false).await;
        }
    }

    /// Sends every full batch, and with `all` the partial one too.
    async fn flush(&mut self, all: bool) {
        let size = self.settings.send_batch_size;
        while self.pending.len() >= size || (all && !self.pending.is_empty()) {
            let (batch, spans) = self.pending.take(size);
            self.deliver(batch, spans).await;
        }
        // As in the Collector's batch processor, the timer restarts after a send.
        self.since = (!self.pending.is_empty()).then(Instant::now);
    }

    /// Sends one batch, retrying as configured, and accounts for every span in it.
    async fn deliver(&mut self, batch: Vec<ResourceSpans>, spans: usize) {
        let outcome = self.attempt_all(batch, spans).await;
        let spans_u64 = spans as u64;
        // Counting and giving the permits back happen with no await in between, so an abort at
        // the shutdown deadline finds every span either counted here or still holding a permit,
        // never both.
        match outcome {
            Outcome::Delivered(accepted) => {
                let rejected = accepted.rejected_spans.min(spans_u64);
                self.counters.sent(spans_u64 - rejected);
                self.counters.dropped(DropReason::Rejected, rejected);
                if (rejected > 0 || !accepted.message.is_empty())
                    && let Some(suppressed) = self.partial_log.ready()
                {
                    warn!(
                        component = %self.id,
                        rejected,
                        message = %accepted.message,
                        suppressed,
                        "the server accepted a request only in part"
                    );
                }
            }
            Outcome::Dropped(reason) => self.counters.dropped(reason, spans_u64),
        }
        self.room.add_permits(spans);
    }

    async fn attempt_all(&mut self, batch: Vec<ResourceSpans>, spans: usize) -> Outcome {
        let request = ExportTraceServiceRequest {
            resource_spans: batch,
        };
        let payload = match self.transport.encode(&request) {
            Ok(payload) => payload,
            Err(err) => {
                self.log_drop(spans, DropReason::PermanentError, &err);
                return Outcome::Dropped(DropReason::PermanentError);
            }
        };
        // Only the encoded bytes are needed from here on, however long the retries take.
        drop(request);
        let policy = self.settings.retry;
        let first = Instant::now();
        let mut backoff = Backoff::new(policy.backoff());
        loop {
            if self.deadline.borrow().is_some_and(|d| Instant::now() >= d) {
                self.log_drop(spans, DropReason::Shutdown, &"the shutdown deadline passed");
                return Outcome::Dropped(DropReason::Shutdown);
            }
            let timeout = self.settings.timeout_per_request;
            let result = tokio::select! {
                result = self.transport.send(&payload, timeout) => result,
                () = until_deadline(&mut self.deadline) => {
                    self.log_drop(spans, DropReason::Shutdown, &"the shutdown deadline passed during a request");
                    return Outcome::Dropped(DropReason::Shutdown);
                }
            };
            let err = match result {
                Ok(accepted) => {
                    if std::mem::take(&mut self.degraded) {
                        self.health.ready(None);
                        warn!(component = %self.id, endpoint = %self.settings.endpoint, "the backend accepts requests again");
                    }
                    return Outcome::Delivered(accepted);
                }
                Err(err) => err,
            };
            let Verdict::Retry { after } = err.verdict() else {
                self.log_drop(spans, DropReason::PermanentError, &err);
                return Outcome::Dropped(DropReason::PermanentError);
            };
            if !policy.enabled {
                self.log_drop(spans, DropReason::RetriesExhausted, &err);
                return Outcome::Dropped(DropReason::RetriesExhausted);
            }
            let wait = backoff.next(&mut self.jitter, after);
            let resume = Instant::now().checked_add(wait);
            let too_late = policy
                .max_elapsed_time
                .is_some_and(|max| first.elapsed().saturating_add(wait) > max);
            let Some(resume) = resume.filter(|_| !too_late) else {
                self.log_drop(spans, DropReason::RetriesExhausted, &err);
                return Outcome::Dropped(DropReason::RetriesExhausted);
            };
            self.degraded = true;
            self.health
                .degraded(format!("{}: {err}; retrying", self.settings.endpoint));
            if let Some(suppressed) = self.retry_log.ready() {
                warn!(
                    component = %self.id,
                    endpoint = %self.settings.endpoint,
                    error = %err,
                    ?wait,
                    spans,
                    suppressed,
                    "export failed; retrying"
                );
            }
            if !wait_until(&mut self.deadline, resume).await {
                self.log_drop(spans, DropReason::Shutdown, &err);
                return Outcome::Dropped(DropReason::Shutdown);
            }
            self.counters.retried();
        }
    }

    fn log_drop(&mut self, spans: usize, reason: DropReason, err: &dyn std::fmt::Display) {
        if let Some(suppressed) = self.drop_log.ready() {
            warn!(
                component = %self.id,
                endpoint = %self.settings.endpoint,
                spans,
                reason = reason.as_str(),
                error = %err,
                suppressed,
                "dropped spans"
            );
        }
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Returns when the shutdown deadline passes; never, before shutdown.
async fn until_deadline(deadline: &mut Deadline) {
    loop {
        let current = *deadline.borrow_and_update();
        if let Some(at) = current {
            sleep_until(at).await;
            return;
        }
        if deadline.changed().await.is_err() {
            // The exporter is gone without a shutdown; its drop aborts this task.
            std::future::pending::<()>().await;
        }
    }
}

/// Waits until `resume`; false, at once, when a shutdown deadline comes before it.
async fn wait_until(deadline: &mut Deadline, resume: Instant) -> bool {
    loop {
        let current = *deadline.borrow_and_update();
        if current.is_some_and(|at| resume > at) {
            return false;
        }
        tokio::select! {
            () = sleep_until(resume) => return true,
            changed = deadline.changed(), if current.is_none() => {
                if changed.is_err() {
                    sleep_until(resume).await;
                    return true;
                }
            }
        }
    }
}

/// Lets one line through per [`LOG_INTERVAL`] and counts the ones it holds back.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(lines held back since the last one)` when a line may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_INTERVAL)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}
