//! The `tracescale` command: arguments, logging, load → build → run, exit codes.

mod evaluate;
mod logging;
mod replay;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracescale_core::config::{self, Config, ConfigError, HumanDuration};
use tracescale_core::error::error_chain;
use tracescale_core::registry;
use tracescale_core::service::{self, RunError};

// The components crate is mentioned on purpose: a crate nothing mentions is not linked, and its
// `inventory` registrations would vanish without a sound.
use tracescale_components::simulation::report::Baseline;
use tracescale_components::{eval, simulation};

// Spans are decoded on the listener's thread and freed on the exporter's: glibc's allocator
// pays for every such cross-thread free, mimalloc does not (see docs/adr/0003-allocator.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The pipeline `tracescale demo` runs: the database scenario, against the CPU baseline.
const DEMO: &str = include_str!("../configs/scenario-db-bottleneck.toml");

/// A trace-driven autoscaler: an OpenTelemetry-Collector-style pipeline engine.
#[derive(Parser)]
#[command(name = "tracescale", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a pipeline file until SIGINT or SIGTERM (a second signal exits at once); SIGHUP
    /// reloads the file.
    Run {
        /// The pipeline file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Checks pipeline files without starting anything; exit status 2 if any is invalid.
    Validate {
        /// The files to check.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Treat warnings as errors (exit status 2), for CI.
        #[arg(long)]
        strict: bool,
    },
    /// Lists every registered component with its kind, signals and config keys.
    Components {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Runs the built-in demo: a simulated shop whose database saturates, scaled from its traces
    /// and, for comparison, by CPU; no cluster or client needed.
    Demo,
    /// Runs a simulated scenario through its pipeline and reports how well it scaled.
    Simulate {
        /// The pipeline file (with a `simulated_traces` receiver).
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Also run baseline scalers on the same scenario and seed, comma-separated:
        /// `cpu-hpa` (the Kubernetes HPA on CPU utilisation), `rps` (a KEDA-style trigger on
        /// requests per second per replica, threshold 0.7 of a replica's capacity) and `oracle`
        /// (each fault's right target at its maximum from the fault's first instant: a bound).
        #[arg(long, value_name = "BASELINE[,BASELINE]", value_parser = simulation::report::Baselines::parse)]
        compare: Option<simulation::report::Baselines>,
        /// Print one JSON object instead of a table and the live view.
        #[arg(long)]
        json: bool,
        /// Write an SVG chart: a panel per policy with the p99 latency and the replicas of each
        /// service over time, the faults labelled.
        #[arg(long, value_name = "FILE.svg", conflicts_with = "seeds")]
        plot: Option<PathBuf>,
        /// Run this seed instead of the file's.
        #[arg(long, value_name = "N", conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Run at this speed (simulated seconds per second; 0: flat out) instead of the
        /// file's. The figures are the same at any speed.
        #[arg(long, value_name = "X")]
        speed: Option<f64>,
        /// Run every seed of FIRST..LAST, each in its own process on all cores, and report
        /// median, p10 and p90 per policy, the win rate and the worst seed.
        #[arg(long, value_name = "FIRST..LAST", value_parser = simulation::sweep::parse_seeds)]
        seeds: Option<std::ops::RangeInclusive<u64>>,
        /// Runs at a time in a sweep; default: the number of cores.
        #[arg(long, value_name = "N", requires = "seeds")]
        jobs: Option<usize>,
    },
    /// Replays a labeled span CSV through an `hstree` processor and reports detection quality.
    Eval {
        /// The pipeline file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The id of the `hstree` processor in it.
        #[arg(long, value_name = "ID")]
        processor: String,
        /// The labeled span CSV (`.gz` read transparently).
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Replay only the first N rows.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Learn the first DURATION of span time as a warm start from a fault-free stretch:
        /// its spans outside every fault's window are learned, none is judged or scored.
        #[arg(long, value_name = "DURATION")]
        warm_start: Option<HumanDuration>,
    },
    /// Replays a labeled span CSV through the `slo_scaler` processor's culprit ranking and
    /// reports how often the culprit it names during each injected fault is the injected service.
    Attribute {
        /// The labeled span CSV (`.gz` read transparently); the `pod` column, when present,
        /// stands for `k8s.pod.name`.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// The faults CSV: one injected fault per line (fault_id, start_unix_nano,
        /// end_unix_nano, service, fault_type, optionally latency_fault).
        #[arg(long, value_name = "FILE")]
        faults: PathBuf,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// The percentile every objective (one per entry operation) holds for.
        #[arg(long, value_name = "P", default_value_t = 99.0)]
        percentile: f64,
        /// Each objective's target as a multiple of its learned fault-free percentile: the
        /// median over fault-free minutes of the minute's percentile.
        #[arg(long, value_name = "X", default_value_t = 1.0)]
        target_factor: f64,
        /// One target for every objective (e.g. `800ms`) instead of the learned one.
        #[arg(long, value_name = "DURATION", conflicts_with = "target_factor")]
        target: Option<HumanDuration>,
        /// Objectives on the entry operations only, not also on the operations the entry
        /// services call (each callee's SERVER span).
        #[arg(long)]
        entry_only: bool,
    },
    /// Backtests a pipeline file on a recording (OTLP/JSON lines as the `file` exporter writes
    /// them, plain, `.gz` or `.zst`; `.pb` for length-delimited protobuf): runs it on span time
    /// with its decision exporters replaced by a recorder and its trace exporters by `null`, and
    /// prints what it would have scaled, when and why. Same recording, same output.
    Replay {
        /// The pipeline file.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The recording.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Print one JSON object instead of the timeline.
        #[arg(long)]
        json: bool,
        /// A workload's replica count at the start of the recording, to print `2 → 3` rather
        /// than `+1`; repeatable.
        #[arg(long, value_name = "NAMESPACE/KIND/NAME=N")]
        replicas: Vec<String>,
    },
    /// Writes a seeded synthetic labeled span CSV (a small shop under injected faults).
    Synth {
        /// The CSV to write (gzip when the name ends in `.gz`).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Seed of every random draw: the same seed writes the same file.
        #[arg(long, value_name = "N", default_value_t = 1)]
        seed: u64,
        /// Number of traces.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        traces: u64,
        /// Inject no faults: every label is 0.
        #[arg(long)]
        no_faults: bool,
    },
}

/// Exit statuses, as documented in the README.
mod exit {
    pub(crate) const RUNTIME: u8 = 1;
    pub(crate) const CONFIG: u8 = 2;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => match config::load_file(&config) {
            Ok(loaded) => run(loaded),
            Err(err) => config_failed(&err),
        },
        Command::Demo => match config::load_str(Path::new("<demo>"), DEMO) {
            Ok(loaded) => simulate(loaded, &[Baseline::CpuHpa], false, None),
            Err(err) => config_failed(&err),
        },
        Command::Simulate {
            config,
            compare,
            json,
            plot,
            seed,
            speed,
            seeds,
            jobs,
        } => match config::load_file(&config) {
            Err(err) => config_failed(&err),
            Ok(_) if seeds.is_some() => {
                let seeds = seeds.unwrap_or(1..=1);
                let compare = compare.map(|c| c.to_string());
                sweep(&config, compare.as_deref(), seeds, jobs, json)
            }
            Ok(loaded) if seed.is_none() && speed.is_none() => {
                let compare = compare.map(|c| c.0).unwrap_or_default();
                simulate(loaded, &compare, json, plot.as_deref())
            }
            Ok(_) => match load_with(&config, seed, speed) {
                Ok(loaded) => {
                    let compare = compare.map(|c| c.0).unwrap_or_default();
                    simulate(loaded, &compare, json, plot.as_deref())
                }
                Err(code) => code,
            },
        },
        Command::Validate { files, strict } => validate(&files, strict),
        Command::Components { json } => components(json),
        Command::Eval {
            config,
            processor,
            input,
            json,
            limit,
            warm_start,
        } => match config::load_file(&config) {
            Ok(_) => evaluate::evaluate(&config, &processor, &input, json, limit, warm_start),
            Err(err) => config_failed(&err),
        },
        Command::Attribute {
            input,
            faults,
            json,
            percentile,
            target_factor,
            target,
            entry_only,
        } => {
            let options = eval::attribution::ObjectiveOptions {
                percentile,
                target_factor,
                target_ns: target.map(|t| u64::try_from(t.get().as_nanos()).unwrap_or(u64::MAX)),
                calls: !entry_only,
            };
            evaluate::attribute(&input, &faults, &options, json)
        }
        Command::Synth {
            output,
            seed,
            traces,
            no_faults,
        } => evaluate::synth(&output, seed, traces, !no_faults),
        Command::Replay {
            config,
            input,
            json,
            replicas,
        } => backtest(&config, &input, json, &replicas),
    }
}

