//! Leader election: of several replicas only the lease holder acts.

use super::*;

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
        server.replicas("shop", "deployments", "checkout").unwrap(),
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
        server.replicas("shop", "deployments", "checkout").unwrap(),
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
