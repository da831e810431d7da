//! The `hstree` processor: a streaming one-class detector of anomalous span durations
//! (Half-Space-Trees, Tan, Ting & Liu 2011), keyed by `service::operation`, that tags spans with
//! a score or drops the normal ones. See README.md beside this file for keys and behaviour.
//!
//! The algorithm is synchronous and usable without the engine: [`Detector`] takes one span at a
//! time, [`forest::Forest`] is the bare HS-Tree.

mod config;
mod detector;
pub mod features;
mod floats;
pub mod forest;
pub mod quantile;
mod state;
#[cfg(test)]
mod tests;
pub mod warm;

use std::collections::HashMap;

use async_trait::async_trait;
use metrics::{Counter, Gauge, Histogram};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use tokio::time::Instant;
use tracescale_core::attributes::{self, service_name, set_attribute};
use tracescale_core::component::{
    ComponentError, ComponentTelemetry, Emitter, Processor, ProcessorContext,
};
use tracescale_core::config::field_names;
use tracescale_core::error::error_chain;
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Signal, SignalKind, Traces};
use tracing::{debug, info, warn};

pub use config::{
    Calibration, DetectorKind, Features, HsTreeConfig, MAX_OPERATIONS, Mode, Problem,
};
pub use detector::{DEFAULT_FIXED_MIN_SCORE, Detector, DetectorCounters, DetectorError, Verdict};
pub use state::{DecodeError, StateError};

/// Label values standing for every operation past `max_operations` in the flagged counter.
const OTHER: &str = "_other";

/// The processor: a [`Detector`] plus OTLP handling, metrics and persistence.
pub struct HsTree {
    id: String,
    config: HsTreeConfig,
    detector: Detector,
    metrics: Metrics,
    telemetry: Option<ComponentTelemetry>,
    /// True when the model learned something since it was last saved.
    dirty: bool,
    /// Detector totals already reported to metrics.
    reported: DetectorCounters,
}

impl HsTree {
    /// A processor around a fresh detector; metrics register at start.
    pub fn new(id: String, config: HsTreeConfig, detector: Detector) -> Self {
        Self {
            metrics: Metrics::noop(config.max_operations),
            id,
            config,
            detector,
            telemetry: None,
            dirty: false,
            reported: DetectorCounters::default(),
        }
    }

    /// The detector, to inspect.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Judges one span; returns whether it is forwarded.
    fn judge(&mut self, service: &str, span: &mut Span, tally: &mut Tally) -> bool {
        let tag = self.config.mode == Mode::Tag;
        if !valid_id(&span.trace_id, 16) || !valid_id(&span.span_id, 8) {
            tally.missing_ids += 1;
            return tag;
        }
        let Some(duration) = span
            .end_time_unix_nano
            .checked_sub(span.start_time_unix_nano)
        else {
            tally.end_before_start += 1;
            return tag;
        };
        let verdict = self
            .detector
            .observe(service, &span.name, duration, span.end_time_unix_nano);
        if verdict.overflow {
            tally.overflow += 1;
            return tag;
        }
        self.dirty = true;
        if verdict.training {
            tally.training += 1;
            return tag;
        }
        tally.scored += 1;
        self.metrics.score.record(verdict.score);
        if verdict.anomalous {
            self.metrics.flagged(service, &span.name).increment(1);
        } else {
            tally.normal += 1;
        }
        if tag {
            set_attribute(
                &mut span.attributes,
                attributes::ANOMALY_SCORE,
                any_value::Value::DoubleValue(verdict.score),
            );
            if verdict.anomalous {
                set_attribute(
                    &mut span.attributes,
                    attributes::ANOMALY,
                    any_value::Value::BoolValue(true),
                );
            }
        }
        tag || verdict.anomalous
    }

