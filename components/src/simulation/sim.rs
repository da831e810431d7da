//! Seeded discrete-event simulation of a small microservice shop.
//!
//! Autoscalers are judged on reproducible runs: the same seed and the same
//! scaling calls give bit-identical spans and statistics, so two policies can
//! be compared on exactly the same arrival sequence. Time is integer
//! nanoseconds from the start of the run.

use std::collections::{BinaryHeap, VecDeque};
use std::fmt;

use crate::random::{SeededRng, SplitMix64};
use crate::stats::percentile;

/// Nanoseconds in one second; all simulated times are in nanoseconds.
pub const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Nanoseconds in one millisecond.
pub const NANOS_PER_MILLI: u64 = 1_000_000;

/// Whole seconds as simulated time, so scenario tables stay readable.
pub const fn secs(s: u64) -> u64 {
    s * NANOS_PER_SEC
}

/// Milliseconds as simulated time, so scenario tables stay readable.
pub const fn millis(ms: u64) -> u64 {
    ms * NANOS_PER_MILLI
}

fn to_secs_f64(ns: u64) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}

fn nonzero_bytes8(rng: &mut SeededRng) -> [u8; 8] {
    loop {
        let v = rng.next_u64();
        if v != 0 {
            return v.to_be_bytes();
        }
    }
}

fn nonzero_bytes16(rng: &mut SeededRng) -> [u8; 16] {
    loop {
        let hi = rng.next_u64();
        let lo = rng.next_u64();
        if hi != 0 || lo != 0 {
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&hi.to_be_bytes());
            out[8..].copy_from_slice(&lo.to_be_bytes());
            return out;
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// A synchronous downstream call made while the caller holds its slot.
#[derive(Clone, Debug, PartialEq)]
pub struct CallConfig {
    /// Name of the called service.
    pub service: String,
    /// Chance in `[0, 1]` that a request makes this call at all.
    pub probability: f64,
    /// Sequential repetitions when the call is made (fan-out).
    pub count: u32,
}

/// Static description of one service; plain data so it can come from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// Unique service name, used in spans and scaling calls.
    pub name: String,
    /// The single operation name its spans carry.
    pub operation: String,
    /// Replicas at the start of the run (clamped to min/max).
    pub replicas: u32,
    /// Lower bound enforced on every scaling call.
    pub min_replicas: u32,
    /// Upper bound enforced on every scaling call.
    pub max_replicas: u32,
    /// Concurrent requests one replica can hold (worker threads or
    /// connections).
    pub slots_per_replica: u32,
    /// Requests that may wait in the shared FIFO before arrivals are
    /// rejected.
    pub queue_limit: usize,
    /// Median of the log-normal own-work time.
    pub median_service_ns: u64,
    /// Log-normal shape; 0 makes own work deterministic.
    pub service_sigma: f64,
    /// CPU cores of one replica; also the contention threshold.
    pub cores_per_replica: f64,
    /// Cores one request burns during its own work, so utilisation reflects
    /// threads blocked on downstream calls as idle.
    pub cpu_per_request: f64,
    /// Thrashing factor: work starting while `n` requests (itself
    /// included) are in their own work across `c` ready cores takes
    /// `1 + contention * max(0, n - c) / c` times longer, so extra
    /// concurrency lowers a saturated service's throughput.
    pub contention: f64,
    /// Delay before a newly added replica can serve.
    pub startup_ns: u64,
    /// Downstream calls, made in order after the service's own work.
    pub calls: Vec<CallConfig>,
    /// Target CPU utilisation for the HPA baseline; `None` leaves the
    /// service unmanaged.
    pub hpa_target_utilisation: Option<f64>,
}

/// Open-loop arrival rate over time at the root service.
#[derive(Clone, Debug, PartialEq)]
pub enum TrafficPattern {
    /// Constant rate.
    Steady {
        /// Requests per second.
        rps: f64,
    },
    /// Linear change from the start of the run, then flat.
    Ramp {
        /// Rate at time 0.
        from_rps: f64,
        /// Rate reached at `over` and kept afterwards.
        to_rps: f64,
        /// Length of the ramp.
        over: u64,
    },
    /// A flat base with one rectangular burst.
    Spike {
        /// Rate outside the burst.
        base_rps: f64,
        /// Rate during the burst.
        peak_rps: f64,
        /// Start of the burst.
        at: u64,
        /// Length of the burst.
        duration: u64,
    },
    /// Sinusoidal day/night cycle.
    Diurnal {
        /// Average rate.
        mean_rps: f64,
        /// Relative swing: the rate is `mean * (1 + amplitude * sin)`.
        amplitude: f64,
        /// Cycle length.
        period: u64,
    },
}

impl TrafficPattern {
    /// Instantaneous arrival rate in requests per second at `t`.
    pub fn rate_at(&self, t: u64) -> f64 {
        let r = match *self {
            TrafficPattern::Steady { rps } => rps,
            TrafficPattern::Ramp {
                from_rps,
                to_rps,
                over,
            } => {
                if over == 0 || t >= over {
                    to_rps
                } else {
                    from_rps + (to_rps - from_rps) * (t as f64 / over as f64)
                }
            }
            TrafficPattern::Spike {
                base_rps,
                peak_rps,
                at,
                duration,
            } => {
                if t >= at && t - at < duration {
                    peak_rps
                } else {
                    base_rps
                }
            }
            TrafficPattern::Diurnal {
                mean_rps,
                amplitude,
                period,
            } => {
                if period == 0 {
                    mean_rps
                } else {
                    let phase = (t % period) as f64 / period as f64;
                    mean_rps * (1.0 + amplitude * (std::f64::consts::TAU * phase).sin())
                }
            }
        };
        r.max(0.0)
    }

    fn max_rate(&self) -> f64 {
        let r = match *self {
            TrafficPattern::Steady { rps } => rps,
            TrafficPattern::Ramp {
                from_rps, to_rps, ..
            } => from_rps.max(to_rps),
            TrafficPattern::Spike {
                base_rps, peak_rps, ..
            } => base_rps.max(peak_rps),
            TrafficPattern::Diurnal {
                mean_rps,
                amplitude,
                ..
            } => mean_rps * (1.0 + amplitude.abs()),
        };
        r.max(0.0)
    }
}

/// A timed slowdown of one service, e.g. a degraded database.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowdownFault {
    /// Affected service.
    pub service: String,
    /// Multiplier on the median own-work time.
    pub factor: f64,
    /// First instant at which work starting is slowed.
    pub start: u64,
    /// Instant from which work is back to normal.
    pub end: u64,
}

/// Everything needed to build a [`Sim`]; plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Seed of all random streams.
    pub seed: u64,
    /// Service receiving external traffic.
    pub root: String,
    /// All services, in reporting order.
    pub services: Vec<ServiceConfig>,
    /// Arrival rate at the root.
    pub traffic: TrafficPattern,
    /// Timed slowdowns.
    pub faults: Vec<SlowdownFault>,
    /// Length of a statistics row.
    pub stats_interval_ns: u64,
}

/// Why a configuration or a call was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum SimError {
    /// A name does not match any configured service.
    UnknownService(String),
    /// The call graph loops, so a request could never finish.
    CallCycle(String),
    /// A parameter is out of its meaningful range.
    InvalidConfig(String),
    /// A change was requested for a time already simulated.
    TimeInPast {
        /// Current simulated time.
        now: u64,
        /// Requested time.
        requested: u64,
    },
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::UnknownService(s) => write!(f, "unknown service {s:?}"),
            SimError::CallCycle(s) => write!(f, "call graph has a cycle through {s:?}"),
            SimError::InvalidConfig(s) => write!(f, "invalid configuration: {s}"),
            SimError::TimeInPast { now, requested } => {
                write!(
                    f,
                    "time {requested} ns is before the simulation clock {now} ns"
                )
            }
        }
    }
}

