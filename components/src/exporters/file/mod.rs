//! The `file` exporter: one JSON object per line. Traces are written as OTLP/JSON
//! `ExportTraceServiceRequest` objects (lowerCamelCase keys, hex ids, 64-bit integers as strings),
//! the shape the OpenTelemetry Collector's file exporter writes; decisions as JSON objects with
//! `"signal": "decision"`. Optionally compressed (gzip or zstd) and rotated by size and age as
//! the Collector's file exporter rotates.

mod rotation;

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::{Deserialize, Serialize};
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracescale_core::component::{BuildContext, ComponentError, Exporter, ExporterContext};
use tracescale_core::config::{BuildError, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Decision, Signal, SignalKind, Traces};
use tracing::warn;

pub use rotation::RotationConfig;

/// Config of the `file` exporter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to write. Its directory must exist.
    pub path: PathBuf,
    /// Keep what the file holds and add to its end, instead of truncating it at start.
    #[serde(default)]
    pub append: bool,
    /// Compress the file as one gzip or zstd stream; the path must end in `.gz` or `.zst`.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// Rotate the file by size and age, keeping a bounded number of backups.
    #[serde(default)]
    pub rotation: Option<RotationConfig>,
}

/// How the file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip (RFC 1952), flushed after every batch.
    Gzip,
    /// zstd, flushed after every batch.
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Compression::Gzip => "gz",
            Compression::Zstd => "zst",
        }
    }
}

/// Why a write, a rotation or a compression failed.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("the file exporter was not started")]
    NotStarted,
    #[error("cannot encode a batch as JSON")]
    Json(#[from] serde_json::Error),
}

/// The compressor of the file being written. It compresses into memory; the bytes it hands
/// out go to the file, so the file's size on disk is known without asking the disk.
enum Encoder {
    Plain,
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    fn new(compression: Option<Compression>) -> std::io::Result<Self> {
        Ok(match compression {
            None => Encoder::Plain,
            Some(Compression::Gzip) => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            )),
            Some(Compression::Zstd) => {
                Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?)
            }
        })
    }

    /// What goes to the file for `bytes`. Compressed output is flushed, so a reader of the
    /// file gets every batch written so far, even before the stream is finished.
    fn encode(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        out.clear();
        match self {
            Encoder::Plain => out.extend_from_slice(bytes),
            Encoder::Gzip(e) => {
                e.write_all(bytes)?;
                e.flush()?;
                out.append(e.get_mut());
            }
            Encoder::Zstd(e) => {
                e.write_all(bytes)?;
                e.flush()?;
                out.append(e.get_mut());
            }
        }
        Ok(())
    }

    /// The end of the stream (gzip trailer, zstd frame end); nothing for a plain file.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Plain => Ok(Vec::new()),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// The file being written.
struct Current {
    file: File,
    encoder: Encoder,
    /// Bytes in the file.
    size: u64,
    opened: Instant,
}

/// Writes each batch as JSON lines and flushes after every batch, so that a reader never sees
/// half a line from a batch that was acknowledged.
pub struct FileExporter {
    config: FileConfig,
    current: Option<Current>,
    line: Vec<u8>,
    chunk: Vec<u8>,
}

/// A decision line: the decision's fields behind `"signal": "decision"`.
#[derive(Serialize)]
struct DecisionLine<'a> {
    signal: &'static str,
    #[serde(flatten)]
    decision: &'a Decision,
}

impl FileExporter {
    /// An exporter for `config`; the file is opened at start.
    pub fn new(config: FileConfig) -> Self {
        Self {
            config,
            current: None,
            line: Vec::with_capacity(64 * 1024),
            chunk: Vec::new(),
        }
    }

    fn encode(&mut self, signal: Signal) -> Result<(), serde_json::Error> {
        self.line.clear();
        match signal {
            Signal::Traces(Traces { resource_spans }) => {
                serde_json::to_writer(
                    &mut self.line,
                    &ExportTraceServiceRequest { resource_spans },
                )?;
                self.line.push(b'\n');
            }
            Signal::Decisions(decisions) => {
                for decision in &decisions {
                    serde_json::to_writer(
                        &mut self.line,
                        &DecisionLine {
                            signal: "decision",
                            decision,
                        },
                    )?;
                    self.line.push(b'\n');
                }
            }
        }
        Ok(())
    }

    fn io(&self, action: &str, e: std::io::Error) -> ComponentError {
        ComponentError::io(format!("{action} {}", self.config.path.display()), e)
    }

    async fn open(&self, append: bool) -> Result<Current, ComponentError> {
        let mut options = OpenOptions::new();
        options.create(true);
        if append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        let file = options
            .open(&self.config.path)
            .await
            .map_err(|e| self.io("open for writing", e))?;
        let size = if append {
            file.metadata()
                .await
                .map_err(|e| self.io("read the size of", e))?
                .len()
        } else {
            0
        };
        Ok(Current {
            file,
            encoder: Encoder::new(self.config.compression)
                .map_err(|e| self.io("start compressing", e))?,
            size,
            opened: Instant::now(),
        })
    }

    /// Ends the stream of `current` and syncs it to disk.
    async fn close(&self, current: Current) -> Result<(), ComponentError> {
        let Current {
            mut file, encoder, ..
        } = current;
        let end = encoder
            .finish()
            .map_err(|e| self.io("finish compressing", e))?;
        file.write_all(&end)
            .await
            .map_err(|e| self.io("write", e))?;
        file.sync_all().await.map_err(|e| self.io("sync", e))
    }