    /// Reports a batch's tally and the detector's new totals.
    fn report(&mut self, tally: &Tally) {
        let m = &self.metrics;
        m.scored.increment(tally.scored);
        m.training.increment(tally.training);
        m.end_before_start.increment(tally.end_before_start);
        m.missing_ids.increment(tally.missing_ids);
        let now = self.detector.counters();
        m.overflow_passed
            .increment(now.overflowed.saturating_sub(self.reported.overflowed));
        m.overflow_evicted
            .increment(now.evicted.saturating_sub(self.reported.evicted));
        self.reported = now;
        m.operations.set(self.detector.operations().len() as f64);
        m.training_progress.set(self.detector.training_progress());
        if self.config.mode == Mode::Drop
            && let Some(t) = &self.telemetry
        {
            let items = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
            t.dropped(SignalKind::Traces, "normal", items(tally.normal));
            t.dropped(SignalKind::Traces, "training", items(tally.training));
            t.dropped(
                SignalKind::Traces,
                "operation_overflow",
                items(tally.overflow),
            );
            t.dropped(
                SignalKind::Traces,
                "invalid_span",
                items(tally.end_before_start + tally.missing_ids),
            );
        }
    }

    /// Saves the model if it changed, by `deadline` when one is given.
    async fn save(&mut self, deadline: Option<Instant>) -> Result<(), ComponentError> {
        let Some(path) = self.config.state_path.clone() else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let bytes = self.detector.to_bytes();
        let task = tokio::task::spawn_blocking(move || state::write_atomic(&path, &bytes));
        let joined = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, task)
                .await
                .map_err(|_| ComponentError::Deadline("hstree model save"))?,
            None => task.await,
        };
        let result = match joined {
            Ok(Ok(())) => Ok(()),
            Ok(Err(StateError::Write { path, source })) => Err(ComponentError::io(
                format!("save the hstree model to {}", path.display()),
                source,
            )),
            Ok(Err(other)) => Err(ComponentError::other(other)),
            Err(join) => Err(ComponentError::other(join)),
        };
        match &result {
            Ok(()) => {
                self.dirty = false;
                self.metrics.saves_ok.increment(1);
                debug!(component = %self.id, "saved the hstree model");
            }
            Err(_) => self.metrics.saves_failed.increment(1),
        }
        result
    }

    /// Loads the saved model, or says why the model starts fresh; true when it loaded one.
    async fn load(&mut self) -> bool {
        let Some(path) = self.config.state_path.clone() else {
            return false;
        };
        let read_path = path.clone();
        let bytes = match tokio::task::spawn_blocking(move || state::read(&read_path)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(err)) => {
                warn!(component = %self.id, error = %error_chain(&err), "starting with a fresh hstree model");
                return false;
            }
            Err(join) => {
                warn!(component = %self.id, error = %join, "starting with a fresh hstree model");
                return false;
            }
        };
        match self.detector.restore(&bytes) {
            Ok(()) => {
                info!(
                    component = %self.id,
                    path = %path.display(),
                    operations = self.detector.operations().len(),
                    learned = self.detector.seen(),
                    "loaded the saved hstree model"
                );
                true
            }
            Err(source) => {
                let err = StateError::Decode { path, source };
                warn!(component = %self.id, error = %error_chain(&err), "starting with a fresh hstree model");
                false
            }
        }
    }

    /// Learns from `warm_start` into the fresh model and saves it. A failure leaves the model
    /// fresh (nothing half-learned) and fails the start only when the warm start is required.
    async fn warm_start(&mut self, warm: &warm::WarmStartConfig) -> Result<(), ComponentError> {
        let began = std::time::Instant::now();
        match warm::run(warm, &mut self.detector).await {
            Ok(learned) => {
                info!(
                    component = %self.id,
                    spans = learned.spans,
                    traces = learned.traces,
                    skipped_spans = learned.skipped,
                    malformed_lines = learned.malformed_lines,
                    operations = self.detector.operations().len(),
                    seconds = began.elapsed().as_secs_f64(),
                    "hstree warm start: learned {} spans",
                    learned.spans
                );
                self.dirty = true;
                if let Err(err) = self.save(None).await {
                    warn!(component = %self.id, error = %error_chain(&err), "cannot save the warm-started hstree model yet; the next save retries");
                }
                Ok(())
            }
            Err(err) => {
                // The detector was fresh (no saved model), so a fresh one discards exactly what
                // the failed warm start learned.
                self.detector = Detector::new(&self.config).map_err(ComponentError::other)?;
                if warm.required {
                    return Err(ComponentError::other(err));
                }
                warn!(
                    component = %self.id,
                    error = %error_chain(&err),
                    "starting with a cold hstree model (warm_start.required = false)"
                );
                Ok(())
            }
        }
    }
}

