//! The compact span record and its extraction from OTLP `ResourceSpans`.
//!
//! A record is 64 bytes, one cache line: ids are kept as fixed arrays, names as interned
//! [`Symbol`]s, the kind as one byte. Attributes are not kept, except the two the analysis needs
//! (the CLIENT peer and, per resource, the Kubernetes workload).

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use super::intern::{Interner, Symbol};

/// The service of spans whose resource has no `service.name`, as the OpenTelemetry SDKs name it.
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// The span name that marks an explicit queue span unless configured otherwise.
pub const DEFAULT_QUEUE_SPAN_NAME: &str = "queue";

/// The OTLP span kind in one byte, with OTLP's numbering, so the record stays at 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Kind {
    /// `SPAN_KIND_UNSPECIFIED`, and any value this code does not know.
    #[default]
    Unspecified = 0,
    /// `SPAN_KIND_INTERNAL`.
    Internal = 1,
    /// `SPAN_KIND_SERVER`: one arrival at the service.
    Server = 2,
    /// `SPAN_KIND_CLIENT`: an outgoing call whose gaps around the callee are not the caller's work.
    Client = 3,
    /// `SPAN_KIND_PRODUCER`.
    Producer = 4,
    /// `SPAN_KIND_CONSUMER`.
    Consumer = 5,
}

impl Kind {
    /// The kind of an OTLP `Span::kind` value.
    pub fn from_otlp(kind: i32) -> Kind {
        match SpanKind::try_from(kind) {
            Ok(SpanKind::Internal) => Kind::Internal,
            Ok(SpanKind::Server) => Kind::Server,
            Ok(SpanKind::Client) => Kind::Client,
            Ok(SpanKind::Producer) => Kind::Producer,
            Ok(SpanKind::Consumer) => Kind::Consumer,
            Ok(SpanKind::Unspecified) | Err(_) => Kind::Unspecified,
        }
    }

    /// The OTLP enum, for callers that speak it.
    pub fn to_otlp(self) -> SpanKind {
        match self {
            Kind::Unspecified => SpanKind::Unspecified,
            Kind::Internal => SpanKind::Internal,
            Kind::Server => SpanKind::Server,
            Kind::Client => SpanKind::Client,
            Kind::Producer => SpanKind::Producer,
            Kind::Consumer => SpanKind::Consumer,
        }
    }
}

/// One span, reduced to what trace assembly and critical-path analysis need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanRecord {
    /// All zeros when the OTLP id was missing or malformed; such spans are refused downstream.
    pub trace_id: [u8; 16],
    /// Big-endian value of the 8-byte span id; 0 when missing or malformed.
    pub span_id: u64,
    /// Big-endian value of the parent span id; 0 for a root.
    pub parent_id: u64,
    /// Unix nanoseconds.
    pub start: u64,
    /// Unix nanoseconds.
    pub end: u64,
    /// The resource's `service.name`.
    pub service: Symbol,
    /// The span name.
    pub operation: Symbol,
    /// For CLIENT spans, the `peer.service` or `server.address` attribute interned among the
    /// services, to stand for an uninstrumented callee; [`Symbol::NONE`] otherwise.
    pub peer: Symbol,
    /// The span kind.
    pub kind: Kind,
    /// True for an explicit queue span: its time is queueing, not work.
    pub queue: bool,
    /// The span's status is ERROR.
    pub error: bool,
}

impl SpanRecord {
    /// `end - start`, zero when the span is inverted.
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// The kind of Kubernetes workload a service runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// From `k8s.deployment.name`.
    Deployment,
    /// From `k8s.statefulset.name`.
    StatefulSet,
}

/// The Kubernetes workload a service was last seen running as, so that a scaler can act on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    /// `k8s.namespace.name`; empty when the resource did not say.
    pub namespace: String,
    /// Deployment or StatefulSet.
    pub kind: WorkloadKind,
    /// The workload's name.
    pub name: String,
}

/// Bounds and names for [`SpanCatalog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogConfig {
    /// Span name of explicit queue spans.
    pub queue_span_name: String,
    /// Distinct services (peers included) kept before folding into [`Symbol::OTHER`].
    pub max_services: usize,
    /// Distinct operation names kept before folding into [`Symbol::OTHER`].
    pub max_operations: usize,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        CatalogConfig {
            queue_span_name: DEFAULT_QUEUE_SPAN_NAME.to_owned(),
            max_services: 1_000,
            max_operations: 10_000,
        }
    }
}

/// What extraction counted, to export as metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatalogStats {
    /// Spans extracted.
    pub spans: u64,
    /// Spans whose resource had no string `service.name`.
    pub missing_service_name: u64,
    /// Spans whose trace or span id was not 16 or 8 bytes (recorded as zero, refused later).
    pub malformed_ids: u64,
    /// Service names folded into [`Symbol::OTHER`].
    pub services_overflowed: u64,
    /// Operation names folded into [`Symbol::OTHER`].
    pub operations_overflowed: u64,
}

/// Interns names, remembers each service's workload, and turns OTLP batches into records.
#[derive(Debug, Clone)]
pub struct SpanCatalog {
    services: Interner,
    operations: Interner,
    unknown_service: Symbol,
    workloads: Vec<Option<Workload>>,
    queue_span_name: String,
    spans: u64,
    missing_service_name: u64,
    malformed_ids: u64,
}

