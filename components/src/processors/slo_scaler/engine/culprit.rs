//! The culprit of a burning objective: every service on the objectives' critical paths, ranked
//! by the extra time per trace it is responsible for against its healthy figures.
//!
//! A service's time on the critical path is its own (own work, explicit queue spans) and its
//! part in the gaps of the calls it takes part in: the time of a caller's CLIENT span outside
//! the callee's SERVER span. A gap holds the network both ways, the callee's wait before its work
//! started and the caller's handling of the reply, so its growth belongs to one end or the other.
//! A callee that is slow to accept or answer (its CPU taken, its packets delayed) slows every
//! call into it; a caller that is slow to send or to read the reply slows every call out of it.
//! So the growth of an edge's gaps per call is split between its two ends by how much the
//! *other* edges of each end grew per call: the end whose other calls slowed by as much explains
//! the edge, and what neither explains stays with the callee, as the breakdown attributes a gap.
//!
//! - **Growth** of a service, per objective trace through it: its own time now less its healthy
//!   own time, plus, over its edges, its share of each edge's gap growth.
//! - **Order**: growth beyond [`NOISE_SPREADS`] times the service's noise (how far its growth
//!   strays while healthy) first, then the rest, each by growth: a service whose share always
//!   wanders does not outrank a steady one that really grew.
//! - **Symptom**: a service whose slots are held markedly longer by calls that got slower for
//!   their callees' reasons (its own share of their gaps aside), unless it would be overloaded
//!   even with its calls at their healthy speed. Its queue drains once the callee is fixed: it is
//!   never the culprit.
//!
//! The healthy figures are learned while the objectives' slow traces over the short window are
//! within their error budgets (taken together), a stricter test than not burning, so that the
//! onset of a fault, before both windows burn, is not learned as healthy. [`Engine::rank`] is the one ranking: the processor
//! scales the first scalable culprit in it, and `tracescale attribute` scores it against
//! injected faults.

use std::collections::BTreeMap;

use super::super::window::{Edge, EdgeSecond, ServiceSecond};
use super::decide::saturated;
use super::{Engine, SYMPTOM_GROWTH};
use crate::tracetree::{Kind, Symbol, TraceBreakdown, TraceTree};

/// One service in a ranking.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Suspect {
    /// The service.
    pub service: Symbol,
    /// Extra critical-path time per objective trace through it, ns: `own + calls`.
    pub growth: f64,
    /// Of which in its own work and queue spans.
    pub own: f64,
    /// Of which its share of the growth of its calls' gaps, in and out.
    pub calls: f64,
    /// How far its growth strays while every objective is healthy (the mean absolute growth
    /// then), ns: what its growth is judged against.
    pub noise: f64,
    /// Slots held longer by slower callees: never the culprit.
    pub symptom: bool,
    /// Objective traces through it in the window.
    pub traces: u64,
}

impl Suspect {
    /// True when the service may be named the culprit: it grew and is not a symptom.
    pub fn can_be_culprit(&self) -> bool {
        self.growth > 0.0 && !self.symptom
    }

    /// True when its growth is beyond what its share strays by while healthy
    /// ([`NOISE_SPREADS`] times its noise). The ranking puts these first.
    pub fn significant(&self) -> bool {
        self.growth > NOISE_SPREADS * self.noise
    }
}

/// A ranking kept for an evaluation: when it was made, why and what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// The evaluation's time (Unix ns, the engine's clock).
    pub at_unix_nano: u64,
    /// The burning objectives, by name.
    pub objectives: Vec<String>,
    /// Services that may be the culprit, most likely first: (name, growth in ns per trace).
    pub culprits: Vec<(String, f64)>,
}

/// Growth beyond this many times a service's noise (its mean absolute growth while healthy)
/// is significant: about two and a half standard deviations of a normal noise.
const NOISE_SPREADS: f64 = 3.0;
/// One healthy evaluation moves a service's noise by at most this many times the noise so far,
/// so that a stretch of fault no objective noticed does not inflate it.
const NOISE_STEP: f64 = 4.0;

