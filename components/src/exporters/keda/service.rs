//! The gRPC side: KEDA's `externalscaler.ExternalScaler` over the exporter's board.
//!
//! Every handler takes the state lock for a lookup and nothing more; streams never hold it.
//! A StreamIsActive stream reads a `tokio::sync::watch` channel per target: the exporter
//! overwrites the one value and never waits, however slowly (or never) the client reads, and a
//! reader that falls behind sees the newest activity, not a queue of old ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tracescale_core::component::ComponentError;
use tracescale_core::signal::Target;
use tracing::debug;

use super::board::Board;
use super::proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use super::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use crate::scaling::target::parse_workload;
use crate::scaling::{AllowList, ScaleMetrics};

/// The scaler metadata key that names the workload.
pub const TARGET_KEY: &str = "target";

/// Largest request accepted: a ScaledObjectRef is a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The metric KEDA hands the HPA for `target`: one per workload, named after it. The HPA
/// prefixes it with the trigger's index (`s0-…`) and KEDA strips that again before asking.
pub fn metric_name(target: &Target) -> String {
    format!(
        "tracescale-{}-{}",
        target.kind.to_ascii_lowercase(),
        target.name
    )
}

/// The four RPCs, as metric labels.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    IsActive,
    StreamIsActive,
    GetMetricSpec,
    GetMetrics,
}

impl Rpc {
    const ALL: [Rpc; 4] = [
        Rpc::IsActive,
        Rpc::StreamIsActive,
        Rpc::GetMetricSpec,
        Rpc::GetMetrics,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Rpc::IsActive => "IsActive",
            Rpc::StreamIsActive => "StreamIsActive",
            Rpc::GetMetricSpec => "GetMetricSpec",
            Rpc::GetMetrics => "GetMetrics",
        }
    }
}

/// The status codes the handlers answer with, as metric labels.
const CODES: [(Code, &str); 6] = [
    (Code::Ok, "ok"),
    (Code::InvalidArgument, "invalid_argument"),
    (Code::PermissionDenied, "permission_denied"),
    (Code::NotFound, "not_found"),
    (Code::ResourceExhausted, "resource_exhausted"),
    (Code::Unavailable, "unavailable"),
];

/// The exporter's own metrics, registered once.
pub(super) struct Metrics {
    /// Decisions: refused, held, changed, and the count answered per target.
    pub(super) scale: ScaleMetrics,
    requests: Vec<[Counter; CODES.len()]>,
    streams: Gauge,
    activated: Counter,
    deactivated: Counter,
}

impl Metrics {
    pub(super) fn new(component: &str) -> Self {
        tracescale_core::telemetry::describe(
            &[
                (
                    "tracescale_keda_requests_total",
                    "External scaler calls answered, by RPC and status code.",
                ),
                (
                    "tracescale_keda_activity_changes_total",
                    "Targets that turned active or inactive.",
                ),
            ],
            &[("tracescale_keda_streams", "StreamIsActive streams open.")],
            &[],
        );
        let requests = Rpc::ALL
            .map(|rpc| {
                CODES.map(|(_, code)| {
                    metrics::counter!(
                        "tracescale_keda_requests_total",
                        "component" => component.to_string(),
                        "rpc" => rpc.as_str(),
                        "code" => code
                    )
                })
            })
            .to_vec();
        let changes = |to: &'static str| {
            metrics::counter!(
                "tracescale_keda_activity_changes_total",
                "component" => component.to_string(),
                "active" => to
            )
        };
        Self {
            scale: ScaleMetrics::new(component),
            requests,
            streams: metrics::gauge!(
                "tracescale_keda_streams",
                "component" => component.to_string()
            ),
            activated: changes("true"),
            deactivated: changes("false"),
        }
    }

    fn answered(&self, rpc: Rpc, code: Code) {
        let at = CODES.iter().position(|(c, _)| *c == code);
        if let (Some(row), Some(at)) = (self.requests.get(rpc as usize), at) {
            row[at].increment(1);
        }
    }
}

