//! Other autoscalers on the allowed workloads, against the in-process API server: found at
//! start, refused when told to, and a Role without `list` on them blocks nothing.

use axum::http::Method;
use tracescale_core::signal::ScaleChange;

use super::testing::{FakeApiServer, count};
use super::tests::{decision, deploy, drain, harness_on, send};

fn db(step: i32) -> tracescale_core::signal::Decision {
    decision("apps/v1", "StatefulSet", "db", ScaleChange::Step(step))
}

/// A server with two workloads, an HPA on `checkout` and one on a workload the exporter may
/// not scale.
async fn cluster() -> FakeApiServer {
    let server = FakeApiServer::start().await.unwrap();
    server.add("shop", "deployments", "checkout", 2);
    server.add("shop", "statefulsets", "db", 1);
    server.add_autoscaler("shop", "checkout", "Deployment", "checkout");
    server.add_autoscaler("billing", "ledger", "Deployment", "ledger");
    server
}

#[tokio::test]
async fn refuse_leaves_a_workload_another_autoscaler_scales_and_scales_the_others() {
    let mut h = harness_on(cluster().await, "on_conflict = \"refuse\"").await;
    send(&mut h, vec![deploy("checkout", 1), db(1)]).await;
    drain(&mut h).await;
    assert_eq!(
        h.server
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
        2
    );
    assert_eq!(h.server.replicas("shop", "statefulsets", "db").unwrap(), 2);
    let requests = h.server.requests();
    // Only the allowed namespace was listed, once, before any decision was planned.
    assert_eq!(
        count(
            &requests,
            &Method::GET,
            "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers"
        ),
        1
    );
    assert_eq!(count(&requests, &Method::GET, "/namespaces/billing/"), 0);
    assert_eq!(
        count(&requests, &Method::GET, "deployments/checkout/scale"),
        0
    );
}

#[tokio::test]
async fn warn_still_scales_a_workload_another_autoscaler_scales() {
    let mut h = harness_on(cluster().await, "").await;
    send(&mut h, vec![deploy("checkout", 1)]).await;
    drain(&mut h).await;
    assert_eq!(
        h.server
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn a_keda_scaled_object_is_found_through_the_hpa_it_creates() {
    let server = FakeApiServer::start().await.unwrap();
    server.add("shop", "deployments", "cart", 2);
    server.add_scaled_object("shop", "cart", "Deployment", "cart");
    let mut h = harness_on(server, "on_conflict = \"refuse\"").await;
    send(&mut h, vec![deploy("cart", 1)]).await;
    drain(&mut h).await;
    assert_eq!(h.server.replicas("shop", "deployments", "cart").unwrap(), 2);
}

#[tokio::test]
async fn without_list_on_autoscalers_nothing_is_refused() {
    let server = cluster().await;
    server.forbid_listing_autoscalers();
    let mut h = harness_on(server, "on_conflict = \"refuse\"").await;
    send(&mut h, vec![deploy("checkout", 1)]).await;
    drain(&mut h).await;
    // Unknown is not a conflict: the decision is carried out, and the list is not retried.
    assert_eq!(
        h.server
            .replicas("shop", "deployments", "checkout")
            .unwrap(),
        3
    );
    assert_eq!(
        count(
            &h.server.requests(),
            &Method::GET,
            "horizontalpodautoscalers"
        ),
        1
    );
}