/// An edge's healthy figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct EdgeBaseline {
    /// Gap per call, ns.
    gap_per_call: Option<f64>,
    /// Critical-path gap per objective trace with a call on the edge, ns.
    cp_gap: Option<f64>,
}

/// The healthy figures the ranking compares with, and the rankings kept on request.
#[derive(Debug, Default)]
pub(super) struct Attribution {
    /// Own critical-path time per objective trace through the service, ns.
    own: BTreeMap<Symbol, f64>,
    /// The mean absolute growth of each service while healthy, ns.
    noise: BTreeMap<Symbol, f64>,
    edges: BTreeMap<Edge, EdgeBaseline>,
    recorded: Option<Vec<Ranking>>,
}

/// The calls of one trace per edge, and, for an objective trace, the gaps on its critical path.
pub(super) fn edge_seconds(
    tree: &TraceTree<'_>,
    shares: &TraceBreakdown,
    objective: bool,
) -> BTreeMap<Edge, EdgeSecond> {
    let mut edges: BTreeMap<Edge, EdgeSecond> = BTreeMap::new();
    for (i, server) in tree.spans().iter().enumerate() {
        let Ok(i) = u32::try_from(i) else {
            break;
        };
        if tree.kind(i) != Kind::Server {
            continue;
        }
        let Some(client) = tree
            .parent(i)
            .filter(|&p| tree.kind(p) == Kind::Client)
            .map(|p| tree.span(p))
        else {
            continue;
        };
        let e = edges.entry((client.service, server.service)).or_default();
        e.calls += 1;
        e.gap += server.start.saturating_sub(client.start) + client.end.saturating_sub(server.end);
    }
    if objective {
        for e in edges.values_mut() {
            e.objective_traces = 1;
        }
        for g in &shares.edges {
            let e = edges.entry((g.caller, g.callee)).or_default();
            e.objective_traces = 1;
            e.cp_gap += g.queueing + g.response;
        }
    }
    edges
}

/// Own critical-path time per objective trace through a service: its own work, queueing and
/// response less the gaps of the calls into it.
fn own_share(v: &ServiceSecond, inbound_gaps: u64) -> Option<f64> {
    (v.objective_traces > 0).then(|| {
        (v.cp_own + v.cp_queueing + v.cp_response).saturating_sub(inbound_gaps) as f64
            / v.objective_traces as f64
    })
}

/// The critical-path gaps of the calls into `service`.
fn inbound_gaps(edges: &BTreeMap<Edge, EdgeSecond>, service: Symbol) -> u64 {
    edges
        .iter()
        .filter(|((_, callee), _)| *callee == service)
        .map(|(_, e)| e.cp_gap)
        .sum()
}

/// How each edge's gap growth per call is split between its ends.
struct Split {
    /// Per edge: calls now, and gap growth per call (ns).
    growth: BTreeMap<Edge, (f64, f64)>,
    /// Per service: Σ calls and Σ calls × growth over the edges it takes part in.
    around: BTreeMap<Symbol, (f64, f64)>,
}

impl Split {
    fn new(now: &BTreeMap<Edge, EdgeSecond>, healthy: &BTreeMap<Edge, EdgeBaseline>) -> Self {
        let mut growth = BTreeMap::new();
        let mut around: BTreeMap<Symbol, (f64, f64)> = BTreeMap::new();
        for (&edge, e) in now.iter().filter(|(_, e)| e.calls > 0) {
            let calls = e.calls as f64;
            let base = healthy
                .get(&edge)
                .and_then(|b| b.gap_per_call)
                .unwrap_or(0.0);
            let delta = e.gap as f64 / calls - base;
            growth.insert(edge, (calls, delta));
            for end in [edge.0, edge.1] {
                let a = around.entry(end).or_default();
                a.0 += calls;
                a.1 += calls * delta;
            }
        }
        Self { growth, around }
    }

