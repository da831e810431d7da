//! Interop with real OTLP peers: the OpenTelemetry Python SDK and rotel-agent, a second
//! collector. Run through `scripts/test`, which installs them; under `CI=true` a missing peer
//! fails the test instead of skipping it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::util::{bin, eventually, free_port, run_to_end, stop_cleanly};

const LIMIT: Duration = Duration::from_secs(90);

/// The path in `var`, or None (skip) outside CI; a panic under `CI=true`.
pub(crate) fn peer(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.exists() => Some(path),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "{var} is not set or missing: run the tests through scripts/test, which installs the OTLP peers"
            )
        }
        _ => {
            eprintln!("skipping: {var} is not set (run the tests through scripts/test)");
            None
        }
    }
}

/// A tracescale process receiving OTLP and writing spans to a file.
struct Collector {
    child: Option<Child>,
    grpc: u16,
    http: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start() -> Self {
        Self::start_with("")
    }

    /// Starts with extra keys in `[receivers.otlp]`.
    fn start_with(receiver_keys: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("spans.jsonl");
        let (grpc, http) = (free_port(), free_port());
        let config = dir.path().join("pipeline.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"
{receiver_keys}
[exporters.file]
path = "{}"
when_full = "block"
[pipelines.traces]
receivers = ["otlp"]
exporters = ["file"]
[service]
telemetry_address = "off"
"#,
                out.display()
            ),
        )
        .unwrap();
        let child = bin()
            .arg("run")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(30), "the OTLP listeners", || {
            let up = |p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            (up(grpc) && up(http)).then_some(())
        });
        Collector {
            child: Some(child),
            grpc,
            http,
            out,
            _dir: dir,
        }
    }

    /// Every span written so far, by span id, with its resource's service.name.
    fn spans(&self) -> HashMap<String, (String, Value)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut spans = HashMap::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let service = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|kv| kv["key"] == "service.name")
                    .and_then(|kv| kv["value"]["stringValue"].as_str())
                    .unwrap_or_default()
                    .to_string();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        let id = span["spanId"].as_str().unwrap().to_string();
                        spans.insert(id, (service.clone(), span.clone()));
                    }
                }
            }
        }
        spans
    }

    fn stop(mut self) {
        let child = self.child.take().unwrap();
        stop_cleanly(child, LIMIT);
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the SDK script; returns the spans it says it sent.
fn send_with_sdk(python: &Path, protocol: &str, endpoint: &str, traces: usize) -> Vec<Value> {
    send_with_sdk_env(python, protocol, endpoint, traces, &[])
}

fn send_with_sdk_env(
    python: &Path,
    protocol: &str,
    endpoint: &str,
    traces: usize,
    env: &[(&str, String)],
) -> Vec<Value> {
    let script = crate::util::repo().join("tests/interop/send_spans.py");
    let mut command = Command::new(python);
    if !env.is_empty() {
        // requests lets these override a session's own CA file; the test sets the CA explicitly.
        command
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE");
    }
    let out = run_to_end(
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg(script)
            .arg(protocol)
            .arg(endpoint)
            .arg(traces.to_string()),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// OTLP/JSON attributes as a plain map, int64 values as numbers, to compare with the SDK's view.
fn attributes(list: &Value) -> serde_json::Map<String, Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|kv| {
            let v = &kv["value"];
            let value = if let Some(s) = v.get("stringValue") {
                s.clone()
            } else if let Some(i) = v.get("intValue") {
                let n: i64 = i
                    .as_str()
                    .map_or_else(|| i.as_i64().unwrap(), |s| s.parse().unwrap());
                Value::from(n)
            } else if let Some(d) = v.get("doubleValue") {
                d.clone()
            } else if let Some(b) = v.get("boolValue") {
                b.clone()
            } else {
                panic!("unexpected attribute value {v}")
            };
            (kv["key"].as_str().unwrap().to_string(), value)
        })
        .collect()
}

fn assert_intact(sent: &[Value], received: &HashMap<String, (String, Value)>) {
    for s in sent {
        let id = s["spanId"].as_str().unwrap();
        let (service, got) = received
            .get(id)
            .unwrap_or_else(|| panic!("span {id} did not arrive"));
        assert_eq!(service, s["service"].as_str().unwrap());
        for key in [
            "traceId",
            "name",
            "kind",
            "startTimeUnixNano",
            "endTimeUnixNano",
        ] {
            assert_eq!(got[key], s[key], "{key} of span {id}");
        }
        assert_eq!(
            got["parentSpanId"].as_str().unwrap_or(""),
            s["parentSpanId"]
        );
        assert_eq!(
            attributes(&got["attributes"]),
            *s["attributes"].as_object().unwrap()
        );
        let events = got["events"].as_array().cloned().unwrap_or_default();
        let sent_events = s["events"].as_array().unwrap();
        assert_eq!(events.len(), sent_events.len());
        for (e, se) in events.iter().zip(sent_events) {
            assert_eq!(e["name"], se["name"]);
            assert_eq!(e["timeUnixNano"], se["timeUnixNano"]);
            assert_eq!(
                attributes(&e["attributes"]),
                *se["attributes"].as_object().unwrap()
            );
        }
    }
}

/// Starts rotel-agent forwarding over OTLP/gRPC to `to_port`; returns it and its gRPC port.
fn start_rotel(rotel: &Path, to_port: u16) -> (Child, u16) {
    let (grpc, http) = (free_port(), free_port());
    let agent = Command::new(rotel)
        .args(["start", "--exporter", "otlp"])
        .arg("--otlp-grpc-endpoint")
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--otlp-exporter-endpoint")
        .arg(format!("http://127.0.0.1:{to_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "rotel-agent's listener", || {
        std::net::TcpStream::connect(("127.0.0.1", grpc)).ok()
    });
    (agent, grpc)
}

#[test]
fn the_python_sdk_sends_intact_spans_over_grpc_and_http() {
    let Some(python) = peer("TRACESCALE_INTEROP_PYTHON") else {
        return;
    };
    let collector = Collector::start();
    let over_grpc = send_with_sdk(
        &python,
        "grpc",
        &format!("http://127.0.0.1:{}", collector.grpc),
        20,
    );
    let over_http = send_with_sdk(
        &python,
        "http",
        &format!("http://127.0.0.1:{}", collector.http),
        20,
    );
    assert_eq!(over_grpc.len() + over_http.len(), 80);
    let received = eventually(Duration::from_secs(30), "80 spans in the file", || {
        let spans = collector.spans();
        (spans.len() >= 80).then_some(spans)
    });
    assert_eq!(received.len(), 80);
    assert_intact(&over_grpc, &received);
    assert_intact(&over_http, &received);
    collector.stop();
}

#[test]
fn the_python_sdk_sends_over_tls_with_a_ca_file_and_a_bearer_header() {
    let Some(python) = peer("TRACESCALE_INTEROP_PYTHON") else {
        return;
    };
    let tls = crate::util::repo().join("tests/fixtures/tls");
    let collector = Collector::start_with(&format!(
        "bearer_token = \"s3cret\"\ntls = {{ cert_file = {:?}, key_file = {:?} }}",
        tls.join("server.pem").display().to_string(),
        tls.join("server.key").display().to_string()
    ));
    let env = [
        (
            "TRACESCALE_CA_FILE",
            tls.join("ca.pem").display().to_string(),
        ),
        ("TRACESCALE_TOKEN", "s3cret".to_string()),
    ];
    let over_grpc = send_with_sdk_env(
        &python,
        "grpc",
        &format!("https://localhost:{}", collector.grpc),
        10,
        &env,
    );
    let over_http = send_with_sdk_env(
        &python,
        "http",
        &format!("https://localhost:{}", collector.http),
        10,
        &env,
    );
    let received = eventually(Duration::from_secs(30), "40 spans in the file", || {
        let spans = collector.spans();
        (spans.len() >= 40).then_some(spans)
    });
    assert_eq!(received.len(), 40);
    assert_intact(&over_grpc, &received);
    assert_intact(&over_http, &received);

    // The wrong token over TLS: the SDK's export fails, nothing more arrives.
    let script = crate::util::repo().join("tests/interop/send_spans.py");
    let out = run_to_end(
        Command::new(&python)
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .env("TRACESCALE_CA_FILE", tls.join("ca.pem"))
            .env("TRACESCALE_TOKEN", "wrong")
            .arg(script)
            .args([
                "http",
                &format!("https://localhost:{}", collector.http),
                "3",
            ]),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401") || !out.status.success(), "{stderr}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(collector.spans().len(), 40);
    collector.stop();
}

#[test]
fn spans_pass_through_rotel_agent_into_tracescale() {
    let (Some(python), Some(rotel)) = (
        peer("TRACESCALE_INTEROP_PYTHON"),
        peer("TRACESCALE_ROTEL_AGENT"),
    ) else {
        return;
    };
    let collector = Collector::start();
    let (mut agent, rotel_grpc) = start_rotel(&rotel, collector.grpc);
    let sent = send_with_sdk(
        &python,
        "grpc",
        &format!("http://127.0.0.1:{rotel_grpc}"),
        25,
    );
    let received = eventually(Duration::from_secs(60), "50 spans through rotel", || {
        let spans = collector.spans();
        (spans.len() >= sent.len()).then_some(spans)
    });
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(received.len(), sent.len());
    assert_intact(&sent, &received);
    collector.stop();
}

#[test]
fn tracescale_forwards_through_rotel_agent_into_tracescale() {
    let Some(rotel) = peer("TRACESCALE_ROTEL_AGENT") else {
        return;
    };
    let collector = Collector::start();
    let (mut agent, rotel_grpc) = start_rotel(&rotel, collector.grpc);

    // The sending side: 20 batches of 10 three-span traces, forwarded with the otlp exporter.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("forward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.demo_traces]
batches_per_second = 0
traces_per_batch = 10
count = 20
[exporters.otlp]
endpoint = "http://127.0.0.1:{rotel_grpc}"
send_batch_size = 100
when_full = "block"
[pipelines.traces]
receivers = ["demo_traces"]
exporters = ["otlp"]
[service]
telemetry_address = "off"
"#
        ),
    )
    .unwrap();
    let out = run_to_end(bin().arg("run").arg("-c").arg(&config), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let received = eventually(Duration::from_secs(60), "600 spans through rotel", || {
        let spans = collector.spans();
        (spans.len() >= 600).then_some(spans)
    });
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(received.len(), 600);
    let services: std::collections::BTreeSet<_> =
        received.values().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["checkout", "frontend", "payments-db"]
    );
    collector.stop();
}