impl std::error::Error for SimError {}

// ---------------------------------------------------------------------------
// Output records
// ---------------------------------------------------------------------------

/// One service visit, shaped like a tracing span so trace-driven scalers can
/// consume it directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SimSpan<'a> {
    /// Shared by every span of one external request.
    pub trace_id: [u8; 16],
    /// Unique per visit.
    pub span_id: [u8; 8],
    /// The calling visit, `None` for the root.
    pub parent_span_id: Option<[u8; 8]>,
    /// Visited service.
    pub service: &'a str,
    /// The service's operation name.
    pub operation: &'a str,
    /// Arrival at the service, so queueing is inside the span.
    pub start: u64,
    /// When a slot took the request: `start..started` is the time it queued.
    pub started: u64,
    /// Completion, after all downstream calls.
    pub end: u64,
    /// Rejected by a full queue, or failed because a callee did.
    pub error: bool,
}

impl SimSpan<'_> {
    /// Span length in nanoseconds.
    pub fn duration(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
}

/// Per-service figures for one statistics interval.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceIntervalStats {
    /// Service name.
    pub service: String,
    /// Visits that arrived (admitted or rejected).
    pub arrivals: u64,
    /// Admitted visits that finished.
    pub completions: u64,
    /// Visits turned away by a full queue.
    pub rejections: u64,
    /// Finished visits that failed because a callee failed.
    pub errors: u64,
    /// Median latency of finished visits.
    pub p50_ns: Option<u64>,
    /// 99th percentile latency of finished visits.
    pub p99_ns: Option<u64>,
    /// Waiting requests at the end of the interval.
    pub queue_len: usize,
    /// Occupied slots at the end of the interval.
    pub busy_slots: u32,
    /// Replicas able to serve at the end of the interval.
    pub ready_replicas: u32,
    /// Replicas asked for (ready plus starting) at the end of the interval.
    pub desired_replicas: u32,
    /// CPU used over CPU available on ready replicas during the interval.
    pub cpu_utilisation: f64,
}

/// One closed statistics interval `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalStats {
    /// Interval start.
    pub start: u64,
    /// Interval end (exclusive).
    pub end: u64,
    /// Per-service rows in configuration order.
    pub services: Vec<ServiceIntervalStats>,
    /// Root requests that finished successfully.
    pub root_ok: u64,
    /// Root requests rejected or failed.
    pub root_failed: u64,
    /// End-to-end p50 with failed requests counted as infinitely slow.
    pub e2e_p50_ns: Option<u64>,
    /// End-to-end p99 with failed requests counted as infinitely slow
    /// (`u64::MAX`), so shedding load cannot hide an SLO breach.
    pub e2e_p99_ns: Option<u64>,
    /// End-to-end p99 over successful requests only.
    pub e2e_ok_p99_ns: Option<u64>,
}

impl IntervalStats {
    /// Row of a service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceIntervalStats> {
        self.services.iter().find(|s| s.service == name)
    }

    /// Whether the interval breaches an end-to-end p99 latency objective.
    pub fn violates(&self, slo_ns: u64) -> bool {
        self.e2e_p99_ns.is_some_and(|p| p > slo_ns)
    }
}

/// A replica change made by a scaler, kept for reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleAction {
    /// When it was applied.
    pub time: u64,
    /// Scaled service.
    pub service: String,
    /// Desired replicas before.
    pub from: u32,
    /// Desired replicas after.
    pub to: u32,
}

impl ScaleAction {
    /// Whether capacity was added.
    pub fn is_scale_up(&self) -> bool {
        self.to > self.from
    }
}

// ---------------------------------------------------------------------------
// Simulation state
// ---------------------------------------------------------------------------

struct ResolvedCall {
    target: usize,
    probability: f64,
    count: u32,
}

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
    error: bool,
    next_call: usize,
    remaining: u32,
}

