//! The `latency_rules` processor: turns repeated latency breaches of a service's operation into
//! scale decisions ("payments-db INSERT payments above 300 ms, 20 times within 10 s → one more
//! replica of statefulset/payments-db"), scales back down after a quiet stabilisation period,
//! and exports per-operation latency statistics. See README.md for every key and the behaviour.
//!
//! The algorithm lives in [`engine`], plain synchronous code; this module adapts it to the
//! [`Processor`] trait: it maps tokio's clock onto Unix time, emits decisions, publishes metrics
//! at each tick and reports stale rules in `/readyz`.

pub mod config;
pub mod engine;
mod refused;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge};
use tokio::time::Instant;
use tracescale_core::component::{
    ComponentError, Emitter, HealthHandle, Processor, ProcessorContext, Tap,
};
use tracescale_core::config::field_names;
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Decision, Signal, SignalKind, Target};

pub use config::LatencyRulesConfig;
use engine::{Counters, Engine, LATENCY_BUCKET_COUNT, LATENCY_BUCKETS_SECONDS, Rule, Settings};
use refused::{RefusedSpans, RulesTap};

/// Most rule names `/readyz` lists as stale before it says "and N more".
const MAX_STALE_LISTED: usize = 10;

/// The processor: an [`Engine`] it shares with its tap, and the metric handles.
pub struct LatencyRules {
    shared: Arc<Mutex<Shared>>,
    interval: Duration,
    /// `clock = "event"`: the timed evaluation runs on event time, inside `process`, rather than
    /// on the engine's ticks (see [`Shared::evaluate_on_event_time`]).
    event_clock: bool,
    passthrough: bool,
    observe_refused: bool,
    metrics: Option<Metrics>,
    health: Option<HealthHandle>,
    component: String,
    /// `(rules[i].scale, target)` of every rule, for the config loader's allow-list check.
    targets: Vec<(String, Target)>,
}

/// What the processor's task and the receivers' calls of its tap both touch. Each holds the
/// lock for one batch's worth of synchronous work, never across an `.await`.
struct Shared {
    engine: Engine,
    clock: Option<WallClock>,
    /// Decisions made and not emitted yet: the tap cannot emit, so what it makes leaves with
    /// the next batch or tick.
    decisions: Vec<Decision>,
    refused: RefusedSpans,
    /// With `clock = "event"`: the event time of the next timed evaluation.
    next_evaluation: Option<u64>,
}

impl Shared {
    /// On event time, the timed evaluation (windows slide, scale-downs, staleness) runs every
    /// `interval` of span time as the spans cross it, not on the wall clock: a replay or a
    /// simulation then decides the same thing at the same event time however fast it runs.
    fn evaluate_on_event_time(&mut self, interval: Duration) {
        let interval = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let clock = self.engine.clock();
        if clock == 0 {
            return;
        }
        let next = self
            .next_evaluation
            .get_or_insert_with(|| clock.saturating_add(interval));
        while *next <= clock {
            self.engine.tick(*next, &mut self.decisions);
            *next = next.saturating_add(interval);
        }
    }

    /// The engine's wall clock in Unix nanoseconds; anchored on first use if `start` did not.
    fn wall_now(&mut self) -> u64 {
        self.clock.get_or_insert_with(WallClock::now).read()
    }
}

/// Maps tokio's clock onto Unix time: the wall time at an anchor plus tokio's elapsed time
/// since. Windows then follow the engine clock, which tests pause and advance, and a wall clock
/// that jumps (NTP) cannot move them backwards.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    unix_nanos: u64,
    at: Instant,
}

impl WallClock {
    fn now() -> Self {
        let unix_nanos = tracescale_core::signal::now_unix_nano();
        Self {
            unix_nanos,
            at: Instant::now(),
        }
    }

