//! The `file` receiver's configuration, and what its file's name says about its compression.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracescale_core::component::BuildContext;
use tracescale_core::config::{BuildError, ByteSize, HumanDuration};

/// Config of the `file` receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileReceiverConfig {
    /// The file to read. A name ending in `.gz` is read as gzip, `.zst` or `.zstd` as zstd.
    pub path: PathBuf,
    /// How the messages in the file are framed.
    #[serde(default)]
    pub format: Format,
    /// 0 replays as fast as the pipeline takes the batches; N paces them at N times the pace of
    /// the spans' start times.
    #[serde(default)]
    pub speed: f64,
    /// Keep reading what is appended to the file, like `tail -f`, until the engine stops.
    #[serde(default)]
    pub follow: bool,
    /// How often a followed file is checked for new lines.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// What a malformed line does.
    #[serde(default)]
    pub on_error: OnError,
    /// The longest line (or protobuf message) taken; a longer one is malformed.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
}

/// How messages are framed in the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One OTLP/JSON `ExportTraceServiceRequest` (or `TracesData`) per line.
    #[default]
    OtlpJson,
    /// OTLP protobuf `ExportTraceServiceRequest` messages, each behind its varint length.
    OtlpProto,
}

/// What a malformed line does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Log it (rate-limited), count it, and go on with the next line.
    #[default]
    Skip,
    /// End the run with an error naming the file and the line.
    Stop,
}

/// The compression a file's name announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip, one member or several concatenated.
    Gzip,
    /// zstd, one frame or several concatenated.
    Zstd,
}

impl Compression {
    /// By the file's extension: `.gz`, `.zst` or `.zstd`; anything else is plain.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("gz") => Compression::Gzip,
            Some("zst" | "zstd") => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

fn default_poll_interval() -> HumanDuration {
    HumanDuration::from_millis(250)
}

fn default_max_line_bytes() -> ByteSize {
    ByteSize::mib(16)
}

impl FileReceiverConfig {
    /// Parses and checks the receiver's table.
    pub fn from_context(ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let config: FileReceiverConfig = ctx.parse()?;
        let mut errors = Vec::new();
        if config.path.as_os_str().is_empty() {
            errors.push(ctx.invalid("path", "must name a file"));
        }
        if !(config.speed >= 0.0 && config.speed.is_finite()) {
            errors.push(ctx.invalid("speed", "must be a finite number ≥ 0"));
        }
        if config.follow && Compression::of(&config.path) != Compression::None {
            errors.push(ctx.invalid(
                "follow",
                "a compressed file cannot be followed; it is read once, to its end",
            ));
        }
        if config.follow && config.format != Format::OtlpJson {
            errors.push(ctx.invalid("follow", "only an otlp_json file can be followed"));
        }
        let poll = config.poll_interval.get();
        if poll < std::time::Duration::from_millis(10) || poll > std::time::Duration::from_secs(60)
        {
            errors.push(ctx.invalid("poll_interval", "must be between 10ms and 60s"));
        }
        if config.max_line_bytes.bytes() < 1024 || config.max_line_bytes > ByteSize::mib(1024) {
            errors.push(ctx.invalid("max_line_bytes", "must be between 1KiB and 1GiB"));
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(BuildContext::errors(errors))
        }
    }
}
