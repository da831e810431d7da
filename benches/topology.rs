//! The engine alone: a pipeline with a pass-through processor and a `null` exporter, fed batches
//! of 100 and 1000 spans. Reports time per span (criterion's throughput is in spans).

// A bench that cannot set itself up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used)]

use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tracescale_components::receivers::demo_traces::Generator;
use tracescale_core::component::{
    BuildContext, ComponentError, Emitter, Output, Processor, Receiver, ReceiverContext,
};
use tracescale_core::config::{BuildError, field_names, load_str};
use tracescale_core::health::Health;
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};
use tracescale_core::topology::RunningTopology;

use tracescale_components as _;

/// Hands its output to the bench loop.
struct BenchSource;

fn handoff() -> &'static Mutex<Option<Output>> {
    static H: OnceLock<Mutex<Option<Output>>> = OnceLock::new();
    H.get_or_init(|| Mutex::new(None))
}

#[async_trait]
impl Receiver for BenchSource {
    async fn start(&mut self, ctx: ReceiverContext) -> Result<(), ComponentError> {
        *handoff()
            .lock()
            .map_err(|_| ComponentError::other("poisoned"))? = Some(ctx.output);
        Ok(())
    }
    async fn shutdown(&mut self, _: tokio::time::Instant) -> Result<(), ComponentError> {
        Ok(())
    }
}

/// Passes every batch on untouched.
struct Pass;

#[async_trait]
impl Processor for Pass {
    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError> {
        out.emit(signal);
        Ok(())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn build_source(ctx: &BuildContext<'_>) -> Result<Box<dyn Receiver>, BuildError> {
    let Empty {} = ctx.parse()?;
    Ok(Box::new(BenchSource))
}

fn build_pass(ctx: &BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let Empty {} = ctx.parse()?;
    Ok(Box::new(Pass))
}

inventory::submit! {
    ComponentFactory {
        type_name: "bench_source",
        description: "bench input",
        takes: &[],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<Empty>,
        build: Build::Receiver(build_source),
    }
}

inventory::submit! {
    ComponentFactory {
        type_name: "pass",
        description: "bench pass-through",
        takes: &[SignalKind::Traces],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<Empty>,
        build: Build::Processor(build_pass),
    }
}

const PIPELINE: &str = r#"
[receivers.bench_source]
[processors.pass]
[exporters.null]
when_full = "block"
[pipelines.bench]
receivers = ["bench_source"]
processors = ["pass"]
exporters = ["null"]
[service]
telemetry_address = "off"
"#;

/// Batches per topology run: clones are made before the clock starts, so the figure is the
/// engine's cost alone (in real use each batch is freshly decoded, never cloned).
const CHUNK: u64 = 256;

/// Sends `batches` copies of `batch` through fresh topologies, timing only from the first send
/// until the exporter has taken the last batch.
async fn run(batch: &Signal, batches: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = batches;
    while left > 0 {
        let n = left.min(CHUNK);
        left -= n;
        let copies: Vec<Signal> = (0..n).map(|_| batch.clone()).collect();
        let config = load_str(Path::new("bench.toml"), PIPELINE).expect("bench pipeline loads");
        let mut topology = RunningTopology::start(config, Health::new())
            .await
            .expect("bench pipeline starts");
        let output = handoff()
            .lock()
            .expect("not poisoned")
            .take()
            .expect("the source started");
        let started = Instant::now();
        for copy in copies {
            output.send(copy).await.expect("pipeline open");
        }
        drop(output);
        topology.finished().await;
        total += started.elapsed();
        topology.shutdown().await;
    }
    total
}

/// The baseline: only freeing the same batches, which the `null` exporter does at the end of
/// every pipeline run. The difference is what the engine itself adds per span.
fn drop_only(batch: &Signal, batches: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = batches;
    while left > 0 {
        let n = left.min(CHUNK);
        left -= n;
        let copies: Vec<Signal> = (0..n).map(|_| batch.clone()).collect();
        let started = Instant::now();
        drop(std::hint::black_box(copies));
        total += started.elapsed();
    }
    total
}

fn topology(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("topology");
    for traces in [34usize, 334] {
        // Three spans per trace: about 100 and 1000 spans per batch.
        let batch = Signal::Traces(Generator::new(1, 0.05).batch(traces));
        let spans = batch.item_count() as u64;
        group.throughput(Throughput::Elements(spans));
        group.bench_with_input(
            BenchmarkId::new("pass_to_null", spans),
            &batch,
            |b, batch| {
                b.to_async(&runtime).iter_custom(|iters| run(batch, iters));
            },
        );
        group.bench_with_input(
            BenchmarkId::new("baseline_drop", spans),
            &batch,
            |b, batch| {
                b.iter_custom(|iters| drop_only(batch, iters));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, topology);
criterion_main!(benches);
