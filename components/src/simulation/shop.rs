//! Shops as TOML files: the services and their calls, the traffic and where it enters, the
//! faults, the SLO and the ground truth the scoring needs. [`parse_shop`] reads one into a
//! [`Scenario`] and reports every mistake with its line, column and key path.

use serde::Deserialize;
use tracescale_core::config::{Diagnostic, Document, HumanDuration};

use super::config::{
    CallConfig, EntryConfig, NetworkDelayFault, ReplicaLossFault, ServiceConfig, SimConfig,
    SlowdownFault, TrafficPattern, TrafficSpikeFault, WorkloadKind,
};
use super::presets::DEFAULT_SLO_NS;
use super::scenario::{FaultPhase, Scenario};

/// Highest arrival rate a file may ask for, in requests per second.
pub const MAX_RPS: f64 = 100_000.0;

/// `traffic`: requests per second entering the shop over time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "pattern", rename_all = "snake_case")]
pub enum TrafficConfig {
    /// A constant rate.
    Steady {
        /// Requests per second.
        rps: f64,
    },
    /// A linear change from `from_rps` to `to_rps` over `over`, then flat.
    Ramp {
        /// Rate at the start.
        from_rps: f64,
        /// Rate at the end of the ramp.
        to_rps: f64,
        /// Length of the ramp.
        over: HumanDuration,
    },
    /// `base_rps`, with `peak_rps` from `at` for `duration`.
    Spike {
        /// Rate outside the spike.
        base_rps: f64,
        /// Rate during the spike.
        peak_rps: f64,
        /// Start of the spike.
        at: HumanDuration,
        /// Length of the spike.
        duration: HumanDuration,
    },
    /// A sine around `mean_rps`, `amplitude` a share of the mean, over `period`.
    Diurnal {
        /// Mean rate.
        mean_rps: f64,
        /// Relative amplitude in [0, 1].
        amplitude: f64,
        /// Length of one cycle.
        period: HumanDuration,
    },
}

/// Simulated nanoseconds of a human duration.
pub fn ns(d: HumanDuration) -> u64 {
    u64::try_from(d.get().as_nanos()).unwrap_or(u64::MAX)
}

impl TrafficConfig {
    /// The pattern the simulation runs.
    pub fn pattern(&self) -> TrafficPattern {
        match *self {
            TrafficConfig::Steady { rps } => TrafficPattern::Steady { rps },
            TrafficConfig::Ramp {
                from_rps,
                to_rps,
                over,
            } => TrafficPattern::Ramp {
                from_rps,
                to_rps,
                over: ns(over),
            },
            TrafficConfig::Spike {
                base_rps,
                peak_rps,
                at,
                duration,
            } => TrafficPattern::Spike {
                base_rps,
                peak_rps,
                at: ns(at),
                duration: ns(duration),
            },
            TrafficConfig::Diurnal {
                mean_rps,
                amplitude,
                period,
            } => TrafficPattern::Diurnal {
                mean_rps,
                amplitude,
                period: ns(period),
            },
        }
    }

    /// Problems with the rates, as (key under the table, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let rates: &[(&'static str, f64)] = match *self {
            TrafficConfig::Steady { rps } => &[("rps", rps)],
            TrafficConfig::Ramp {
                from_rps, to_rps, ..
            } => &[("from_rps", from_rps), ("to_rps", to_rps)],
            TrafficConfig::Spike {
                base_rps, peak_rps, ..
            } => &[("base_rps", base_rps), ("peak_rps", peak_rps)],
            TrafficConfig::Diurnal { mean_rps, .. } => &[("mean_rps", mean_rps)],
        };
        for &(key, r) in rates {
            if !(r.is_finite() && (0.0..=MAX_RPS).contains(&r)) {
                out.push((
                    key,
                    format!("{r} is not a rate: give 0 to {MAX_RPS} requests per second"),
                ));
            }
        }
        if let TrafficConfig::Diurnal { amplitude, .. } = *self
            && !(0.0..=1.0).contains(&amplitude)
        {
            out.push(("amplitude", format!("{amplitude} is outside [0, 1]")));
        }
        out
    }
}

