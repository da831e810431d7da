//! The `file` receiver: replays a recording of traces, one OTLP/JSON object per line as the
//! `file` exporter and the OpenTelemetry Collector's file exporter write them, plain, gzip or
//! zstd; or length-delimited OTLP protobuf. It ends the run when the file is done, unless it
//! follows the file.

mod config;
pub(crate) mod read;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracescale_core::component::{
    Abort, BuildContext, ComponentError, ComponentTelemetry, Output, Receiver, ReceiverContext,
};
use tracescale_core::config::{BuildError, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};
use tracing::warn;

pub use config::{Compression, FileReceiverConfig, Format, OnError};
use read::{Item, Source};

/// Why a replay ended the run.
#[derive(Debug, thiserror::Error)]
pub enum FileReceiverError {
    /// A line (or message) is not an OTLP trace request, and `on_error = "stop"`.
    #[error("{unit} {line} of {}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// `line`, or `message` for protobuf.
        unit: &'static str,
        /// Its number, from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The file cannot be read past a line, and `on_error = "stop"`.
    #[error("cannot read {unit} {line} of {}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// `line`, or `message` for protobuf.
        unit: &'static str,
        /// The number of the line that could not be read, from 1.
        line: u64,
        /// The operating system's or the decompressor's error.
        #[source]
        source: std::io::Error,
    },
}

/// Replays one file into the pipelines, waiting when they are full.
pub struct FileReceiver {
    config: FileReceiverConfig,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl FileReceiver {
    /// A receiver for `config`; the file is opened at start.
    pub fn new(config: FileReceiverConfig) -> Self {
        Self {
            config,
            stop: CancellationToken::new(),
            task: None,
        }
    }
}

/// Batches read ahead of the pipeline: enough to keep it busy, few enough to bound memory.
const READ_AHEAD: usize = 4;

#[async_trait]
impl Receiver for FileReceiver {
    async fn start(&mut self, ctx: ReceiverContext) -> Result<(), ComponentError> {
        let path = &self.config.path;
        let file = std::fs::File::open(path)
            .map_err(|e| ComponentError::io(format!("open {}", path.display()), e))?;
        let source = Source {
            file,
            compression: Compression::of(path),
            format: self.config.format,
            max_bytes: self.config.max_line_bytes.as_usize(),
            follow: self.config.follow.then(|| self.config.poll_interval.get()),
        };
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        // A thread of its own rather than the blocking pool: the runtime's paused clock in
        // tests keeps advancing while it waits, and a followed file keeps it for the whole run.
        std::thread::Builder::new()
            .name(format!("{} reader", ctx.id))
            .spawn(move || read::run(source, tx))
            .map_err(|e| ComponentError::io("start the file reader thread", e))?;
        let replay = Replay {
            path: path.clone(),
            unit: match self.config.format {
                Format::OtlpJson => "line",
                Format::OtlpProto => "message",
            },
            speed: self.config.speed,
            on_error: self.config.on_error,
            output: ctx.output,
            telemetry: ctx.telemetry,
            abort: ctx.abort,
            stop: self.stop.clone(),
            warnings: Warnings::default(),
        };
        self.task = Some(tokio::spawn(replay.run(rx)));
        Ok(())
    }

    async fn shutdown(&mut self, deadline: Instant) -> Result<(), ComponentError> {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout_at(deadline, task).await.is_err()
        {
            return Err(ComponentError::Deadline("file receiver"));
        }
        Ok(())
    }
}

/// The replaying task: paces the batches and sends them.
struct Replay {
    path: PathBuf,
    unit: &'static str,
    speed: f64,
    on_error: OnError,
    output: Output,
    telemetry: ComponentTelemetry,
    abort: Abort,
    stop: CancellationToken,
    warnings: Warnings,
}

impl Replay {
    async fn run(mut self, mut rx: mpsc::Receiver<Item>) {
        // (when the first batch was sent, its span time): the origin of the pacing.
        let mut origin: Option<(Instant, u64)> = None;
        loop {
            let item = tokio::select! {
                _ = self.stop.cancelled() => break,
                item = rx.recv() => match item {
                    Some(item) => item,
                    None => break,
                },
            };
            match item {
                Item::Batch {
                    traces,
                    received,
                    invalid,
                    start_unix_nano,
                } => {
                    self.telemetry.received(SignalKind::Traces, received);
                    self.telemetry
                        .dropped(SignalKind::Traces, "invalid_span", invalid);
                    let items = traces.span_count();
                    if items == 0 {
                        continue;
                    }
                    if let (true, Some(at)) = (self.speed > 0.0, start_unix_nano) {
                        let (sent, first) = *origin.get_or_insert((Instant::now(), at));
                        let wait = Duration::from_secs_f64(
                            at.saturating_sub(first) as f64 / 1e9 / self.speed,
                        );
                        tokio::select! {
                            _ = self.stop.cancelled() => {
                                self.telemetry.dropped(SignalKind::Traces, "shutdown", items);
                                break;
                            }
                            _ = tokio::time::sleep_until(sent + wait) => {}
                        }
                    }
                    tokio::select! {
                        _ = self.stop.cancelled() => {
                            self.telemetry.dropped(SignalKind::Traces, "shutdown", items);
                            break;
                        }
                        sent = self.output.send(Signal::Traces(traces)) => if sent.is_err() {
                            self.telemetry.dropped(SignalKind::Traces, "pipeline_closed", items);
                            break;
                        }
                    }
                }
                Item::Malformed { line, reason } => {
                    self.telemetry.dropped(SignalKind::Traces, "malformed", 1);
                    if self.on_error == OnError::Stop {
                        self.abort
                            .fail(ComponentError::other(FileReceiverError::Malformed {
                                path: self.path.clone(),
                                unit: self.unit,
                                line,
                                reason,
                            }));
                        break;
                    }
                    if let Some(suppressed) = self.warnings.allow() {
                        warn!(
                            receiver = self.telemetry.id(),
                            path = %self.path.display(),
                            line,
                            suppressed,
                            error = %reason,
                            "skipping a malformed {}", self.unit
                        );
                    }
                }
                Item::Unreadable { line, error } => {
                    self.telemetry.dropped(SignalKind::Traces, "unreadable", 1);
                    let error = FileReceiverError::Unreadable {
                        path: self.path.clone(),
                        unit: self.unit,
                        line,
                        source: error,
                    };
                    if self.on_error == OnError::Stop {
                        self.abort.fail(ComponentError::other(error));
                    } else {
                        warn!(
                            receiver = self.telemetry.id(),
                            error = %tracescale_core::error::error_chain(&error),
                            "the rest of the file is lost"
                        );
                    }
                    break;
                }
            }
        }
        // Dropping the output lets the pipelines drain and, once every receiver is done, the
        // engine stop by itself; dropping `rx` stops the reader thread.
    }
}

/// At most one warning per period, saying how many it held back.
#[derive(Default)]
struct Warnings {
    last: Option<Instant>,
    suppressed: u64,
}

impl Warnings {
    const PERIOD: Duration = Duration::from_secs(10);

    /// `Some(suppressed since the last one)` when a warning may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + Self::PERIOD) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Receiver>, BuildError> {
    Ok(Box::new(FileReceiver::new(
        FileReceiverConfig::from_context(ctx)?,
    )))
}

inventory::submit! {
    ComponentFactory {
        type_name: "file",
        description: "replays traces from an OTLP/JSON lines file (plain, gzip or zstd) or length-delimited OTLP protobuf",
        takes: &[],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<FileReceiverConfig>,
        build: Build::Receiver(build),
    }
}

#[cfg(test)]
mod tests;
