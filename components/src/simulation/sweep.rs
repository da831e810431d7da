//! `tracescale simulate --seeds A..B`: one scenario over many seeds, each run in its own
//! process on all cores, summarised per policy as median, p10 and p90, with the pipeline's win
//! rate against each baseline and its worst seed.
//!
//! A run per process keeps each run's simulated cluster, metrics and logs apart, and lets the
//! runs use every core. The simulation runs in lockstep with its pipeline, so a run at
//! `speed = 0` gives the figures it would give at any speed, and the sweep runs them flat out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// The most seeds one sweep runs.
pub const MAX_SEEDS: u64 = 10_000;

/// The figures of one policy in one run, as `simulate --json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFigures {
    /// Seconds whose end-to-end p99 was above the SLO.
    pub slo_violation_seconds: f64,
    /// Replicas integrated over the run.
    pub replica_seconds: f64,
    /// Seconds from the first fault to the first scale-up of the right service.
    pub first_correct_action_seconds: Option<f64>,
    /// Scale-ups of a service that was the wrong target at the time.
    pub wrong_target_actions: u32,
    /// Every replica change.
    pub actions: usize,
}

/// One seed's run: the pipeline and each baseline it was compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRun {
    /// The seed.
    pub seed: u64,
    /// The pipeline's figures.
    pub pipeline: RunFigures,
    /// Each baseline's figures, by name.
    pub baselines: BTreeMap<String, RunFigures>,
}

/// Why a sweep did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A run could not be started.
    #[error("cannot start the run of seed {seed}")]
    Spawn {
        /// The seed.
        seed: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A run failed.
    #[error("the run of seed {seed} failed: {stderr}")]
    Run {
        /// The seed.
        seed: u64,
        /// The end of what it wrote on stderr.
        stderr: String,
    },
    /// A run printed something that is not its JSON figures.
    #[error("the run of seed {seed} printed no figures: {reason}")]
    Output {
        /// The seed.
        seed: u64,
        /// What was wrong.
        reason: String,
    },
}

/// Parses `A..B` (inclusive) or a single seed.
pub fn parse_seeds(text: &str) -> Result<RangeInclusive<u64>, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("{s:?} is not a seed (a whole number)"))
    };
    let range = match text.split_once("..") {
        Some((a, b)) => {
            let b = b.strip_prefix('=').unwrap_or(b);
            parse(a)?..=parse(b)?
        }
        None => {
            let s = parse(text)?;
            s..=s
        }
    };
    if range.is_empty() {
        return Err(format!("{text:?} holds no seed: write it as FIRST..LAST"));
    }
    if range.end() - range.start() >= MAX_SEEDS {
        return Err(format!("{text:?} holds more than {MAX_SEEDS} seeds"));
    }
    Ok(range)
}

/// Sets `key = value` in the table of every `simulated_traces` receiver of a pipeline file's
/// text, for `simulate --seed` and `--speed`. The file must have been loaded (and so checked)
/// as written first: the text returned is only as good as the one given.
pub fn set_receiver_key(text: &str, key: &str, value: toml::Value) -> Result<String, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut found = false;
    if let Some(receivers) = doc.get_mut("receivers").and_then(toml::Value::as_table_mut) {
        for (id, table) in receivers.iter_mut() {
            let Some(table) = table.as_table_mut() else {
                continue;
            };
            let kind = table.get("type").and_then(toml::Value::as_str).map_or_else(
                || id.split('/').next().unwrap_or(id).to_string(),
                str::to_string,
            );
            if kind == "simulated_traces" {
                table.insert(key.to_string(), value.clone());
                found = true;
            }
        }
    }
    if !found {
        return Err("the pipeline has no simulated_traces receiver".to_string());
    }
    toml::to_string(&doc).map_err(|e| e.to_string())
}

/// How to run one seed: the `tracescale` executable and the arguments every run shares.
pub struct SweepPlan<'a> {
    /// The executable to run (`std::env::current_exe()`).
    pub exe: &'a Path,
    /// The pipeline file.
    pub config: &'a Path,
    /// The `--compare` value: baseline names, comma-separated.
    pub compare: &'a str,
    /// The seeds.
    pub seeds: RangeInclusive<u64>,
    /// Runs at a time.
    pub jobs: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// Runs every seed, `jobs` at a time, and returns the runs in seed order.
