//! The SLO-driven scaler, plain synchronous code: assemble traces, learn each service's
//! healthy share of the critical path, and when an objective burns its error budget, find the
//! service that caused it and size it from the load the traces show.
//!
//! - **Burn.** Per objective, the share of its requests over the target in a short and a long
//!   window, against the error budget (`100 - percentile` %); burning when both exceed
//!   `burn_rate`, as multi-window SLO alerts do; it asks for replicas only while its last few
//!   seconds still burn.
//! - **At risk.** Before it burns, an objective is at risk when a service on its path has a
//!   latency that keeps growing, a saturated queue's wait or its own work ([`risk`]): the
//!   culprit is sought then, over the last few seconds.
//! - **Culprit.** The first scalable service of the ranking in [`culprit`]: by the growth of its
//!   own work and queueing on the objectives' critical paths against its healthy share, plus
//!   its share of the growth of the gaps of the calls it takes part in (a callee slow to answer,
//!   or a caller slow to send or read, slows all its calls alike). A service whose slots are
//!   held longer because its calls got slower for their callees' reasons (its occupancy grew by
//!   downstream time more than by its own) is a symptom, never the culprit: its queue drains
//!   once the callee is fixed.
//! - **Size.** For a saturated culprit (its visits wait), Little's law on the traces: the queue
//!   delay of the visits ending each second grows at `g = 1 - μ/λ`, so arrivals over capacity
//!   are `λ/μ = 1/(1 - g)`; the replicas seen serving (`k8s.pod.name`) times `λ/μ` over the
//!   target utilisation, or more if the backlog must drain within `drain_within`. A culprit whose
//!   own work per visit grew is sized by that growth (at most fourfold per decision), unless the
//!   extra visits it grew under are a backlog passing through. A queue that is draining by
//!   itself asks for nothing.
//! - **Down.** After `scale_down_after` without a burning objective, each workload is sized from
//!   its arrival rate × occupancy (Little's law) over the slots per replica learned while it was
//!   saturated, at the target utilisation, taking the highest size of the period; one that never
//!   saturated steps down one replica per period while its work is at its baseline.

mod culprit;
mod decide;
mod risk;

use std::collections::{BTreeMap, HashMap, VecDeque};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tracescale_core::attributes::{SERVICE_NAME, string_attribute};
use tracescale_core::signal::{Decision, Target};

use super::window::{Second, Seconds, ServiceSecond};
use crate::tracetree::{
    BufferConfig, BufferConfigError, CatalogConfig, Kind, ReleasedTrace, SpanCatalog, SpanRecord,
    Symbol, TraceBuffer, TraceTree, WorkloadKind, breakdown, critical_path,
};
use culprit::{Attribution, edge_seconds};
pub use culprit::{Ranking, Suspect};
use decide::{Trigger, saturated};

/// A visit waits "a lot" (its service is saturated) when it waits longer than it is served.
const SATURATED_WAIT_SHARE: f64 = 1.0;
/// ... and above this absolute wait, so that microsecond noise is not saturation.
const SATURATED_WAIT_NS: f64 = 1_000_000.0;
/// Own work per visit this much above its baseline counts as slower work.
const SLOWER_WORK: f64 = 1.2;
/// Arrivals at most this much above their baseline count as the same load.
const SAME_LOAD: f64 = 1.1;
/// A service whose slots are held this much longer (a share of its healthy occupancy), mostly
/// waiting on calls, is a symptom of its callees.
const SYMPTOM_GROWTH: f64 = 0.2;
/// Seconds over which the growth of a queue is read.
const TREND_SECONDS: u64 = 5;
/// Most growth of own work one decision sizes for: the exporter's rate limits apply on top.
const MAX_WORK_RATIO: f64 = 4.0;
/// The resource attribute that names the replica a span came from.
const POD_NAME: &str = "k8s.pod.name";
/// Most pods remembered per service.
const MAX_PODS: usize = 4096;

/// One objective, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// Its name.
    pub name: String,
    /// The service of the spans it judges: the root span's, or a SERVER span's.
    pub service: String,
    /// Their name.
    pub operation: String,
    /// The percentile the target holds for.
    pub percentile: f64,
    /// The target, in nanoseconds.
    pub target_ns: u64,
}

