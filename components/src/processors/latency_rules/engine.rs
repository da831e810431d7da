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

use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use tracescale_core::signal::{
    Decision, Evidence, MAX_EXEMPLARS, ReplicaLimits, ScaleChange, Target, Traces,
};

/// The span attribute an anomaly filter (hstree) writes its score to.
pub const ANOMALY_SCORE_ATTRIBUTE: &str = "tracescale.anomaly.score";

/// The resource attribute that names the service.
pub const SERVICE_NAME_ATTRIBUTE: &str = "service.name";

/// The service name used for resources without `service.name`, as the OpenTelemetry SDKs do.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Upper bounds, in seconds, of the per-operation latency histogram buckets; a last bucket
/// (`+Inf`) takes the rest.
pub const LATENCY_BUCKETS_SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for integer comparisons on the hot path.
const LATENCY_BUCKETS_NANOS: [u64; 13] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Number of histogram buckets, `+Inf` included.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKETS_NANOS.len() + 1;

/// How a rule matches span names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationMatcher {
    /// The span name equals this string.
    Exact(String),
    /// The span name matches this pattern, where `*` stands for any run of characters.
    Glob(String),
}

impl OperationMatcher {
    /// A glob when the text holds a `*`, otherwise an exact name.
    pub fn parse(text: &str) -> Self {
        if text.contains('*') {
            OperationMatcher::Glob(text.to_string())
        } else {
            OperationMatcher::Exact(text.to_string())
        }
    }

    /// True when `operation` matches.
    pub fn matches(&self, operation: &str) -> bool {
        match self {
            OperationMatcher::Exact(name) => name == operation,
            OperationMatcher::Glob(pattern) => glob_match(pattern.as_bytes(), operation.as_bytes()),
        }
    }

    /// The name or pattern as written.
    pub fn as_str(&self) -> &str {
        match self {
            OperationMatcher::Exact(s) | OperationMatcher::Glob(s) => s,
        }
    }
}

/// `*`-only wildcard matching, iterative with a single backtrack point (linear in practice,
/// never recursive, so a hostile span name cannot blow the stack).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// When a rule scales up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// At least `count` matching spans above the threshold within the window.
    Count {
        /// Breaches needed.
        count: u32,
    },
    /// The `percentile` of the window (nearest rank) above the threshold, over at least
    /// `min_samples` spans.
    Percentile {
        /// In (0, 100].
        percentile: f64,
        /// Spans the window must hold before the percentile means anything.
        min_samples: u32,
    },
}

/// The way back down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleDown {
    /// Every matching span of the stabilisation period must be faster than this.
    pub below: Duration,
    /// The stabilisation period.
    pub period: Duration,
    /// Replicas removed per decision.
    pub step: u32,
}

/// One rule, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name, carried by its decisions.
    pub name: String,
    /// `service.name` of the resource.
    pub service: String,
    /// Span name.
    pub operation: OperationMatcher,
    /// Span attributes that must equal these strings.
    pub attributes: Vec<(String, String)>,
    /// OTLP span kind (`SpanKind as i32`), if the rule restricts it.
    pub span_kind: Option<i32>,
    /// A span breaches when its duration is above this.
    pub above: Duration,
    /// When the rule fires upwards.
    pub condition: Condition,
    /// Length of the sliding window.
    pub window: Duration,
    /// The workload to scale.
    pub target: Target,
    /// The change a scale-up asks for.
    pub change: ScaleChange,
    /// Replica bounds carried by the decisions.
    pub limits: ReplicaLimits,
    /// The way back down, if the rule has one.
    pub scale_down: Option<ScaleDown>,
    /// For a vertical rule: the container resources its decisions set.
    pub resources: Option<tracescale_core::signal::ContainerResources>,
    /// Rules (indexes into the engine's list) whose condition, while it holds, keeps this rule
    /// from scaling up: "scale the workers on queueing only while the database is healthy".
    pub inhibited_by: Vec<usize>,
}