/// `tracescale replay`: validates the file as written, then runs its rewritten form.
fn backtest(path: &Path, input: &Path, json: bool, replicas: &[String]) -> ExitCode {
    let start = match replay::parse_replicas(replicas) {
        Ok(start) => start,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    if let Err(err) = config::load_file(path) {
        return config_failed(&err);
    }
    if !input.is_file() {
        eprintln!("error: cannot read the recording {}", input.display());
        return ExitCode::from(exit::CONFIG);
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", path.display());
            return ExitCode::from(exit::CONFIG);
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("error: cannot make a temporary directory: {err}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    let recorded = dir.path().join("decisions.jsonl");
    let rewritten = match replay::rewrite(&text, input, &recorded) {
        Ok(rewritten) => rewritten,
        Err(err) => {
            eprintln!("error: {}: {err}", path.display());
            return ExitCode::from(exit::CONFIG);
        }
    };
    let loaded = match config::load_str(path, &rewritten) {
        Ok(loaded) => loaded,
        Err(err) => return config_failed(&err),
    };
    logging::init(loaded.service.log_level, loaded.service.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    if let Err(err) = runtime.block_on(service::run(loaded, service::os_signal())) {
        eprintln!("error: {}", error_chain(&err));
        return ExitCode::from(exit::RUNTIME);
    }
    let decisions = match replay::recorded(&recorded) {
        Ok(decisions) => decisions,
        Err(err) => {
            eprintln!("error: cannot read the recorded decisions: {err}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    let steps = replay::timeline(decisions, &start);
    if json {
        print!("{}", replay::render_json(&steps));
    } else {
        print!("{}", replay::render_text(&steps));
    }
    ExitCode::SUCCESS
}

use logging::color;

fn config_failed(err: &ConfigError) -> ExitCode {
    eprint!("{}", err.render(color()));
    eprintln!("{err}");
    ExitCode::from(exit::CONFIG)
}

/// What `run` and `simulate` do before starting the engine: print the loader's warnings, start
/// logging at the file's level, build the runtime. None (logged) when the runtime cannot start.
fn prepare(config: &Config) -> Option<tokio::runtime::Runtime> {
    if !config.warnings.is_empty() {
        eprint!("{}", config.warnings);
    }
    logging::init(config.service.log_level, config.service.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| tracing::error!(error = %err, "cannot start the async runtime"))
        .ok()
}

fn run(config: Config) -> ExitCode {
    let Some(runtime) = prepare(&config) else {
        return ExitCode::from(exit::RUNTIME);
    };
    // SIGHUP reloads the file, as it does the OpenTelemetry Collector's; installed inside the
    // runtime, before anything else can take a while.
    let ran = runtime.block_on(async {
        let reloads = service::Reloads::sighup();
        service::run_reloading(config, service::os_signal(), reloads).await
    });
    match ran {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "tracescale stopped with an error");
            match err {
                RunError::Telemetry(_)
                | RunError::Start(_)
                | RunError::Incomplete
                | RunError::Failed { .. } => ExitCode::from(exit::RUNTIME),
            }
        }
    }
}

fn simulate(config: Config, compare: &[Baseline], json: bool, plot: Option<&Path>) -> ExitCode {
    let Some(runtime) = prepare(&config) else {
        return ExitCode::from(exit::RUNTIME);
    };
    let stop_view = tokio_util::sync::CancellationToken::new();
    let view = (!json).then(|| runtime.spawn(simulation::live::live_view(stop_view.clone())));
    let ran = runtime.block_on(service::run(config, service::os_signal()));
    stop_view.cancel();
    if let Some(view) = view {
        let _ = runtime.block_on(view);
    }
    if let Err(err) = ran {
        tracing::error!(error = %error_chain(&err), "tracescale stopped with an error");
        return ExitCode::from(exit::RUNTIME);
    }
    let rendered = simulation::live::outcome()
        .and_then(|outcome| simulation::live::render(&outcome, compare, json));
    match rendered {
        Ok(r) => {
            if !json {
                println!();
            }
            print!("{}", r.text);
            if let Some(path) = plot {
                if let Err(err) = std::fs::write(path, r.svg) {
                    eprintln!("error: cannot write {}: {err}", path.display());
                    return ExitCode::from(exit::RUNTIME);
                }
                if !json {
                    println!("chart written to {}", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(exit::RUNTIME)
        }
    }
}

/// The pipeline file with the simulation's seed and speed replaced, loaded.
fn load_with(path: &Path, seed: Option<u64>, speed: Option<f64>) -> Result<Config, ExitCode> {
    let usage = |msg: String| {
        eprintln!("error: {}: {msg}", path.display());
        ExitCode::from(exit::CONFIG)
    };
    let mut text = std::fs::read_to_string(path).map_err(|e| usage(e.to_string()))?;
    let set = simulation::sweep::set_receiver_key;
    if let Some(seed) = seed {
        let seed = i64::try_from(seed).map_err(|_| usage(format!("seed {seed} is too large")))?;
        text = set(&text, "seed", toml::Value::Integer(seed)).map_err(usage)?;
    }
    if let Some(speed) = speed {
        text = set(&text, "speed", toml::Value::Float(speed)).map_err(usage)?;
    }
    config::load_str(path, &text).map_err(|err| config_failed(&err))
}

/// `simulate --seeds`: every seed in its own process, then the summary.
fn sweep(
    config: &Path,
    compare: Option<&str>,
    seeds: std::ops::RangeInclusive<u64>,
    jobs: Option<usize>,
    json: bool,
) -> ExitCode {
    let Some(compare) = compare else {
        eprintln!("error: --seeds compares policies: give --compare too");
        return ExitCode::from(exit::CONFIG);
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("error: cannot find this executable to run the seeds: {err}");
            return ExitCode::from(exit::RUNTIME);
        }
    };
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let plan = simulation::sweep::SweepPlan {
        exe: &exe,
        config,
        compare,
        seeds,
        jobs,
        progress: std::io::stderr().is_terminal(),
    };
    match simulation::sweep::run(&plan) {
        Ok(runs) => {
            let summary = simulation::sweep::SweepSummary::new(config, &runs);
            if json {
                match serde_json::to_string(&summary) {
                    Ok(text) => println!("{text}"),
                    Err(err) => {
                        eprintln!("error: {err}");
                        return ExitCode::from(exit::RUNTIME);
                    }
                }
            } else {
                print!("{}", summary.table());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::from(exit::RUNTIME)
        }
    }
}

fn validate(files: &[PathBuf], strict: bool) -> ExitCode {
    let mut ok = true;
    for file in files {
        match config::load_file(file) {
            Ok(loaded) => {
                eprint!("{}", loaded.warnings);
                let warnings = loaded.warning_count;
                if warnings == 0 {
                    println!("{}: valid", file.display());
                } else if strict {
                    ok = false;
                    println!(
                        "{}: invalid under --strict: {}",
                        file.display(),
                        tracescale_core::words::count(warnings as u64, "warning")
                    );
                } else {
                    println!(
                        "{}: valid, {}",
                        file.display(),
                        tracescale_core::words::count(warnings as u64, "warning")
                    );
                }
            }
            Err(err) => {
                ok = false;
                eprint!("{}", err.render(color()));
                let mut summary = tracescale_core::words::count(err.error_count() as u64, "error");
                if err.warning_count() > 0 {
                    summary.push_str(&format!(
                        ", {}",
                        tracescale_core::words::count(err.warning_count() as u64, "warning")
                    ));
                }
                println!("{}: invalid: {summary}", file.display());
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::CONFIG)
    }
}

fn components(json: bool) -> ExitCode {
    let all = registry::all();
    if json {
        let list: Vec<_> = all
            .iter()
            .map(|f| {
                serde_json::json!({
                    "type": f.type_name,
                    "kind": f.kind(),
                    "takes": f.takes,
                    "emits": f.emits,
                    "description": f.description,
                    "config_keys": (f.config_keys)(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return ExitCode::SUCCESS;
    }
    let names = |s: &[tracescale_core::signal::SignalKind]| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
        }
    };
    println!(
        "{:<10} {:<14} {:<18} {:<18} DESCRIPTION",
        "KIND", "TYPE", "TAKES", "EMITS"
    );
    for f in &all {
        println!(
            "{:<10} {:<14} {:<18} {:<18} {}",
            f.kind().as_str(),
            f.type_name,
            names(f.takes),
            names(f.emits),
            f.description
        );
        let keys = (f.config_keys)();
        if !keys.is_empty() {
            println!("{:<10} {:<14} keys: {}", "", "", keys.join(", "));
        }
    }
    ExitCode::SUCCESS
}
