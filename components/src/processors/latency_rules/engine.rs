//! The rule engine: plain synchronous code with no tokio and no metrics globals in it, so that it
//! can be tested on explicit timestamps and benchmarked alone.
//!
//! # Time
//!
//! Windows slide on event time, the end time of spans. The engine's *event clock* is the latest
//! end time of any span it accepted (the watermark), but never behind the engine's wall clock
//! minus `allowed_lateness`: when spans stop arriving, windows keep sliding and a silent
//! operation goes stale instead of freezing its last window. The wall clock is handed in by the
//! caller (the processor maps tokio's clock onto Unix time), so tests drive it directly.
//!
//! A span is *late* when it ended more than `allowed_lateness` before the event clock, and
//! *early* when it ended more than `allowed_lateness` after the wall clock (a host whose clock
//! runs ahead). Both are counted and kept out of every window; they still count in the
//! per-operation statistics.
//!
//! # Hot path
//!
//! Per resource, one hash lookup of `service.name`; per span, one hash lookup of the span name in
//! that service's table, which holds both the rules fed by the operation (exact and glob rules,
//! resolved once when the operation is first seen) and its statistics slot. A rule keeps a ring
//! of `(end time, duration, trace id, anomaly score)` samples sorted by end time and a running
//! breach count, so the firing check is O(1); percentiles are computed only when a rule fires.
//! Nothing is allocated per span once an operation is known.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use tracescale_core::attributes::service_name;
use tracescale_core::signal::{Decision, ScaleChange, Target, Traces};

use super::clock::Time;
use super::decision::Candidate;
use super::hash::{FastMap, Seeded};
use super::operation_stats::OperationStats;
pub use super::operation_stats::{LATENCY_BUCKET_COUNT, LATENCY_BUCKETS_SECONDS, LatencyCounts};
pub use super::rule::{Condition, OperationMatcher, Rule, RuleStatus, ScaleDown};
use super::rule::{RuleState, Seen, feed};
use super::window::Window;

/// Engine-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// How far behind the event clock a span may end and still count.
    pub allowed_lateness: Duration,
    /// A rule that received no matching span for this long is stale and holds: on the wall
    /// clock from the last one's arrival (on event time, the event clock).
    pub stale_after: Duration,
    /// Distinct service::operation pairs with statistics.
    pub max_operations: usize,
    /// Samples a rule window keeps; the oldest is evicted beyond.
    pub max_window_samples: usize,
    /// Run on event time alone: the clock is the latest span end, never the wall clock, and no
    /// span is early. For replays and simulations whose timestamps are not now.
    pub event_clock: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::from_secs(5),
            stale_after: Duration::from_secs(60),
            max_operations: 1000,
            max_window_samples: 10_000,
            event_clock: false,
        }
    }
}

/// Engine-wide counts, cumulative since the engine was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Spans matched by a rule that ended too long before the event clock.
    pub late: u64,
    /// Spans matched by a rule that ended too far after the wall clock.
    pub early: u64,
    /// Spans with no end time or an end before their start.
    pub invalid: u64,
    /// Spans of an operation that found no statistics slot (`max_operations` reached).
    pub operations_overflow: u64,
    /// Decisions merged into another decision for the same target in the same cycle.
    pub conflated: u64,
    /// Scale-downs held because a rule on the same target was stale or cooling down.
    pub held: u64,
    /// Scale-ups withheld because a rule in the rule's `inhibited_by` was breaching.
    pub inhibited: u64,
}

/// The rules of one service, and its operations.
#[derive(Debug)]
struct ServiceEntry {
    /// Operations seen or named by an exact rule, as indexes into `Engine::op_entries`.
    operations: FastMap<u32>,
    /// Rules of this service whose operation is a glob.
    globs: Vec<u32>,
}

impl ServiceEntry {
    fn new(seed: Seeded) -> Self {
        Self {
            operations: HashMap::with_hasher(seed),
            globs: Vec::new(),
        }
    }
}

/// One service::operation the engine knows.
#[derive(Debug)]
struct OperationEntry {
    service: usize,
    /// Rules fed by this operation: exact rules and the globs that match it, in rule order.
    rules: Box<[u32]>,
    /// Statistics slot, or `NO_STATS` until the operation is seen with a slot free.
    stats: u32,
}

const NO_STATS: u32 = u32::MAX;

