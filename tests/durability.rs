//! Acknowledged means delivered, with a downstream that is away: a disk-buffered forwarder
//! killed with `kill -9` under load, and the default memory queue, each with the trace backend
//! down for a minute. Every span a client was told is safe reaches the backend, at least once.

use std::collections::HashSet;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tracescale_components::receivers::demo_traces::Generator;

use crate::util::{
    eventually, free_port, http_get, metric, metrics_until, post_traces, run_ready, signal,
    slow_span_request, stop_cleanly, wait_with_limit,
};

/// How long the backend stays away.
const DOWN: Duration = Duration::from_secs(60);

/// (trace id, span id), hex.
type SpanKey = (String, String);

fn forwarder(
    dir: &Path,
    grpc: u16,
    telemetry: u16,
    backend: u16,
    buffer: &str,
) -> std::path::PathBuf {
    let config = dir.join("forwarder.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "off"
[exporters.otlp]
endpoint = "http://127.0.0.1:{backend}"
retry_on_failure = {{ initial_interval = "200ms", max_interval = "1s", max_elapsed_time = "0s" }}
{buffer}
[pipelines.traces]
receivers = ["otlp"]
exporters = ["otlp"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
shutdown_deadline = "5s"
"#
        ),
    )
    .unwrap();
    config
}

fn backend(dir: &Path, grpc: u16, telemetry: u16) -> (std::path::PathBuf, std::path::PathBuf) {
    let config = dir.join("backend.toml");
    let spans = dir.join("backend.jsonl");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "off"
[exporters.file]
path = "{}"
[pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
"#,
            spans.display()
        ),
    )
    .unwrap();
    (config, spans)
}