/// A shop as written in a file or inline under the receiver (`topology`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopFile {
    name: String,
    #[serde(default = "default_seed")]
    seed: u64,
    duration: HumanDuration,
    #[serde(default = "default_slo")]
    slo: HumanDuration,
    #[serde(default = "default_interval")]
    stats_interval: HumanDuration,
    traffic: TrafficConfig,
    #[serde(default)]
    entries: Vec<EntryFile>,
    services: Vec<ServiceFile>,
    #[serde(default)]
    faults: Vec<FaultFile>,
    #[serde(default)]
    phases: Vec<PhaseFile>,
}

fn default_seed() -> u64 {
    1
}
fn default_slo() -> HumanDuration {
    HumanDuration(std::time::Duration::from_nanos(DEFAULT_SLO_NS))
}
fn default_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn one() -> f64 {
    1.0
}
fn one_u32() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    service: String,
    #[serde(default = "one")]
    share: f64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindFile {
    #[default]
    Deployment,
    Statefulset,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    operation: String,
    #[serde(default)]
    kind: KindFile,
    replicas: u32,
    #[serde(default)]
    min_replicas: Option<u32>,
    max_replicas: u32,
    slots_per_replica: u32,
    queue_limit: usize,
    median: HumanDuration,
    #[serde(default)]
    sigma: f64,
    #[serde(default = "one")]
    cores_per_replica: f64,
    #[serde(default = "one")]
    cpu_per_request: f64,
    #[serde(default)]
    contention: f64,
    #[serde(default)]
    startup: HumanDuration,
    #[serde(default)]
    hpa_target: Option<f64>,
    #[serde(default)]
    calls: Vec<CallFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallFile {
    service: String,
    #[serde(default = "one")]
    probability: f64,
    #[serde(default = "one_u32")]
    count: u32,
    #[serde(default)]
    parallel: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
enum FaultFile {
    Slowdown {
        service: String,
        factor: f64,
        start: HumanDuration,
        end: HumanDuration,
    },
    ReplicaLoss {
        service: String,
        at: HumanDuration,
        #[serde(default = "one_u32")]
        count: u32,
    },
    NetworkDelay {
        caller: String,
        callee: String,
        delay: HumanDuration,
        start: HumanDuration,
        end: HumanDuration,
    },
    TrafficSpike {
        factor: f64,
        start: HumanDuration,
        end: HumanDuration,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseFile {
    start: HumanDuration,
    end: HumanDuration,
    right_target: String,
    #[serde(default)]
    wrong_targets: Vec<String>,
}

/// Reads a shop file into a scenario. `file` names it in the messages, each of which reads
/// `FILE:LINE:COL: KEY.PATH: what is wrong`.
pub fn parse_shop(file: &str, text: &str) -> Result<Scenario, Vec<String>> {
    let doc = match Document::parse(text) {
        Ok(doc) => doc,
        Err(diags) => return Err(diags.iter().map(|d| locate(text, file, d)).collect()),
    };
    let shop: ShopFile = doc
        .deserialize()
        .map_err(|d| vec![locate(text, file, &d)])?;
    shop.scenario().map_err(|problems| {
        problems
            .iter()
            .map(|(path, msg)| locate(text, file, &doc.error(path, msg)))
            .collect()
    })
}

impl ShopFile {
    /// The scenario it describes, or every mistake in it as (key path, message) in file order.
    pub fn scenario(self) -> Result<Scenario, Vec<(String, String)>> {
        let problems = check(&self);
        if problems.is_empty() {
            Ok(scenario(self))
        } else {
            Err(problems)
        }
    }
}

fn locate(text: &str, file: &str, d: &Diagnostic) -> String {
    let at = d.span.as_ref().map_or(0, |s| s.start).min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{file}:{line}:{col}: {}", d.message)
}

fn finite_at_least(v: f64, min: f64) -> bool {
    v.is_finite() && v >= min
}

/// Every mistake in the file, as (key path, message), in file order.
fn check(shop: &ShopFile) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut bad = |path: String, msg: String| out.push((path, msg));
    let names: Vec<&str> = shop.services.iter().map(|s| s.name.as_str()).collect();
    let known = |n: &str| names.contains(&n);
    let list = names.join(", ");
    let unknown = |n: &str| format!("unknown service {n:?} (services: {list})");

    if shop.name.trim().is_empty() {
        bad("name".into(), "must not be empty".into());
    }
    if shop.duration.get().is_zero() {
        bad("duration".into(), "must be longer than 0s".into());
    }
    if shop.slo.get().is_zero() {
        bad("slo".into(), "must be longer than 0s".into());
    }
    if shop.stats_interval.get() < std::time::Duration::from_millis(10) {
        bad("stats_interval".into(), "must be at least 10ms".into());
    }
    for (key, msg) in shop.traffic.problems() {
        bad(format!("traffic.{key}"), msg);
    }
    if shop.services.is_empty() {
        bad(
            "services".into(),
            "a shop needs at least one service".into(),
        );
    }
    for (i, e) in shop.entries.iter().enumerate() {
        if !known(&e.service) {
            bad(format!("entries[{i}].service"), unknown(&e.service));
        }
        if !(finite_at_least(e.share, 0.0) && e.share > 0.0) {
            bad(
                format!("entries[{i}].share"),
                format!("{} is not a share: must be a finite number > 0", e.share),
            );
        }
    }
    for (i, s) in shop.services.iter().enumerate() {
        let at = |key: &str| format!("services[{i}].{key}");
        if s.name.trim().is_empty() {
            bad(at("name"), "must not be empty".into());
        } else if names[..i].contains(&s.name.as_str()) {
            bad(at("name"), format!("duplicate service name {:?}", s.name));
        }
        let min = s.min_replicas.unwrap_or(s.replicas);
        if min > s.max_replicas {
            bad(
                at("min_replicas"),
                format!(
                    "min_replicas ({min}) is above max_replicas ({})",
                    s.max_replicas
                ),
            );
        }
        if s.max_replicas == 0 {
            bad(at("max_replicas"), "must be at least 1".into());
        }
        if s.slots_per_replica == 0 {
            bad(
                at("slots_per_replica"),
                "must be at least 1: a replica with no slots serves nothing".into(),
            );
        }
        let numbers = [
            ("sigma", s.sigma, 0.0, ">= 0"),
            ("cpu_per_request", s.cpu_per_request, 0.0, ">= 0"),
            ("contention", s.contention, 0.0, ">= 0"),
        ];
        for (key, v, min, what) in numbers {
            if !finite_at_least(v, min) {
                bad(at(key), format!("{v} must be a finite number {what}"));
            }
        }
        if !(s.cores_per_replica.is_finite() && s.cores_per_replica > 0.0) {
            bad(
                at("cores_per_replica"),
                format!("{} must be a finite number > 0", s.cores_per_replica),
            );
        }
        if let Some(t) = s.hpa_target
            && !(t.is_finite() && t > 0.0 && t <= 1.0)
        {
            bad(at("hpa_target"), format!("{t} is outside (0, 1]"));
        }
        for (j, c) in s.calls.iter().enumerate() {
            let at = |key: &str| format!("services[{i}].calls[{j}].{key}");
            if !known(&c.service) {
                bad(at("service"), unknown(&c.service));
            }
            if !(c.probability.is_finite() && (0.0..=1.0).contains(&c.probability)) {
                bad(
                    at("probability"),
                    format!("{} is outside [0, 1]", c.probability),
                );
            }
            if c.count == 0 {
                bad(
                    at("count"),
                    "must be at least 1 (leave the call out instead)".into(),
                );
            }
        }
    }
    if let Some((i, j, cycle)) = cycle(shop) {
        bad(
            format!("services[{i}].calls[{j}].service"),
            format!(
                "calls go round in a cycle ({}): a request would never finish",
                cycle.join(" → ")
            ),
        );
    }
    let calls = |caller: &str, callee: &str| {
        shop.services
            .iter()
            .any(|s| s.name == caller && s.calls.iter().any(|c| c.service == callee))
    };
    for (i, f) in shop.faults.iter().enumerate() {
        let at = |key: &str| format!("faults[{i}].{key}");
        let window = |start: HumanDuration, end: HumanDuration| start < end;
        match f {
            FaultFile::Slowdown {
                service,
                factor,
                start,
                end,
            } => {
                if !known(service) {
                    bad(at("service"), unknown(service));
                }
                if !(factor.is_finite() && *factor > 0.0) {
                    bad(
                        at("factor"),
                        format!("{factor} must be a finite number > 0"),
                    );
                }
                if !window(*start, *end) {
                    bad(at("end"), "must be after start".into());
                }
            }
            FaultFile::ReplicaLoss { service, count, .. } => {
                if !known(service) {
                    bad(at("service"), unknown(service));
                }
                if *count == 0 {
                    bad(at("count"), "must be at least 1".into());
                }
            }
            FaultFile::NetworkDelay {
                caller,
                callee,
                delay,
                start,
                end,
            } => {
                if !known(caller) {
                    bad(at("caller"), unknown(caller));
                } else if !known(callee) {
                    bad(at("callee"), unknown(callee));
                } else if !calls(caller, callee) {
                    bad(
                        at("callee"),
                        format!("no such call edge: {caller:?} does not call {callee:?}"),
                    );
                }
                if delay.get().is_zero() {
                    bad(at("delay"), "must be longer than 0s".into());
                }
                if !window(*start, *end) {
                    bad(at("end"), "must be after start".into());
                }
            }
            FaultFile::TrafficSpike { factor, start, end } => {
                if !(factor.is_finite() && (0.0..=1000.0).contains(factor)) {
                    bad(
                        at("factor"),
                        format!("{factor} must be a finite number from 0 to 1000"),
                    );
                }
                if !window(*start, *end) {
                    bad(at("end"), "must be after start".into());
                }
            }
        }
    }
    let mut previous = None;
    for (i, p) in shop.phases.iter().enumerate() {
        let at = |key: &str| format!("phases[{i}].{key}");
        if !known(&p.right_target) {
            bad(at("right_target"), unknown(&p.right_target));
        }
        for (k, w) in p.wrong_targets.iter().enumerate() {
            if !known(w) {
                bad(format!("phases[{i}].wrong_targets[{k}]"), unknown(w));
            } else if *w == p.right_target {
                bad(
                    format!("phases[{i}].wrong_targets[{k}]"),
                    format!("{w:?} is the phase's right target"),
                );
            }
        }
        if p.start >= p.end {
            bad(at("end"), "must be after start".into());
        }
        if previous.is_some_and(|s| p.start < s) {
            bad(at("start"), "phases must be in time order".into());
        }
        previous = Some(p.start);
    }
    out
}

/// A call that closes a cycle: (service index, call index, the services round the cycle).
fn cycle(shop: &ShopFile) -> Option<(usize, usize, Vec<String>)> {
    let index = |n: &str| shop.services.iter().position(|s| s.name == n);
    // 0 = unvisited, 1 = on the current path, 2 = done.
    fn visit(
        v: usize,
        shop: &ShopFile,
        index: &dyn Fn(&str) -> Option<usize>,
        colour: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<(usize, usize, Vec<String>)> {
        colour[v] = 1;
        path.push(v);
        for (j, c) in shop.services[v].calls.iter().enumerate() {
            let Some(w) = index(&c.service) else { continue };
            match colour[w] {
                1 => {
                    let from = path.iter().position(|&p| p == w).unwrap_or(0);
                    let mut names: Vec<String> = path[from..]
                        .iter()
                        .map(|&p| shop.services[p].name.clone())
                        .collect();
                    names.push(shop.services[w].name.clone());
                    return Some((v, j, names));
                }
                0 => {
                    if let Some(found) = visit(w, shop, index, colour, path) {
                        return Some(found);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        colour[v] = 2;
        None
    }
    let mut colour = vec![0u8; shop.services.len()];
    for v in 0..shop.services.len() {
        if colour[v] == 0
            && let Some(found) = visit(v, shop, &index, &mut colour, &mut Vec::new())
        {
            return Some(found);
        }
    }
    None
}

/// The scenario of a checked file.
fn scenario(shop: ShopFile) -> Scenario {
    let root = shop
        .entries
        .first()
        .map(|e| e.service.clone())
        .or_else(|| shop.services.first().map(|s| s.name.clone()))
        .unwrap_or_default();
    let entries = if shop.entries.len() > 1 {
        shop.entries
            .iter()
            .map(|e| EntryConfig {
                service: e.service.clone(),
                share: e.share,
            })
            .collect()
    } else {
        Vec::new()
    };
    let services = shop
        .services
        .into_iter()
        .map(|s| ServiceConfig {
            min_replicas: s.min_replicas.unwrap_or(s.replicas),
            name: s.name,
            operation: s.operation,
            replicas: s.replicas,
            max_replicas: s.max_replicas,
            slots_per_replica: s.slots_per_replica,
            queue_limit: s.queue_limit,
            median_service_ns: ns(s.median),
            service_sigma: s.sigma,
            cores_per_replica: s.cores_per_replica,
            cpu_per_request: s.cpu_per_request,
            contention: s.contention,
            startup_ns: ns(s.startup),
            calls: s
                .calls
                .into_iter()
                .map(|c| CallConfig {
                    service: c.service,
                    probability: c.probability,
                    count: c.count,
                    parallel: c.parallel,
                })
                .collect(),
            hpa_target_utilisation: s.hpa_target,
            kind: match s.kind {
                KindFile::Deployment => WorkloadKind::Deployment,
                KindFile::Statefulset => WorkloadKind::StatefulSet,
            },
        })
        .collect();
    let mut sim = SimConfig {
        seed: shop.seed,
        root,
        services,
        traffic: shop.traffic.pattern(),
        faults: Vec::new(),
        stats_interval_ns: ns(shop.stats_interval).max(1),
        entries,
        ..SimConfig::default()
    };
    for f in shop.faults {
        match f {
            FaultFile::Slowdown {
                service,
                factor,
                start,
                end,
            } => sim.faults.push(SlowdownFault {
                service,
                factor,
                start: ns(start),
                end: ns(end),
            }),
            FaultFile::ReplicaLoss { service, at, count } => {
                sim.replica_losses.push(ReplicaLossFault {
                    service,
                    at: ns(at),
                    count,
                });
            }
            FaultFile::NetworkDelay {
                caller,
                callee,
                delay,
                start,
                end,
            } => sim.network_delays.push(NetworkDelayFault {
                caller,
                callee,
                delay: ns(delay),
                start: ns(start),
                end: ns(end),
            }),
            FaultFile::TrafficSpike { factor, start, end } => {
                sim.traffic_spikes.push(TrafficSpikeFault {
                    factor,
                    start: ns(start),
                    end: ns(end),
                });
            }
        }
    }
    Scenario {
        name: shop.name,
        sim,
        duration_ns: ns(shop.duration),
        slo_latency_ns: ns(shop.slo),
        phases: shop
            .phases
            .into_iter()
            .map(|p| FaultPhase {
                start: ns(p.start),
                end: ns(p.end),
                right_target: p.right_target,
                wrong_targets: p.wrong_targets,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
