//! `tracescale attribute`: replays a labeled span CSV through the `slo_scaler` processor's engine
//! and scores the culprits it names against a faults CSV.
//!
//! Plain synchronous code, in two passes over the span file: the first learns an objective per
//! entry operation from the traces that ended outside every fault's window
//! ([`derive_objectives`]); the second feeds every span, in file order and on span time, to the
//! engine the processor runs, which keeps the ranking of each evaluation at which an objective
//! burns ([`replay`]). Each fault is then judged by the rankings made inside its window
//! ([`score`]). The ranking is the processor's own ([`Engine`]'s), so what is measured here is
//! what it would scale. The file formats are in this module's README.
//!
//! [`Engine`]: crate::processors::slo_scaler::engine::Engine

mod faults;
mod replay;
mod report;
mod spans;

use std::path::Path;

pub use faults::{FAULT_COLUMNS, Fault, Windows, parse_faults, read_faults};
pub use replay::{
    DerivedObjective, MIN_MINUTE_TRACES, ObjectiveOptions, Replay, derive_objectives, replay,
};
pub use report::{AttributionReport, FaultOutcome, Figures, score};
pub use spans::{SPAN_COLUMNS, SpanRow, for_each_span, parse_spans};

use super::EvalError;

/// Reads the faults, learns the objectives, replays the spans and scores the rankings.
pub fn attribute(
    spans: &Path,
    faults: &Path,
    options: &ObjectiveOptions,
) -> Result<AttributionReport, EvalError> {
    let faults = read_faults(faults)?;
    let objectives = derive_objectives(spans, &faults, options)?;
    let replayed = replay(spans, &faults, &objectives)?;
    Ok(score(&faults, objectives, &replayed))
}