enum EventKind {
    RootArrival,
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
    services: Vec<ServiceState>,
    root: usize,
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

fn invalid(msg: String) -> SimError {
    SimError::InvalidConfig(msg)
}

fn validate_service(s: &ServiceConfig) -> Result<(), SimError> {
    let n = &s.name;
    if s.min_replicas > s.max_replicas {
        return Err(invalid(format!("{n}: min_replicas > max_replicas")));
    }
    if s.slots_per_replica == 0 {
        return Err(invalid(format!("{n}: slots_per_replica must be > 0")));
    }
    if !(s.service_sigma.is_finite() && s.service_sigma >= 0.0) {
        return Err(invalid(format!("{n}: service_sigma must be >= 0")));
    }
    if !(s.cores_per_replica.is_finite() && s.cores_per_replica > 0.0) {
        return Err(invalid(format!("{n}: cores_per_replica must be > 0")));
    }
    if !(s.cpu_per_request.is_finite() && s.cpu_per_request >= 0.0) {
        return Err(invalid(format!("{n}: cpu_per_request must be >= 0")));
    }
    if !(s.contention.is_finite() && s.contention >= 0.0) {
        return Err(invalid(format!("{n}: contention must be >= 0")));
    }
    if let Some(t) = s.hpa_target_utilisation
        && !(t.is_finite() && t > 0.0)
    {
        return Err(invalid(format!("{n}: hpa target must be > 0")));
    }
    for c in &s.calls {
        if !(0.0..=1.0).contains(&c.probability) {
            return Err(invalid(format!("{n}: call probability outside [0, 1]")));
        }
    }
    Ok(())
}

fn find_cycle(calls: &[Vec<usize>]) -> Option<usize> {
    // 0 = unvisited, 1 = on the current path, 2 = done.
    fn visit(v: usize, calls: &[Vec<usize>], colour: &mut [u8]) -> Option<usize> {
        colour[v] = 1;
        for &w in &calls[v] {
            match colour[w] {
                1 => return Some(w),
                0 => {
                    if let Some(c) = visit(w, calls, colour) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        colour[v] = 2;
        None
    }
    let mut colour = vec![0u8; calls.len()];
    for v in 0..calls.len() {
        if colour[v] == 0
            && let Some(c) = visit(v, calls, &mut colour)
        {
            return Some(c);
        }
    }
    None
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
            services,
            root,
            max_rate: cfg.traffic.max_rate(),
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

    fn process(&mut self, ev: Event, out: &mut SpanSink<'_>) {
        self.now = ev.time;
        match ev.kind {
            EventKind::RootArrival => {
                let rate = self.traffic.rate_at(self.now);
                let accept = self.arrivals_rng.next_f64() * self.max_rate < rate;
                if accept {
                    let trace_id = nonzero_bytes16(&mut self.ids_rng);
                    let req = self.new_request(trace_id, None, self.root);
                    self.arrive(req, out);
                }
                self.schedule_next_arrival();
            }
            EventKind::ServiceDone(req) => {
                let svc = self.requests[req].service;
                let s = &mut self.services[svc];
                s.touch(self.now);
                s.in_service = s.in_service.saturating_sub(1);
                self.proceed(req, out);
            }
            EventKind::ReplicaReady(svc) => {
                let now = self.now;
                let s = &mut self.services[svc];
                if s.pending_ready.front() == Some(&now) {
                    s.pending_ready.pop_front();
                    s.touch(now);
                    s.ready += 1;
                    self.dispatch(svc);
                }
            }
            EventKind::Scale { service, replicas } => self.apply_replicas(service, replicas),
        }
    }

    fn new_request(&mut self, trace_id: [u8; 16], parent: Option<usize>, service: usize) -> usize {
        let span_id = nonzero_bytes8(&mut self.ids_rng);
        let parent_span = parent.map(|p| self.requests[p].span_id);
        let r = Request {
            trace_id,
            span_id,
            parent_span,
            parent,
            service,
            arrival: self.now,
            started: self.now,
            error: false,
            next_call: 0,
            remaining: 0,
        };
        if let Some(i) = self.free.pop() {
            self.requests[i] = r;
            i
        } else {
            self.requests.push(r);
            self.requests.len() - 1
        }
    }

    fn arrive(&mut self, req: usize, out: &mut SpanSink<'_>) {
        let svc = self.requests[req].service;
        let s = &mut self.services[svc];
        s.acc.arrivals += 1;
        if s.queue.is_empty() && u64::from(s.busy) < s.capacity_slots() {
            self.start(req);
        } else if s.queue.len() < s.queue_limit {
            s.queue.push_back(req);
        } else {
            s.acc.rejections += 1;
            self.reject(req, out);
        }
    }

    fn start(&mut self, req: usize) {
        let now = self.now;
        let svc = self.requests[req].service;
        self.requests[req].started = now;
        let s = &mut self.services[svc];
        s.touch(now);
        s.busy += 1;
        s.in_service += 1;
        let median = s.median_ns * s.slowdown_at(now);
        let base = s.rng.log_normal(median, s.sigma);
        let cores = s.cores();
        let over = (f64::from(s.in_service) - cores).max(0.0);
        let factor = if cores > 0.0 {
            1.0 + s.contention * over / cores
        } else {
            1.0
        };
        let done = now.saturating_add((base * factor) as u64);
        self.push_event(done, EventKind::ServiceDone(req));
    }

    fn dispatch(&mut self, svc: usize) {
        loop {
            let s = &mut self.services[svc];
            if u64::from(s.busy) >= s.capacity_slots() {
                return;
            }
            match s.queue.pop_front() {
                Some(req) => self.start(req),
                None => return,
            }
        }
    }

    /// Moves a request past its own work: next downstream call or done.
    fn proceed(&mut self, req: usize, out: &mut SpanSink<'_>) {
        let svc = self.requests[req].service;
        loop {
            let r = &mut self.requests[req];
            if r.remaining > 0 {
                r.remaining -= 1;
                let call = r.next_call - 1;
                let trace_id = r.trace_id;
                let target = self.services[svc].calls[call].target;
                let child = self.new_request(trace_id, Some(req), target);
                self.arrive(child, out);
                return;
            }
            let s = &mut self.services[svc];
            match s.calls.get(r.next_call) {
                Some(c) => {
                    r.next_call += 1;
                    if c.count > 0 && s.rng.next_f64() < c.probability {
                        r.remaining = c.count;
                    }
                }
                None => {
                    self.complete(req, out);
                    return;
                }
            }
        }
    }

    fn emit(&mut self, req: usize, out: &mut SpanSink<'_>) {
        let r = &self.requests[req];
        let span = SimSpan {
            trace_id: r.trace_id,
            span_id: r.span_id,
            parent_span_id: r.parent_span,
            service: &self.names[r.service],
            operation: &self.operations[r.service],
            start: r.arrival,
            started: r.started,
            end: self.now,
            error: r.error,
        };
        out(&span);
        self.spans_emitted += 1;
    }

    /// Turns away a visit that found the queue full.
    fn reject(&mut self, req: usize, out: &mut SpanSink<'_>) {
        self.requests[req].error = true;
        let parent = self.requests[req].parent;
        if parent.is_none() {
            self.root_failed += 1;
            self.root_outcomes.push(u64::MAX);
        }
        self.emit(req, out);
        self.free.push(req);
        if let Some(p) = parent {
            self.child_done(p, true, out);
        }
    }

    /// Ends an admitted visit, frees its slot and resumes its caller.
    fn complete(&mut self, req: usize, out: &mut SpanSink<'_>) {
        let now = self.now;
        let (svc, error, parent, latency) = {
            let r = &self.requests[req];
            (r.service, r.error, r.parent, now - r.arrival)
        };
        let s = &mut self.services[svc];
        s.busy = s.busy.saturating_sub(1);
        s.acc.completions += 1;
        if error {
            s.acc.errors += 1;
        }
        s.acc.latencies.push(latency);
        if parent.is_none() {
            if error {
                self.root_failed += 1;
                self.root_outcomes.push(u64::MAX);
            } else {
                self.root_ok += 1;
                self.root_outcomes.push(latency);
            }
        }
        self.emit(req, out);
        self.free.push(req);
        self.dispatch(svc);
        if let Some(p) = parent {
            self.child_done(p, error, out);
        }
    }

    /// A callee answered; a failure aborts the caller's remaining calls
    /// and fails it too, as an unhandled RPC error would.
    fn child_done(&mut self, parent: usize, error: bool, out: &mut SpanSink<'_>) {
        if error {
            self.requests[parent].error = true;
            self.complete(parent, out);
        } else {
            self.proceed(parent, out);
        }
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

// ---------------------------------------------------------------------------
// HPA baseline
// ---------------------------------------------------------------------------

/// Tuning of the HPA baseline; the defaults are the Kubernetes defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct HpaConfig {
    /// Time between evaluations (controller sync period).
    pub sync_period_ns: u64,
    /// Relative deviation from the target that is ignored.
    pub tolerance: f64,
    /// Window whose highest recommendation bounds a scale-down.
    pub downscale_stabilisation_ns: u64,
    /// Caps each scale-up at `max(2 * current, current + 4)`, the default
    /// scale-up policy.
    pub limit_scale_up_rate: bool,
}

impl Default for HpaConfig {
    fn default() -> Self {
        Self {
            sync_period_ns: secs(15),
            tolerance: 0.1,
            downscale_stabilisation_ns: secs(300),
            limit_scale_up_rate: true,
        }
    }
}

struct HpaService {
    name: String,
    target: f64,
    last_busy: f64,
    last_capacity: f64,
    history: VecDeque<(u64, u32)>,
}

/// The Kubernetes Horizontal Pod Autoscaler on CPU utilisation, as the
/// baseline that trace-driven scaling is compared against.
pub struct Hpa {
    cfg: HpaConfig,
    next_sync: u64,
    services: Vec<HpaService>,
}

/// Unstabilised HPA recommendation. Starting replicas count as idle when
/// scaling up, as the controller does, so a scale-up already under way is
/// not repeated.
fn hpa_raw_recommendation(
    current: u32,
    ready: u32,
    utilisation: f64,
    target: f64,
    tolerance: f64,
) -> u32 {
    if current == 0 || target.is_nan() || target <= 0.0 || !utilisation.is_finite() {
        return current;
    }
    let mut ratio = utilisation / target;
    if (ratio - 1.0).abs() <= tolerance {
        return current;
    }
    if ratio > 1.0 && ready < current {
        ratio *= f64::from(ready) / f64::from(current);
        if ratio <= 1.0 + tolerance {
            return current;
        }
    }
    let want = (f64::from(current) * ratio).ceil();
    if want >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        want as u32
    }
}

/// Applies the stabilisation windows: scale-up immediately, scale-down only
/// to the highest recommendation in the window (`history` holds it,
/// including the newest).
fn hpa_stabilise(current: u32, raw: u32, history: &VecDeque<(u64, u32)>) -> u32 {
    let down = history
        .iter()
        .map(|&(_, r)| r)
        .max()
        .unwrap_or(raw)
        .max(raw);
    let mut rec = current;
    if rec < raw {
        rec = raw;
    }
    if rec > down {
        rec = down;
    }
    rec
}

impl Hpa {
    /// Manages every service with an HPA target; first evaluation one sync
    /// period after the current time so it sees a full window.
    pub fn new(sim: &Sim, cfg: HpaConfig) -> Self {
        let services = sim
            .service_names()
            .iter()
            .filter_map(|name| {
                let target = sim.hpa_target(name)?;
                let (b, c) = sim.cpu_totals(name)?;
                Some(HpaService {
                    name: name.clone(),
                    target,
                    last_busy: b,
                    last_capacity: c,
                    history: VecDeque::new(),
                })
            })
            .collect();
        Self {
            next_sync: sim.now().saturating_add(cfg.sync_period_ns),
            cfg,
            services,
        }
    }

    /// Evaluates if a sync is due at the simulator's current time and
    /// returns the replica changes made.
    pub fn step(&mut self, sim: &mut Sim) -> Vec<ScaleAction> {
        let now = sim.now();
        let mut actions = Vec::new();
        if now < self.next_sync {
            return actions;
        }
        while self.next_sync <= now {
            self.next_sync = self
                .next_sync
                .saturating_add(self.cfg.sync_period_ns.max(1));
        }
        for hs in &mut self.services {
            let (Some((b, c)), Some(current), Some(ready), Some((lo, hi))) = (
                sim.cpu_totals(&hs.name),
                sim.replicas(&hs.name),
                sim.ready_replicas(&hs.name),
                sim.replica_bounds(&hs.name),
            ) else {
                continue;
            };
            let (db, dc) = (b - hs.last_busy, c - hs.last_capacity);
            hs.last_busy = b;
            hs.last_capacity = c;
            if dc <= 0.0 {
                continue;
            }
            let raw =
                hpa_raw_recommendation(current, ready, db / dc, hs.target, self.cfg.tolerance);
            let window = self.cfg.downscale_stabilisation_ns;
            while hs
                .history
                .front()
                .is_some_and(|&(t, _)| t.saturating_add(window) <= now)
            {
                hs.history.pop_front();
            }
            hs.history.push_back((now, raw));
            let mut rec = hpa_stabilise(current, raw, &hs.history);
            if self.cfg.limit_scale_up_rate && rec > current {
                rec = rec.min(current.saturating_mul(2).max(current.saturating_add(4)));
            }
            let rec = rec.clamp(lo, hi);
            if rec != current
                && let Ok(Some(a)) = sim.scale(&hs.name, rec)
            {
                actions.push(a);
            }
        }
        actions
    }
}

// ---------------------------------------------------------------------------
// Scenarios, runs and reports
// ---------------------------------------------------------------------------

/// One cause in a scenario, with the service a good scaler should add
/// capacity to and those where added capacity is wasted or harmful.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPhase {
    /// When the cause begins.
    pub start: u64,
    /// When the cause ends.
    pub end: u64,
    /// Service whose scale-up fixes the problem.
    pub right_target: String,
    /// Services whose scale-up is a mistake during this phase.
    pub wrong_targets: Vec<String>,
}

/// A complete experiment: the shop, its length, its SLO and its ground
/// truth. Plain data so it can be loaded from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Short identifier.
    pub name: String,
    /// The simulated shop.
    pub sim: SimConfig,
    /// Simulated length of the run.
    pub duration_ns: u64,
    /// End-to-end p99 latency objective.
    pub slo_latency_ns: u64,
    /// Causes in time order; each lasts until the next starts for the
    /// purpose of attributing actions.
    pub phases: Vec<FaultPhase>,
}

/// Outcome of one fault phase.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseReport {
    /// Phase start.
    pub start: u64,
    /// The phase's right target.
    pub right_target: String,
    /// Seconds from the phase start to the first scale-up of the right
    /// target.
    pub first_correct_action_seconds: Option<f64>,
    /// Scale-ups of wrong targets attributed to this phase.
    pub wrong_target_actions: u32,
}

/// How well a scaler did over a run; comparable across scalers because it
/// only needs the stats rows and the actions taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Seconds in intervals whose end-to-end p99 breaches the SLO, failed
    /// requests counting as infinitely slow.
    pub slo_violation_seconds: f64,
    /// Cost: desired replicas integrated over time, all services.
    pub replica_seconds: f64,
    /// Reaction time of the first phase (see [`PhaseReport`]).
    pub first_correct_action_seconds: Option<f64>,
    /// Wrong-target scale-ups over all phases.
    pub wrong_target_actions: u32,
    /// Per-phase detail.
    pub phases: Vec<PhaseReport>,
}

