//! A small client of Grafana Tempo's HTTP API: a TraceQL search, then each trace found, as
//! protobuf. Every request is bounded in time (connecting to the last byte) and in size.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use prost::Message;
use serde::Deserialize;
use tokio::task::JoinSet;
use tracescale_core::error::error_chain;

use super::config::{WarmStartConfig, parse_time};
use crate::exporters::otlp::Protocol;
use crate::exporters::otlp::config::check_headers;
use crate::exporters::otlp::tls::https_client;

/// Traces fetched at once: enough to hide Tempo's latency, few enough not to load it.
const CONCURRENT_FETCHES: usize = 4;

/// The longest part of an error body carried into a message.
const MAX_MESSAGE_CHARS: usize = 200;

/// A failed request to Tempo, naming its URL.
#[derive(Debug, thiserror::Error)]
#[error("GET {url}: {problem}")]
pub struct TempoError {
    /// The URL requested (or the base URL, when no request was made).
    pub url: String,
    /// What went wrong.
    pub problem: TempoProblem,
}

/// What went wrong with a request to Tempo.
#[derive(Debug, thiserror::Error)]
pub enum TempoProblem {
    /// The client cannot be built (TLS files, headers, URL).
    #[error("{0}")]
    Setup(String),
    /// Connecting or sending failed.
    #[error("cannot reach Tempo: {0}")]
    Unreachable(String),
    /// No complete answer within `timeout`.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// Tempo answered with an error status.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the body.
        message: String,
    },
    /// The body is longer than `max_message_bytes`.
    #[error("the answer is longer than max_message_bytes ({0} bytes)")]
    TooLarge(usize),
    /// The body broke off.
    #[error("the answer broke off: {0}")]
    Body(String),
    /// The body is not what the endpoint returns.
    #[error("not {expected}: {message}")]
    Decode {
        /// What was expected.
        expected: &'static str,
        /// The decoder's complaint.
        message: String,
    },
}

/// The base URL of Tempo's API, checked: http(s), a host, no query, no credentials.
pub(super) fn base_url(text: &str) -> Result<String, String> {
    let uri: Uri = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a URL ({e}): write it like \"http://tempo:3200\""))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{text:?}: use an http:// or https:// URL")),
    }
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(format!("{text:?} names no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{text:?} carries credentials: put them in `headers` instead"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{text:?} has a query string; remove it"));
    }
    Ok(text.trim().trim_end_matches('/').to_string())
}

/// The client: one HTTP client, the base URL and what every request carries.
#[derive(Clone)]
pub(super) struct Tempo {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    headers: HeaderMap,
    timeout: Duration,
    max_bytes: usize,
}