    /// The growth per call of the other edges of `end` (all but `edge`), at least 0; None
    /// without any.
    fn others(&self, end: Symbol, edge: Edge) -> Option<f64> {
        let (calls, delta) = self.growth.get(&edge).copied().unwrap_or_default();
        let (all_calls, all) = self.around.get(&end).copied().unwrap_or_default();
        let rest = all_calls - calls;
        (rest > 0.5).then(|| ((all - calls * delta) / rest).max(0.0))
    }

    /// The caller's share of `edge`'s growth, in [0, 1]; the callee has the rest.
    fn caller_share(&self, edge: Edge) -> f64 {
        let Some(&(_, delta)) = self.growth.get(&edge) else {
            return 0.0;
        };
        if delta <= 0.0 {
            return 0.0;
        }
        // What the other edges of each end say that end adds to every call; an end with no
        // other edge says nothing.
        let explained = |end: Symbol| self.others(end, edge).map_or(0.0, |o| o.min(delta));
        let (a, b) = (explained(edge.0), explained(edge.1));
        if a + b > delta {
            a / (a + b)
        } else {
            a / delta
        }
    }
}

impl Engine {
    /// Every service on the objectives' critical paths in the `len` seconds up to `end`:
    /// significant growth first, then the rest, each by descending growth (see the module docs).
    pub(super) fn rank(&self, end: u64, len: u64) -> Vec<Suspect> {
        let edges = self.seconds.edges(end, len);
        let split = Split::new(&edges, &self.attribution.edges);
        let mut suspects = Vec::new();
        for symbol in self.seconds.services(end, len) {
            let baseline = self.services.get(&symbol).and_then(|s| s.baseline);
            let now = self.seconds.service(symbol, end, len);
            let Some(own_now) = own_share(&now, inbound_gaps(&edges, symbol)) else {
                continue;
            };
            let n = now.objective_traces as f64;
            let own = own_now - self.attribution.own.get(&symbol).copied().unwrap_or(0.0);
            let mut calls = 0.0;
            // Its own share of the growth of its outgoing calls, per visit's worth.
            let mut own_delay_out = 0.0;
            for (&edge, e) in edges
                .iter()
                .filter(|(edge, _)| edge.0 == symbol || edge.1 == symbol)
            {
                let caller = split.caller_share(edge);
                let share = if edge.1 == symbol {
                    1.0 - caller
                } else {
                    caller
                };
                if e.objective_traces > 0 {
                    let traces = e.objective_traces as f64;
                    let base = self
                        .attribution
                        .edges
                        .get(&edge)
                        .and_then(|b| b.cp_gap)
                        .unwrap_or(0.0);
                    calls += share * (e.cp_gap as f64 / traces - base) * traces / n;
                }
                if edge.0 == symbol
                    && let Some(&(count, delta)) = split.growth.get(&edge)
                {
                    own_delay_out += share * delta.max(0.0) * count;
                }
            }
            // Slots held markedly longer, mostly by waiting on calls that got slower for their
            // callees' reasons: a symptom of the callees, unless the service would be overloaded
            // even with its calls at their healthy speed (arrivals × healthy occupancy above
            // what its slots now carry).
            let symptom = match (now.per_visit(), baseline) {
                (Some((occ, own_work, wait)), Some(b)) if b.occupancy > 0.0 => {
                    let mine = own_delay_out / now.served().max(1) as f64;
                    let more_down = (occ - own_work) - (b.occupancy - b.own_work) - mine;
                    let held_by_calls = more_down > SYMPTOM_GROWTH * b.occupancy
                        && more_down > own_work - b.own_work + mine;
                    // The arrivals counted, not the growth of the wait: slots held by slow
                    // calls serve fewer visits a second, so the wait grows as if more arrived.
                    let load = if saturated(wait, occ) {
                        self.queue_load(symbol, &now, len, end)
                            .map_or(1.0, |q| q.arrived)
                    } else {
                        1.0
                    };
                    held_by_calls && load * b.occupancy < occ
                }
                _ => false,
            };
            suspects.push(Suspect {
                service: symbol,
                growth: own + calls,
                own,
                calls,
                noise: self.attribution.noise.get(&symbol).copied().unwrap_or(0.0),
                symptom,
                traces: now.objective_traces,
            });
        }
        // Growth beyond the noise first, each part by growth: a service whose share always
        // wanders does not outrank a steady one that really grew.
        suspects.sort_by(|a, b| {
            b.significant()
                .cmp(&a.significant())
                .then(b.growth.total_cmp(&a.growth))
                .then(a.service.cmp(&b.service))
        });
        suspects
    }