impl SpanCatalog {
    /// An empty catalog.
    pub fn new(config: CatalogConfig) -> Self {
        // One more slot so that the unknown service does not eat into the configured bound.
        let mut services = Interner::new(config.max_services.saturating_add(1));
        let unknown_service = services.intern(UNKNOWN_SERVICE);
        SpanCatalog {
            services,
            operations: Interner::new(config.max_operations),
            unknown_service,
            workloads: Vec::new(),
            queue_span_name: config.queue_span_name,
            spans: 0,
            missing_service_name: 0,
            malformed_ids: 0,
        }
    }

    /// Appends a record per span of `batch` to `out`.
    pub fn extract(&mut self, batch: &[ResourceSpans], out: &mut Vec<SpanRecord>) {
        for resource_spans in batch {
            let resource = resource_spans.resource.as_ref();
            let count: usize = resource_spans
                .scope_spans
                .iter()
                .map(|s| s.spans.len())
                .sum();
            let service = match string_attribute(resource_attributes(resource), "service.name") {
                Some(name) => self.services.intern(name),
                None => {
                    self.missing_service_name += count as u64;
                    self.unknown_service
                }
            };
            if count > 0 {
                self.note_workload(service, resource);
            }
            out.reserve(count);
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    let kind = Kind::from_otlp(span.kind);
                    let peer = if kind == Kind::Client {
                        string_attribute(&span.attributes, "peer.service")
                            .or_else(|| string_attribute(&span.attributes, "server.address"))
                            .map_or(Symbol::NONE, |peer| self.services.intern(peer))
                    } else {
                        Symbol::NONE
                    };
                    let trace_id = <[u8; 16]>::try_from(span.trace_id.as_slice());
                    let span_id = id_u64(&span.span_id);
                    let parent_id = if span.parent_span_id.is_empty() {
                        Some(0)
                    } else {
                        id_u64(&span.parent_span_id)
                    };
                    if trace_id.is_err() || span_id.is_none() || parent_id.is_none() {
                        self.malformed_ids += 1;
                    }
                    out.push(SpanRecord {
                        trace_id: trace_id.unwrap_or([0; 16]),
                        span_id: span_id.unwrap_or(0),
                        parent_id: parent_id.unwrap_or(0),
                        start: span.start_time_unix_nano,
                        end: span.end_time_unix_nano,
                        service,
                        operation: self.operations.intern(&span.name),
                        peer,
                        kind,
                        queue: span.name == self.queue_span_name,
                        error: span.status.as_ref().is_some_and(|st| {
                            st.code
                                == opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error
                                    as i32
                        }),
                    });
                }
            }
            self.spans += count as u64;
        }
    }

    /// The name of a service symbol.
    pub fn service_name(&self, service: Symbol) -> &str {
        self.services.name(service)
    }

    /// The name of an operation symbol.
    pub fn operation_name(&self, operation: Symbol) -> &str {
        self.operations.name(operation)
    }

    /// The symbol of a service name already seen, to look a service up by name.
    pub fn service_symbol(&self, name: &str) -> Option<Symbol> {
        self.services.get(name)
    }

    /// The symbol of an operation name already seen.
    pub fn operation_symbol(&self, name: &str) -> Option<Symbol> {
        self.operations.get(name)
    }

    /// The symbol spans without `service.name` carry.
    pub fn unknown_service(&self) -> Symbol {
        self.unknown_service
    }

    /// The Kubernetes workload the service's spans last said it runs as.
    pub fn workload(&self, service: Symbol) -> Option<&Workload> {
        self.workloads.get(service.index())?.as_ref()
    }

    /// Counters since creation.
    pub fn stats(&self) -> CatalogStats {
        CatalogStats {
            spans: self.spans,
            missing_service_name: self.missing_service_name,
            malformed_ids: self.malformed_ids,
            services_overflowed: self.services.overflowed(),
            operations_overflowed: self.operations.overflowed(),
        }
    }

    /// Remembers the resource's workload for `service`, allocating only when it changed.
    fn note_workload(&mut self, service: Symbol, resource: Option<&Resource>) {
        let attributes = resource_attributes(resource);
        let (kind, name) = match (
            string_attribute(attributes, "k8s.deployment.name"),
            string_attribute(attributes, "k8s.statefulset.name"),
        ) {
            (Some(name), _) => (WorkloadKind::Deployment, name),
            (None, Some(name)) => (WorkloadKind::StatefulSet, name),
            (None, None) => return,
        };
        let namespace = string_attribute(attributes, "k8s.namespace.name").unwrap_or("");
        let index = service.index();
        if self.workloads.len() <= index {
            self.workloads.resize(index + 1, None);
        }
        let slot = &mut self.workloads[index];
        let same = slot
            .as_ref()
            .is_some_and(|w| w.kind == kind && w.name == name && w.namespace == namespace);
        if !same {
            *slot = Some(Workload {
                namespace: namespace.to_owned(),
                kind,
                name: name.to_owned(),
            });
        }
    }
}

fn resource_attributes(resource: Option<&Resource>) -> &[KeyValue] {
    resource.map_or(&[], |r| r.attributes.as_slice())
}

/// The string value of attribute `key`, if it is a non-empty string.
fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The big-endian value of an 8-byte id; `None` for any other length.
fn id_u64(id: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(id).ok().map(u64::from_be_bytes)
}