/// Evaluates latency rules over trace batches and turns breaches into scale decisions.
#[derive(Debug)]
pub struct Engine {
    stale_after: u64,
    max_operations: usize,
    pub(super) rules: Vec<RuleState>,
    pub(super) targets: Vec<Target>,
    pub(super) rules_by_target: Vec<Vec<usize>>,
    services: FastMap<usize>,
    service_entries: Vec<ServiceEntry>,
    service_names: Vec<Box<str>>,
    seed: Seeded,
    op_entries: Vec<OperationEntry>,
    operations: Vec<OperationStats>,
    time: Time,
    started: bool,
    dirty: Vec<usize>,
    candidates: Vec<Candidate>,
    pub(super) scratch: Vec<u64>,
    pub(super) counters: Counters,
    stale_changed: bool,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Engine {
    /// An engine for `rules`, which the config already validated (unique names, non-empty
    /// matchers).
    pub fn new(rules: Vec<Rule>, settings: EngineSettings) -> Self {
        let cap = settings.max_window_samples.max(1);
        let mut targets: Vec<Target> = Vec::new();
        let mut rules_by_target: Vec<Vec<usize>> = Vec::new();
        let seed = Seeded::random();
        let mut services: FastMap<usize> = HashMap::with_hasher(seed);
        let mut service_entries: Vec<ServiceEntry> = Vec::new();
        let mut service_names: Vec<Box<str>> = Vec::new();
        let mut op_entries: Vec<OperationEntry> = Vec::new();
        let mut states = Vec::with_capacity(rules.len());
        for (i, rule) in rules.into_iter().enumerate() {
            let target = match targets.iter().position(|t| *t == rule.target) {
                Some(t) => t,
                None => {
                    targets.push(rule.target.clone());
                    rules_by_target.push(Vec::new());
                    targets.len() - 1
                }
            };
            rules_by_target[target].push(i);
            let service = *services
                .entry(rule.service.as_str().into())
                .or_insert_with(|| {
                    service_entries.push(ServiceEntry::new(seed));
                    service_names.push(rule.service.as_str().into());
                    service_entries.len() - 1
                });
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            match &rule.operation {
                OperationMatcher::Exact(name) => {
                    let op = *service_entries[service]
                        .operations
                        .entry(name.as_str().into())
                        .or_insert_with(|| {
                            op_entries.push(OperationEntry {
                                service,
                                rules: Box::new([]),
                                stats: NO_STATS,
                            });
                            u32::try_from(op_entries.len() - 1).unwrap_or(u32::MAX)
                        });
                    let entry = &mut op_entries[op as usize];
                    let mut list = entry.rules.to_vec();
                    list.push(index);
                    entry.rules = list.into_boxed_slice();
                }
                OperationMatcher::Glob(_) => service_entries[service].globs.push(index),
            }
            let (below, period) = rule
                .scale_down
                .map_or((u64::MAX, u64::MAX), |d| (nanos(d.below), nanos(d.period)));
            states.push(RuleState {
                above: nanos(rule.above),
                window_nanos: nanos(rule.window),
                below,
                period,
                target,
                window: Window::new(cap),
                newest_breach: 0,
                disarmed_until: 0,
                last_seen: 0,
                last_arrival: 0,
                quiet_since: 0,
                unobserved: true,
                stale: false,
                dirty: false,
                scaled_up: 0,
                scaled_down: 0,
                evicted: 0,
                counted: 0,
                rule,
            });
        }
        // Exact operations also feed the glob rules of their service that match them; every
        // list is kept in rule order, so conflation ties go to the rule listed first.
        for entry in &mut service_entries {
            for (name, &op) in &entry.operations {
                let op = &mut op_entries[op as usize];
                let mut list = op.rules.to_vec();
                list.extend(
                    entry
                        .globs
                        .iter()
                        .filter(|&&g| states[g as usize].rule.operation.matches(name)),
                );
                list.sort_unstable();
                op.rules = list.into_boxed_slice();
            }
        }
        Self {
            stale_after: nanos(settings.stale_after),
            max_operations: settings.max_operations,
            rules: states,
            targets,
            rules_by_target,
            services,
            service_entries,
            service_names,
            seed,
            op_entries,
            operations: Vec::new(),
            time: Time {
                allowed_lateness: nanos(settings.allowed_lateness),
                event_only: settings.event_clock,
                ..Time::default()
            },
            started: false,
            dirty: Vec::new(),
            candidates: Vec::new(),
            scratch: Vec::new(),
            counters: Counters::default(),
            stale_changed: false,
        }
    }

    /// The event clock, in nanoseconds since the Unix epoch: the latest accepted span end, but
    /// never behind the wall clock minus `allowed_lateness`.
    pub fn clock(&self) -> u64 {
        self.time.clock()
    }

    /// Starts every rule's staleness and stabilisation periods at `wall_now`, the engine's wall
    /// clock in nanoseconds since the Unix epoch (on event time, at the first span instead).
    /// Without it they start with the first batch or tick.
    pub fn start(&mut self, wall_now: u64) {
        self.advance(wall_now);
    }

    /// Moves the wall clock (never backwards). The first call starts every rule's staleness and
    /// stabilisation periods.
    fn advance(&mut self, wall_now: u64) {
        self.time.wall = self.time.wall.max(wall_now);
        // On event time the periods start with the first span, not with the first call.
        let waiting_for_first_span = self.time.event_only && self.time.watermark == 0;
        if !self.started && !waiting_for_first_span {
            self.started = true;
            // On the wall clock, now, not the event clock: that trails the wall by
            // `allowed_lateness` before the first span, and a period started there would end
            // that much early. Calm then counts from the first span (`unobserved`).
            let wall = !self.time.event_only;
            let clock = self.time.clock();
            let now = if wall {
                clock.max(self.time.wall)
            } else {
                clock
            };
            for rule in &mut self.rules {
                rule.last_seen = now;
                rule.last_arrival = self.time.wall;
                rule.quiet_since = now;
                rule.unobserved = wall;
            }
        }
    }

    /// Records a batch and evaluates the rules it fed (scale-ups only). `wall_now` is the
    /// engine's wall clock in nanoseconds since the Unix epoch. Decisions are appended to `out`,
    /// at most one per target.
    pub fn observe(&mut self, traces: &Traces, wall_now: u64, out: &mut Vec<Decision>) {
        self.observe_where(traces, wall_now, out, |_| true);
    }

    /// [`Engine::observe`], where only the spans `feed_rules` accepts reach the rules; every
    /// span counts in the operation statistics. `feed_rules` is asked only about spans some
    /// rule's operation matches. The processor uses it to keep a retried span out of the rules
    /// when they already counted it from a refused batch.
    pub fn observe_where(
        &mut self,
        traces: &Traces,
        wall_now: u64,
        out: &mut Vec<Decision>,
        mut feed_rules: impl FnMut(&Span) -> bool,
    ) {
        self.advance(wall_now);
        for resource_spans in &traces.resource_spans {
            let name = service_name(resource_spans.resource.as_ref());
            let mut service = self.services.get(name).copied();
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    service = self.observe_span(service, name, span, &mut feed_rules);
                }
            }
        }
        self.evaluate(false, out);
    }

    /// Records the spans of a batch that was refused, in the rule windows only: the operation
    /// statistics count what the pipeline processed. `first_sight` is asked about each span a
    /// rule's operation matches, and the span is counted only when it says yes; it is never
    /// asked about the others, which keeps the cost of a refused batch to what the rules need.
    /// Unlike [`Engine::observe`], no entry is created for an operation seen for the first
    /// time.
    pub fn observe_refused(
        &mut self,
        traces: &Traces,
        wall_now: u64,
        out: &mut Vec<Decision>,
        mut first_sight: impl FnMut(&Span) -> bool,
    ) {
        self.advance(wall_now);
        for resource_spans in &traces.resource_spans {
            let Some(service) = self
                .services
                .get(service_name(resource_spans.resource.as_ref()))
                .copied()
            else {
                continue;
            };
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
                    if end == 0 || end < start {
                        continue;
                    }
                    let known = self.service_entries[service]
                        .operations
                        .get(span.name.as_str())
                        .copied();
                    match known {
                        Some(op) => {
                            let Self {
                                rules,
                                op_entries,
                                dirty,
                                counters,
                                time,
                                ..
                            } = self;
                            let rule_list = &op_entries[op as usize].rules;
                            if rule_list.is_empty() || !first_sight(span) {
                                continue;
                            }
                            let seen = Seen {
                                end,
                                duration: end - start,
                                span,
                            };
                            feed(rule_list, rules, dirty, counters, time, seen);
                        }
                        None => {
                            self.feed_untracked(
                                Some(service),
                                end,
                                end - start,
                                span,
                                &mut first_sight,
                            );
                        }
                    }
                }
            }
        }
        self.evaluate(false, out);
    }

    /// Records one span; returns the service slot, which the span may have created.
    fn observe_span(
        &mut self,
        service: Option<usize>,
        name: &str,
        span: &Span,
        feed_rules: &mut impl FnMut(&Span) -> bool,
    ) -> Option<usize> {
        let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
        if end == 0 || end < start {
            self.counters.invalid += 1;
            return service;
        }
        let duration = end - start;
        let mut service = service;
        let known = service.and_then(|s| {
            self.service_entries[s]
                .operations
                .get(span.name.as_str())
                .copied()
        });
        let Some(op) = known.or_else(|| self.track_operation(&mut service, name, &span.name))
        else {
            self.counters.operations_overflow += 1;
            self.feed_untracked(service, end, duration, span, feed_rules);
            return service;
        };

        let Self {
            rules,
            op_entries,
            operations,
            dirty,
            counters,
            time,
            max_operations,
            ..
        } = self;
        let entry = &mut op_entries[op as usize];
        if entry.stats == NO_STATS && operations.len() < *max_operations {
            entry.stats = u32::try_from(operations.len()).unwrap_or(NO_STATS);
            operations.push(OperationStats {
                service: entry.service,
                operation: span.name.as_str().into(),
                pending: LatencyCounts::default(),
                total: 0,
            });
        }
        match operations.get_mut(entry.stats as usize) {
            Some(stats) => {
                stats.pending.record(duration);
                stats.total += 1;
            }
            None => counters.operations_overflow += 1,
        }
        if !entry.rules.is_empty() && feed_rules(span) {
            let seen = Seen {
                end,
                duration,
                span,
            };
            feed(&entry.rules, rules, dirty, counters, time, seen);
        }
        service
    }

    /// Creates the entry of an operation seen for the first time (and its service's), while
    /// statistics slots remain: that cap is what bounds both tables. None when it is reached.
    fn track_operation(
        &mut self,
        service: &mut Option<usize>,
        service_name: &str,
        operation: &str,
    ) -> Option<u32> {
        if self.operations.len() >= self.max_operations {
            return None;
        }
        let s = match *service {
            Some(s) => s,
            None => {
                let s = self.service_entries.len();
                self.services.insert(service_name.into(), s);
                self.service_names.push(service_name.into());
                self.service_entries.push(ServiceEntry::new(self.seed));
                *service = Some(s);
                s
            }
        };
        let rules = &self.rules;
        let svc = &mut self.service_entries[s];
        let list: Box<[u32]> = svc
            .globs
            .iter()
            .copied()
            .filter(|&g| rules[g as usize].rule.operation.matches(operation))
            .collect();
        let op = u32::try_from(self.op_entries.len()).ok()?;
        self.op_entries.push(OperationEntry {
            service: s,
            rules: list,
            stats: NO_STATS,
        });
        svc.operations.insert(operation.into(), op);
        Some(op)
    }

    /// An operation without an entry (`max_operations` reached): its service's glob rules are
    /// matched on the spot, which costs more but loses nothing a rule needs.
    fn feed_untracked(
        &mut self,
        service: Option<usize>,
        end: u64,
        duration: u64,
        span: &Span,
        feed_rules: &mut impl FnMut(&Span) -> bool,
    ) {
        let Some(s) = service else {
            return;
        };
        let Self {
            rules,
            service_entries,
            dirty,
            counters,
            time,
            ..
        } = self;
        let mut asked = None;
        for &g in &service_entries[s].globs {
            if rules[g as usize].rule.operation.matches(&span.name) {
                // Asked once, on the first rule that matches.
                if !*asked.get_or_insert_with(|| feed_rules(span)) {
                    return;
                }
                let seen = Seen {
                    end,
                    duration,
                    span,
                };
                feed(&[g], rules, dirty, counters, time, seen);
            }
        }
    }

    /// Timed work: slides every window to the clock, evaluates scale-ups, scale-downs and
    /// staleness, and appends the conflated decisions to `out`.
    pub fn tick(&mut self, wall_now: u64, out: &mut Vec<Decision>) {
        self.advance(wall_now);
        self.evaluate(true, out);
    }

    /// One evaluation cycle. On arrival only the rules the batch fed are looked at, and only
    /// upwards; at tick, every rule, both ways.
    fn evaluate(&mut self, tick: bool, out: &mut Vec<Decision>) {
        let clock = self.clock();
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        let mut dirty = std::mem::take(&mut self.dirty);
        for &r in &dirty {
            self.rules[r].dirty = false;
        }
        if tick {
            let time = self.time;
            for (r, rule) in self.rules.iter_mut().enumerate() {
                rule.expire(clock);
                // On the wall clock, silence is timed from the last span's arrival: the event
                // clock trails the wall by `allowed_lateness` once spans stop, and `stale_after`
                // would silently grow by as much.
                let silence = if time.event_only {
                    clock.saturating_sub(rule.last_seen)
                } else {
                    time.wall.saturating_sub(rule.last_arrival)
                };
                let stale = silence >= self.stale_after;
                if stale != rule.stale {
                    rule.stale = stale;
                    self.stale_changed = true;
                }
                if stale {
                    // Silence is no evidence of speed: the stabilisation period starts over
                    // with the first span that comes back.
                    rule.quiet_since = rule.quiet_since.max(clock);
                    rule.unobserved = !time.event_only;
                }
                if rule.wants_up(clock) {
                    candidates.push(Candidate {
                        rule: r,
                        target: rule.target,
                        change: rule.rule.change,
                        up: true,
                    });
                } else if rule.wants_down(&time)
                    && let Some(down) = rule.rule.scale_down
                {
                    candidates.push(Candidate {
                        rule: r,
                        target: rule.target,
                        change: ScaleChange::Step(-i32::try_from(down.step).unwrap_or(i32::MAX)),
                        up: false,
                    });
                }
            }
        } else {
            for &r in &dirty {
                let rule = &mut self.rules[r];
                rule.expire(clock);
                if rule.wants_up(clock) {
                    candidates.push(Candidate {
                        rule: r,
                        target: rule.target,
                        change: rule.rule.change,
                        up: true,
                    });
                }
            }
        }
        dirty.clear();
        self.dirty = dirty;
        self.inhibit(&mut candidates, clock);
        if !candidates.is_empty() {
            self.conflate(&mut candidates, clock, out);
        }
        self.candidates = candidates;
    }

    /// Engine-wide counts.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The state of every rule, in config order.
    pub fn rules(&self) -> impl Iterator<Item = RuleStatus<'_>> {
        self.rules.iter().map(|r| RuleStatus {
            name: &r.rule.name,
            window_count: r.window.len(),
            breaches: r.window.breaches,
            stale: r.stale,
            scaled_up: r.scaled_up,
            scaled_down: r.scaled_down,
            evicted: r.evicted,
            counted: r.counted,
        })
    }

    /// True once after the set of stale rules changed (it is recomputed at tick).
    pub fn take_stale_change(&mut self) -> bool {
        std::mem::take(&mut self.stale_changed)
    }

    /// Operations with statistics (at most `max_operations`).
    pub fn operation_count(&self) -> usize {
        self.operations.len()
    }

    /// Spans counted for one service::operation since the engine was built.
    pub fn operation_total(&self, service: &str, operation: &str) -> Option<u64> {
        self.operations
            .iter()
            .find(|o| {
                &*o.operation == operation
                    && self.service_names.get(o.service).map(|s| &**s) == Some(service)
            })
            .map(|o| o.total)
    }

    /// Hands the latency counts gathered since the last drain to `f` as
    /// `(slot, service, operation, counts)`, for operations that saw spans, and resets them.
    /// Slots are stable and dense, so a caller can keep per-slot handles in a `Vec`.
    pub fn drain_operation_stats(&mut self, mut f: impl FnMut(usize, &str, &str, &LatencyCounts)) {
        for (slot, op) in self.operations.iter_mut().enumerate() {
            if op.pending.count == 0 {
                continue;
            }
            let service = self.service_names.get(op.service).map_or("", |s| s);
            f(slot, service, &op.operation, &op.pending);
            op.pending = LatencyCounts::default();
        }
    }
}

#[cfg(test)]
pub(super) mod test_support;
