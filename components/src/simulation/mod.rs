//! The simulated shop behind `tracescale demo` and `tracescale simulate`: a seeded
//! discrete-event simulation ([`Sim`], configured by [`SimConfig`], producing the records of
//! `records`), the baselines (the CPU HPA, [`Hpa`], and a KEDA-style trigger on requests per
//! second, [`RpsScaler`]), the scenarios and their scoring ([`Scenario`],
//! [`RunScore`], and the built-in [`presets`]), the state its receiver and exporter share
//! ([`SimCluster`]), the spans it turns into OTLP, and the comparison report ([`report`]).
//!
//! The `simulated_traces` receiver owns the simulation and advances it; the `simulated_cluster`
//! exporter plans decisions with the same policy code as the `kubernetes` exporter and hands the
//! replica changes to the receiver through a [`SimCluster`] found by name. Both look it up with
//! [`cluster`], so a pipeline file wires them by giving both the same `cluster` key.

pub mod chart;
mod config;
mod engine;
mod hpa;
pub mod live;
mod oracle;
pub mod presets;
mod records;
pub mod report;
mod rps;
mod scenario;
pub mod shop;
pub mod sweep;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tracescale_core::signal::Traces;

pub use config::{
    CallConfig, EntryConfig, NANOS_PER_MILLI, NANOS_PER_SEC, NetworkDelayFault, ReplicaLossFault,
    ServiceConfig, SimConfig, SimError, SlowdownFault, TrafficPattern, TrafficSpikeFault,
    WorkloadKind, millis, secs,
};
pub use engine::Sim;
pub use hpa::{Hpa, HpaConfig};
pub use oracle::Oracle;
pub use presets::DEFAULT_SLO_NS;
pub use records::{IntervalStats, ScaleAction, ServiceIntervalStats, SimSpan};
pub use rps::{RpsConfig, RpsScaler, per_replica_capacity};
pub use scenario::{
    FaultPhase, NoScaling, PhaseReport, ReplicaController, RunResult, RunScore, Scenario,
    ScheduledScaler, ScheduledStep, run_scenario,
};

/// The names of the built-in scenarios, in the order the README lists them.
pub const SCENARIOS: &[&str] = &["worker-cap", "db-bottleneck", "mixed"];

/// A built-in scenario by name: the shipped shop file of that name (`configs/shops/NAME.toml`).
pub fn scenario(name: &str) -> Option<Scenario> {
    presets::builtin(name).and_then(Result::ok)
}

/// Most statistics rows a [`SimCluster`] keeps (one per simulated second): a day.
pub const MAX_ROWS: usize = 86_400;

/// A replica change the simulation applied, with the decision that asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// What changed, when (simulated time).
    pub action: ScaleAction,
    /// The rule that asked for it.
    pub rule: String,
    /// The exporter's explanation.
    pub reason: String,
}

/// One service as the exporter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceView {
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas serving.
    pub ready: u32,
    /// The workload kind: a decision must name it in its target.
    pub kind: WorkloadKind,
    /// The fewest and most replicas the simulated cluster runs of it.
    pub bounds: (u32, u32),
}

/// What the receiver and the exporters of one simulated cluster share.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// The scenario being run; `None` until a receiver starts.
    pub scenario: Option<Scenario>,
    /// The namespace the workloads live in.
    pub namespace: String,
    /// Unix time of simulated time zero, in nanoseconds: spans are stamped from it.
    pub epoch_unix_nano: u64,
    /// Simulated time, in nanoseconds since the start.
    pub now: u64,
    /// Services by name.
    pub services: BTreeMap<String, ServiceView>,
    /// Replica counts asked for since the last step, applied by the receiver in order.
    pub requests: Vec<(String, u32, String, String)>,
    /// Changes applied so far.
    pub actions: Vec<Action>,
    /// One row per simulated second, oldest first (at most [`MAX_ROWS`]).
    pub rows: Vec<IntervalStats>,
    /// Spans emitted so far.
    pub spans: u64,
    /// The run reached the end of its scenario.
    pub finished: bool,
}

impl ClusterState {
    /// Simulated time as Unix nanoseconds (the clock the spans and decisions carry).
    pub fn unix_now(&self) -> u64 {
        self.epoch_unix_nano.saturating_add(self.now)
    }
}

/// The shared state of one simulated cluster.
#[derive(Debug, Default)]
pub struct SimCluster {
    state: Mutex<ClusterState>,
}

