//! Config of the `otlp` exporter: serde, defaults, validation, and the checked settings the
//! exporter runs with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use serde::Deserialize;
use tracescale_core::component::BuildContext;
use tracescale_core::config::{BuildError, HumanDuration};

use crate::backoff::{BackoffPolicy, Spread};

/// The largest `send_batch_size`: beyond it one request would exceed what any OTLP receiver
/// accepts (the Collector's gRPC limit is 4 MiB, a few thousand spans).
pub(super) const MAX_SEND_BATCH_SIZE: usize = 1_000_000;

/// Config of the `otlp` exporter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    /// Where to send: `http://host:port`. For gRPC the port is usually 4317; for HTTP, 4318,
    /// and requests go to `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `"grpc"` or `"http/protobuf"`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Request compression: `"gzip"`, `"zstd"` or `"none"`.
    #[serde(default)]
    pub compression: Compression,
    /// Extra HTTP headers or gRPC metadata on every request, such as a tenant id.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Spans per request: smaller batches wait for more, larger ones are split.
    #[serde(default = "default_send_batch_size")]
    pub send_batch_size: usize,
    /// How long the first span of a partial batch waits for more before it is sent anyway.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How long one request may take, connecting included, before it counts as failed.
    #[serde(default = "default_timeout_per_request")]
    pub timeout_per_request: HumanDuration,
    /// Retries of failed requests.
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    /// TLS for an `https://` endpoint: the CA to trust instead of the system's, a client
    /// certificate, a server name.
    #[serde(default)]
    pub tls: Option<ExporterTlsConfig>,
}

/// `tls` of the `otlp` exporter (and of other clients of HTTPS servers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterTlsConfig {
    /// PEM CA bundle to verify the server with, instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for servers that require one (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name to verify the server's certificate against, instead of the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

fn default_send_batch_size() -> usize {
    8192
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_millis(200)
}

fn default_timeout_per_request() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// The gRPC `TraceService`.
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// `POST {endpoint}/v1/traces` with a protobuf body, over HTTP/1.1.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// How request bodies are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip, which every OTLP receiver accepts.
    #[default]
    Gzip,
    /// zstd: less CPU for a similar ratio; check that the receiver accepts it.
    Zstd,
    /// Uncompressed.
    None,
}

/// Retries of failed requests, with exponential back-off and jitter, as the Collector's
/// `retry_on_failure` does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retry requests that failed in a retryable way; when false they are dropped at once.
    pub enabled: bool,
    /// The wait before the first retry.
    pub initial_interval: HumanDuration,
    /// The longest wait between two attempts.
    pub max_interval: HumanDuration,
    /// Give up on a batch this long after its first attempt; `"0s"` retries until shutdown.
    pub max_elapsed_time: HumanDuration,
    /// Each wait is the previous one times this.
    pub multiplier: f64,
    /// Each wait is randomised by ± this fraction, so that exporters do not retry in step.
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_interval: HumanDuration::from_secs(1),
            max_interval: HumanDuration::from_secs(30),
            max_elapsed_time: HumanDuration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// The retry settings, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RetryPolicy {
    pub(super) enabled: bool,
    pub(super) initial_interval: Duration,
    pub(super) max_interval: Duration,
    /// `None`: retry until shutdown.
    pub(super) max_elapsed_time: Option<Duration>,
    pub(super) multiplier: f64,
    pub(super) randomization_factor: f64,
}

impl RetryPolicy {
    /// The waits between attempts: each the previous one times the multiplier, randomised by ±
    /// the randomisation factor, never above `max_interval`.
    pub(super) fn backoff(&self) -> BackoffPolicy {
        BackoffPolicy {
            initial: self.initial_interval,
            max: self.max_interval,
            multiplier: self.multiplier,
            spread: Spread::symmetric(self.randomization_factor),
        }
    }
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        let max_elapsed = c.max_elapsed_time.get();
        Self {
            enabled: c.enabled,
            initial_interval: c.initial_interval.get(),
            max_interval: c.max_interval.get(),
            max_elapsed_time: (!max_elapsed.is_zero()).then_some(max_elapsed),
            multiplier: c.multiplier,
            randomization_factor: c.randomization_factor,
        }
    }
}

/// Where requests go, checked.
#[derive(Debug, Clone)]
pub(super) enum Target {
    /// A gRPC endpoint; the channel is created lazily at start. Boxed: it is large.
    Grpc(Box<tonic::transport::Endpoint>),
    /// The full `…/v1/traces` URL.
    Http(Uri),
}

/// The checked config the exporter runs with.
#[derive(Debug, Clone)]
pub(super) struct ExporterSettings {
    /// The endpoint as written, for messages.
    pub(super) endpoint: String,
    pub(super) target: Target,
    pub(super) compression: Compression,
    /// Validated header names and values, marked sensitive so they never reach a log.
    pub(super) headers: HeaderMap,
    pub(super) send_batch_size: usize,
    pub(super) timeout: Duration,
    pub(super) timeout_per_request: Duration,
    pub(super) retry: RetryPolicy,
    /// TLS, for an `https://` endpoint (the system's roots when no `tls` table is given).
    pub(super) tls: Option<ExporterTlsConfig>,
}

