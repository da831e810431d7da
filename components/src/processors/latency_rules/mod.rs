//! The `latency_rules` processor: turns repeated latency breaches of a service's operation into
//! scale decisions ("payments-db INSERT payments above 300 ms, 20 times within 10 s → one more
//! replica of statefulset/payments-db"), scales back down after a quiet stabilisation period,
//! and exports per-operation latency statistics. See README.md for every key and the behaviour.
//!
//! The algorithm lives in [`engine`], plain synchronous code; this module adapts it to the
//! [`Processor`] trait: it maps tokio's clock onto Unix time, emits decisions, publishes metrics
//! at each tick and reports stale rules in `/readyz`.

mod clock;
pub mod config;
mod decision;
pub mod engine;
mod hash;
mod metrics;
mod operation_stats;
mod percentile;
mod refused;
mod rule;
mod validate;
mod window;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use tracescale_core::component::{
    ComponentError, Emitter, HealthHandle, Processor, ProcessorContext, Tap,
};
use tracescale_core::config::field_names;
use tracescale_core::registry::{Build, ComponentFactory};
use tracescale_core::signal::{Decision, Signal, SignalKind, Target};

pub use config::LatencyRulesConfig;
use engine::{Engine, EngineSettings, Rule};
use metrics::Metrics;
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
    pub fn new(config: &LatencyRulesConfig, rules: Vec<Rule>, settings: EngineSettings) -> Self {
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
        "{}, holding (no spans within stale_after): {}",
        tracescale_core::words::count(stale.len() as u64, "stale rule"),
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
            let mut guard = self.lock();
            let shared = &mut *guard;
            let clock = WallClock::now();
            shared.clock = Some(clock);
            // The periods (staleness, the calm a scale-down waits for) start now, not with the
            // first batch or tick.
            shared.engine.start(clock.read());
            Metrics::new(&self.component, &shared.engine)
        };
        self.metrics = Some(metrics);
        ctx.health.ready(None);
        self.health = Some(ctx.health.clone());
        Ok(())
    }

    fn emits(&self) -> Option<Vec<SignalKind>> {
        (!self.passthrough).then(|| vec![SignalKind::Decisions])
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
                super::emit_decisions(&self.component, decisions, out);
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
        super::emit_decisions(&self.component, decisions, out);
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
#[cfg(test)]
mod time_tests;
