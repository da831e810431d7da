//! The `demo_traces` receiver: synthetic traces of a three-service shop, for demos, smoke tests
//! and benchmarks, with no client to set up.

mod generator;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracescale_core::component::{BuildContext, ComponentError, Receiver, ReceiverContext};
use tracescale_core::config::{BuildError, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};

pub use generator::Generator;

/// Config of the `demo_traces` receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoTracesConfig {
    /// Batches generated per second; 0 generates as fast as the pipeline takes them.
    pub batches_per_second: f64,
    /// Traces per batch; each trace has three spans.
    pub traces_per_batch: usize,
    /// Stop after this many batches; 0 runs until the engine stops.
    pub count: u64,
    /// Share of traces whose database call is slow, in [0, 1].
    pub slow_share: f64,
    /// Seed of the random generator: the same seed gives the same spans (ids and durations).
    pub seed: u64,
}

impl Default for DemoTracesConfig {
    fn default() -> Self {
        Self {
            batches_per_second: 10.0,
            traces_per_batch: 10,
            count: 0,
            slow_share: 0.05,
            seed: 1,
        }
    }
}

/// Generates batches on a timer and sends them, waiting when the pipeline is full.
pub struct DemoTraces {
    config: DemoTracesConfig,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

#[async_trait]
impl Receiver for DemoTraces {
    async fn start(&mut self, ctx: ReceiverContext) -> Result<(), ComponentError> {
        let config = self.config.clone();
        let stop = self.stop.clone();
        let ReceiverContext {
            output, telemetry, ..
        } = ctx;
        self.task = Some(tokio::spawn(async move {
            let mut generator = Generator::new(config.seed, config.slow_share);
            let mut ticker = (config.batches_per_second > 0.0).then(|| {
                let mut t = tokio::time::interval(std::time::Duration::from_secs_f64(
                    1.0 / config.batches_per_second,
                ));
                t.set_missed_tick_behavior(MissedTickBehavior::Delay);
                t
            });
            let mut sent = 0u64;
            while config.count == 0 || sent < config.count {
                if let Some(t) = ticker.as_mut() {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = t.tick() => {}
                    }
                }
                let traces = generator.batch(config.traces_per_batch);
                let items = traces.span_count();
                telemetry.received(SignalKind::Traces, items);
                tokio::select! {
                    _ = stop.cancelled() => {
                        telemetry.dropped(SignalKind::Traces, "shutdown", items);
                        break;
                    }
                    result = output.send(Signal::Traces(traces)) => if result.is_err() {
                        telemetry.dropped(SignalKind::Traces, "pipeline_closed", items);
                        break;
                    }
                }
                sent += 1;
            }
            // Dropping `output` here lets the pipeline drain and, once every receiver is done,
            // the engine stop by itself.
            drop(output);
        }));
        Ok(())
    }

    async fn shutdown(&mut self, deadline: Instant) -> Result<(), ComponentError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout_at(deadline, task).await {
                Ok(_) => {}
                Err(_) => return Err(ComponentError::Deadline("demo_traces")),
            }
        }
        Ok(())
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Receiver>, BuildError> {
    let config: DemoTracesConfig = ctx.parse()?;
    if !(config.batches_per_second >= 0.0 && config.batches_per_second.is_finite()) {
        return Err(ctx.invalid("batches_per_second", "must be a finite number ≥ 0"));
    }
    if config.traces_per_batch == 0 || config.traces_per_batch > 100_000 {
        return Err(ctx.invalid("traces_per_batch", "must be between 1 and 100000"));
    }
    if !(0.0..=1.0).contains(&config.slow_share) {
        return Err(ctx.invalid("slow_share", "must be between 0 and 1"));
    }
    Ok(Box::new(DemoTraces {
        config,
        stop: CancellationToken::new(),
        task: None,
    }))
}

inventory::submit! {
    ComponentFactory {
        type_name: "demo_traces",
        description: "generates synthetic traces of a three-service shop",
        takes: &[],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<DemoTracesConfig>,
        build: Build::Receiver(build),
    }
}
