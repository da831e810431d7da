//! The whole scaling path against an in-process Kubernetes API server: OTLP spans in, the
//! latency rules, the `kubernetes` exporter through a kubeconfig. An outage of the API during a
//! breach, and spans whose attributes name workloads the exporter may not touch.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use tracescale_components::exporters::kubernetes::testing::{FakeApiServer, Fault};

use crate::util::{
    bin, eventually, free_port, http_get, metric, metrics_until, post_traces, run_ready,
    slow_span_request as request, stop_cleanly,
};

/// How long the API stays down during the breach.
const OUTAGE: Duration = Duration::from_secs(60);

/// An in-process API server, and the files and ports of a tracescale pointed at it.
struct Cluster {
    server: FakeApiServer,
    /// Runs the server; declared after it, so dropped after it.
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    http: u16,
    telemetry: u16,
}

impl Cluster {
    /// A server holding `workloads`: `(namespace, resource, name, replicas)`.
    fn new(workloads: &[(&str, &str, &str, u32)]) -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let server = runtime.block_on(FakeApiServer::start()).unwrap();
        for (namespace, resource, name, replicas) in workloads {
            server.add(namespace, resource, name, *replicas);
        }
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"), "token")
            .unwrap();
        Self {
            server,
            runtime,
            dir,
            http: free_port(),
            telemetry: free_port(),
        }
    }

    /// A pipeline file of OTLP/HTTP → `latency_rules` (`rules`) → `kubernetes` (`allow`).
    fn config(&self, rules: &str, allow: &str) -> PathBuf {
        self.replica_config("pipeline.toml", self.http, self.telemetry, rules, allow, "")
    }

    /// [`Cluster::config`] for a replica of its own: its file name and ports, and `extra`
    /// tables after the exporter's keys (`[exporters.cluster.…]`).
    fn replica_config(
        &self,
        file: &str,
        http: u16,
        telemetry: u16,
        rules: &str,
        allow: &str,
        extra: &str,
    ) -> PathBuf {
        let config = self.dir.path().join(file);
        std::fs::write(
            &config,
            format!(
                r#"
[receivers.otlp]
grpc = "off"
http = "127.0.0.1:{}"
[processors.latency_rules]
passthrough = false
{rules}
[exporters.cluster]
type = "kubernetes"
kubeconfig = "{}"
allow = {allow}
request_timeout = "2s"
{extra}
[pipelines.scaling]
receivers = ["otlp"]
processors = ["latency_rules"]
exporters = ["cluster"]
[service]
telemetry_address = "127.0.0.1:{}"
"#,
                http,
                self.dir.path().join("kubeconfig").display(),
                telemetry
            ),
        )
        .unwrap();
        config
    }

    /// Starts `tracescale run` on `config` and waits until it is ready.
    fn run(&self, config: &std::path::Path) -> Child {
        run_ready(config, self.telemetry)
    }

    /// Posts one request; it must be accepted whole.
    fn send(&self, body: &str) {
        send_to(self.http, body);
    }

    fn replicas(&self, namespace: &str, resource: &str, name: &str) -> u32 {
        self.server.replicas(namespace, resource, name).unwrap()
    }
}

/// Posts one request to the OTLP/HTTP port `http`; it must be accepted whole.
fn send_to(http: u16, body: &str) {
    let response = post_traces(http, "Content-Type: application/json", body.as_bytes());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(!response.contains("rejected"), "{response}");
}

