//! Spans arrive intact and batched: over gRPC and HTTP, compressed, cut and merged at send_batch_size.

use super::*;

// ---------------------------------------------------------------------------------------------
// Delivery

#[tokio::test]
async fn spans_arrive_intact_over_grpc_gzipped_with_headers() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(
        addr,
        "timeout = \"20ms\"\nheaders = { x-tenant = \"team-a\" }",
    ))
    .await;
    let sent = vec![resource("checkout", 3), resource("payments", 2)];
    exporter.export(signal(sent.clone())).await.unwrap();
    mock.wait_for_requests(1).await;

    let seen = mock.seen();
    assert_eq!(
        seen[0].resource_spans, sent,
        "spans, resources and scopes intact"
    );
    assert_eq!(seen[0].encoding.as_deref(), Some("gzip"));
    assert_eq!(seen[0].tenant.as_deref(), Some("team-a"));
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).sent(), 5);
}

#[tokio::test]
async fn spans_arrive_intact_over_http_gzipped_with_headers() {
    let mock = Mock::new(vec![]);
    let addr = http_server(&mock).await;
    let mut exporter = started(&http_table(
        addr,
        "timeout = \"20ms\"\nheaders = { x-tenant = \"team-b\" }",
    ))
    .await;
    let sent = vec![resource("checkout", 4), resource("payments", 1)];
    exporter.export(signal(sent.clone())).await.unwrap();
    mock.wait_for_requests(1).await;

    let seen = mock.seen();
    assert_eq!(seen[0].resource_spans, sent);
    assert_eq!(seen[0].path, "/v1/traces");
    assert_eq!(seen[0].encoding.as_deref(), Some("gzip"));
    assert_eq!(
        seen[0].content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(seen[0].tenant.as_deref(), Some("team-b"));
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(tally(&exporter).sent(), 5);
}

#[tokio::test]
async fn compression_can_be_zstd_or_off() {
    let mock = Mock::new(vec![]);
    let grpc = grpc_server(&mock).await;
    let http = http_server(&mock).await;
    for (table, want) in [
        (grpc_table(grpc, "compression = \"zstd\""), Some("zstd")),
        (grpc_table(grpc, "compression = \"none\""), None),
        (http_table(http, "compression = \"zstd\""), Some("zstd")),
        (http_table(http, "compression = \"none\""), None),
    ] {
        let before = mock.seen().len();
        let mut exporter = started(&table).await;
        exporter
            .export(signal(vec![resource("svc", 2)]))
            .await
            .unwrap();
        exporter.shutdown(in_secs(5)).await.unwrap();
        let seen = mock.seen();
        assert_eq!(seen.len(), before + 1, "{table}");
        let encoding = seen[before]
            .encoding
            .as_deref()
            .filter(|e| *e != "identity");
        assert_eq!(encoding, want, "{table}");
        assert_eq!(span_names(&seen[before].resource_spans).len(), 2);
    }
}

#[tokio::test]
async fn an_http_endpoint_path_is_a_prefix() {
    let mock = Mock::new(vec![]);
    let addr = http_server(&mock).await;
    let table = format!("endpoint = \"http://{addr}/prefix/\"\nprotocol = \"http/protobuf\"\n");
    let mut exporter = started(&table).await;
    exporter
        .export(signal(vec![resource("svc", 1)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen()[0].path, "/prefix/v1/traces");
}

// ---------------------------------------------------------------------------------------------
// Batching

#[tokio::test]
async fn batches_are_cut_at_send_batch_size_keeping_resource_and_scope() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "send_batch_size = 10\ntimeout = \"1h\"")).await;
    // One batch of 25 spans over two resources: requests of 10, 10, then 5 at shutdown.
    exporter
        .export(signal(vec![resource("a", 12), resource("b", 13)]))
        .await
        .unwrap();
    mock.wait_for_requests(2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(mock.seen().len(), 2, "the rest waits for more spans");

    exporter.shutdown(in_secs(5)).await.unwrap();
    let seen = mock.seen();
    let sizes: Vec<_> = seen.iter().map(|s| count(&s.resource_spans)).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    // The second request starts inside resource "a" and ends inside resource "b".
    let second = &seen[1].resource_spans;
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].resource, resource("a", 0).resource);
    assert_eq!(
        second[0].scope_spans[0].scope,
        resource("a", 0).scope_spans[0].scope
    );
    assert_eq!(second[1].resource, resource("b", 0).resource);
    assert_eq!(second[0].schema_url, resource("a", 0).schema_url);
    let want: Vec<_> = span_names(&[resource("a", 12), resource("b", 13)]);
    assert_eq!(mock.spans(), want, "every span once, in order");
    assert_eq!(tally(&exporter).sent(), 25);
}

