//! Per-second statistics of complete traces, kept for the longest window the processor reads:
//! per objective, how many traces and how many missed the target (with their latencies and the
//! slowest ids); per service, its visits, their occupancy, own work and wait, and its share of
//! the objectives' critical paths; per caller→callee edge, its calls and the gaps around them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::tracetree::Symbol;

/// Most latencies one second keeps per objective, for the percentiles a decision reports.
const MAX_LATENCIES: usize = 4096;
/// Slowest trace ids one second keeps per objective.
const EXEMPLARS: usize = 5;

/// One objective's traces in one second.
#[derive(Debug, Clone, Default)]
pub(super) struct ObjectiveSecond {
    pub(super) traces: u64,
    pub(super) bad: u64,
    pub(super) latencies: Vec<u64>,
    /// (latency, trace id), slowest first.
    pub(super) slowest: Vec<(u64, [u8; 16])>,
}

impl ObjectiveSecond {
    fn record(&mut self, latency: u64, bad: bool, trace_id: [u8; 16]) {
        self.traces += 1;
        self.bad += u64::from(bad);
        if self.latencies.len() < MAX_LATENCIES {
            self.latencies.push(latency);
        }
        let at = self
            .slowest
            .iter()
            .position(|(l, _)| *l < latency)
            .unwrap_or(self.slowest.len());
        if at < EXEMPLARS {
            self.slowest.insert(at, (latency, trace_id));
            self.slowest.truncate(EXEMPLARS);
        }
    }
}

/// One service in one second. Times are nanoseconds summed over the visits or traces.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ServiceSecond {
    /// SERVER spans: arrivals, served or not.
    pub(super) visits: u64,
    /// Of which were turned away at the door: an error with no work in it.
    pub(super) errors: u64,
    /// Time those visits held a slot: the SERVER span less an explicit queue span inside it.
    pub(super) occupancy: u64,
    /// Their own work: occupancy less the time in calls to other services.
    pub(super) own_work: u64,
    /// Their wait to be served: a queue span, or the gap after the caller's CLIENT span began.
    pub(super) wait: u64,
    /// Objective traces that passed through the service.
    pub(super) objective_traces: u64,
    /// Its time on those traces' critical paths, by kind.
    pub(super) cp_own: u64,
    pub(super) cp_queueing: u64,
    pub(super) cp_response: u64,
    pub(super) cp_downstream: u64,
}

impl ServiceSecond {
    pub(super) fn add(&mut self, o: &ServiceSecond) {
        self.visits += o.visits;
        self.errors += o.errors;
        self.occupancy += o.occupancy;
        self.own_work += o.own_work;
        self.wait += o.wait;
        self.objective_traces += o.objective_traces;
        self.cp_own += o.cp_own;
        self.cp_queueing += o.cp_queueing;
        self.cp_response += o.cp_response;
        self.cp_downstream += o.cp_downstream;
    }

    /// Visits that were served: not turned away at the door.
    pub(super) fn served(&self) -> u64 {
        self.visits.saturating_sub(self.errors)
    }

    /// Mean per visit served: occupancy, own work, wait. A visit turned away holds no slot,
    /// does no work and waits for nothing: counted in, it would make a service that turns
    /// most of its traffic away look idle.
    pub(super) fn per_visit(&self) -> Option<(f64, f64, f64)> {
        (self.served() > 0).then(|| {
            let n = self.served() as f64;
            (
                self.occupancy as f64 / n,
                self.own_work as f64 / n,
                self.wait as f64 / n,
            )
        })
    }

    /// Mean critical-path time per objective trace that the service could cause: own work,
    /// queueing and response (not time spent waiting on others).
    pub(super) fn cp_share(&self) -> Option<f64> {
        (self.objective_traces > 0).then(|| {
            (self.cp_own + self.cp_queueing + self.cp_response) as f64
                / self.objective_traces as f64
        })
    }
}

