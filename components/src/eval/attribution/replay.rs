//! The replay: objectives derived from the fault-free traces, then every span through the
//! `slo_scaler` processor's engine on span time, keeping each ranking it makes while an
//! objective burns.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde::Serialize;

use super::faults::{Fault, Windows};
use super::spans::{SpanRow, for_each_span};
use crate::eval::EvalError;
use crate::processors::latency_rules::config::ClockConfig;
use crate::processors::slo_scaler::SloScalerConfig;
use crate::processors::slo_scaler::engine::{Engine, Objective, Ranking, Settings, SlowWork};
use crate::tracetree::BufferConfig;

/// A minute counts towards an objective's target when it holds at least this many of its
/// fault-free requests; an operation with no such minute gets no objective.
pub const MIN_MINUTE_TRACES: usize = 20;
/// Spans per batch handed to the engine at most; a batch also ends at each second of span time.
const BATCH_SPANS: usize = 4096;
const MINUTE_NS: u64 = 60_000_000_000;

/// How the objectives are set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectiveOptions {
    /// The percentile every objective holds for.
    pub percentile: f64,
    /// The target is this many times the learned fault-free percentile.
    pub target_factor: f64,
    /// A target for every objective instead of the learned one, ns.
    pub target_ns: Option<u64>,
    /// Objectives on the operations the entry services call too, not only on the entry
    /// operations: a fault on a service only some requests reach burns their objective.
    pub calls: bool,
}

impl Default for ObjectiveOptions {
    fn default() -> Self {
        Self {
            percentile: 99.0,
            target_factor: 1.0,
            target_ns: None,
            calls: true,
        }
    }
}

/// An objective on one entry operation or one operation an entry service calls, with how its
/// target was learned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DerivedObjective {
    /// The spans' service.
    pub service: String,
    /// The spans' name.
    pub operation: String,
    /// The percentile it holds for.
    pub percentile: f64,
    /// The target, milliseconds.
    pub target_ms: f64,
    /// Its fault-free requests: its spans (roots, or the calls' SERVER spans) that ended
    /// outside every fault's window.
    pub fault_free_traces: u64,
    /// The minutes with at least [`MIN_MINUTE_TRACES`] of them, whose percentiles' median,
    /// times the factor, is the target.
    pub minutes: u64,
}

impl DerivedObjective {
    /// The name the engine knows it by.
    pub fn name(&self) -> String {
        format!("{} {}", self.service, self.operation)
    }
}

/// One objective per entry operation (the root spans' service and name) and, with `calls`, per
/// operation an entry service calls (a span of another service whose parent is an entry
/// service's): its target is the
/// median over fault-free minutes of the minute's percentile, times the factor, unless a target
/// is given. Busiest operation first.
pub fn derive_objectives(
    path: &Path,
    faults: &[Fault],
    options: &ObjectiveOptions,
) -> Result<Vec<DerivedObjective>, EvalError> {
    // (service, operation) → minute → durations.
    let windows = Windows::new(faults);
    let callers = if options.calls {
        entry_services(path)?
    } else {
        Callers::default()
    };
    let mut roots: HashMap<(String, String), BTreeMap<u64, Vec<u64>>> = HashMap::new();
    for_each_span(path, |row| {
        if windows.containing(row.end).next().is_some() {
            return;
        }
        let entry = match row.parent_span_id {
            None => true,
            // A call from an entry service into another service: the callee's SERVER span.
            Some(parent) => callers
                .entry_service_of(parent)
                .is_some_and(|caller| caller != row.service),
        };
        if !entry {
            return;
        }
        let key = (row.service.to_string(), row.operation.to_string());
        roots
            .entry(key)
            .or_default()
            .entry(row.end / MINUTE_NS)
            .or_default()
            .push(row.end.saturating_sub(row.start));
    })?;
    let mut objectives: Vec<DerivedObjective> = roots
        .into_iter()
        .filter_map(|((service, operation), minutes)| {
            let traces = minutes.values().map(|d| d.len() as u64).sum();
            let mut per_minute: Vec<u64> = minutes
                .into_values()
                .filter(|d| d.len() >= MIN_MINUTE_TRACES)
                .filter_map(|mut d| {
                    d.sort_unstable();
                    crate::stats::percentile(&d, options.percentile)
                })
                .collect();
            per_minute.sort_unstable();
            let learned = crate::stats::percentile(&per_minute, 50.0)?;
            let target_ns = options.target_ns.unwrap_or_else(|| {
                (learned as f64 * options.target_factor).round().max(1.0) as u64
            });
            Some(DerivedObjective {
                service,
                operation,
                percentile: options.percentile,
                target_ms: target_ns as f64 / 1e6,
                fault_free_traces: traces,
                minutes: per_minute.len() as u64,
            })
        })
        .collect();
    if objectives.is_empty() {
        return Err(EvalError::NoObjective {
            path: path.to_path_buf(),
            min: MIN_MINUTE_TRACES,
        });
    }
    objectives.sort_by(|a, b| {
        b.fault_free_traces
            .cmp(&a.fault_free_traces)
            .then_with(|| a.name().cmp(&b.name()))
    });
    Ok(objectives)
}

