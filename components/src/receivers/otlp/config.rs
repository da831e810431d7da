//! Config of the `otlp` receiver.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use tracescale_core::component::BuildContext;
use tracescale_core::config::{BuildError, ByteSize, HumanDuration};

/// Config of the `otlp` receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiverConfig {
    /// Where the gRPC TraceService listens, or `"off"`.
    #[serde(deserialize_with = "listen_address")]
    pub grpc: Option<SocketAddr>,
    /// Where `POST /v1/traces` listens, or `"off"`.
    #[serde(deserialize_with = "listen_address")]
    pub http: Option<SocketAddr>,
    /// Largest request body accepted, as sent (compressed); default 4 MiB for gRPC and 20 MiB
    /// for HTTP, as in the Collector. Setting it applies to both.
    pub max_request_size: Option<ByteSize>,
    /// Largest request once decompressed: a compression bomb is refused, not inflated.
    pub max_decompressed_size: ByteSize,
    /// Requests handled at once over both listeners; more are answered with back-off.
    pub max_concurrent_requests: usize,
    /// Required `Authorization: Bearer …` token; unset accepts every client.
    pub bearer_token: Option<String>,
    /// The back-off a refused client is told to wait (gRPC RetryInfo, HTTP Retry-After).
    pub retry_after: HumanDuration,
    /// TLS on both listeners; unset serves plain text.
    pub tls: Option<TlsConfig>,
}

/// `tls`: the listeners' certificate, and optionally the CA that client certificates must be
/// signed by.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate signed by it (mutual TLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are read again; a change takes effect for new connections. Unset:
    /// read once, at start.
    #[serde(default)]
    pub reload_interval: Option<HumanDuration>,
}

impl Default for OtlpReceiverConfig {
    fn default() -> Self {
        Self {
            grpc: Some(SocketAddr::from(([127, 0, 0, 1], 4317))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 4318))),
            max_request_size: None,
            max_decompressed_size: ByteSize::mib(64),
            max_concurrent_requests: 64,
            bearer_token: None,
            retry_after: HumanDuration::from_secs(1),
            tls: None,
        }
    }
}

/// The gRPC default limit: the OTLP specification's and the Collector's 4 MiB.
pub(crate) const GRPC_DEFAULT_LIMIT: ByteSize = ByteSize::mib(4);
/// The HTTP default limit: the Collector's 20 MiB.
pub(crate) const HTTP_DEFAULT_LIMIT: ByteSize = ByteSize::mib(20);

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "off" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid address {s:?}: write host:port such as \"127.0.0.1:4317\", or \"off\""
        ))
    })
}

impl OtlpReceiverConfig {
    /// Parses and checks the component's table.
    pub(crate) fn from_context(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let config: Self = ctx.parse()?;
        let mut errors = Vec::new();
        if config.grpc.is_none() && config.http.is_none() {
            errors.push(ctx.invalid("", "both listeners are off: enable `grpc` or `http`"));
        }
        if let (Some(g), Some(h)) = (config.grpc, config.http)
            && g == h
            && g.port() != 0
        {
            errors.push(ctx.invalid("http", format!("gRPC and HTTP cannot share {h}")));
        }
        if config.max_request_size.is_some_and(|s| s.bytes() == 0) {
            errors.push(ctx.invalid("max_request_size", "must be more than 0 bytes"));
        }
        if config.max_decompressed_size.bytes() == 0 {
            errors.push(ctx.invalid("max_decompressed_size", "must be more than 0 bytes"));
        }
        if config.max_concurrent_requests == 0 {
            errors.push(ctx.invalid("max_concurrent_requests", "must be at least 1"));
        }
        if config.bearer_token.as_deref().is_some_and(str::is_empty) {
            errors.push(ctx.invalid(
                "bearer_token",
                "is empty: unset it to accept every client, or give it a value",
            ));
        }
        if let Some(interval) = config.tls.as_ref().and_then(|t| t.reload_interval)
            && interval.get() < std::time::Duration::from_secs(1)
        {
            errors.push(ctx.invalid("tls.reload_interval", "must be at least 1s"));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(BuildContext::errors(errors))
        }
    }

    pub(crate) fn grpc_limit(&self) -> usize {
        self.max_request_size
            .unwrap_or(GRPC_DEFAULT_LIMIT)
            .as_usize()
    }

    pub(crate) fn http_limit(&self) -> usize {
        self.max_request_size
            .unwrap_or(HTTP_DEFAULT_LIMIT)
            .as_usize()
    }
}
