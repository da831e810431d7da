//! The exporter through the real `kube::Client`, built from a temporary kubeconfig, against the
//! in-process API server of [`super::testing`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::Method;
use tempfile::TempDir;
use tracescale_core::component::ComponentKind;
use tracescale_core::component::ComponentTelemetry;
use tracescale_core::component::{Exporter, ExporterContext};
use tracescale_core::config::{Built, ComponentId, build_from_toml};
use tracescale_core::health::Health;
use tracescale_core::registry;
use tracescale_core::signal::{Decision, Evidence, ReplicaLimits, ScaleChange, Signal, Target};

use super::testing::{FakeApiServer, Fault, count};

pub(super) struct Harness {
    pub(super) server: FakeApiServer,
    pub(super) exporter: Box<dyn Exporter>,
    health: Health,
    _dir: TempDir,
}

const TOKEN: &str = "test-token-1";

async fn harness(extra: &str) -> Harness {
    let server = FakeApiServer::start().await.unwrap();
    harness_on(server, extra).await
}

pub(super) async fn harness_on(server: FakeApiServer, extra: &str) -> Harness {
    let dir = TempDir::new().unwrap();
    let health = Health::new();
    let exporter = exporter_on(&server, &dir, &health, extra).await;
    Harness {
        server,
        exporter,
        health,
        _dir: dir,
    }
}

/// A started exporter talking to `server` through a kubeconfig written into `dir`.
async fn exporter_on(
    server: &FakeApiServer,
    dir: &TempDir,
    health: &Health,
    extra: &str,
) -> Box<dyn Exporter> {
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, TOKEN).unwrap();
    let text = format!(
        "kubeconfig = {:?}\nallow = [\"shop/deployment/*\", \"shop/statefulset/*\", \"shop/widget/*\", \"shop/daemonset/*\"]\ninitial_backoff = \"100ms\"\nmax_backoff = \"400ms\"\nrequest_timeout = \"5s\"\n{extra}",
        kubeconfig.display().to_string()
    );
    let factory = registry::lookup(ComponentKind::Exporter, "kubernetes").unwrap();
    let Built::Exporter(mut exporter) = build_from_toml(factory, "kubernetes", &text).unwrap()
    else {
        panic!("not an exporter");
    };
    let id = ComponentId::parse("kubernetes").unwrap();
    let ctx = ExporterContext {
        telemetry: ComponentTelemetry::new(ComponentKind::Exporter, &id),
        health: health.handle("exporter/kubernetes"),
        id,
    };
    exporter.start(&ctx).await.unwrap();
    exporter
}

fn now() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

pub(super) fn decision(api_version: &str, kind: &str, name: &str, change: ScaleChange) -> Decision {
    Decision {
        target: Target {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: "shop".into(),
        },
        change,
        limits: ReplicaLimits::default(),
        rule: "checkout-slow".into(),
        reason: "p99 of GET /checkout above 300ms".into(),
        evidence: Evidence {
            window: Duration::from_secs(10),
            window_count: 40,
            breaches: 25,
            p99: Duration::from_millis(412),
            exemplars: vec!["4bf92f3577b34da6a3ce929d0e0e4736".into()],
            ..Evidence::default()
        },
        resources: None,
        timestamp_unix_nano: now(),
    }
}

pub(super) fn deploy(name: &str, step: i32) -> Decision {
    decision("apps/v1", "Deployment", name, ScaleChange::Step(step))
}

pub(super) async fn send(h: &mut Harness, ds: Vec<Decision>) {
    h.exporter.export(Signal::Decisions(ds)).await.unwrap();
}

/// Waits (real time, bounded) until `f` holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The requests made for decisions: all but the start's list of other autoscalers.
fn decision_calls(h: &Harness) -> Vec<super::testing::Seen> {
    h.server
        .requests()
        .into_iter()
        .filter(|r| !r.path.contains("/horizontalpodautoscalers"))
        .collect()
}

/// Lets the worker finish what it was handed: shutdown drains, then returns.
pub(super) async fn drain(h: &mut Harness) {
    h.exporter
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(20))
        .await
        .unwrap();
}