#[async_trait]
impl Processor for HsTree {
    async fn start(&mut self, ctx: &ProcessorContext) -> Result<(), ComponentError> {
        self.id = ctx.id.to_string();
        self.metrics = Metrics::register(&self.id, self.config.max_operations);
        self.telemetry = Some(ctx.telemetry.clone());
        let loaded = self.load().await;
        if let Some(warm) = self.config.warm_start.clone() {
            if loaded {
                // The saved model already holds what was learned before, warm start included:
                // learning the source again would count it twice.
                info!(component = %self.id, "a saved hstree model was loaded; warm start skipped");
            } else {
                self.warm_start(&warm).await?;
            }
        }
        // Spans learned before serving are not live traffic: metrics count from here.
        self.reported = self.detector.counters();
        self.metrics
            .training_progress
            .set(self.detector.training_progress());
        self.metrics
            .operations
            .set(self.detector.operations().len() as f64);
        Ok(())
    }

    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError> {
        let mut traces = match signal {
            Signal::Traces(traces) => traces,
            other => {
                out.emit(other);
                return Ok(());
            }
        };
        let mut tally = Tally::default();
        let drop_mode = self.config.mode == Mode::Drop;
        for rs in &mut traces.resource_spans {
            let ResourceSpans {
                resource,
                scope_spans,
                ..
            } = rs;
            let service = service_name(resource.as_ref());
            for ss in scope_spans.iter_mut() {
                ss.spans
                    .retain_mut(|span| self.judge(service, span, &mut tally));
            }
            if drop_mode {
                scope_spans.retain(|ss| !ss.spans.is_empty());
            }
        }
        if drop_mode {
            traces
                .resource_spans
                .retain(|rs| !rs.scope_spans.is_empty());
        }
        self.report(&tally);
        out.emit(Signal::Traces(Traces::new(traces.resource_spans)));
        Ok(())
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        self.config
            .state_path
            .as_ref()
            .map(|_| self.config.save_interval.get())
    }

    async fn tick(&mut self, _out: &mut Emitter) -> Result<(), ComponentError> {
        self.save(None).await
    }

    async fn shutdown(
        &mut self,
        _out: &mut Emitter,
        deadline: Instant,
    ) -> Result<(), ComponentError> {
        self.save(Some(deadline)).await
    }
}

/// Per-batch counts, reported once per batch rather than once per span.
#[derive(Debug, Default)]
struct Tally {
    scored: u64,
    normal: u64,
    training: u64,
    overflow: u64,
    end_before_start: u64,
    missing_ids: u64,
}

/// Metric handles, registered once at start.
struct Metrics {
    id: String,
    scored: Counter,
    training: Counter,
    score: Histogram,
    training_progress: Gauge,
    operations: Gauge,
    overflow_passed: Counter,
    overflow_evicted: Counter,
    end_before_start: Counter,
    missing_ids: Counter,
    saves_ok: Counter,
    saves_failed: Counter,
    /// Flagged counters by service then operation, at most `max_flagged` of them; the rest
    /// share `other`, so label cardinality stays bounded even when operations are evicted.
    flagged: HashMap<String, HashMap<String, Counter>>,
    flagged_len: usize,
    max_flagged: usize,
    other: Counter,
    noop: bool,
}

impl Metrics {
    /// Handles that record nothing, until start registers real ones.
    fn noop(max_flagged: usize) -> Self {
        Self {
            id: String::new(),
            scored: Counter::noop(),
            training: Counter::noop(),
            score: Histogram::noop(),
            training_progress: Gauge::noop(),
            operations: Gauge::noop(),
            overflow_passed: Counter::noop(),
            overflow_evicted: Counter::noop(),
            end_before_start: Counter::noop(),
            missing_ids: Counter::noop(),
            saves_ok: Counter::noop(),
            saves_failed: Counter::noop(),
            flagged: HashMap::new(),
            flagged_len: 0,
            max_flagged,
            other: Counter::noop(),
            noop: true,
        }
    }