#[tokio::test]
async fn small_batches_are_merged_up_to_send_batch_size() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(addr, "send_batch_size = 10\ntimeout = \"1h\"")).await;
    for (service, n) in [("a", 3), ("b", 3), ("c", 4)] {
        exporter
            .export(signal(vec![resource(service, n)]))
            .await
            .unwrap();
    }
    mock.wait_for_requests(1).await;
    let seen = mock.seen();
    assert_eq!(count(&seen[0].resource_spans), 10);
    assert_eq!(seen[0].resource_spans.len(), 3);
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn a_partial_batch_is_sent_when_the_timeout_passes() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(
        addr,
        "send_batch_size = 1000\ntimeout = \"150ms\"",
    ))
    .await;
    let exported = std::time::Instant::now();
    exporter
        .export(signal(vec![resource("a", 5)]))
        .await
        .unwrap();
    mock.wait_for_requests(1).await;
    let waited = mock.seen()[0].at.duration_since(exported);
    assert!(waited >= Duration::from_millis(140), "{waited:?}");
    assert_eq!(count(&mock.seen()[0].resource_spans), 5);
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
}

/// A flush (the disk buffer asks for one before it acknowledges what it read) sends the
/// partial batch at once rather than after `timeout`.
#[tokio::test]
async fn a_flush_sends_the_partial_batch_without_waiting_for_the_timeout() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    let mut exporter = started(&grpc_table(
        addr,
        "send_batch_size = 1000\ntimeout = \"1h\"",
    ))
    .await;
    for n in [3, 4] {
        exporter
            .export(signal(vec![resource("a", n)]))
            .await
            .unwrap();
    }
    // The guard only turns a flush that waits for the hour into a failure, not a hang.
    tokio::time::timeout(Duration::from_secs(60), exporter.flush())
        .await
        .expect("the flush waited for the batch timeout")
        .unwrap();
    assert_eq!(mock.seen().len(), 1);
    assert_eq!(count(&mock.seen()[0].resource_spans), 7);
    exporter.shutdown(in_secs(5)).await.unwrap();
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn export_waits_when_the_buffer_is_full() {
    let mock = Mock::new(vec![]);
    let addr = grpc_server(&mock).await;
    // A buffer of 2 × 5 spans; the server holds every request until the gate opens.
    let gate_permits = mock.gate.available_permits();
    mock.gate.forget_permits(gate_permits);
    let mut exporter = started(&grpc_table(addr, "send_batch_size = 5\ntimeout = \"1h\"")).await;
    exporter
        .export(signal(vec![resource("a", 5)]))
        .await
        .unwrap();
    mock.wait_for_requests(1).await;
    exporter
        .export(signal(vec![resource("b", 5)]))
        .await
        .unwrap();
    let blocked = tokio::time::timeout(
        Duration::from_millis(200),
        exporter.export(signal(vec![resource("lost", 5)])),
    )
    .await;
    assert!(blocked.is_err(), "export returned with a full buffer");

    mock.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    exporter
        .export(signal(vec![resource("c", 5)]))
        .await
        .unwrap();
    exporter.shutdown(in_secs(5)).await.unwrap();
    // The export that was cancelled while waiting handed nothing over.
    let want = span_names(&[resource("a", 5), resource("b", 5), resource("c", 5)]);
    assert_eq!(mock.spans(), want);
}
