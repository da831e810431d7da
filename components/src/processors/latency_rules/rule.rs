//! One rule: what it matches and when it fires, as configured, and its running state: the
//! window it fills, when it last breached, whether it is stale.

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use tracescale_core::attributes;
use tracescale_core::signal::{ReplicaLimits, ScaleChange, Target};

use super::clock::Time;
use super::engine::Counters;
use super::percentile::rank;
use super::window::{Sample, Window};

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
pub(super) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
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
    /// How long after an inhibitor's newest breach the inhibition still holds.
    pub inhibition_hold: Duration,
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

/// A rule and its running state.
#[derive(Debug)]
pub(super) struct RuleState {
    pub(super) rule: Rule,
    pub(super) above: u64,
    pub(super) window_nanos: u64,
    pub(super) below: u64,
    pub(super) period: u64,
    pub(super) target: usize,
    pub(super) window: Window,
    /// End time of the newest breach seen; the rule re-arms once it has left the window.
    pub(super) newest_breach: u64,
    /// The rule does not fire before the event clock reaches this.
    pub(super) disarmed_until: u64,
    /// End time of the newest matching span.
    pub(super) last_seen: u64,
    /// The engine's wall clock when a matching span last arrived: on the wall clock, staleness
    /// is timed from it.
    pub(super) last_arrival: u64,
    /// Start of the current stabilisation period for scale-down.
    pub(super) quiet_since: u64,
    /// On the wall clock, the rule has seen no span since it started or since it was stale:
    /// the stabilisation period starts with the next one, because calm that was not observed
    /// is no calm. (On event time the periods follow span time, which starts with the spans.)
    pub(super) unobserved: bool,
    pub(super) stale: bool,
    pub(super) dirty: bool,
    pub(super) scaled_up: u64,
    pub(super) scaled_down: u64,
    pub(super) evicted: u64,
    /// Spans it took into its window since start.
    pub(super) counted: u64,
}

impl RuleState {
    pub(super) fn matches(&self, span: &Span) -> bool {
        if self.rule.span_kind.is_some_and(|kind| kind != span.kind) {
            return false;
        }
        self.rule.attributes.iter().all(|(key, value)| {
            attributes::string_attribute(&span.attributes, key) == Some(value.as_str())
        })
    }

    pub(super) fn record(&mut self, seen: Seen<'_>, arrival: u64, score: &mut Option<f32>) {
        let Seen {
            end,
            duration,
            span,
        } = seen;
        self.last_seen = self.last_seen.max(end);
        self.last_arrival = self.last_arrival.max(arrival);
        if self.unobserved || (self.rule.scale_down.is_some() && duration >= self.below) {
            self.quiet_since = self.quiet_since.max(end);
            self.unobserved = false;
        }
        let breach = duration > self.above;
        let score = if breach {
            self.newest_breach = self.newest_breach.max(end);
            *score.get_or_insert_with(|| {
                attributes::anomaly_score(&span.attributes).map_or(f32::NAN, |d| d as f32)
            })
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

    pub(super) fn expire(&mut self, clock: u64) {
        self.window
            .expire(clock.saturating_sub(self.window_nanos), self.above);
    }

    /// True when the up condition holds and the rule is armed.
    pub(super) fn wants_up(&self, clock: u64) -> bool {
        clock >= self.disarmed_until && self.condition_holds()
    }

    /// The rule's condition over its window as it stands (call `expire` first).
    pub(super) fn condition_holds(&self) -> bool {
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
    /// stale, and the calm was observed: on the wall clock, the rule's spans cover the whole
    /// period, so a silence at its end is not read as calm. On event time, where the clock is
    /// the spans' own, the operation must have sent spans in the period.
    pub(super) fn wants_down(&self, time: &Time) -> bool {
        if self.rule.scale_down.is_none() || self.stale {
            return false;
        }
        let due = self.quiet_since.saturating_add(self.period);
        if time.event_only {
            let clock = time.clock();
            clock >= due && self.last_seen.saturating_add(self.period) > clock
        } else {
            self.last_seen >= due
        }
    }
}

/// A span as the rules see it: when it ended, how long it took, and the span itself.
#[derive(Clone, Copy)]
pub(super) struct Seen<'a> {
    pub(super) end: u64,
    pub(super) duration: u64,
    pub(super) span: &'a Span,
}

/// Feeds one span to the rules of its operation that match its kind and attributes. The span is
/// judged late or early once, on the first rule that matches; a span no rule matches is not
/// judged at all.
#[inline]
pub(super) fn feed(
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
        rule.record(seen, time.wall, &mut score);
        rule.counted += 1;
        if !rule.dirty {
            rule.dirty = true;
            dirty.push(r);
        }
    }
}

/// The first 16 bytes of a trace id, zero-padded (an invalid id becomes all zeroes and is never
/// an exemplar).
pub(super) fn trace_id(bytes: &[u8]) -> [u8; 16] {
    let mut id = [0; 16];
    if bytes.len() == 16 {
        id.copy_from_slice(bytes);
    }
    id
}