#[tokio::test]
async fn scales_a_deployment_through_its_scale_subresource_and_explains_it() {
    let mut h = harness("").await;
    h.server.add("shop", "deployments", "checkout", 2);
    send(&mut h, vec![deploy("checkout", 1)]).await;
    drain(&mut h).await;

    let w = h
        .server
        .workload("shop", "deployments", "checkout")
        .unwrap();
    assert_eq!(w.replicas, 3);
    let writes = h.server.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].object, "shop/deployments/checkout");
    assert_eq!(writes[0].content_type, "application/merge-patch+json");
    assert_eq!(writes[0].body["spec"]["replicas"], 3);
    // The patch is conditional on the version that was read.
    assert_eq!(writes[0].body["metadata"]["resourceVersion"], "1");

    let requests = h.server.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")[..])),
        "every request carries the kubeconfig's token"
    );
    assert_eq!(
        count(
            &requests,
            &Method::PATCH,
            "/apis/apps/v1/namespaces/shop/deployments/checkout/scale"
        ),
        1
    );

    let events = h.server.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["reason"], "TracescaleScaled");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["involvedObject"]["kind"], "Deployment");
    assert_eq!(e["involvedObject"]["name"], "checkout");
    assert_eq!(e["involvedObject"]["uid"], w.uid.as_str());
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("from 2 to 3"), "{message}");
    assert!(message.contains("checkout-slow"), "{message}");
    assert!(message.contains("25 of 40"), "{message}");
    assert!(
        message.contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{message}"
    );
}

#[tokio::test]
async fn resolves_statefulsets_and_custom_resources_through_discovery() {
    let mut h = harness("").await;
    h.server.add("shop", "statefulsets", "payments-db", 1);
    h.server.add("shop", "widgets", "w", 2);
    h.server.add("shop", "daemonsets", "agent", 1);
    send(
        &mut h,
        vec![
            decision(
                "apps/v1",
                "StatefulSet",
                "payments-db",
                ScaleChange::Step(1),
            ),
            decision("example.com/v1", "Widget", "w", ScaleChange::To(4)),
            decision("apps/v1", "DaemonSet", "agent", ScaleChange::Step(1)),
        ],
    )
    .await;
    drain(&mut h).await;
    assert_eq!(
        h.server
            .workload("shop", "statefulsets", "payments-db")
            .unwrap()
            .replicas,
        2
    );
    assert_eq!(
        h.server.workload("shop", "widgets", "w").unwrap().replicas,
        4
    );
    // A DaemonSet serves no /scale: refused after discovery, nothing touched.
    assert_eq!(
        h.server
            .workload("shop", "daemonsets", "agent")
            .unwrap()
            .replicas,
        1
    );
    let requests = h.server.requests();
    assert_eq!(count(&requests, &Method::GET, "/daemonsets/agent"), 0);
    assert_eq!(
        count(&requests, &Method::GET, "/apis/example.com/v1"),
        2,
        "discovery once, then the scale read"
    );
}

#[tokio::test]
async fn a_conflict_rereads_and_applies_the_step_to_the_new_count() {
    let mut h = harness("").await;
    h.server.add("shop", "deployments", "checkout", 2);
    // Someone else scales to 5 between our read and our patch.
    h.server.fault(
        Method::PATCH,
        "/deployments/checkout/scale",
        1,
        Fault::ConcurrentWrite { replicas: 5 },
    );
    send(&mut h, vec![deploy("checkout", 1)]).await;
    drain(&mut h).await;
    let writes = h.server.writes();
    assert_eq!(writes.len(), 1, "the stale patch was refused with 409");
    assert_eq!(writes[0].body["spec"]["replicas"], 6);
    assert_eq!(writes[0].body["metadata"]["resourceVersion"], "2");
    assert_eq!(
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        6
    );
    assert_eq!(
        count(
            &h.server.requests(),
            &Method::GET,
            "/deployments/checkout/scale"
        ),
        2
    );
}

#[tokio::test]
async fn throttling_429_is_retried_after_the_servers_retry_after() {
    let mut h = harness("").await;
    h.server.add("shop", "deployments", "checkout", 2);
    h.server.fault(
        Method::PATCH,
        "/deployments/checkout/scale",
        1,
        Fault::Throttle { seconds: 1 },
    );
    send(&mut h, vec![deploy("checkout", 1)]).await;
    drain(&mut h).await;
    assert_eq!(
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        3
    );
    let patches: Vec<_> = h
        .server
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::PATCH)
        .collect();
    assert_eq!(patches.len(), 2, "one throttled, one applied");
    // Retry-After: 1 is a lower bound; the machine being slow can only add to it.
    assert!(patches[1].at - patches[0].at >= Duration::from_millis(990));
    assert_eq!(h.server.writes().len(), 1);
}