/// A workload the processor may scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// The `service.name` its spans carry.
    pub service: String,
    /// What to scale.
    pub target: Target,
    /// Replica bounds.
    pub min: Option<u32>,
    /// Replica bounds.
    pub max: Option<u32>,
}

/// What to do about a culprit whose own work is slower at the same load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowWork {
    /// Scale it anyway.
    Scale,
    /// Decide nothing.
    Hold,
}

/// Everything the engine needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The objectives.
    pub objectives: Vec<Objective>,
    /// The listed workloads; empty: taken from the spans' Kubernetes attributes.
    pub workloads: Vec<Workload>,
    /// Evaluation period.
    pub interval_ns: u64,
    /// The trace completion wait: the last this long of traffic is not complete yet.
    pub completion_wait_ns: u64,
    /// Short window, seconds.
    pub short_window_s: u64,
    /// Long window, seconds.
    pub long_window_s: u64,
    /// Burn-rate threshold.
    pub burn_rate: f64,
    /// Target utilisation.
    pub target_utilisation: f64,
    /// Backlog drain horizon, seconds.
    pub drain_within_s: f64,
    /// Healthy time before scale-downs.
    pub scale_down_after_ns: u64,
    /// Baseline smoothing, seconds.
    pub baseline_window_s: f64,
    /// Same size not asked again within this long.
    pub cooldown_ns: u64,
    /// Slower own work at the same load.
    pub slow_work: SlowWork,
    /// Seek the culprit once a latency on an objective's path keeps growing, before it burns.
    pub anticipate: bool,
}

/// What the engine counted, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Complete traces analysed.
    pub traces: u64,
    /// Traces that matched an objective.
    pub objective_traces: u64,
    /// Traces that could not be analysed (cycles, empty).
    pub refused_traces: u64,
    /// Traces released incomplete (no root, orphans, truncated).
    pub incomplete_traces: u64,
    /// Traces that ended before the window's oldest second.
    pub late_traces: u64,
    /// Evaluations run, one an interval.
    pub evaluations: u64,
    /// Decisions made.
    pub decisions: u64,
    /// Times an objective burned but no scalable culprit was found.
    pub no_culprit: u64,
}

/// A service's healthy figures, smoothed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Baseline {
    cp_share: f64,
    occupancy: f64,
    own_work: f64,
    wait: f64,
    rate: f64,
}

/// When a replica's spans first and last arrived, Unix ns on the engine's clock.
#[derive(Debug, Clone, Copy)]
struct PodSeen {
    first: u64,
    last: u64,
}

#[derive(Debug, Default)]
struct ServiceState {
    baseline: Option<Baseline>,
    /// Pod name → when (Unix ns) its spans first and last arrived.
    pods: HashMap<String, PodSeen>,
    /// Concurrent visits per replica when saturated: the capacity the traces showed.
    slots_per_pod: Option<f64>,
    /// The most visits per second per replica seen while the service was healthy (no wait,
    /// own work at its baseline): a load it is known to carry.
    healthy_rate_per_pod: Option<f64>,
    /// (when, replicas) of the last decision.
    last_decision: Option<(u64, u32)>,
    /// Scale-down recommendations of the healthy period.
    down_history: VecDeque<(u64, u32)>,
    /// The objectives whose traces have passed through it, by index, sorted.
    objectives: Vec<usize>,
}

/// The scaler.
pub struct Engine {
    settings: Settings,
    catalog: SpanCatalog,
    buffer: TraceBuffer,
    seconds: Seconds,
    services: BTreeMap<Symbol, ServiceState>,
    /// Per objective: its (service, operation) symbols once the catalog has them.
    keys: Vec<Option<(Symbol, Symbol)>>,
    records: Vec<SpanRecord>,
    released: Vec<ReleasedTrace>,
    clock: u64,
    next_evaluation: Option<u64>,
    healthy_since: Option<u64>,
    counters: Counters,
    attribution: Attribution,
}

