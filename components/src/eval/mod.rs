//! `tracescale eval`: replays a labeled span CSV through an `hstree` processor's [`Detector`] and
//! measures how well its verdicts match the labels; `tracescale attribute` ([`attribution`])
//! replays one through the `slo_scaler` processor's engine and measures how well the culprits it
//! names match the injected faults.
//!
//! Plain synchronous code: read the CSV (`.gz` transparently, [`labeled_csv`]), build the
//! detector from a pipeline file ([`detector`]), replay every row in file order, then compute the
//! confusion matrix, AUC and per-fault detection ([`score`]). The CSV schema is in this module's
//! README; [`synth`] writes files in it.
//!
//! [`Detector`]: crate::processors::hstree::Detector

pub mod attribution;
mod detector;
pub mod labeled_csv;
mod score;
pub mod synth;

use std::path::PathBuf;

pub use detector::{detector_from_file, detector_from_str};
pub use labeled_csv::{REQUIRED_COLUMNS, Row, Spans, parse_csv, read_csv};
pub use score::{DetectionReport, auc, replay, score};

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The pipeline file has no usable `hstree` processor under that id, or its config is
    /// invalid.
    #[error("{}: {message}", path.display())]
    Processor {
        /// The pipeline file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The faults CSV could not be read.
    #[error("{}: {source}", path.display())]
    FaultsFile {
        /// The faults CSV.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The faults CSV is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Faults {
        /// The faults CSV.
        path: PathBuf,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// No entry operation of the span CSV has enough fault-free traffic to learn an objective.
    #[error(
        "{}: no entry operation (root span) has a minute with at least {min} traces outside the faults' windows: no objective to judge by",
        path.display()
    )]
    NoObjective {
        /// The span CSV.
        path: PathBuf,
        /// The traces a minute needs.
        min: usize,
    },
    /// The CSV is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
}

impl EvalError {
    /// True when the error is in what the user gave to judge by, the pipeline file or the
    /// faults CSV (exit status 2), rather than in the data.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            EvalError::Processor { .. } | EvalError::Faults { .. } | EvalError::FaultsFile { .. }
        )
    }
}
