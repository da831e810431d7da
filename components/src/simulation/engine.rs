//! Seeded discrete-event simulation of a small microservice shop.
//!
//! Autoscalers are judged on reproducible runs: the same seed and the same
//! scaling calls give bit-identical spans and statistics, so two policies can
//! be compared on exactly the same arrival sequence. Time is integer
//! nanoseconds from the start of the run.
//!
//! This file holds the shop's state and the driver ([`Sim::advance_to`], the replica calls, the
//! statistics rows); [`requests`] moves each request through it.

mod requests;

use std::collections::{BinaryHeap, VecDeque};

use super::config::{
    NANOS_PER_SEC, SimConfig, SimError, TrafficPattern, WorkloadKind, find_cycle, invalid,
    validate_service,
};
use super::records::{IntervalStats, ScaleAction, ServiceIntervalStats, SimSpan};
use crate::random::{SeededRng, SplitMix64};
use crate::stats::percentile;

struct ResolvedCall {
    target: usize,
    probability: f64,
    count: u32,
    parallel: bool,
}

/// A network delay on one call edge: (caller, callee, delay, start, end).
type EdgeDelay = (usize, usize, u64, u64, u64);

#[derive(Default)]
struct IntervalAcc {
    arrivals: u64,
    completions: u64,
    rejections: u64,
    errors: u64,
    latencies: Vec<u64>,
    cpu_busy_start: f64,
    cpu_capacity_start: f64,
}

struct ServiceState {
    slots_per_replica: u32,
    queue_limit: usize,
    median_ns: f64,
    sigma: f64,
    cores_per_replica: f64,
    cpu_per_request: f64,
    contention: f64,
    startup_ns: u64,
    min_replicas: u32,
    max_replicas: u32,
    calls: Vec<ResolvedCall>,
    slowdowns: Vec<(u64, u64, f64)>,
    rng: SeededRng,
    ready: u32,
    pending_ready: VecDeque<u64>,
    busy: u32,
    in_service: u32,
    queue: VecDeque<usize>,
    cpu_busy: f64,
    cpu_capacity: f64,
    cpu_last: u64,
    acc: IntervalAcc,
}

impl ServiceState {
    fn desired(&self) -> u32 {
        self.ready
            .saturating_add(u32::try_from(self.pending_ready.len()).unwrap_or(u32::MAX))
    }

    fn capacity_slots(&self) -> u64 {
        u64::from(self.ready) * u64::from(self.slots_per_replica)
    }

    fn cores(&self) -> f64 {
        f64::from(self.ready) * self.cores_per_replica
    }

    fn cpu_in_use(&self) -> f64 {
        // Cores actually burning: threads in their own work, never more
        // than the ready replicas have.
        (f64::from(self.in_service) * self.cpu_per_request).min(self.cores())
    }

    fn cpu_totals_at(&self, now: u64) -> (f64, f64) {
        let dt = now.saturating_sub(self.cpu_last) as f64;
        (
            self.cpu_busy + self.cpu_in_use() * dt,
            self.cpu_capacity + self.cores() * dt,
        )
    }

    fn touch(&mut self, now: u64) {
        let (b, c) = self.cpu_totals_at(now);
        self.cpu_busy = b;
        self.cpu_capacity = c;
        self.cpu_last = now;
    }

    fn slowdown_at(&self, now: u64) -> f64 {
        self.slowdowns
            .iter()
            .filter(|(s, e, _)| now >= *s && now < *e)
            .map(|(_, _, f)| *f)
            .product()
    }
}

struct Request {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent_span: Option<[u8; 8]>,
    parent: Option<usize>,
    service: usize,
    arrival: u64,
    /// When a slot took it (arrival while it waits).
    started: u64,
    /// The replica whose slot took it: a function of its id over the replicas ready then.
    replica: u32,
    error: bool,
    /// Turned away by a full queue: it never held a slot.
    rejected: bool,
    next_call: usize,
    remaining: u32,
    /// Parallel calls still unanswered.
    pending: u32,
    /// When the caller sent it: before `arrival` by the network delay of its edge.
    sent: u64,
}