impl Report {
    /// Scores a run from its stats rows and the scaler's actions.
    pub fn compute(scenario: &Scenario, rows: &[IntervalStats], actions: &[ScaleAction]) -> Self {
        let mut slo_violation_seconds = 0.0;
        let mut replica_seconds = 0.0;
        for row in rows {
            let len = to_secs_f64(row.end.saturating_sub(row.start));
            if row.violates(scenario.slo_latency_ns) {
                slo_violation_seconds += len;
            }
            replica_seconds += row
                .services
                .iter()
                .map(|s| f64::from(s.desired_replicas) * len)
                .sum::<f64>();
        }
        let mut phases = Vec::with_capacity(scenario.phases.len());
        for (i, ph) in scenario.phases.iter().enumerate() {
            let until = scenario.phases.get(i + 1).map_or(u64::MAX, |n| n.start);
            let in_phase =
                |a: &&ScaleAction| a.is_scale_up() && a.time >= ph.start && a.time < until;
            let first = actions
                .iter()
                .filter(in_phase)
                .find(|a| a.service == ph.right_target)
                .map(|a| to_secs_f64(a.time - ph.start));
            let wrong = actions
                .iter()
                .filter(in_phase)
                .filter(|a| ph.wrong_targets.contains(&a.service))
                .count();
            phases.push(PhaseReport {
                start: ph.start,
                right_target: ph.right_target.clone(),
                first_correct_action_seconds: first,
                wrong_target_actions: u32::try_from(wrong).unwrap_or(u32::MAX),
            });
        }
        Self {
            slo_violation_seconds,
            replica_seconds,
            first_correct_action_seconds: phases
                .first()
                .and_then(|p| p.first_correct_action_seconds),
            wrong_target_actions: phases.iter().map(|p| p.wrong_target_actions).sum(),
            phases,
        }
    }
}

/// Anything that changes replicas during a run; the common interface lets
/// the HPA baseline and trace-driven scalers be scored the same way.
pub trait Scaler {
    /// Sees every span as it completes; trace-driven scalers learn here.
    fn observe_span(&mut self, span: &SimSpan<'_>) {
        let _ = span;
    }

    /// Called after each simulated tick with the rows just closed; returns
    /// the replica changes made.
    fn on_tick(&mut self, sim: &mut Sim, closed: &[IntervalStats]) -> Vec<ScaleAction>;
}

impl Scaler for Hpa {
    fn on_tick(&mut self, sim: &mut Sim, _closed: &[IntervalStats]) -> Vec<ScaleAction> {
        self.step(sim)
    }
}

/// Leaves replicas alone: the do-nothing reference.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoScaling;

