//! The `simulated_traces` receiver: runs a seeded discrete-event simulation of a microservice
//! shop and emits its traces as OTLP, reading back the replicas the `simulated_cluster` exporter
//! sets, so that scaling changes latency and the loop closes. See README.md.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracescale_core::component::{BuildContext, ComponentError, Receiver, ReceiverContext};
use tracescale_core::config::{BuildError, HumanDuration, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};
use tracing::{info, warn};

pub use crate::simulation::shop::TrafficConfig;
use crate::simulation::shop::{ShopFile, ns, parse_shop};
use crate::simulation::{
    Action, MAX_ROWS, NANOS_PER_SEC, OtlpBuilder, SCENARIOS, Scenario, ServiceView, Sim, SpanShape,
    cluster, presets,
};

/// Config of the `simulated_traces` receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedTracesConfig {
    /// A built-in scenario: `worker-cap`, `db-bottleneck` or `mixed` (the shop files shipped in
    /// `configs/shops/`, built into the binary). Give this or `shop`.
    #[serde(default)]
    pub scenario: Option<String>,
    /// A shop file (see README.md), relative to the pipeline file's directory. Give this or
    /// `scenario`.
    #[serde(default)]
    pub shop: Option<String>,
    /// A shop written inline, in the shop file format (see README.md). Give this, `shop` or
    /// `scenario`.
    #[serde(default)]
    pub topology: Option<ShopFile>,
    /// Seed of every random draw; default: the scenario's own.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Simulated seconds per wall-clock second; 0 runs as fast as the pipeline takes the
    /// spans.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Simulated time per batch; replica changes apply between batches.
    #[serde(default = "default_step")]
    pub step: HumanDuration,
    /// Simulated length of the run; default: the scenario's.
    #[serde(default)]
    pub duration: Option<HumanDuration>,
    /// The end-to-end p99 objective the report judges by; default: the scenario's (500ms).
    #[serde(default)]
    pub slo: Option<HumanDuration>,
    /// The traffic, instead of the scenario's.
    #[serde(default)]
    pub traffic: Option<TrafficConfig>,
    /// The name a `simulated_cluster` exporter uses to find this simulation.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// The namespace of the simulated workloads (`k8s.namespace.name`; decisions must name it).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// A CLIENT span on the caller around each call, parent of the callee's SERVER span.
    #[serde(default = "default_true")]
    pub client_spans: bool,
    /// An INTERNAL `queue` span over each visit's wait for a slot; without it (and with
    /// `client_spans`), a called visit's wait is the gap between the CLIENT and SERVER spans.
    #[serde(default = "default_true")]
    pub queue_spans: bool,
}

fn default_true() -> bool {
    true
}

fn default_speed() -> f64 {
    60.0
}
fn default_step() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_cluster() -> String {
    "default".to_string()
}
fn default_namespace() -> String {
    "shop".to_string()
}

impl SimulatedTracesConfig {
    /// The scenario this config runs, with its overrides applied: a built-in one by name, the
    /// shop file (resolved against `dir`) or the inline topology. The errors are (key of this
    /// table, message); a shop file's messages read `FILE:LINE:COL: KEY.PATH: what is wrong`.
    pub fn scenario(&self, dir: Option<&Path>) -> Result<Scenario, Vec<(String, String)>> {
        let given = [
            self.scenario.is_some(),
            self.shop.is_some(),
            self.topology.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(vec![(
                if given[0] { "scenario" } else { "" }.to_string(),
                "give one of `scenario` (a built-in one), `shop` (a shop file) or `topology` \
                 (an inline shop)"
                    .to_string(),
            )]);
        }
        let in_key = |key: &str, errors: Vec<String>| {
            errors
                .into_iter()
                .map(|e| (key.to_string(), e))
                .collect::<Vec<_>>()
        };
        let mut s = if let Some(name) = &self.scenario {
            match presets::builtin(name) {
                Some(loaded) => loaded.map_err(|e| in_key("scenario", e))?,
                None => {
                    return Err(vec![(
                        "scenario".to_string(),
                        format!(
                            "unknown scenario {name:?} (scenarios: {})",
                            SCENARIOS.join(", ")
                        ),
                    )]);
                }
            }
        } else if let Some(file) = &self.shop {
            let path = dir.unwrap_or(Path::new("")).join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                in_key("shop", vec![format!("cannot read {}: {e}", path.display())])
            })?;
            parse_shop(&path.display().to_string(), &text).map_err(|e| in_key("shop", e))?
        } else if let Some(topology) = &self.topology {
            topology.clone().scenario().map_err(|problems| {
                problems
                    .into_iter()
                    .map(|(path, msg)| (format!("topology.{path}"), msg))
                    .collect::<Vec<_>>()
            })?
        } else {
            unreachable!("exactly one source is given")
        };
        if let Some(seed) = self.seed {
            s.sim.seed = seed;
        }
        if let Some(d) = self.duration {
            s.duration_ns = ns(d);
        }
        if let Some(slo) = self.slo {
            s.slo_latency_ns = ns(slo);
        }
        if let Some(t) = &self.traffic {
            s.sim.traffic = t.pattern();
        }
        Ok(s)
    }
}

