//! Retries: what each protocol status means, how long is waited, and when it stops.

use super::*;

#[tokio::test]
async fn unavailable_twice_then_ok_is_delivered_once_after_two_retries() {
    let mock = Mock::new(vec![
        Answer::Grpc(Status::unavailable("warming up")),
        Answer::Grpc(Status::unavailable("still warming up")),
    ]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 4)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();

    assert_eq!(mock.seen().len(), 3);
    let t = tally(&exporter);
    assert_eq!(t.retries(), 2);
    assert_eq!(t.sent(), 4);
    assert_eq!(t.dropped(DropReason::PermanentError), 0);
}

#[tokio::test]
async fn resource_exhausted_with_retry_info_waits_as_told() {
    let mock = Mock::new(vec![Answer::Grpc(Status::with_error_details(
        Code::ResourceExhausted,
        "slow down",
        ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
    ))]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 2)]))
        .await
        .unwrap();
    mock.wait_for_requests(2).await;

    let seen = mock.seen();
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).retries(), 1);
    assert_eq!(tally(&exporter).sent(), 2);
}

#[tokio::test]
async fn resource_exhausted_without_retry_info_is_permanent() {
    let mock = Mock::new(vec![Answer::Grpc(Status::resource_exhausted("quota"))]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(tally(&exporter).dropped(DropReason::PermanentError), 3);
}

#[tokio::test]
async fn invalid_argument_is_not_retried() {
    let mock = Mock::new(vec![Answer::Grpc(Status::invalid_argument("bad span"))]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();

    assert_eq!(mock.seen().len(), 1);
    let t = tally(&exporter);
    assert_eq!(t.retries(), 0);
    assert_eq!(t.sent(), 0);
    assert_eq!(t.dropped(DropReason::PermanentError), 3);
}

#[tokio::test]
async fn http_429_with_retry_after_waits_as_told() {
    let mock = Mock::new(vec![Answer::Http {
        status: StatusCode::TOO_MANY_REQUESTS,
        retry_after: Some("1"),
    }]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 2)]))
        .await
        .unwrap();
    mock.wait_for_requests(2).await;

    let seen = mock.seen();
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(gap >= Duration::from_millis(990), "retried after {gap:?}");
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).retries(), 1);
    assert_eq!(tally(&exporter).sent(), 2);
}

#[tokio::test]
async fn http_503_and_502_are_retried() {
    let mock = Mock::new(vec![
        Answer::Http {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
        Answer::Http {
            status: StatusCode::BAD_GATEWAY,
            retry_after: None,
        },
    ]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 2)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 3);
    assert_eq!(tally(&exporter).retries(), 2);
    assert_eq!(tally(&exporter).sent(), 2);
}

#[tokio::test]
async fn http_400_is_not_retried() {
    let mock = Mock::new(vec![Answer::Http {
        status: StatusCode::BAD_REQUEST,
        retry_after: None,
    }]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(addr, FAST_RETRY)).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(tally(&exporter).retries(), 0);
    assert_eq!(tally(&exporter).dropped(DropReason::PermanentError), 3);
}

#[tokio::test]
async fn retries_stop_after_max_elapsed_time() {
    let script = (0..1000)
        .map(|_| Answer::Grpc(Status::unavailable("down")))
        .collect();
    let mock = Mock::new(script);
    let addr = grpc_server(&mock).await;
    let table = grpc_table(
        addr,
        r#"retry_on_failure = { initial_interval = "10ms", max_interval = "20ms", max_elapsed_time = "150ms" }"#,
    );
    let mut exporter = started(&table).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    let t = tally(&exporter);
    assert_eq!(t.dropped(DropReason::RetriesExhausted), 3);
    assert!(t.retries() >= 2, "{}", t.retries());
    assert_eq!(mock.seen().len() as u64, t.retries() + 1);
}

#[tokio::test]
async fn disabled_retries_drop_at_the_first_failure() {
    let mock = Mock::new(vec![Answer::Grpc(Status::unavailable("down"))]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "retry_on_failure = { enabled = false }")).await;
    exporter
        .export(signal(vec![resource("a", 3)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(tally(&exporter).dropped(DropReason::RetriesExhausted), 3);
}

#[tokio::test]
async fn partial_success_counts_the_rejected_spans() {
    let mock = Mock::new(vec![Answer::PartialSuccess {
        rejected: 2,
        message: "2 spans had no trace id",
    }]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "")).await;
    exporter
        .export(signal(vec![resource("a", 5)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    let t = tally(&exporter);
    assert_eq!(t.sent(), 3);
    assert_eq!(t.dropped(DropReason::Rejected), 2);
    assert_eq!(t.retries(), 0);

    let mock = Mock::new(vec![Answer::PartialSuccess {
        rejected: 1,
        message: "too old",
    }]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(addr, "")).await;
    exporter
        .export(signal(vec![resource("a", 4)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).sent(), 3);
    assert_eq!(tally(&exporter).dropped(DropReason::Rejected), 1);
}
