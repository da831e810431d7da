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

// ---------------------------------------------------------------------------------------------
// Delivery

#[tokio::test]
async fn spans_arrive_intact_over_grpc_gzipped_with_headers() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(
        addr,
        "timeout = \"20ms\"\nheaders = { x-tenant = \"team-a\" }",
    ))
    .await;
    let sent = vec![resource("checkout", 3), resource("payments", 2)];
    exporter.export(signal(sent.clone())).await.unwrap();
    mock.wait_for_requests(1).await;

    let seen = mock.seen();
    assert_eq!(
        seen[0].resource_spans, sent,
        "spans, resources and scopes intact"
    );
    assert_eq!(seen[0].encoding.as_deref(), Some("gzip"));
    assert_eq!(seen[0].tenant.as_deref(), Some("team-a"));
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).sent(), 5);
}

#[tokio::test]
async fn spans_arrive_intact_over_http_gzipped_with_headers() {
    let mock = Mock::new(vec![]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(
        addr,
        "timeout = \"20ms\"\nheaders = { x-tenant = \"team-b\" }",
    ))
    .await;
    let sent = vec![resource("checkout", 4), resource("payments", 1)];
    exporter.export(signal(sent.clone())).await.unwrap();
    mock.wait_for_requests(1).await;

    let seen = mock.seen();
    assert_eq!(seen[0].resource_spans, sent);
    assert_eq!(seen[0].path, "/v1/traces");
    assert_eq!(seen[0].encoding.as_deref(), Some("gzip"));
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(seen[0].tenant.as_deref(), Some("team-b"));
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).sent(), 5);
}

#[tokio::test]
async fn compression_can_be_zstd_or_off() {
    let mock = Mock::new(vec![]);
    let grpc = grpc_server(&mock).await;
    let http = http_server(&mock).await;
    for (table, want) in [
        (grpc_table(grpc, "compression = \"zstd\""), Some("zstd")),
        (grpc_table(grpc, "compression = \"none\""), None),
        (http_table(http, "compression = \"zstd\""), Some("zstd")),
        (http_table(http, "compression = \"none\""), None),
    ] {
        let before = mock.seen().len();
        let mut exporter = started(&table).await;
        exporter
            .export(signal(vec![resource("svc", 2)]))
            .await
            .unwrap();
        exporter.shutdown(in_secs(5)).await.unwrap();
        let seen = mock.seen();
        assert_eq!(seen.len(), before + 1, "{table}");
        let encoding = seen[before]
            .encoding
            .as_deref()
            .filter(|e| *e != "identity");
        assert_eq!(encoding, want, "{table}");
        assert_eq!(span_names(&seen[before].resource_spans).len(), 2);
    }
}

#[tokio::test]
async fn an_http_endpoint_path_is_a_prefix() {
    let mock = Mock::new(vec![]);
    let addr = http_server(&mock).await;
    let table = format!("endpoint = \"http://{addr}/prefix/\"\nprotocol = \"http/protobuf\"\n");
    let mut exporter = started(&table).await;
    exporter
        .export(signal(vec![resource("svc", 1)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen()[0].path, "/prefix/v1/traces");
}

// ---------------------------------------------------------------------------------------------
// Batching

#[tokio::test]
async fn batches_are_cut_at_send_batch_size_keeping_resource_and_scope() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "send_batch_size = 10\ntimeout = \"1h\"")).await;
    // One batch of 25 spans over two resources: requests of 10, 10, then 5 at shutdown.
    exporter
        .export(signal(vec![resource("a", 12), resource("b", 13)]))
        .await
        .unwrap();
    mock.wait_for_requests(2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(mock.seen().len(), 2, "the rest waits for more spans");

    exporter.shutdown(in_secs(5)).await.unwrap();
    let seen = mock.seen();
    let sizes: Vec<_> = seen.iter().map(|s| count(&s.resource_spans)).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    // The second request starts inside resource "a" and ends inside resource "b".
    let second = &seen[1].resource_spans;
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].resource, resource("a", 0).resource);
    assert_eq!(
        second[0].scope_spans[0].scope,
        resource("a", 0).scope_spans[0].scope
    );
    assert_eq!(second[1].resource, resource("b", 0).resource);
    assert_eq!(second[0].schema_url, resource("a", 0).schema_url);
    let want: Vec<_> = span_names(&[resource("a", 12), resource("b", 13)]);
    assert_eq!(mock.spans(), want, "every span once, in order");
    assert_eq!(tally(&exporter).sent(), 25);
}