impl ExporterSettings {
    /// Spans the exporter holds at most, waiting or in flight: two batches, so that one can
    /// fill while the other is sent.
    pub(super) fn capacity(&self) -> usize {
        self.send_batch_size * 2
    }
}

/// Headers the transport sets itself; overriding them would break the protocol.
const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "te",
    "transfer-encoding",
];

/// A problem with the value at `key` (a path inside the component's table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub(super) key: String,
    pub(super) message: String,
}

impl Problem {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl OtlpExporterConfig {
    /// Checks the config and returns the settings to run with; errors and warnings point at
    /// their keys.
    pub(super) fn validate(self, ctx: &BuildContext<'_>) -> Result<ExporterSettings, BuildError> {
        let mut warnings = Vec::new();
        let checked = self.check(&mut warnings);
        for w in warnings {
            ctx.warn(&w.key, w.message);
        }
        checked.map_err(|problems| {
            BuildContext::errors(problems.into_iter().map(|p| ctx.invalid(&p.key, p.message)))
        })
    }

    /// Checks the config, collecting every problem.
    pub(super) fn check(
        self,
        warnings: &mut Vec<Problem>,
    ) -> Result<ExporterSettings, Vec<Problem>> {
        let mut errors = Vec::new();
        let https = self.endpoint.trim_start().starts_with("https://");
        if let Some(tls) = &self.tls {
            if !https {
                errors.push(Problem::new(
                    "tls",
                    "`tls` is set but the endpoint is not https://: write it like \"https://tempo:4317\"",
                ));
            }
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                errors.push(Problem::new(
                    "tls",
                    "a client certificate needs both `cert_file` and `key_file`",
                ));
            }
            if tls
                .server_name
                .as_deref()
                .is_some_and(|n| n.trim().is_empty())
            {
                errors.push(Problem::new("tls.server_name", "must not be empty"));
            }
        }
        let target = match check_endpoint(&self.endpoint, self.protocol) {
            Ok(target) => {
                if let Some(warning) = port_warning(&self.endpoint, self.protocol) {
                    warnings.push(Problem::new("endpoint", warning));
                }
                Some(target)
            }
            Err(message) => {
                errors.push(Problem::new("endpoint", message));
                None
            }
        };
        let headers = match check_headers(&self.headers, self.protocol) {
            Ok(headers) => headers,
            Err(problems) => {
                for (key, message) in problems {
                    errors.push(Problem::new(format!("headers.{key}"), message));
                }
                HeaderMap::new()
            }
        };
        if !(1..=MAX_SEND_BATCH_SIZE).contains(&self.send_batch_size) {
            errors.push(Problem::new(
                "send_batch_size",
                format!("must be between 1 and {MAX_SEND_BATCH_SIZE} spans"),
            ));
        }
        if self.timeout.get().is_zero() {
            errors.push(Problem::new(
                "timeout",
                "must be more than 0: it is how long a partial batch waits",
            ));
        }
        if self.timeout_per_request.get().is_zero() {
            errors.push(Problem::new("timeout_per_request", "must be more than 0"));
        }
        let retry = &self.retry_on_failure;
        if retry.initial_interval.get().is_zero() {
            errors.push(Problem::new(
                "retry_on_failure.initial_interval",
                "must be more than 0",
            ));
        }
        if retry.max_interval < retry.initial_interval {
            errors.push(Problem::new(
                "retry_on_failure.max_interval",
                format!(
                    "must be at least initial_interval ({})",
                    retry.initial_interval
                ),
            ));
        }
        if !(1.0..=100.0).contains(&retry.multiplier) {
            errors.push(Problem::new(
                "retry_on_failure.multiplier",
                "must be between 1 and 100",
            ));
        }
        if !(0.0..=1.0).contains(&retry.randomization_factor) {
            errors.push(Problem::new(
                "retry_on_failure.randomization_factor",
                "must be between 0 and 1",
            ));
        }
        match target {
            Some(target) if errors.is_empty() => Ok(ExporterSettings {
                endpoint: self.endpoint,
                target,
                compression: self.compression,
                headers,
                send_batch_size: self.send_batch_size,
                timeout: self.timeout.get(),
                timeout_per_request: self.timeout_per_request.get(),
                retry: RetryPolicy::from(&self.retry_on_failure),
                tls: if https {
                    Some(self.tls.unwrap_or_default())
                } else {
                    None
                },
            }),
            _ => Err(errors),
        }
    }
}

