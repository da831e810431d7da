//! Measures the `kubernetes` exporter against the in-process API server: how long a decision
//! takes to become a PATCH of the scale subresource (median and p99), and what a flood of
//! decisions becomes. Not a test: it prints figures.
//!
//! ```sh
//! cargo run --release -p tracescale-components --example scale_latency [-- DECISIONS]
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::time::Duration;

use tokio::time::Instant;
use tracescale_components::exporters::kubernetes::testing::FakeApiServer;
use tracescale_core::component::{ComponentKind, Exporter};
use tracescale_core::config::{Built, build_from_toml};
use tracescale_core::registry;
use tracescale_core::signal::{Decision, Evidence, ReplicaLimits, ScaleChange, Signal, Target};
use tracescale_core::testing;

fn decision(name: &str) -> Decision {
    Decision {
        target: Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
            namespace: "shop".into(),
        },
        change: ScaleChange::Step(1),
        limits: ReplicaLimits::default(),
        rule: "bench".into(),
        reason: "bench".into(),
        evidence: Evidence::default(),
        resources: None,
        timestamp_unix_nano: tracescale_core::signal::now_unix_nano(),
    }
}

async fn exporter(
    server: &FakeApiServer,
    dir: &tempfile::TempDir,
    policy: &str,
) -> Result<Box<dyn Exporter>, Box<dyn Error>> {
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, "token")?;
    let text = format!(
        "kubeconfig = {:?}\nallow = [\"shop/deployment/*\"]\nevents = false\n[policy]\nmax_replicas = 1000\n{policy}\n",
        kubeconfig.display().to_string()
    );
    let factory = registry::lookup(ComponentKind::Exporter, "kubernetes")
        .ok_or("the kubernetes exporter is not registered")?;
    let Built::Exporter(mut e) =
        build_from_toml(factory, "kubernetes", &text).map_err(|e| e.render(false))?
    else {
        return Err("not an exporter".into());
    };
    e.start(&testing::exporter_context("kubernetes")).await?;
    Ok(e)
}

/// The nearest-rank quantile `q` (a fraction) of `sorted`; zero when empty.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    tracescale_components::stats::percentile(sorted, q * 100.0).unwrap_or_default()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);

    // 1. Decision → PATCH latency: one decision at a time, each for a fresh target (a GET of
    //    the scale and a PATCH; discovery is cached after the first).
    let server = FakeApiServer::start().await?;
    let dir = tempfile::TempDir::new()?;
    for i in 0..n {
        server.add("shop", "deployments", &format!("svc-{i}"), 1);
    }
    let mut e = exporter(&server, &dir, "cooldown = \"0s\"").await?;
    // Warm up: discovery and the connection.
    e.export(Signal::Decisions(vec![decision("svc-0")])).await?;
    while server.write(0).is_none() {
        tokio::time::sleep(Duration::from_micros(50)).await;
    }
    let mut latencies = Vec::with_capacity(n);
    for i in 1..n {
        let sent = Instant::now();
        e.export(Signal::Decisions(vec![decision(&format!("svc-{i}"))]))
            .await?;
        loop {
            if let Some(w) = server.write(i) {
                latencies.push(w.at - sent);
                break;
            }
            tokio::time::sleep(Duration::from_micros(20)).await;
        }
    }
    e.shutdown(Instant::now() + Duration::from_secs(5)).await?;
    latencies.sort();
    println!(
        "decision → PATCH over {} decisions: median {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );

    // 2. A flood: 1000 decisions per second over 50 targets for 10 s, cooldown 5 s.
    let server = FakeApiServer::start().await?;
    let dir = tempfile::TempDir::new()?;
    for i in 0..50 {
        server.add("shop", "deployments", &format!("svc-{i}"), 1);
    }
    let mut e = exporter(&server, &dir, "cooldown = \"5s\"").await?;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while start.elapsed() < Duration::from_secs(10) {
        tick.tick().await;
        let batch = (0..10)
            .map(|k| decision(&format!("svc-{}", (sent + k) % 50)))
            .collect();
        sent += 10;
        e.export(Signal::Decisions(batch)).await?;
    }
    e.shutdown(Instant::now() + Duration::from_secs(5)).await?;
    let mut per_target: HashMap<String, usize> = HashMap::new();
    for w in server.writes() {
        *per_target.entry(w.object).or_default() += 1;
    }
    let max = per_target.values().copied().max().unwrap_or(0);
    let total: usize = per_target.values().sum();
    println!(
        "flood: {sent} decisions in {:?} over 50 targets, cooldown 5s → {total} PATCHes, at most {max} per target (allowed by the cooldown: 2)",
        start.elapsed()
    );
    Ok(())
}
