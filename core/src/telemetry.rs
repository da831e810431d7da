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
    /// By signal; `None` for a signal the component does not handle, which then has no series.
    received: [Option<Counter>; 2],
    emitted: [Option<Counter>; 2],
    failed: [Option<Counter>; 2],
}

fn index(signal: SignalKind) -> usize {
    match signal {
        SignalKind::Traces => 0,
        SignalKind::Decisions => 1,
    }
}

impl ComponentTelemetry {
    /// Registers the counters of one component, for every signal.
    pub fn new(kind: ComponentKind, id: &ComponentId) -> Self {
        Self::for_signals(kind, id, &SignalKind::ALL, &SignalKind::ALL)
    }

    /// Registers the counters of one component for the signals it can receive (`received` and
    /// `failed`) and pass on (`emitted`) only, so that `/metrics` has no series for a signal it
    /// can never see, such as traces at an exporter of decisions.
    pub fn for_signals(
        kind: ComponentKind,
        id: &ComponentId,
        takes: &[SignalKind],
        emits: &[SignalKind],
    ) -> Self {
        let id = id.to_string();
        let make = |what: &str, signals: &[SignalKind]| {
            SignalKind::ALL.map(|signal| {
                signals.contains(&signal).then(|| {
                    metrics::counter!(
                        format!("tracescale_{kind}_{what}_total"),
                        "component" => id.clone(),
                        "signal" => signal.as_str()
                    )
                })
            })
        };
        Self {
            kind,
            received: make("received", takes),
            emitted: make("emitted", emits),
            failed: make("failed", takes),
            id,
        }
    }

    /// Counts on the registered counter of `signal`, or, for a signal the component was not
    /// expected to handle, on one looked up now: nothing counted is lost.
    fn count(&self, slot: &Option<Counter>, what: &str, signal: SignalKind, items: usize) {
        match slot {
            Some(counter) => counter.increment(items as u64),
            None => metrics::counter!(
                format!("tracescale_{}_{what}_total", self.kind),
                "component" => self.id.clone(),
                "signal" => signal.as_str()
            )
            .increment(items as u64),
        }
    }

    /// Counts items that reached the component.
    pub fn received(&self, signal: SignalKind, items: usize) {
        self.count(&self.received[index(signal)], "received", signal, items);
    }

    /// Counts items the component passed on or sent.
    pub fn emitted(&self, signal: SignalKind, items: usize) {
        self.count(&self.emitted[index(signal)], "emitted", signal, items);
    }

    /// Counts items in batches that failed.
    pub fn failed(&self, signal: SignalKind, items: usize) {
        self.count(&self.failed[index(signal)], "failed", signal, items);
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

/// HELP text for `/metrics`: each `(name, text)` of `counters`, `gauges` and `histograms`.
/// Components call it where they register their metrics; describing twice is harmless.
pub fn describe(
    counters: &[(&'static str, &'static str)],
    gauges: &[(&'static str, &'static str)],
    histograms: &[(&'static str, &'static str)],
) {
    for &(name, help) in counters {
        metrics::describe_counter!(name, help);
    }
    for &(name, help) in gauges {
        metrics::describe_gauge!(name, help);
    }
    for &(name, help) in histograms {
        metrics::describe_histogram!(name, help);
    }
}

/// The engine's own metrics.
fn describe_engine() {
    describe(
        &[
            (
                "tracescale_receiver_received_total",
                "Items (spans or decisions) a receiver read, by component and signal.",
            ),
            (
                "tracescale_receiver_emitted_total",
                "Items a receiver passed into its pipelines.",
            ),
            (
                "tracescale_receiver_dropped_total",
                "Items a receiver dropped, by reason (queue_full, refused_memory_limit, invalid_span, ...).",
            ),
            (
                "tracescale_receiver_failed_total",
                "Items in batches a receiver failed to hand on.",
            ),
            (
                "tracescale_processor_received_total",
                "Items that reached a processor, by component and signal.",
            ),
            (
                "tracescale_processor_emitted_total",
                "Items a processor passed on.",
            ),
            (
                "tracescale_processor_dropped_total",
                "Items dropped at a processor, by reason.",
            ),
            (
                "tracescale_processor_failed_total",
                "Items in batches a processor failed.",
            ),
            (
                "tracescale_exporter_received_total",
                "Items that reached an exporter, by component and signal.",
            ),
            (
                "tracescale_exporter_emitted_total",
                "Items an exporter sent.",
            ),
            (
                "tracescale_exporter_dropped_total",
                "Items dropped in front of or by an exporter, by reason (queue_full, shutdown_deadline, ...).",
            ),
            (
                "tracescale_exporter_failed_total",
                "Items in batches an exporter failed to send.",
            ),
            (
                "tracescale_config_reloads_total",
                "Reloads of the pipeline file (SIGHUP), by result: ok, invalid (nothing changed), failed (the previous file runs again).",
            ),
        ],
        &[
            ("tracescale_queue_depth", "Batches in a bounded queue."),
            (
                "tracescale_queue_capacity",
                "Batches a bounded queue holds at most.",
            ),
            (
                "tracescale_queue_items",
                "Items (spans or decisions) in a bounded queue.",
            ),
            (
                "tracescale_queue_items_capacity",
                "Items a bounded queue holds at most.",
            ),
            (
                "tracescale_process_resident_memory_bytes",
                "Resident memory of the process, read by the memory limiter.",
            ),
            (
                "tracescale_memory_limiter_level",
                "0 normal, 1 refusing new data (soft limit), 2 not ready (hard limit).",
            ),
        ],
        &[],
    );
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
            describe_engine();
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
