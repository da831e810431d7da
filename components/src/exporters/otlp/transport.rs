//! One attempt at sending an encoded `ExportTraceServiceRequest`: over gRPC with a tonic
//! `Channel`, or over HTTP/1.1 with hyper's client.
//!
//! A request is encoded (and, for HTTP, compressed) once per batch, and the same bytes are sent
//! on every retry: retries cost no re-encoding and no copy of the spans.

use std::error::Error as StdError;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes};
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;
use tracescale_core::error::error_chain;

use super::config::{Compression, ExporterSettings, Target};
use super::retry::{Verdict, grpc_verdict, http_verdict, parse_retry_after};
use super::tls;

/// The gRPC method, as the generated client names it.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The most of a response body that is read: a success is a few bytes, an error a message.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The longest server message carried into a log line.
const MAX_MESSAGE_CHARS: usize = 256;

/// What the server said about an accepted request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Accepted {
    /// Spans the server accepted the request for but did not keep (`partial_success`).
    pub(super) rejected_spans: u64,
    /// The server's explanation, or a warning when nothing was rejected.
    pub(super) message: String,
}

impl From<Option<ExportTracePartialSuccess>> for Accepted {
    fn from(p: Option<ExportTracePartialSuccess>) -> Self {
        p.map(|p| Accepted {
            rejected_spans: u64::try_from(p.rejected_spans).unwrap_or(0),
            message: truncate(p.error_message),
        })
        .unwrap_or_default()
    }
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// The gRPC server (or tonic, for a connection failure) answered with a status.
    #[error("gRPC status {code:?}: {message}")]
    Grpc {
        /// The status code.
        code: Code,
        /// The status message, with the transport's cause when there is one.
        message: String,
        /// The `RetryInfo` detail's delay (zero when it named none), if the status had one.
        retry_info: Option<Duration>,
    },
    /// The HTTP server answered with an error status.
    #[error("HTTP {status}: {message}")]
    Http {
        /// The status.
        status: StatusCode,
        /// From a `google.rpc.Status` body, or the body's text.
        message: String,
        /// The `Retry-After` header, if there was a valid one.
        retry_after: Option<Duration>,
    },
    /// No HTTP answer: connecting or writing failed.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// No answer within `timeout_per_request`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl SendError {
    /// Whether retrying can help, per the OTLP specification.
    pub(super) fn verdict(&self) -> Verdict {
        match self {
            SendError::Grpc {
                code, retry_info, ..
            } => grpc_verdict(*code, *retry_info),
            SendError::Http {
                status,
                retry_after,
                ..
            } => http_verdict(status.as_u16(), *retry_after),
            SendError::Unreachable(_) | SendError::Timeout(_) => Verdict::Retry { after: None },
        }
    }
}

/// A connection to the endpoint, over one protocol.
pub(super) enum Transport {
    /// The gRPC `TraceService`.
    Grpc(Box<GrpcTransport>),
    /// `POST …/v1/traces`.
    Http(Box<HttpTransport>),
}

/// The gRPC client and the metadata every request carries.
pub(super) struct GrpcTransport {
    client: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
}

/// The HTTP client and what every request carries.
pub(super) struct HttpTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    headers: HeaderMap,
    compression: Compression,
}