const DB_RULE: &str = r#"
[[processors.latency_rules.rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 3
window = "10s"
scale = { target = "statefulset/payments-db", namespace = "shop", step = 1, max = 5 }
"#;

fn stop(child: Child) {
    stop_cleanly(child, Duration::from_secs(60));
}

#[test]
fn an_api_outage_during_a_breach_holds_then_makes_one_change_when_it_returns() {
    let mut c = Cluster::new(&[("shop", "statefulsets", "payments-db", 2)]);
    let child = c.run(&c.config(DB_RULE, r#"["shop/statefulset/payments-db"]"#));

    // The API goes away, and payments-db turns slow for the whole outage: the rule fires once
    // per window, and each decision is held.
    c.server.stop();
    let began = Instant::now();
    let mut n = 0;
    let mut seen_holding = None;
    while began.elapsed() < OUTAGE {
        n += 1;
        c.send(&request("payments-db", n, 500, "", ""));
        if seen_holding.is_none()
            && let Some((503, body)) = http_get(c.telemetry, "/readyz")
            && body.contains("kubernetes API unavailable; holding 1 decision,")
        {
            seen_holding = Some(began.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let held_at = seen_holding.expect("/readyz never reported the held decision");
    assert!(
        held_at < Duration::from_secs(10),
        "held only after {held_at:?}"
    );
    let metrics = http_get(c.telemetry, "/metrics").unwrap().1;
    let fired = metric(
        &metrics,
        "tracescale_latency_rules_decisions_total{component=\"latency_rules\",rule=\"db-slow\",direction=\"up\"}",
    );
    assert!(
        fired >= 4.0,
        "the rule fired {fired} times during the outage\n{metrics}"
    );
    assert!(
        c.server.writes().is_empty(),
        "nothing was written while the API was down"
    );

    // The API returns while the breach goes on: one change, from the replicas it has then.
    c.runtime.block_on(c.server.resume()).unwrap();
    let back = Instant::now();
    while c.server.writes().is_empty() {
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no change within 30 s of the API's return"
        );
        n += 1;
        c.send(&request("payments-db", n, 500, "", ""));
        std::thread::sleep(Duration::from_millis(250));
    }
    let applied_after = back.elapsed();
    eventually(Duration::from_secs(20), "ready again", || {
        http_get(c.telemetry, "/readyz").filter(|(s, _)| *s == 200)
    });
    // The breach ends; whatever else the rule fired stays within the 30 s cooldown.
    std::thread::sleep(Duration::from_secs(3));
    let writes = c.server.writes();
    assert_eq!(
        writes.len(),
        1,
        "one change, not one per held decision: {writes:?}"
    );
    assert_eq!(writes[0].object, "shop/statefulsets/payments-db");
    assert_eq!(
        c.replicas("shop", "statefulsets", "payments-db"),
        3,
        "one step up from 2"
    );
    let events = c.server.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "TracescaleScaled");
    stop(child);
    eprintln!(
        "held within {held_at:?} of the outage; applied {applied_after:?} after the API returned"
    );
}

#[test]
fn span_attributes_cannot_steer_scaling_off_the_allow_list() {
    let c = Cluster::new(&[
        ("shop", "statefulsets", "payments-db", 2),
        ("kube-system", "deployments", "coredns", 2),
    ]);
    // A second rule whose target an operator put off the allow-list.
    let rules = format!(
        r#"{DB_RULE}
[[processors.latency_rules.rules]]
name = "dns-slow"
service = "coredns"
operation = "INSERT payments"
above = "300ms"
count = 3
window = "10s"
scale = {{ target = "deployment/coredns", namespace = "kube-system", step = 1, max = 5 }}
"#
    );
    let config = c.config(&rules, r#"["shop/statefulset/payments-db"]"#);
    // The loader warns about the rule no exporter will act on.
    let validated = bin().arg("validate").arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&validated.stderr);
    assert!(validated.status.success(), "{stderr}");
    assert!(
        stderr.contains("kube-system/deployment/coredns"),
        "{stderr}"
    );

    let child = c.run(&config);
    // Crafted spans: payments-db spans whose attributes name coredns in every way a scaler
    // might read a workload from, and coredns spans that breach the off-list rule.
    let naming = r#"{"key":"k8s.namespace.name","value":{"stringValue":"kube-system"}},{"key":"k8s.deployment.name","value":{"stringValue":"coredns"}}"#;
    let target =
        r#"{"key":"tracescale.target","value":{"stringValue":"kube-system/deployment/coredns"}}"#;
    for n in 1..=5 {
        c.send(&request("payments-db", n, 500, naming, target));
        c.send(&request("coredns", 100 + n, 500, naming, target));
    }
    eventually(Duration::from_secs(20), "the allowed target scaled", || {
        (c.server.writes().len() == 1).then_some(())
    });
    metrics_until(c.telemetry, "the off-list rule's decision refused", |b| {
        metric(
            b,
            "tracescale_latency_rules_decisions_total{component=\"latency_rules\",rule=\"dns-slow\",direction=\"up\"}",
        ) >= 1.0
            && metric(
                b,
                "tracescale_scale_decisions_refused_total{component=\"cluster\",reason=\"not_allowed\"}",
            ) >= 1.0
    });
    stop(child);
    let writes = c.server.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].object, "shop/statefulsets/payments-db");
    assert_eq!(c.replicas("kube-system", "deployments", "coredns"), 2);
    let touched: Vec<String> = c
        .server
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.contains("kube-system") || p.contains("coredns"))
        .collect();
    assert!(
        touched.is_empty(),
        "the API was asked about coredns: {touched:?}"
    );
}

#[test]
fn forbidden_and_conflicts_on_one_target_leave_the_other_and_bounds_hold() {
    let c = Cluster::new(&[
        ("shop", "statefulsets", "payments-db", 2),
        ("shop", "deployments", "checkout", 2),
    ]);
    // RBAC forbids patching checkout; three other writers race every write to payments-db
    // and leave it at 4 replicas.
    c.server.fault(
        http::Method::PATCH,
        "/deployments/checkout/scale",
        1000,
        Fault::Forbidden,
    );
    c.server.fault(
        http::Method::PATCH,
        "/statefulsets/payments-db/scale",
        3,
        Fault::ConcurrentWrite { replicas: 4 },
    );
    // A step of 3 from the 4 replicas the other writers left would be 7: the rule's max is 5.
    let rules = r#"
[[processors.latency_rules.rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 3
window = "10s"
scale = { target = "statefulset/payments-db", namespace = "shop", step = 3, max = 5 }

[[processors.latency_rules.rules]]
name = "checkout-slow"
service = "checkout"
operation = "INSERT payments"
above = "300ms"
count = 3
window = "10s"
scale = { target = "deployment/checkout", namespace = "shop", step = 1 }
"#;
    let child = c.run(&c.config(
        rules,
        r#"["shop/statefulset/payments-db", "shop/deployment/checkout"]"#,
    ));
    for n in 1..=3 {
        c.send(&request("checkout", 100 + n, 500, "", ""));
        c.send(&request("payments-db", n, 500, "", ""));
    }
    eventually(Duration::from_secs(20), "payments-db scaled", || {
        (c.server.writes().len() == 1).then_some(())
    });
    metrics_until(c.telemetry, "the 403 and the 409s counted", |b| {
        metric(
            b,
            "tracescale_scale_decisions_failed_total{component=\"cluster\",reason=\"forbidden\"}",
        ) >= 1.0
            && metric(
                b,
                "tracescale_scale_api_retries_total{component=\"cluster\",reason=\"conflict\"}",
            ) >= 3.0
    });
    let out = stop_cleanly(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        c.replicas("shop", "statefulsets", "payments-db"),
        5,
        "re-planned from the other writers' 4 and held at the rule's max"
    );
    assert_eq!(c.replicas("shop", "deployments", "checkout"), 2);
    assert!(
        stderr.contains(r#"may not \"patch\" \"deployments/scale\""#)
            || stderr.contains(r#"may not "patch" "deployments/scale""#),
        "the 403 names the verb and resource\n{stderr}"
    );
}

/// Who holds the exporters' Lease, as the API server stores it.
fn holder(c: &Cluster) -> Option<String> {
    c.server
        .lease("default", "tracescale")
        .and_then(|l| l.pointer("/spec/holderIdentity").cloned())
        .and_then(|h| h.as_str().map(str::to_string))
}

#[test]
fn two_replicas_elect_one_leader_and_the_other_takes_over_when_it_stops() {
    let c = Cluster::new(&[("shop", "statefulsets", "payments-db", 2)]);
    // A short window, so that a rule that fired while standing by re-arms within the test.
    let rule = DB_RULE.replace("window = \"10s\"", "window = \"2s\"");
    let allow = r#"["shop/statefulset/payments-db"]"#;
    let election = |identity: &str| {
        format!(
            "[exporters.cluster.policy]\ncooldown = \"2s\"\n[exporters.cluster.leader_election]\nidentity = \"{identity}\"\nlease_duration = \"2s\"\nrenew_deadline = \"1s\"\nretry_period = \"200ms\"\n"
        )
    };
    let a = c.run(&c.replica_config("a.toml", c.http, c.telemetry, &rule, allow, &election("a")));
    eventually(Duration::from_secs(20), "a to lead", || {
        (holder(&c).as_deref() == Some("a")).then_some(())
    });
    let (b_http, b_telemetry) = (free_port(), free_port());
    let b = run_ready(
        &c.replica_config("b.toml", b_http, b_telemetry, &rule, allow, &election("b")),
        b_telemetry,
    );

    // The same slow spans reach both replicas: both rules fire, only the leader acts.
    for n in 1..=3 {
        c.send(&request("payments-db", n, 500, "", ""));
        send_to(b_http, &request("payments-db", n, 500, "", ""));
    }
    eventually(Duration::from_secs(20), "the leader to scale", || {
        (c.server.writes().len() == 1).then_some(())
    });
    metrics_until(b_telemetry, "the standby's refusal", |m| {
        metric(
            m,
            "tracescale_scale_decisions_refused_total{component=\"cluster\",reason=\"standby\"}",
        ) >= 1.0
            && metric(m, "tracescale_scale_leader{component=\"cluster\"}") == 0.0
    });
    assert_eq!(c.server.writes().len(), 1, "the standby did not act");

    // a stops and hands the Lease over; b waits out the cooldown a may have started, then acts.
    stop(a);
    eventually(Duration::from_secs(20), "b to take over", || {
        (holder(&c).as_deref() == Some("b")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(2500));
    for n in 10..=12 {
        send_to(b_http, &request("payments-db", n, 500, "", ""));
    }
    eventually(Duration::from_secs(20), "the new leader to scale", || {
        (c.server.writes().len() == 2).then_some(())
    });
    assert_eq!(c.replicas("shop", "statefulsets", "payments-db"), 4);
    stop(b);
    assert_eq!(holder(&c), None, "b released the Lease");
}

/// An HPA and a KEDA ScaledObject on allowed workloads are named at start, one warning each;
/// an HPA on a workload off the allow-list is not. With `on_conflict = "refuse"` the rules'
/// decisions for such a workload are refused and counted, and nothing is written.
#[test]
fn other_autoscalers_on_allowed_workloads_are_named_at_start_and_refused_when_told() {
    let c = Cluster::new(&[
        ("shop", "statefulsets", "payments-db", 2),
        ("shop", "deployments", "checkout", 2),
        ("shop", "deployments", "cart", 2),
        ("shop", "deployments", "web", 2),
    ]);
    c.server
        .add_autoscaler("shop", "payments-db", "StatefulSet", "payments-db");
    c.server
        .add_scaled_object("shop", "cart", "Deployment", "cart");
    c.server.add_autoscaler("shop", "web", "Deployment", "web");
    let allow =
        r#"["shop/statefulset/payments-db", "shop/deployment/checkout", "shop/deployment/cart"]"#;
    let config = c.replica_config(
        "pipeline.toml",
        c.http,
        c.telemetry,
        DB_RULE,
        allow,
        "on_conflict = \"refuse\"",
    );
    let child = c.run(&config);
    let gauge = "tracescale_scale_other_autoscalers{component=\"cluster\"}";
    metrics_until(c.telemetry, "the autoscalers counted", |m| {
        metric(m, gauge) == 2.0
    });
    // payments-db turns slow: the rule fires, and the exporter leaves the workload to its HPA.
    for n in 1..=3 {
        c.send(&request("payments-db", n, 500, "", ""));
    }
    metrics_until(c.telemetry, "the decision refused", |m| {
        metric(
            m,
            "tracescale_scale_decisions_refused_total{component=\"cluster\",reason=\"other_autoscaler\"}",
        ) >= 1.0
    });
    let out = stop_cleanly(child, Duration::from_secs(60));
    assert!(c.server.writes().is_empty(), "{:?}", c.server.writes());
    assert_eq!(c.replicas("shop", "statefulsets", "payments-db"), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("also scales"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(warnings.iter().any(|l| l.contains(
        "HorizontalPodAutoscaler shop/payments-db also scales shop/statefulset/payments-db: its decisions are refused"
    )), "{stderr}");
    assert!(warnings.iter().any(|l| l.contains(
        "KEDA ScaledObject shop/cart (through HorizontalPodAutoscaler shop/keda-hpa-cart) also scales shop/deployment/cart"
    )), "{stderr}");
    assert!(!stderr.contains("shop/web"), "{stderr}");
}

/// A Role without `list` on horizontalpodautoscalers: one INFO line says the check is skipped,
/// and scaling goes on.
#[test]
fn without_permission_to_list_autoscalers_one_line_says_so_and_scaling_goes_on() {
    let c = Cluster::new(&[("shop", "statefulsets", "payments-db", 2)]);
    c.server.forbid_listing_autoscalers();
    let child = c.run(&c.config(DB_RULE, r#"["shop/statefulset/payments-db"]"#));
    for n in 1..=3 {
        c.send(&request("payments-db", n, 500, "", ""));
    }
    eventually(Duration::from_secs(20), "the scale-up", || {
        (c.replicas("shop", "statefulsets", "payments-db") == 3).then_some(())
    });
    let out = stop_cleanly(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("horizontalpodautoscalers"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("INFO"), "{stderr}");
    assert!(
        lines[0]
            .contains("not checking for other autoscalers (HPA, KEDA) on the allowed workloads"),
        "{stderr}"
    );
}
