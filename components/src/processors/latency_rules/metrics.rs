//! The processor's metrics: decisions, spans dropped, windows and stale rules per rule, and the
//! per-operation latency histograms, published as deltas of what the engine counted.

use metrics::{Counter, Gauge};

use super::engine::{Counters, Engine, LATENCY_BUCKET_COUNT, LATENCY_BUCKETS_SECONDS};
use super::refused::RefusedSpans;

/// Metric handles, registered once at start (per-operation ones when the operation is first
/// seen), and the totals already published.
pub(super) struct Metrics {
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
    pub(super) fn new(component: &str, engine: &Engine) -> Self {
        describe();
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

    pub(super) fn publish(&mut self, engine: &mut Engine, refused: &RefusedSpans) {
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

/// HELP text for `/metrics`.
fn describe() {
    tracescale_core::telemetry::describe(
        &[
            (
                "tracescale_latency_rules_decisions_total",
                "Decisions emitted after conflation, by rule and direction (up, down).",
            ),
            (
                "tracescale_latency_rules_conflated_total",
                "Decisions merged into another for the same target in one cycle.",
            ),
            (
                "tracescale_latency_rules_scale_downs_held_total",
                "Scale-downs held because a rule on the target was stale or cooling down.",
            ),
            (
                "tracescale_latency_rules_scale_ups_inhibited_total",
                "Scale-ups withheld because a rule in inhibited_by was breaching.",
            ),
            (
                "tracescale_latency_rules_spans_dropped_total",
                "Spans kept out of the rule windows, by reason (late, early, invalid); they still pass on.",
            ),
            (
                "tracescale_latency_rules_window_evicted_total",
                "Samples evicted from a full rule window (max_window_samples).",
            ),
            (
                "tracescale_latency_rules_rule_spans_total",
                "Spans a rule took into its window, queued or refused.",
            ),
            (
                "tracescale_latency_rules_operations_overflow_total",
                "Spans of service::operation pairs beyond max_operations.",
            ),
            (
                "tracescale_latency_rules_refused_spans_observed_total",
                "Spans of refused batches that a rule's operation matched, counted by the rules.",
            ),
            (
                "tracescale_latency_rules_repeated_spans_skipped_total",
                "Spans seen again after their batch was refused (a client's retry), not counted twice.",
            ),
            (
                "tracescale_latency_rules_refused_ids_forgotten_total",
                "Refused span ids forgotten (max_refused_ids) before a retry came.",
            ),
            (
                "tracescale_latency_rules_operation_latency_seconds_bucket",
                "Spans of a service::operation by latency, cumulative buckets in seconds.",
            ),
            (
                "tracescale_latency_rules_operation_latency_seconds_count",
                "Spans of a service::operation.",
            ),
            (
                "tracescale_latency_rules_operation_latency_seconds_sum",
                "Total duration of the spans of a service::operation, in seconds.",
            ),
        ],
        &[
            (
                "tracescale_latency_rules_window_spans",
                "Samples in a rule's window.",
            ),
            (
                "tracescale_latency_rules_window_breaches",
                "Breaching samples in a rule's window.",
            ),
            (
                "tracescale_latency_rules_rule_stale",
                "1 while a rule is stale (no matching span within stale_after).",
            ),
            ("tracescale_latency_rules_stale_rules", "Stale rules."),
            (
                "tracescale_latency_rules_operations",
                "service::operation pairs with statistics.",
            ),
        ],
        &[],
    );
}
