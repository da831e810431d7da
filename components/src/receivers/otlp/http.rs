//! The OTLP/HTTP listener (axum): `POST /v1/traces`, protobuf or JSON, gzip or zstd.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::net::TcpListener;

use super::body::{Decompress, decode_json, decode_proto, decompress};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracescale_core::component::ComponentError;

use super::config::OtlpReceiverConfig;
use super::{Accepted, Shared, Transport};

/// The two encodings OTLP/HTTP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

#[derive(Clone)]
struct HttpState {
    shared: Arc<Shared>,
    body_limit: usize,
}

/// gRPC status codes used in `google.rpc.Status` bodies.
mod code {
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const NOT_FOUND: i32 = 5;
    pub(super) const RESOURCE_EXHAUSTED: i32 = 8;
    pub(super) const UNIMPLEMENTED: i32 = 12;
    pub(super) const UNAVAILABLE: i32 = 14;
    pub(super) const UNAUTHENTICATED: i32 = 16;
}

/// A `google.rpc.Status` body in the request's encoding, as OTLP/HTTP requires for errors.
fn status(http: StatusCode, grpc: i32, message: &str, encoding: Encoding) -> Response {
    let body = match encoding {
        Encoding::Protobuf => tonic_types::Status {
            code: grpc,
            message: message.to_string(),
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": grpc, "message": message })
            .to_string()
            .into_bytes(),
    };
    (
        http,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

/// 429 or 503 with `Retry-After`, which OTLP clients honour.
fn back_off(
    http: StatusCode,
    grpc: i32,
    message: &str,
    encoding: Encoding,
    shared: &Shared,
) -> Response {
    let mut response = status(http, grpc, message, encoding);
    let secs = shared.retry_after.as_secs().max(1);
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn export(State(state): State<HttpState>, headers: HeaderMap, body: Body) -> Response {
    let shared = &state.shared;
    let refuse = |reason, response: Response| {
        shared.refused(Transport::Http, reason);
        response
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let encoding = match content_type.as_deref() {
        Some("application/x-protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        other => {
            let message = format!(
                "unsupported content type {:?}: send application/x-protobuf or application/json",
                other.unwrap_or("")
            );
            return refuse(
                "unsupported_media_type",
                status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    code::INVALID_ARGUMENT,
                    &message,
                    Encoding::Json,
                ),
            );
        }
    };
    if !shared.authorized(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    ) {
        return refuse(
            "unauthenticated",
            status(
                StatusCode::UNAUTHORIZED,
                code::UNAUTHENTICATED,
                "missing or wrong bearer token",
                encoding,
            ),
        );
    }
    let Some(_permit) = shared.permit() else {
        return refuse(
            "too_many_requests",
            back_off(
                StatusCode::TOO_MANY_REQUESTS,
                code::RESOURCE_EXHAUSTED,
                "too many concurrent requests; retry later",
                encoding,
                shared,
            ),
        );
    };
    let too_large = || {
        status(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::RESOURCE_EXHAUSTED,
            &format!("request body exceeds {} bytes", state.body_limit),
            encoding,
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > state.body_limit) {
        return refuse("too_large", too_large());
    }
    let raw = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(bytes) => bytes,
        Err(err) => {
            let limit_hit =
                std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            return if limit_hit {
                refuse("too_large", too_large())
            } else {
                refuse(
                    "unreadable_body",
                    status(
                        StatusCode::BAD_REQUEST,
                        code::INVALID_ARGUMENT,
                        &format!("cannot read the request body: {err}"),
                        encoding,
                    ),
                )
            };
        }
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let bytes = match decompress(content_encoding.as_deref(), raw, shared.decompressed_limit) {
        Ok(bytes) => bytes,
        Err(Decompress::Unsupported(name)) => {
            return refuse(
                "unsupported_encoding",
                status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    code::UNIMPLEMENTED,
                    &format!("unsupported content encoding {name:?}: send gzip, zstd or identity"),
                    encoding,
                ),
            );
        }
        Err(Decompress::TooLarge) => {
            return refuse(
                "decompressed_too_large",
                status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    code::RESOURCE_EXHAUSTED,
                    &format!(
                        "decompressed body exceeds {} bytes",
                        shared.decompressed_limit
                    ),
                    encoding,
                ),
            );
        }
        Err(Decompress::Corrupt(err)) => {
            return refuse(
                "malformed",
                status(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_ARGUMENT,
                    &format!("cannot decompress the body: {err}"),
                    encoding,
                ),
            );
        }
    };
    let request = match encoding {
        Encoding::Protobuf => decode_proto(&bytes),
        Encoding::Json => decode_json(&bytes),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => {
            return refuse(
                "malformed",
                status(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_ARGUMENT,
                    &message,
                    encoding,
                ),
            );
        }
    };
    match shared.accept(request).await {
        Accepted::Ok(partial_success) => {
            let response = ExportTraceServiceResponse { partial_success };
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                // Serialising a generated message cannot fail; an empty object is still a
                // valid answer if it ever did.
                Encoding::Json => serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, encoding.content_type())],
                body,
            )
                .into_response()
        }
        Accepted::Full => back_off(
            StatusCode::TOO_MANY_REQUESTS,
            code::RESOURCE_EXHAUSTED,
            "the pipeline is full; retry later",
            encoding,
            shared,
        ),
        Accepted::Closed => back_off(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            "shutting down; retry later",
            encoding,
            shared,
        ),
    }
}

async fn not_found() -> Response {
    status(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        "unknown path: traces go to POST /v1/traces",
        Encoding::Json,
    )
}

/// Binds the listener and serves until `stop` is cancelled.
pub(super) async fn serve(
    address: SocketAddr,
    shared: Arc<Shared>,
    config: &OtlpReceiverConfig,
    tls: Option<super::tls::Current>,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ComponentError> {
    let bind_error = |source| ComponentError::Bind {
        address: address.to_string(),
        source,
    };
    let listener = TcpListener::bind(address).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let state = HttpState {
        shared: Arc::clone(&shared),
        body_limit: config.http_limit(),
    };
    let app = Router::new()
        .route("/v1/traces", post(export))
        .fallback(not_found)
        .with_state(state);
    let task = match tls {
        Some(tls) => {
            let listener = super::tls::TlsListener::new(
                listener,
                tls,
                super::Transport::Http,
                shared,
                stop.clone(),
            )
            .map_err(bind_error)?;
            spawn_server(listener, app, stop)
        }
        None => {
            let listener = listener.tap_io(|tcp| {
                // See the gRPC listener: without it, each response waits on a delayed ACK.
                let _ = tcp.set_nodelay(true);
            });
            spawn_server(listener, app, stop)
        }
    };
    Ok((bound, task))
}

/// Serves `app` on `listener` until `stop` is cancelled.
fn spawn_server<L>(listener: L, app: Router, stop: CancellationToken) -> JoinHandle<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "OTLP/HTTP listener failed");
        }
    })
}
