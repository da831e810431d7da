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

mod leader;
mod vertical;

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
            .replicas("shop", "statefulsets", "payments-db")
            .unwrap(),
        2
    );
    assert_eq!(h.server.replicas("shop", "widgets", "w").unwrap(), 4);
    // A DaemonSet serves no /scale: refused after discovery, nothing touched.
    assert_eq!(h.server.replicas("shop", "daemonsets", "agent").unwrap(), 1);
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
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
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
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
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
            .replicas("shop", "deployments", "checkout")
            .unwrap()
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
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
        2
    );
    // The other target went on: scaled once, then the cooldown held the rest.
    assert_eq!(h.server.replicas("shop", "deployments", "cart").unwrap(), 3);
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
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
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
            .replicas("kube-system", "deployments", "coredns")
            .unwrap(),
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
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
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
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
        4
    );
    assert_eq!(h.server.replicas("shop", "deployments", "db").unwrap(), 2);
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
                .replicas("shop", "deployments", &format!("svc-{i}"))
                .unwrap(),
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
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
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
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
        5
    );
    assert_eq!(h.server.replicas("shop", "deployments", "cart").unwrap(), 7);
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