/// A dense 3-D stream: a tight cluster and 2 % scattered anomalies, from a fixed seed.
fn dense_stream(n: usize) -> Vec<([f32; 3], bool)> {
    let mut state = 42u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let anomaly = next() < 0.02;
            let mut p = [0f32; 3];
            for v in &mut p {
                *v = if anomaly {
                    next() as f32
                } else {
                    // Sum of uniforms: a bell around 0.5 with spread about 0.08.
                    let s: f64 = (0..4).map(|_| next()).sum::<f64>() / 4.0;
                    (0.5 + (s - 0.5) * 0.55) as f32
                };
            }
            (p, anomaly)
        })
        .collect()
}

#[test]
fn the_hstree_forest_agrees_with_rivers_half_space_trees() {
    use tracescale_components::processors::hstree::forest::{Forest, ForestParams};

    let Some(python) = peer("TRACESCALE_INTEROP_PYTHON") else {
        return;
    };
    let stream = dense_stream(6000);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("features.csv");
    let mut text = String::from("x0,x1,x2\n");
    for (p, _) in &stream {
        text.push_str(&format!("{},{},{}\n", p[0], p[1], p[2]));
    }
    std::fs::write(&csv, text).unwrap();

    // Identical parameters: River's defaults, 3 dimensions.
    let params = ForestParams::river(3, 7);
    let script = crate::util::repo().join("tests/interop/river_hst.py");
    let out = run_to_end(
        Command::new(&python).arg(script).arg(&csv).args([
            params.trees.to_string(),
            params.height.to_string(),
            params.window_size.to_string(),
            "7".to_string(),
        ]),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let river: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(river.len(), stream.len());

    let mut forest: Forest = Forest::new(params).unwrap();
    let ours: Vec<f64> = stream
        .iter()
        .map(|(p, _)| forest.score_learn(&p.to_vec()))
        .collect();

    // Judge after the first window, as both models score 0 before their first swap.
    let skip = params.window_size as usize;
    let auc = |scores: &[f64]| {
        let mut points: Vec<(f64, bool)> = scores
            .iter()
            .zip(&stream)
            .skip(skip)
            .map(|(s, (_, label))| (*s, *label))
            .collect();
        tracescale_components::eval::auc(&mut points).unwrap()
    };
    let (ours, river) = (auc(&ours), auc(&river));
    eprintln!("AUC: tracescale {ours:.4}, River {river:.4}");
    assert!(
        river > 0.8,
        "River's AUC {river} is too low for this stream to tell anything"
    );
    assert!(
        (ours - river).abs() <= 0.02,
        "tracescale {ours:.4} vs River {river:.4}"
    );
}