#[tokio::test]
async fn server_errors_hold_the_decision_and_retry_with_backoff() {
    let mut h = harness("").await;
    h.server.add("shop", "deployments", "checkout", 2);
    h.server.fault(
        Method::GET,
        "/deployments/checkout/scale",
        2,
        Fault::ServerError,
    );
    send(&mut h, vec![deploy("checkout", 1)]).await;
    eventually("the held decision is applied", || {
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas
            == 3
    })
    .await;
    assert_eq!(
        count(
            &h.server.requests(),
            &Method::GET,
            "/deployments/checkout/scale"
        ),
        3
    );
    assert_eq!(h.server.writes().len(), 1);
    eventually("ready again", || {
        h.health.readiness().components["exporter/kubernetes"].ready
    })
    .await;
}

#[tokio::test]
async fn forbidden_on_one_target_is_said_once_and_does_not_block_others() {
    let mut h = harness("").await;
    h.server.add("shop", "deployments", "checkout", 2);
    h.server.add("shop", "deployments", "cart", 2);
    h.server.fault(
        Method::PATCH,
        "/deployments/checkout/scale",
        100,
        Fault::Forbidden,
    );
    for _ in 0..3 {
        send(&mut h, vec![deploy("checkout", 1), deploy("cart", 1)]).await;
        // Let each batch be handled on its own, so three decisions reach the API.
        eventually("the batch is taken", || h.server.requests().len() >= 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drain(&mut h).await;
    let requests = h.server.requests();
    // No retries on 403: at most one patch attempt per decision.
    assert!(count(&requests, &Method::PATCH, "/deployments/checkout/scale") <= 3);
    assert_eq!(
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        2
    );
    // The other target went on: scaled once, then the cooldown held the rest.
    assert_eq!(
        h.server
            .workload("shop", "deployments", "cart")
            .unwrap()
            .replicas,
        3
    );
    assert!(h.health.readiness().components["exporter/kubernetes"].ready);
}

#[tokio::test]
async fn unreachable_api_holds_then_applies_the_newest_decision_once() {
    let server = FakeApiServer::start().await.unwrap();
    server.add("shop", "deployments", "checkout", 2);
    let mut h = harness_on(server, "").await;
    h.server.stop();
    send(&mut h, vec![deploy("checkout", 1)]).await;
    eventually("readyz reports the outage", || {
        !h.health.readiness().components["exporter/kubernetes"].ready
    })
    .await;
    let detail = h.health.readiness().components["exporter/kubernetes"]
        .detail
        .clone()
        .unwrap_or_default();
    assert!(detail.contains("kubernetes API unavailable"), "{detail}");
    // More decisions for the same target while it is down: the newest is kept.
    send(&mut h, vec![deploy("checkout", 2)]).await;
    send(&mut h, vec![deploy("checkout", 1)]).await;
    h.server.resume().await.unwrap();
    eventually("applied after the API came back", || {
        h.server.writes().len() == 1
    })
    .await;
    eventually("ready again", || {
        h.health.readiness().components["exporter/kubernetes"].ready
    })
    .await;
    drain(&mut h).await;
    assert_eq!(
        h.server.writes().len(),
        1,
        "one change, not one per held decision"
    );
    assert_eq!(
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        3
    );
}

#[tokio::test]
async fn refuses_targets_off_the_allow_list_and_stale_decisions_without_a_call() {
    let mut h = harness("").await;
    h.server.add("kube-system", "deployments", "coredns", 2);
    h.server.add("shop", "deployments", "checkout", 2);
    let mut foreign = deploy("coredns", 5);
    foreign.target.namespace = "kube-system".into();
    let mut stale = deploy("checkout", 1);
    stale.timestamp_unix_nano -= 31_000_000_000;
    send(&mut h, vec![foreign, stale]).await;
    drain(&mut h).await;
    assert!(decision_calls(&h).is_empty(), "{:?}", decision_calls(&h));
    assert_eq!(
        h.server
            .workload("kube-system", "deployments", "coredns")
            .unwrap()
            .replicas,
        2
    );
}

#[tokio::test]
async fn dry_run_reads_but_never_writes() {
    let mut h = harness("dry_run = true").await;
    h.server.add("shop", "deployments", "checkout", 2);
    send(&mut h, vec![deploy("checkout", 1)]).await;
    drain(&mut h).await;
    assert_eq!(
        count(
            &h.server.requests(),
            &Method::GET,
            "/deployments/checkout/scale"
        ),
        1
    );
    assert!(h.server.writes().is_empty());
    assert!(h.server.events().is_empty());
    assert_eq!(
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        2
    );
}

#[tokio::test]
async fn a_missing_workload_fails_cleanly() {
    let mut h = harness("").await;
    send(&mut h, vec![deploy("nope", 1)]).await;
    drain(&mut h).await;
    assert!(h.server.writes().is_empty());
    assert!(h.health.readiness().components["exporter/kubernetes"].ready);
}

#[tokio::test]
async fn bounds_and_per_target_overrides_are_never_crossed() {
    let mut h = harness(
        "[policy]\nmax_replicas = 4\ncooldown = \"0s\"\n[[targets]]\ntarget = \"shop/deployment/db\"\nmax_replicas = 2\n",
    )
    .await;
    h.server.add("shop", "deployments", "checkout", 3);
    h.server.add("shop", "deployments", "db", 2);
    send(&mut h, vec![deploy("checkout", 5), deploy("db", 1)]).await;
    drain(&mut h).await;
    assert_eq!(
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        4
    );
    assert_eq!(
        h.server
            .workload("shop", "deployments", "db")
            .unwrap()
            .replicas,
        2
    );
    assert_eq!(h.server.writes().len(), 1);
}

#[tokio::test]
async fn a_decision_flood_becomes_one_change_per_target_per_cooldown() {
    let mut h = harness("[policy]\ncooldown = \"1h\"\nmax_replicas = 100\n").await;
    for i in 0..50 {
        h.server.add("shop", "deployments", &format!("svc-{i}"), 1);
    }
    for round in 0..20 {
        let batch = (0..50)
            .map(|i| deploy(&format!("svc-{}", (i + round) % 50), 1))
            .collect();
        send(&mut h, batch).await;
    }
    drain(&mut h).await;
    let writes = h.server.writes();
    assert_eq!(writes.len(), 50, "one change per target");
    for i in 0..50 {
        assert_eq!(
            h.server
                .workload("shop", "deployments", &format!("svc-{i}"))
                .unwrap()
                .replicas,
            2
        );
    }
}

#[tokio::test]
async fn an_event_that_cannot_be_recorded_does_not_undo_the_change() {
    let mut h = harness("").await;
    h.server.add("shop", "deployments", "checkout", 2);
    h.server
        .fault(Method::POST, "/events", 10, Fault::Forbidden);
    send(&mut h, vec![deploy("checkout", 1)]).await;
    drain(&mut h).await;
    assert_eq!(
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        3
    );
    assert!(h.server.events().is_empty());
}

#[tokio::test]
async fn config_requires_an_allow_list_and_valid_patterns() {
    let factory = registry::lookup(ComponentKind::Exporter, "kubernetes").unwrap();
    for (text, needle) in [
        ("allow = []", "an empty list would refuse every decision"),
        (
            "allow = [\"shop/checkout\"]",
            "is not `namespace/kind/name`",
        ),
        ("allow = [\"shop/deployment/check*\"]", "whole segment"),
        (
            "allow = [\"*/*/*\"]\n[policy]\nmin_replicas = 5\nmax_replicas = 2",
            "must not exceed `max_replicas`",
        ),
        (
            "allow = [\"*/*/*\"]\nmax_backoff = \"10ms\"",
            "at least `initial_backoff`",
        ),
    ] {
        let Err(e) = build_from_toml(factory, "kubernetes", text) else {
            panic!("{text} built");
        };
        let rendered = e.render(false);
        assert!(rendered.contains(needle), "{text}: {rendered}");
    }
    let Err(e) = build_from_toml(factory, "kubernetes", "dry_run = true") else {
        panic!("built without allow");
    };
    assert!(e.render(false).contains("allow"), "{}", e.render(false));
}

fn resize(name: &str, cpu: &str) -> Decision {
    let mut d = deploy(name, 0);
    d.resources = Some(tracescale_core::signal::ContainerResources {
        container: "app".into(),
        requests: [("cpu".to_string(), cpu.to_string())].into(),
        limits: [("memory".to_string(), "512Mi".to_string())].into(),
    });
    d
}

#[tokio::test]
async fn vertical_decisions_set_container_resources_in_the_pod_template() {
    let mut h = harness("vertical = true").await;
    h.server.add("shop", "deployments", "checkout", 2);
    send(&mut h, vec![resize("checkout", "500m")]).await;
    eventually("the first is applied", || h.server.writes().len() == 1).await;
    // Another within the cooldown: held, no second patch.
    send(&mut h, vec![resize("checkout", "750m")]).await;
    drain(&mut h).await;
    let w = h
        .server
        .workload("shop", "deployments", "checkout")
        .unwrap();
    assert_eq!(w.containers[0]["resources"]["requests"]["cpu"], "500m");
    assert_eq!(w.containers[0]["resources"]["limits"]["memory"], "512Mi");
    assert_eq!(
        w.replicas, 2,
        "a vertical decision leaves the replicas alone"
    );
    let writes = h.server.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].object, "shop/deployments/checkout");
    assert_eq!(
        writes[0].content_type,
        "application/strategic-merge-patch+json"
    );
    assert_eq!(writes[0].body["metadata"]["resourceVersion"], "1");
    assert_eq!(
        writes[0].body["spec"]["template"]["spec"]["containers"][0]["name"],
        "app"
    );
    let events = h.server.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "TracescaleResized");
    let message = events[0]["message"].as_str().unwrap();
    assert!(message.contains("cpu=500m"), "{message}");
}

