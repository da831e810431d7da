//! The `otlp` receiver: OTLP/gRPC and OTLP/HTTP (protobuf and JSON) trace intake.
//!
//! Both transports share one intake path (`Shared::accept`): validate spans, drop and report
//! the invalid ones in `partial_success`, and hand the rest to the pipelines without waiting.
//! A full pipeline is answered with back-off (gRPC RESOURCE_EXHAUSTED with RetryInfo, HTTP 429
//! with Retry-After), never buffered here.

pub mod body;
mod config;
mod grpc;
mod http;
mod tls;
pub mod validate;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracescale_core::component::{
    BuildContext, ComponentError, ComponentTelemetry, Output, Receiver, ReceiverContext,
    TrySendError,
};
use tracescale_core::config::{BuildError, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind, Traces};

pub use config::OtlpReceiverConfig;

/// Which listener a request came through, for metrics labels.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Transport {
    Grpc,
    Http,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// How the intake answered a request.
pub(crate) enum Accepted {
    /// Taken; some spans may have been rejected.
    Ok(Option<ExportTracePartialSuccess>),
    /// The pipeline is full: the client should back off and retry.
    Full,
    /// The receiver is shutting down: the client should retry elsewhere or later.
    Closed,
}

/// State shared by both listeners and every request.
pub(crate) struct Shared {
    id: String,
    /// Taken out at shutdown, so that no lingering connection keeps the pipeline open.
    output: RwLock<Option<Output>>,
    telemetry: ComponentTelemetry,
    bearer: Option<String>,
    permits: Arc<Semaphore>,
    pub(crate) retry_after: Duration,
    pub(crate) decompressed_limit: usize,
}

impl Shared {
    /// Validates, then hands the valid spans to the pipelines without waiting for room; with a
    /// disk-buffered exporter behind, waits until they are on disk before it says OK.
    pub(crate) async fn accept(&self, request: ExportTraceServiceRequest) -> Accepted {
        let mut resource_spans = request.resource_spans;
        let total = Traces::new(std::mem::take(&mut resource_spans));
        let received = total.span_count();
        self.telemetry.received(SignalKind::Traces, received);
        let mut resource_spans = total.resource_spans;
        let rejected = validate::retain_valid(&mut resource_spans);
        self.telemetry
            .dropped(SignalKind::Traces, "invalid_span", rejected.spans);
        let partial = rejected.first.map(|reason| ExportTracePartialSuccess {
            rejected_spans: rejected.spans as i64,
            error_message: format!(
                "{} of {received} spans rejected; first reason: {}",
                rejected.spans,
                reason.message()
            ),
        });
        if rejected.kept == 0 {
            return Accepted::Ok(partial);
        }
        let output = self
            .output
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(output) = output else {
            self.telemetry
                .dropped(SignalKind::Traces, "refused_shutting_down", rejected.kept);
            return Accepted::Closed;
        };
        let signal = Signal::Traces(Traces::new(resource_spans));
        if tracescale_core::memory::pressure() != tracescale_core::memory::Pressure::Normal {
            // Above the soft memory limit: the same back-off answer as a full pipeline, and the
            // pipeline's taps still see the spans (the latency rules must not go blind).
            output.shed(&signal);
            self.telemetry
                .dropped(SignalKind::Traces, "refused_memory_limit", rejected.kept);
            return Accepted::Full;
        }
        match output.try_send(signal) {
            // Taken; with a disk buffer behind, OK only once the spans are synced.
            Ok(()) => match output.confirm().await {
                Ok(()) => Accepted::Ok(partial),
                Err(_) => Accepted::Closed,
            },
            Err(TrySendError::Full(_)) => {
                self.telemetry
                    .dropped(SignalKind::Traces, "refused_pipeline_full", rejected.kept);
                Accepted::Full
            }
            Err(TrySendError::Closed(_)) => {
                self.telemetry
                    .dropped(SignalKind::Traces, "refused_shutting_down", rejected.kept);
                Accepted::Closed
            }
        }
    }

    /// Checks `Authorization: Bearer …` when a token is configured.
    pub(crate) fn authorized(&self, header: Option<&[u8]>) -> bool {
        let Some(token) = &self.bearer else {
            return true;
        };
        let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        constant_time_eq(given, token.as_bytes())
    }