impl Engine {
    /// An engine for validated settings.
    pub fn new(settings: Settings, buffer: BufferConfig) -> Result<Self, BufferConfigError> {
        let keep = settings
            .long_window_s
            .max(settings.short_window_s)
            .saturating_add(settings.completion_wait_ns / 1_000_000_000 + 2);
        Ok(Self {
            seconds: Seconds::new(keep, settings.objectives.len()),
            keys: vec![None; settings.objectives.len()],
            catalog: SpanCatalog::new(CatalogConfig::default()),
            buffer: TraceBuffer::new(buffer)?,
            services: BTreeMap::new(),
            records: Vec::new(),
            released: Vec::new(),
            clock: 0,
            next_evaluation: None,
            healthy_since: None,
            counters: Counters::default(),
            attribution: Attribution::default(),
            settings,
        })
    }

    /// What was counted so far.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.late_traces = self.seconds.too_late;
        c
    }

    /// The trace buffer, for its statistics.
    pub fn buffer(&self) -> &TraceBuffer {
        &self.buffer
    }

    /// The latest span end seen (Unix ns): the event clock.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// Takes a batch at time `now` (wall or event, as the caller runs).
    pub fn observe(&mut self, batch: &[ResourceSpans], now: Option<u64>) {
        self.records.clear();
        self.catalog.extract(batch, &mut self.records);
        for r in &self.records {
            self.clock = self.clock.max(r.end);
        }
        let now = now.unwrap_or(self.clock);
        self.note_pods(batch, now);
        for r in std::mem::take(&mut self.records) {
            self.buffer.push(r, now);
        }
        self.release(now);
    }

    /// Releases the traces complete at `now` and learns from them.
    fn release(&mut self, now: u64) {
        let mut released = std::mem::take(&mut self.released);
        self.buffer.release(now, &mut released);
        for trace in released.drain(..) {
            self.learn(&trace);
        }
        self.released = released;
    }

    fn note_pods(&mut self, batch: &[ResourceSpans], now: u64) {
        let pods_since = self.pods_since(now);
        for rs in batch {
            let Some(resource) = &rs.resource else {
                continue;
            };
            let attributes = &resource.attributes;
            let service = string_attribute(attributes, SERVICE_NAME);
            let pod = string_attribute(attributes, POD_NAME);
            let (Some(service), Some(pod)) = (service, pod) else {
                continue;
            };
            let Some(symbol) = self.catalog.service_symbol(service) else {
                continue;
            };
            let pods = &mut self.services.entry(symbol).or_default().pods;
            if let Some(seen) = pods.get_mut(pod) {
                seen.last = now;
                continue;
            }
            if pods.len() >= MAX_PODS {
                // Replicas come and go (rollouts, scale-downs): forget those gone quiet.
                pods.retain(|_, seen| seen.last >= pods_since);
            }
            if pods.len() < MAX_PODS {
                pods.insert(
                    pod.to_string(),
                    PodSeen {
                        first: now,
                        last: now,
                    },
                );
            }
        }
    }

    /// Looks up the symbols of objectives whose service and operation had not been seen yet.
    fn resolve_objectives(&mut self) {
        for (i, o) in self.settings.objectives.iter().enumerate() {
            if self.keys[i].is_none()
                && let (Some(s), Some(op)) = (
                    self.catalog.service_symbol(&o.service),
                    self.catalog.operation_symbol(&o.operation),
                )
            {
                self.keys[i] = Some((s, op));
            }
        }
    }

    /// The objective spans of (service, operation) belong to.
    fn objective_of(&self, service: Symbol, operation: Symbol) -> Option<usize> {
        self.keys
            .iter()
            .position(|k| *k == Some((service, operation)))
    }

    fn learn(&mut self, trace: &ReleasedTrace) {
        if !trace.is_complete() {
            self.counters.incomplete_traces += 1;
        }
        let Ok(tree) = TraceTree::build(&trace.spans) else {
            self.counters.refused_traces += 1;
            return;
        };
        self.counters.traces += 1;
        let segments = critical_path(&tree);
        let shares = breakdown(&tree, &segments);
        let root = tree.span(tree.root());
        let second = root.end / 1_000_000_000;
        self.resolve_objectives();
        let mut matched: Vec<usize> = Vec::new();
        if let Some(o) = self.objective_of(root.service, root.operation) {
            matched.push(o);
            let bad = shares.duration > self.settings.objectives[o].target_ns;
            self.seconds
                .objective(second, o, shares.duration, bad, trace.trace_id);
        }
        // An objective may be on an operation the request calls: each of its SERVER spans is
        // one request to it, judged on its own duration.
        for (i, s) in tree.spans().iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            if i == tree.root() || tree.kind(i) != Kind::Server {
                continue;
            }
            if let Some(o) = self.objective_of(s.service, s.operation) {
                if !matched.contains(&o) {
                    matched.push(o);
                }
                let duration = s.duration();
                let bad = duration > self.settings.objectives[o].target_ns;
                self.seconds
                    .objective(s.end / 1_000_000_000, o, duration, bad, trace.trace_id);
            }
        }
        let on_objective = !matched.is_empty();
        if on_objective {
            self.counters.objective_traces += 1;
        }
        // Per service: visits, occupancy and wait from the spans; own work and the critical
        // path from the breakdown.
        let mut per: BTreeMap<Symbol, ServiceSecond> = BTreeMap::new();
        // Explicit queue time, taken off the occupancy of its SERVER span once all are summed.
        let mut queued: BTreeMap<Symbol, u64> = BTreeMap::new();
        let spans = tree.spans();
        for (i, s) in spans.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            match tree.kind(i) {
                Kind::Server => {
                    // It arrived when its caller called, or when it began.
                    let arrived = tree
                        .parent(i)
                        .filter(|&p| tree.kind(p) == Kind::Client)
                        .map_or(s.start, |p| tree.span(p).start);
                    if let Some(sec) = self.seconds.at(arrived / 1_000_000_000) {
                        *sec.arrivals.entry(s.service).or_default() += 1;
                    }
                    let v = per.entry(s.service).or_default();
                    v.visits += 1;
                    // Turned away at the door: an error with no work in it.
                    v.errors += u64::from(s.error && (s.duration() as f64) < SATURATED_WAIT_NS);
                    v.occupancy += s.duration();
                    if let Some(p) = tree.parent(i).filter(|&p| tree.kind(p) == Kind::Client) {
                        v.wait += s.start.saturating_sub(tree.span(p).start);
                    }
                }
                _ if s.queue => {
                    per.entry(s.service).or_default().wait += s.duration();
                    *queued.entry(s.service).or_default() += s.duration();
                }
                _ => {}
            }
        }
        // A queue span sits inside its SERVER span: waiting, not a held slot.
        for (service, q) in queued {
            if let Some(v) = per.get_mut(&service) {
                v.occupancy = v.occupancy.saturating_sub(q);
            }
        }
        for b in &shares.services {
            if let Some(state) = on_objective
                .then(|| self.services.get_mut(&b.service))
                .flatten()
            {
                for &o in &matched {
                    if let Err(at) = state.objectives.binary_search(&o) {
                        state.objectives.insert(at, o);
                    }
                }
            }
            let v = per.entry(b.service).or_default();
            v.own_work += b.server_own_work;
            if on_objective {
                v.objective_traces += 1;
                v.cp_own += b.own;
                v.cp_queueing += b.queueing;
                v.cp_response += b.response;
                v.cp_downstream += b.downstream;
            }
        }
        let edges = edge_seconds(&tree, &shares, on_objective);
        if let Some(sec) = self.seconds.at(second) {
            for (service, v) in per {
                sec.services.entry(service).or_default().add(&v);
            }
            for (edge, e) in edges {
                sec.edges.entry(edge).or_default().add(&e);
            }
        }
    }

    /// Runs the timed evaluation for every `interval` up to `now`, appending decisions.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Decision>) {
        self.release(now);
        let interval = self.settings.interval_ns.max(1);
        let next = *self
            .next_evaluation
            .get_or_insert_with(|| now.saturating_add(interval));
        if next > now {
            return;
        }
        // Keep to the interval's grid: batches arrive whenever they do, and timing the next
        // evaluation from this one's arrival would stretch every period by that much. Missed
        // evaluations are skipped: the windows are what they are now.
        let missed = (now - next) / interval;
        self.next_evaluation = Some(next.saturating_add(interval.saturating_mul(missed + 1)));
        self.evaluate(now, out);
    }

    /// The last few seconds, which trends, sizes and the onset of a fault are read over:
    /// [`TREND_SECONDS`], or the short window if it is shorter.
    fn recent_s(&self) -> u64 {
        self.settings.short_window_s.min(TREND_SECONDS)
    }

    /// The last second every trace of which has been released.
    fn horizon(&self, now: u64) -> u64 {
        now.saturating_sub(self.settings.completion_wait_ns) / 1_000_000_000
    }

    fn evaluate(&mut self, now: u64, out: &mut Vec<Decision>) {
        self.counters.evaluations += 1;
        let end = self.horizon(now).saturating_sub(1);
        let short = self.settings.short_window_s;
        let long = self.settings.long_window_s;
        let mut burning = Vec::new();
        for (i, o) in self.settings.objectives.iter().enumerate() {
            let (s_burn, s_n) = burn(self.seconds.range(end, short), i, o.percentile);
            let (l_burn, _) = burn(self.seconds.range(end, long), i, o.percentile);
            if s_n > 0 && s_burn >= self.settings.burn_rate && l_burn >= self.settings.burn_rate {
                burning.push((i, s_burn, l_burn));
            }
        }
        self.learn_capacity(end, now);
        let growing = if burning.is_empty() && self.settings.anticipate {
            self.growing(end, now)
        } else {
            Vec::new()
        };
        tracing::debug!(second = end, burning = ?burning, growing = growing.len(), "objectives evaluated");
        if burning.is_empty() && growing.is_empty() {
            let since = *self.healthy_since.get_or_insert(now);
            self.update_baselines(end, now);
            self.learn_healthy_shares(end);
            if now.saturating_sub(since) >= self.settings.scale_down_after_ns {
                self.scale_down(end, now, out);
            }
            return;
        }
        // Not healthy: the onset is not learned as a baseline, and calm starts again.
        self.healthy_since = None;
        for s in self.services.values_mut() {
            s.down_history.clear();
        }
        if burning.is_empty() {
            for g in growing {
                let objectives = self
                    .services
                    .get(&g.service)
                    .map(|s| s.objectives.clone())
                    .unwrap_or_default();
                for objective in objectives {
                    self.scale_up(objective, Trigger::Growing(g), end, now, out);
                }
            }
            return;
        }
        let objectives: Vec<usize> = burning.iter().map(|b| b.0).collect();
        self.note_ranking(now, end, &objectives);
        for (objective, short_burn, long_burn) in burning {
            // The short window remembers a breach for its length after it ended: once the
            // last few seconds are within budget again, whatever fixed it is working, and a
            // size read now would be of the backlog it leaves behind.
            let percentile = self.settings.objectives[objective].percentile;
            let (recent, n) = burn(
                self.seconds.range(end, self.recent_s()),
                objective,
                percentile,
            );
            if n > 0 && recent < self.settings.burn_rate {
                continue;
            }
            let trigger = Trigger::Burning {
                short: short_burn,
                long: long_burn,
            };
            self.scale_up(objective, trigger, end, now, out);
        }
    }

    /// Concurrent visits per replica while a service is saturated: its capacity.
    fn learn_capacity(&mut self, end: u64, now: u64) {
        let short = self.settings.short_window_s;
        let window_ns = short.saturating_mul(1_000_000_000);
        let symbols: Vec<Symbol> = self.services.keys().copied().collect();
        for symbol in symbols {
            let v = self.seconds.service(symbol, end, short);
            let Some((occupancy, _, wait)) = v.per_visit() else {
                continue;
            };
            let pods = self.pods(symbol, now);
            if pods == 0 || !saturated(wait, occupancy) {
                continue;
            }
            let busy = v.occupancy as f64 / window_ns as f64;
            let per_pod = busy / f64::from(pods);
            if let Some(state) = self.services.get_mut(&symbol) {
                let learned = state.slots_per_pod.get_or_insert(per_pod);
                *learned = learned.max(per_pod);
            }
        }
    }

    fn update_baselines(&mut self, end: u64, now_ns: u64) {
        let short = self.settings.short_window_s;
        let alpha = (self.settings.interval_ns as f64 / 1e9 / self.settings.baseline_window_s)
            .clamp(0.0, 1.0);
        let symbols: Vec<Symbol> = self.services.keys().copied().collect();
        for symbol in symbols {
            let v = self.seconds.service(symbol, end, short);
            let (Some((occupancy, own_work, wait)), Some(cp_share)) = (v.per_visit(), v.cp_share())
            else {
                continue;
            };
            let now = Baseline {
                cp_share,
                occupancy,
                own_work,
                wait,
                rate: v.visits as f64 / short as f64,
            };
            let pods = self.pods(symbol, now_ns);
            if let Some(state) = self.services.get_mut(&symbol) {
                let at_baseline = state
                    .baseline
                    .is_none_or(|b| own_work <= SLOWER_WORK * b.own_work);
                if pods > 0 && at_baseline && !saturated(wait, occupancy) {
                    let per_pod = now.rate / f64::from(pods);
                    let known = state.healthy_rate_per_pod.get_or_insert(per_pod);
                    *known = known.max(per_pod);
                }
                state.baseline = Some(match state.baseline {
                    None => now,
                    Some(b) => Baseline {
                        cp_share: b.cp_share + alpha * (now.cp_share - b.cp_share),
                        occupancy: b.occupancy + alpha * (now.occupancy - b.occupancy),
                        own_work: b.own_work + alpha * (now.own_work - b.own_work),
                        wait: b.wait + alpha * (now.wait - b.wait),
                        rate: b.rate + alpha * (now.rate - b.rate),
                    },
                });
            }
        }
    }

    /// Replicas seen serving within the short window.
    fn pods(&self, service: Symbol, now: u64) -> u32 {
        let since = self.pods_since(now);
        self.services.get(&service).map_or(0, |s| {
            u32::try_from(s.pods.values().filter(|p| p.last >= since).count()).unwrap_or(u32::MAX)
        })
    }

    /// True while a replica that began serving within the short window serves beside older
    /// ones: the window's figures still describe the capacity it joined, not what it adds.
    fn settling(&self, service: Symbol, now: u64) -> bool {
        let since = self.pods_since(now);
        self.services.get(&service).is_some_and(|s| {
            let serving = || s.pods.values().filter(|p| p.last >= since);
            serving().any(|p| p.first > since) && serving().any(|p| p.first <= since)
        })
    }

    /// The start of the span of time whose replicas count as serving now: the short window,
    /// and the completion wait its traces may still be held for.
    fn pods_since(&self, now: u64) -> u64 {
        now.saturating_sub(
            (self.settings.short_window_s * 1_000_000_000)
                .saturating_add(self.settings.completion_wait_ns),
        )
    }

    /// The workload of a service: listed, or from its spans.
    fn workload(&self, service: Symbol) -> Option<Workload> {
        let name = self.catalog.service_name(service);
        if !self.settings.workloads.is_empty() {
            return self
                .settings
                .workloads
                .iter()
                .find(|w| w.service == name)
                .cloned();
        }
        let w = self.catalog.workload(service)?;
        let (api_version, kind) = match w.kind {
            WorkloadKind::Deployment => ("apps/v1", "Deployment"),
            WorkloadKind::StatefulSet => ("apps/v1", "StatefulSet"),
        };
        Some(Workload {
            service: name.to_string(),
            target: Target {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                name: w.name.clone(),
                namespace: w.namespace.clone(),
            },
            min: None,
            max: None,
        })
    }
}

/// (burn rate, traces) of objective `i` over some seconds.
fn burn<'a>(seconds: impl Iterator<Item = &'a Second>, i: usize, percentile: f64) -> (f64, u64) {
    let (mut n, mut bad) = (0u64, 0u64);
    for s in seconds {
        if let Some(o) = s.objectives.get(i) {
            n += o.traces;
            bad += o.bad;
        }
    }
    if n == 0 {
        return (0.0, 0);
    }
    let budget = (100.0 - percentile) / 100.0;
    ((bad as f64 / n as f64) / budget, n)
}