#[tokio::test]
async fn vertical_decisions_are_refused_unless_enabled_and_for_unknown_containers() {
    let mut h = harness("").await;
    h.server.add("shop", "deployments", "checkout", 2);
    send(&mut h, vec![resize("checkout", "500m")]).await;
    drain(&mut h).await;
    assert!(h.server.writes().is_empty());
    assert!(decision_calls(&h).is_empty(), "refused before any call");

    let mut h = harness("vertical = true").await;
    h.server.add("shop", "deployments", "checkout", 2);
    let mut d = resize("checkout", "500m");
    if let Some(r) = d.resources.as_mut() {
        r.container = "sidecar".into();
    }
    send(&mut h, vec![d]).await;
    drain(&mut h).await;
    assert!(h.server.writes().is_empty());
}

#[tokio::test]
async fn vertical_dry_run_reads_but_never_writes() {
    let mut h = harness("vertical = true\ndry_run = true").await;
    h.server.add("shop", "deployments", "checkout", 2);
    send(&mut h, vec![resize("checkout", "500m")]).await;
    drain(&mut h).await;
    assert!(h.server.writes().is_empty());
    assert_eq!(
        count(&h.server.requests(), &Method::GET, "/deployments/checkout"),
        1
    );
}

#[tokio::test]
async fn a_conflict_storm_is_retried_then_given_up_without_a_blind_write() {
    let mut h = harness("conflict_retries = 3").await;
    h.server.add("shop", "deployments", "checkout", 2);
    h.server.add("shop", "deployments", "cart", 2);
    // Three writers in a row race the first target: the fourth attempt goes through.
    h.server.fault(
        Method::PATCH,
        "/deployments/checkout/scale",
        3,
        Fault::ConcurrentWrite { replicas: 4 },
    );
    // A storm that never ends on the other: it fails after the retries, never overwriting.
    h.server.fault(
        Method::PATCH,
        "/deployments/cart/scale",
        100,
        Fault::ConcurrentWrite { replicas: 7 },
    );
    send(&mut h, vec![deploy("checkout", 1), deploy("cart", 1)]).await;
    drain(&mut h).await;
    assert_eq!(
        h.server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        5
    );
    assert_eq!(
        h.server
            .workload("shop", "deployments", "cart")
            .unwrap()
            .replicas,
        7
    );
    let requests = h.server.requests();
    assert_eq!(
        count(&requests, &Method::PATCH, "/deployments/cart/scale"),
        4
    );
    assert!(
        h.server
            .writes()
            .iter()
            .all(|w| w.object != "shop/deployments/cart")
    );
}

