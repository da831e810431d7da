//! A load generator for OTLP/gRPC collectors, and a meter of the collector process.
//!
//! It sends `ExportTraceServiceRequest`s of a fixed size from several concurrent clients for a
//! fixed time, and reports accepted spans per second, client-side request latency (p50, p99),
//! the collector's CPU seconds and peak resident memory (read from /proc), and spans per
//! CPU-second. See README.md next to this file; `run.sh` compares tracescale with rotel-agent.
//!
//! ```text
//! otlp_load --endpoint http://127.0.0.1:4317 --pid 1234 --spans 100 --clients 4 --seconds 10
//! ```

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tracescale_components::receivers::demo_traces::Generator;
use tracescale_components::stats;

struct Args {
    endpoint: String,
    pid: Option<u32>,
    spans: usize,
    clients: usize,
    seconds: f64,
    label: String,
    fresh_ids: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: otlp_load --endpoint URL [--pid PID] [--spans N] [--clients N] [--seconds S] [--label NAME] [--fresh-ids]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        endpoint: String::new(),
        pid: None,
        spans: 100,
        clients: 4,
        seconds: 10.0,
        label: "collector".into(),
        fresh_ids: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--endpoint" => args.endpoint = value(),
            "--pid" => args.pid = Some(value().parse().unwrap_or_else(|_| usage())),
            "--spans" => args.spans = value().parse().unwrap_or_else(|_| usage()),
            "--clients" => args.clients = value().parse().unwrap_or_else(|_| usage()),
            "--seconds" => args.seconds = value().parse().unwrap_or_else(|_| usage()),
            "--label" => args.label = value(),
            "--fresh-ids" => args.fresh_ids = true,
            _ => usage(),
        }
    }
    if args.endpoint.is_empty() || args.spans < 3 || args.clients == 0 {
        usage();
    }
    args
}

/// Gives every span of `request` a trace and span id no other request has, as a real
/// client's spans would, so that a collector that remembers span ids or assembles traces sees
/// no repeats.
fn renumber(request: &mut ExportTraceServiceRequest, n: u64) {
    let spans = request
        .resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans);
    for span in spans {
        // The parent too, or the trace falls apart; a root's empty parent stays empty.
        for id in [
            &mut span.span_id,
            &mut span.parent_span_id,
            &mut span.trace_id,
        ] {
            for (byte, x) in id.iter_mut().zip(n.to_le_bytes()) {
                *byte ^= x;
            }
        }
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

/// Peak resident set size (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The nearest-rank percentile `p` of `sorted`; zero when empty.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    stats::percentile(sorted, p).unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    // Requests are built before the clock starts, so the generator's own cost stays out of the
    // collector's numbers as far as one machine allows.
    let traces = args.spans / 3;
    let requests: Vec<ExportTraceServiceRequest> = (0..64)
        .map(|i| ExportTraceServiceRequest {
            resource_spans: Generator::new(i + 1, 0.05).batch(traces).resource_spans,
        })
        .collect();
    let spans_per_request = requests[0]
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum::<usize>();

    let cpu_before = args.pid.and_then(cpu_seconds);
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let endpoint = args.endpoint.clone();
        let requests = requests.clone();
        let fresh_ids = args.fresh_ids;
        tasks.push(tokio::spawn(async move {
            let mut client = match TraceServiceClient::connect(endpoint).await {
                Ok(c) => c,
                Err(err) => {
                    eprintln!("client {c}: cannot connect: {err}");
                    return (0u64, 0u64, Vec::new());
                }
            };
            let (mut ok, mut refused, mut latencies) = (0u64, 0u64, Vec::new());
            let mut i = c;
            while Instant::now() < deadline {
                let mut request = requests[i % requests.len()].clone();
                i += 1;
                if fresh_ids {
                    renumber(&mut request, ((c as u64) << 40) | i as u64);
                }
                let sent = Instant::now();
                match client.export(request).await {
                    Ok(_) => {
                        ok += 1;
                        latencies.push(sent.elapsed());
                    }
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            (ok, refused, latencies)
        }));
    }
    let (mut ok, mut refused, mut latencies) = (0u64, 0u64, Vec::new());
    for task in tasks {
        if let Ok((o, r, l)) = task.await {
            ok += o;
            refused += r;
            latencies.extend(l);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let spans = ok as f64 * spans_per_request as f64;
    let cpu = match (cpu_before, args.pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let report = serde_json::json!({
        "label": args.label,
        "spans_per_request": spans_per_request,
        "clients": args.clients,
        "seconds": elapsed,
        "requests_ok": ok,
        "requests_refused": refused,
        "spans_per_second": spans / elapsed,
        "collector_cpu_seconds": cpu,
        "spans_per_cpu_second": cpu.filter(|c| *c > 0.0).map(|c| spans / c),
        "peak_rss_mib": args.pid.and_then(peak_rss_mib),
        "latency_p50_ms": percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        "latency_p99_ms": percentile(&latencies, 99.0).as_secs_f64() * 1e3,
    });
    println!("{report}");
}
