//! The built-in scenarios: one shop (frontend, worker pool, database) and three ways to break
//! it, plus two larger shops. Each is a shop file shipped in `configs/shops/`, embedded here so
//! that `scenario = "worker-cap"` and `tracescale demo` work from any directory.

use super::config::millis;
use super::scenario::Scenario;
use super::shop::parse_shop;

/// Service-level objective shared by the built-in scenarios.
pub const DEFAULT_SLO_NS: u64 = millis(500);

/// The built-in shops: (name, file name under `configs/shops/`, text).
pub const SHOPS: &[(&str, &str, &str)] = &[
    (
        "worker-cap",
        "worker-cap.toml",
        include_str!("../../../configs/shops/worker-cap.toml"),
    ),
    (
        "db-bottleneck",
        "db-bottleneck.toml",
        include_str!("../../../configs/shops/db-bottleneck.toml"),
    ),
    (
        "mixed",
        "mixed.toml",
        include_str!("../../../configs/shops/mixed.toml"),
    ),
];

/// A built-in shop by name. The shipped files are checked by the tests, so a failure to parse
/// one is a build defect; it is reported rather than hidden.
pub fn builtin(name: &str) -> Option<Result<Scenario, Vec<String>>> {
    SHOPS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, file, text)| parse_shop(file, text))
}

fn expect_builtin(name: &str) -> Scenario {
    match builtin(name) {
        Some(Ok(s)) => s,
        Some(Err(e)) => panic!("built-in shop {name} does not load: {}", e.join("; ")),
        None => panic!("no built-in shop {name}"),
    }
}

/// A traffic spike overruns a small worker pool while the database stays
/// healthy: adding workers fixes it, adding database replicas does not.
pub fn worker_cap() -> Scenario {
    expect_builtin("worker-cap")
}

/// A traffic spike saturates a database that thrashes under concurrency:
/// more workers push more concurrent queries and make it worse, more
/// database replicas fix it.
pub fn db_bottleneck() -> Scenario {
    expect_builtin("db-bottleneck")
}

/// The worker spike first, then a database slowdown: the right target
/// changes during the run.
pub fn mixed() -> Scenario {
    expect_builtin("mixed")
}

/// The scenarios as they were built in code before they became files: the files must describe
/// exactly these.
#[cfg(test)]
pub(super) mod reference {
    use super::super::config::{
        CallConfig, NANOS_PER_SEC, ServiceConfig, SimConfig, SlowdownFault, TrafficPattern,
        WorkloadKind, millis, secs,
    };
    use super::super::scenario::{FaultPhase, Scenario};
    use super::DEFAULT_SLO_NS;

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
            calls: vec![CallConfig::to("worker")],
            hpa_target_utilisation: Some(0.6),
            kind: WorkloadKind::Deployment,
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
                count: queries,
                ..CallConfig::to("db")
            }],
            hpa_target_utilisation: Some(0.6),
            kind: WorkloadKind::Deployment,
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
            kind: WorkloadKind::StatefulSet,
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
            ..SimConfig::default()
        }
    }

    /// A traffic spike overruns a small worker pool while the database stays
    /// healthy: adding workers fixes it, adding database replicas does not.
    pub(in super::super) fn worker_cap() -> Scenario {
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
    pub(in super::super) fn db_bottleneck() -> Scenario {
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
    pub(in super::super) fn mixed() -> Scenario {
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
}
