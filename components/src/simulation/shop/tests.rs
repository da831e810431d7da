//! Shop files: the shipped ones load and describe the scenarios the code used to build, every
//! kind of mistake is reported with its position and key path, and the features the format
//! opened (parallel calls, entries, the new faults) behave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::super::presets::{SHOPS, builtin, reference};
use super::super::{IntervalStats, Sim, secs};
use super::parse_shop;

const BASE: &str = r#"
name = "tiny"
duration = "1m"

[traffic]
pattern = "steady"
rps = 50.0

[[services]]
name = "front"
operation = "GET /"
replicas = 1
max_replicas = 4
slots_per_replica = 64
queue_limit = 100
median = "2ms"
calls = [{ service = "back" }]

[[services]]
name = "back"
operation = "Get"
replicas = 1
max_replicas = 4
slots_per_replica = 8
queue_limit = 100
median = "10ms"

[[faults]]
kind = "slowdown"
service = "back"
factor = 2.0
start = "10s"
end = "20s"

[[phases]]
start = "10s"
end = "20s"
right_target = "back"
wrong_targets = ["front"]
"#;

/// The one error `BASE` with `from` replaced by `to` gets.
fn error_of(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    let text = BASE.replacen(from, to, 1);
    let errors = parse_shop("shop.toml", &text).expect_err("the mistake is caught");
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn the_base_shop_loads() {
    let s = parse_shop("shop.toml", BASE).unwrap();
    assert_eq!(s.name, "tiny");
    assert_eq!(s.sim.root, "front");
    assert_eq!(s.sim.services[1].min_replicas, 1);
    assert_eq!(s.slo_latency_ns, super::super::DEFAULT_SLO_NS);
    Sim::new(&s.sim).unwrap();
}

#[test]
fn the_built_in_files_describe_the_scenarios_the_code_built() {
    assert_eq!(
        builtin("worker-cap").unwrap().unwrap(),
        reference::worker_cap()
    );
    assert_eq!(
        builtin("db-bottleneck").unwrap().unwrap(),
        reference::db_bottleneck()
    );
    assert_eq!(builtin("mixed").unwrap().unwrap(), reference::mixed());
    assert!(builtin("nope").is_none());
}

#[test]
fn every_shipped_shop_file_loads_and_runs() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/shops");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let s = parse_shop(&path.display().to_string(), &text)
            .unwrap_or_else(|e| panic!("{}", e.join("\n")));
        let mut sim = Sim::new(&s.sim).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        sim.advance_to(secs(5), &mut |_| {});
        assert!(sim.spans_emitted() > 0, "{}", path.display());
        assert!(!s.phases.is_empty(), "{}: no ground truth", path.display());
        n += 1;
    }
    assert!(n >= SHOPS.len() + 2, "{n} shop files");
}

#[test]
fn an_unknown_service_in_a_call_is_named_with_its_place() {
    assert_eq!(
        error_of(
            r#"calls = [{ service = "back" }]"#,
            r#"calls = [{ service = "bak" }]"#
        ),
        "shop.toml:17:22: services[0].calls[0].service: unknown service \"bak\" \
         (services: front, back)"
    );
}

#[test]
fn a_call_cycle_is_shown_round_the_loop() {
    let e = error_of(
        "median = \"10ms\"\n",
        "median = \"10ms\"\ncalls = [{ service = \"front\" }]\n",
    );
    assert_eq!(
        e,
        "shop.toml:27:22: services[1].calls[0].service: calls go round in a cycle \
         (front → back → front): a request would never finish"
    );
}

#[test]
fn rates_must_be_finite_and_not_negative() {
    assert_eq!(
        error_of("rps = 50.0", "rps = -5.0"),
        "shop.toml:7:7: traffic.rps: -5 is not a rate: give 0 to 100000 requests per second"
    );
    assert_eq!(
        error_of("rps = 50.0", "rps = inf"),
        "shop.toml:7:7: traffic.rps: inf is not a rate: give 0 to 100000 requests per second"
    );
    assert_eq!(
        error_of("rps = 50.0", "rps = nan"),
        "shop.toml:7:7: traffic.rps: NaN is not a rate: give 0 to 100000 requests per second"
    );
}

