//! Pipeline files: parsed keeping positions, then validated with every problem collected.
//!
//! Loading runs in two phases. The TOML is parsed into toml's spanned document model, `${env:…}`
//! references are expanded in place, and then every section is checked: component ids and
//! types, each component's own table (by building the component), `[service]`, and each
//! pipeline's references and signal flow. All diagnostics are collected before the load fails.

mod build;
mod diagnostic;
mod document;
mod env;
mod introspect;
mod load;
mod recover;
mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

pub use build::{BuildContext, BuildError, Built, build_from_toml};
pub use diagnostic::{ConfigError, Diagnostic, Severity, suggest};
pub use document::Document;
pub use introspect::field_names;
pub use load::{component_table, load_file, load_str};
pub use units::{ByteSize, HumanDuration};

use crate::component::{Exporter, Processor, Receiver};
use crate::registry::ComponentFactory;
use crate::signal::SignalKind;

/// A component id as written in the file: `type` or `type/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId(String);

impl ComponentId {
    /// Checks the shape of an id: a type of lowercase letters, digits and `_`, then optionally
    /// `/` and a name.
    pub fn parse(id: &str) -> Result<Self, String> {
        let (ty, name) = match id.split_once('/') {
            Some((ty, name)) => (ty, Some(name)),
            None => (id, None),
        };
        if ty.is_empty()
            || !ty
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!(
                "invalid component id {id:?}: the type part must be lowercase letters, digits and `_`"
            ));
        }
        if let Some(name) = name
            && (name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "invalid component id {id:?}: the name after `/` must be letters, digits, `_`, `-` or `.`"
            ));
        }
        Ok(Self(id.to_string()))
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The type part (before `/`).
    pub fn type_part(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an exporter's queue does when it is full.
///
/// Blocking is the default (docs/adr/0007-acknowledged-means-delivered.md): a span a client was
/// told is safe is never dropped at an exporter's queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the batch that does not fit, and count it. A slow exporter never slows the others,
    /// but spans already acknowledged to clients are lost.
    DropNewest,
    /// Wait for room. The pipeline slows down, and receivers answer their clients with back-off.
    #[default]
    Block,
}

/// Where an exporter's queue keeps what waits for the exporter: the `buffer` engine key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Buffer {
    /// In memory, bounded by `queue_size` and `queue_items`; gone with the process.
    #[default]
    Memory,
    /// On disk, synced before receivers answer OK, replayed after a restart
    /// (docs/adr/0010-a-disk-buffer-of-checksummed-segments.md).
    Disk {
        /// The directory of this exporter's segments; created if missing. One exporter, one
        /// directory.
        path: std::path::PathBuf,
        /// Bytes on disk at most; past it the queue in front waits.
        #[serde(default = "default_disk_max_size")]
        max_size: ByteSize,
    },
}

fn default_disk_max_size() -> ByteSize {
    ByteSize::mib(1024)
}

/// Log verbosity for `[service] log_level`; `RUST_LOG` overrides it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostic detail.
    Debug,
    /// Start, stop and configuration events.
    #[default]
    Info,
    /// Things an operator should look at.
    Warn,
    /// Failures only.
    Error,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// The level as a `tracing` filter directive.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Off => "off",
        }
    }
}

/// How log lines are written, for `[service] log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The `[service]` table: how the engine itself runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Log verbosity: trace, debug, info, warn, error or off. `RUST_LOG` overrides it.
    pub log_level: LogLevel,
    /// `text` (one line for people) or `json` (one object per line, for log collectors).
    pub log_format: LogFormat,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, or `"off"`. Port 0 picks a free
    /// port (the chosen address is logged).
    #[serde(deserialize_with = "telemetry_address")]
    pub telemetry_address: Option<SocketAddr>,
    /// How long an orderly shutdown may take before what is left is dropped (and counted).
    pub shutdown_deadline: HumanDuration,
    /// Resident memory at which `/readyz` fails; receivers refuse new data from
    /// `memory_limit − memory_spike_limit` on. Unset: no limit.
    pub memory_limit: Option<ByteSize>,
    /// The allowance between the soft and the hard limit; default a fifth of `memory_limit`.
    pub memory_spike_limit: Option<ByteSize>,
}