/// What the exporter and the handlers share.
pub(super) struct Shared {
    state: Mutex<State>,
    /// The allow-list, read without the lock.
    allow: AllowList,
    streams: Arc<Semaphore>,
    max_streams: usize,
    /// Wakes the sweeper when an activity window opens.
    pub(super) wake: Notify,
    epoch: Instant,
    pub(super) metrics: Metrics,
    pub(super) component: String,
}

/// The board and the watch channel of every target a stream follows.
pub(super) struct State {
    pub(super) board: Board,
    watchers: HashMap<String, watch::Sender<bool>>,
    /// Shutting down: no new stream.
    closed: bool,
}

impl State {
    /// Tells the streams of `key` (if any) that its activity is now `active`, and counts it.
    pub(super) fn publish(&self, key: &str, active: bool, metrics: &Metrics) {
        if active {
            metrics.activated.increment(1);
        } else {
            metrics.deactivated.increment(1);
        }
        if let Some(tx) = self.watchers.get(key) {
            // Overwrites the value: never waits for a reader.
            tx.send_if_modified(|v| std::mem::replace(v, active) != active);
        }
    }
}

impl Shared {
    pub(super) fn new(board: Board, max_streams: usize, component: String) -> Self {
        Self {
            allow: board.settings().allow.clone(),
            state: Mutex::new(State {
                board,
                watchers: HashMap::new(),
                closed: false,
            }),
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            wake: Notify::new(),
            epoch: Instant::now(),
            metrics: Metrics::new(&component),
            component,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds on the monotonic clock the policy and the windows run on.
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The instant `nanos` on that clock stands for.
    pub(super) fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    /// Ends every stream (their channels close) and refuses new ones.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.watchers.clear();
    }

    /// The workload a ScaledObject's trigger names, if KEDA may ask about it.
    fn target(&self, reference: Option<&ScaledObjectRef>) -> Result<Target, Status> {
        let Some(r) = reference else {
            return Err(Status::invalid_argument("scaledObjectRef is missing"));
        };
        let Some(text) = r.scaler_metadata.get(TARGET_KEY) else {
            return Err(Status::invalid_argument(format!(
                "the trigger's metadata has no `{TARGET_KEY}`: name the workload, for example {TARGET_KEY}: shop/deployment/checkout"
            )));
        };
        let target = parse_workload(text, &r.namespace)
            .map_err(|e| Status::invalid_argument(format!("metadata `{TARGET_KEY}`: {e}")))?;
        if !r.namespace.is_empty() && target.namespace != r.namespace {
            return Err(Status::permission_denied(format!(
                "ScaledObject {}/{} may follow workloads of its own namespace only, not {target}",
                r.namespace, r.name
            )));
        }
        if !self.allow.allows(&target) {
            return Err(Status::permission_denied(format!(
                "{target} is not in the `allow` list of exporter {}",
                self.component
            )));
        }
        Ok(target)
    }

    /// Counts the answer, and logs a refusal at debug level (the counter is what to watch).
    fn counted<T>(&self, rpc: Rpc, result: Result<T, Status>) -> Result<T, Status> {
        let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
        self.metrics.answered(rpc, code);
        if let Err(status) = &result {
            debug!(component = %self.component, rpc = rpc.as_str(), code = ?status.code(),
                message = status.message(), "refused a KEDA request");
        }
        result
    }

    fn stream(self: &Arc<Self>, target: &Target) -> Result<ActivityStream, Status> {
        let Ok(permit) = Arc::clone(&self.streams).try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "{} StreamIsActive streams are open, the most `max_streams` allows",
                self.max_streams
            )));
        };
        let key = target.to_string();
        let rx = {
            let mut state = self.lock();
            if state.closed {
                return Err(Status::unavailable("shutting down"));
            }
            let now = self.now();
            let active = state.board.view(target, now).active;
            let watchers = &mut state.watchers;
            match watchers.get(&key) {
                Some(tx) => tx.subscribe(),
                None => {
                    let (tx, rx) = watch::channel(active);
                    watchers.insert(key.clone(), tx);
                    rx
                }
            }
        };
        self.metrics.streams.increment(1.0);
        Ok(ActivityStream {
            // Yields the current value first, then each change.
            inner: WatchStream::new(rx),
            _guard: StreamGuard {
                shared: Arc::clone(self),
                key,
                _permit: permit,
            },
        })
    }
}

