//! Persistence: the model as one versioned binary file, written atomically.
//!
//! Layout, little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `TSHSTREE` |
//! | 4 | format version (3) |
//! | 4 | header length `h` |
//! | `h` | header, JSON: the model parameters, counters, the forest's current window, and every operation's statistics |
//! | 8 | length `m` of the forest's masses (0 for the p99 detector) |
//! | `m` | per node, the reference mass `r` and its window number, two `u32` |
//! | 8 | FNV-1a 64 checksum of everything before it |
//!
//! Tree splits are not saved: they are drawn again from the seed, which the header holds, so a
//! file is half the size. JSON keeps the header readable with `head -c`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{DetectorKind, Features, HsTreeConfig};
use super::detector::{Detector, DetectorCounters, Model};
use super::features::{OneHot, Operation, Operations};
use super::floats::close;
use super::forest::WindowState;
use crate::random::SplitMix64;

const MAGIC: &[u8; 8] = b"TSHSTREE";
const VERSION: u32 = 3;
/// Magic, version, header length, masses length, checksum.
const FIXED_BYTES: usize = 8 + 4 + 4 + 8 + 8;

/// Why a saved model was not loaded or not written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// There is no file at the path.
    #[error("no saved model at {}", path.display())]
    Missing {
        /// The configured `state_path`.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The configured `state_path`.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file was read but cannot be used.
    #[error("cannot use the saved model in {}", path.display())]
    Decode {
        /// The configured `state_path`.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// The file or its temporary sibling cannot be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

/// Why the bytes of a saved model cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not a model file, truncated, or altered.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Written by a build with another file format.
    #[error("format version {found}, this build reads version {VERSION}")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// Written with other model parameters.
    #[error("written with {key} = {file}, the config has {key} = {config}")]
    Incompatible {
        /// The parameter that differs.
        key: &'static str,
        /// Its value in the file.
        file: String,
        /// Its value in the config.
        config: String,
    },
}

/// The parameters that shape a saved model: a file is loaded only when they all match.
/// Parameters the detector in use ignores are `None`, so that changing them keeps the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ModelParams {
    detector: DetectorKind,
    calibration_level: f64,
    max_operations: usize,
    features: Option<Features>,
    trees: Option<usize>,
    height: Option<u32>,
    window_size: Option<u32>,
    size_limit: Option<f64>,
    seed: Option<u64>,
    max_duration_ns: Option<u64>,
    max_z: Option<f64>,
}

impl ModelParams {
    fn of(config: &HsTreeConfig) -> Self {
        let hstree = config.detector == DetectorKind::Hstree;
        let paper = hstree && config.features == Features::Paper;
        Self {
            detector: config.detector,
            calibration_level: config.calibration_level(),
            max_operations: config.max_operations,
            features: hstree.then_some(config.features),
            trees: hstree.then_some(config.trees),
            height: hstree.then_some(config.height),
            window_size: hstree.then_some(config.window_size),
            size_limit: hstree.then(|| config.resolved_size_limit()),
            seed: hstree.then_some(config.seed),
            max_duration_ns: paper
                .then(|| u64::try_from(config.max_duration.get().as_nanos()).unwrap_or(u64::MAX)),
            max_z: (hstree && !paper).then_some(config.max_z),
        }
    }

    /// The first parameter that differs, named as in the config.
    fn mismatch(&self, config: &Self) -> Option<DecodeError> {
        fn pair<T: std::fmt::Debug + PartialEq>(
            key: &'static str,
            file: &T,
            config: &T,
        ) -> (&'static str, bool, String, String) {
            (
                key,
                file == config,
                format!("{file:?}"),
                format!("{config:?}"),
            )
        }
        let pairs = [
            pair("detector", &self.detector, &config.detector),
            (
                "target_fpr/learn_flagged (calibration quantile)",
                close(self.calibration_level, config.calibration_level),
                self.calibration_level.to_string(),
                config.calibration_level.to_string(),
            ),
            pair(
                "max_operations",
                &self.max_operations,
                &config.max_operations,
            ),
            pair("features", &self.features, &config.features),
            pair("trees", &self.trees, &config.trees),
            pair("height", &self.height, &config.height),
            pair("window_size", &self.window_size, &config.window_size),
            (
                "size_limit",
                match (self.size_limit, config.size_limit) {
                    (Some(a), Some(b)) => close(a, b),
                    (a, b) => a.is_none() && b.is_none(),
                },
                format!("{:?}", self.size_limit),
                format!("{:?}", config.size_limit),
            ),
            pair("seed", &self.seed, &config.seed),
            pair(
                "max_duration (ns)",
                &self.max_duration_ns,
                &config.max_duration_ns,
            ),
        ];
        pairs
            .into_iter()
            .find(|(_, equal, _, _)| !equal)
            .map(|(key, _, file, config)| DecodeError::Incompatible { key, file, config })
    }
}

/// Everything but the forest's masses.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    params: ModelParams,
    seen: u64,
    coin: SplitMix64,
    counters: DetectorCounters,
    window: Option<WindowState>,
    /// The points of the forest's current window, not yet counted into masses.
    latest: Option<Latest>,
    operations: Vec<Operation>,
}

/// A forest's current window, floats as their bits so that they come back exactly.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Latest {
    /// The operation encoding's one value per point.
    Operation(Vec<u32>),
    /// The paper encoding: operation slot and duration feature per point.
    Paper(Vec<(usize, u32)>),
}

