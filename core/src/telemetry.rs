//! Self-telemetry: per-component counters through the `metrics` crate, served for Prometheus on
//! the `[service] telemetry_address` listener together with `/healthz` and `/readyz`.
//!
//! Every component is counted under one scheme, in items (spans or decisions), labelled with its
//! id and the signal:
//!
//! | metric | meaning |
//! |---|---|
//! | `tracescale_<kind>_received_total` | items that reached the component |
//! | `tracescale_<kind>_emitted_total` | items it passed on (exporters: sent) |
//! | `tracescale_<kind>_dropped_total` | items it dropped, with a `reason` label |
//! | `tracescale_<kind>_failed_total` | items in batches that failed |
//! | `tracescale_queue_depth` / `tracescale_queue_capacity` | batches in each bounded queue |

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::Counter;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentError, ComponentKind};
use crate::config::ComponentId;
use crate::health::Health;
use crate::signal::SignalKind;

/// Counters for one component, registered once and cloned into its tasks.
#[derive(Clone)]
pub struct ComponentTelemetry {
    kind: ComponentKind,
    id: String,
    received: [Counter; 2],
    emitted: [Counter; 2],
    failed: [Counter; 2],
}

fn index(signal: SignalKind) -> usize {
    match signal {
        SignalKind::Traces => 0,
        SignalKind::Decisions => 1,
    }
}

impl ComponentTelemetry {
    /// Registers the counters of one component.
    pub fn new(kind: ComponentKind, id: &ComponentId) -> Self {
        let id = id.to_string();
        let make = |what: &str| {
            SignalKind::ALL.map(|signal| {
                metrics::counter!(
                    format!("tracescale_{kind}_{what}_total"),
                    "component" => id.clone(),
                    "signal" => signal.as_str()
                )
            })
        };
        Self {
            kind,
            received: make("received"),
            emitted: make("emitted"),
            failed: make("failed"),
            id,
        }
    }

    /// Counts items that reached the component.
    pub fn received(&self, signal: SignalKind, items: usize) {
        self.received[index(signal)].increment(items as u64);
    }

    /// Counts items the component passed on or sent.
    pub fn emitted(&self, signal: SignalKind, items: usize) {
        self.emitted[index(signal)].increment(items as u64);
    }

    /// Counts items in batches that failed.
    pub fn failed(&self, signal: SignalKind, items: usize) {
        self.failed[index(signal)].increment(items as u64);
    }

    /// Counts dropped items with a reason (`queue_full`, `invalid_span`, …). Drops are the rare
    /// path, so the labelled counter is looked up per call.
    pub fn dropped(&self, signal: SignalKind, reason: &'static str, items: usize) {
        if items == 0 {
            return;
        }
        metrics::counter!(
            format!("tracescale_{}_dropped_total", self.kind),
            "component" => self.id.clone(),
            "signal" => signal.as_str(),
            "reason" => reason
        )
        .increment(items as u64);
    }

    /// The component's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once, and returns the
/// handle that renders it. Later calls return the same handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only when another recorder was installed first (an embedding program's);
            // then ours renders nothing, which the operator sees on /metrics.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// The telemetry listener: `/metrics`, `/healthz`, `/readyz`.
pub struct TelemetryServer {
    address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct ServerState {
    metrics: PrometheusHandle,
    health: Health,
}

impl TelemetryServer {
    /// Binds the listener and starts serving.
    pub async fn start(address: SocketAddr, health: Health) -> Result<Self, ComponentError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ComponentError::Bind {
                address: address.to_string(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|e| ComponentError::io("read the telemetry listener's address", e))?;
        let state = ServerState {
            metrics: install(),
            health,
        };
        let app = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz_handler))
            .with_state(state);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await });
            if let Err(err) = serve.await {
                tracing::error!(error = %err, "telemetry listener failed");
            }
        });
        Ok(Self {
            address,
            stop,
            task,
        })
    }

    /// The bound address (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn metrics_handler(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz_handler(State(state): State<ServerState>) -> impl IntoResponse {
    let readiness = state.health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::to_string(&readiness).unwrap_or_else(|_| "{}".to_string());
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}