    /// A slot for one request, or None when `max_concurrent_requests` are in flight.
    pub(crate) fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Counts a request refused before its spans could be read.
    pub(crate) fn refused(&self, transport: Transport, reason: &'static str) {
        metrics::counter!(
            "tracescale_receiver_otlp_refused_requests_total",
            "component" => self.id.clone(),
            "transport" => transport.as_str(),
            "reason" => reason
        )
        .increment(1);
    }
}

/// Compares secrets without an early exit, so timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves OTLP over gRPC and HTTP.
pub struct OtlpReceiver {
    config: OtlpReceiverConfig,
    shared: Option<Arc<Shared>>,
    stop: CancellationToken,
    servers: Vec<JoinHandle<()>>,
    bound: Vec<(&'static str, SocketAddr)>,
}

impl OtlpReceiver {
    /// A receiver for `config`; listeners are bound at start.
    pub fn new(config: OtlpReceiverConfig) -> Self {
        Self {
            config,
            shared: None,
            stop: CancellationToken::new(),
            servers: Vec::new(),
            bound: Vec::new(),
        }
    }

    /// The addresses bound at start: `("grpc", addr)`, `("http", addr)`. Useful with port 0.
    pub fn local_addresses(&self) -> &[(&'static str, SocketAddr)] {
        &self.bound
    }
}

#[async_trait]
impl Receiver for OtlpReceiver {
    async fn start(&mut self, ctx: ReceiverContext) -> Result<(), ComponentError> {
        tracescale_core::telemetry::describe(
            &[
                (
                    "tracescale_receiver_otlp_refused_requests_total",
                    "Requests refused before their spans were read, by transport and reason.",
                ),
                (
                    "tracescale_receiver_otlp_tls_reloads_total",
                    "Reloads of the TLS certificate, key and client CA, by outcome.",
                ),
            ],
            &[],
            &[],
        );
        let shared = Arc::new(Shared {
            id: ctx.id.to_string(),
            output: RwLock::new(Some(ctx.output)),
            telemetry: ctx.telemetry,
            bearer: self.config.bearer_token.clone(),
            permits: Arc::new(Semaphore::new(self.config.max_concurrent_requests)),
            retry_after: self.config.retry_after.get(),
            decompressed_limit: self.config.max_decompressed_size.as_usize(),
        });
        self.shared = Some(shared.clone());
        let tls = match &self.config.tls {
            Some(t) => {
                let current = tls::Current::load(t).map_err(ComponentError::other)?;
                if let Some(interval) = t.reload_interval {
                    self.servers.push(current.spawn_reload(
                        t.clone(),
                        interval.get(),
                        ctx.id.to_string(),
                        self.stop.clone(),
                    ));
                }
                Some(current)
            }
            None => None,
        };
        if let Some(address) = self.config.grpc {
            let (bound, task) = grpc::serve(
                address,
                shared.clone(),
                &self.config,
                tls.clone(),
                self.stop.clone(),
            )
            .await?;
            tracing::info!(receiver = %ctx.id, address = %bound, "OTLP/gRPC listening");
            self.bound.push(("grpc", bound));
            self.servers.push(task);
        }
        if let Some(address) = self.config.http {
            let (bound, task) = http::serve(
                address,
                shared.clone(),
                &self.config,
                tls,
                self.stop.clone(),
            )
            .await?;
            tracing::info!(receiver = %ctx.id, address = %bound, "OTLP/HTTP listening");
            self.bound.push(("http", bound));
            self.servers.push(task);
        }
        Ok(())
    }

    async fn shutdown(&mut self, deadline: Instant) -> Result<(), ComponentError> {
        // New requests are answered UNAVAILABLE / 503 from here on; requests already past
        // `accept` have their spans in the pipeline.
        if let Some(shared) = self.shared.take() {
            shared
                .output
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        self.stop.cancel();
        let mut result = Ok(());
        for mut task in self.servers.drain(..) {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                result = Err(ComponentError::Deadline("otlp receiver"));
            }
        }
        result
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Receiver>, BuildError> {
    Ok(Box::new(OtlpReceiver::new(
        OtlpReceiverConfig::from_context(ctx)?,
    )))
}

inventory::submit! {
    ComponentFactory {
        type_name: "otlp",
        description: "receives traces over OTLP/gRPC and OTLP/HTTP (protobuf and JSON)",
        takes: &[],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<OtlpReceiverConfig>,
        build: Build::Receiver(build),
    }
}

#[cfg(test)]
mod tests;