    /// Whether the current file is rotated before `next` bytes (uncompressed) are written.
    fn due(&self, current: &Current, rotation: &RotationConfig, next: usize) -> bool {
        if current.size == 0 {
            return false;
        }
        let max = rotation.max_bytes();
        // A compressed batch's size is known only once compressed into the current stream, so
        // a compressed file is rotated once it has reached the limit; a plain one before the
        // batch that would take it past.
        let full = match self.config.compression {
            None => current.size + next as u64 > max,
            Some(_) => current.size >= max,
        };
        let old = rotation
            .every
            .is_some_and(|every| current.opened.elapsed() >= every.get());
        full || old
    }

    /// Closes the current file, renames it with a timestamp, starts a new one, and deletes the
    /// backups the config no longer keeps.
    async fn rotate(&mut self, rotation: &RotationConfig) -> Result<(), ComponentError> {
        if let Some(current) = self.current.take() {
            self.close(current).await?;
        }
        let path = &self.config.path;
        let now = jiff::Timestamp::now();
        let mut backup = rotation::backup_name(path, now, rotation);
        // Two rotations in one millisecond: the next free millisecond, never an overwrite.
        let mut later = now;
        while tokio::fs::try_exists(&backup).await.unwrap_or(false) {
            later += jiff::SignedDuration::from_millis(1);
            backup = rotation::backup_name(path, later, rotation);
        }
        tokio::fs::rename(path, &backup)
            .await
            .map_err(|e| self.io(&format!("rename to {}", backup.display()), e))?;
        self.current = Some(self.open(false).await?);
        self.prune(rotation).await;
        Ok(())
    }

    /// Deletes expired backups. A failure is logged: it must not fail the batch.
    async fn prune(&self, rotation: &RotationConfig) {
        let path = self.config.path.clone();
        let rotation = rotation.clone();
        let expired = tokio::task::spawn_blocking(move || {
            rotation::expired(&path, jiff::Timestamp::now(), &rotation)
        })
        .await;
        let expired = match expired {
            Ok(Ok(expired)) => expired,
            Ok(Err(e)) => {
                warn!(path = %self.config.path.display(), error = %e, "cannot list old files to delete");
                return;
            }
            Err(_) => return,
        };
        for old in expired {
            if let Err(e) = tokio::fs::remove_file(&old).await {
                warn!(path = %old.display(), error = %e, "cannot delete an old file");
            }
        }
    }
}

#[async_trait]
impl Exporter for FileExporter {
    async fn start(&mut self, _ctx: &ExporterContext) -> Result<(), ComponentError> {
        self.current = Some(self.open(self.config.append).await?);
        if let Some(rotation) = self.config.rotation.clone() {
            self.prune(&rotation).await;
        }
        Ok(())
    }

    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError> {
        self.encode(signal)
            .map_err(|e| ComponentError::other(FileError::from(e)))?;
        let Some(current) = self.current.as_ref() else {
            return Err(ComponentError::other(FileError::NotStarted));
        };
        if let Some(rotation) = self.config.rotation.clone()
            && self.due(current, &rotation, self.line.len())
        {
            self.rotate(&rotation).await?;
        }
        let Some(current) = self.current.as_mut() else {
            return Err(ComponentError::other(FileError::NotStarted));
        };
        let path = &self.config.path;
        let io = |action: &str, e| ComponentError::io(format!("{action} {}", path.display()), e);
        current
            .encoder
            .encode(&self.line, &mut self.chunk)
            .map_err(|e| io("compress for", e))?;
        current
            .file
            .write_all(&self.chunk)
            .await
            .map_err(|e| io("write", e))?;
        current.file.flush().await.map_err(|e| io("flush", e))?;
        current.size += self.chunk.len() as u64;
        Ok(())
    }

    async fn shutdown(&mut self, _deadline: Instant) -> Result<(), ComponentError> {
        if let Some(current) = self.current.take() {
            self.close(current).await?;
        }
        Ok(())
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    let config: FileConfig = ctx.parse()?;
    let mut errors = Vec::new();
    if config.path.as_os_str().is_empty() {
        errors.push(ctx.invalid("path", "must name a file"));
    }
    if let Some(compression) = config.compression {
        let want = compression.extension();
        if config.path.extension().and_then(|e| e.to_str()) != Some(want) {
            // Readers, the file receiver among them, pick the decompressor by the name.
            errors.push(ctx.invalid(
                "compression",
                format!(
                    "a {} file needs a path ending in .{want}",
                    compression.name()
                ),
            ));
        }
    }
    if let Some(rotation) = &config.rotation {
        if !(rotation.max_megabytes > 0.0 && rotation.max_megabytes.is_finite()) {
            errors.push(ctx.invalid("rotation.max_megabytes", "must be a number > 0"));
        }
        if rotation
            .every
            .is_some_and(|e| e.get() < std::time::Duration::from_secs(1))
        {
            errors.push(ctx.invalid("rotation.every", "must be at least 1s"));
        }
    }
    if !errors.is_empty() {
        return Err(BuildContext::errors(errors));
    }
    Ok(Box::new(FileExporter::new(config)))
}

inventory::submit! {
    ComponentFactory {
        type_name: "file",
        description: "writes traces (OTLP/JSON) and decisions as JSON lines to a file, optionally compressed and rotated",
        takes: &[SignalKind::Traces, SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<FileConfig>,
        build: Build::Exporter(build),
    }
}

#[cfg(test)]
mod tests;