    fn read(&self) -> u64 {
        let elapsed = u64::try_from(self.at.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.unix_nanos.saturating_add(elapsed)
    }
}

impl LatencyRules {
    /// A processor for validated rules (see [`LatencyRulesConfig::validate`]).
    pub fn new(config: &LatencyRulesConfig, rules: Vec<Rule>, settings: Settings) -> Self {
        let targets = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("rules[{i}].scale"), r.target.clone()))
            .collect();
        Self {
            targets,
            shared: Arc::new(Mutex::new(Shared {
                engine: Engine::new(rules, settings),
                clock: None,
                decisions: Vec::new(),
                refused: RefusedSpans::new(config.max_refused_ids),
                next_evaluation: None,
            })),
            interval: config.interval.get(),
            event_clock: config.clock == config::ClockConfig::Event,
            passthrough: config.passthrough,
            observe_refused: config.observe_refused,
            metrics: None,
            health: None,
            component: String::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panic under the lock leaves counts, not broken invariants: carry on.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn emit_decisions(&self, decisions: Vec<Decision>, out: &mut Emitter) {
        if decisions.is_empty() {
            return;
        }
        for d in &decisions {
            tracing::info!(
                component = %self.component,
                rule = %d.rule,
                target = %d.target,
                change = ?d.change,
                reason = %d.reason,
                "scale decision"
            );
        }
        out.emit(Signal::Decisions(decisions));
    }

    /// Publishes what the engine counted since the last call, and the stale rules.
    fn publish(&mut self) {
        let mut guard = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let shared = &mut *guard;
        let stale_changed = shared.engine.take_stale_change();
        if let Some(metrics) = self.metrics.as_mut() {
            metrics.publish(&mut shared.engine, &shared.refused);
        }
        if stale_changed && let Some(health) = &self.health {
            let stale: Vec<&str> = shared
                .engine
                .rules()
                .filter(|r| r.stale)
                .map(|r| r.name)
                .collect();
            health.ready(stale_detail(&stale));
            if !stale.is_empty() {
                tracing::warn!(
                    component = %self.component,
                    rules = ?stale,
                    "rules are stale: their operations sent no spans; they hold (no scale-down)"
                );
            }
        }
    }
}

/// The `/readyz` detail for the stale rules: staleness shows there without making the engine
/// unready, because a quiet operation is not a broken pipeline.
fn stale_detail(stale: &[&str]) -> Option<String> {
    if stale.is_empty() {
        return None;
    }
    let mut detail = format!(
        "{} stale rule(s), holding (no spans within stale_after): {}",
        stale.len(),
        stale
            .iter()
            .take(MAX_STALE_LISTED)
            .copied()
            .collect::<Vec<_>>()
            .join(", ")
    );
    if stale.len() > MAX_STALE_LISTED {
        detail.push_str(&format!(" and {} more", stale.len() - MAX_STALE_LISTED));
    }
    Some(detail)
}

#[async_trait]
impl Processor for LatencyRules {
    fn scale_targets(&self) -> Vec<(String, Target)> {
        self.targets.clone()
    }

    async fn start(&mut self, ctx: &ProcessorContext) -> Result<(), ComponentError> {
        self.component = ctx.id.to_string();
        let metrics = {
            let mut shared = self.lock();
            shared.clock = Some(WallClock::now());
            Metrics::new(&self.component, &shared.engine)
        };
        self.metrics = Some(metrics);
        ctx.health.ready(None);
        self.health = Some(ctx.health.clone());
        Ok(())
    }

    fn tap(&self) -> Option<Arc<dyn Tap>> {
        self.observe_refused
            .then(|| Arc::new(RulesTap(self.shared.clone())) as Arc<dyn Tap>)
    }