/// Engine-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How far behind the event clock a span may end and still count.
    pub allowed_lateness: Duration,
    /// A rule whose operation sent no span for this long is stale and holds.
    pub stale_after: Duration,
    /// Distinct service::operation pairs with statistics.
    pub max_operations: usize,
    /// Samples a rule window keeps; the oldest is evicted beyond.
    pub max_window_samples: usize,
    /// Run on event time alone: the clock is the latest span end, never the wall clock, and no
    /// span is early. For replays and simulations whose timestamps are not now.
    pub event_clock: bool,
}

impl Default for Settings {
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

/// What one rule looks like now, for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleStatus<'a> {
    /// The rule's name.
    pub name: &'a str,
    /// Samples in its window.
    pub window_count: usize,
    /// Breaching samples in its window.
    pub breaches: usize,
    /// True when its operation sent nothing for `stale_after`.
    pub stale: bool,
    /// Scale-ups it decided.
    pub scaled_up: u64,
    /// Scale-downs it decided.
    pub scaled_down: u64,
    /// Samples evicted from its full window.
    pub evicted: u64,
    /// Spans it took into its window since start, queued or refused.
    pub counted: u64,
}

/// Latency counts of one service::operation since the last drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyCounts {
    /// Spans per bucket of [`LATENCY_BUCKETS_SECONDS`], `+Inf` last (not cumulative).
    pub buckets: [u64; LATENCY_BUCKET_COUNT],
    /// Spans.
    pub count: u64,
    /// Sum of the durations, in nanoseconds.
    pub sum_nanos: u64,
}

impl LatencyCounts {
    fn record(&mut self, duration: u64) {
        let bucket = LATENCY_BUCKETS_NANOS.partition_point(|&bound| bound < duration);
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(duration);
    }
}

/// Statistics of one service::operation.
#[derive(Debug)]
struct OperationStats {
    service: usize,
    operation: Box<str>,
    pending: LatencyCounts,
    total: u64,
}

/// One matching span, as a window keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    end: u64,
    duration: u64,
    trace_id: [u8; 16],
    /// NaN when the span was not tagged (or did not breach: only breaches are looked at).
    score: f32,
}

/// How far an out-of-order sample is walked back before the window is bisected instead.
const SHORT_WALK: usize = 16;

/// A rule's samples, sorted by end time, at most `cap` of them.
#[derive(Debug)]
struct Window {
    samples: VecDeque<Sample>,
    breaches: usize,
    cap: usize,
}

impl Window {
    fn new(cap: usize) -> Self {
        Self {
            samples: VecDeque::new(),
            breaches: 0,
            cap,
        }
    }

    /// Inserts in end-time order; returns true when a sample was evicted (or refused) because
    /// the window was full.
    fn insert(&mut self, sample: Sample, above: u64) -> bool {
        let mut evicted = false;
        if self.samples.len() >= self.cap {
            evicted = true;
            match self.samples.front() {
                // Older than everything kept: it would be the next one out anyway.
                Some(front) if sample.end < front.end => return true,
                _ => self.pop_front(above),
            }
        }
        if self.samples.len() == self.samples.capacity() {
            // Grow by doubling but never past the cap, so a full window holds exactly `cap`.
            let want = (self.samples.len().max(8) * 2).min(self.cap);
            self.samples
                .reserve_exact(want.saturating_sub(self.samples.len()));
        }
        if sample.duration > above {
            self.breaches += 1;
        }
        match self.samples.back() {
            Some(back) if sample.end < back.end => {
                // Out of order (a late or reordered span): keep the ring sorted so that expiry
                // from the front stays exact. Spans are usually only a little out of order, so
                // walk back a few samples (cache-friendly) before bisecting.
                let mut at = self.samples.len() - 1;
                let mut steps = 0;
                while at > 0 && self.samples[at - 1].end > sample.end {
                    if steps == SHORT_WALK {
                        at = self.samples.partition_point(|s| s.end <= sample.end);
                        break;
                    }
                    at -= 1;
                    steps += 1;
                }
                self.samples.insert(at, sample);
            }
            _ => self.samples.push_back(sample),
        }
        evicted
    }