impl Tempo {
    /// A client for `config`'s Tempo. Nothing connects yet.
    pub(super) fn new(config: &WarmStartConfig, url: &str) -> Result<Self, TempoError> {
        let setup = |message: String| TempoError {
            url: url.to_string(),
            problem: TempoProblem::Setup(message),
        };
        let base = base_url(url).map_err(setup)?;
        let https = base.starts_with("https://");
        let tls = https.then(|| config.tls.clone().unwrap_or_default());
        let client = https_client(tls.as_ref(), config.timeout.get()).map_err(setup)?;
        let mut headers = check_headers(&config.headers, Protocol::HttpProtobuf).map_err(|p| {
            let list: Vec<String> = p.iter().map(|(k, m)| format!("headers.{k} {m}")).collect();
            setup(list.join("; "))
        })?;
        if let Some(org) = &config.org_id {
            let value = HeaderValue::from_str(org).map_err(|e| setup(format!("org_id: {e}")))?;
            headers.insert(HeaderName::from_static("x-scope-orgid"), value);
        }
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("tracescale/", env!("CARGO_PKG_VERSION"))),
        );
        Ok(Self {
            client,
            base,
            headers,
            timeout: config.timeout.get(),
            max_bytes: config.max_message_bytes.as_usize(),
        })
    }

    /// One GET, bounded by the timeout from connecting to the body's last byte.
    async fn get(&self, url: &str, accept: &'static str) -> Result<Bytes, TempoProblem> {
        let uri: Uri = url
            .parse()
            .map_err(|e| TempoProblem::Setup(format!("invalid URL: {e}")))?;
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri;
        *request.headers_mut() = self.headers.clone();
        request
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static(accept));
        let attempt = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| TempoProblem::Unreachable(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_bytes)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        TempoProblem::TooLarge(self.max_bytes)
                    } else {
                        TempoProblem::Body(error_chain(&*e))
                    }
                });
            if !parts.status.is_success() {
                let message = match &body {
                    Ok(bytes) => excerpt(bytes),
                    Err(e) => format!("(unreadable body: {e})"),
                };
                return Err(TempoProblem::Status {
                    status: parts.status.as_u16(),
                    message,
                });
            }
            body
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or(Err(TempoProblem::Timeout(self.timeout)))
    }

    /// The ids of the traces `query` finds between `start` and `end`, at most `limit`.
    pub(super) async fn search(
        &self,
        query: &str,
        start: SystemTime,
        end: SystemTime,
        limit: u32,
    ) -> Result<Vec<String>, TempoError> {
        let secs = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        // `end` is rounded up so that a range shorter than a second still searches something.
        let end_secs = end
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let url = format!(
            "{}/api/search?q={}&start={}&end={end_secs}&limit={limit}",
            self.base,
            percent_encode(query),
            secs(start),
        );
        let fail = |problem| TempoError {
            url: url.clone(),
            problem,
        };
        let body = self.get(&url, "application/json").await.map_err(fail)?;
        let found: SearchResponse = serde_json::from_slice(&body).map_err(|e| {
            fail(TempoProblem::Decode {
                expected: "a Tempo search answer (JSON with `traces`)",
                message: e.to_string(),
            })
        })?;
        let mut ids = Vec::with_capacity(found.traces.len());
        for trace in found.traces {
            let id = trace.trace_id;
            if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(fail(TempoProblem::Decode {
                    expected: "a Tempo search answer",
                    message: format!("trace id {id:?} is not up to 32 hex digits"),
                }));
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(ids)
    }

    /// One trace, as protobuf.
    pub(super) async fn trace(&self, id: &str) -> Result<Vec<ResourceSpans>, TempoError> {
        let url = format!("{}/api/traces/{id}", self.base);
        let fail = |problem| TempoError {
            url: url.clone(),
            problem,
        };
        let body = self.get(&url, "application/protobuf").await.map_err(fail)?;
        // Tempo's `Trace` message holds its `batches` as field 1, as OTLP's `TracesData` holds
        // its `resource_spans`: the same bytes decode as either.
        TracesData::decode(body)
            .map(|data| data.resource_spans)
            .map_err(|e| {
                fail(TempoProblem::Decode {
                    expected: "a Tempo trace (protobuf)",
                    message: e.to_string(),
                })
            })
    }
}

#[derive(Deserialize)]
struct SearchResponse {
    #[serde(default)]
    traces: Vec<SearchTrace>,
}

#[derive(Deserialize)]
struct SearchTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
}

/// Searches and fetches every trace found, a few at a time; the first failure ends it.
/// Returns the traces' resource spans and how many traces there were.
pub(super) async fn fetch(
    config: &WarmStartConfig,
    url: &str,
) -> Result<(Vec<ResourceSpans>, usize), TempoError> {
    let tempo = Arc::new(Tempo::new(config, url)?);
    let now = SystemTime::now();
    let range = |text: &str| {
        parse_time(text, now).map_err(|message| TempoError {
            url: url.to_string(),
            problem: TempoProblem::Setup(message),
        })
    };
    let (start, end) = (range(&config.start)?, range(&config.end)?);
    let ids = tempo
        .search(&config.query, start, end, config.limit)
        .await?;
    let traces = ids.len();
    let mut out = Vec::new();
    let mut pending = ids.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < CONCURRENT_FETCHES {
            let Some(id) = pending.next() else { break };
            let tempo = Arc::clone(&tempo);
            running.spawn(async move { tempo.trace(&id).await });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(resource_spans)) => out.extend(resource_spans),
            Ok(Err(err)) => return Err(err),
            Err(join) => {
                return Err(TempoError {
                    url: url.to_string(),
                    problem: TempoProblem::Unreachable(join.to_string()),
                });
            }
        }
    }
    Ok((out, traces))
}

/// `text` as a URL query value: unreserved characters kept, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The start of an error body, as text.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".to_string();
    }
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}
