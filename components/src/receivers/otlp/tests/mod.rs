use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic_types::StatusExt;
use tracescale_core::signal::Signal;
use tracescale_core::testing;

use super::*;

mod tls;

fn span(trace: u8, id: u8) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: format!("op-{id}"),
        kind: 2,
        start_time_unix_nano: 1_000,
        end_time_unix_nano: 2_000,
        attributes: vec![KeyValue {
            key: "http.route".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("/cart".into())),
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("checkout".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Running {
    receiver: OtlpReceiver,
    rx: tracescale_core::topology::queue::QueueRx,
    grpc: SocketAddr,
    http: SocketAddr,
}

impl Running {
    /// Stops the receiver within five seconds; its shutdown must succeed.
    async fn stop(&mut self) {
        self.receiver
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
    }
}

async fn start(extra: &str, capacity: usize) -> Running {
    let text = format!("grpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n{extra}");
    let factory = tracescale_core::registry::lookup(
        tracescale_core::component::ComponentKind::Receiver,
        "otlp",
    )
    .unwrap();
    // Build through the factory, as the engine does, to exercise config validation too.
    let Ok(tracescale_core::config::Built::Receiver(_)) =
        tracescale_core::config::build_from_toml(factory, "otlp", &text)
    else {
        panic!("config did not build")
    };
    let config: OtlpReceiverConfig = toml::from_str(&text).unwrap();
    let mut receiver = OtlpReceiver::new(config);
    let (output, rx) = testing::output("otlp", capacity);
    receiver
        .start(testing::receiver_context("otlp", output))
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
    Running {
        receiver,
        rx,
        grpc,
        http,
    }
}

async fn client(addr: SocketAddr) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn spans_of(signal: Signal) -> Vec<ResourceSpans> {
    match signal {
        Signal::Traces(t) => t.resource_spans,
        Signal::Decisions(_) => panic!("decisions from a receiver"),
    }
}

/// One raw HTTP/1.1 exchange; returns status, headers (lowercased names) and body.
fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{head}\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

async fn post(
    addr: SocketAddr,
    headers: &'static str,
    body: Vec<u8>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        raw_http(
            addr,
            &format!("POST /v1/traces HTTP/1.1\r\n{headers}"),
            &body,
        )
    })
    .await
    .unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn grpc_spans_arrive_intact_and_compressed_requests_are_accepted() {
    let mut r = start("", 16).await;
    let sent = request(vec![span(1, 1), span(1, 2)]);
    let mut c = client(r.grpc).await;
    let response = c.export(sent.clone()).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);
    assert_eq!(spans_of(r.rx.recv().await.unwrap()), sent.resource_spans);

    let mut c = c.send_compressed(CompressionEncoding::Gzip);
    c.export(sent.clone()).await.unwrap();
    assert_eq!(spans_of(r.rx.recv().await.unwrap()), sent.resource_spans);
    r.stop().await;
    // A second stop is harmless.
    r.stop().await;
}

#[tokio::test]
async fn invalid_spans_are_reported_in_partial_success_and_the_rest_go_on() {
    let mut r = start("", 16).await;
    let mut backwards = span(1, 3);
    backwards.end_time_unix_nano = 10;
    let short_id = Span {
        trace_id: vec![9; 15],
        ..span(1, 4)
    };
    let response = client(r.grpc)
        .await
        .export(request(vec![span(1, 1), backwards, short_id]))
        .await
        .unwrap()
        .into_inner();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("end time is before start time"),
        "{partial:?}"
    );
    let got = spans_of(r.rx.recv().await.unwrap());
    assert_eq!(got[0].scope_spans[0].spans, vec![span(1, 1)]);
    r.stop().await;
}

#[tokio::test]
async fn a_full_pipeline_is_answered_with_back_off_on_both_transports() {
    let mut r = start("retry_after = \"2s\"", 1).await;
    let mut c = client(r.grpc).await;
    c.export(request(vec![span(1, 1)])).await.unwrap();
    let status = c.export(request(vec![span(1, 2)])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let retry = status.get_details_retry_info().unwrap();
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(2)));

    let (code, headers, body) = post(
        r.http,
        "Content-Type: application/x-protobuf",
        request(vec![span(1, 3)]).encode_to_vec(),
    )
    .await;
    assert_eq!(code, 429);
    assert_eq!(header(&headers, "retry-after"), Some("2"));
    let status = tonic_types::Status::decode(body.as_slice()).unwrap();
    assert_eq!(status.code, 8);
    // Draining the queue makes room again: the refusal cost nothing else.
    r.rx.recv().await.unwrap();
    c.export(request(vec![span(1, 4)])).await.unwrap();
    r.stop().await;
}

