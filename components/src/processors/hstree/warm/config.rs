//! The `warm_start` table: where the model learns from before serving, and its checks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tracescale_core::config::{ByteSize, HumanDuration};

use crate::exporters::otlp::config::ExporterTlsConfig;
use crate::receivers::file::Format;

/// The most traces one warm start fetches from Tempo.
pub const MAX_TEMPO_LIMIT: u32 = 100_000;

/// `warm_start` of the `hstree` processor: a recording (`file`) or a Tempo (`tempo`) to learn
/// from at start, before the first span is judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmStartConfig {
    /// A recording, read as the `file` receiver reads it.
    pub file: Option<PathBuf>,
    /// How the recording's messages are framed: `"otlp_json"` or `"otlp_proto"`.
    pub format: Format,
    /// Base URL of Tempo's HTTP API, such as `http://tempo:3200`.
    pub tempo: Option<String>,
    /// The TraceQL query whose traces are learned.
    pub query: String,
    /// Start of the searched range: `"-1h"` (before now) or an RFC 3339 time.
    pub start: String,
    /// End of the searched range: `"now"`, `"-5m"` or an RFC 3339 time.
    pub end: String,
    /// Most traces fetched.
    pub limit: u32,
    /// `X-Scope-OrgID` of a multi-tenant Tempo.
    pub org_id: Option<String>,
    /// Extra headers on every request, such as `Authorization`.
    #[serde(skip_serializing)]
    pub headers: BTreeMap<String, String>,
    /// TLS for an `https://` Tempo, as the `otlp` exporter's `tls` table.
    pub tls: Option<ExporterTlsConfig>,
    /// Bound on each request to Tempo, from connecting to the last byte of the body.
    pub timeout: HumanDuration,
    /// The largest Tempo response, or recording line (message), taken.
    pub max_message_bytes: ByteSize,
    /// Fail the start when the warm start fails, instead of starting cold with a warning.
    pub required: bool,
}

impl Default for WarmStartConfig {
    fn default() -> Self {
        Self {
            file: None,
            format: Format::OtlpJson,
            tempo: None,
            query: "{}".to_string(),
            start: "-1h".to_string(),
            end: "now".to_string(),
            limit: 1000,
            org_id: None,
            headers: BTreeMap::new(),
            tls: None,
            timeout: HumanDuration::from_secs(10),
            max_message_bytes: ByteSize::mib(16),
            required: false,
        }
    }
}

/// Where a warm start learns from, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A recording.
    File(PathBuf),
    /// A Tempo, by its base URL.
    Tempo(String),
}

impl WarmStartConfig {
    /// The source: exactly one of `file` and `tempo`.
    pub fn source(&self) -> Result<Source, String> {
        match (&self.file, &self.tempo) {
            (Some(file), None) if !file.as_os_str().is_empty() => Ok(Source::File(file.clone())),
            (Some(_), None) => Err("file must name a file".to_string()),
            (None, Some(url)) => Ok(Source::Tempo(url.clone())),
            (Some(_), Some(_)) => Err("set one of `file` and `tempo`, not both".to_string()),
            (None, None) => Err("set `file` (a recording) or `tempo` (a Tempo URL)".to_string()),
        }
    }

    /// Every invalid key, as (`warm_start.<key>`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let source = self.source();
        if let Err(message) = &source {
            out.push(("warm_start.file", message.clone()));
        }
        if let Ok(Source::Tempo(url)) = &source {
            if let Err(message) = super::tempo::base_url(url) {
                out.push(("warm_start.tempo", message));
            }
            if !url.trim_start().starts_with("https://") && self.tls.is_some() {
                out.push((
                    "warm_start.tls",
                    "is set but `tempo` is not https://".to_string(),
                ));
            }
            if let Some(tls) = &self.tls
                && tls.cert_file.is_some() != tls.key_file.is_some()
            {
                out.push((
                    "warm_start.tls",
                    "a client certificate needs both `cert_file` and `key_file`".to_string(),
                ));
            }
            if self.query.trim().is_empty() {
                out.push((
                    "warm_start.query",
                    "must be a TraceQL query, such as \"{}\"".to_string(),
                ));
            }
            let now = SystemTime::now();
            match (parse_time(&self.start, now), parse_time(&self.end, now)) {
                (Err(m), _) => out.push(("warm_start.start", m)),
                (_, Err(m)) => out.push(("warm_start.end", m)),
                (Ok(start), Ok(end)) if start >= end => {
                    out.push(("warm_start.start", "must be before `end`".to_string()));
                }
                _ => {}
            }
            if !(1..=MAX_TEMPO_LIMIT).contains(&self.limit) {
                out.push((
                    "warm_start.limit",
                    format!("must be between 1 and {MAX_TEMPO_LIMIT}"),
                ));
            }
            if let Err(problems) = crate::exporters::otlp::config::check_headers(
                &self.headers,
                crate::exporters::otlp::Protocol::HttpProtobuf,
            ) {
                for (key, message) in problems {
                    out.push(("warm_start.headers", format!("{key:?} {message}")));
                }
            }
            if self
                .org_id
                .as_deref()
                .is_some_and(|id| http::HeaderValue::from_str(id).is_err() || id.is_empty())
            {
                out.push((
                    "warm_start.org_id",
                    "must be visible ASCII, not empty".to_string(),
                ));
            }
        }
        if self.timeout.get().is_zero() {
            out.push(("warm_start.timeout", "must be more than 0".to_string()));
        }
        if self.max_message_bytes.bytes() < 1024 || self.max_message_bytes > ByteSize::mib(1024) {
            out.push((
                "warm_start.max_message_bytes",
                "must be between 1KiB and 1GiB".to_string(),
            ));
        }
        out
    }
}

/// A time of `start` or `end`: `"now"`, a duration before now (`"-1h"`), or RFC 3339.
pub fn parse_time(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(now);
    }
    if let Some(ago) = text.strip_prefix('-') {
        let ago: HumanDuration = ago.parse()?;
        return now
            .checked_sub(ago.get())
            .ok_or_else(|| format!("{text:?} is before the Unix epoch"));
    }
    let at: jiff::Timestamp = text.parse().map_err(|e| {
        format!(
            "{text:?} is not \"now\", a duration before now (\"-1h\") or an RFC 3339 time \
             (\"2024-05-01T12:00:00Z\"): {e}"
        )
    })?;
    let nanos = u64::try_from(at.as_nanosecond())
        .map_err(|_| format!("{text:?} is before the Unix epoch"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
}