pub fn run(plan: &SweepPlan<'_>) -> Result<Vec<SeedRun>, SweepError> {
    let seeds: Vec<u64> = plan.seeds.clone().collect();
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let results: Mutex<Vec<Result<SeedRun, SweepError>>> = Mutex::new(Vec::new());
    let jobs = plan.jobs.clamp(1, seeds.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    let result = run_one(plan, seed);
                    let failed = result.is_err();
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(result);
                    let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if plan.progress {
                        progress_bar(finished, seeds.len() as u64);
                    }
                    if failed {
                        // Stop handing out seeds; the runs under way finish.
                        next.store(seeds.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    if plan.progress {
        eprintln!();
    }
    let mut runs = Vec::with_capacity(seeds.len());
    let results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for r in results {
        runs.push(r?);
    }
    runs.sort_by_key(|r| r.seed);
    Ok(runs)
}

fn progress_bar(done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\rseeds {done:>4}/{total} [{bar}]");
    let _ = stderr.flush();
}

fn run_one(plan: &SweepPlan<'_>, seed: u64) -> Result<SeedRun, SweepError> {
    let out = Command::new(plan.exe)
        .arg("simulate")
        .arg("-c")
        .arg(plan.config)
        .args(["--compare", plan.compare, "--json", "--speed", "0"])
        .args(["--seed", &seed.to_string()])
        .output()
        .map_err(|source| SweepError::Spawn { seed, source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(SweepError::Run {
            seed,
            stderr: tail.join("\n"),
        });
    }
    parse_run(seed, &out.stdout)
}

/// Reads one run's `--json` output: `pipeline`, and each baseline under its name in
/// `baselines`.
fn parse_run(seed: u64, stdout: &[u8]) -> Result<SeedRun, SweepError> {
    let bad = |reason: String| SweepError::Output { seed, reason };
    let v: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| bad(e.to_string()))?;
    let figures = |v: &serde_json::Value| {
        serde_json::from_value::<RunFigures>(v.clone()).map_err(|e| bad(e.to_string()))
    };
    let pipeline = figures(v.get("pipeline").ok_or_else(|| bad("no pipeline".into()))?)?;
    let mut baselines = BTreeMap::new();
    if let Some(map) = v.get("baselines").and_then(serde_json::Value::as_object) {
        for (name, b) in map {
            baselines.insert(name.clone(), figures(b)?);
        }
    }
    Ok(SeedRun {
        seed,
        pipeline,
        baselines,
    })
}

/// Median, 10th and 90th percentile of one figure over the seeds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The 10th percentile.
    pub p10: f64,
    /// The 90th percentile.
    pub p90: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Self> {
        values.sort_by(f64::total_cmp);
        let at = |p: f64| crate::stats::percentile(&values, p);
        Some(Self {
            median: at(50.0)?,
            p10: at(10.0)?,
            p90: at(90.0)?,
        })
    }
}

/// One policy's figures over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySpread {
    /// SLO-violation seconds.
    pub slo_violation_seconds: Option<Spread>,
    /// Replica-seconds.
    pub replica_seconds: Option<Spread>,
    /// Fault to first correct action, over the seeds that had one.
    pub first_correct_action_seconds: Option<Spread>,
    /// Seeds with no correct action at all.
    pub seeds_without_correct_action: usize,
    /// Wrong-target actions, summed over the seeds.
    pub wrong_target_actions: u64,
}

impl PolicySpread {
    fn of<'a>(runs: impl Iterator<Item = &'a RunFigures> + Clone) -> Self {
        Self {
            slo_violation_seconds: Spread::of(
                runs.clone().map(|r| r.slo_violation_seconds).collect(),
            ),
            replica_seconds: Spread::of(runs.clone().map(|r| r.replica_seconds).collect()),
            first_correct_action_seconds: Spread::of(
                runs.clone()
                    .filter_map(|r| r.first_correct_action_seconds)
                    .collect(),
            ),
            seeds_without_correct_action: runs
                .clone()
                .filter(|r| r.first_correct_action_seconds.is_none())
                .count(),
            wrong_target_actions: runs.map(|r| u64::from(r.wrong_target_actions)).sum(),
        }
    }
}

/// The pipeline against one baseline, seed by seed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Versus {
    /// Seeds where the pipeline's SLO-violation seconds were at most the baseline's.
    pub wins: usize,
    /// Seeds compared.
    pub seeds: usize,
    /// `wins / seeds`.
    pub win_rate: f64,
    /// The seed where the pipeline did worst against the baseline (largest difference in
    /// SLO-violation seconds), with both figures.
    pub worst_seed: Option<WorstSeed>,
}

