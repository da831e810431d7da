//! The `file` exporter: one JSON object per line. Traces are written as OTLP/JSON
//! `ExportTraceServiceRequest` objects (lowerCamelCase keys, hex ids, 64-bit integers as strings),
//! the shape the OpenTelemetry Collector's file exporter writes; decisions as JSON objects with
//! `"signal": "decision"`.

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

/// Config of the `file` exporter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to write. Its directory must exist.
    pub path: PathBuf,
    /// Keep what the file holds and add to its end, instead of truncating it at start.
    #[serde(default)]
    pub append: bool,
}

/// Writes each batch as JSON lines and flushes after every batch, so that a reader never sees
/// half a line from a batch that was acknowledged.
pub struct FileExporter {
    config: FileConfig,
    file: Option<File>,
    line: Vec<u8>,
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
            file: None,
            line: Vec::with_capacity(64 * 1024),
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
}

#[async_trait]
impl Exporter for FileExporter {
    async fn start(&mut self, _ctx: &ExporterContext) -> Result<(), ComponentError> {
        let path = &self.config.path;
        let mut options = OpenOptions::new();
        options.create(true);
        if self.config.append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        let file = options
            .open(path)
            .await
            .map_err(|e| ComponentError::io(format!("open {} for writing", path.display()), e))?;
        self.file = Some(file);
        Ok(())
    }

    async fn export(&mut self, signal: Signal) -> Result<(), ComponentError> {
        self.encode(signal).map_err(ComponentError::other)?;
        let path = &self.config.path;
        let Some(file) = self.file.as_mut() else {
            return Err(ComponentError::other("the file exporter was not started"));
        };
        file.write_all(&self.line)
            .await
            .map_err(|e| ComponentError::io(format!("write {}", path.display()), e))?;
        file.flush()
            .await
            .map_err(|e| ComponentError::io(format!("flush {}", path.display()), e))
    }

    async fn shutdown(&mut self, _deadline: Instant) -> Result<(), ComponentError> {
        if let Some(file) = self.file.take() {
            file.sync_all().await.map_err(|e| {
                ComponentError::io(format!("sync {}", self.config.path.display()), e)
            })?;
        }
        Ok(())
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Exporter>, BuildError> {
    let config: FileConfig = ctx.parse()?;
    if config.path.as_os_str().is_empty() {
        return Err(ctx.invalid("path", "must name a file"));
    }
    Ok(Box::new(FileExporter::new(config)))
}

inventory::submit! {
    ComponentFactory {
        type_name: "file",
        description: "writes traces (OTLP/JSON) and decisions as JSON lines to a file",
        takes: &[SignalKind::Traces, SignalKind::Decisions],
        emits: &[],
        config_keys: field_names::<FileConfig>,
        build: Build::Exporter(build),
    }
}

#[cfg(test)]
mod tests;