/// FNV-1a, 64 bits: enough to tell a torn or altered file from a good one.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Detector {
    /// The model as the bytes of a state file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            params: ModelParams::of(&self.config),
            seen: self.seen,
            coin: self.coin,
            counters: self.counters,
            window: self.forest_window(),
            latest: match &self.model {
                Model::Operation(f) => Some(Latest::Operation(
                    f.latest().iter().map(|[x]| x.to_bits()).collect(),
                )),
                Model::Paper(f) => Some(Latest::Paper(
                    f.latest()
                        .iter()
                        .map(|p| (p.slot, p.duration.to_bits()))
                        .collect(),
                )),
                Model::P99 => None,
            },
            operations: self.ops.iter().cloned().collect(),
        };
        // Serializing plain data to a Vec cannot fail; an empty header would be caught as
        // corrupt on load rather than crash a running pipeline here.
        let json = serde_json::to_vec(&header).unwrap_or_default();
        let masses = match &self.model {
            Model::Operation(f) => f.masses_len(),
            Model::Paper(f) => f.masses_len(),
            Model::P99 => 0,
        };
        let mut out = Vec::with_capacity(FIXED_BYTES + json.len() + masses);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&(masses as u64).to_le_bytes());
        match &self.model {
            Model::Operation(f) => f.write_masses(&mut out),
            Model::Paper(f) => f.write_masses(&mut out),
            Model::P99 => {}
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Saves the model to `path` atomically (temporary file, sync, rename).
    pub fn save_to(&self, path: &Path) -> Result<(), StateError> {
        write_atomic(path, &self.to_bytes())
    }

    /// Loads the model saved in `path`; on any error the detector is unchanged.
    pub fn load_from(&mut self, path: &Path) -> Result<(), StateError> {
        let bytes = read(path)?;
        self.restore(&bytes).map_err(|source| StateError::Decode {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Replaces the model with a saved one. Checks everything first: on error the detector is
    /// unchanged.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let corrupt = |m: &str| DecodeError::Corrupt(m.to_string());
        if bytes.len() < FIXED_BYTES || &bytes[..8] != MAGIC {
            return Err(corrupt("not an hstree state file"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if checksum(body) != u64::from_le_bytes(array(sum)?) {
            return Err(corrupt("checksum mismatch (truncated or altered)"));
        }
        let version = u32::from_le_bytes(array(&body[8..12])?);
        if version != VERSION {
            return Err(DecodeError::Version { found: version });
        }
        let header_len = u32::from_le_bytes(array(&body[12..16])?) as usize;
        let rest = &body[16..];
        if rest.len() < header_len + 8 {
            return Err(corrupt("header longer than the file"));
        }
        let (json, rest) = rest.split_at(header_len);
        let header: Header = serde_json::from_slice(json)
            .map_err(|e| DecodeError::Corrupt(format!("header: {e}")))?;
        if let Some(err) = header.params.mismatch(&ModelParams::of(&self.config)) {
            return Err(err);
        }
        let (len, masses) = rest.split_at(8);
        if u64::from_le_bytes(array(len)?) != masses.len() as u64 {
            return Err(corrupt("masses length does not match the file"));
        }
        if let Some(op) = header.operations.iter().find(|op| {
            !op.calibrator.is_consistent()
                || !op.tail.is_consistent()
                || !op.slowest.is_consistent()
        }) {
            return Err(DecodeError::Corrupt(format!(
                "quantile estimator of {}::{} is inconsistent",
                op.service, op.operation
            )));
        }
        let ops = Operations::from_saved(
            header.operations,
            self.config.max_operations,
            self.config.levels(),
        )
        .map_err(DecodeError::Corrupt)?;
        let max_operations = self.config.max_operations;
        match (&mut self.model, header.window, header.latest) {
            (Model::Operation(f), Some(window), Some(Latest::Operation(latest))) => {
                let latest = latest.into_iter().map(|b| [f32::from_bits(b)]).collect();
                f.restore(masses, window, latest)
                    .map_err(DecodeError::Corrupt)?;
            }
            (Model::Paper(f), Some(window), Some(Latest::Paper(latest))) => {
                if latest.iter().any(|(slot, _)| *slot >= max_operations) {
                    return Err(corrupt("a point names an operation past max_operations"));
                }
                let latest = latest
                    .into_iter()
                    .map(|(slot, bits)| OneHot {
                        slot,
                        duration: f32::from_bits(bits),
                    })
                    .collect();
                f.restore(masses, window, latest)
                    .map_err(DecodeError::Corrupt)?;
            }
            (Model::P99, None, None) if masses.is_empty() => {}
            _ => return Err(corrupt("forest does not match the detector")),
        }
        self.extremes = [None; 2];
        self.ops = ops;
        self.seen = header.seen;
        self.coin = header.coin;
        self.counters = header.counters;
        Ok(())
    }
}

fn array<const N: usize>(bytes: &[u8]) -> Result<[u8; N], DecodeError> {
    bytes
        .try_into()
        .map_err(|_| DecodeError::Corrupt("truncated".to_string()))
}

/// Reads a state file.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, StateError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => StateError::Missing {
            path: path.to_path_buf(),
        },
        _ => StateError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it over `path`, so
/// that a crash leaves either the old model or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        // Best effort: a stale temporary file is harmless, the next save replaces it.
        let _ = fs::remove_file(&tmp);
        return Err(StateError::Write {
            path: path.to_path_buf(),
            source,
        });
    }
    // The rename is durable once the directory is synced; not every platform can open a
    // directory, and the file itself is already complete, so failure here is not an error.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}