    async fn process(&mut self, signal: Signal, out: &mut Emitter) -> Result<(), ComponentError> {
        match signal {
            Signal::Traces(traces) => {
                let decisions = {
                    let mut guard = self.lock();
                    let shared = &mut *guard;
                    let now = shared.wall_now();
                    if shared.refused.is_empty() {
                        shared.engine.observe(&traces, now, &mut shared.decisions);
                    } else {
                        // Spans of a retried batch the rules counted when it was refused.
                        let refused = &mut shared.refused;
                        shared
                            .engine
                            .observe_where(&traces, now, &mut shared.decisions, |span| {
                                !refused.take(span)
                            });
                    }
                    if self.event_clock {
                        shared.evaluate_on_event_time(self.interval);
                    }
                    std::mem::take(&mut shared.decisions)
                };
                // Decisions first: they are small and time-sensitive, the batch may be large.
                self.emit_decisions(decisions, out);
                if self.passthrough {
                    out.emit(Signal::Traces(traces));
                }
            }
            // Not taken by this processor, so the engine does not route them here; pass them
            // on untouched if it ever does.
            other => out.emit(other),
        }
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    async fn tick(&mut self, out: &mut Emitter) -> Result<(), ComponentError> {
        let decisions = {
            let mut guard = self.lock();
            let shared = &mut *guard;
            // On event time the evaluation runs in `process`; the tick only hands on what the
            // tap decided and publishes.
            if !self.event_clock {
                let now = shared.wall_now();
                shared.engine.tick(now, &mut shared.decisions);
            }
            std::mem::take(&mut shared.decisions)
        };
        self.emit_decisions(decisions, out);
        self.publish();
        Ok(())
    }

    async fn shutdown(
        &mut self,
        _out: &mut Emitter,
        _deadline: Instant,
    ) -> Result<(), ComponentError> {
        // Nothing is held back: batches pass on as they come and decisions leave in the cycle
        // that made them. No last evaluation either, since a half-drained pipeline is no
        // evidence to scale on. Publishing twice is harmless (deltas are zero).
        self.publish();
        Ok(())
    }
}

/// Metric handles, registered once at start (per-operation ones when the operation is first
/// seen), and the totals already published.
struct Metrics {
    component: String,
    late: Counter,
    early: Counter,
    invalid: Counter,
    overflow: Counter,
    conflated: Counter,
    held: Counter,
    inhibited: Counter,
    refused_observed: Counter,
    refused_repeats: Counter,
    refused_forgotten: Counter,
    /// `(observed, repeats, forgotten)` of the refused spans, already published.
    refused_published: (u64, u64, u64),
    stale_rules: Gauge,
    operations: Gauge,
    rules: Vec<RuleMetrics>,
    ops: Vec<Option<OperationMetrics>>,
    published: Counters,
}

struct RuleMetrics {
    up: Counter,
    down: Counter,
    evicted: Counter,
    counted: Counter,
    window_spans: Gauge,
    window_breaches: Gauge,
    stale: Gauge,
    published: (u64, u64, u64, u64),
}

struct OperationMetrics {
    buckets: [Counter; LATENCY_BUCKET_COUNT],
    count: Counter,
    sum: Gauge,
    sum_seconds: f64,
}

impl Metrics {
    fn new(component: &str, engine: &Engine) -> Self {
        let dropped = |reason: &'static str| {
            metrics::counter!(
                "tracescale_latency_rules_spans_dropped_total",
                "component" => component.to_string(),
                "reason" => reason
            )
        };
        let rules = engine
            .rules()
            .map(|r| {
                let name = r.name.to_string();
                let decisions = |direction: &'static str| {
                    metrics::counter!(
                        "tracescale_latency_rules_decisions_total",
                        "component" => component.to_string(),
                        "rule" => name.clone(),
                        "direction" => direction
                    )
                };
                let labels = [("component", component.to_string()), ("rule", name.clone())];
                RuleMetrics {
                    up: decisions("up"),
                    down: decisions("down"),
                    evicted: metrics::counter!(
                        "tracescale_latency_rules_window_evicted_total",
                        &labels
                    ),
                    counted: metrics::counter!(
                        "tracescale_latency_rules_rule_spans_total",
                        &labels
                    ),
                    window_spans: metrics::gauge!("tracescale_latency_rules_window_spans", &labels),
                    window_breaches: metrics::gauge!(
                        "tracescale_latency_rules_window_breaches",
                        &labels
                    ),
                    stale: metrics::gauge!("tracescale_latency_rules_rule_stale", &labels),
                    published: (0, 0, 0, 0),
                }
            })
            .collect();
        let one =
            |name: &'static str| metrics::counter!(name, "component" => component.to_string());
        Self {
            component: component.to_string(),
            late: dropped("late"),
            early: dropped("early"),
            invalid: dropped("invalid"),
            overflow: one("tracescale_latency_rules_operations_overflow_total"),
            conflated: one("tracescale_latency_rules_conflated_total"),
            held: one("tracescale_latency_rules_scale_downs_held_total"),
            inhibited: one("tracescale_latency_rules_scale_ups_inhibited_total"),
            refused_observed: one("tracescale_latency_rules_refused_spans_observed_total"),
            refused_repeats: one("tracescale_latency_rules_repeated_spans_skipped_total"),
            refused_forgotten: one("tracescale_latency_rules_refused_ids_forgotten_total"),
            refused_published: (0, 0, 0),
            stale_rules: metrics::gauge!("tracescale_latency_rules_stale_rules", "component" => component.to_string()),
            operations: metrics::gauge!("tracescale_latency_rules_operations", "component" => component.to_string()),
            rules,
            ops: Vec::new(),
            published: Counters::default(),
        }
    }