#[tokio::test]
async fn small_batches_are_merged_up_to_send_batch_size() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "send_batch_size = 10\ntimeout = \"1h\"")).await;
    for (service, n) in [("a", 3), ("b", 3), ("c", 4)] {
        exporter
            .export(signal(vec![resource(service, n)]))
            .await
            .unwrap();
    }
    mock.wait_for_requests(1).await;
    let seen = mock.seen();
    assert_eq!(count(&seen[0].resource_spans), 10);
    assert_eq!(seen[0].resource_spans.len(), 3);
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn a_partial_batch_is_sent_when_the_timeout_passes() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(
        addr,
        "send_batch_size = 1000\ntimeout = \"150ms\"",
    ))
    .await;
    let exported = std::time::Instant::now();
    exporter
        .export(signal(vec![resource("a", 5)]))
        .await
        .unwrap();
    mock.wait_for_requests(1).await;
    let waited = mock.seen()[0].at.duration_since(exported);
    assert!(waited >= Duration::from_millis(140), "{waited:?}");
    assert_eq!(count(&mock.seen()[0].resource_spans), 5);
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
}

/// A flush (the disk buffer asks for one before it acknowledges what it read) sends the
/// partial batch at once rather than after `timeout`.
#[tokio::test]
async fn a_flush_sends_the_partial_batch_without_waiting_for_the_timeout() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(
        addr,
        "send_batch_size = 1000\ntimeout = \"1h\"",
    ))
    .await;
    for n in [3, 4] {
        exporter
            .export(signal(vec![resource("a", n)]))
            .await
            .unwrap();
    }
    // The guard only turns a flush that waits for the hour into a failure, not a hang.
    tokio::time::timeout(Duration::from_secs(60), exporter.flush())
        .await
        .expect("the flush waited for the batch timeout")
        .unwrap();
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(count(&mock.seen()[0].resource_spans), 7);
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn export_waits_when_the_buffer_is_full() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    // A buffer of 2 × 5 spans; the server holds every request until the gate opens.
    let gate_permits = mock.gate.available_permits();
    mock.gate.forget_permits(gate_permits);
    let mut exporter = started(&grpc_table(addr, "send_batch_size = 5\ntimeout = \"1h\"")).await;
    exporter
        .export(signal(vec![resource("a", 5)]))
        .await
        .unwrap();
    mock.wait_for_requests(1).await;
    exporter
        .export(signal(vec![resource("b", 5)]))
        .await
        .unwrap();
    let blocked = tokio::time::timeout(
        Duration::from_millis(200),
        exporter.export(signal(vec![resource("lost", 5)])),
    )
    .await;
    assert!(blocked.is_err(), "export returned with a full buffer");

    mock.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    exporter
        .export(signal(vec![resource("c", 5)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    // The export that was cancelled while waiting handed nothing over.
    let want = span_names(&[resource("a", 5), resource("b", 5), resource("c", 5)]);
    assert_eq!(mock.spans(), want);
}

// ---------------------------------------------------------------------------------------------
// Retries

#[tokio::test]
async fn unavailable_twice_then_ok_is_delivered_once_after_two_retries() {
    let mock = Mock::new(vec![
        Answer::Grpc(Status::unavailable("warming up")),
        Answer::Grpc(Status::unavailable("still warming up")),
    ]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 4)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();

    assert_eq!(mock.seen().len(), 3);
    let t = tally(&exporter);
    assert_eq!(t.retries(), 2);
    assert_eq!(t.sent(), 4);
    assert_eq!(t.dropped(DropReason::PermanentError), 0);
}

#[tokio::test]
async fn resource_exhausted_with_retry_info_waits_as_told() {
    let mock = Mock::new(vec![Answer::Grpc(Status::with_error_details(
        Code::ResourceExhausted,
        "slow down",
        ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
    ))]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 2)]))
        .await
        .unwrap();
    mock.wait_for_requests(2).await;

    let seen = mock.seen();
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).retries(), 1);
    assert_eq!(tally(&exporter).sent(), 2);
}

