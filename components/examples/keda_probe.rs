//! Measures the `keda` exporter. Not a test: it prints figures.
//!
//! - `latency [N]`: in process, over loopback gRPC, N decisions each (default 2000): from the
//!   call of `export` with a decision that flips a target's activity to the StreamIsActive
//!   message that says so, and from `export` with a decision that changes the count to the
//!   first GetMetrics answer that shows it. Medians and p99.
//! - `streams TRACESCALE [N] [CONNECTIONS]`: starts the tracescale binary at the path given with
//!   a `keda` exporter, reads its resident set size, opens N StreamIsActive streams (default
//!   1000, one target each) over CONNECTIONS connections (default 1, as KEDA multiplexes them),
//!   reads each stream's first message, and reads the resident set size again.
//!
//! ```sh
//! cargo run --release -p tracescale-components --example keda_probe -- latency
//! cargo build --release --bin tracescale
//! cargo run --release -p tracescale-components --example keda_probe -- streams target/release/tracescale
//! ```

use std::error::Error;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tracescale_components::exporters::keda::proto::external_scaler_client::ExternalScalerClient;
use tracescale_components::exporters::keda::proto::{GetMetricsRequest, ScaledObjectRef};
use tracescale_core::component::ComponentKind;
use tracescale_core::config::{Built, build_from_toml};
use tracescale_core::registry;
use tracescale_core::signal::{Decision, Evidence, ReplicaLimits, ScaleChange, Signal, Target};
use tracescale_core::testing;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn decision(to: u32) -> Decision {
    Decision {
        target: Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
            namespace: "shop".into(),
        },
        change: ScaleChange::To(to),
        limits: ReplicaLimits {
            min: Some(0),
            max: None,
        },
        rule: "probe".into(),
        reason: "probe".into(),
        evidence: Evidence::default(),
        resources: None,
        timestamp_unix_nano: tracescale_core::signal::now_unix_nano(),
    }
}

fn reference(target: &str) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "probe".into(),
        namespace: "shop".into(),
        scaler_metadata: [("target".to_string(), target.to_string())].into(),
    }
}

/// Median and p99 in microseconds, nearest rank.
fn summary(mut micros: Vec<f64>) -> String {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
        micros[rank - 1]
    };
    format!(
        "median {:.0} µs, p99 {:.0} µs over {}",
        at(0.5),
        at(0.99),
        micros.len()
    )
}

async fn latency(n: usize) -> Result<()> {
    let port = free_port()?;
    // No cooldown, stabilisation or rate limit: every decision moves the count at once.
    let text = format!(
        r#"endpoint = "127.0.0.1:{port}"
allow = ["shop/deployment/*"]
activity_window = "0s"
[policy]
min_replicas = 0
cooldown = "0s"
scale_up = {{ max_replicas_per_period = 4000000000 }}
scale_down = {{ stabilization_window = "0s", max_replicas_per_period = 4000000000 }}
"#
    );
    let factory =
        registry::lookup(ComponentKind::Exporter, "keda").ok_or("keda is not registered")?;
    let Built::Exporter(mut exporter) =
        build_from_toml(factory, "keda", &text).map_err(|e| e.render(false))?
    else {
        return Err("not an exporter".into());
    };
    exporter.start(&testing::exporter_context("keda")).await?;
    let mut client = ExternalScalerClient::connect(format!("http://127.0.0.1:{port}")).await?;
    let checkout = reference("deployment/checkout");

    let mut stream = client
        .stream_is_active(checkout.clone())
        .await?
        .into_inner();
    let mut active = stream.message().await?.ok_or("no first message")?.result;
    let mut to_stream = Vec::with_capacity(n);
    for _ in 0..n {
        let to = if active { 0 } else { 1 };
        let start = Instant::now();
        exporter
            .export(Signal::Decisions(vec![decision(to)]))
            .await?;
        let message = stream.message().await?.ok_or("the stream ended")?;
        to_stream.push(start.elapsed().as_secs_f64() * 1e6);
        if message.result == active {
            return Err("the stream did not flip".into());
        }
        active = message.result;
    }

    let mut to_metrics = Vec::with_capacity(n);
    let mut polls = 0;
    for i in 0..n {
        let to = 1 + (i % 2) as u32;
        let start = Instant::now();
        exporter
            .export(Signal::Decisions(vec![decision(to)]))
            .await?;
        loop {
            polls += 1;
            if polls > 100 * n {
                return Err("GetMetrics never showed the decisions".into());
            }
            let answer = client
                .get_metrics(GetMetricsRequest {
                    scaled_object_ref: Some(checkout.clone()),
                    metric_name: "tracescale-deployment-checkout".into(),
                })
                .await?
                .into_inner();
            if answer.metric_values.first().map(|v| v.metric_value) == Some(i64::from(to)) {
                break;
            }
        }
        to_metrics.push(start.elapsed().as_secs_f64() * 1e6);
    }
    println!("decision → StreamIsActive message: {}", summary(to_stream));
    println!(
        "decision → GetMetrics answer showing it: {} ({:.2} calls per decision)",
        summary(to_metrics),
        polls as f64 / n as f64
    );
    exporter
        .shutdown(Instant::now() + Duration::from_secs(5))
        .await?;
    Ok(())
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn streams(binary: &str, n: usize, connections: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (port, http) = (free_port()?, free_port()?);
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
[processors.latency_rules]
[[processors.latency_rules.rules]]
name = "slow"
service = "checkout"
operation = "GET /"
above = "300ms"
count = 20
window = "10s"
scale = {{ target = "deployment/w0", namespace = "shop" }}
[exporters.keda]
endpoint = "127.0.0.1:{port}"
allow = ["shop/deployment/*"]
max_streams = {n}
[pipelines.scaling]
receivers = ["otlp"]
processors = ["latency_rules"]
exporters = ["keda"]
[service]
log_level = "warn"
telemetry_address = "off"
"#
        ),
    )?;
    let child = Killed(
        Command::new(binary)
            .arg("run")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let pid = child.0.id();
    let address = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let channel = loop {
        match Channel::from_shared(address.clone())?.connect().await {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut clients = vec![ExternalScalerClient::new(channel)];
    for _ in 1..connections {
        clients.push(ExternalScalerClient::new(
            Channel::from_shared(address.clone())?.connect().await?,
        ));
    }
    // One call first, so the listener's and the connections' own buffers are in the baseline.
    for c in &mut clients {
        c.is_active(reference("deployment/w0")).await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        let c = &mut clients[i % connections];
        let mut s = c
            .stream_is_active(reference(&format!("deployment/w{i}")))
            .await?
            .into_inner();
        s.message().await?.ok_or("no first message")?;
        open.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with = rss_kib(pid)?;
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    println!(
        "{n} idle streams over {connections} connection(s): resident {before} KiB before, {with} KiB with them (+{} KiB, {:.1} KiB per stream), {after} KiB after they closed",
        with.saturating_sub(before),
        with.saturating_sub(before) as f64 / n as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    // Link the built-in components, so the registry has `keda`.
    use tracescale_components as _;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: usize| -> Result<usize> {
        args.get(i).map_or(Ok(default), |a| Ok(a.parse()?))
    };
    match args.first().map(String::as_str) {
        Some("latency") => latency(number(1, 2000)?).await,
        Some("streams") => {
            let binary = args.get(1).ok_or("streams TRACESCALE [N] [CONNECTIONS]")?;
            streams(binary, number(2, 1000)?, number(3, 1)?.max(1)).await
        }
        _ => Err("usage: keda_probe latency [N] | streams TRACESCALE [N] [CONNECTIONS]".into()),
    }
}