/// One caller→callee edge in one second. Times are nanoseconds summed over the calls or traces.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct EdgeSecond {
    /// Calls: a CLIENT span of the caller with a SERVER child of the callee.
    pub(super) calls: u64,
    /// Their CLIENT spans' time outside the SERVER child: before it started and after it ended.
    pub(super) gap: u64,
    /// Objective traces with a call on the edge.
    pub(super) objective_traces: u64,
    /// Their critical-path time in the edge's gaps.
    pub(super) cp_gap: u64,
}

impl EdgeSecond {
    pub(super) fn add(&mut self, o: &EdgeSecond) {
        self.calls += o.calls;
        self.gap += o.gap;
        self.objective_traces += o.objective_traces;
        self.cp_gap += o.cp_gap;
    }
}

/// A caller→callee edge: (caller, callee).
pub(super) type Edge = (Symbol, Symbol);

/// One second of complete traces, by the end of their root span.
#[derive(Debug, Clone, Default)]
pub(super) struct Second {
    pub(super) objectives: Vec<ObjectiveSecond>,
    pub(super) services: BTreeMap<Symbol, ServiceSecond>,
    pub(super) edges: BTreeMap<Edge, EdgeSecond>,
    /// Visits by the second they arrived in (not when their trace ended): a second is only
    /// complete once its slowest visit's trace has ended.
    pub(super) arrivals: BTreeMap<Symbol, u64>,
}

/// The seconds of the longest window, oldest first.
#[derive(Debug)]
pub(super) struct Seconds {
    /// The first second held (Unix seconds).
    first: u64,
    seconds: VecDeque<Second>,
    keep: u64,
    objectives: usize,
    /// Traces whose second had already been dropped.
    pub(super) too_late: u64,
}

impl Seconds {
    pub(super) fn new(keep: u64, objectives: usize) -> Self {
        Self {
            first: 0,
            seconds: VecDeque::new(),
            keep: keep.max(1),
            objectives,
            too_late: 0,
        }
    }

    /// The second `at`, created (and older ones dropped) as time moves on; None when it is
    /// older than the window.
    pub(super) fn at(&mut self, at: u64) -> Option<&mut Second> {
        if self.seconds.is_empty() {
            self.first = at;
        }
        if at < self.first {
            self.too_late += 1;
            return None;
        }
        while self.first + (self.seconds.len() as u64) <= at {
            self.seconds.push_back(Second {
                objectives: vec![ObjectiveSecond::default(); self.objectives],
                services: BTreeMap::new(),
                edges: BTreeMap::new(),
                arrivals: BTreeMap::new(),
            });
        }
        while self.seconds.len() as u64 > self.keep {
            self.seconds.pop_front();
            self.first += 1;
        }
        if at < self.first {
            self.too_late += 1;
            return None;
        }
        let index = usize::try_from(at - self.first).ok()?;
        self.seconds.get_mut(index)
    }

    /// Records a trace of objective `objective` ending in second `at`.
    pub(super) fn objective(
        &mut self,
        at: u64,
        objective: usize,
        latency: u64,
        bad: bool,
        trace_id: [u8; 16],
    ) {
        if let Some(o) = self.at(at).and_then(|s| s.objectives.get_mut(objective)) {
            o.record(latency, bad, trace_id);
        }
    }

    /// The seconds in `(end - len, end]`.
    pub(super) fn range(&self, end: u64, len: u64) -> impl Iterator<Item = &Second> {
        let start = end.saturating_sub(len.saturating_sub(1));
        let first = self.first;
        self.seconds
            .iter()
            .enumerate()
            .filter(move |(i, _)| {
                let s = first + *i as u64;
                s >= start && s <= end
            })
            .map(|(_, s)| s)
    }

    /// One service summed over `(end - len, end]`.
    pub(super) fn service(&self, service: Symbol, end: u64, len: u64) -> ServiceSecond {
        let mut sum = ServiceSecond::default();
        for s in self.range(end, len) {
            if let Some(v) = s.services.get(&service) {
                sum.add(v);
            }
        }
        sum
    }

    /// Every service seen in `(end - len, end]`.
    pub(super) fn services(&self, end: u64, len: u64) -> BTreeSet<Symbol> {
        self.range(end, len)
            .flat_map(|s| s.services.keys().copied())
            .collect()
    }