enum EventKind {
    RootArrival,
    CallArrival(usize),
    LoseReplicas { service: usize, count: u32 },
    ServiceDone(usize),
    ReplicaReady(usize),
    Scale { service: usize, replicas: u32 },
}

struct Event {
    time: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}

impl Eq for Event {}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Reversed: the heap must pop the earliest event, ties in
        // scheduling order, which keeps runs deterministic.
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

type SpanSink<'s> = dyn FnMut(&SimSpan<'_>) + 's;

/// The running shop. Drive it with [`Sim::advance_to`] and change capacity
/// with [`Sim::set_replicas`] between steps.
pub struct Sim {
    now: u64,
    seq: u64,
    events: BinaryHeap<Event>,
    names: Vec<String>,
    operations: Vec<String>,
    hpa_targets: Vec<Option<f64>>,
    kinds: Vec<WorkloadKind>,
    services: Vec<ServiceState>,
    root: usize,
    /// Entry services with their cumulative shares, when there is more than one.
    entries: Vec<(usize, f64)>,
    delays: Vec<EdgeDelay>,
    spikes: Vec<(u64, u64, f64)>,
    traffic: TrafficPattern,
    max_rate: f64,
    arrivals_rng: SeededRng,
    ids_rng: SeededRng,
    requests: Vec<Request>,
    free: Vec<usize>,
    interval_ns: u64,
    interval_start: u64,
    root_outcomes: Vec<u64>,
    root_ok: u64,
    root_failed: u64,
    spans_emitted: u64,
}

