//! The `slo_scaler` processor: the user declares objectives on entry operations and the
//! workloads it may touch; it assembles traces, finds the service that made an objective burn
//! its error budget from the traces' critical paths, and sizes it from the load the traces show.
//! See README.md for every key and the behaviour, and [`engine`] for the algorithm.

pub mod config;
pub mod engine;
mod window;

#[cfg(test)]
mod culprit_tests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge};
use tokio::time::Instant;
use tracescale_core::component::{ComponentError, Emitter, Processor, ProcessorContext};
use tracescale_core::config::field_names;
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind, Target};

pub use config::SloScalerConfig;
use engine::{Counters, Engine};

/// The processor: the engine, its clock and its metric handles.
pub struct SloScaler {
    engine: Engine,
    interval: Duration,
    event_clock: bool,
    passthrough: bool,
    targets: Vec<(String, Target)>,
    /// Wall time at start, as (Unix ns, tokio instant), so tests can drive the clock.
    anchor: Option<(u64, Instant)>,
    component: String,
    metrics: Option<Metrics>,
}

impl SloScaler {
    /// A processor around an engine built from `config`.
    pub fn new(config: &SloScalerConfig, engine: Engine) -> Self {
        Self {
            engine,
            interval: config.interval.get(),
            event_clock: config.clock
                == crate::processors::latency_rules::config::ClockConfig::Event,
            passthrough: config.passthrough,
            targets: config.targets(),
            anchor: None,
            component: String::new(),
            metrics: None,
        }
    }