impl SimCluster {
    /// Locks the state. Holders never block while holding it.
    pub fn lock(&self) -> MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static CLUSTERS: OnceLock<Mutex<HashMap<String, Arc<SimCluster>>>> = OnceLock::new();

/// The simulated cluster named `name`, created on first use. The registry lives as long as the
/// process: a pipeline file names its cluster, and the CLI reads the results from it.
pub fn cluster(name: &str) -> Arc<SimCluster> {
    let registry = CLUSTERS.get_or_init(Default::default);
    registry
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(name.to_string())
        .or_default()
        .clone()
}

/// Every simulated cluster a receiver has started in this process, by name.
pub fn started_clusters() -> Vec<(String, Arc<SimCluster>)> {
    let registry = CLUSTERS.get_or_init(Default::default);
    let map = registry.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out: Vec<_> = map
        .iter()
        .filter(|(_, c)| c.lock().scenario.is_some())
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

/// Turns simulated spans into OTLP, one `ResourceSpans` per service.
///
/// Each service visit becomes a SERVER span named after the operation, from the request's
/// arrival at the service to its completion (so the queueing is inside it, as a caller sees
/// it), and, for every visit that got a slot, an INTERNAL child span named `queue` over the wait
/// for it (zero long when a slot was free): the signal a rule needs to tell a saturated pool
/// from a slow dependency.
#[derive(Debug)]
pub struct OtlpBuilder {
    namespace: String,
    epoch_unix_nano: u64,
    shape: SpanShape,
    kinds: BTreeMap<String, WorkloadKind>,
    /// Spans by (service, replica): one resource per pod.
    by_service: BTreeMap<(String, u32), Vec<Span>>,
}

/// How a visit becomes spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanShape {
    /// A CLIENT span on the caller around each call, parent of the callee's SERVER span, as
    /// OpenTelemetry instrumentation on both sides records a call.
    pub client_spans: bool,
    /// An INTERNAL `queue` span over each admitted visit's wait for a slot, inside its SERVER
    /// span. Without it, a callee's SERVER span starts when a slot takes the request, so the
    /// wait shows as the gap between the caller's CLIENT span and it (a root visit, having no
    /// caller, keeps its wait inside its SERVER span, as an ingress proxy's span would).
    pub queue_spans: bool,
}

impl Default for SpanShape {
    fn default() -> Self {
        Self {
            client_spans: true,
            queue_spans: true,
        }
    }
}

/// A span id derived from a visit's: ids stay a function of the seed.
fn derived_id(id: [u8; 8], salt: u8) -> Vec<u8> {
    let mut id = id;
    id[0] ^= salt;
    id[7] ^= !salt;
    id.to_vec()
}

/// Salts of the derived span ids.
const QUEUE_SALT: u8 = 0x5a;
const CLIENT_SALT: u8 = 0x3c;

impl OtlpBuilder {
    /// A builder stamping spans from `epoch_unix_nano`, with the default [`SpanShape`].
    pub fn new(namespace: &str, epoch_unix_nano: u64) -> Self {
        Self::with_shape(namespace, epoch_unix_nano, SpanShape::default())
    }

    /// A builder stamping spans from `epoch_unix_nano` in the given shape.
    pub fn with_shape(namespace: &str, epoch_unix_nano: u64, shape: SpanShape) -> Self {
        Self {
            namespace: namespace.to_string(),
            epoch_unix_nano,
            shape,
            kinds: BTreeMap::new(),
            by_service: BTreeMap::new(),
        }
    }

    /// Services that run as something other than a Deployment, so their resource names the
    /// right workload (`k8s.statefulset.name`).
    pub fn with_kinds(mut self, kinds: impl IntoIterator<Item = (String, WorkloadKind)>) -> Self {
        self.kinds = kinds.into_iter().collect();
        self
    }

    /// Adds one visit.
    pub fn push(&mut self, s: &SimSpan<'_>) {
        let at = |t: u64| self.epoch_unix_nano.saturating_add(t);
        let status = s.error.then(|| Status {
            code: StatusCode::Error as i32,
            message: if s.rejected {
                "rejected: queue full"
            } else {
                "failed: a call it made failed"
            }
            .to_string(),
        });
        let client = match (self.shape.client_spans, s.caller, s.parent_span_id) {
            (true, Some(caller), Some(parent)) => Some((caller, parent)),
            _ => None,
        };
        let server_parent = match client {
            Some(_) => derived_id(s.span_id, CLIENT_SALT),
            None => s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        };
        // Without a queue span, the wait of a called visit is the CLIENT-to-SERVER gap.
        let server_start = if client.is_some() && !self.shape.queue_spans {
            s.started
        } else {
            s.start
        };
        if let Some((caller, parent)) = client {
            self.by_service
                .entry((caller.to_string(), s.caller_replica))
                .or_default()
                .push(Span {
                    trace_id: s.trace_id.to_vec(),
                    span_id: derived_id(s.span_id, CLIENT_SALT),
                    parent_span_id: parent.to_vec(),
                    name: s.operation.to_string(),
                    kind: SpanKind::Client as i32,
                    start_time_unix_nano: at(s.sent),
                    end_time_unix_nano: at(s.end),
                    attributes: vec![string_kv("peer.service", s.service)],
                    status: status.clone(),
                    ..Span::default()
                });
        }
        let server = Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: server_parent,
            name: s.operation.to_string(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: at(server_start),
            end_time_unix_nano: at(s.end),
            status,
            ..Span::default()
        };
        let spans = self
            .by_service
            .entry((s.service.to_string(), s.replica))
            .or_default();
        // A visit that failed after it was admitted waited for its slot all the same.
        if !s.rejected && self.shape.queue_spans {
            spans.push(Span {
                trace_id: s.trace_id.to_vec(),
                span_id: derived_id(s.span_id, QUEUE_SALT),
                parent_span_id: s.span_id.to_vec(),
                name: "queue".to_string(),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: at(s.start),
                end_time_unix_nano: at(s.started),
                ..Span::default()
            });
        }
        spans.push(server);
    }

    /// True when no span was pushed since the last [`OtlpBuilder::take`].
    pub fn is_empty(&self) -> bool {
        self.by_service.is_empty()
    }

    /// The batch so far; the builder starts over.
    pub fn take(&mut self) -> Traces {
        let by_service = std::mem::take(&mut self.by_service);
        let resource_spans = by_service
            .into_iter()
            .map(|((service, replica), spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        string_kv("service.name", &service),
                        string_kv("k8s.namespace.name", &self.namespace),
                        string_kv(
                            self.kinds
                                .get(&service)
                                .copied()
                                .unwrap_or_default()
                                .resource_attribute(),
                            &service,
                        ),
                        string_kv("k8s.pod.name", &format!("{service}-{replica}")),
                    ],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "tracescale.simulation".to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..InstrumentationScope::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect();
        Traces::new(resource_spans)
    }
}