/// Most spans one step may emit before the receiver splits the batch.
const MAX_BATCH_SPANS: usize = 8192;

/// Runs the simulation and emits its spans.
pub struct SimulatedTraces {
    config: SimulatedTracesConfig,
    scenario: Scenario,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

#[async_trait]
impl Receiver for SimulatedTraces {
    async fn start(&mut self, ctx: ReceiverContext) -> Result<(), ComponentError> {
        let mut sim = Sim::new(&self.scenario.sim).map_err(ComponentError::other)?;
        let handle = cluster(&self.config.cluster);
        // On a whole second: processors that bucket spans by the second then cut the run at
        // the same simulated instants whenever it starts, and a seed gives the same figures.
        let now = tracescale_core::signal::now_unix_nano();
        let epoch = now - now % NANOS_PER_SEC;
        {
            let mut state = handle.lock();
            *state = Default::default();
            state.scenario = Some(self.scenario.clone());
            state.namespace = self.config.namespace.clone();
            state.epoch_unix_nano = epoch;
            publish(&sim, &mut state.services);
        }
        let step = ns(self.config.step);
        let speed = self.config.speed;
        let duration = self.scenario.duration_ns;
        let namespace = self.config.namespace.clone();
        let shape = SpanShape {
            client_spans: self.config.client_spans,
            queue_spans: self.config.queue_spans,
        };
        let stop = self.stop.clone();
        let ReceiverContext {
            output,
            telemetry,
            id,
            ..
        } = ctx;
        info!(component = %id, scenario = %self.scenario.name, seed = self.scenario.sim.seed,
            simulated_seconds = duration / NANOS_PER_SEC, speed, "simulation started");
        self.task = Some(tokio::spawn(async move {
            let wall_start = Instant::now();
            let kinds = sim
                .service_names()
                .iter()
                .filter_map(|n| sim.kind(n).map(|k| (n.clone(), k)))
                .collect::<Vec<_>>();
            let mut builder = OtlpBuilder::with_shape(&namespace, epoch, shape).with_kinds(kinds);
            let mut t = 0u64;
            'run: while t < duration {
                // Replica changes the exporter asked for since the last step.
                let requests = std::mem::take(&mut handle.lock().requests);
                for (service, n, rule, reason) in requests {
                    match sim.scale(&service, n) {
                        Ok(Some(action)) => handle.lock().actions.push(Action {
                            action,
                            rule,
                            reason,
                        }),
                        Ok(None) => {}
                        Err(e) => warn!(component = %id, %service, error = %e,
                            "cannot scale the simulated service"),
                    }
                }
                t = t.saturating_add(step).min(duration);
                let mut batches = Vec::new();
                let mut in_batch = 0usize;
                let rows = sim.advance_to(t, &mut |span| {
                    builder.push(span);
                    in_batch += 1;
                    if in_batch >= MAX_BATCH_SPANS {
                        batches.push(builder.take());
                        in_batch = 0;
                    }
                });
                if !builder.is_empty() {
                    batches.push(builder.take());
                }
                {
                    let mut state = handle.lock();
                    state.now = sim.now();
                    state.spans = sim.spans_emitted();
                    publish(&sim, &mut state.services);
                    state.rows.extend(rows);
                    let excess = state.rows.len().saturating_sub(MAX_ROWS);
                    state.rows.drain(..excess);
                }
                for traces in batches {
                    let items = traces.span_count();
                    telemetry.received(SignalKind::Traces, items);
                    tokio::select! {
                        () = stop.cancelled() => {
                            telemetry.dropped(SignalKind::Traces, "shutdown", items);
                            break 'run;
                        }
                        result = output.send(Signal::Traces(traces)) => if result.is_err() {
                            telemetry.dropped(SignalKind::Traces, "pipeline_closed", items);
                            break 'run;
                        }
                    }
                }
                // Lockstep: the next step starts only once every span of this one has passed
                // the pipeline and every decision it caused has reached the cluster, so the
                // run's figures do not depend on how fast the machine is.
                tokio::select! {
                    () = stop.cancelled() => break 'run,
                    settled = output.settle() => if settled.is_err() {
                        break 'run;
                    }
                }
                if speed > 0.0 {
                    let due = wall_start + Duration::from_secs_f64(t as f64 / 1e9 / speed);
                    tokio::select! {
                        () = stop.cancelled() => break 'run,
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
            }
            let finished = t >= duration;
            handle.lock().finished = finished;
            info!(component = %id, finished, simulated_seconds = t / NANOS_PER_SEC,
                "simulation stopped");
            // Dropping `output` lets the pipeline drain and the engine stop by itself.
            drop(output);
        }));
        Ok(())
    }

    async fn shutdown(&mut self, deadline: Instant) -> Result<(), ComponentError> {
        self.stop.cancel();
        if let Some(task) = self.task.take()
            && tokio::time::timeout_at(deadline, task).await.is_err()
        {
            return Err(ComponentError::Deadline("simulated_traces"));
        }
        Ok(())
    }
}

fn publish(sim: &Sim, services: &mut std::collections::BTreeMap<String, ServiceView>) {
    for name in sim.service_names() {
        if let (Some(desired), Some(ready), Some(kind), Some(bounds)) = (
            sim.replicas(name),
            sim.ready_replicas(name),
            sim.kind(name),
            sim.replica_bounds(name),
        ) {
            services.insert(
                name.clone(),
                ServiceView {
                    desired,
                    ready,
                    kind,
                    bounds,
                },
            );
        }
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Receiver>, BuildError> {
    let config: SimulatedTracesConfig = ctx.parse()?;
    let mut errors = Vec::new();
    let key = if config.shop.is_some() {
        "shop"
    } else if config.topology.is_some() {
        "topology"
    } else {
        "scenario"
    };
    let scenario = match config.scenario(ctx.dir()) {
        Ok(s) => s,
        Err(problems) => {
            return Err(BuildContext::errors(
                problems.into_iter().map(|(k, p)| ctx.invalid(&k, p)),
            ));
        }
    };
    if !(config.speed >= 0.0 && config.speed.is_finite()) {
        errors.push(ctx.invalid(
            "speed",
            "must be a finite number ≥ 0 (0: as fast as possible)",
        ));
    }
    if config.step.get() < Duration::from_millis(10) || config.step.get() > Duration::from_secs(60)
    {
        errors.push(ctx.invalid("step", "must be between 10ms and 60s"));
    }
    if config.duration.is_some_and(|d| d.get().is_zero()) {
        errors.push(ctx.invalid("duration", "must be longer than 0s"));
    }
    if config.slo.is_some_and(|d| d.get().is_zero()) {
        errors.push(ctx.invalid("slo", "must be longer than 0s"));
    }
    if let Some(t) = &config.traffic {
        for (k, msg) in t.problems() {
            errors.push(ctx.invalid(&format!("traffic.{k}"), msg));
        }
    }
    if config.cluster.trim().is_empty() {
        errors.push(ctx.invalid("cluster", "must not be empty"));
    }
    if config.namespace.trim().is_empty() {
        errors.push(ctx.invalid("namespace", "must not be empty"));
    }
    if let Err(e) = Sim::new(&scenario.sim) {
        errors.push(ctx.invalid(key, e));
    }
    if !errors.is_empty() {
        return Err(BuildContext::errors(errors));
    }
    Ok(Box::new(SimulatedTraces {
        config,
        scenario,
        stop: CancellationToken::new(),
        task: None,
    }))
}

inventory::submit! {
    ComponentFactory {
        type_name: "simulated_traces",
        description: "simulates a microservice shop (queues, replicas, a shared database) and emits its traces",
        takes: &[],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<SimulatedTracesConfig>,
        build: Build::Receiver(build),
    }
}