/// Parses the endpoint and derives where requests go. Errors are whole sentences for the
/// operator.
fn check_endpoint(endpoint: &str, protocol: Protocol) -> Result<Target, String> {
    let uri: Uri = endpoint.parse().map_err(|e| {
        format!("{endpoint:?} is not a URL ({e}): write it like \"http://tempo:4317\"")
    })?;
    match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => {}
        Some(s) if *s == Scheme::HTTPS => {}
        Some(s) => {
            return Err(format!(
                "{endpoint:?}: unsupported scheme `{s}`; use http:// or https://"
            ));
        }
        None => {
            return Err(format!(
                "{endpoint:?} has no scheme: write it like \"http://{endpoint}\""
            ));
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{endpoint:?} names no host"));
    };
    if authority.host().is_empty() {
        return Err(format!("{endpoint:?} names no host"));
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "{endpoint:?} carries credentials: put them in `headers` instead"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{endpoint:?} has a query string; remove it"));
    }
    match protocol {
        Protocol::Grpc => {
            if !matches!(uri.path(), "" | "/") {
                return Err(format!(
                    "{endpoint:?} has a path, which gRPC does not use: write \"http://{authority}\""
                ));
            }
            let endpoint = tonic::transport::Endpoint::from_shared(endpoint.to_string())
                .map_err(|e| format!("{endpoint:?} is not a gRPC endpoint: {e}"))?;
            let endpoint = endpoint
                .user_agent(concat!("tracescale/", env!("CARGO_PKG_VERSION")))
                .map_err(|e| format!("cannot set the user agent: {e}"))?;
            Ok(Target::Grpc(Box::new(endpoint)))
        }
        Protocol::HttpProtobuf => {
            // The Collector's rule: the signal path is appended to whatever path the endpoint has.
            let path = format!("{}/v1/traces", uri.path().trim_end_matches('/'));
            let mut parts = uri.into_parts();
            parts.path_and_query = Some(
                PathAndQuery::try_from(path)
                    .map_err(|e| format!("{endpoint:?}: invalid path ({e})"))?,
            );
            let uri = Uri::from_parts(parts)
                .map_err(|e| format!("{endpoint:?}: cannot append /v1/traces ({e})"))?;
            Ok(Target::Http(uri))
        }
    }
}

/// A warning for an endpoint whose port does not match its protocol: the most common mistake
/// when pointing an exporter at a Collector.
fn port_warning(endpoint: &str, protocol: Protocol) -> Option<String> {
    let uri: Uri = endpoint.parse().ok()?;
    match (protocol, uri.port_u16()) {
        (_, None) => Some(format!(
            "{endpoint:?} has no port, so port 80 is used; OTLP listens on 4317 (gRPC) and 4318 \
             (HTTP)"
        )),
        (Protocol::Grpc, Some(4318)) => Some(
            "port 4318 is OTLP/HTTP's; with protocol \"grpc\" the usual port is 4317".to_string(),
        ),
        (Protocol::HttpProtobuf, Some(4317)) => Some(
            "port 4317 is OTLP/gRPC's; with protocol \"http/protobuf\" the usual port is 4318"
                .to_string(),
        ),
        _ => None,
    }
}

/// Validates header names and values; on failure, every offending key and why.
pub(crate) fn check_headers(
    headers: &BTreeMap<String, String>,
    protocol: Protocol,
) -> Result<HeaderMap, Vec<(String, &'static str)>> {
    let mut map = HeaderMap::with_capacity(headers.len());
    let mut problems = Vec::new();
    for (key, value) in headers {
        match check_header(key, value, protocol) {
            Ok((name, value)) => {
                map.insert(name, value);
            }
            Err(message) => problems.push((key.clone(), message)),
        }
    }
    if problems.is_empty() {
        Ok(map)
    } else {
        Err(problems)
    }
}

fn check_header(
    key: &str,
    value: &str,
    protocol: Protocol,
) -> Result<(HeaderName, HeaderValue), &'static str> {
    let name = HeaderName::from_bytes(key.as_bytes())
        .map_err(|_| "is not a valid header name: use letters, digits and `-`")?;
    let lower = name.as_str();
    if RESERVED_HEADERS.contains(&lower) || lower.starts_with("grpc-") {
        return Err("is set by the exporter itself and cannot be overridden");
    }
    if protocol == Protocol::Grpc && lower.ends_with("-bin") {
        return Err("binary gRPC metadata (`-bin` keys) is not supported");
    }
    // Stricter than HTTP, which tolerates obsolete non-ASCII bytes: gRPC metadata does not.
    let visible_ascii = value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    let mut value = HeaderValue::from_str(value)
        .ok()
        .filter(|_| visible_ascii)
        .ok_or("the value must be visible ASCII: no control characters or non-ASCII text")?;
    // Headers often carry tokens: keep them out of Debug output.
    value.set_sensitive(true);
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::from(&RetryConfig::default())
    }

    #[test]
    fn zero_max_elapsed_time_means_unbounded() {
        let c = RetryConfig {
            max_elapsed_time: tracescale_core::config::HumanDuration::from_secs(0),
            ..RetryConfig::default()
        };
        assert_eq!(RetryPolicy::from(&c).max_elapsed_time, None);
        assert_eq!(policy().max_elapsed_time, Some(Duration::from_secs(300)));
    }
}
