//! Start, flush and shutdown: the deadline, what is dropped and counted, and the exit status.

use super::*;

#[tokio::test]
async fn shutdown_drains_the_buffer() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "timeout = \"1h\"")).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter
        .export(signal(vec![resource("b", 4)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(mock.seen().is_empty());

    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(
        mock.spans(),
        span_names(&[resource("a", 3), resource("b", 4)])
    );
    assert_eq!(tally(&exporter).sent(), 7);
    // Idempotent, and the exporter takes nothing more.
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert!(
        exporter
            .export(signal(vec![resource("c", 1)]))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn shutdown_retries_until_the_deadline() {
    // The server is down for the first attempts of the drain, then recovers.
    let mock = Mock::new(vec![
        Answer::Grpc(Status::unavailable("restarting")),
        Answer::Grpc(Status::unavailable("restarting")),
    ]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(
        addr,
        &format!("timeout = \"1h\"\n{FAST_RETRY}"),
    ))
    .await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).sent(), 3);
    assert_eq!(tally(&exporter).retries(), 2);
}

#[tokio::test]
async fn shutdown_gives_up_by_its_deadline_when_nothing_listens() {
    let addr = closed_port().await;
    for table in [grpc_table(addr, ""), http_table(addr, "")] {
        let mut exporter = started(&table).await;
        exporter
            .export(signal(vec![resource("a", 6)]))
            .await
            .unwrap();
        let began = std::time::Instant::now();
        let err = exporter
            .shutdown(Instant::now() + Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("6 spans could not be sent"),
            "{table}: {err}"
        );
        let took = began.elapsed();
        assert!(took < Duration::from_millis(1500), "{table}: {took:?}");
        assert_eq!(tally(&exporter).dropped(DropReason::Shutdown), 6, "{table}");
        exporter.shutdown(in_secs(1)).await.unwrap();
    }
}

#[tokio::test]
async fn shutdown_gives_up_by_its_deadline_when_the_server_hangs() {
    let mock = Mock::new(vec![]);
    mock.gate.forget_permits(mock.gate.available_permits());
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "send_batch_size = 4\ntimeout = \"1h\"")).await;
    // One request hangs, a second batch waits behind it.
    exporter
        .export(signal(vec![resource("a", 4), resource("b", 3)]))
        .await
        .unwrap();
    mock.wait_for_requests(1).await;
    let began = std::time::Instant::now();
    // Giving up on spans it held is an error, which the engine turns into exit status 1.
    let err = exporter
        .shutdown(Instant::now() + Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("7 spans could not be sent"),
        "{err}"
    );
    assert!(began.elapsed() < Duration::from_millis(1500));
    assert_eq!(tally(&exporter).dropped(DropReason::Shutdown), 7);
    assert_eq!(tally(&exporter).sent(), 0);
}

#[tokio::test]
async fn shutdown_before_start_and_export_before_start() {
    let mut exporter = OtlpExporter::new(settings("endpoint = \"http://127.0.0.1:4317\""));
    assert!(
        exporter
            .export(signal(vec![resource("a", 1)]))
            .await
            .is_err()
    );
    exporter.shutdown(in_secs(1)).await.unwrap();
    exporter.shutdown(in_secs(1)).await.unwrap();
}

#[tokio::test]
async fn empty_batches_are_accepted_and_send_nothing() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "timeout = \"10ms\"")).await;
    exporter.export(signal(vec![])).await.unwrap();
    exporter
        .export(signal(vec![resource("a", 0)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert!(mock.seen().is_empty());
}