#[tokio::test]
async fn resource_exhausted_without_retry_info_is_permanent() {
    let mock = Mock::new(vec![Answer::Grpc(Status::resource_exhausted("quota"))]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(tally(&exporter).dropped(DropReason::PermanentError), 3);
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let mock = Mock::new(vec![Answer::Grpc(Status::invalid_argument("bad span"))]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();

    assert_eq!(mock.seen().len(), 1);
    let t = tally(&exporter);
    assert_eq!(t.retries(), 0);
    assert_eq!(t.sent(), 0);
    assert_eq!(t.dropped(DropReason::PermanentError), 3);
}

#[tokio::test]
async fn http_429_with_retry_after_waits_as_told() {
    let mock = Mock::new(vec![Answer::Http {
        status: StatusCode::TOO_MANY_REQUESTS,
        retry_after: Some("1"),
    }]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 2)]))
        .await
        .unwrap();
    mock.wait_for_requests(2).await;

    let seen = mock.seen();
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).retries(), 1);
    assert_eq!(tally(&exporter).sent(), 2);
}

#[tokio::test]
async fn http_503_and_502_are_retried() {
    let mock = Mock::new(vec![
        Answer::Http {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
        Answer::Http {
            status: StatusCode::BAD_GATEWAY,
            retry_after: None,
        },
    ]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 2)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 3);
    assert_eq!(tally(&exporter).retries(), 2);
    assert_eq!(tally(&exporter).sent(), 2);
}

#[tokio::test]
async fn http_400_is_not_retried() {
    let mock = Mock::new(vec![Answer::Http {
        status: StatusCode::BAD_REQUEST,
        retry_after: None,
    }]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(tally(&exporter).retries(), 0);
    assert_eq!(tally(&exporter).dropped(DropReason::PermanentError), 3);
}

#[tokio::test]
async fn retries_stop_after_max_elapsed_time() {
    let script = (0..1000)
        .map(|_| Answer::Grpc(Status::unavailable("down")))
        .collect();
    let mock = Mock::new(script);
    let addr = grpc_server(&mock).await;
    let table = grpc_table(
        addr,
        r#"retry_on_failure = { initial_interval = "10ms", max_interval = "20ms", max_elapsed_time = "150ms" }"#,
    );
    let mut exporter = started(&table).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    let t = tally(&exporter);
    assert_eq!(t.dropped(DropReason::RetriesExhausted), 3);
    assert!(t.retries() >= 2, "{}", t.retries());
    assert_eq!(mock.seen().len() as u64, t.retries() + 1);
}

#[tokio::test]
async fn disabled_retries_drop_at_the_first_failure() {
    let mock = Mock::new(vec![Answer::Grpc(Status::unavailable("down"))]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "retry_on_failure = { enabled = false }")).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(tally(&exporter).dropped(DropReason::RetriesExhausted), 3);
}