    /// Every edge summed over `(end - len, end]`.
    pub(super) fn edges(&self, end: u64, len: u64) -> BTreeMap<Edge, EdgeSecond> {
        let mut sum: BTreeMap<Edge, EdgeSecond> = BTreeMap::new();
        for s in self.range(end, len) {
            for (edge, e) in &s.edges {
                sum.entry(*edge).or_default().add(e);
            }
        }
        sum
    }

    /// Visits of `service` that arrived in `(end - len, end]`, per second.
    pub(super) fn arrival_rate(&self, service: Symbol, end: u64, len: u64) -> f64 {
        let n: u64 = self
            .range(end, len)
            .filter_map(|s| s.arrivals.get(&service))
            .sum();
        n as f64 / len.max(1) as f64
    }

    /// The mean wait per visit of `service` in each second of `(end - len, end]` that had
    /// visits, as (second offset, mean wait in seconds).
    pub(super) fn wait_series(&self, service: Symbol, end: u64, len: u64) -> Vec<(f64, f64)> {
        self.series(service, end, len, |v| {
            (v.visits > 0).then(|| v.wait as f64 / v.visits as f64)
        })
    }

    /// The mean own work per visit served of `service` in each second of `(end - len, end]`
    /// that served visits, as (second offset, seconds).
    pub(super) fn work_series(&self, service: Symbol, end: u64, len: u64) -> Vec<(f64, f64)> {
        self.series(service, end, len, |v| v.per_visit().map(|(_, own, _)| own))
    }

    /// `value` (ns) of `service` in each second of `(end - len, end]` that has one, as
    /// (second offset, seconds).
    fn series(
        &self,
        service: Symbol,
        end: u64,
        len: u64,
        value: impl Fn(&ServiceSecond) -> Option<f64>,
    ) -> Vec<(f64, f64)> {
        self.range(end, len)
            .enumerate()
            .filter_map(|(i, s)| {
                let v = value(s.services.get(&service)?)?;
                Some((i as f64, v / 1e9))
            })
            .collect()
    }
}

/// The least-squares slope of `points` (x, y); None with fewer than three points.
pub(super) fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_are_per_visit_served_not_per_visit_turned_away() {
        // Ten arrivals, six turned away at a full queue: the four served held their slots
        // 100 ms each, 40 ms of it their own work, after waiting 2 s.
        let v = ServiceSecond {
            visits: 10,
            errors: 6,
            occupancy: 400_000_000,
            own_work: 160_000_000,
            wait: 8_000_000_000,
            ..ServiceSecond::default()
        };
        assert_eq!(v.served(), 4);
        assert_eq!(v.per_visit(), Some((1e8, 4e7, 2e9)));
        let all_away = ServiceSecond {
            visits: 3,
            errors: 3,
            ..ServiceSecond::default()
        };
        assert_eq!(all_away.per_visit(), None);
    }

    #[test]
    fn seconds_slide_and_sum_over_a_range() {
        let mut w = Seconds::new(5, 1);
        for t in 100..110 {
            w.objective(t, 0, 10, t % 2 == 0, [0; 16]);
        }
        let total: u64 = w.range(109, 3).map(|s| s.objectives[0].traces).sum();
        assert_eq!(total, 3);
        assert_eq!(w.range(109, 100).count(), 5, "only the kept seconds");
        w.objective(100, 0, 10, false, [0; 16]);
        assert_eq!(w.too_late, 1);
    }

    #[test]
    fn exemplars_are_the_slowest() {
        let mut o = ObjectiveSecond::default();
        for (i, l) in [5u64, 9, 1, 7, 3, 8, 2].into_iter().enumerate() {
            o.record(l, false, [i as u8; 16]);
        }
        let l: Vec<u64> = o.slowest.iter().map(|s| s.0).collect();
        assert_eq!(l, vec![9, 8, 7, 5, 3]);
    }

    #[test]
    fn slope_of_a_line() {
        let p: Vec<(f64, f64)> = (0..5)
            .map(|x| (f64::from(x), 2.0 * f64::from(x) + 1.0))
            .collect();
        assert!((slope(&p).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(slope(&p[..2]), None);
    }
}