#[tokio::test]
async fn a_closed_pipeline_is_unavailable() {
    let mut r = start("", 4).await;
    r.rx.close();
    let status = client(r.grpc)
        .await
        .export(request(vec![span(1, 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let (code, headers, _) = post(
        r.http,
        "Content-Type: application/json",
        serde_json::to_vec(&request(vec![span(1, 1)])).unwrap(),
    )
    .await;
    assert_eq!(code, 503);
    assert!(header(&headers, "retry-after").is_some());
    r.stop().await;
}

#[tokio::test]
async fn bearer_tokens_are_required_when_configured() {
    let mut r = start("bearer_token = \"s3cret\"", 4).await;
    let status = client(r.grpc)
        .await
        .export(request(vec![span(1, 1)]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut authed = tonic::Request::new(request(vec![span(1, 1)]));
    authed
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    client(r.grpc).await.export(authed).await.unwrap();
    let body = request(vec![span(1, 2)]).encode_to_vec();
    let (code, ..) = post(
        r.http,
        "Content-Type: application/x-protobuf\r\nAuthorization: Bearer nope",
        body.clone(),
    )
    .await;
    assert_eq!(code, 401);
    let (code, ..) = post(
        r.http,
        "Content-Type: application/x-protobuf\r\nAuthorization: Bearer s3cret",
        body,
    )
    .await;
    assert_eq!(code, 200);
    r.stop().await;
}

#[tokio::test]
async fn http_accepts_protobuf_and_json_and_answers_in_kind() {
    let mut r = start("", 16).await;
    let sent = request(vec![span(7, 1)]);
    let (code, headers, body) = post(
        r.http,
        "Content-Type: application/x-protobuf",
        sent.encode_to_vec(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/x-protobuf")
    );
    ExportTraceServiceResponse::decode(body.as_slice()).unwrap();
    assert_eq!(spans_of(r.rx.recv().await.unwrap()), sent.resource_spans);

    // OTLP/JSON as SDKs send it: hex ids, enums as integers, int64 as strings or numbers.
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"spans":[{"traceId":"07070707070707070707070707070707","spanId":"0101010101010101",
      "name":"op-1","kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":2000,
      "attributes":[{"key":"http.route","value":{"stringValue":"/cart"}}]}]}]}]}"#;
    let (code, headers, body) = post(
        r.http,
        "Content-Type: application/json; charset=utf-8",
        json.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    serde_json::from_slice::<serde_json::Value>(&body).unwrap();
    assert_eq!(spans_of(r.rx.recv().await.unwrap()), sent.resource_spans);

    let (code, ..) = post(
        r.http,
        "Content-Type: application/x-protobuf\r\nContent-Encoding: gzip",
        gzip(&sent.encode_to_vec()),
    )
    .await;
    assert_eq!(code, 200);
    let zstd_body = zstd::encode_all(sent.encode_to_vec().as_slice(), 1).unwrap();
    let (code, ..) = post(
        r.http,
        "Content-Type: application/x-protobuf\r\nContent-Encoding: zstd",
        zstd_body,
    )
    .await;
    assert_eq!(code, 200);
    r.stop().await;
}

#[tokio::test]
async fn bad_http_requests_get_the_right_status_and_cost_nothing_else() {
    let mut r = start(
        "max_request_size = \"64KiB\"\nmax_decompressed_size = \"1MiB\"",
        64,
    )
    .await;
    let good = request(vec![span(1, 1)]).encode_to_vec();
    let proto = "Content-Type: application/x-protobuf";

    let (code, _, body) = post(r.http, proto, b"\x0a\xff\xff\xff\xff not protobuf".to_vec()).await;
    assert_eq!(code, 400);
    let status = tonic_types::Status::decode(body.as_slice()).unwrap();
    assert_eq!(status.code, 3);
    assert!(
        status.message.contains("malformed protobuf"),
        "{}",
        status.message
    );

    let (code, _, body) = post(
        r.http,
        "Content-Type: application/json",
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(code, 400);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], 3);

    let truncated = gzip(&good);
    let (code, ..) = post(
        r.http,
        "Content-Type: application/x-protobuf\r\nContent-Encoding: gzip",
        truncated[..truncated.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(code, 400);

    let bomb = gzip(&vec![0u8; 8 * 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let (code, ..) = post(
        r.http,
        "Content-Type: application/x-protobuf\r\nContent-Encoding: gzip",
        bomb,
    )
    .await;
    assert_eq!(code, 413);

    let (code, ..) = post(r.http, proto, vec![0u8; 100 * 1024]).await;
    assert_eq!(code, 413);

    let (code, ..) = post(r.http, "Content-Type: text/plain", good.clone()).await;
    assert_eq!(code, 415);
    let (code, ..) = post(
        r.http,
        "Content-Type: application/x-protobuf\r\nContent-Encoding: br",
        good.clone(),
    )
    .await;
    assert_eq!(code, 415);

    let addr = r.http;
    let (code, ..) =
        tokio::task::spawn_blocking(move || raw_http(addr, "GET /v1/traces HTTP/1.1", b""))
            .await
            .unwrap();
    assert_eq!(code, 405);
    let (code, ..) =
        tokio::task::spawn_blocking(move || raw_http(addr, "POST /v1/logs HTTP/1.1", b""))
            .await
            .unwrap();
    assert_eq!(code, 404);

    // Nothing above reached the pipeline, and the receiver still serves.
    assert!(r.rx.try_recv().is_err());
    let (code, ..) = post(r.http, proto, good).await;
    assert_eq!(code, 200);
    assert!(r.rx.recv().await.is_some());
    r.stop().await;
}

#[tokio::test]
async fn an_oversized_grpc_request_is_refused_and_serving_goes_on() {
    let mut r = start("max_request_size = \"16KiB\"", 16).await;
    let mut c = client(r.grpc).await;
    let big: Vec<Span> = (0..200)
        .map(|i| Span {
            name: "x".repeat(200),
            ..span(1, i as u8 + 1)
        })
        .collect();
    let status = c.export(request(big)).await.unwrap_err();
    assert!(
        matches!(
            status.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{status:?}"
    );
    c.export(request(vec![span(1, 1)])).await.unwrap();
    assert!(r.rx.recv().await.is_some());
    r.stop().await;
}

#[tokio::test]
async fn shutdown_is_safe_before_start_and_releases_the_ports() {
    let mut never = OtlpReceiver::new(OtlpReceiverConfig::default());
    never.shutdown(Instant::now()).await.unwrap();

    let mut r = start("", 4).await;
    let (grpc, http) = (r.grpc, r.http);
    r.stop().await;
    // The pipeline sees its input close once the receiver is gone.
    assert!(r.rx.recv().await.is_none());
    std::net::TcpListener::bind(grpc).unwrap();
    std::net::TcpListener::bind(http).unwrap();
}

#[tokio::test]
async fn malformed_grpc_bodies_are_invalid_argument() {
    let mut r = start("", 4).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", r.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = ::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let status = grpc
        .unary::<_, ExportTraceServiceResponse, _>(
            tonic::Request::new(vec![0x0au8, 0xff, 0xff, 0xff, 0xff]),
            path,
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(r.rx.try_recv().is_err());
    // Still serving.
    client(r.grpc)
        .await
        .export(request(vec![span(1, 1)]))
        .await
        .unwrap();
    r.stop().await;
}

/// Sends raw bytes as the request message and decodes the response with prost.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ProstDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ProstDecoder {
        ProstDecoder
    }
}

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

struct ProstDecoder;

impl tonic::codec::Decoder for ProstDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[test]
fn validation_rejects_bad_ids_and_times() {
    use validate::{Invalid, check};
    assert_eq!(check(&span(1, 1)), Ok(()));
    assert_eq!(
        check(&Span {
            trace_id: vec![0; 16],
            ..span(1, 1)
        }),
        Err(Invalid::TraceId)
    );
    assert_eq!(
        check(&Span {
            span_id: vec![1; 4],
            ..span(1, 1)
        }),
        Err(Invalid::SpanId)
    );
    assert_eq!(
        check(&Span {
            parent_span_id: vec![1; 3],
            ..span(1, 1)
        }),
        Err(Invalid::ParentSpanId)
    );
    assert_eq!(
        check(&Span {
            end_time_unix_nano: 1,
            ..span(1, 1)
        }),
        Err(Invalid::EndBeforeStart)
    );
}