/// The seed where the pipeline did worst against a baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorstSeed {
    /// The seed.
    pub seed: u64,
    /// The pipeline's SLO-violation seconds on it.
    pub pipeline: f64,
    /// The baseline's.
    pub baseline: f64,
}

/// A sweep, summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepSummary {
    /// The scenario's file.
    pub config: PathBuf,
    /// The seeds run.
    pub seeds: Vec<u64>,
    /// The pipeline's figures.
    pub pipeline: PolicySpread,
    /// Each baseline's figures.
    pub baselines: BTreeMap<String, PolicySpread>,
    /// The pipeline against each baseline.
    pub versus: BTreeMap<String, Versus>,
}

impl SweepSummary {
    /// Summarises runs (of one scenario).
    pub fn new(config: &Path, runs: &[SeedRun]) -> Self {
        let mut names: Vec<&String> = runs.iter().flat_map(|r| r.baselines.keys()).collect();
        names.sort();
        names.dedup();
        let mut baselines = BTreeMap::new();
        let mut versus = BTreeMap::new();
        for name in names {
            let pairs: Vec<(u64, &RunFigures, &RunFigures)> = runs
                .iter()
                .filter_map(|r| r.baselines.get(name).map(|b| (r.seed, &r.pipeline, b)))
                .collect();
            baselines.insert(
                name.clone(),
                PolicySpread::of(pairs.iter().map(|(_, _, b)| *b)),
            );
            let wins = pairs
                .iter()
                .filter(|(_, p, b)| p.slo_violation_seconds <= b.slo_violation_seconds)
                .count();
            let worst_seed = pairs
                .iter()
                .max_by(|x, y| {
                    let d = |(_, p, b): &&(u64, &RunFigures, &RunFigures)| {
                        p.slo_violation_seconds - b.slo_violation_seconds
                    };
                    d(x).total_cmp(&d(y)).then(y.0.cmp(&x.0))
                })
                .map(|(seed, p, b)| WorstSeed {
                    seed: *seed,
                    pipeline: p.slo_violation_seconds,
                    baseline: b.slo_violation_seconds,
                });
            versus.insert(
                name.clone(),
                Versus {
                    wins,
                    seeds: pairs.len(),
                    win_rate: if pairs.is_empty() {
                        0.0
                    } else {
                        wins as f64 / pairs.len() as f64
                    },
                    worst_seed,
                },
            );
        }
        Self {
            config: config.to_path_buf(),
            seeds: runs.iter().map(|r| r.seed).collect(),
            pipeline: PolicySpread::of(runs.iter().map(|r| &r.pipeline)),
            baselines,
            versus,
        }
    }

