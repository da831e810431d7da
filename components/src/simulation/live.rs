//! What `tracescale demo` and `tracescale simulate` show while a scenario runs, and the results
//! they collect once it has.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::chart::{Series, svg};
use super::report::{Baseline, Summary, table};
use super::{Action, started_clusters};
use super::{IntervalStats, NANOS_PER_SEC, RunScore, ScaleAction, Scenario};

/// Prints, about once a second, the simulated time, the end-to-end p99 and each service's
/// replicas, and every replica change with its reason as it happens, until `stop`.
pub async fn live_view(stop: CancellationToken) {
    let mut shown_actions = 0usize;
    let mut last_second = u64::MAX;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    loop {
        // After `stop`, one last round shows the end of the run.
        let last = tokio::select! {
            () = stop.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let Some((_, cluster)) = started_clusters().into_iter().next() else {
            if last {
                return;
            }
            continue;
        };
        let mut out = String::new();
        {
            let state = cluster.lock();
            for a in state.actions.iter().skip(shown_actions) {
                let arrow = if a.action.to > a.action.from {
                    "▲"
                } else {
                    "▼"
                };
                let _ = writeln!(
                    out,
                    "  {arrow} t={:>4}s  {} {} → {}  {}",
                    a.action.time / NANOS_PER_SEC,
                    a.action.service,
                    a.action.from,
                    a.action.to,
                    a.reason
                );
            }
            shown_actions = state.actions.len();
            if let Some(row) = state.rows.last() {
                let second = row.end / NANOS_PER_SEC;
                // One status line per ten simulated seconds keeps the view readable.
                if second / 10 != last_second / 10
                    || last_second == u64::MAX
                    || (last && second != last_second)
                {
                    last_second = second;
                    let slo = state
                        .scenario
                        .as_ref()
                        .map_or(u64::MAX, |s| s.slo_latency_ns);
                    let _ = writeln!(out, "{}", status_line(row, slo));
                }
            }
        }
        if !out.is_empty() {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
        }
        if last {
            return;
        }
    }
}

fn status_line(row: &IntervalStats, slo_ns: u64) -> String {
    let p99 = match row.e2e_p99_ns {
        None => "   -   ".to_string(),
        Some(u64::MAX) => "failing".to_string(),
        Some(ns) => format!("{:>5.0}ms", ns as f64 / 1e6),
    };
    let mark = if row.violates(slo_ns) { "✗" } else { "✓" };
    let mut s = format!("t={:>4}s  p99 {p99} {mark} ", row.end / NANOS_PER_SEC);
    for svc in &row.services {
        let svc_p99 = svc
            .p99_ns
            .map_or_else(|| "-".to_string(), |ns| format!("{:.0}ms", ns as f64 / 1e6));
        let _ = write!(
            s,
            " | {} {}×{} p99 {svc_p99}",
            svc.service,
            svc.desired_replicas,
            if svc.ready_replicas < svc.desired_replicas {
                format!(" ({} ready)", svc.ready_replicas)
            } else {
                String::new()
            }
        );
    }
    s
}

/// What a finished simulated run produced.
pub struct Outcome {
    /// The scenario, as run.
    pub scenario: Scenario,
    /// The pipeline's figures.
    pub pipeline: Summary,
    /// Its rows, for the chart.
    pub rows: Vec<IntervalStats>,
    /// Its replica changes.
    pub actions: Vec<Action>,
}

/// Collects the run of the only simulated cluster that was started.
pub fn outcome() -> Result<Outcome, String> {
    let clusters = started_clusters();
    let (name, cluster) = match clusters.as_slice() {
        [] => return Err("the pipeline has no simulated_traces receiver".to_string()),
        [one] => one.clone(),
        _ => return Err("the pipeline runs more than one simulation; run one per file".into()),
    };
    let state = cluster.lock();
    let Some(scenario) = state.scenario.clone() else {
        return Err(format!("simulation {name:?} never started"));
    };
    if !state.finished {
        return Err(format!(
            "simulation {name:?} stopped at {} s of {} s",
            state.now / NANOS_PER_SEC,
            scenario.duration_ns / NANOS_PER_SEC
        ));
    }
    let actions: Vec<ScaleAction> = state.actions.iter().map(|a| a.action.clone()).collect();
    let report = RunScore::compute(&scenario, &state.rows, &actions);
    Ok(Outcome {
        pipeline: Summary::new(&report, actions.len()),
        rows: state.rows.clone(),
        actions: state.actions.clone(),
        scenario,
    })
}

/// The comparison, rendered: a table, or one JSON object, and the chart when asked for.
pub struct Rendered {
    /// Printed on stdout.
    pub text: String,
    /// The SVG chart, when a baseline or a plot was asked for.
    pub svg: String,
}

/// Runs each baseline of `compare` on the scenario and renders the comparison. The JSON is
/// `{"scenario", "seed", "pipeline", "baselines": {name: figures}}`, the map empty without a
/// baseline.
pub fn render(outcome: &Outcome, compare: &[Baseline], json: bool) -> Result<Rendered, String> {
    let mut runs = Vec::with_capacity(compare.len());
    for &b in compare {
        let run = b
            .run(&outcome.scenario)
            .map_err(|e| format!("baseline {}: {e}", b.name()))?;
        let summary = Summary::new(&run.report, run.actions.len());
        runs.push((b.name(), run, summary));
    }
    let text = if json {
        let baselines: serde_json::Map<String, serde_json::Value> = runs
            .iter()
            .map(|(name, _, summary)| ((*name).to_string(), serde_json::json!(summary)))
            .collect();
        let v = serde_json::json!({
            "scenario": outcome.scenario.name,
            "seed": outcome.scenario.sim.seed,
            "pipeline": outcome.pipeline,
            "baselines": baselines,
        });
        format!("{v}\n")
    } else {
        let columns: Vec<(&str, &Summary)> = runs.iter().map(|(n, _, s)| (*n, s)).collect();
        table(&outcome.scenario, &outcome.pipeline, &columns)
    };
    let mut series = vec![Series {
        label: "trace-driven",
        rows: &outcome.rows,
        summary: Some(&outcome.pipeline),
    }];
    for (name, run, summary) in &runs {
        series.push(Series {
            label: name,
            rows: &run.rows,
            summary: Some(summary),
        });
    }
    Ok(Rendered {
        text,
        svg: svg(&outcome.scenario, &series),
    })
}