impl Scaler for NoScaling {
    fn on_tick(&mut self, _sim: &mut Sim, _closed: &[IntervalStats]) -> Vec<ScaleAction> {
        Vec::new()
    }
}

/// A replica change fixed in advance, for oracle runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledStep {
    /// Earliest time to apply it.
    pub at: u64,
    /// Service to scale.
    pub service: String,
    /// Desired replicas.
    pub replicas: u32,
}

/// Applies fixed replica changes at given times, e.g. "the right action ten
/// seconds after the fault", to bound what a scaler could achieve.
#[derive(Clone, Debug, Default)]
pub struct ScheduledScaler {
    steps: Vec<ScheduledStep>,
    next: usize,
}

impl ScheduledScaler {
    /// Steps are applied in time order at the first tick at or after each.
    pub fn new(mut steps: Vec<ScheduledStep>) -> Self {
        steps.sort_by_key(|s| s.at);
        Self { steps, next: 0 }
    }
}

impl Scaler for ScheduledScaler {
    fn on_tick(&mut self, sim: &mut Sim, _closed: &[IntervalStats]) -> Vec<ScaleAction> {
        let mut actions = Vec::new();
        while let Some(step) = self.steps.get(self.next) {
            if step.at > sim.now() {
                break;
            }
            if let Ok(Some(a)) = sim.scale(&step.service, step.replicas) {
                actions.push(a);
            }
            self.next += 1;
        }
        actions
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// One row per statistics interval.
    pub rows: Vec<IntervalStats>,
    /// Replica changes made by the scaler.
    pub actions: Vec<ScaleAction>,
    /// Score of the run.
    pub report: Report,
    /// Number of spans produced.
    pub spans: u64,
}

/// Runs a scenario to its end, ticking the scaler once per statistics
/// interval.
pub fn run_scenario(scenario: &Scenario, scaler: &mut dyn Scaler) -> Result<RunResult, SimError> {
    let mut sim = Sim::new(&scenario.sim)?;
    let tick = scenario.sim.stats_interval_ns;
    let mut rows = Vec::new();
    let mut actions = Vec::new();
    let mut t = 0u64;
    while t < scenario.duration_ns {
        t = t.saturating_add(tick).min(scenario.duration_ns);
        let closed = sim.advance_to(t, &mut |s| scaler.observe_span(s));
        actions.extend(scaler.on_tick(&mut sim, &closed));
        rows.extend(closed);
    }
    let report = Report::compute(scenario, &rows, &actions);
    Ok(RunResult {
        rows,
        actions,
        report,
        spans: sim.spans_emitted(),
    })
}

/// Service-level objective shared by the built-in scenarios.
pub const DEFAULT_SLO_NS: u64 = millis(500);

fn frontend() -> ServiceConfig {
    ServiceConfig {
        name: "frontend".into(),
        operation: "GET /cart".into(),
        replicas: 2,
        min_replicas: 2,
        max_replicas: 10,
        slots_per_replica: 256,
        queue_limit: 2000,
        median_service_ns: millis(2),
        service_sigma: 0.4,
        cores_per_replica: 1.0,
        cpu_per_request: 1.0,
        contention: 0.0,
        startup_ns: secs(10),
        calls: vec![CallConfig {
            service: "worker".into(),
            probability: 1.0,
            count: 1,
        }],
        hpa_target_utilisation: Some(0.6),
    }
}

fn worker(replicas: u32, slots: u32, median_ms: u64, queries: u32) -> ServiceConfig {
    ServiceConfig {
        name: "worker".into(),
        operation: "CartService/GetCart".into(),
        replicas,
        min_replicas: replicas,
        max_replicas: 12,
        slots_per_replica: slots,
        queue_limit: 1000,
        median_service_ns: millis(median_ms),
        service_sigma: 0.5,
        cores_per_replica: 1.0,
        // Threads share the replica's core, so a fully busy replica is at
        // 100 % only if every thread is computing rather than waiting.
        cpu_per_request: 1.0 / f64::from(slots),
        contention: 0.0,
        startup_ns: secs(10),
        calls: vec![CallConfig {
            service: "db".into(),
            probability: 1.0,
            count: queries,
        }],
        hpa_target_utilisation: Some(0.6),
    }
}

fn db(replicas: u32, cores: f64, median_ms: u64, contention: f64) -> ServiceConfig {
    ServiceConfig {
        name: "db".into(),
        operation: "SELECT".into(),
        replicas,
        min_replicas: replicas,
        max_replicas: 8,
        slots_per_replica: 64,
        queue_limit: 1000,
        median_service_ns: millis(median_ms),
        service_sigma: 0.3,
        cores_per_replica: cores,
        cpu_per_request: 1.0,
        contention,
        startup_ns: secs(20),
        calls: Vec::new(),
        // Databases are usually run hotter than stateless tiers.
        hpa_target_utilisation: Some(0.7),
    }
}

fn shop(seed: u64, services: Vec<ServiceConfig>, traffic: TrafficPattern) -> SimConfig {
    SimConfig {
        seed,
        root: "frontend".into(),
        services,
        traffic,
        faults: Vec::new(),
        stats_interval_ns: NANOS_PER_SEC,
    }
}

/// A traffic spike overruns a small worker pool while the database stays
/// healthy: adding workers fixes it, adding database replicas does not.
pub fn worker_cap() -> Scenario {
    let traffic = TrafficPattern::Spike {
        base_rps: 80.0,
        peak_rps: 240.0,
        at: secs(180),
        duration: secs(300),
    };
    Scenario {
        name: "worker_cap".into(),
        sim: shop(
            1,
            vec![frontend(), worker(2, 4, 25, 2), db(2, 3.0, 5, 1.0)],
            traffic,
        ),
        duration_ns: secs(720),
        slo_latency_ns: DEFAULT_SLO_NS,
        phases: vec![FaultPhase {
            start: secs(180),
            end: secs(480),
            right_target: "worker".into(),
            wrong_targets: vec!["db".into()],
        }],
    }
}

/// A traffic spike saturates a database that thrashes under concurrency:
/// more workers push more concurrent queries and make it worse, more
/// database replicas fix it.
pub fn db_bottleneck() -> Scenario {
    let traffic = TrafficPattern::Spike {
        base_rps: 60.0,
        peak_rps: 150.0,
        at: secs(180),
        duration: secs(300),
    };
    Scenario {
        name: "db_bottleneck".into(),
        sim: shop(
            2,
            vec![frontend(), worker(3, 8, 10, 3), db(1, 4.0, 8, 2.0)],
            traffic,
        ),
        duration_ns: secs(720),
        slo_latency_ns: DEFAULT_SLO_NS,
        phases: vec![FaultPhase {
            start: secs(180),
            end: secs(480),
            right_target: "db".into(),
            wrong_targets: vec!["worker".into()],
        }],
    }
}

/// The worker spike first, then a database slowdown: the right target
/// changes during the run. The gap exceeds the HPA scale-down window so
/// capacity added for the first cause has been released before the second.
pub fn mixed() -> Scenario {
    let traffic = TrafficPattern::Spike {
        base_rps: 80.0,
        peak_rps: 240.0,
        at: secs(60),
        duration: secs(180),
    };
    let mut sim = shop(
        3,
        vec![frontend(), worker(2, 4, 25, 2), db(2, 2.0, 5, 1.5)],
        traffic,
    );
    sim.faults.push(SlowdownFault {
        service: "db".into(),
        factor: 5.0,
        start: secs(600),
        end: secs(840),
    });
    Scenario {
        name: "mixed".into(),
        sim,
        duration_ns: secs(900),
        slo_latency_ns: DEFAULT_SLO_NS,
        phases: vec![
            FaultPhase {
                start: secs(60),
                end: secs(240),
                right_target: "worker".into(),
                wrong_targets: vec!["db".into()],
            },
            FaultPhase {
                start: secs(600),
                end: secs(840),
                right_target: "db".into(),
                wrong_targets: vec!["worker".into()],
            },
        ],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::hash::{DefaultHasher, Hash, Hasher};

    #[derive(Clone, Debug)]
    struct OwnedSpan {
        trace: [u8; 16],
        span: [u8; 8],
        parent: Option<[u8; 8]>,
        service: String,
        start: u64,
        end: u64,
        error: bool,
    }

    impl From<&SimSpan<'_>> for OwnedSpan {
        fn from(s: &SimSpan<'_>) -> Self {
            OwnedSpan {
                trace: s.trace_id,
                span: s.span_id,
                parent: s.parent_span_id,
                service: s.service.to_string(),
                start: s.start,
                end: s.end,
                error: s.error,
            }
        }
    }

    /// Runs `cfg` for `duration`, applying `steps` at whole seconds; returns
    /// a hash of every span field, the span count and the stats rows.
    fn hashed_run(
        cfg: &SimConfig,
        duration: u64,
        steps: &[(u64, &str, u32)],
    ) -> (u64, u64, Vec<IntervalStats>) {
        let mut sim = Sim::new(cfg).unwrap();
        let mut h = DefaultHasher::new();
        let mut n = 0u64;
        let mut rows = Vec::new();
        let mut t = 0;
        while t < duration {
            t += NANOS_PER_SEC;
            rows.extend(sim.advance_to(t, &mut |s| {
                s.hash(&mut h);
                n += 1;
            }));
            for &(at, svc, r) in steps {
                if at == t {
                    sim.set_replicas(svc, r, t).unwrap();
                }
            }
        }
        (h.finish(), n, rows)
    }

    fn rows_in(rows: &[IntervalStats], from: u64, to: u64) -> Vec<&IntervalStats> {
        rows.iter()
            .filter(|r| r.start >= from && r.end <= to)
            .collect()
    }

    fn mean_ok_p99_ms(rows: &[&IntervalStats]) -> f64 {
        let v: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.e2e_ok_p99_ns)
            .map(|p| p as f64 / 1e6)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    fn mean_service_p99_ms(rows: &[&IntervalStats], svc: &str) -> f64 {
        let v: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.service(svc).and_then(|s| s.p99_ns))
            .map(|p| p as f64 / 1e6)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }

