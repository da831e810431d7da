//! The comparison `tracescale simulate` prints: the pipeline against the baselines (the CPU HPA,
//! a KEDA-style trigger on requests per second) on one scenario and one seed, as a table and as
//! JSON; [`super::chart`] draws it.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    Hpa, HpaConfig, NANOS_PER_SEC, Oracle, RpsConfig, RpsScaler, RunResult, RunScore, Scenario,
    Sim, SimError, run_scenario,
};

/// The figures of one run, as `--json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Seconds whose end-to-end p99 was above the scenario's SLO (failed requests count as
    /// infinitely slow).
    pub slo_violation_seconds: f64,
    /// Replicas of every service integrated over the run.
    pub replica_seconds: f64,
    /// Seconds from the (first) fault to the first scale-up of the right service, if any.
    pub first_correct_action_seconds: Option<f64>,
    /// Scale-ups of a service that was the wrong target at the time.
    pub wrong_target_actions: u32,
    /// Every replica change.
    pub actions: usize,
}

impl Summary {
    /// The figures of a report and its actions.
    pub fn new(report: &RunScore, actions: usize) -> Self {
        Self {
            slo_violation_seconds: report.slo_violation_seconds,
            replica_seconds: report.replica_seconds,
            first_correct_action_seconds: report.first_correct_action_seconds,
            wrong_target_actions: report.wrong_target_actions,
            actions,
        }
    }
}

/// A baseline scaler `simulate --compare` runs on the same scenario and seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Baseline {
    /// The Kubernetes HPA on CPU utilisation (`cpu-hpa`).
    CpuHpa,
    /// A KEDA-style trigger on requests per second per replica (`rps`).
    Rps,
    /// Each phase's right target at its maximum for the whole phase (`oracle`): a bound.
    Oracle,
}

impl Baseline {
    /// Every baseline, in the order tables and charts show them.
    pub const ALL: [Baseline; 3] = [Baseline::CpuHpa, Baseline::Rps, Baseline::Oracle];

    /// Its name on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::CpuHpa => "cpu-hpa",
            Baseline::Rps => "rps",
            Baseline::Oracle => "oracle",
        }
    }

    /// The baseline called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Runs the scenario under this baseline.
    pub fn run(self, scenario: &Scenario) -> Result<RunResult, SimError> {
        match self {
            Baseline::CpuHpa => run_baseline(scenario),
            Baseline::Rps => {
                let probe = Sim::new(&scenario.sim)?;
                let mut rps = RpsScaler::new(&probe, &scenario.sim, RpsConfig::default());
                run_scenario(scenario, &mut rps)
            }
            Baseline::Oracle => {
                let probe = Sim::new(&scenario.sim)?;
                let mut oracle = Oracle::new(&probe, &scenario.phases);
                run_scenario(scenario, &mut oracle)
            }
        }
    }
}

/// The baselines of one `--compare`: a comma-separated list, each name once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Baselines(pub Vec<Baseline>);

impl Baselines {
    /// Parses `cpu-hpa,rps`: known names, each once, at least one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for name in text.split(',').map(str::trim) {
            let Some(b) = Baseline::from_name(name) else {
                let known: Vec<&str> = Baseline::ALL.iter().map(|b| b.name()).collect();
                return Err(format!(
                    "unknown baseline {name:?}: choose from {} (comma-separated)",
                    known.join(", ")
                ));
            };
            if out.contains(&b) {
                return Err(format!("baseline {name:?} is given twice"));
            }
            out.push(b);
        }
        Ok(Self(out))
    }
}

impl std::fmt::Display for Baselines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|b| b.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// The CPU baseline: the HPA algorithm on simulated CPU (target utilisation per service,
/// tolerance 0.1, 15 s sync, 300 s scale-down stabilisation) on the same scenario and seed.
pub fn run_baseline(scenario: &Scenario) -> Result<RunResult, SimError> {
    let probe = Sim::new(&scenario.sim)?;
    let mut hpa = Hpa::new(&probe, HpaConfig::default());
    run_scenario(scenario, &mut hpa)
}

/// A side-by-side table: the pipeline, then one column per baseline, by name.
pub fn table(scenario: &Scenario, pipeline: &Summary, baselines: &[(&str, &Summary)]) -> String {
    let mut s = String::new();
    let slo_ms = scenario.slo_latency_ns as f64 / 1e6;
    let _ = writeln!(
        s,
        "scenario {} (seed {}, {} s simulated, SLO: end-to-end p99 <= {slo_ms:.0} ms)",
        scenario.name,
        scenario.sim.seed,
        scenario.duration_ns / NANOS_PER_SEC
    );
    let _ = writeln!(s);
    let cells = |m: &Summary| {
        [
            format!("{:.0}", m.slo_violation_seconds),
            format!("{:.0}", m.replica_seconds),
            m.first_correct_action_seconds
                .map_or_else(|| "never".to_string(), |v| format!("{v:.0}")),
            m.wrong_target_actions.to_string(),
            m.actions.to_string(),
        ]
    };
    let names = [
        "SLO-violation seconds",
        "replica-seconds",
        "fault → first correct action (s)",
        "actions on a wrong target",
        "replica changes",
    ];
    let ours = cells(pipeline);
    let theirs: Vec<_> = baselines.iter().map(|(_, b)| cells(b)).collect();
    let _ = write!(s, "{:<34} {:>14}", "", "trace-driven");
    for (name, _) in baselines {
        let _ = write!(s, " {name:>14}");
    }
    s.push('\n');
    for (i, name) in names.iter().enumerate() {
        let _ = write!(s, "{name:<34} {:>14}", ours[i]);
        for b in &theirs {
            let _ = write!(s, " {:>14}", b[i]);
        }
        s.push('\n');
    }
    let mut first = true;
    for (name, b) in baselines {
        if b.slo_violation_seconds <= 0.0 {
            continue;
        }
        if first {
            s.push('\n');
            first = false;
        }
        let change = 100.0 * (pipeline.slo_violation_seconds / b.slo_violation_seconds - 1.0);
        let _ = writeln!(
            s,
            "SLO-violation time vs {name}: {change:+.0} %; replica-seconds vs {name}: {:+.0} %",
            100.0 * (pipeline.replica_seconds / b.replica_seconds.max(1e-9) - 1.0)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_parse_as_a_comma_list_of_known_names_each_once() {
        assert_eq!(
            Baselines::parse("cpu-hpa,rps"),
            Ok(Baselines(vec![Baseline::CpuHpa, Baseline::Rps]))
        );
        assert_eq!(Baselines::parse("rps"), Ok(Baselines(vec![Baseline::Rps])));
        assert_eq!(
            Baselines::parse("rps, cpu-hpa").unwrap().to_string(),
            "rps,cpu-hpa"
        );
        assert!(
            Baselines::parse("cpu")
                .unwrap_err()
                .contains("cpu-hpa, rps")
        );
        assert!(Baselines::parse("rps,rps").unwrap_err().contains("twice"));
        assert!(Baselines::parse("").is_err());
    }
}