impl Transport {
    /// Creates the client. Nothing connects until the first request, so an endpoint that is
    /// down does not fail the start; unreadable TLS files do. Must run inside the tokio runtime.
    pub(super) fn new(settings: &ExporterSettings) -> Result<Self, String> {
        Ok(match &settings.target {
            Target::Grpc(endpoint) => {
                let mut endpoint = tonic::transport::Endpoint::clone(endpoint);
                if let Some(tls) = &settings.tls {
                    endpoint = endpoint
                        .tls_config(tls::tonic(tls)?)
                        .map_err(|e| format!("tls: {e}"))?;
                }
                let channel = endpoint
                    .connect_timeout(settings.timeout_per_request)
                    .tcp_nodelay(true)
                    .connect_lazy();
                let client = tonic::client::Grpc::new(channel);
                let client = match settings.compression {
                    Compression::Gzip => client.send_compressed(CompressionEncoding::Gzip),
                    Compression::Zstd => client.send_compressed(CompressionEncoding::Zstd),
                    Compression::None => client,
                };
                Transport::Grpc(Box::new(GrpcTransport {
                    client,
                    metadata: MetadataMap::from_headers(settings.headers.clone()),
                }))
            }
            Target::Http(uri) => {
                let client =
                    super::tls::https_client(settings.tls.as_ref(), settings.timeout_per_request)?;
                let mut headers = settings.headers.clone();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                );
                headers.insert(
                    header::USER_AGENT,
                    HeaderValue::from_static(concat!("tracescale/", env!("CARGO_PKG_VERSION"))),
                );
                match settings.compression {
                    Compression::Gzip => {
                        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    }
                    Compression::Zstd => {
                        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
                    }
                    Compression::None => {}
                }
                Transport::Http(Box::new(HttpTransport {
                    client,
                    uri: uri.clone(),
                    headers,
                    compression: settings.compression,
                }))
            }
        })
    }

    /// The bytes to send for `request`: the protobuf message, compressed for HTTP (tonic
    /// compresses gRPC messages itself).
    pub(super) fn encode(&self, request: &ExportTraceServiceRequest) -> io::Result<Bytes> {
        let message = request.encode_to_vec();
        match self {
            Transport::Grpc(_) => Ok(Bytes::from(message)),
            Transport::Http(http) => match http.compression {
                Compression::None => Ok(Bytes::from(message)),
                Compression::Gzip => {
                    let mut gz = flate2::write::GzEncoder::new(
                        Vec::with_capacity(message.len() / 4),
                        flate2::Compression::default(),
                    );
                    gz.write_all(&message)?;
                    gz.finish().map(Bytes::from)
                }
                Compression::Zstd => zstd::bulk::compress(&message, 0).map(Bytes::from),
            },
        }
    }

    /// One attempt, bounded by `timeout`.
    pub(super) async fn send(
        &mut self,
        payload: &Bytes,
        timeout: Duration,
    ) -> Result<Accepted, SendError> {
        let attempt = async {
            match self {
                Transport::Grpc(grpc) => send_grpc(grpc, payload, timeout).await,
                Transport::Http(http) => send_http(http, payload).await,
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(SendError::Timeout(timeout)))
    }
}

async fn send_grpc(
    grpc: &mut GrpcTransport,
    payload: &Bytes,
    timeout: Duration,
) -> Result<Accepted, SendError> {
    let GrpcTransport { client, metadata } = grpc;
    client
        .ready()
        .await
        .map_err(|e| SendError::Unreachable(error_chain(&e)))?;
    let mut request = tonic::Request::new(payload.clone());
    *request.metadata_mut() = metadata.clone();
    // Tells the server our deadline (grpc-timeout), so it does not work on a request we gave up on.
    request.set_timeout(timeout);
    match client
        .unary(request, PathAndQuery::from_static(EXPORT_PATH), PreEncoded)
        .await
    {
        Ok(response) => Ok(response.into_inner().partial_success.into()),
        Err(status) => Err(SendError::Grpc {
            code: status.code(),
            retry_info: status
                .get_details_retry_info()
                .map(|info| info.retry_delay.unwrap_or(Duration::ZERO)),
            message: describe(&status),
        }),
    }
}

async fn send_http(http: &HttpTransport, payload: &Bytes) -> Result<Accepted, SendError> {
    let mut request = Request::new(Full::new(payload.clone()));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = http.uri.clone();
    *request.headers_mut() = http.headers.clone();
    let response = http
        .client
        .request(request)
        .await
        .map_err(|e| SendError::Unreachable(error_chain(&e)))?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes());
    if parts.status.is_success() {
        // The server took the request; a body we cannot read or decode only loses the
        // partial-success details, so it is not a failure.
        return Ok(body
            .ok()
            .and_then(|b| ExportTraceServiceResponse::decode(b).ok())
            .map(|r| Accepted::from(r.partial_success))
            .unwrap_or_default());
    }
    let retry_after = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let message = match &body {
        Ok(b) => error_message(&parts.headers, b),
        Err(e) => format!("(unreadable body: {e})"),
    };
    Err(SendError::Http {
        status: parts.status,
        message,
        retry_after,
    })
}

/// The message of an HTTP error body: a `google.rpc.Status` when the server sent protobuf, as
/// OTLP servers do, otherwise the text.
fn error_message(headers: &HeaderMap, body: &Bytes) -> String {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if protobuf && let Ok(status) = tonic_types::pb::Status::decode(body.clone()) {
        return truncate(status.message);
    }
    match std::str::from_utf8(body) {
        Ok(text) if !text.trim().is_empty() => truncate(text.trim().to_string()),
        _ => "(no message)".to_string(),
    }
}

/// The status message, with the transport's cause when tonic failed to connect (its message
/// alone says only "transport error").
fn describe(status: &Status) -> String {
    let mut message = status.message().to_string();
    if let Some(source) = status.source() {
        let cause = error_chain(source);
        if !message.contains(&cause) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&cause);
        }
    }
    truncate(message)
}

fn truncate(mut message: String) -> String {
    if let Some((at, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(at);
        message.push('…');
    }
    message
}

/// A codec that sends bytes already encoded as an `ExportTraceServiceRequest` and decodes the
/// response: what lets a retry resend the same bytes.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = PreEncoded;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("cannot decode the response: {e}")))
    }
}