    fn pop_front(&mut self, above: u64) {
        if let Some(s) = self.samples.pop_front()
            && s.duration > above
        {
            self.breaches -= 1;
        }
    }

    /// Drops samples that ended at or before `cutoff`.
    fn expire(&mut self, cutoff: u64, above: u64) {
        while self.samples.front().is_some_and(|s| s.end <= cutoff) {
            self.pop_front(above);
        }
    }

    fn len(&self) -> usize {
        self.samples.len()
    }
}

/// A rule and its running state.
#[derive(Debug)]
struct RuleState {
    rule: Rule,
    above: u64,
    window_nanos: u64,
    below: u64,
    period: u64,
    target: usize,
    window: Window,
    /// End time of the newest breach seen; the rule re-arms once it has left the window.
    newest_breach: u64,
    /// The rule does not fire before the event clock reaches this.
    disarmed_until: u64,
    /// End time of the newest matching span.
    last_seen: u64,
    /// Start of the current stabilisation period for scale-down.
    quiet_since: u64,
    stale: bool,
    dirty: bool,
    scaled_up: u64,
    scaled_down: u64,
    evicted: u64,
    /// Spans it took into its window since start.
    counted: u64,
}

impl RuleState {
    fn matches(&self, span: &Span) -> bool {
        if self.rule.span_kind.is_some_and(|kind| kind != span.kind) {
            return false;
        }
        self.rule
            .attributes
            .iter()
            .all(|(key, value)| string_attribute(&span.attributes, key) == Some(value.as_str()))
    }

    fn record(&mut self, seen: Seen<'_>, score: &mut Option<f32>) {
        let Seen {
            end,
            duration,
            span,
        } = seen;
        self.last_seen = self.last_seen.max(end);
        if self.rule.scale_down.is_some() && duration >= self.below {
            self.quiet_since = self.quiet_since.max(end);
        }
        let breach = duration > self.above;
        let score = if breach {
            self.newest_breach = self.newest_breach.max(end);
            *score.get_or_insert_with(|| anomaly_score(&span.attributes))
        } else {
            f32::NAN
        };
        let sample = Sample {
            end,
            duration,
            trace_id: trace_id(&span.trace_id),
            score,
        };
        if self.window.insert(sample, self.above) {
            self.evicted += 1;
        }
    }

    fn expire(&mut self, clock: u64) {
        self.window
            .expire(clock.saturating_sub(self.window_nanos), self.above);
    }

    /// True when the up condition holds and the rule is armed.
    fn wants_up(&self, clock: u64) -> bool {
        clock >= self.disarmed_until && self.condition_holds()
    }

    /// The rule's condition over its window as it stands (call `expire` first).
    fn condition_holds(&self) -> bool {
        let n = self.window.len();
        let breaches = self.window.breaches;
        match self.rule.condition {
            Condition::Count { count } => breaches >= count as usize,
            Condition::Percentile {
                percentile,
                min_samples,
            } => {
                // The nearest-rank percentile is above the threshold exactly when fewer than
                // `rank` samples are at or below it, so the breach count decides without sorting.
                n > 0 && n >= min_samples as usize && n - breaches < rank(percentile, n)
            }
        }
    }

    /// True when every matching span of the stabilisation period was fast, the operation is not
    /// stale, and it did send spans in that period.
    fn wants_down(&self, clock: u64) -> bool {
        self.rule.scale_down.is_some()
            && !self.stale
            && clock >= self.quiet_since.saturating_add(self.period)
            && self.last_seen.saturating_add(self.period) > clock
    }
}

/// A decision a rule wants in this cycle, before conflation.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    rule: usize,
    target: usize,
    change: ScaleChange,
    up: bool,
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

/// The hash of the service and operation tables: one multiply-rotate per 8 bytes, seeded per
/// engine. SipHash (std's default) cost a third of the per-span time; the tables hold only the
/// operations rules name plus at most `max_operations` others, which bounds what colliding
/// names sent on purpose could cost.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seeded(u64);