#[tokio::test]
async fn partial_success_counts_the_rejected_spans() {
    let mock = Mock::new(vec![Answer::PartialSuccess {
        rejected: 2,
        message: "2 spans had no trace id",
    }]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "")).await;
    exporter
        .export(signal(vec![resource("a", 5)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    let t = tally(&exporter);
    assert_eq!(t.sent(), 3);
    assert_eq!(t.dropped(DropReason::Rejected), 2);
    assert_eq!(t.retries(), 0);

    let mock = Mock::new(vec![Answer::PartialSuccess {
        rejected: 1,
        message: "too old",
    }]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(addr, "")).await;
    exporter
        .export(signal(vec![resource("a", 4)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).sent(), 3);
    assert_eq!(tally(&exporter).dropped(DropReason::Rejected), 1);
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test]
async fn shutdown_drains_the_buffer() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "timeout = \"1h\"")).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter
        .export(signal(vec![resource("b", 4)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(mock.seen().is_empty());

    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(
        mock.spans(),
        span_names(&[resource("a", 3), resource("b", 4)])
    );
    assert_eq!(tally(&exporter).sent(), 7);
    // Idempotent, and the exporter takes nothing more.
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert!(
        exporter
            .export(signal(vec![resource("c", 1)]))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_retries_until_the_deadline() {
    // The server is down for the first attempts of the drain, then recovers.
    let mock = Mock::new(vec![
        Answer::Grpc(Status::unavailable("restarting")),
        Answer::Grpc(Status::unavailable("restarting")),
    ]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(
        addr,
        &format!("timeout = \"1h\"\n{FAST_RETRY}"),
    ))
    .await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).sent(), 3);
    assert_eq!(tally(&exporter).retries(), 2);
}

#[tokio::test]
async fn shutdown_gives_up_by_its_deadline_when_nothing_listens() {
    let addr = closed_port().await;
    for table in [grpc_table(addr, ""), http_table(addr, "")] {
        let mut exporter = started(&table).await;
        exporter
            .export(signal(vec![resource("a", 6)]))
            .await
            .unwrap();
        let began = std::time::Instant::now();
        let err = exporter
            .shutdown(Instant::now() + Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("6 spans could not be sent"),
            "{table}: {err}"
        );
        let took = began.elapsed();
        assert!(took < Duration::from_millis(1500), "{table}: {took:?}");
        assert_eq!(tally(&exporter).dropped(DropReason::Shutdown), 6, "{table}");
        exporter.shutdown(in_secs(1)).await.unwrap();
    }
}

#[tokio::test]
async fn shutdown_gives_up_by_its_deadline_when_the_server_hangs() {
    let mock = Mock::new(vec![]);
    mock.gate.forget_permits(mock.gate.available_permits());
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "send_batch_size = 4\ntimeout = \"1h\"")).await;
    // One request hangs, a second batch waits behind it.
    exporter
        .export(signal(vec![resource("a", 4), resource("b", 3)]))
        .await
        .unwrap();
    mock.wait_for_requests(1).await;
    let began = std::time::Instant::now();
    // Giving up on spans it held is an error, which the engine turns into exit status 1.
    let err = exporter
        .shutdown(Instant::now() + Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("7 spans could not be sent"),
        "{err}"
    );
    assert!(began.elapsed() < Duration::from_millis(1500));
    assert_eq!(tally(&exporter).dropped(DropReason::Shutdown), 7);
    assert_eq!(tally(&exporter).sent(), 0);
}

#[tokio::test]
async fn shutdown_before_start_and_export_before_start() {
    let mut exporter = OtlpExporter::new(settings("endpoint = \"http://127.0.0.1:4317\""));
    assert!(
        exporter
            .export(signal(vec![resource("a", 1)]))
            .await
            .is_err()
    );
    exporter.shutdown(in_secs(1)).await.unwrap();
    exporter.shutdown(in_secs(1)).await.unwrap();
}

#[tokio::test]
async fn empty_batches_are_accepted_and_send_nothing() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "timeout = \"10ms\"")).await;
    exporter.export(signal(vec![])).await.unwrap();
    exporter
        .export(signal(vec![resource("a", 0)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert!(mock.seen().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Config

fn factory() -> &'static registry::ComponentFactory {
    registry::lookup(ComponentKind::Exporter, "otlp").expect("the otlp exporter is registered")
}

/// The error messages of a table that must not build.
fn build_errors(table: &str) -> Vec<String> {
    match build_from_toml(factory(), "otlp", table) {
        Ok(_) => panic!("built:\n{table}"),
        Err(e) => e.diagnostics().iter().map(|d| d.message.clone()).collect(),
    }
}

#[test]
fn bad_configs_are_refused_with_the_key() {
    let cases = [
        ("endpoint = \"tempo:4317\"", "exporters.otlp.endpoint:"),
        ("endpoint = \"http://\"", "exporters.otlp.endpoint:"),
        ("endpoint = \"not a url\"", "exporters.otlp.endpoint:"),
        ("endpoint = \"ftp://tempo:4317\"", "unsupported scheme"),
        (
            "endpoint = \"http://tempo:4317\"\ntls = { ca_file = \"/ca.pem\" }",
            "`tls` is set but the endpoint is not https://",
        ),
        (
            "endpoint = \"https://tempo:4317\"\ntls = { cert_file = \"/c.pem\" }",
            "needs both `cert_file` and `key_file`",
        ),
        ("endpoint = \"http://tempo:4317/v1\"", "gRPC does not use"),
        (
            "endpoint = \"http://tempo:4318?x=1\"\nprotocol = \"http/protobuf\"",
            "query",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nprotocol = \"http/json\"",
            "exporters.otlp.protocol: unknown value `http/json`",
        ),
        (
            "endpoint = \"http://tempo:4317\"\ncompression = \"brotli\"",
            "unknown value `brotli`",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nsend_batch_size = 0",
            "exporters.otlp.send_batch_size: must be between 1",
        ),
        (
            "endpoint = \"http://tempo:4317\"\ntimeout = \"0s\"",
            "exporters.otlp.timeout: must be more than 0",
        ),
        (
            "endpoint = \"http://tempo:4317\"\ntimeout_per_request = \"0s\"",
            "exporters.otlp.timeout_per_request: must be more than 0",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nretry_on_failure = { initial_interval = \"10s\", max_interval = \"1s\" }",
            "exporters.otlp.retry_on_failure.max_interval: must be at least",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nretry_on_failure = { multiplier = 0.5 }",
            "retry_on_failure.multiplier",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nretry_on_failure = { randomization_factor = 2.0 }",
            "retry_on_failure.randomization_factor",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nretry_on_failure = { max_elapsed = \"1m\" }",
            "unknown key `max_elapsed`",
        ),
        (
            "endpoint = \"https://tempo:4317\"\ntls = { insecure = true }",
            "unknown key `insecure`",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nheaders = { \"content-type\" = \"text/plain\" }",
            "exporters.otlp.headers.content-type: is set by the exporter",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nheaders = { \"bad header\" = \"x\" }",
            "is not a valid header name",
        ),
        (
            "endpoint = \"http://tempo:4317\"\nheaders = { x-tenant = \"caf\u{e9}\" }",
            "visible ASCII",
        ),
        ("protocol = \"grpc\"", "missing required key `endpoint`"),
        (
            "endpoint = \"http://tempo:4317\"\nsend_batch_sise = 10",
            "unknown key `send_batch_sise`",
        ),
    ];
    for (table, want) in cases {
        let errors = build_errors(table);
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{table}\nwanted {want:?} in {errors:#?}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = build_errors(
        "endpoint = \"http://tempo:4317/v1\"\nsend_batch_size = 0\ntimeout = \"0s\"\ntls = {}",
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
}

#[test]
fn http_requests_go_to_v1_traces_under_the_endpoint() {
    for (endpoint, want) in [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("http://gw:8080/otlp", "http://gw:8080/otlp/v1/traces"),
    ] {
        let s = settings(&format!(
            "endpoint = \"{endpoint}\"\nprotocol = \"http/protobuf\""
        ));
        match s.target {
            config::Target::Http(uri) => assert_eq!(uri.to_string(), want),
            config::Target::Grpc(_) => panic!("gRPC target for HTTP"),
        }
    }
}

#[test]
fn a_port_that_does_not_match_the_protocol_is_a_warning() {
    let config: OtlpExporterConfig = toml::from_str("endpoint = \"http://tempo:4318\"").unwrap();
    let mut warnings = Vec::new();
    assert!(config.check(&mut warnings).is_ok());
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].key, "endpoint");
}

#[test]
fn defaults_match_the_readme() {
    let s = settings("endpoint = \"http://tempo:4317\"");
    assert!(matches!(s.target, config::Target::Grpc(_)));
    assert_eq!(s.compression, Compression::Gzip);
    assert_eq!(s.send_batch_size, 8192);
    assert_eq!(s.capacity(), 16384);
    assert_eq!(s.timeout, Duration::from_millis(200));
    assert_eq!(s.timeout_per_request, Duration::from_secs(10));
    assert!(s.retry.enabled);
    assert_eq!(s.retry.initial_interval, Duration::from_secs(1));
    assert_eq!(s.retry.max_interval, Duration::from_secs(30));
    assert_eq!(s.retry.max_elapsed_time, Some(Duration::from_secs(300)));
    assert!(s.headers.is_empty());
}

// ---------------------------------------------------------------------------------------------
// README

const README: &str = include_str!("README.md");

/// The `[exporters.…]` tables of the README's TOML blocks, without the engine keys, as the
/// conformance test reads them. Each block is one table of `key = value` lines.
fn readme_examples() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for line in README.lines() {
        match (&mut block, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => block = Some(Vec::new()),
            (Some(_), l) if l.starts_with("```") => {
                let lines = block.take().unwrap();
                let header = lines[0].trim();
                let id = header
                    .strip_prefix("[exporters.")
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap()
                    .trim_matches('"')
                    .to_string();
                let table: Vec<&str> = lines[1..]
                    .iter()
                    .copied()
                    .filter(|l| !l.starts_with("queue_size") && !l.starts_with("when_full"))
                    .collect();
                out.push((id, table.join("\n")));
            }
            (Some(b), _) => b.push(line),
            (None, _) => {}
        }
    }
    out
}

#[test]
fn every_config_key_has_a_readme_row() {
    for key in (factory().config_keys)()
        .iter()
        .copied()
        .chain(["queue_size", "when_full"])
    {
        assert!(
            README.contains(&format!("| `{key}` |")),
            "no row for `{key}`"
        );
    }
    for key in [
        "enabled",
        "initial_interval",
        "max_interval",
        "max_elapsed_time",
        "multiplier",
        "randomization_factor",
    ] {
        assert!(
            README.contains(&format!("| `retry_on_failure.{key}` |")),
            "no row for `retry_on_failure.{key}`"
        );
    }
}

#[tokio::test]
async fn the_readme_examples_build_and_the_first_starts_and_stops_by_its_deadline() {
    let examples = readme_examples();
    assert!(examples.len() >= 2);
    for (id, table) in &examples {
        if let Err(e) = build_from_toml(factory(), id, table) {
            panic!("[exporters.{id}] does not build:\n{}", e.render(false));
        }
    }
    let (id, table) = &examples[0];
    let Ok(Built::Exporter(mut exporter)) = build_from_toml(factory(), id, table) else {
        panic!("not an exporter");
    };
    exporter
        .start(&testing::exporter_context(id))
        .await
        .unwrap();
    exporter
        .export(signal(vec![resource("a", 20)]))
        .await
        .unwrap();
    // Nothing listens at the example's endpoint: the spans are given up on, by the deadline.
    let began = std::time::Instant::now();
    let stopped = exporter
        .shutdown(Instant::now() + Duration::from_millis(300))
        .await;
    assert!(stopped.is_err());
    assert!(began.elapsed() < Duration::from_secs(2));
    exporter.shutdown(in_secs(1)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// TLS: the exporter into a tracescale receiver that serves TLS

fn tls_fixture(name: &str) -> String {
    format!(
        "{}/../tests/fixtures/tls/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

async fn tls_receiver(
    mutual: bool,
) -> (
    crate::receivers::otlp::OtlpReceiver,
    tracescale_core::topology::queue::QueueRx,
    std::net::SocketAddr,
    std::net::SocketAddr,
) {
    let mut text = format!(
        "grpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        tls_fixture("server.pem"),
        tls_fixture("server.key")
    );
    if mutual {
        text.push_str(&format!("client_ca_file = {:?}\n", tls_fixture("ca.pem")));
    }
    let config: crate::receivers::otlp::OtlpReceiverConfig = toml::from_str(&text).unwrap();
    let mut receiver = crate::receivers::otlp::OtlpReceiver::new(config);
    let (output, rx) = tracescale_core::testing::output("otlp", 16);
    receiver
        .start(tracescale_core::testing::receiver_context("otlp", output))
        .await
        .unwrap();
    let addr = |name| {
        receiver
            .local_addresses()
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    };
    let (grpc, http) = (addr("grpc"), addr("http"));
    (receiver, rx, grpc, http)
}

#[tokio::test]
async fn exports_over_tls_with_a_ca_file_and_a_client_certificate() {
    let (mut receiver, mut rx, grpc, http) = tls_receiver(true).await;
    for (protocol, port) in [("grpc", grpc.port()), ("http/protobuf", http.port())] {
        let table = format!(
            "endpoint = \"https://localhost:{port}\"\nprotocol = \"{protocol}\"\ntimeout = \"10ms\"\n[tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            tls_fixture("ca.pem"),
            tls_fixture("client.pem"),
            tls_fixture("client.key")
        );
        let Ok(Built::Exporter(mut exporter)) = build_from_toml(factory(), "otlp", &table) else {
            panic!("{table} did not build");
        };
        exporter
            .start(&tracescale_core::testing::exporter_context("otlp"))
            .await
            .unwrap();
        exporter
            .export(Signal::Traces(Traces::new(vec![resource("checkout", 3)])))
            .await
            .unwrap();
        exporter.shutdown(in_secs(10)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing arrived over {protocol}"))
            .unwrap();
        assert_eq!(got.item_count(), 3, "{protocol}");
    }
    receiver.shutdown(in_secs(5)).await.unwrap();
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused() {
    let (mut receiver, mut rx, grpc, _) = tls_receiver(false).await;
    // No `ca_file`: the system's roots, which do not include the test CA.
    let table = format!(
        "endpoint = \"https://localhost:{}\"\ntimeout = \"10ms\"\nretry_on_failure = {{ enabled = false }}\n",
        grpc.port()
    );
    let Ok(Built::Exporter(mut exporter)) = build_from_toml(factory(), "otlp", &table) else {
        panic!("did not build");
    };
    exporter
        .start(&tracescale_core::testing::exporter_context("otlp"))
        .await
        .unwrap();
    exporter
        .export(Signal::Traces(Traces::new(vec![resource("checkout", 3)])))
        .await
        .unwrap();
    exporter.shutdown(in_secs(10)).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "spans crossed an unverified connection"
    );
    receiver.shutdown(in_secs(5)).await.unwrap();
}
