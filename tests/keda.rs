//! The `keda` exporter against an independent client: the repository's externalscaler.proto
//! compiled by Python's grpcio-tools, driving all four RPCs against a running tracescale while
//! spans breach and recover. Run through `scripts/test`, which installs the client's packages;
//! under `CI=true` a missing Python fails the test instead of skipping it.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::interop::peer;
use crate::util::{
    free_port, metric, metrics_until, post_traces, repo, run_ready, slow_span_request, stop_cleanly,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The Python client: JSON commands in, JSON answers and stream messages out.
struct Client {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<Value>,
    /// Stream messages that arrived while an answer was awaited.
    streamed: VecDeque<Value>,
}

impl Client {
    /// Starts the client against 127.0.0.1:`port`; it writes the generated modules into `out`.
    fn start(python: &Path, port: u16, out: &Path) -> Self {
        let mut child = Command::new(python)
            .arg(repo().join("tests/interop/keda_client.py"))
            .arg(repo().join("components/proto/externalscaler.proto"))
            .arg(format!("127.0.0.1:{port}"))
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON from the client ({e}): {line}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Client {
            child,
            stdin,
            lines,
            streamed: VecDeque::new(),
        }
    }

    fn next_line(&mut self, what: &str) -> Value {
        match self.lines.recv_timeout(LIMIT) {
            Ok(v) => v,
            Err(RecvTimeoutError::Timeout) => panic!("no {what} from the client within {LIMIT:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the client exited before {what}"),
        }
    }

    /// Sends a command about the ScaledObject `checkout` of `shop` with `metadata`; returns
    /// the answer.
    fn call(&mut self, op: &str, metadata: Value, extra: Value) -> Value {
        let mut cmd =
            json!({"op": op, "namespace": "shop", "name": "checkout", "metadata": metadata});
        if let (Some(cmd), Some(extra)) = (cmd.as_object_mut(), extra.as_object()) {
            cmd.extend(extra.clone());
        }
        writeln!(self.stdin, "{cmd}").unwrap();
        loop {
            let line = self.next_line(op);
            if line.get("stream").is_some() {
                self.streamed.push_back(line);
            } else {
                assert_eq!(line["op"], op, "{line}");
                return line;
            }
        }
    }

    /// The next message (or end) of a stream.
    fn streamed(&mut self) -> Value {
        match self.streamed.pop_front() {
            Some(v) => v,
            None => {
                let line = self.next_line("a stream message");
                assert!(line.get("stream").is_some(), "{line}");
                line
            }
        }
    }

    /// A stream message if one is already there.
    fn try_streamed(&mut self) -> Option<Value> {
        self.streamed
            .pop_front()
            .or_else(|| self.lines.try_recv().ok())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn checkout() -> Value {
    json!({"target": "shop/deployment/checkout"})
}

/// The replicas GetMetrics answers for checkout.
fn desired(c: &mut Client) -> i64 {
    let answer = c.call(
        "metrics",
        checkout(),
        json!({"metric_name": "tracescale-deployment-checkout"}),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    let values = answer["values"].as_array().unwrap();
    assert_eq!(values.len(), 1, "{answer}");
    let value = values[0]["metricValue"].as_i64().unwrap();
    assert_eq!(values[0]["metricValueFloat"].as_f64(), Some(value as f64));
    value
}

fn active(c: &mut Client) -> bool {
    let answer = c.call("active", checkout(), json!({}));
    assert_eq!(answer["ok"], true, "{answer}");
    answer["result"].as_bool().unwrap()
}

fn refused(c: &mut Client, op: &str, metadata: Value, extra: Value) -> (String, String) {
    let answer = c.call(op, metadata, extra);
    assert_eq!(answer["ok"], false, "{answer}");
    (
        answer["code"].as_str().unwrap().to_string(),
        answer["message"].as_str().unwrap().to_string(),
    )
}

/// Sends spans of checkout lasting `ms` every 100 ms until `done` says so (at most `LIMIT`).
fn spans_until(http: u16, ms: u64, n: &mut u32, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "not done within {LIMIT:?}");
        *n += 1;
        let body = slow_span_request("checkout", *n, ms, "", "");
        let response = post_traces(http, "Content-Type: application/json", body.as_bytes());
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_independent_client_follows_a_breach_and_its_recovery_through_all_four_rpcs() {
    let Some(python) = peer("TRACESCALE_INTEROP_PYTHON") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (http, port, telemetry) = (free_port(), free_port(), free_port());
    let config = dir.path().join("pipeline.toml");
    // A floor of zero, no cooldown and no stabilisation: each decision moves the answer, and
    // the target turns inactive one second after it is back at zero.
    std::fs::write(
        &config,
        format!(
            r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{http}"
[processors.latency_rules]
passthrough = false
interval = "200ms"
[[processors.latency_rules.rules]]
name = "checkout-slow"
service = "checkout"
operation = "INSERT payments"
above = "300ms"
count = 3
window = "2s"
scale = {{ target = "deployment/checkout", namespace = "shop", step = 1, min = 0, max = 2 }}
scale_down = {{ below = "100ms", for = "2s", step = 1 }}
[exporters.keda]
endpoint = "127.0.0.1:{port}"
allow = ["shop/deployment/checkout"]
activity_window = "1s"
[exporters.keda.policy]
min_replicas = 0
cooldown = "0s"
scale_down = {{ stabilization_window = "0s" }}
[pipelines.scaling]
receivers = ["otlp"]
processors = ["latency_rules"]
exporters = ["keda"]
[service]
telemetry_address = "127.0.0.1:{telemetry}"
"#
        ),
    )
    .unwrap();
    let child = run_ready(&config, telemetry);
    let mut c = Client::start(&python, port, &dir.path().join("client"));

    // GetMetricSpec: a target average of 1, so the HPA's replicas are the metric's value.
    let spec = c.call("spec", checkout(), json!({}));
    assert_eq!(
        spec["specs"],
        json!([{"metricName": "tracescale-deployment-checkout", "targetSize": 1, "targetSizeFloat": 1.0}]),
        "{spec}"
    );
    // Before any decision: the floor, inactive; the stream says so first.
    assert_eq!(desired(&mut c), 0);
    assert!(!active(&mut c));
    let opened = c.call("stream", checkout(), json!({"id": "s1"}));
    assert_eq!(opened["ok"], true, "{opened}");
    assert_eq!(c.streamed(), json!({"stream": "s1", "result": false}));

    // The breach: the rule fires, the stream is told at once, GetMetrics follows; it fires
    // again one window later, up to the rule's max.
    let mut n = 0;
    let mut pushed = None;
    spans_until(http, 500, &mut n, || {
        pushed = c.try_streamed();
        pushed.is_some()
    });
    assert_eq!(pushed, Some(json!({"stream": "s1", "result": true})));
    assert!(active(&mut c));
    assert!(desired(&mut c) >= 1);
    spans_until(http, 500, &mut n, || desired(&mut c) == 2);

    // The recovery: fast spans walk it down one step per 2 s, to zero, and one second later
    // the stream says the target is inactive.
    spans_until(http, 10, &mut n, || desired(&mut c) == 0);
    assert_eq!(
        c.streamed(),
        json!({"stream": "s1", "result": false}),
        "inactive once the window after the last scale-up has passed"
    );
    assert!(!active(&mut c));
    assert!(c.try_streamed().is_none(), "one message per change");

    // Bad input: refused with a code and a reason.
    let (code, message) = refused(&mut c, "active", json!({}), json!({}));
    assert_eq!(code, "INVALID_ARGUMENT");
    assert!(message.contains("no `target`"), "{message}");
    // A stream is refused when it is read: the call opens, and its first message is the end.
    let opened = c.call(
        "stream",
        json!({"target": "kube-system/deployment/coredns"}),
        json!({"id": "s2", "namespace": "kube-system"}),
    );
    assert_eq!(opened["ok"], true, "{opened}");
    let end = c.streamed();
    assert_eq!(end["stream"], "s2", "{end}");
    assert_eq!(end["end"], "PERMISSION_DENIED", "{end}");
    assert!(
        end["message"]
            .as_str()
            .unwrap()
            .contains("not in the `allow` list"),
        "{end}"
    );
    let (code, message) = refused(
        &mut c,
        "metrics",
        checkout(),
        json!({"metric_name": "s0-tracescale-deployment-checkout"}),
    );
    assert_eq!(code, "NOT_FOUND");
    assert!(
        message.contains("tracescale-deployment-checkout"),
        "{message}"
    );

    // Counted by RPC and code; one open stream; one activation, one deactivation.
    let metrics = metrics_until(telemetry, "the refusals counted", |m| {
        m.contains("code=\"permission_denied\"")
    });
    let series = |rpc: &str, code: &str| {
        metric(
            &metrics,
            &format!(
                "tracescale_keda_requests_total{{component=\"keda\",rpc=\"{rpc}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(series("IsActive", "invalid_argument"), 1.0);
    assert_eq!(series("StreamIsActive", "permission_denied"), 1.0);
    assert_eq!(series("GetMetrics", "not_found"), 1.0);
    assert_eq!(series("StreamIsActive", "ok"), 1.0);
    assert_eq!(series("GetMetricSpec", "ok"), 1.0);
    assert_eq!(
        metric(&metrics, "tracescale_keda_streams{component=\"keda\"}"),
        1.0
    );
    for (to, count) in [("true", 1.0), ("false", 1.0)] {
        assert_eq!(
            metric(
                &metrics,
                &format!(
                    "tracescale_keda_activity_changes_total{{component=\"keda\",active=\"{to}\"}}"
                )
            ),
            count,
            "{metrics}"
        );
    }

    // Shutdown ends the open stream cleanly.
    stop_cleanly(child, LIMIT);
    assert_eq!(c.streamed(), json!({"stream": "s1", "end": "OK"}));
}