    fn wall_now(&mut self) -> u64 {
        let (unix, at) = *self
            .anchor
            .get_or_insert_with(|| (tracescale_core::signal::now_unix_nano(), Instant::now()));
        unix.saturating_add(u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn publish(&mut self) {
        let counters = self.engine.counters();
        let buffer = self.engine.buffer();
        if let Some(m) = self.metrics.as_mut() {
            m.publish(counters, buffer);
        }
    }
}

#[async_trait]
impl Processor for SloScaler {
    fn scale_targets(&self) -> Vec<(String, Target)> {
        self.targets.clone()
    }

    async fn start(&mut self, ctx: &ProcessorContext) -> Result<(), ComponentError> {
        self.component = ctx.id.to_string();
        self.anchor = Some((tracescale_core::signal::now_unix_nano(), Instant::now()));
        self.metrics = Some(Metrics::new(&self.component));
        ctx.health.ready(None);
        Ok(())
    }

    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError> {
        match signal {
            Signal::Traces(traces) => {
                let mut decisions = Vec::new();
                if self.event_clock {
                    self.engine.observe(&traces.resource_spans, None);
                    let now = self.engine.clock();
                    if now > 0 {
                        self.engine.tick(now, &mut decisions);
                    }
                } else {
                    let now = self.wall_now();
                    self.engine.observe(&traces.resource_spans, Some(now));
                }
                super::emit_decisions(&self.component, decisions, out);
                if self.passthrough {
                    out.emit(Signal::Traces(traces));
                }
            }
            other => out.emit(other),
        }
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn tick(&mut self, out: &mut Emitter) -> Result<(), ComponentError> {
        if !self.event_clock {
            let now = self.wall_now();
            let mut decisions = Vec::new();
            self.engine.tick(now, &mut decisions);
            super::emit_decisions(&self.component, decisions, out);
        }
        self.publish();
        Ok(())
    }

    async fn shutdown(
        &mut self,
        _out: &mut Emitter,
        _deadline: Instant,
    ) -> Result<(), ComponentError> {
        // No last evaluation: a half-drained pipeline is no evidence to scale on.
        self.publish();
        Ok(())
    }
}

/// Metric handles, registered once, and the totals already published.
struct Metrics {
    traces: Counter,
    objective_traces: Counter,
    refused_traces: Counter,
    incomplete_traces: Counter,
    late_traces: Counter,
    evaluations: Counter,
    decisions: Counter,
    no_culprit: Counter,
    evicted_traces: Counter,
    held_traces: Counter,
    dropped_spans: Counter,
    buffered_traces: Gauge,
    buffered_spans: Gauge,
    buffer_bytes: Gauge,
    last: Counters,
    last_evicted: u64,
    last_held: u64,
    last_dropped: u64,
}

impl Metrics {
    fn new(component: &str) -> Self {
        describe();
        let c = || ("component", component.to_string());
        Self {
            traces: metrics::counter!("tracescale_slo_scaler_traces_total", &[c()]),
            objective_traces: metrics::counter!(
                "tracescale_slo_scaler_objective_traces_total",
                &[c()]
            ),
            refused_traces: metrics::counter!("tracescale_slo_scaler_refused_traces_total", &[c()]),
            incomplete_traces: metrics::counter!(
                "tracescale_slo_scaler_incomplete_traces_total",
                &[c()]
            ),
            late_traces: metrics::counter!("tracescale_slo_scaler_late_traces_total", &[c()]),
            evaluations: metrics::counter!("tracescale_slo_scaler_evaluations_total", &[c()]),
            decisions: metrics::counter!("tracescale_slo_scaler_decisions_total", &[c()]),
            no_culprit: metrics::counter!("tracescale_slo_scaler_no_culprit_total", &[c()]),
            evicted_traces: metrics::counter!("tracescale_slo_scaler_evicted_traces_total", &[c()]),
            held_traces: metrics::counter!("tracescale_slo_scaler_held_traces_total", &[c()]),
            dropped_spans: metrics::counter!("tracescale_slo_scaler_dropped_spans_total", &[c()]),
            buffered_traces: metrics::gauge!("tracescale_slo_scaler_buffered_traces", &[c()]),
            buffered_spans: metrics::gauge!("tracescale_slo_scaler_buffered_spans", &[c()]),
            buffer_bytes: metrics::gauge!("tracescale_slo_scaler_buffer_bytes", &[c()]),
            last: Counters::default(),
            last_evicted: 0,
            last_held: 0,
            last_dropped: 0,
        }
    }

    fn publish(&mut self, c: Counters, buffer: &crate::tracetree::TraceBuffer) {
        let l = self.last;
        self.traces.increment(c.traces - l.traces);
        self.objective_traces
            .increment(c.objective_traces - l.objective_traces);
        self.refused_traces
            .increment(c.refused_traces - l.refused_traces);
        self.incomplete_traces
            .increment(c.incomplete_traces - l.incomplete_traces);
        self.late_traces.increment(c.late_traces - l.late_traces);
        self.evaluations.increment(c.evaluations - l.evaluations);
        self.decisions.increment(c.decisions - l.decisions);
        self.no_culprit.increment(c.no_culprit - l.no_culprit);
        self.last = c;
        let stats = buffer.stats();
        self.evicted_traces
            .increment(stats.traces_evicted.saturating_sub(self.last_evicted));
        self.last_evicted = stats.traces_evicted;
        self.held_traces
            .increment(stats.held_for_parent.saturating_sub(self.last_held));
        self.last_held = stats.held_for_parent;
        let dropped = stats.dropped.total();
        self.dropped_spans
            .increment(dropped.saturating_sub(self.last_dropped));
        self.last_dropped = dropped;
        self.buffered_traces.set(buffer.trace_count() as f64);
        self.buffered_spans.set(buffer.span_count() as f64);
        self.buffer_bytes.set(buffer.memory_bytes() as f64);
    }
}

/// HELP text for `/metrics`.
fn describe() {
    tracescale_core::telemetry::describe(
        &[
            ("tracescale_slo_scaler_traces_total", "Traces analysed."),
            (
                "tracescale_slo_scaler_objective_traces_total",
                "Traces analysed whose root matched an objective.",
            ),
            (
                "tracescale_slo_scaler_refused_traces_total",
                "Traces that could not be analysed (parent cycles).",
            ),
            (
                "tracescale_slo_scaler_incomplete_traces_total",
                "Traces released without one root, with orphans or truncated.",
            ),
            (
                "tracescale_slo_scaler_late_traces_total",
                "Traces that ended before the oldest second still held.",
            ),
            (
                "tracescale_slo_scaler_evaluations_total",
                "Evaluations of the objectives, one an interval.",
            ),
            ("tracescale_slo_scaler_decisions_total", "Decisions made."),
            (
                "tracescale_slo_scaler_no_culprit_total",
                "Evaluations where an objective burned and no scalable culprit was found.",
            ),
            (
                "tracescale_slo_scaler_held_traces_total",
                "Times a quiet trace was held on because a span in it waited for its parent.",
            ),
            (
                "tracescale_slo_scaler_evicted_traces_total",
                "Traces dropped from a full trace buffer.",
            ),
            (
                "tracescale_slo_scaler_dropped_spans_total",
                "Spans dropped: full buffer, too long a trace, end before start, zero ids, duplicates.",
            ),
        ],
        &[
            (
                "tracescale_slo_scaler_buffered_traces",
                "Traces the buffer holds now.",
            ),
            (
                "tracescale_slo_scaler_buffered_spans",
                "Spans the buffer holds now.",
            ),
            (
                "tracescale_slo_scaler_buffer_bytes",
                "Memory the trace buffer holds now, in bytes.",
            ),
        ],
        &[],
    );
}

inventory::submit! {
    ComponentFactory {
        type_name: "slo_scaler",
        description: "finds the service that makes an objective burn its error budget from the traces' critical paths, and sizes it from the load they show",
        takes: &[SignalKind::Traces],
        emits: &[SignalKind::Traces, SignalKind::Decisions],
        config_keys: field_names::<SloScalerConfig>,
        build: Build::Processor(config::build),
    }
}