/// The spans of the entry services (those of root spans), by span id, with their service.
#[derive(Default)]
struct Callers {
    services: Vec<String>,
    spans: HashMap<[u8; 8], u16>,
}

impl Callers {
    /// The entry service a span belongs to, if it is one of theirs.
    fn entry_service_of(&self, span: [u8; 8]) -> Option<&str> {
        self.spans
            .get(&span)
            .and_then(|&i| self.services.get(usize::from(i)))
            .map(String::as_str)
    }
}

/// Two passes: the services that own root spans, then every span of theirs.
fn entry_services(path: &Path) -> Result<Callers, EvalError> {
    let mut services: Vec<String> = Vec::new();
    for_each_span(path, |row| {
        if row.parent_span_id.is_none() && !services.iter().any(|s| s == row.service) {
            services.push(row.service.to_string());
        }
    })?;
    services.truncate(usize::from(u16::MAX));
    let mut spans = HashMap::new();
    for_each_span(path, |row| {
        if let Some(i) = services.iter().position(|s| s == row.service) {
            spans.insert(row.span_id, i as u16);
        }
    })?;
    Ok(Callers { services, spans })
}

/// What a replay saw and the rankings the engine made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Replay {
    /// Spans read.
    pub spans: u64,
    /// Complete traces the engine analysed.
    pub traces: u64,
    /// Of which matched an objective.
    pub objective_traces: u64,
    /// Per fault (in the order given), the spans that started in its window.
    pub spans_in_window: Vec<u64>,
    /// Per fault, the earliest start of those spans (Unix ns).
    pub first_span: Vec<Option<u64>>,
    /// Every ranking made while an objective burned, in time order.
    pub rankings: Vec<Ranking>,
}

/// The engine with the `slo_scaler` defaults, on span time, with these objectives.
fn engine(objectives: &[DerivedObjective]) -> Result<Engine, EvalError> {
    let d = SloScalerConfig {
        clock: ClockConfig::Event,
        ..SloScalerConfig::default()
    };
    let nanos = |h: tracescale_core::config::HumanDuration| {
        u64::try_from(h.get().as_nanos()).unwrap_or(u64::MAX)
    };
    let settings = Settings {
        objectives: objectives
            .iter()
            .map(|o| Objective {
                name: o.name(),
                service: o.service.clone(),
                operation: o.operation.clone(),
                percentile: o.percentile,
                target_ns: (o.target_ms * 1e6).round() as u64,
            })
            .collect(),
        workloads: Vec::new(),
        interval_ns: nanos(d.interval),
        completion_wait_ns: nanos(d.completion_wait),
        short_window_s: d.short_window.get().as_secs().max(1),
        long_window_s: d.long_window.get().as_secs().max(1),
        burn_rate: d.burn_rate,
        target_utilisation: d.target_utilisation,
        drain_within_s: d.drain_within.get().as_secs_f64(),
        scale_down_after_ns: nanos(d.scale_down_after),
        baseline_window_s: d.baseline_window.get().as_secs_f64(),
        cooldown_ns: nanos(d.cooldown),
        slow_work: SlowWork::Scale,
        anticipate: d.anticipate,
    };
    let buffer = BufferConfig {
        completion_wait: nanos(d.completion_wait),
        max_wait: nanos(d.max_wait),
        max_traces: d.max_traces,
        max_spans: d.max_spans,
        max_spans_per_trace: d.max_spans_per_trace,
    };
    let mut engine = Engine::new(settings, buffer).map_err(|e| EvalError::Processor {
        path: "slo_scaler".into(),
        message: e.to_string(),
    })?;
    engine.record_rankings();
    Ok(engine)
}

/// Spans grouped by (service, pod) into resources, as a Collector would send them.
#[derive(Default)]
struct Batch {
    index: HashMap<(String, String), usize>,
    resources: Vec<ResourceSpans>,
    spans: usize,
    second: u64,
}