impl ServiceConfig {
    /// The keys whose change a reload cannot apply (the telemetry listener, the memory limiter
    /// and logging are set up once, at start), changed between `self` and `new`.
    pub fn restart_only_changes(&self, new: &ServiceConfig) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.log_level != new.log_level {
            changed.push("log_level");
        }
        if self.log_format != new.log_format {
            changed.push("log_format");
        }
        if self.telemetry_address != new.telemetry_address {
            changed.push("telemetry_address");
        }
        if self.memory_limit != new.memory_limit {
            changed.push("memory_limit");
        }
        if self.memory_spike_limit != new.memory_spike_limit {
            changed.push("memory_spike_limit");
        }
        changed
    }

    /// The memory limiter's levels, if a limit is set.
    pub fn memory_limits(&self) -> Option<crate::memory::Limits> {
        let hard = self.memory_limit?.bytes();
        let spike = self
            .memory_spike_limit
            .map_or(hard / 5, ByteSize::bytes)
            .min(hard);
        Some(crate::memory::Limits {
            soft: hard - spike,
            hard,
        })
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            telemetry_address: Some(SocketAddr::from(([127, 0, 0, 1], 8888))),
            shutdown_deadline: HumanDuration::from_secs(10),
            memory_limit: None,
            memory_spike_limit: None,
        }
    }
}

fn telemetry_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s == "off" {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "invalid address {s:?}: write host:port such as \"127.0.0.1:8888\", or \"off\""
        ))
    })
}

/// A receiver, built and ready to start.
pub struct ReceiverSpec {
    /// Its id.
    pub id: ComponentId,
    /// Its factory.
    pub factory: &'static ComponentFactory,
    /// The instance.
    pub instance: Box<dyn Receiver>,
}

/// A processor instance of one pipeline. A processor id used by two pipelines gets two
/// instances, as in the Collector, so pipelines never share processor state.
pub struct ProcessorSpec {
    /// Its id.
    pub id: ComponentId,
    /// Its factory.
    pub factory: &'static ComponentFactory,
    /// The instance.
    pub instance: Box<dyn Processor>,
}

/// An exporter, built, with the queue the engine puts in front of it.
pub struct ExporterSpec {
    /// Its id.
    pub id: ComponentId,
    /// Its factory.
    pub factory: &'static ComponentFactory,
    /// The instance.
    pub instance: Box<dyn Exporter>,
    /// Capacity of its queue, in batches.
    pub queue_size: usize,
    /// Capacity of its queue, in items (spans or decisions).
    pub queue_items: usize,
    /// What the queue does when full.
    pub when_full: WhenFull,
    /// Where waiting batches are kept.
    pub buffer: Buffer,
    /// The signals it gets: what its type takes, narrowed by its `signals` key.
    pub signals: Vec<SignalKind>,
}

/// A pipeline: which receivers feed it, its processors in order, which exporters it feeds.
pub struct PipelineSpec {
    /// The name after `pipelines.`.
    pub name: String,
    /// Receiver ids.
    pub receivers: Vec<ComponentId>,
    /// Processor instances, in order.
    pub processors: Vec<ProcessorSpec>,
    /// Exporter ids.
    pub exporters: Vec<ComponentId>,
    /// Capacity of each queue inside the pipeline, in batches.
    pub queue_size: usize,
    /// Capacity of each queue inside the pipeline, in items (spans or decisions).
    pub queue_items: usize,
    /// Signals that reach the exporters.
    pub signals: Vec<SignalKind>,
}

/// A loaded, validated pipeline file with every component built.
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `[service]`.
    pub service: ServiceConfig,
    /// Every receiver used by a pipeline.
    pub receivers: Vec<ReceiverSpec>,
    /// Every exporter used by a pipeline.
    pub exporters: Vec<ExporterSpec>,
    /// The pipelines.
    pub pipelines: Vec<PipelineSpec>,
    /// Warnings, rendered against the file (empty when there are none).
    pub warnings: String,
    /// How many warnings `warnings` holds.
    pub warning_count: usize,
    /// The text it was loaded from, before `${env:…}` expansion: a reload that fails to start
    /// starts this again.
    pub source: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("service", &self.service)
            .field(
                "receivers",
                &self.receivers.iter().map(|r| &r.id).collect::<Vec<_>>(),
            )
            .field(
                "exporters",
                &self.exporters.iter().map(|e| &e.id).collect::<Vec<_>>(),
            )
            .field(
                "pipelines",
                &self.pipelines.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