#[test]
fn a_fault_on_a_missing_service_or_edge_is_refused() {
    assert_eq!(
        error_of(
            "kind = \"slowdown\"\nservice = \"back\"",
            "kind = \"slowdown\"\nservice = \"db\""
        ),
        "shop.toml:30:11: faults[0].service: unknown service \"db\" (services: front, back)"
    );
    let e = error_of(
        "kind = \"slowdown\"\nservice = \"back\"\nfactor = 2.0",
        "kind = \"network_delay\"\ncaller = \"back\"\ncallee = \"front\"\ndelay = \"5ms\"",
    );
    assert_eq!(
        e,
        "shop.toml:31:10: faults[0].callee: no such call edge: \"back\" does not call \"front\""
    );
    let e = error_of(
        "kind = \"slowdown\"\nservice = \"back\"\nfactor = 2.0\nstart = \"10s\"\nend = \"20s\"",
        "kind = \"replica_loss\"\nservice = \"cache\"\nat = \"10s\"",
    );
    assert!(
        e.starts_with("shop.toml:30:11: faults[0].service: unknown service \"cache\""),
        "{e}"
    );
}

#[test]
fn min_above_max_and_zero_slots_are_refused() {
    assert_eq!(
        error_of(
            "replicas = 1\nmax_replicas = 4\nslots_per_replica = 8",
            "replicas = 1\nmin_replicas = 6\nmax_replicas = 4\nslots_per_replica = 8"
        ),
        "shop.toml:23:16: services[1].min_replicas: min_replicas (6) is above max_replicas (4)"
    );
    assert_eq!(
        error_of("slots_per_replica = 8", "slots_per_replica = 0"),
        "shop.toml:24:21: services[1].slots_per_replica: must be at least 1: a replica with no \
         slots serves nothing"
    );
}

#[test]
fn probabilities_outside_zero_to_one_are_refused() {
    assert_eq!(
        error_of(
            r#"calls = [{ service = "back" }]"#,
            r#"calls = [{ service = "back", probability = 1.5 }]"#
        ),
        "shop.toml:17:44: services[0].calls[0].probability: 1.5 is outside [0, 1]"
    );
}

#[test]
fn wrong_types_unknown_keys_and_negative_counts_are_positioned() {
    assert_eq!(
        error_of("slots_per_replica = 8", "slots_per_replica = -2"),
        "shop.toml:24:21: services[1].slots_per_replica: expected a whole number (0 or more), \
         found -2"
    );
    assert_eq!(
        error_of(
            "queue_limit = 100\nmedian = \"10ms\"",
            "queue_limit = 100\nmedain = \"10ms\""
        ),
        "shop.toml:26:1: services[1]: unknown key `medain`"
    );
    let e = error_of("median = \"2ms\"", "median = \"2 parsecs\"");
    assert!(
        e.starts_with("shop.toml:16:10: services[0].median: invalid duration \"2 parsecs\""),
        "{e}"
    );
}

