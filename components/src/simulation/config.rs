//! What a simulation is made of, as plain data so it can come from a file: the services, their
//! calls, the traffic, the faults, and the units simulated time is counted in.

use std::fmt;

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

pub(super) fn to_secs_f64(ns: u64) -> f64 {
    ns as f64 / NANOS_PER_SEC as f64
}

/// A synchronous downstream call made while the caller holds its slot.
#[derive(Clone, Debug, PartialEq)]
pub struct CallConfig {
    /// Name of the called service.
    pub service: String,
    /// Chance in `[0, 1]` that a request makes this call at all.
    pub probability: f64,
    /// Repetitions when the call is made (fan-out): one after the other, or all at once when
    /// `parallel`.
    pub count: u32,
    /// Adjacent parallel calls form one group: they are all sent at once and the caller goes
    /// on when the last one has answered.
    pub parallel: bool,
}

impl CallConfig {
    /// One sequential call that is always made.
    pub fn to(service: &str) -> Self {
        Self {
            service: service.to_string(),
            probability: 1.0,
            count: 1,
            parallel: false,
        }
    }
}

/// The Kubernetes workload a service runs as, which names the resource attribute its spans carry
/// and the scaling target that reaches it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// A Deployment (`k8s.deployment.name`, target `deployment/NAME`).
    #[default]
    Deployment,
    /// A StatefulSet (`k8s.statefulset.name`, target `statefulset/NAME`).
    StatefulSet,
}

impl WorkloadKind {
    /// The lower-case kind, as scaling targets spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
        }
    }

    /// The OpenTelemetry resource attribute naming the workload.
    pub fn resource_attribute(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "k8s.deployment.name",
            WorkloadKind::StatefulSet => "k8s.statefulset.name",
        }
    }
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
    /// The workload kind it runs as.
    pub kind: WorkloadKind,
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

impl Default for TrafficPattern {
    fn default() -> Self {
        TrafficPattern::Steady { rps: 0.0 }
    }
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

    pub(super) fn max_rate(&self) -> f64 {
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

/// Replicas of a service dying at one instant; the controller replaces them, so they serve again
/// after the service's startup delay.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaLossFault {
    /// Affected service.
    pub service: String,
    /// When the replicas die.
    pub at: u64,
    /// How many ready replicas die (at most the ready ones).
    pub count: u32,
}

/// Network delay added to every request sent on one call edge during a window.
#[derive(Clone, Debug, PartialEq)]
pub struct NetworkDelayFault {
    /// The calling service.
    pub caller: String,
    /// The called service.
    pub callee: String,
    /// Added to the request's way from caller to callee.
    pub delay: u64,
    /// First instant at which requests sent are delayed.
    pub start: u64,
    /// Instant from which requests are no longer delayed.
    pub end: u64,
}

/// The arrival rate multiplied during a window, on top of the traffic pattern.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficSpikeFault {
    /// Multiplier on the arrival rate.
    pub factor: f64,
    /// Start of the spike.
    pub start: u64,
    /// End of the spike.
    pub end: u64,
}

/// A service external traffic enters at, with its share of the arrivals.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryConfig {
    /// The entry service.
    pub service: String,
    /// Relative weight of this entry among all entries.
    pub share: f64,
}

/// Everything needed to build a [`Sim`]; plain data.
#[derive(Clone, Debug, PartialEq, Default)]
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
    /// Several entry services sharing the arrivals; empty: all traffic enters at `root`.
    pub entries: Vec<EntryConfig>,
    /// Replicas lost at given instants.
    pub replica_losses: Vec<ReplicaLossFault>,
    /// Network delays on call edges.
    pub network_delays: Vec<NetworkDelayFault>,
    /// Traffic spikes on top of the pattern.
    pub traffic_spikes: Vec<TrafficSpikeFault>,
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

pub(super) fn invalid(msg: String) -> SimError {
    SimError::InvalidConfig(msg)
}

pub(super) fn validate_service(s: &ServiceConfig) -> Result<(), SimError> {
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

pub(super) fn find_cycle(calls: &[Vec<usize>]) -> Option<usize> {
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