/// The span keys in a file written by the `file` exporter; a torn last line is left for later.
fn keys_in(path: &Path) -> HashSet<SpanKey> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut keys = HashSet::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    keys.insert((
                        span["traceId"].as_str().unwrap_or_default().to_string(),
                        span["spanId"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
    }
    keys
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Clients that send as fast as they are answered and remember every span answered OK, until
/// `stop` is set or the server goes away.
struct Load {
    acknowledged: Arc<Mutex<HashSet<SpanKey>>>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Runtime,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(grpc: u16, clients: u64, seed: u64) -> Self {
        let acknowledged = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let clients = (0..clients)
            .map(|c| {
                let acknowledged = acknowledged.clone();
                let stop = stop.clone();
                runtime.spawn(async move {
                    let Ok(mut client) =
                        TraceServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await
                    else {
                        return;
                    };
                    let mut generator = Generator::new(seed * 100 + c + 1, 0.1);
                    while !stop.load(Ordering::SeqCst) {
                        let traces = generator.batch(10);
                        let keys: Vec<SpanKey> = traces
                            .resource_spans
                            .iter()
                            .flat_map(|rs| &rs.scope_spans)
                            .flat_map(|ss| &ss.spans)
                            .map(|s| (hex(&s.trace_id), hex(&s.span_id)))
                            .collect();
                        let request = ExportTraceServiceRequest {
                            resource_spans: traces.resource_spans,
                        };
                        match client.export(request).await {
                            Ok(_) => acknowledged.lock().unwrap().extend(keys),
                            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        Self {
            acknowledged,
            stop,
            runtime,
            clients,
        }
    }

    fn acknowledged(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Stops the clients and returns every span answered OK.
    fn finish(self) -> HashSet<SpanKey> {
        self.stop.store(true, Ordering::SeqCst);
        self.runtime.block_on(async {
            for c in self.clients {
                let _ = tokio::time::timeout(Duration::from_secs(20), c).await;
            }
        });
        std::mem::take(&mut *self.acknowledged.lock().unwrap())
    }
}

/// Waits until the backend file holds every acknowledged span; names the missing count if not.
fn all_arrive(spans: &Path, acknowledged: &HashSet<SpanKey>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let arrived = keys_in(spans);
        let missing = acknowledged.difference(&arrived).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged spans never reached the backend",
            acknowledged.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Stops a run that must end cleanly; returns its log.
fn stop(child: Child) -> String {
    let out = stop_cleanly(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn kill_9_under_load_with_a_disk_buffer_then_a_backend_back_after_a_minute_loses_nothing() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (grpc, telemetry, backend_grpc, backend_telemetry) =
        (free_port(), free_port(), free_port(), free_port());
    let buffer = format!(
        "buffer = {{ type = \"disk\", path = \"{}\", max_size = \"256MiB\" }}",
        dir.path().join("buffer").display()
    );
    let config = forwarder(dir.path(), grpc, telemetry, backend_grpc, &buffer);
    let child = run_ready(&config, telemetry);
    let load = Load::start(grpc, 4, 1);
    eventually(Duration::from_secs(30), "acknowledged spans", || {
        (load.acknowledged() > 5_000).then_some(())
    });
    signal(&child, "KILL");
    let _ = wait_with_limit(child, Duration::from_secs(10));
    let acknowledged = load.finish();

    // Restarted, it sends what it had on disk once the backend returns.
    let child = run_ready(&config, telemetry);
    std::thread::sleep(DOWN.saturating_sub(began.elapsed()));
    let (backend_config, spans) = backend(dir.path(), backend_grpc, backend_telemetry);
    let backend = run_ready(&backend_config, backend_telemetry);
    all_arrive(&spans, &acknowledged);
    stop(child);
    stop(backend);
}

#[test]
fn with_the_default_queue_a_backend_down_for_a_minute_gets_every_acknowledged_span() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (grpc, telemetry, backend_grpc, backend_telemetry) =
        (free_port(), free_port(), free_port(), free_port());
    let config = forwarder(dir.path(), grpc, telemetry, backend_grpc, "");
    let child = run_ready(&config, telemetry);
    // The clients keep sending through the outage: the queues fill, then they are told to back
    // off, and nothing they were told is safe is dropped.
    let load = Load::start(grpc, 2, 2);
    // A failing exporter is visible: degraded in /readyz (still ready: back-pressure already
    // slows the clients), every component listed.
    let (status, body) = eventually(Duration::from_secs(30), "a degraded exporter", || {
        http_get(telemetry, "/readyz").filter(|(_, b)| b.contains("degraded"))
    });
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "degraded", "{body}");
    let exporter = &ready["components"]["exporter/otlp"];
    assert_eq!(exporter["status"], "degraded", "{body}");
    assert!(
        exporter["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("127.0.0.1:{backend_grpc}"))),
        "{body}"
    );
    assert_eq!(
        ready["components"]["receiver/otlp"]["status"], "ok",
        "{body}"
    );
    std::thread::sleep(DOWN.saturating_sub(began.elapsed()));
    let (backend_config, spans) = backend(dir.path(), backend_grpc, backend_telemetry);
    let backend = run_ready(&backend_config, backend_telemetry);
    eventually(Duration::from_secs(30), "more spans acknowledged", || {
        (load.acknowledged() > 20_000).then_some(())
    });
    let acknowledged = load.finish();
    all_arrive(&spans, &acknowledged);
    eventually(Duration::from_secs(10), "the exporter ok again", || {
        http_get(telemetry, "/readyz").filter(|(_, b)| !b.contains("degraded"))
    });
    let stderr = stop(child);
    assert!(stderr.contains("export failed; retrying"), "{stderr}");
    stop(backend);
}

/// A disk that refuses writes (here the file-size limit of the process, as a full disk would)
/// makes the exporter not ready, crashes nothing, and acknowledges nothing it could not write;
/// once writes succeed again, everything waiting is written, answered OK and delivered.
#[test]
fn a_disk_that_refuses_writes_is_not_ready_and_nothing_is_lost_when_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (http, telemetry) = (free_port(), free_port());
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
[exporters.null]
buffer = {{ type = "disk", path = "{}" }}
[pipelines.traces]
receivers = ["otlp"]
exporters = ["null"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
"#,
            dir.path().join("buffer").display()
        ),
    )
    .unwrap();
    // A soft limit of 64 blocks of 512 bytes per file (raised below without privileges); SIGXFSZ
    // ignored, so a write past it fails with EFBIG.
    let bin = env!("CARGO_BIN_EXE_tracescale");
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -S -f 64; trap '' XFSZ; exec '{bin}' run -c '{}'",
            config.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "ready", || {
        http_get(telemetry, "/readyz").filter(|(s, _)| *s == 200)
    });
    let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let (ok, done) = (ok.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) && n < 2_000 {
                n += 1;
                let body = slow_span_request("payments-db", n, 500, "", "");
                let response = post_traces(http, "Content-Type: application/json", body.as_bytes());
                if response.starts_with("HTTP/1.1 200") {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let (status, body) = eventually(Duration::from_secs(60), "the disk error in /readyz", || {
        http_get(telemetry, "/readyz").filter(|(_, b)| b.contains("disk buffer cannot write"))
    });
    assert_eq!(status, 503, "{body}");
    let mut child = child;
    assert!(child.try_wait().unwrap().is_none(), "the process died");
    let refused_at = ok.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    // Nothing is answered OK while nothing can be written.
    assert_eq!(ok.load(Ordering::SeqCst), refused_at);

    let lifted = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", child.id()))
        .arg("--fsize=unlimited")
        .status()
        .unwrap();
    assert!(lifted.success());
    eventually(Duration::from_secs(20), "ready again", || {
        http_get(telemetry, "/readyz").filter(|(s, _)| *s == 200)
    });
    eventually(Duration::from_secs(20), "more answered OK", || {
        (ok.load(Ordering::SeqCst) > refused_at).then_some(())
    });
    done.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    let answered = ok.load(Ordering::SeqCst) as f64;
    let metrics = metrics_until(telemetry, "every OK span delivered", |m| {
        metric(
            m,
            "tracescale_exporter_emitted_total{component=\"null\",signal=\"traces\"}",
        ) >= answered
    });
    assert_eq!(
        metric(
            &metrics,
            "tracescale_buffer_corrupt_total{component=\"null\"}"
        ),
        0.0
    );
    stop(child);
}