impl Sim {
    /// Builds the shop at time 0, rejecting configurations that could not
    /// run (unknown names, cycles, nonsensical parameters).
    pub fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        if cfg.stats_interval_ns == 0 {
            return Err(invalid("stats_interval_ns must be > 0".into()));
        }
        let index_of = |name: &str| -> Result<usize, SimError> {
            cfg.services
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| SimError::UnknownService(name.to_string()))
        };
        for (i, s) in cfg.services.iter().enumerate() {
            validate_service(s)?;
            if index_of(&s.name)? != i {
                return Err(invalid(format!("duplicate service name {:?}", s.name)));
            }
        }
        let root = index_of(&cfg.root)?;
        let mut graph = Vec::with_capacity(cfg.services.len());
        for s in &cfg.services {
            let mut targets = Vec::with_capacity(s.calls.len());
            for c in &s.calls {
                targets.push(index_of(&c.service)?);
            }
            graph.push(targets);
        }
        if let Some(c) = find_cycle(&graph) {
            return Err(SimError::CallCycle(cfg.services[c].name.clone()));
        }
        let mut slowdowns: Vec<Vec<(u64, u64, f64)>> = vec![Vec::new(); cfg.services.len()];
        for f in &cfg.faults {
            if !(f.factor.is_finite() && f.factor > 0.0) {
                return Err(invalid(format!(
                    "fault on {}: factor must be > 0",
                    f.service
                )));
            }
            slowdowns[index_of(&f.service)?].push((f.start, f.end, f.factor));
        }
        if !cfg.traffic.max_rate().is_finite() {
            return Err(invalid("traffic rate must be finite".into()));
        }
        let mut entries = Vec::new();
        if cfg.entries.len() > 1 {
            let mut total = 0.0;
            for e in &cfg.entries {
                if !(e.share.is_finite() && e.share > 0.0) {
                    return Err(invalid(format!("entry {}: share must be > 0", e.service)));
                }
                total += e.share;
                entries.push((index_of(&e.service)?, total));
            }
        }
        let root = match cfg.entries.first() {
            Some(e) => index_of(&e.service)?,
            None => root,
        };
        let mut delays = Vec::new();
        for d in &cfg.network_delays {
            let (from, to) = (index_of(&d.caller)?, index_of(&d.callee)?);
            if !graph[from].contains(&to) {
                return Err(invalid(format!(
                    "network delay on {} -> {}: {} does not call {}",
                    d.caller, d.callee, d.caller, d.callee
                )));
            }
            delays.push((from, to, d.delay, d.start, d.end));
        }
        let mut spikes = Vec::new();
        for f in &cfg.traffic_spikes {
            if !(f.factor.is_finite() && f.factor >= 0.0) {
                return Err(invalid("traffic spike: factor must be >= 0".into()));
            }
            spikes.push((f.start, f.end, f.factor));
        }
        let mut losses = Vec::new();
        for l in &cfg.replica_losses {
            losses.push((l.at, index_of(&l.service)?, l.count));
        }

        let mut seeder = SplitMix64::new(cfg.seed);
        let arrivals_rng = SeededRng::new(seeder.next_u64());
        let ids_rng = SeededRng::new(seeder.next_u64());
        let mut services = Vec::with_capacity(cfg.services.len());
        for ((s, targets), slow) in cfg.services.iter().zip(graph).zip(slowdowns) {
            let calls = s
                .calls
                .iter()
                .zip(targets)
                .map(|(c, target)| ResolvedCall {
                    target,
                    probability: c.probability,
                    count: c.count,
                    parallel: c.parallel,
                })
                .collect();
            services.push(ServiceState {
                slots_per_replica: s.slots_per_replica,
                queue_limit: s.queue_limit,
                median_ns: s.median_service_ns as f64,
                sigma: s.service_sigma,
                cores_per_replica: s.cores_per_replica,
                cpu_per_request: s.cpu_per_request,
                contention: s.contention,
                startup_ns: s.startup_ns,
                min_replicas: s.min_replicas,
                max_replicas: s.max_replicas,
                calls,
                slowdowns: slow,
                rng: SeededRng::new(seeder.next_u64()),
                ready: s.replicas.clamp(s.min_replicas, s.max_replicas),
                pending_ready: VecDeque::new(),
                busy: 0,
                in_service: 0,
                queue: VecDeque::new(),
                cpu_busy: 0.0,
                cpu_capacity: 0.0,
                cpu_last: 0,
                acc: IntervalAcc::default(),
            });
        }
        let mut sim = Sim {
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            names: cfg.services.iter().map(|s| s.name.clone()).collect(),
            operations: cfg.services.iter().map(|s| s.operation.clone()).collect(),
            hpa_targets: cfg
                .services
                .iter()
                .map(|s| s.hpa_target_utilisation)
                .collect(),
            kinds: cfg.services.iter().map(|s| s.kind).collect(),
            services,
            root,
            entries,
            delays,
            // The thinning bound covers every spike at once.
            max_rate: spikes
                .iter()
                .fold(cfg.traffic.max_rate(), |r, s| r * s.2.max(1.0)),
            spikes,
            traffic: cfg.traffic.clone(),
            arrivals_rng,
            ids_rng,
            requests: Vec::new(),
            free: Vec::new(),
            interval_ns: cfg.stats_interval_ns,
            interval_start: 0,
            root_outcomes: Vec::new(),
            root_ok: 0,
            root_failed: 0,
            spans_emitted: 0,
        };
        for (at, service, count) in losses {
            sim.push_event(at, EventKind::LoseReplicas { service, count });
        }
        sim.schedule_next_arrival();
        Ok(sim)
    }

    /// Current simulated time.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Service names in configuration order (the order of stats rows).
    pub fn service_names(&self) -> &[String] {
        &self.names
    }

    /// Position of a service in [`Sim::service_names`].
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// HPA target utilisation configured for a service.
    pub fn hpa_target(&self, name: &str) -> Option<f64> {
        self.service_index(name)
            .and_then(|i| self.hpa_targets.get(i).copied().flatten())
    }

    /// The workload kind of a service.
    pub fn kind(&self, name: &str) -> Option<WorkloadKind> {
        self.service_index(name)
            .and_then(|i| self.kinds.get(i).copied())
    }

    /// Desired replicas (ready plus starting), what a scaler last asked for.
    pub fn replicas(&self, name: &str) -> Option<u32> {
        self.service(name).map(ServiceState::desired)
    }

    /// Replicas currently able to serve.
    pub fn ready_replicas(&self, name: &str) -> Option<u32> {
        self.service(name).map(|s| s.ready)
    }

    /// Min/max replica bounds of a service.
    pub fn replica_bounds(&self, name: &str) -> Option<(u32, u32)> {
        self.service(name).map(|s| (s.min_replicas, s.max_replicas))
    }

    /// Requests waiting in the service's queue.
    pub fn queue_len(&self, name: &str) -> Option<usize> {
        self.service(name).map(|s| s.queue.len())
    }

    /// Requests at the service, waiting or holding a slot.
    pub fn in_system(&self, name: &str) -> Option<usize> {
        self.service(name).map(|s| s.queue.len() + s.busy as usize)
    }

    /// Cumulative (CPU used, CPU available on ready replicas) in
    /// core-nanoseconds since the start; differences give utilisation over
    /// any window.
    pub fn cpu_totals(&self, name: &str) -> Option<(f64, f64)> {
        self.service(name).map(|s| s.cpu_totals_at(self.now))
    }

    /// Spans handed out so far.
    pub fn spans_emitted(&self) -> u64 {
        self.spans_emitted
    }

    fn service(&self, name: &str) -> Option<&ServiceState> {
        self.service_index(name).and_then(|i| self.services.get(i))
    }

    /// Changes desired replicas at `now` (or later, if `now` is ahead of
    /// the clock) and returns the value actually applied after clamping.
    /// New replicas serve after the startup delay; removed capacity stops
    /// taking work immediately while in-flight requests finish.
    pub fn set_replicas(&mut self, service: &str, n: u32, now: u64) -> Result<u32, SimError> {
        let idx = self
            .service_index(service)
            .ok_or_else(|| SimError::UnknownService(service.to_string()))?;
        if now < self.now {
            return Err(SimError::TimeInPast {
                now: self.now,
                requested: now,
            });
        }
        let s = &self.services[idx];
        let n = n.clamp(s.min_replicas, s.max_replicas);
        if now > self.now {
            self.push_event(
                now,
                EventKind::Scale {
                    service: idx,
                    replicas: n,
                },
            );
        } else {
            self.apply_replicas(idx, n);
        }
        Ok(n)
    }

    /// Applies a replica change now and describes it if it changed
    /// anything, which is what scalers record for the report.
    pub fn scale(&mut self, service: &str, n: u32) -> Result<Option<ScaleAction>, SimError> {
        let from = self
            .replicas(service)
            .ok_or_else(|| SimError::UnknownService(service.to_string()))?;
        let to = self.set_replicas(service, n, self.now)?;
        Ok((to != from).then(|| ScaleAction {
            time: self.now,
            service: service.to_string(),
            from,
            to,
        }))
    }

    fn apply_replicas(&mut self, idx: usize, n: u32) {
        let now = self.now;
        let desired = self.services[idx].desired();
        if n > desired {
            let add = n - desired;
            let startup = self.services[idx].startup_ns;
            if startup == 0 {
                let s = &mut self.services[idx];
                s.touch(now);
                s.ready += add;
                self.dispatch(idx);
            } else {
                let at = now.saturating_add(startup);
                for _ in 0..add {
                    self.services[idx].pending_ready.push_back(at);
                    self.push_event(at, EventKind::ReplicaReady(idx));
                }
            }
        } else if n < desired {
            let s = &mut self.services[idx];
            let mut remove = desired - n;
            // Cancel replicas that are still starting first: they carry no
            // work, and their ready events then find nothing to promote.
            while remove > 0 && s.pending_ready.pop_back().is_some() {
                remove -= 1;
            }
            s.touch(now);
            s.ready = s.ready.saturating_sub(remove);
        }
    }

    fn push_event(&mut self, time: u64, kind: EventKind) {
        self.seq += 1;
        self.events.push(Event {
            time,
            seq: self.seq,
            kind,
        });
    }

    fn schedule_next_arrival(&mut self) {
        if self.max_rate <= 0.0 {
            return;
        }
        let gap = self.arrivals_rng.exponential(self.max_rate) * NANOS_PER_SEC as f64;
        let at = self.now.saturating_add(gap as u64);
        self.push_event(at, EventKind::RootArrival);
    }

    /// Runs every event up to and including `until`, passing each span to
    /// `on_span` in order of end time and returning the statistics rows
    /// closed on the way. Work per call is proportional to the simulated
    /// time covered.
    pub fn advance_to(
        &mut self,
        until: u64,
        on_span: &mut impl FnMut(&SimSpan<'_>),
    ) -> Vec<IntervalStats> {
        let mut rows = Vec::new();
        if until < self.now {
            return rows;
        }
        loop {
            let boundary = self.interval_start.saturating_add(self.interval_ns);
            let next = self.events.peek().map(|e| e.time);
            match next {
                Some(t) if t <= until && t < boundary => {
                    if let Some(ev) = self.events.pop() {
                        self.process(ev, on_span);
                    }
                }
                _ if boundary <= until => {
                    self.now = boundary;
                    rows.push(self.close_interval());
                }
                _ => break,
            }
        }
        self.now = until;
        rows
    }

    fn close_interval(&mut self) -> IntervalStats {
        let now = self.now;
        let mut services = Vec::with_capacity(self.services.len());
        for (s, name) in self.services.iter_mut().zip(&self.names) {
            s.touch(now);
            let acc = std::mem::take(&mut s.acc);
            let mut lat = acc.latencies;
            lat.sort_unstable();
            let busy = s.cpu_busy - acc.cpu_busy_start;
            let cap = s.cpu_capacity - acc.cpu_capacity_start;
            services.push(ServiceIntervalStats {
                service: name.clone(),
                arrivals: acc.arrivals,
                completions: acc.completions,
                rejections: acc.rejections,
                errors: acc.errors,
                p50_ns: percentile(&lat, 50.0),
                p99_ns: percentile(&lat, 99.0),
                queue_len: s.queue.len(),
                busy_slots: s.busy,
                ready_replicas: s.ready,
                desired_replicas: s.desired(),
                cpu_utilisation: if cap > 0.0 { busy / cap } else { 0.0 },
            });
            // Reuse the latency buffer to avoid reallocating every interval.
            lat.clear();
            s.acc.latencies = lat;
            s.acc.cpu_busy_start = s.cpu_busy;
            s.acc.cpu_capacity_start = s.cpu_capacity;
        }
        let mut outcomes = std::mem::take(&mut self.root_outcomes);
        outcomes.sort_unstable();
        let ok_count = usize::try_from(self.root_ok).unwrap_or(usize::MAX);
        let ok_slice = &outcomes[..ok_count.min(outcomes.len())];
        let row = IntervalStats {
            start: self.interval_start,
            end: now,
            services,
            root_ok: self.root_ok,
            root_failed: self.root_failed,
            e2e_p50_ns: percentile(&outcomes, 50.0),
            e2e_p99_ns: percentile(&outcomes, 99.0),
            e2e_ok_p99_ns: percentile(ok_slice, 99.0),
        };
        outcomes.clear();
        self.root_outcomes = outcomes;
        self.root_ok = 0;
        self.root_failed = 0;
        self.interval_start = now;
        row
    }
}