impl Batch {
    fn push(&mut self, row: &SpanRow<'_>) {
        let slot = match self
            .index
            .get(&(row.service.to_string(), row.pod.to_string()))
        {
            Some(&i) => i,
            None => {
                let mut attributes = vec![string_kv("service.name", row.service)];
                if !row.pod.is_empty() {
                    attributes.push(string_kv("k8s.pod.name", row.pod));
                }
                self.resources.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        ..Resource::default()
                    }),
                    scope_spans: vec![ScopeSpans::default()],
                    ..ResourceSpans::default()
                });
                let i = self.resources.len() - 1;
                self.index
                    .insert((row.service.to_string(), row.pod.to_string()), i);
                i
            }
        };
        if let Some(scope) = self.resources[slot].scope_spans.first_mut() {
            scope.spans.push(Span {
                trace_id: row.trace_id.to_vec(),
                span_id: row.span_id.to_vec(),
                parent_span_id: row.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
                name: row.operation.to_string(),
                start_time_unix_nano: row.start,
                end_time_unix_nano: row.end,
                ..Span::default()
            });
        }
        if self.spans == 0 {
            self.second = row.end / 1_000_000_000;
        }
        self.spans += 1;
    }

    /// Hands the batch to the engine as the processor does on span time: observe, then
    /// evaluate at the latest span end.
    fn flush(&mut self, engine: &mut Engine, rankings: &mut Vec<Ranking>) {
        if self.spans == 0 {
            return;
        }
        engine.observe(&self.resources, None);
        let now = engine.clock();
        if now > 0 {
            let mut decisions = Vec::new();
            engine.tick(now, &mut decisions);
        }
        rankings.extend(engine.take_rankings());
        self.index.clear();
        self.resources.clear();
        self.spans = 0;
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

/// Replays every span of the file, in file order, through the engine.
pub fn replay(
    path: &Path,
    faults: &[Fault],
    objectives: &[DerivedObjective],
) -> Result<Replay, EvalError> {
    let mut engine = engine(objectives)?;
    let mut out = Replay {
        spans_in_window: vec![0; faults.len()],
        first_span: vec![None; faults.len()],
        ..Replay::default()
    };
    let mut batch = Batch::default();
    let windows = Windows::new(faults);
    out.spans = for_each_span(path, |row| {
        for i in windows.containing(row.start) {
            if let (Some(count), Some(first)) =
                (out.spans_in_window.get_mut(i), out.first_span.get_mut(i))
            {
                *count += 1;
                *first = Some(first.map_or(row.start, |t| t.min(row.start)));
            }
        }
        if batch.spans >= BATCH_SPANS
            || (batch.spans > 0 && row.end / 1_000_000_000 != batch.second)
        {
            batch.flush(&mut engine, &mut out.rankings);
        }
        batch.push(row);
    })?;
    batch.flush(&mut engine, &mut out.rankings);
    let counters = engine.counters();
    out.traces = counters.traces;
    out.objective_traces = counters.objective_traces;
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// 25 requests in one minute: the web root, its own render span, its call into the api,
    /// and the api's query to the database.
    fn spans_csv() -> tempfile::NamedTempFile {
        let mut text = String::from(
            "trace_id,span_id,parent_span_id,service,operation,start_unix_nano,end_unix_nano\n",
        );
        for t in 0..25u64 {
            let at = 60_000_000_000 + t * 1_000_000_000;
            let ms = 1_000_000;
            for (span, parent, service, operation, start, end) in [
                ("1", "", "web", "GET /", 0, 40),
                ("2", "1", "web", "render", 1, 39),
                ("3", "2", "api", "GET /x", 2, 30),
                ("4", "3", "db", "q", 3, 20),
            ] {
                let parent = if parent.is_empty() {
                    String::new()
                } else {
                    format!("{t:014x}{parent:0>2}")
                };
                text.push_str(&format!(
                    "trace-{t},{t:014x}{span:0>2},{parent},{service},{operation},{},{}\n",
                    at + start * ms,
                    at + end * ms
                ));
            }
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    fn names(objectives: &[DerivedObjective]) -> Vec<String> {
        let mut names: Vec<String> = objectives.iter().map(DerivedObjective::name).collect();
        names.sort();
        names
    }

    #[test]
    fn objectives_are_on_the_entry_operations_and_the_calls_out_of_their_services() {
        let file = spans_csv();
        let with_calls = derive_objectives(file.path(), &[], &ObjectiveOptions::default()).unwrap();
        // Not the entry service's own inner span, nor the database the api calls in turn.
        assert_eq!(names(&with_calls), ["api GET /x", "web GET /"]);
        let api = with_calls.iter().find(|o| o.service == "api").unwrap();
        assert_eq!(api.fault_free_traces, 25);
        assert!((api.target_ms - 28.0).abs() < 1e-9, "{api:?}");

        let entry_only = ObjectiveOptions {
            calls: false,
            ..ObjectiveOptions::default()
        };
        let roots = derive_objectives(file.path(), &[], &entry_only).unwrap();
        assert_eq!(names(&roots), ["web GET /"]);
    }
}