    fn violations(rows: &[&IntervalStats], slo: u64) -> usize {
        rows.iter().filter(|r| r.violates(slo)).count()
    }

    fn failures(rows: &[&IntervalStats]) -> u64 {
        rows.iter().map(|r| r.root_failed).sum()
    }

    fn doubled(sc: &Scenario, svc: &str, at: u64) -> ScheduledScaler {
        let base = sc
            .sim
            .services
            .iter()
            .find(|s| s.name == svc)
            .unwrap()
            .replicas;
        ScheduledScaler::new(vec![ScheduledStep {
            at,
            service: svc.into(),
            replicas: base * 2,
        }])
    }

    fn single_service(rps: f64, replicas: u32) -> SimConfig {
        SimConfig {
            seed: 7,
            root: "svc".into(),
            services: vec![ServiceConfig {
                name: "svc".into(),
                operation: "GET /".into(),
                replicas,
                min_replicas: 1,
                max_replicas: 8,
                slots_per_replica: 1,
                queue_limit: 100_000,
                median_service_ns: millis(10),
                service_sigma: 0.5,
                cores_per_replica: 1.0,
                cpu_per_request: 1.0,
                contention: 0.0,
                startup_ns: secs(5),
                calls: Vec::new(),
                hpa_target_utilisation: Some(0.5),
            }],
            traffic: TrafficPattern::Steady { rps },
            faults: Vec::new(),
            stats_interval_ns: NANOS_PER_SEC,
        }
    }

    #[test]
    fn same_seed_and_actions_are_bit_identical() {
        let mut cfg = worker_cap().sim;
        let steps = [(secs(200), "worker", 4), (secs(250), "db", 3)];
        let a = hashed_run(&cfg, secs(300), &steps);
        let b = hashed_run(&cfg, secs(300), &steps);
        assert!(a.1 > 10_000);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        assert_eq!(a.2, b.2);
        let c = hashed_run(&cfg, secs(300), &[(secs(200), "worker", 3)]);
        assert_ne!(a.0, c.0);
        cfg.seed += 1;
        let d = hashed_run(&cfg, secs(300), &steps);
        assert_ne!(a.0, d.0);
        assert_ne!(a.2, d.2);
    }

    #[test]
    fn littles_law_holds_at_steady_state() {
        let lambda = 100.0;
        // Four servers at roughly 28 % load.
        let mut sim = Sim::new(&single_service(lambda, 4)).unwrap();
        let warmup = secs(20);
        let end = secs(320);
        sim.advance_to(warmup, &mut |_| {});
        let (mut sum_n, mut samples) = (0.0, 0u64);
        let (mut sojourn, mut done) = (0u128, 0u64);
        let step = millis(2);
        let mut t = warmup;
        while t < end {
            t += step;
            sim.advance_to(t, &mut |s| {
                sojourn += u128::from(s.duration());
                done += 1;
            });
            sum_n += sim.in_system("svc").unwrap() as f64;
            samples += 1;
        }
        let l = sum_n / samples as f64;
        let w = sojourn as f64 / done as f64 / NANOS_PER_SEC as f64;
        let rel = (l - lambda * w).abs() / (lambda * w);
        assert!(rel < 0.07, "L = {l}, lambda * W = {}", lambda * w);
        // Light load: sojourn close to the log-normal mean service time.
        let mean_service = 0.010 * (0.5f64 * 0.5 / 2.0).exp();
        assert!((w - mean_service).abs() / mean_service < 0.1, "W = {w}");
    }

    #[test]
    fn utilisation_matches_offered_load() {
        let cfg = single_service(100.0, 4);
        let (_, _, rows) = hashed_run(&cfg, secs(200), &[]);
        let u: f64 = rows
            .iter()
            .map(|r| r.services[0].cpu_utilisation)
            .sum::<f64>()
            / rows.len() as f64;
        let expected = 100.0 * 0.010 * (0.125f64).exp() / 4.0;
        assert!(
            (u - expected).abs() / expected < 0.05,
            "u = {u}, expected {expected}"
        );
        assert!(
            rows.iter()
                .all(|r| r.services[0].cpu_utilisation <= 1.0 + 1e-9)
        );
    }

    #[test]
    fn more_workers_cut_worker_queueing_in_worker_cap() {
        let sc = worker_cap();
        let ph = &sc.phases[0];
        let base = run_scenario(&sc, &mut NoScaling).unwrap();
        let more = run_scenario(&sc, &mut doubled(&sc, "worker", ph.start)).unwrap();
        let (b, m) = (
            rows_in(&base.rows, ph.start, ph.end),
            rows_in(&more.rows, ph.start, ph.end),
        );
        assert!(mean_service_p99_ms(&m, "worker") < mean_service_p99_ms(&b, "worker") / 5.0);
        assert!(mean_ok_p99_ms(&m) < mean_ok_p99_ms(&b) / 5.0);
        // The right action restores the SLO apart from the startup delay.
        assert!(
            violations(&m, sc.slo_latency_ns) <= 30,
            "{}",
            violations(&m, sc.slo_latency_ns)
        );
        assert!(violations(&b, sc.slo_latency_ns) > 250);
    }