#[test]
fn phases_must_name_services() {
    assert_eq!(
        error_of(r#"right_target = "back""#, r#"right_target = "bakc""#),
        "shop.toml:38:16: phases[0].right_target: unknown service \"bakc\" (services: front, back)"
    );
}

#[test]
fn several_mistakes_are_all_reported() {
    let text = BASE
        .replacen("slots_per_replica = 8", "slots_per_replica = 0", 1)
        .replacen("rps = 50.0", "rps = -1.0", 1);
    let errors = parse_shop("shop.toml", &text).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

/// A span as (service, sent, start, end).
type Visit = (String, u64, u64, u64);

/// Runs a shop for `until` simulated seconds: the rows and the spans.
fn run(text: &str, until: u64) -> (Vec<IntervalStats>, Vec<Visit>) {
    let s = parse_shop("shop.toml", text).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    let mut sim = Sim::new(&s.sim).unwrap();
    let mut spans = Vec::new();
    let rows = sim.advance_to(secs(until), &mut |sp| {
        spans.push((sp.service.to_string(), sp.sent, sp.start, sp.end));
    });
    (rows, spans)
}

const FANOUT: &str = r#"
name = "fanout"
duration = "1m"
traffic = { pattern = "steady", rps = 5.0 }

[[services]]
name = "front"
operation = "GET /"
replicas = 1
max_replicas = 1
slots_per_replica = 100
queue_limit = 100
median = "0ms"
calls = [
    { service = "a", parallel = true },
    { service = "b", parallel = true, count = 2 },
]

[[services]]
name = "a"
operation = "A"
replicas = 1
max_replicas = 1
slots_per_replica = 100
queue_limit = 100
median = "100ms"

[[services]]
name = "b"
operation = "B"
replicas = 1
max_replicas = 1
slots_per_replica = 100
queue_limit = 100
median = "100ms"

[[phases]]
start = "0s"
end = "1m"
right_target = "a"
"#;

#[test]
fn parallel_calls_overlap_and_the_caller_waits_for_the_last() {
    let (_, spans) = run(FANOUT, 20);
    let front: Vec<_> = spans.iter().filter(|s| s.0 == "front").collect();
    assert!(front.len() > 50);
    for f in &front {
        // Three 100 ms calls at once: about 100 ms, not 300.
        let len = f.3 - f.2;
        assert!((100_000_000..=100_000_001).contains(&len), "{len}");
    }
    let b = spans.iter().filter(|s| s.0 == "b").count();
    let a = spans.iter().filter(|s| s.0 == "a").count();
    assert_eq!(b, 2 * a);
    // Sequential, the same calls take the sum.
    let (_, spans) = run(&FANOUT.replace("parallel = true", "parallel = false"), 20);
    let f = spans.iter().find(|s| s.0 == "front").unwrap();
    assert!(f.3 - f.2 >= 300_000_000, "{f:?}");
}

#[test]
fn a_network_delay_lengthens_the_edge_for_its_window_only() {
    let text = format!(
        "{FANOUT}\n[[faults]]\nkind = \"network_delay\"\ncaller = \"front\"\ncallee = \"a\"\n\
         delay = \"50ms\"\nstart = \"5s\"\nend = \"10s\"\n"
    );
    let (_, spans) = run(&text, 15);
    let delayed: Vec<_> = spans.iter().filter(|s| s.0 == "a" && s.2 > s.1).collect();
    assert!(!delayed.is_empty());
    for s in &delayed {
        assert_eq!(s.2 - s.1, 50_000_000);
        assert!((secs(5)..secs(10)).contains(&s.1));
    }
    let front_slow = spans
        .iter()
        .filter(|s| s.0 == "front" && s.3 - s.2 >= 150_000_000)
        .count();
    assert_eq!(front_slow, delayed.len());
}

#[test]
fn lost_replicas_come_back_after_the_startup_delay() {
    let text = BASE.replacen(
        "replicas = 1\nmax_replicas = 4\nslots_per_replica = 8",
        "replicas = 3\nmax_replicas = 4\nslots_per_replica = 8\nstartup = \"5s\"",
        1,
    ) + "\n[[faults]]\nkind = \"replica_loss\"\nservice = \"back\"\nat = \"10s\"\ncount = 2\n";
    let (rows, _) = run(&text, 20);
    let ready = |t: usize| rows[t].service("back").unwrap().ready_replicas;
    let desired = |t: usize| rows[t].service("back").unwrap().desired_replicas;
    assert_eq!(ready(9), 3);
    assert_eq!(ready(10), 1);
    assert_eq!(desired(10), 3);
    assert_eq!(ready(15), 3);
}

#[test]
fn a_traffic_spike_multiplies_the_rate_and_entries_share_it() {
    let text = BASE.replacen("[[services]]", "[[entries]]\nservice = \"front\"\nshare = 3.0\n\n[[entries]]\nservice = \"back\"\nshare = 1.0\n\n[[services]]", 1)
        + "\n[[faults]]\nkind = \"traffic_spike\"\nfactor = 4.0\nstart = \"20s\"\nend = \"40s\"\n";
    let (rows, _) = run(&text, 40);
    let arrivals = |svc: &str, a: usize, b: usize| {
        rows[a..b]
            .iter()
            .map(|r| r.service(svc).unwrap().arrivals)
            .sum::<u64>() as f64
    };
    // 50/s at the front in total (37.5 entering there), the back gets the rest plus every
    // front's call.
    let front = arrivals("front", 0, 20) / 20.0;
    assert!((front - 37.5).abs() < 5.0, "{front}");
    let roots = rows[0..20]
        .iter()
        .map(|r| r.root_ok + r.root_failed)
        .sum::<u64>() as f64
        / 20.0;
    assert!((roots - 50.0).abs() < 6.0, "{roots}");
    let spiked = rows[20..40]
        .iter()
        .map(|r| r.root_ok + r.root_failed)
        .sum::<u64>() as f64
        / 20.0;
    assert!((spiked - 200.0).abs() < 20.0, "{spiked}");
}
