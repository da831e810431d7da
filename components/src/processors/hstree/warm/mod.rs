//! Warm start: the model learns from a recording or from Tempo at start, before the first span
//! is judged, so that a new deployment does not spend `train_size` spans blind.
//!
//! Spans are learned through [`Detector::observe`], exactly as live spans are, so the feedback
//! rules hold: a fault inside the recording is taken in at `learn_flagged` of its rate.

mod config;
mod tempo;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::sync::mpsc;
use tracescale_core::attributes::service_name;

pub use config::{MAX_TEMPO_LIMIT, Source, WarmStartConfig, parse_time};
pub use tempo::{TempoError, TempoProblem};

use super::detector::Detector;
use crate::receivers::file::read::{self, Item};
use crate::receivers::file::{Compression, FileReceiverError, Format};
use crate::receivers::otlp::validate;

/// Why a warm start failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmStartError {
    /// The recording cannot be opened.
    #[error("warm start: cannot open {}", path.display())]
    Open {
        /// The recording.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The reader thread cannot be started.
    #[error("warm start: cannot start the reader thread")]
    Thread(#[source] std::io::Error),
    /// The recording cannot be read to its end.
    #[error("warm start")]
    File(#[source] FileReceiverError),
    /// A request to Tempo failed.
    #[error("warm start from Tempo")]
    Tempo(#[source] TempoError),
    /// The source held no span to learn.
    #[error("warm start from {from}: no valid span to learn")]
    Empty {
        /// The file or URL.
        from: String,
    },
}

/// What a warm start learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// Spans learned (observed by the detector).
    pub spans: u64,
    /// Traces fetched, from Tempo; `None` for a recording.
    pub traces: Option<u64>,
    /// Spans passed over: invalid ids, an end before the start, or in a malformed line.
    pub skipped: u64,
    /// Malformed lines (or messages) of a recording, passed over.
    pub malformed_lines: u64,
}

/// Learns from `config`'s source into `detector`. On an error the detector may have learned
/// part of the source; the caller discards it.
pub async fn run(
    config: &WarmStartConfig,
    detector: &mut Detector,
) -> Result<Learned, WarmStartError> {
    let learned = match config.source() {
        Ok(Source::File(path)) => from_file(&path, config.format, config, detector).await?,
        Ok(Source::Tempo(url)) => from_tempo(config, &url, detector).await?,
        // `problems` refuses such a config before it is built.
        Err(message) => {
            return Err(WarmStartError::Empty { from: message });
        }
    };
    if learned.spans == 0 {
        return Err(WarmStartError::Empty {
            from: match config.source() {
                Ok(Source::File(path)) => path.display().to_string(),
                Ok(Source::Tempo(url)) => url,
                Err(message) => message,
            },
        });
    }
    Ok(learned)
}

/// Reads a recording with the `file` receiver's reader, on a thread of its own, learning each
/// batch as it comes: a recording of any size takes bounded memory.
async fn from_file(
    path: &std::path::Path,
    format: Format,
    config: &WarmStartConfig,
    detector: &mut Detector,
) -> Result<Learned, WarmStartError> {
    let file = std::fs::File::open(path).map_err(|source| WarmStartError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let source = read::Source {
        file,
        compression: Compression::of(path),
        format,
        max_bytes: config.max_message_bytes.as_usize(),
        follow: None,
    };
    let (tx, mut rx) = mpsc::channel(4);
    std::thread::Builder::new()
        .name("hstree warm start".to_string())
        .spawn(move || read::run(source, tx))
        .map_err(WarmStartError::Thread)?;
    let unit = match format {
        Format::OtlpJson => "line",
        Format::OtlpProto => "message",
    };
    let mut learned = Learned::default();
    while let Some(item) = rx.recv().await {
        match item {
            Item::Batch {
                traces, invalid, ..
            } => {
                learned.skipped += invalid as u64;
                learned.spans += learn(detector, &traces.resource_spans);
            }
            Item::Malformed { .. } => learned.malformed_lines += 1,
            Item::Unreadable { line, error } => {
                return Err(WarmStartError::File(FileReceiverError::Unreadable {
                    path: path.to_path_buf(),
                    unit,
                    line,
                    source: error,
                }));
            }
        }
    }
    Ok(learned)
}

/// Fetches the traces a TraceQL query finds and learns their spans in end-time order, as a
/// collector would have received them.
async fn from_tempo(
    config: &WarmStartConfig,
    url: &str,
    detector: &mut Detector,
) -> Result<Learned, WarmStartError> {
    let (mut resource_spans, traces) = tempo::fetch(config, url)
        .await
        .map_err(WarmStartError::Tempo)?;
    let rejected = validate::retain_valid(&mut resource_spans);
    let mut spans: Vec<(u64, u64, &str, &str)> = resource_spans
        .iter()
        .flat_map(|rs| {
            let service = service_name(rs.resource.as_ref());
            rs.scope_spans.iter().flat_map(move |ss| {
                ss.spans.iter().map(move |s| {
                    let duration = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano);
                    (s.end_time_unix_nano, duration, service, s.name.as_str())
                })
            })
        })
        .collect();
    spans.sort_by_key(|&(end, ..)| end);
    for &(end, duration, service, operation) in &spans {
        detector.observe(service, operation, duration, end);
    }
    Ok(Learned {
        spans: spans.len() as u64,
        traces: Some(traces as u64),
        skipped: rejected.spans as u64,
        malformed_lines: 0,
    })
}

/// Learns every span of a batch already checked by the reader; returns how many.
fn learn(detector: &mut Detector, resource_spans: &[ResourceSpans]) -> u64 {
    let mut n = 0;
    for rs in resource_spans {
        let service = service_name(rs.resource.as_ref());
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let duration = span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano);
            detector.observe(service, &span.name, duration, span.end_time_unix_nano);
            n += 1;
        }
    }
    n
}
