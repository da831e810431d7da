//! The OTLP/gRPC listener (tonic).

use std::net::SocketAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracescale_core::component::ComponentError;

use super::config::OtlpReceiverConfig;
use super::tls::TlsListener;
use super::{Accepted, Shared, Transport};

struct Service {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let shared = &self.shared;
        let auth = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        if !shared.authorized(auth) {
            shared.refused(Transport::Grpc, "unauthenticated");
            return Err(Status::unauthenticated("missing or wrong bearer token"));
        }
        let Some(_permit) = shared.permit() else {
            shared.refused(Transport::Grpc, "too_many_requests");
            return Err(back_off(
                shared,
                "too many concurrent requests; retry later",
            ));
        };
        match shared.accept(request.into_inner()).await {
            Accepted::Ok(partial_success) => Ok(Response::new(ExportTraceServiceResponse {
                partial_success,
            })),
            Accepted::Full => Err(back_off(shared, "the pipeline is full; retry later")),
            Accepted::Closed => Err(Status::unavailable("shutting down; retry later")),
        }
    }
}

/// RESOURCE_EXHAUSTED with a RetryInfo detail: the OTLP spec makes it retryable only then.
fn back_off(shared: &Shared, message: &str) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(shared.retry_after)),
    )
}

/// The codec answers a request it cannot decode with INTERNAL, which clients may retry; the
/// OTLP specification says INVALID_ARGUMENT, which they must not. The answer is
/// trailers-only, so the status is in the response headers and can be rewritten there.
/// These refusals happen in the codec, before the service sees the request, so they are
/// counted here.
fn malformed_is_invalid_argument(
    mut response: http::Response<tonic::body::Body>,
    shared: &Shared,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let too_large = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"11")
        && headers.get("grpc-message").is_some_and(|v| {
            const NEEDLE: &[u8] = b"too%20large";
            v.as_bytes().windows(NEEDLE.len()).any(|w| w == NEEDLE)
        });
    if too_large {
        shared.refused(Transport::Grpc, "too_large");
    }
    let internal = headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"13");
    let decode_error = headers
        .get("grpc-message")
        .is_some_and(|v| v.as_bytes().starts_with(b"failed%20to%20decode"));
    if internal && decode_error {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        shared.refused(Transport::Grpc, "malformed");
    }
    response
}

/// Where the gRPC server takes its connections from.
enum Incoming {
    Tls(TlsListener),
    Plain(TcpIncoming),
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
    let counted = Arc::clone(&shared);
    let service = TraceServiceServer::new(Service {
        shared: Arc::clone(&shared),
    })
    // The limit applies after decompression too, so a bomb is refused, not inflated.
    .max_decoding_message_size(config.grpc_limit())
    .accept_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Zstd)
    .send_compressed(CompressionEncoding::Gzip);
    let router = Server::builder()
        .layer(tower::util::MapResponseLayer::new(move |response| {
            malformed_is_invalid_argument(response, &counted)
        }))
        .add_service(service);
    // Our own acceptor for TLS rather than tonic's: handshakes are bounded, timed out and
    // counted as on the HTTP listener.
    let (bound, incoming) = match tls {
        Some(tls) => {
            let listener = TcpListener::bind(address).await.map_err(bind_error)?;
            let bound = listener.local_addr().map_err(bind_error)?;
            let incoming = TlsListener::new(listener, tls, Transport::Grpc, shared, stop.clone())
                .map_err(bind_error)?;
            (bound, Incoming::Tls(incoming))
        }
        None => {
            // Without TCP_NODELAY small responses wait for Nagle's delayed ACK: tens of
            // milliseconds of latency per request on an otherwise idle connection.
            let incoming = TcpIncoming::bind(address)
                .map_err(bind_error)?
                .with_nodelay(Some(true));
            let bound = incoming.local_addr().map_err(bind_error)?;
            (bound, Incoming::Plain(incoming))
        }
    };
    let task = tokio::spawn(async move {
        let stopped = stop.cancelled_owned();
        // One router, served from whichever listener was bound: the two streams differ in type.
        let served = match incoming {
            Incoming::Tls(i) => router.serve_with_incoming_shutdown(i, stopped).await,
            Incoming::Plain(i) => router.serve_with_incoming_shutdown(i, stopped).await,
        };
        if let Err(err) = served {
            tracing::error!(error = %err, "OTLP/gRPC listener failed");
        }
    });
    Ok((bound, task))
}