/// A short election, so that a test sees takeovers within seconds.
fn replica(identity: &str) -> String {
    format!(
        "[policy]\ncooldown = \"1s\"\n[leader_election]\nidentity = \"{identity}\"\nlease_duration = \"2s\"\nrenew_deadline = \"1s\"\nretry_period = \"200ms\"\n"
    )
}

fn holder(server: &FakeApiServer) -> Option<String> {
    server
        .lease("default", "tracescale")
        .and_then(|l| l.pointer("/spec/holderIdentity").cloned())
        .and_then(|h| h.as_str().map(str::to_string))
}

/// An API server with one Deployment, checkout, at 2 replicas.
async fn cluster() -> FakeApiServer {
    let server = FakeApiServer::start().await.unwrap();
    server.add("shop", "deployments", "checkout", 2);
    server
}

#[tokio::test]
async fn of_two_replicas_only_the_lease_holder_scales_and_the_other_takes_over_when_it_stops() {
    let (server, dir, health) = (cluster().await, TempDir::new().unwrap(), Health::new());
    let mut a = exporter_on(&server, &dir, &health, &replica("a")).await;
    eventually("a leads", || holder(&server).as_deref() == Some("a")).await;
    let mut b = exporter_on(&server, &dir, &health, &replica("b")).await;

    // Both replicas get the same decision; only the leader acts on it.
    for e in [&mut a, &mut b] {
        e.export(Signal::Decisions(vec![deploy("checkout", 1)]))
            .await
            .unwrap();
    }
    eventually("the leader scaled", || server.writes().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(server.writes().len(), 1, "the standby did not act");
    assert_eq!(holder(&server).as_deref(), Some("a"), "a renewed its Lease");

    // a stops and releases the Lease; b takes it over at its next try.
    a.shutdown(tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    eventually("b took over", || holder(&server).as_deref() == Some("b")).await;
    let lease = server.lease("default", "tracescale").unwrap();
    assert_eq!(
        lease.pointer("/spec/leaseTransitions"),
        Some(&serde_json::json!(1))
    );
    // Right after the takeover b waits out the cooldown a may have started.
    b.export(Signal::Decisions(vec![deploy("checkout", 1)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.writes().len(), 1, "b settles before it acts");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    b.export(Signal::Decisions(vec![deploy("checkout", 1)]))
        .await
        .unwrap();
    eventually("b scaled", || server.writes().len() == 2).await;
    assert_eq!(
        server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        4
    );
    b.shutdown(tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(holder(&server), None, "b released the Lease at shutdown");
}

#[tokio::test]
async fn a_standby_takes_over_a_lease_its_holder_stopped_renewing() {
    let (server, dir, health) = (cluster().await, TempDir::new().unwrap(), Health::new());
    let mut a = exporter_on(&server, &dir, &health, &replica("a")).await;
    eventually("a leads", || holder(&server).as_deref() == Some("a")).await;
    let mut b = exporter_on(&server, &dir, &health, &replica("b")).await;
    // a is cut off: every renewal it sends fails, and it never releases the Lease.
    server.fault_when(
        Method::PUT,
        "/leases/tracescale",
        r#""holderIdentity":"a""#,
        10_000,
        Fault::ServerError,
    );
    // b waits a whole lease_duration (2 s) without seeing a renewal, then takes over.
    eventually("b took over", || holder(&server).as_deref() == Some("b")).await;
    let lease = server.lease("default", "tracescale").unwrap();
    assert_eq!(
        lease.pointer("/spec/leaseTransitions"),
        Some(&serde_json::json!(1))
    );
    // a acts no more; b does, once it has waited out the cooldown a may have started.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for e in [&mut a, &mut b] {
        e.export(Signal::Decisions(vec![deploy("checkout", 1)]))
            .await
            .unwrap();
    }
    eventually("b scaled", || server.writes().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.writes().len(), 1, "only b acted");
    assert_eq!(
        server
            .workload("shop", "deployments", "checkout")
            .unwrap()
            .replicas,
        3
    );
    for e in [&mut a, &mut b] {
        e.shutdown(tokio::time::Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_acting_before_its_lease_could_expire() {
    let (server, dir, health) = (cluster().await, TempDir::new().unwrap(), Health::new());
    let mut a = exporter_on(&server, &dir, &health, &replica("a")).await;
    eventually("a leads", || holder(&server).as_deref() == Some("a")).await;
    // a's Lease updates start failing; it must stop acting within renew_deadline (1 s).
    server.fault(Method::PUT, "/leases/tracescale", 1000, Fault::ServerError);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    a.export(Signal::Decisions(vec![deploy("checkout", 1)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.writes().is_empty(),
        "a leader that cannot renew does not act"
    );
    a.shutdown(tokio::time::Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn leader_election_settings_are_checked() {
    let factory = registry::lookup(ComponentKind::Exporter, "kubernetes").unwrap();
    let built = build_from_toml(
        factory,
        "kubernetes",
        "allow = [\"*/*/*\"]\n[leader_election]\nlease_duration = \"5s\"\nrenew_deadline = \"5s\"\nretry_period = \"6s\"\n",
    );
    let Err(e) = built else { panic!("built") };
    let text = e.render(false);
    assert!(text.contains("leader_election.renew_deadline"), "{text}");
    assert!(text.contains("leader_election.retry_period"), "{text}");
}