    fn publish(&mut self, engine: &mut Engine, refused: &RefusedSpans) {
        let (observed, repeats, forgotten) = self.refused_published;
        self.refused_observed.increment(refused.observed - observed);
        self.refused_repeats.increment(refused.repeats - repeats);
        self.refused_forgotten
            .increment(refused.forgotten - forgotten);
        self.refused_published = (refused.observed, refused.repeats, refused.forgotten);

        let now = engine.counters();
        let was = self.published;
        self.late.increment(now.late - was.late);
        self.early.increment(now.early - was.early);
        self.invalid.increment(now.invalid - was.invalid);
        self.overflow
            .increment(now.operations_overflow - was.operations_overflow);
        self.conflated.increment(now.conflated - was.conflated);
        self.held.increment(now.held - was.held);
        self.inhibited.increment(now.inhibited - was.inhibited);
        self.published = now;

        let mut stale = 0;
        for (m, r) in self.rules.iter_mut().zip(engine.rules()) {
            let (up, down, evicted, counted) = m.published;
            m.up.increment(r.scaled_up - up);
            m.down.increment(r.scaled_down - down);
            m.evicted.increment(r.evicted - evicted);
            m.counted.increment(r.counted - counted);
            m.published = (r.scaled_up, r.scaled_down, r.evicted, r.counted);
            m.window_spans.set(r.window_count as f64);
            m.window_breaches.set(r.breaches as f64);
            m.stale.set(if r.stale { 1.0 } else { 0.0 });
            stale += usize::from(r.stale);
        }
        self.stale_rules.set(stale as f64);
        self.operations.set(engine.operation_count() as f64);

        let component = &self.component;
        let ops = &mut self.ops;
        engine.drain_operation_stats(|slot, service, operation, counts| {
            if ops.len() <= slot {
                ops.resize_with(slot + 1, || None);
            }
            let m = ops[slot]
                .get_or_insert_with(|| OperationMetrics::new(component, service, operation));
            // Prometheus buckets are cumulative: `le` counts every span at or below it.
            let mut cumulative = 0;
            for (bucket, n) in m.buckets.iter().zip(counts.buckets) {
                cumulative += n;
                bucket.increment(cumulative);
            }
            m.count.increment(counts.count);
            m.sum_seconds += counts.sum_nanos as f64 / 1e9;
            m.sum.set(m.sum_seconds);
        });
    }
}

impl OperationMetrics {
    fn new(component: &str, service: &str, operation: &str) -> Self {
        let labels = [
            ("component", component.to_string()),
            ("service", service.to_string()),
            ("operation", operation.to_string()),
        ];
        let buckets = std::array::from_fn(|i| {
            let le = LATENCY_BUCKETS_SECONDS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let mut labels = labels.to_vec();
            labels.push(("le", le));
            metrics::counter!(
                "tracescale_latency_rules_operation_latency_seconds_bucket",
                &labels
            )
        });
        Self {
            buckets,
            count: metrics::counter!(
                "tracescale_latency_rules_operation_latency_seconds_count",
                &labels
            ),
            sum: metrics::gauge!(
                "tracescale_latency_rules_operation_latency_seconds_sum",
                &labels
            ),
            sum_seconds: 0.0,
        }
    }
}

inventory::submit! {
    ComponentFactory {
        type_name: "latency_rules",
        description: "turns repeated latency breaches of an operation into scale decisions",
        takes: &[SignalKind::Traces],
        emits: &[SignalKind::Traces, SignalKind::Decisions],
        config_keys: field_names::<LatencyRulesConfig>,
        build: Build::Processor(config::build),
    }
}

#[cfg(test)]
mod tests;
