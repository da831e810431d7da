use std::collections::VecDeque;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
use prost::Message;
use tokio::sync::Semaphore;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracescale_core::component::{ComponentKind, Receiver as _};
use tracescale_core::config::{Built, build_from_toml};
use tracescale_core::registry;
use tracescale_core::signal::Traces;
use tracescale_core::testing;

use super::counters::Tally;
use super::*;

// ---------------------------------------------------------------------------------------------
// Spans

fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// `n` spans of `service`, named `{service}-{i}`, under one resource and one scope.
fn resource(service: &str, n: usize) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_attr("service.name", service)],
            ..Default::default()
        }),
        schema_url: "https://opentelemetry.io/schemas/1.26.0".to_string(),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: format!("{service}-scope"),
                version: "1.2.3".to_string(),
                ..Default::default()
            }),
            schema_url: String::new(),
            spans: (0..n)
                .map(|i| Span {
                    trace_id: vec![1; 16],
                    span_id: vec![u8::try_from(i % 250).unwrap_or(0) + 1; 8],
                    name: format!("{service}-{i}"),
                    start_time_unix_nano: 1_000 + i as u64,
                    end_time_unix_nano: 2_000 + i as u64,
                    attributes: vec![string_attr("http.route", "/pay")],
                    ..Default::default()
                })
                .collect(),
        }],
    }
}

fn signal(groups: Vec<ResourceSpans>) -> Signal {
    Signal::Traces(Traces::new(groups))
}

fn span_names(groups: &[ResourceSpans]) -> Vec<String> {
    groups
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect()
}

fn count(groups: &[ResourceSpans]) -> usize {
    Traces::new(groups.to_vec()).span_count()
}

// ---------------------------------------------------------------------------------------------
// A scripted OTLP server, over gRPC or HTTP

/// What the server answers to one request; once the script is empty it answers success.
enum Answer {
    Grpc(Status),
    Http {
        status: StatusCode,
        retry_after: Option<&'static str>,
    },
    PartialSuccess {
        rejected: i64,
        message: &'static str,
    },
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: std::time::Instant,
    resource_spans: Vec<ResourceSpans>,
    /// `grpc-encoding` or `content-encoding`.
    encoding: Option<String>,
    content_type: Option<String>,
    tenant: Option<String>,
    path: String,
}

#[derive(Clone)]
struct Mock {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
    /// Each request takes a permit before it is answered: close it to make the server hang.
    gate: Arc<Semaphore>,
}

impl Mock {
    fn new(script: Vec<Answer>) -> Self {
        Self {
            seen: Arc::default(),
            script: Arc::new(Mutex::new(script.into())),
            gate: Arc::new(Semaphore::new(Semaphore::MAX_PERMITS)),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn spans(&self) -> Vec<String> {
        self.seen()
            .iter()
            .flat_map(|s| span_names(&s.resource_spans))
            .collect()
    }

    fn record(&self, seen: Seen) -> Option<Answer> {
        self.seen.lock().unwrap().push(seen);
        self.script.lock().unwrap().pop_front()
    }

    /// Waits until the server has seen `n` requests.
    async fn wait_for_requests(&self, n: usize) {
        let started = std::time::Instant::now();
        while self.seen().len() < n {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "saw {} requests, waited for {n}",
                self.seen().len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tonic::async_trait]
impl TraceService for Mock {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let seen = Seen {
            at: std::time::Instant::now(),
            encoding: header("grpc-encoding"),
            content_type: header("content-type"),
            tenant: header("x-tenant"),
            path: String::new(),
            resource_spans: request.get_ref().resource_spans.clone(),
        };
        let answer = self.record(seen);
        let _permit = self.gate.acquire().await;
        match answer {
            None => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            Some(Answer::Grpc(status)) => Err(status),
            Some(Answer::PartialSuccess { rejected, message }) => {
                Ok(tonic::Response::new(ExportTraceServiceResponse {
                    partial_success: Some(ExportTracePartialSuccess {
                        rejected_spans: rejected,
                        error_message: message.to_string(),
                    }),
                }))
            }
            Some(Answer::Http { .. }) => panic!("an HTTP answer in a gRPC script"),
        }
    }
}

async fn grpc_server(mock: &Mock) -> SocketAddr {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let service = TraceServiceServer::new(mock.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    addr
}

async fn http_handler(
    AxumState(mock): AxumState<Mock>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let encoding = header("content-encoding");
    let body = match encoding.as_deref() {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::stream::decode_all(&body[..]).unwrap(),
        _ => body.to_vec(),
    };
    let request = ExportTraceServiceRequest::decode(&body[..]).unwrap();
    let seen = Seen {
        at: std::time::Instant::now(),
        encoding,
        content_type: header("content-type"),
        tenant: header("x-tenant"),
        path: uri.path().to_string(),
        resource_spans: request.resource_spans,
    };
    let answer = mock.record(seen);
    let _permit = mock.gate.acquire().await;
    let protobuf = [("content-type", "application/x-protobuf")];
    match answer {
        None => (
            StatusCode::OK,
            protobuf,
            ExportTraceServiceResponse::default().encode_to_vec(),
        )
            .into_response(),
        Some(Answer::Http {
            status,
            retry_after,
        }) => {
            let body = tonic_types::pb::Status {
                code: 14,
                message: format!("scripted {status}"),
                details: Vec::new(),
            }
            .encode_to_vec();
            let mut response = (status, protobuf, body).into_response();
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", after.parse().unwrap());
            }
            response
        }
        Some(Answer::PartialSuccess { rejected, message }) => (
            StatusCode::OK,
            protobuf,
            ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: message.to_string(),
                }),
            }
            .encode_to_vec(),
        )
            .into_response(),
        Some(Answer::Grpc(_)) => panic!("a gRPC answer in an HTTP script"),
    }
}

async fn http_server(mock: &Mock) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(http_handler))
        .route("/prefix/v1/traces", post(http_handler))
        .with_state(mock.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Exporters

/// The checked settings of a config table.
fn settings(table: &str) -> ExporterSettings {
    let config: OtlpExporterConfig = toml::from_str(table).unwrap();
    config.check(&mut Vec::new()).unwrap()
}

async fn started(table: &str) -> OtlpExporter {
    let mut exporter = OtlpExporter::new(settings(table));
    exporter
        .start(&testing::exporter_context("otlp"))
        .await
        .unwrap();
    exporter
}

fn tally(exporter: &OtlpExporter) -> &Tally {
    exporter.counters.as_ref().unwrap().tally()
}

fn in_secs(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Fast retries, so that tests wait for the server's delays only.
const FAST_RETRY: &str =
    r#"retry_on_failure = { initial_interval = "10ms", max_interval = "50ms" }"#;

fn grpc_table(addr: SocketAddr, extra: &str) -> String {
    format!("endpoint = \"http://{addr}\"\n{extra}\n")
}

fn http_table(addr: SocketAddr, extra: &str) -> String {
    format!("endpoint = \"http://{addr}\"\nprotocol = \"http/protobuf\"\n{extra}\n")
}

/// The registered `otlp` exporter factory.
fn factory() -> &'static registry::ComponentFactory {
    registry::lookup(ComponentKind::Exporter, "otlp").expect("the otlp exporter is registered")
}

mod delivery;
mod lifecycle;
mod retries;
mod settings;
mod tls;
