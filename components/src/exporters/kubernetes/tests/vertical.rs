//! Vertical decisions: container resources in the pod template.

use super::*;

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
