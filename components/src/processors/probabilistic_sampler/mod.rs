//! `probabilistic_sampler`: keeps whole traces, a fixed share of them, chosen by a hash of the
//! trace id.
//!
//! The hash is the OpenTelemetry Collector's `hash_seed` mode (FNV-1a over the seed's four
//! little-endian bytes, then the trace id; the low 14 bits against the share), so a tracescale
//! and a Collector with the same seed and percentage keep the same traces, and every span of a
//! trace gets the same answer wherever it is sampled. One use: a model of a replica behind
//! trace-ID load balancing, which sees a uniform sample of whole traces.

use async_trait::async_trait;
use serde::Deserialize;
use tracescale_core::component::{BuildContext, ComponentError, Emitter, Processor};
use tracescale_core::config::{BuildError, field_names};
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind};

#[cfg(test)]
mod tests;

/// Hash buckets of the Collector's `hash_seed` mode: the share is kept to 1/16384.
const BUCKETS: u32 = 0x4000;

/// Config of `probabilistic_sampler`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbabilisticSamplerConfig {
    /// The share of traces kept, in percent.
    pub sampling_percentage: f64,
    /// The hash seed; samplers that must agree on which traces they keep share it.
    #[serde(default)]
    pub hash_seed: u32,
    /// Drop spans without a trace id (true) or keep them (false).
    #[serde(default = "default_fail_closed")]
    pub fail_closed: bool,
}

fn default_fail_closed() -> bool {
    true
}

/// Keeps the traces whose id hashes below the configured share.
pub struct ProbabilisticSampler {
    /// Buckets kept, out of [`BUCKETS`].
    threshold: u32,
    seed: u32,
    fail_closed: bool,
    kept: metrics::Counter,
    sampled_out: metrics::Counter,
    no_trace_id: metrics::Counter,
}

impl ProbabilisticSampler {
    /// A sampler keeping `percentage` % of traces, hashed with `seed`.
    pub fn new(component: &str, percentage: f64, seed: u32, fail_closed: bool) -> Self {
        tracescale_core::telemetry::describe(
            &[(
                "tracescale_probabilistic_sampler_spans_total",
                "Spans sampled, by outcome (kept, sampled_out, no_trace_id).",
            )],
            &[],
            &[],
        );
        let spans = |outcome: &'static str| {
            metrics::counter!(
                "tracescale_probabilistic_sampler_spans_total",
                "component" => component.to_string(),
                "outcome" => outcome
            )
        };
        Self {
            threshold: threshold(percentage),
            seed,
            fail_closed,
            kept: spans("kept"),
            sampled_out: spans("sampled_out"),
            no_trace_id: spans("no_trace_id"),
        }
    }

    /// Whether the trace with this id is kept.
    pub fn keeps(&self, trace_id: &[u8]) -> bool {
        fnv1a(self.seed.to_le_bytes().iter().chain(trace_id)) & (BUCKETS - 1) < self.threshold
    }
}

/// The buckets kept for a percentage, as the Collector rounds it (down).
fn threshold(percentage: f64) -> u32 {
    (percentage.clamp(0.0, 100.0) / 100.0 * f64::from(BUCKETS)) as u32
}

/// FNV-1a, 32 bits.
fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes
        .into_iter()
        .fold(OFFSET, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME))
}

#[async_trait]
impl Processor for ProbabilisticSampler {
    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError> {
        let Signal::Traces(mut traces) = signal else {
            out.emit(signal);
            return Ok(());
        };
        let (mut kept, mut sampled_out, mut no_id) = (0u64, 0u64, 0u64);
        for rs in &mut traces.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|span| {
                    let keep = if span.trace_id.iter().all(|&b| b == 0) {
                        no_id += 1;
                        !self.fail_closed
                    } else {
                        let keep = self.keeps(&span.trace_id);
                        sampled_out += u64::from(!keep);
                        keep
                    };
                    kept += u64::from(keep);
                    keep
                });
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        traces
            .resource_spans
            .retain(|rs| !rs.scope_spans.is_empty());
        self.kept.increment(kept);
        self.sampled_out.increment(sampled_out);
        self.no_trace_id.increment(no_id);
        if !traces.resource_spans.is_empty() {
            out.emit(traces);
        }
        Ok(())
    }
}

fn build(ctx: &BuildContext<'_>) -> Result<Box<dyn Processor>, BuildError> {
    let config: ProbabilisticSamplerConfig = ctx.parse()?;
    let p = config.sampling_percentage;
    if !(p.is_finite() && (0.0..=100.0).contains(&p)) {
        return Err(ctx.invalid(
            "sampling_percentage",
            format!("{p} is not a percentage: give a number from 0 to 100"),
        ));
    }
    if p > 0.0 && threshold(p) == 0 {
        ctx.warn(
            "sampling_percentage",
            format!("{p} % is below one trace in {BUCKETS}: every trace is dropped"),
        );
    }
    Ok(Box::new(ProbabilisticSampler::new(
        &ctx.id().to_string(),
        p,
        config.hash_seed,
        config.fail_closed,
    )))
}

inventory::submit! {
    ComponentFactory {
        type_name: "probabilistic_sampler",
        description: "keeps a share of whole traces, chosen by a hash of the trace id (the Collector's hash_seed mode)",
        takes: &[SignalKind::Traces],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<ProbabilisticSamplerConfig>,
        build: Build::Processor(build),
    }
}