    /// The summary as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let (first, last) = (
            self.seeds.first().copied().unwrap_or(0),
            self.seeds.last().copied().unwrap_or(0),
        );
        let _ = writeln!(
            out,
            "{}: seeds {first}..{last} ({} runs), median (p10–p90)",
            self.config.display(),
            self.seeds.len()
        );
        let mut header = format!("{:<34}{:>24}", "", "trace-driven");
        for name in self.baselines.keys() {
            let _ = write!(header, "{name:>24}");
        }
        let _ = writeln!(out, "{header}");
        let policies: Vec<&PolicySpread> = std::iter::once(&self.pipeline)
            .chain(self.baselines.values())
            .collect();
        let row = |out: &mut String, label: &str, get: &dyn Fn(&PolicySpread) -> Option<Spread>| {
            let mut line = format!("{label:<34}");
            for p in &policies {
                let cell = get(p).map_or_else(
                    || "-".to_string(),
                    |s| format!("{:.0} ({:.0}–{:.0})", s.median, s.p10, s.p90),
                );
                let _ = write!(line, "{cell:>24}");
            }
            let _ = writeln!(out, "{line}");
        };
        row(&mut out, "SLO-violation seconds", &|p| {
            p.slo_violation_seconds
        });
        row(&mut out, "replica-seconds", &|p| p.replica_seconds);
        row(&mut out, "fault → first correct action (s)", &|p| {
            p.first_correct_action_seconds
        });
        let mut line = format!("{:<34}", "actions on a wrong target (total)");
        for p in &policies {
            let _ = write!(line, "{:>24}", p.wrong_target_actions);
        }
        let _ = writeln!(out, "{line}");
        for (name, v) in &self.versus {
            let _ = write!(
                out,
                "trace-driven ≤ {name} on SLO-violation seconds in {} of {} seeds ({:.0} %)",
                v.wins,
                v.seeds,
                v.win_rate * 100.0
            );
            if let Some(w) = &v.worst_seed {
                let _ = write!(
                    out,
                    "; worst seed {}: {:.0} s against {:.0} s",
                    w.seed, w.pipeline, w.baseline
                );
            }
            let _ = writeln!(out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(slo: f64) -> RunFigures {
        RunFigures {
            slo_violation_seconds: slo,
            replica_seconds: 100.0,
            first_correct_action_seconds: (slo > 0.0).then_some(2.0),
            wrong_target_actions: 0,
            actions: 1,
        }
    }

    #[test]
    fn seeds_parse_as_inclusive_ranges() {
        assert_eq!(parse_seeds("1..20"), Ok(1..=20));
        assert_eq!(parse_seeds("1..=3"), Ok(1..=3));
        assert_eq!(parse_seeds("7"), Ok(7..=7));
        assert!(parse_seeds("5..1").is_err());
        assert!(parse_seeds("a..3").unwrap_err().contains("whole number"));
        assert!(parse_seeds("0..20000").is_err());
    }

    #[test]
    fn receiver_keys_are_set_in_every_simulated_traces_table() {
        let text = "[receivers.simulated_traces]\nscenario = \"mixed\"\n\n[receivers.\"sim/b\"]\ntype = \"simulated_traces\"\nscenario = \"mixed\"\n[receivers.otlp]\n";
        let out = set_receiver_key(text, "seed", toml::Value::Integer(9)).unwrap();
        let doc: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(
            doc["receivers"]["simulated_traces"]["seed"].as_integer(),
            Some(9)
        );
        assert_eq!(doc["receivers"]["sim/b"]["seed"].as_integer(), Some(9));
        assert!(doc["receivers"]["otlp"].get("seed").is_none());
        assert!(set_receiver_key("[receivers.otlp]\n", "seed", 1.into()).is_err());
    }

    #[test]
    fn summary_counts_wins_and_finds_the_worst_seed() {
        let runs: Vec<SeedRun> = [(1, 10.0, 30.0), (2, 50.0, 40.0), (3, 20.0, 20.0)]
            .into_iter()
            .map(|(seed, p, b)| SeedRun {
                seed,
                pipeline: figures(p),
                baselines: BTreeMap::from([("cpu-hpa".to_string(), figures(b))]),
            })
            .collect();
        let s = SweepSummary::new(Path::new("x.toml"), &runs);
        let v = &s.versus["cpu-hpa"];
        assert_eq!((v.wins, v.seeds), (2, 3), "a tie counts as a win");
        assert_eq!(
            v.worst_seed,
            Some(WorstSeed {
                seed: 2,
                pipeline: 50.0,
                baseline: 40.0
            })
        );
        let slo = s.pipeline.slo_violation_seconds.unwrap();
        assert_eq!((slo.median, slo.p10, slo.p90), (20.0, 10.0, 50.0));
        let table = s.table();
        assert!(table.contains("in 2 of 3 seeds (67 %)"), "{table}");
        assert!(table.contains("worst seed 2: 50 s against 40 s"), "{table}");
    }

    #[test]
    fn a_run_is_read_from_its_json() {
        let json = br#"{"baselines":{"cpu-hpa":{"actions":8,"first_correct_action_seconds":15.0,"replica_seconds":7050.0,"slo_violation_seconds":115.0,"wrong_target_actions":1},"rps":{"actions":5,"first_correct_action_seconds":30.0,"replica_seconds":6900.0,"slo_violation_seconds":140.0,"wrong_target_actions":0}},"pipeline":{"actions":10,"first_correct_action_seconds":1.0,"replica_seconds":7466.0,"slo_violation_seconds":84.0,"wrong_target_actions":0},"scenario":"mixed","seed":3}"#;
        let run = parse_run(3, json).unwrap();
        assert_eq!(run.pipeline.slo_violation_seconds, 84.0);
        assert_eq!(run.baselines["cpu-hpa"].wrong_target_actions, 1);
        assert_eq!(run.baselines["rps"].slo_violation_seconds, 140.0);
        assert!(matches!(
            parse_run(3, b"not json"),
            Err(SweepError::Output { seed: 3, .. })
        ));
    }
}
