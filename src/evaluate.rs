//! The evaluation subcommands: `eval` (a detector against labeled spans), `attribute` (the
//! culprit ranking against injected faults) and `synth` (a labeled data set), each printing
//! its report as a table or as JSON.

use std::path::Path;
use std::process::ExitCode;

use tracescale_components::eval;
use tracescale_core::config::HumanDuration;

use crate::exit;

pub(crate) fn evaluate(
    config: &Path,
    processor: &str,
    input: &Path,
    json: bool,
    limit: Option<u64>,
    warm_start: Option<HumanDuration>,
) -> ExitCode {
    let run = || -> Result<eval::DetectionReport, eval::EvalError> {
        let mut detector = eval::detector_from_file(config, processor)?;
        let spans = eval::read_csv(input, limit)?;
        Ok(eval::replay(
            &mut detector,
            &spans,
            warm_start.map(HumanDuration::get),
        ))
    };
    report(
        run(),
        json,
        serde_json::to_string,
        eval::DetectionReport::table,
    )
}

pub(crate) fn attribute(
    input: &Path,
    faults: &Path,
    options: &eval::attribution::ObjectiveOptions,
    json: bool,
) -> ExitCode {
    if !(options.percentile > 0.0 && options.percentile < 100.0) {
        eprintln!("error: --percentile must be above 0 and below 100");
        return ExitCode::from(exit::CONFIG);
    }
    if !(options.target_factor.is_finite() && options.target_factor > 0.0) {
        eprintln!("error: --target-factor must be a number above 0");
        return ExitCode::from(exit::CONFIG);
    }
    if options.target_ns == Some(0) {
        eprintln!("error: --target must be longer than 0s");
        return ExitCode::from(exit::CONFIG);
    }
    report(
        eval::attribution::attribute(input, faults, options),
        json,
        serde_json::to_string,
        eval::attribution::AttributionReport::table,
    )
}

/// Prints a report as JSON or as its table; a config mistake exits 2, anything else 1.
fn report<R>(
    result: Result<R, eval::EvalError>,
    json: bool,
    to_json: fn(&R) -> serde_json::Result<String>,
    table: fn(&R) -> String,
) -> ExitCode {
    match result {
        Ok(report) if json => match to_json(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(exit::RUNTIME)
            }
        },
        Ok(report) => {
            print!("{}", table(&report));
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(if err.is_config() {
                exit::CONFIG
            } else {
                exit::RUNTIME
            })
        }
    }
}

pub(crate) fn synth(output: &Path, seed: u64, traces: u64, faults: bool) -> ExitCode {
    let config = eval::synth::SynthConfig {
        seed,
        traces,
        faults,
        ..eval::synth::SynthConfig::default()
    };
    match eval::synth::write_file(&config, output) {
        Ok(s) => {
            eprintln!(
                "{}: {} spans, {} traces, {} labeled anomalous, {} faults",
                output.display(),
                s.spans,
                s.traces,
                s.anomalous_spans,
                s.faults.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}: {err}", output.display());
            ExitCode::from(exit::RUNTIME)
        }
    }
}