impl Seeded {
    pub(super) fn random() -> Self {
        Self(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl BuildHasher for Seeded {
    type Hasher = WordHasher;

    fn build_hasher(&self) -> WordHasher {
        WordHasher(self.0)
    }
}

/// See [`Seeded`].
#[derive(Debug, Clone, Copy)]
pub(super) struct WordHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl WordHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The table takes its bucket from the low bits and a tag from the top 7: mix both.
        let h = self.0 ^ (self.0 >> 29);
        h.wrapping_mul(K).rotate_left(26)
    }
}

type FastMap<V> = HashMap<Box<str>, V, Seeded>;

/// The two clocks, in nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
struct Time {
    /// Latest end time of an accepted span.
    watermark: u64,
    /// The engine's wall clock, as handed in.
    wall: u64,
    allowed_lateness: u64,
    /// `Settings::event_clock`.
    event_only: bool,
}

impl Time {
    fn clock(&self) -> u64 {
        if self.event_only {
            return self.watermark;
        }
        self.watermark
            .max(self.wall.saturating_sub(self.allowed_lateness))
    }
}

/// Evaluates latency rules over trace batches and turns breaches into scale decisions.
#[derive(Debug)]
pub struct Engine {
    stale_after: u64,
    max_operations: usize,
    rules: Vec<RuleState>,
    targets: Vec<Target>,
    rules_by_target: Vec<Vec<usize>>,
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
    scratch: Vec<u64>,
    counters: Counters,
    stale_changed: bool,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Engine {
    /// An engine for `rules`, which the config already validated (unique names, non-empty
    /// matchers).
    pub fn new(rules: Vec<Rule>, settings: Settings) -> Self {
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
                quiet_since: 0,
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

    /// Moves the wall clock (never backwards). The first call starts every rule's staleness and
    /// stabilisation periods.
    fn advance(&mut self, wall_now: u64) {
        self.time.wall = self.time.wall.max(wall_now);
        // On event time the periods start with the first span, not with the first call.
        let waiting_for_first_span = self.time.event_only && self.time.watermark == 0;
        if !self.started && !waiting_for_first_span {
            self.started = true;
            let clock = self.clock();
            for rule in &mut self.rules {
                rule.last_seen = clock;
                rule.quiet_since = clock;
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
            let name = service_name(resource_spans);
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
            let Some(service) = self.services.get(service_name(resource_spans)).copied() else {
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
            for (r, rule) in self.rules.iter_mut().enumerate() {
                rule.expire(clock);
                let stale = clock.saturating_sub(rule.last_seen) >= self.stale_after;
                if stale != rule.stale {
                    rule.stale = stale;
                    self.stale_changed = true;
                }
                if stale {
                    // Silence is no evidence of speed: the stabilisation period starts over
                    // when spans come back.
                    rule.quiet_since = clock;
                }
                if rule.wants_up(clock) {
                    candidates.push(Candidate {
                        rule: r,
                        target: rule.target,
                        change: rule.rule.change,
                        up: true,
                    });
                } else if rule.wants_down(clock)
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

    /// Drops the scale-ups of rules one of whose inhibitors has any breach in its window. Not
    /// only while the inhibitor fires: a dependency that has just been scaled still drains the
    /// queues its slowness built up in front of its callers, and a single slow span of it in the
    /// window is enough to doubt that the callers are the cause.
    fn inhibit(&mut self, candidates: &mut Vec<Candidate>, clock: u64) {
        let before = candidates.len();
        let rules = &mut self.rules;
        candidates.retain(|c| {
            if !c.up {
                return true;
            }
            let inhibitors = rules[c.rule].rule.inhibited_by.clone();
            !inhibitors.into_iter().any(|i| {
                let inhibitor = &mut rules[i];
                inhibitor.expire(clock);
                inhibitor.window.breaches > 0
            })
        });
        self.counters.inhibited += (before - candidates.len()) as u64;
    }

    /// Merges the candidates of each target into one decision: the largest scale-up wins, a
    /// scale-down only survives when no scale-up exists and no rule on the target is stale or
    /// cooling down, and the smallest scale-down wins.
    fn conflate(&mut self, candidates: &mut [Candidate], clock: u64, out: &mut Vec<Decision>) {
        // Stable sort: within a target, rules stay in the order they are listed.
        candidates.sort_by_key(|c| (c.target, c.rule));
        for group in candidates.chunk_by(|a, b| a.target == b.target) {
            let target = group[0].target;
            let any_up = group.iter().any(|c| c.up);
            let winner = if any_up {
                // Every rule that fired upwards spent its breaches, winner or not.
                for c in group.iter().filter(|c| c.up) {
                    let rule = &mut self.rules[c.rule];
                    rule.disarmed_until = rule.newest_breach.saturating_add(rule.window_nanos);
                }
                group.iter().filter(|c| c.up).max_by(|a, b| {
                    up_rank(a.change)
                        .cmp(&up_rank(b.change))
                        .then(b.rule.cmp(&a.rule))
                })
            } else {
                let holding = self.rules_by_target[target].iter().any(|&r| {
                    let rule = &self.rules[r];
                    rule.stale || clock < rule.disarmed_until
                });
                if holding {
                    self.counters.held += group.len() as u64;
                    continue;
                }
                group.iter().max_by(|a, b| {
                    down_rank(a.change)
                        .cmp(&down_rank(b.change))
                        .then(b.rule.cmp(&a.rule))
                })
            };
            let Some(winner) = winner.copied() else {
                continue;
            };
            let merged = group.len() - 1;
            self.counters.conflated += merged as u64;
            // Any change to the target restarts the stabilisation period of every rule on it,
            // so that two rules cannot walk it down on consecutive ticks.
            for &r in &self.rules_by_target[target] {
                self.rules[r].quiet_since = clock;
            }
            let mut decision = self.decide(winner, clock);
            if merged > 0 {
                decision.reason.push_str(" (conflated with ");
                let losers = group.iter().filter(|c| c.rule != winner.rule);
                for (i, c) in losers.enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    let _ = write!(decision.reason, "{sep}{}", self.rules[c.rule].rule.name);
                }
                decision.reason.push(')');
            }
            let rule = &mut self.rules[winner.rule];
            if winner.up {
                rule.scaled_up += 1;
            } else {
                rule.scaled_down += 1;
            }
            out.push(decision);
        }
    }

    /// Builds the decision of a winning candidate, with its evidence.
    fn decide(&mut self, c: Candidate, clock: u64) -> Decision {
        let rule = &self.rules[c.rule];
        let evidence = evidence(rule, &mut self.scratch);
        let what = format!("{} {}", rule.rule.service, rule.rule.operation.as_str());
        let reason = if c.up {
            match rule.rule.condition {
                Condition::Count { count } => format!(
                    "{} of {} spans of {what} above {} within {} (rule needs {count})",
                    evidence.breaches,
                    evidence.window_count,
                    Latency(rule.rule.above),
                    Latency(rule.rule.window),
                ),
                Condition::Percentile { percentile, .. } => {
                    let value = percentile_of(&mut self.scratch, percentile);
                    format!(
                        "p{percentile} of {what} is {} over {} spans within {}, above {}",
                        Latency(Duration::from_nanos(value)),
                        evidence.window_count,
                        Latency(rule.rule.window),
                        Latency(rule.rule.above),
                    )
                }
            }
        } else {
            let below = rule.rule.scale_down.map(|d| d.below).unwrap_or_default();
            format!(
                "no span of {what} at or above {} for {} ({} spans within {})",
                Latency(below),
                Latency(Duration::from_nanos(rule.period)),
                evidence.window_count,
                Latency(rule.rule.window),
            )
        };
        Decision {
            target: self.targets[c.target].clone(),
            change: c.change,
            limits: rule.rule.limits,
            rule: rule.rule.name.clone(),
            reason,
            evidence,
            resources: rule.rule.resources.clone(),
            timestamp_unix_nano: clock,
        }
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

/// A span as the rules see it: when it ended, how long it took, and the span itself.
#[derive(Clone, Copy)]
struct Seen<'a> {
    end: u64,
    duration: u64,
    span: &'a Span,
}

/// Feeds one span to the rules of its operation that match its kind and attributes. The span is
/// judged late or early once, on the first rule that matches; a span no rule matches is not
/// judged at all.
#[inline]
fn feed(
    rule_list: &[u32],
    rules: &mut [RuleState],
    dirty: &mut Vec<usize>,
    counters: &mut Counters,
    time: &mut Time,
    seen: Seen<'_>,
) {
    let mut judged = false;
    let mut score = None;
    for &r in rule_list {
        let r = r as usize;
        let rule = &mut rules[r];
        if !rule.matches(seen.span) {
            continue;
        }
        if !judged {
            judged = true;
            if seen.end < time.clock().saturating_sub(time.allowed_lateness) {
                counters.late += 1;
                return;
            }
            if !time.event_only && seen.end > time.wall.saturating_add(time.allowed_lateness) {
                counters.early += 1;
                return;
            }
            time.watermark = time.watermark.max(seen.end);
        }
        rule.record(seen, &mut score);
        rule.counted += 1;
        if !rule.dirty {
            rule.dirty = true;
            dirty.push(r);
        }
    }
}

/// Scale-ups compare by this: an absolute `to` beats any step (it says where to go, a step only
/// how far), then larger wins.
fn up_rank(change: ScaleChange) -> (u8, i64) {
    match change {
        ScaleChange::To(n) => (1, i64::from(n)),
        ScaleChange::Step(n) => (0, i64::from(n)),
    }
}

/// Scale-downs compare by this: the smallest step down (the most cautious) wins.
fn down_rank(change: ScaleChange) -> i64 {
    match change {
        ScaleChange::Step(n) => i64::from(n),
        ScaleChange::To(n) => i64::from(n),
    }
}

/// The nearest rank of percentile `p` among `n` samples, in 1..=n.
fn rank(p: f64, n: usize) -> usize {
    let r = (p / 100.0 * n as f64).ceil();
    (r as usize).clamp(1, n.max(1))
}

/// The nearest-rank percentile of `values` (reordered in place); 0 when empty.
fn percentile_of(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let k = rank(p, values.len()) - 1;
    *values.select_nth_unstable(k).1
}

/// Several nearest-rank percentiles of `values` (reordered in place), `ps` ascending. Each
/// selection only looks at what lies above the previous one, about 1.5 n in all.
fn nearest_ranks<const N: usize>(values: &mut [u64], ps: [f64; N]) -> [u64; N] {
    let mut out = [0; N];
    let n = values.len();
    if n == 0 {
        return out;
    }
    let mut base = 0;
    for (i, p) in ps.into_iter().enumerate() {
        let k = rank(p, n) - 1;
        if k < base {
            // The same rank as the previous percentile.
            out[i] = out[i.saturating_sub(1)];
            continue;
        }
        out[i] = *values[base..].select_nth_unstable(k - base).1;
        base = k + 1;
    }
    out
}

/// What a rule's window holds, for a decision.
fn evidence(rule: &RuleState, scratch: &mut Vec<u64>) -> Evidence {
    let samples = &rule.window.samples;
    scratch.clear();
    scratch.extend(samples.iter().map(|s| s.duration));
    let [p50, p95, p99] = nearest_ranks(scratch, [50.0, 95.0, 99.0]);

    // The slowest distinct traces, slowest first.
    let mut slowest: Vec<(u64, [u8; 16])> = Vec::with_capacity(MAX_EXEMPLARS + 1);
    let mut anomaly: Option<f32> = None;
    for s in samples {
        if s.duration > rule.above && !s.score.is_nan() {
            anomaly = Some(anomaly.map_or(s.score, |a| a.max(s.score)));
        }
        if s.trace_id == [0; 16] {
            continue;
        }
        let full = slowest.len() == MAX_EXEMPLARS;
        if full && slowest.last().is_some_and(|&(d, _)| d >= s.duration) {
            continue;
        }
        if let Some(i) = slowest.iter().position(|&(_, t)| t == s.trace_id) {
            if slowest[i].0 >= s.duration {
                continue;
            }
            slowest.remove(i);
        }
        let at = slowest.partition_point(|&(d, _)| d >= s.duration);
        slowest.insert(at, (s.duration, s.trace_id));
        slowest.truncate(MAX_EXEMPLARS);
    }
    Evidence {
        window: rule.rule.window,
        window_count: samples.len() as u64,
        breaches: rule.window.breaches as u64,
        p50: Duration::from_nanos(p50),
        p95: Duration::from_nanos(p95),
        p99: Duration::from_nanos(p99),
        exemplars: slowest.iter().map(|(_, t)| hex(t)).collect(),
        anomaly_score: anomaly.map(f64::from),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The first 16 bytes of a trace id, zero-padded (an invalid id becomes all zeroes and is never
/// an exemplar).
fn trace_id(bytes: &[u8]) -> [u8; 16] {
    let mut id = [0; 16];
    if bytes.len() == 16 {
        id.copy_from_slice(bytes);
    }
    id
}

/// The string value of attribute `key`, if present and a string.
/// The resource's `service.name`, or `unknown_service`.
fn service_name(resource_spans: &ResourceSpans) -> &str {
    resource_spans
        .resource
        .as_ref()
        .and_then(|r| string_attribute(&r.attributes, SERVICE_NAME_ATTRIBUTE))
        .unwrap_or(UNKNOWN_SERVICE)
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The anomaly score hstree tagged, NaN when absent or not a number.
fn anomaly_score(attributes: &[KeyValue]) -> f32 {
    attributes
        .iter()
        .find(|kv| kv.key == ANOMALY_SCORE_ATTRIBUTE)
        .and_then(|kv| match kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(d)),
            }) => Some(d as f32),
            _ => None,
        })
        .unwrap_or(f32::NAN)
}

/// A latency for people: `300ms`, `1.25s`, `250µs`.
struct Latency(Duration);

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            f.write_str("0ms")
        } else if nanos < 1_000_000 {
            write!(f, "{}µs", trim(nanos as f64 / 1e3))
        } else if nanos < 10_000_000_000 {
            write!(f, "{}ms", trim(nanos as f64 / 1e6))
        } else if nanos.is_multiple_of(60_000_000_000) {
            write!(f, "{}m", nanos / 60_000_000_000)
        } else {
            write!(f, "{}s", trim(nanos as f64 / 1e9))
        }
    }
}

/// Up to two decimals, without trailing zeroes.
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

#[cfg(test)]
pub(super) mod test_support {
    //! Exposes internals to the tests of this folder.

    use super::*;

    /// Re-checks a window against its definition: sorted, breaches recounted, within its cap.
    pub(in super::super) fn check_invariants(engine: &Engine) {
        for rule in &engine.rules {
            let w = &rule.window;
            assert!(w.samples.len() <= w.cap);
            assert!(
                w.samples
                    .iter()
                    .zip(w.samples.iter().skip(1))
                    .all(|(a, b)| a.end <= b.end),
                "window of {} is not sorted",
                rule.rule.name
            );
            let breaches = w.samples.iter().filter(|s| s.duration > rule.above).count();
            assert_eq!(breaches, w.breaches, "breach count of {}", rule.rule.name);
        }
    }

    pub(in super::super) fn glob(pattern: &str, text: &str) -> bool {
        glob_match(pattern.as_bytes(), text.as_bytes())
    }

    pub(in super::super) fn percentiles(values: &mut [u64]) -> [u64; 3] {
        nearest_ranks(values, [50.0, 95.0, 99.0])
    }

    pub(in super::super) fn latency(d: Duration) -> String {
        Latency(d).to_string()
    }
}
