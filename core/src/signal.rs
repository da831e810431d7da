//! What flows through a pipeline: trace batches and scale decisions.
//!
//! Traces stay in the OTLP protobuf types from `opentelemetry-proto` from the receiver to the
//! exporter; nothing converts them to maps or JSON on the way.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::{Deserialize, Serialize};

/// The kinds of signal a component can take or emit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    /// Batches of OTLP `ResourceSpans`.
    Traces,
    /// Scale decisions.
    Decisions,
}

impl SignalKind {
    /// Every kind, in a stable order.
    pub const ALL: [SignalKind; 2] = [SignalKind::Traces, SignalKind::Decisions];

    /// The lowercase name used in config messages, metrics labels and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Traces => "traces",
            SignalKind::Decisions => "decisions",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One batch travelling along a pipeline edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// A batch of spans, grouped by resource and scope as OTLP groups them.
    Traces(Traces),
    /// A batch of scale decisions.
    Decisions(Vec<Decision>),
}

impl Signal {
    /// Which kind of signal this is.
    pub fn kind(&self) -> SignalKind {
        match self {
            Signal::Traces(_) => SignalKind::Traces,
            Signal::Decisions(_) => SignalKind::Decisions,
        }
    }

    /// The number of items in the batch: spans for traces, decisions for decisions.
    ///
    /// Self-metrics count items, not batches, so that a receiver and an exporter can be compared.
    pub fn item_count(&self) -> usize {
        match self {
            Signal::Traces(t) => t.span_count(),
            Signal::Decisions(d) => d.len(),
        }
    }
}

impl From<Traces> for Signal {
    fn from(t: Traces) -> Self {
        Signal::Traces(t)
    }
}

impl From<Vec<Decision>> for Signal {
    fn from(d: Vec<Decision>) -> Self {
        Signal::Decisions(d)
    }
}

/// A batch of spans in their OTLP protobuf form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Traces {
    /// The spans, grouped as in an OTLP `ExportTraceServiceRequest`.
    pub resource_spans: Vec<ResourceSpans>,
}

impl Traces {
    /// Wraps the `resource_spans` of an OTLP request.
    pub fn new(resource_spans: Vec<ResourceSpans>) -> Self {
        Self { resource_spans }
    }

    /// The number of spans in the batch.
    pub fn span_count(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }

    /// True when the batch holds no span.
    pub fn is_empty(&self) -> bool {
        self.span_count() == 0
    }
}

/// The workload a decision is about, named as the Kubernetes API names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    /// API group and version, for example `apps/v1`.
    pub api_version: String,
    /// Resource kind, for example `Deployment`.
    pub kind: String,
    /// Object name.
    pub name: String,
    /// Namespace of the object.
    pub namespace: String,
}

impl fmt::Display for Target {
    /// `namespace/kind/name`, the form allow-lists use (kind lowercased).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace,
            self.kind.to_ascii_lowercase(),
            self.name
        )
    }
}

/// How a decision wants the replica count to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleChange {
    /// Add (positive) or remove (negative) this many replicas.
    Step(i32),
    /// Set exactly this many replicas.
    To(u32),
}

impl ScaleChange {
    /// The replica count this change asks for, starting from `current`.
    pub fn desired(self, current: u32) -> u32 {
        match self {
            ScaleChange::Step(n) => current.saturating_add_signed(n),
            ScaleChange::To(n) => n,
        }
    }

    /// True when the change can only raise the replica count from `current`.
    pub fn is_up(self, current: u32) -> bool {
        self.desired(current) > current
    }
}

/// As people write a change: `+1`, `-2`, `to 8`.
impl std::fmt::Display for ScaleChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScaleChange::Step(n) => write!(f, "{n:+}"),
            ScaleChange::To(n) => write!(f, "to {n}"),
        }
    }
}

/// Replica bounds the rule that fired asks the exporter to respect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLimits {
    /// Never go below this many replicas.
    pub min: Option<u32>,
    /// Never go above this many replicas.
    pub max: Option<u32>,
}

/// Why a decision was taken: what the rule saw in its window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Length of the rule's window.
    #[serde(with = "duration_ms")]
    pub window: Duration,
    /// Spans in the window that matched the rule.
    pub window_count: u64,
    /// Matching spans that breached the threshold.
    pub breaches: u64,
    /// Median latency in the window.
    #[serde(with = "duration_ms")]
    pub p50: Duration,
    /// 95th percentile latency in the window.
    #[serde(with = "duration_ms")]
    pub p95: Duration,
    /// 99th percentile latency in the window.
    #[serde(with = "duration_ms")]
    pub p99: Duration,
    /// Up to five trace ids of the slowest matching spans, as lowercase hex.
    pub exemplars: Vec<String>,
    /// The highest anomaly score among the breaching spans, when an anomaly filter tagged them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly_score: Option<f64>,
}

/// Requests and limits for one container of a workload's pod template, as Kubernetes
/// quantities (`"500m"`, `"256Mi"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerResources {
    /// The container's name in the pod template.
    pub container: String,
    /// `resources.requests`, by resource name (`cpu`, `memory`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    /// `resources.limits`, by resource name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

/// The most exemplar trace ids a decision carries.
pub const MAX_EXEMPLARS: usize = 5;

/// A request to change the replica count of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The workload to scale.
    pub target: Target,
    /// The change asked for.
    pub change: ScaleChange,
    /// Bounds from the rule; exporters apply their own on top.
    #[serde(default)]
    pub limits: ReplicaLimits,
    /// Name of the rule that fired.
    pub rule: String,
    /// One human sentence saying why.
    pub reason: String,
    /// What the rule saw.
    pub evidence: Evidence,
    /// For a vertical decision: the container resources to set in the workload's pod template
    /// (`change` is then `Step(0)`, and the replicas are left alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ContainerResources>,
    /// When the decision was made, in nanoseconds since the Unix epoch (event time).
    pub timestamp_unix_nano: u64,
}

/// The wall clock in nanoseconds since the Unix epoch, the clock decisions are stamped with
/// (0 before the epoch, saturating far after it).
pub fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Durations serialised as fractional milliseconds, the unit people read latencies in.
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        Duration::try_from_secs_f64(ms / 1000.0).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    #[test]
    fn span_count_sums_every_scope() {
        let rs = ResourceSpans {
            scope_spans: vec![
                ScopeSpans {
                    spans: vec![Span::default(); 3],
                    ..Default::default()
                },
                ScopeSpans {
                    spans: vec![Span::default(); 2],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let t = Traces::new(vec![rs.clone(), rs]);
        assert_eq!(t.span_count(), 10);
        assert_eq!(Signal::from(t).item_count(), 10);
    }

    #[test]
    fn scale_change_saturates() {
        assert_eq!(ScaleChange::Step(-3).desired(1), 0);
        assert_eq!(ScaleChange::Step(2).desired(3), 5);
        assert_eq!(ScaleChange::To(4).desired(9), 4);
        assert!(ScaleChange::Step(1).is_up(1));
        assert!(!ScaleChange::To(1).is_up(1));
    }

    #[test]
    fn target_displays_as_allow_list_entry() {
        let t = Target {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "payments-db".into(),
            namespace: "shop".into(),
        };
        assert_eq!(t.to_string(), "shop/statefulset/payments-db");
    }
}