    #[test]
    fn more_workers_do_not_help_a_thrashing_database() {
        let sc = db_bottleneck();
        let ph = &sc.phases[0];
        let slo = sc.slo_latency_ns;
        let base = run_scenario(&sc, &mut NoScaling).unwrap();
        let workers = run_scenario(&sc, &mut doubled(&sc, "worker", ph.start)).unwrap();
        let dbs = run_scenario(&sc, &mut doubled(&sc, "db", ph.start)).unwrap();
        let b = rows_in(&base.rows, ph.start, ph.end);
        let w = rows_in(&workers.rows, ph.start, ph.end);
        let d = rows_in(&dbs.rows, ph.start, ph.end);
        assert!(mean_ok_p99_ms(&w) >= mean_ok_p99_ms(&b));
        assert!(failures(&w) >= failures(&b));
        assert!(violations(&w, slo) >= violations(&b, slo));
        // More concurrent queries make each one slower.
        assert!(mean_service_p99_ms(&w, "db") > mean_service_p99_ms(&b, "db"));
        assert!(mean_ok_p99_ms(&d) < mean_ok_p99_ms(&b) / 5.0);
        assert!(violations(&d, slo) <= 80, "{}", violations(&d, slo));
        assert_eq!(failures(&d), 0);
    }

    #[test]
    fn scenarios_are_healthy_before_and_violate_during_faults() {
        for sc in [worker_cap(), db_bottleneck(), mixed()] {
            let r = run_scenario(&sc, &mut NoScaling).unwrap();
            let slo = sc.slo_latency_ns;
            let before = rows_in(&r.rows, 0, sc.phases[0].start);
            assert_eq!(violations(&before, slo), 0, "{}", sc.name);
            assert!(
                before.iter().all(|x| x.e2e_p99_ns.unwrap() < slo / 2),
                "{}",
                sc.name
            );
            for ph in &sc.phases {
                let during = rows_in(&r.rows, ph.start, ph.end);
                let v = violations(&during, slo);
                assert!(
                    v * 10 >= during.len() * 9,
                    "{}: {v} of {}",
                    sc.name,
                    during.len()
                );
            }
            assert_eq!(r.report.first_correct_action_seconds, None);
            assert!(r.report.slo_violation_seconds > 200.0);
        }
    }

    #[test]
    fn span_trees_are_consistent() {
        let cfg = worker_cap().sim;
        let mut sim = Sim::new(&cfg).unwrap();
        let mut spans: Vec<OwnedSpan> = Vec::new();
        let mut last_end = 0;
        let mut ordered = true;
        // Covers the spike, so rejections and propagated errors occur.
        for t in 1..=300 {
            sim.advance_to(secs(t), &mut |s| {
                ordered &= s.end >= last_end;
                last_end = s.end;
                spans.push(s.into());
            });
        }
        assert!(ordered, "spans must come in end order");
        let by_id: HashMap<[u8; 8], &OwnedSpan> = spans.iter().map(|s| (s.span, s)).collect();
        assert_eq!(by_id.len(), spans.len(), "span ids are unique");
        let finished_roots: std::collections::HashSet<[u8; 16]> = spans
            .iter()
            .filter(|s| s.parent.is_none())
            .map(|s| s.trace)
            .collect();
        let mut checked = 0;
        let mut errors = 0;
        for s in &spans {
            assert!(s.end >= s.start);
            assert_eq!(s.parent.is_none(), s.service == "frontend");
            errors += usize::from(s.error);
            if !finished_roots.contains(&s.trace) {
                continue;
            }
            if let Some(p) = s.parent {
                let parent = by_id.get(&p).expect("parent span present");
                assert_eq!(parent.trace, s.trace);
                assert!(parent.start <= s.start && s.end <= parent.end);
                if s.error {
                    assert!(parent.error, "failures propagate to the caller");
                }
                checked += 1;
            }
        }
        assert!(checked > 10_000);
        assert!(errors > 0, "the spike should overflow the worker queue");
    }

    #[test]
    fn replica_changes_respect_startup_and_bounds() {
        let mut sim = Sim::new(&single_service(10.0, 2)).unwrap();
        sim.advance_to(secs(1), &mut |_| {});
        assert_eq!(sim.set_replicas("svc", 20, secs(1)).unwrap(), 8);
        assert_eq!(sim.replicas("svc"), Some(8));
        assert_eq!(sim.ready_replicas("svc"), Some(2));
        sim.advance_to(secs(6) - 1, &mut |_| {});
        assert_eq!(sim.ready_replicas("svc"), Some(2));
        sim.advance_to(secs(6), &mut |_| {});
        assert_eq!(sim.ready_replicas("svc"), Some(8));
        // Scale-down is immediate; cancelling starting replicas comes first.
        sim.set_replicas("svc", 6, secs(6)).unwrap();
        assert_eq!(sim.ready_replicas("svc"), Some(6));
        sim.set_replicas("svc", 8, secs(6)).unwrap();
        sim.set_replicas("svc", 7, secs(6)).unwrap();
        assert_eq!(
            (sim.replicas("svc"), sim.ready_replicas("svc")),
            (Some(7), Some(6))
        );
        sim.advance_to(secs(12), &mut |_| {});
        assert_eq!(
            (sim.replicas("svc"), sim.ready_replicas("svc")),
            (Some(7), Some(7))
        );
        assert_eq!(sim.set_replicas("svc", 0, secs(12)).unwrap(), 1);
        assert!(sim.set_replicas("svc", 2, secs(11)).is_err());
        assert!(sim.set_replicas("nope", 2, secs(12)).is_err());
        // A change scheduled ahead of the clock lands at its time.
        sim.set_replicas("svc", 3, secs(13)).unwrap();
        assert_eq!(sim.replicas("svc"), Some(1));
        sim.advance_to(secs(13), &mut |_| {});
        assert_eq!(sim.replicas("svc"), Some(3));
    }

    #[test]
    fn scale_down_lets_in_flight_work_finish() {
        let mut cfg = single_service(200.0, 4);
        cfg.services[0].slots_per_replica = 4;
        let mut sim = Sim::new(&cfg).unwrap();
        sim.advance_to(secs(5), &mut |_| {});
        sim.set_replicas("svc", 1, secs(5)).unwrap();
        let mut errors = 0;
        let rows = sim.advance_to(secs(10), &mut |s| errors += usize::from(s.error));
        assert_eq!(errors, 0);
        assert!(
            rows.iter()
                .all(|r| r.services[0].busy_slots <= 4 || r.start == secs(5))
        );
    }

    #[test]
    fn config_errors_are_reported() {
        let mut cfg = single_service(1.0, 1);
        cfg.services[0].calls.push(CallConfig {
            service: "svc".into(),
            probability: 1.0,
            count: 1,
        });
        assert!(matches!(Sim::new(&cfg), Err(SimError::CallCycle(_))));
        cfg.services[0].calls[0].service = "missing".into();
        assert!(matches!(Sim::new(&cfg), Err(SimError::UnknownService(_))));
        cfg.services[0].calls.clear();
        cfg.services[0].slots_per_replica = 0;
        assert!(matches!(Sim::new(&cfg), Err(SimError::InvalidConfig(_))));
    }