/// One StreamIsActive stream: the target's activity now, then each change.
pub(super) struct ActivityStream {
    // Dropped before the guard, so the guard sees this receiver gone.
    inner: WatchStream<bool>,
    _guard: StreamGuard,
}

impl Stream for ActivityStream {
    type Item = Result<IsActiveResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|next| next.map(|result| Ok(IsActiveResponse { result })))
    }
}

/// Gives the stream's slot back and forgets a channel nobody reads any more.
struct StreamGuard {
    shared: Arc<Shared>,
    key: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.shared.metrics.streams.decrement(1.0);
        let mut state = self.shared.lock();
        if state
            .watchers
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            state.watchers.remove(&self.key);
        }
    }
}

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl ExternalScaler for Service {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let s = &self.shared;
        let result = s.target(Some(request.get_ref())).map(|target| {
            let result = s.lock().board.view(&target, s.now()).active;
            Response::new(IsActiveResponse { result })
        });
        s.counted(Rpc::IsActive, result)
    }

    type StreamIsActiveStream = ActivityStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let s = &self.shared;
        let result = s
            .target(Some(request.get_ref()))
            .and_then(|target| s.stream(&target))
            .map(Response::new);
        s.counted(Rpc::StreamIsActive, result)
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let s = &self.shared;
        let result = s.target(Some(request.get_ref())).map(|target| {
            // The HPA divides the metric by the replicas (AverageValue) and compares it with
            // 1: the replicas it settles on are the metric's value.
            Response::new(GetMetricSpecResponse {
                metric_specs: vec![MetricSpec {
                    metric_name: metric_name(&target),
                    target_size: 1,
                    target_size_float: 1.0,
                }],
            })
        });
        s.counted(Rpc::GetMetricSpec, result)
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let s = &self.shared;
        let request = request.get_ref();
        let result = s
            .target(request.scaled_object_ref.as_ref())
            .and_then(|target| {
                let name = metric_name(&target);
                if request.metric_name != name {
                    return Err(Status::not_found(format!(
                        "no metric {:?} for {target}: GetMetricSpec names it {name:?}",
                        request.metric_name
                    )));
                }
                let desired = s.lock().board.view(&target, s.now()).desired;
                Ok(Response::new(GetMetricsResponse {
                    metric_values: vec![MetricValue {
                        metric_name: name,
                        metric_value: i64::from(desired),
                        metric_value_float: f64::from(desired),
                    }],
                }))
            });
        s.counted(Rpc::GetMetrics, result)
    }
}

/// Binds `endpoint` and serves until `stop` is cancelled; returns the bound address.
pub(super) fn serve(
    shared: Arc<Shared>,
    endpoint: SocketAddr,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ComponentError> {
    let bind_error = |source| ComponentError::Bind {
        address: endpoint.to_string(),
        source,
    };
    // Without TCP_NODELAY a small answer waits for the peer's delayed ACK.
    let incoming = TcpIncoming::bind(endpoint)
        .map_err(bind_error)?
        .with_nodelay(Some(true));
    let bound = incoming.local_addr().map_err(bind_error)?;
    // KEDA multiplexes every ScaledObject of one scaler address on one connection: each
    // StreamIsActive stream is an HTTP/2 stream of it, so the connection must carry them all,
    // plus the unary calls beside them.
    let per_connection = u32::try_from(shared.max_streams.saturating_add(64)).unwrap_or(u32::MAX);
    let service =
        ExternalScalerServer::new(Service { shared }).max_decoding_message_size(MAX_REQUEST_BYTES);
    let router = Server::builder()
        .max_concurrent_streams(per_connection)
        // A client that vanished without closing is found out and its streams freed.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(service);
    let task = tokio::spawn(async move {
        if let Err(err) = router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %err, "KEDA external scaler listener failed");
        }
    });
    Ok((bound, task))
}