    /// Learns the healthy figures the ranking compares with, while the objectives are within
    /// their error budgets over the short window; called while no objective burns.
    pub(super) fn learn_healthy_shares(&mut self, end: u64) {
        let short = self.settings.short_window_s;
        let alpha = (self.settings.interval_ns as f64 / 1e9 / self.settings.baseline_window_s)
            .clamp(0.0, 1.0);
        let follow = |slot: &mut Option<f64>, now: f64| {
            *slot = Some(slot.map_or(now, |b| b + alpha * (now - b)));
        };
        // Within budget, not merely not burning: the onset of a fault, before both windows
        // burn, is not learned as healthy. The objectives are taken together (their slow traces
        // against their summed budgets), so that many objectives with little traffic each do
        // not keep it from ever learning.
        let (mut slow, mut budget) = (0.0, 0.0);
        for second in self.seconds.range(end, short) {
            for (o, s) in self.settings.objectives.iter().zip(&second.objectives) {
                slow += s.bad as f64;
                budget += s.traces as f64 * (100.0 - o.percentile) / 100.0;
            }
        }
        if slow > budget {
            return;
        }
        // How far each service's growth strays now, against the figures learned so far.
        for suspect in self.rank(end, self.settings.short_window_s) {
            if !self.attribution.own.contains_key(&suspect.service) {
                continue;
            }
            let mut slot = self.attribution.noise.get(&suspect.service).copied();
            let strays = suspect.growth.abs();
            let step = slot.map_or(strays, |n| strays.min(NOISE_STEP * n));
            follow(&mut slot, step);
            if let Some(n) = slot {
                self.attribution.noise.insert(suspect.service, n);
            }
        }
        let edges = self.seconds.edges(end, short);
        for symbol in self.seconds.services(end, short) {
            let v = self.seconds.service(symbol, end, short);
            if let Some(now) = own_share(&v, inbound_gaps(&edges, symbol)) {
                let mut slot = self.attribution.own.get(&symbol).copied();
                follow(&mut slot, now);
                if let Some(b) = slot {
                    self.attribution.own.insert(symbol, b);
                }
            }
        }
        for (edge, e) in edges {
            let b = self.attribution.edges.entry(edge).or_default();
            if e.calls > 0 {
                follow(&mut b.gap_per_call, e.gap as f64 / e.calls as f64);
            }
            if e.objective_traces > 0 {
                follow(&mut b.cp_gap, e.cp_gap as f64 / e.objective_traces as f64);
            }
        }
    }

    /// Keeps every ranking made while objectives burn, for [`Engine::take_rankings`]. The
    /// processor does not; an evaluation does.
    pub fn record_rankings(&mut self) {
        self.attribution.recorded.get_or_insert_with(Vec::new);
    }

    /// The rankings kept since the last call.
    pub fn take_rankings(&mut self) -> Vec<Ranking> {
        self.attribution
            .recorded
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Keeps the ranking of an evaluation whose `burning` objectives (by index) burn.
    pub(super) fn note_ranking(&mut self, now: u64, end: u64, burning: &[usize]) {
        if self.attribution.recorded.is_none() {
            return;
        }
        let culprits = self
            .rank(end, self.settings.short_window_s)
            .iter()
            .filter(|s| s.can_be_culprit())
            .map(|s| (self.catalog.service_name(s.service).to_string(), s.growth))
            .collect();
        let objectives = burning
            .iter()
            .filter_map(|&i| self.settings.objectives.get(i))
            .map(|o| o.name.clone())
            .collect();
        if let Some(recorded) = self.attribution.recorded.as_mut() {
            recorded.push(Ranking {
                at_unix_nano: now,
                objectives,
                culprits,
            });
        }
    }
}