    #[test]
    fn traffic_patterns() {
        let ramp = TrafficPattern::Ramp {
            from_rps: 10.0,
            to_rps: 30.0,
            over: secs(10),
        };
        assert_eq!(ramp.rate_at(secs(5)), 20.0);
        assert_eq!(ramp.rate_at(secs(50)), 30.0);
        let spike = TrafficPattern::Spike {
            base_rps: 1.0,
            peak_rps: 5.0,
            at: secs(10),
            duration: secs(5),
        };
        assert_eq!(spike.rate_at(secs(9)), 1.0);
        assert_eq!(spike.rate_at(secs(10)), 5.0);
        assert_eq!(spike.rate_at(secs(15)), 1.0);
        let day = TrafficPattern::Diurnal {
            mean_rps: 100.0,
            amplitude: 0.5,
            period: secs(100),
        };
        assert!((day.rate_at(secs(25)) - 150.0).abs() < 1e-9);
        assert!((day.rate_at(secs(75)) - 50.0).abs() < 1e-9);
        // Thinning follows the pattern.
        let mut cfg = single_service(0.0, 4);
        cfg.traffic = TrafficPattern::Spike {
            base_rps: 20.0,
            peak_rps: 200.0,
            at: secs(50),
            duration: secs(50),
        };
        let (_, _, rows) = hashed_run(&cfg, secs(100), &[]);
        let arrivals = |a: usize, b: usize| {
            rows[a..b]
                .iter()
                .map(|r| r.services[0].arrivals)
                .sum::<u64>() as f64
        };
        assert!((arrivals(0, 50) / 50.0 - 20.0).abs() < 3.0);
        assert!((arrivals(50, 100) / 50.0 - 200.0).abs() < 10.0);
    }

    #[test]
    fn hpa_raw_recommendation_follows_the_formula() {
        // Within tolerance: keep.
        assert_eq!(hpa_raw_recommendation(4, 4, 0.65, 0.6, 0.1), 4);
        assert_eq!(hpa_raw_recommendation(4, 4, 0.55, 0.6, 0.1), 4);
        // Outside: ceil(current * ratio).
        assert_eq!(hpa_raw_recommendation(4, 4, 0.9, 0.6, 0.1), 6);
        assert_eq!(hpa_raw_recommendation(3, 3, 0.61 * 1.2, 0.61, 0.1), 4);
        assert_eq!(hpa_raw_recommendation(4, 4, 0.1, 0.6, 0.1), 1);
        assert_eq!(hpa_raw_recommendation(4, 4, 0.0, 0.6, 0.1), 0);
        // Starting replicas count as idle when scaling up.
        assert_eq!(hpa_raw_recommendation(4, 2, 0.9, 0.6, 0.1), 4);
        assert_eq!(hpa_raw_recommendation(4, 2, 1.8, 0.6, 0.1), 6);
        assert_eq!(hpa_raw_recommendation(0, 0, 1.0, 0.6, 0.1), 0);
    }

    #[test]
    fn hpa_stabilises_scale_down_only() {
        let hist: VecDeque<(u64, u32)> = [(0, 6), (15, 3), (30, 2)].into_iter().collect();
        assert_eq!(hpa_stabilise(6, 2, &hist), 6);
        let hist: VecDeque<(u64, u32)> = [(0, 4), (15, 3), (30, 2)].into_iter().collect();
        assert_eq!(hpa_stabilise(6, 2, &hist), 4);
        let hist: VecDeque<(u64, u32)> = [(0, 1), (15, 9)].into_iter().collect();
        assert_eq!(hpa_stabilise(3, 9, &hist), 9);
    }

    /// Drives an HPA on a single service whose load changes at 100 s.
    fn hpa_run(before: f64, after: f64, replicas: u32, max: u32) -> (Vec<ScaleAction>, Sim) {
        let mut cfg = single_service(before, replicas);
        cfg.services[0].slots_per_replica = 16;
        cfg.services[0].max_replicas = max;
        cfg.traffic = TrafficPattern::Spike {
            base_rps: before,
            peak_rps: after,
            at: secs(100),
            duration: secs(10_000),
        };
        let mut sim = Sim::new(&cfg).unwrap();
        let mut hpa = Hpa::new(&sim, HpaConfig::default());
        let mut actions = Vec::new();
        for t in 1..=800 {
            sim.advance_to(secs(t), &mut |_| {});
            actions.extend(hpa.step(&mut sim));
        }
        (actions, sim)
    }

    #[test]
    fn hpa_scales_up_at_once_and_down_after_the_window() {
        // 4 replicas at 50 % target: 80 rps ~ 0.23 util, 400 rps ~ 1.1.
        let (actions, sim) = hpa_run(400.0, 80.0, 4, 20);
        assert!(actions.iter().all(|a| a.time % secs(15) == 0));
        let ups: Vec<_> = actions.iter().filter(|a| a.is_scale_up()).collect();
        assert!(!ups.is_empty() && ups[0].time == secs(15), "{actions:?}");
        assert!(ups[0].to <= 2 * ups[0].from.max(2));
        let first_down = actions.iter().find(|a| !a.is_scale_up()).unwrap();
        // The load drops at 100 s; the last high recommendation (sync at
        // 90 s) is held for the 300 s window.
        assert_eq!(first_down.time, secs(90 + 300), "{first_down:?}");
        assert!(sim.replicas("svc").unwrap() <= 2);
    }

    #[test]
    fn hpa_respects_max_and_tolerance() {
        let (actions, sim) = hpa_run(50.0, 2000.0, 2, 5);
        assert!(actions.iter().all(|a| a.to <= 5));
        assert_eq!(sim.replicas("svc"), Some(5));
        // 2 replicas, 0.5 target, 90 rps ~ 0.51 util: inside the tolerance.
        let (actions, _) = hpa_run(90.0, 90.0, 2, 8);
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn report_counts_violations_cost_and_targets() {
        let sc = mixed();
        let row = |start: u64, p99: Option<u64>, reps: u32| IntervalStats {
            start,
            end: start + NANOS_PER_SEC,
            services: vec![ServiceIntervalStats {
                service: "worker".into(),
                arrivals: 0,
                completions: 0,
                rejections: 0,
                errors: 0,
                p50_ns: None,
                p99_ns: None,
                queue_len: 0,
                busy_slots: 0,
                ready_replicas: reps,
                desired_replicas: reps,
                cpu_utilisation: 0.0,
            }],
            root_ok: 0,
            root_failed: 0,
            e2e_p50_ns: p99,
            e2e_p99_ns: p99,
            e2e_ok_p99_ns: p99,
        };
        let rows = vec![
            row(0, Some(millis(100)), 2),
            row(secs(1), Some(millis(900)), 2),
            row(secs(2), Some(u64::MAX), 3),
            row(secs(3), None, 3),
        ];
        let act = |t: u64, s: &str, from: u32, to: u32| ScaleAction {
            time: secs(t),
            service: s.into(),
            from,
            to,
        };
        let actions = vec![
            act(30, "worker", 2, 3),
            act(70, "db", 2, 3),
            act(75, "worker", 3, 4),
            act(100, "db", 3, 2),
            act(620, "worker", 2, 3),
            act(650, "db", 2, 4),
        ];
        let r = Report::compute(&sc, &rows, &actions);
        assert_eq!(r.slo_violation_seconds, 2.0);
        assert_eq!(r.replica_seconds, 10.0);
        assert_eq!(r.first_correct_action_seconds, Some(15.0));
        assert_eq!(r.phases[1].first_correct_action_seconds, Some(50.0));
        assert_eq!(r.wrong_target_actions, 2);
    }
}