    fn register(id: &str, max_flagged: usize) -> Self {
        describe();
        let c = id.to_string();
        Self {
            id: c.clone(),
            scored: metrics::counter!("tracescale_hstree_spans_scored_total", "component" => c.clone()),
            training: metrics::counter!("tracescale_hstree_spans_training_total", "component" => c.clone()),
            score: metrics::histogram!("tracescale_hstree_score", "component" => c.clone()),
            training_progress: metrics::gauge!("tracescale_hstree_training_progress", "component" => c.clone()),
            operations: metrics::gauge!("tracescale_hstree_operations", "component" => c.clone()),
            overflow_passed: metrics::counter!("tracescale_hstree_operation_overflow_total", "component" => c.clone(), "action" => "passed"),
            overflow_evicted: metrics::counter!("tracescale_hstree_operation_overflow_total", "component" => c.clone(), "action" => "evicted"),
            end_before_start: metrics::counter!("tracescale_hstree_invalid_spans_total", "component" => c.clone(), "reason" => "end_before_start"),
            missing_ids: metrics::counter!("tracescale_hstree_invalid_spans_total", "component" => c.clone(), "reason" => "missing_ids"),
            saves_ok: metrics::counter!("tracescale_hstree_state_saves_total", "component" => c.clone(), "result" => "ok"),
            saves_failed: metrics::counter!("tracescale_hstree_state_saves_total", "component" => c.clone(), "result" => "failed"),
            flagged: HashMap::new(),
            flagged_len: 0,
            max_flagged,
            other: metrics::counter!("tracescale_hstree_spans_flagged_total", "component" => c, "service" => OTHER, "operation" => OTHER),
            noop: false,
        }
    }

    /// The flagged counter of `service::operation`, registered on its first flag. Flagged spans
    /// are the rare path, so the lookup per flag is cheap in total.
    fn flagged(&mut self, service: &str, operation: &str) -> &Counter {
        if self.noop {
            return &self.other;
        }
        let known = self
            .flagged
            .get(service)
            .is_some_and(|ops| ops.contains_key(operation));
        if !known {
            if self.flagged_len >= self.max_flagged {
                return &self.other;
            }
            let counter = metrics::counter!(
                "tracescale_hstree_spans_flagged_total",
                "component" => self.id.clone(),
                "service" => service.to_string(),
                "operation" => operation.to_string()
            );
            self.flagged
                .entry(service.to_string())
                .or_default()
                .insert(operation.to_string(), counter);
            self.flagged_len += 1;
        }
        self.flagged
            .get(service)
            .and_then(|ops| ops.get(operation))
            .unwrap_or(&self.other)
    }
}

/// True for an id of the right length that is not all zeros (the OTLP "invalid" id).
fn valid_id(id: &[u8], len: usize) -> bool {
    id.len() == len && id.iter().any(|&b| b != 0)
}

/// HELP text for `/metrics`.
fn describe() {
    tracescale_core::telemetry::describe(
        &[
            (
                "tracescale_hstree_spans_scored_total",
                "Spans judged by the detector.",
            ),
            (
                "tracescale_hstree_spans_flagged_total",
                "Spans judged anomalous, by service and operation.",
            ),
            (
                "tracescale_hstree_spans_training_total",
                "Spans learned without being judged (training).",
            ),
            (
                "tracescale_hstree_operation_overflow_total",
                "Spans of operations over max_operations (action=passed) and operations evicted (action=evicted).",
            ),
            (
                "tracescale_hstree_invalid_spans_total",
                "Spans that could not be judged, by reason.",
            ),
            (
                "tracescale_hstree_state_saves_total",
                "Saves of the model's state, by result.",
            ),
        ],
        &[
            (
                "tracescale_hstree_training_progress",
                "Share of train_size learned, 0 to 1.",
            ),
            ("tracescale_hstree_operations", "Operations tracked."),
        ],
        &[(
            "tracescale_hstree_score",
            "Scores of judged spans, 0 to 1 (higher is more anomalous).",
        )],
    );
}

inventory::submit! {
    ComponentFactory {
        type_name: "hstree",
        description: "scores span durations per service::operation with Half-Space-Trees; tags or keeps anomalous spans",
        takes: &[SignalKind::Traces],
        emits: &[SignalKind::Traces],
        config_keys: field_names::<HsTreeConfig>,
        build: Build::Processor(config::build),
    }
}
