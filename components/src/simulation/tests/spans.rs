//! The spans a simulation sends: one SERVER span per visit, its queue span, and the CLIENT
//! span of its caller, as OTLP a trace-driven scaler reads.

use super::super::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

#[test]
fn queueing_becomes_a_child_span_inside_the_visit() {
    let shape = SpanShape {
        client_spans: false,
        queue_spans: true,
    };
    let mut b = OtlpBuilder::with_shape("shop", 1_000, shape);
    b.push(&SimSpan {
        trace_id: [1; 16],
        span_id: [2; 8],
        parent_span_id: Some([3; 8]),
        caller: Some("frontend"),
        service: "worker",
        operation: "CartService/GetCart",
        sent: 10,
        start: 10,
        started: 30,
        end: 100,
        error: false,
        rejected: false,
        replica: 0,
        caller_replica: 0,
    });
    let t = b.take();
    assert!(b.is_empty());
    assert_eq!(t.span_count(), 2);
    let spans = &t.resource_spans[0].scope_spans[0].spans;
    let queue = &spans[0];
    let server = &spans[1];
    assert_eq!(queue.name, "queue");
    assert_eq!(queue.parent_span_id, server.span_id);
    assert_eq!(
        (queue.start_time_unix_nano, queue.end_time_unix_nano),
        (1_010, 1_030)
    );
    assert_eq!(
        (server.start_time_unix_nano, server.end_time_unix_nano),
        (1_010, 1_100)
    );
    assert_eq!(server.parent_span_id, vec![3; 8]);
    assert_ne!(queue.span_id, server.span_id);
}

#[test]
fn a_visit_that_waited_then_failed_keeps_its_queue_span_and_a_rejected_one_has_none() {
    let shape = SpanShape {
        client_spans: false,
        queue_spans: true,
    };
    let mut b = OtlpBuilder::with_shape("shop", 0, shape);
    let visit = |span: u8, started, rejected| SimSpan {
        trace_id: [1; 16],
        span_id: [span; 8],
        parent_span_id: None,
        caller: None,
        service: "preserve",
        operation: "POST /preserve",
        sent: 0,
        start: 0,
        started,
        end: 900,
        error: true,
        rejected,
        replica: 0,
        caller_replica: 0,
    };
    // Waited 800 for a slot, then a call it made was turned away: without its queue span the
    // wait would read as its own work.
    b.push(&visit(2, 800, false));
    b.push(&visit(3, 0, true));
    let t = b.take();
    let spans = &t.resource_spans[0].scope_spans[0].spans;
    let queues: Vec<_> = spans.iter().filter(|s| s.name == "queue").collect();
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].parent_span_id, vec![2; 8]);
    assert_eq!(queues[0].end_time_unix_nano, 800);
    let messages: Vec<_> = spans
        .iter()
        .filter_map(|s| s.status.as_ref().map(|st| st.message.as_str()))
        .collect();
    assert_eq!(
        messages,
        ["failed: a call it made failed", "rejected: queue full"]
    );
}

/// With CLIENT spans and no queue spans, a called visit's wait is the gap between the caller's
/// CLIENT span and the callee's SERVER span, and the trace tree attributes it to the callee.
#[test]
fn a_call_becomes_a_client_and_a_server_span_and_its_wait_is_the_gap() {
    let shape = SpanShape {
        client_spans: true,
        queue_spans: false,
    };
    let mut b = OtlpBuilder::with_shape("shop", 1_000, shape);
    let visit = |span_id: [u8; 8], parent, caller, service, start, started, end| SimSpan {
        trace_id: [1; 16],
        span_id,
        parent_span_id: parent,
        caller,
        service,
        operation: "op",
        sent: start,
        start,
        started,
        end,
        error: false,
        rejected: false,
        replica: 0,
        caller_replica: 0,
    };
    b.push(&visit(
        [2; 8],
        Some([1; 8]),
        Some("frontend"),
        "worker",
        10,
        50,
        150,
    ));
    b.push(&visit([1; 8], None, None, "frontend", 0, 0, 200));
    let traces = b.take();
    assert_eq!(traces.span_count(), 3, "root SERVER, CLIENT, callee SERVER");
    let spans: Vec<_> = traces
        .resource_spans
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().flat_map(|ss| ss.spans.iter()))
        .collect();
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32 && s.span_id == vec![2; 8])
        .unwrap();
    assert_eq!(server.parent_span_id, client.span_id);
    assert_eq!(client.parent_span_id, vec![1; 8]);
    assert_eq!(
        server.start_time_unix_nano, 1_050,
        "the SERVER span starts with a slot"
    );
    assert_eq!(client.start_time_unix_nano, 1_010);

    let mut catalog = crate::tracetree::SpanCatalog::new(Default::default());
    let mut records = Vec::new();
    catalog.extract(&traces.resource_spans, &mut records);
    let analysis = crate::tracetree::analyze(&records).unwrap();
    let worker = catalog.service_symbol("worker").unwrap();
    let frontend = catalog.service_symbol("frontend").unwrap();
    let w = analysis.breakdown.service(worker).unwrap();
    assert_eq!((w.queueing, w.own), (40, 100));
    assert_eq!(analysis.breakdown.service(frontend).unwrap().own, 60);
}

#[test]
fn a_statefulset_names_itself_in_the_resource() {
    let mut b =
        OtlpBuilder::new("shop", 0).with_kinds([("db".to_string(), WorkloadKind::StatefulSet)]);
    for service in ["db", "worker"] {
        b.push(&SimSpan {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: None,
            caller: None,
            service,
            operation: "op",
            sent: 0,
            start: 0,
            started: 0,
            end: 10,
            error: false,
            rejected: false,
            replica: 0,
            caller_replica: 0,
        });
    }
    let t = b.take();
    let attributes = |i: usize| -> Vec<String> {
        t.resource_spans[i]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.clone())
            .collect()
    };
    // By service name: db, then worker.
    assert!(attributes(0).contains(&"k8s.statefulset.name".to_string()));
    assert!(!attributes(0).contains(&"k8s.deployment.name".to_string()));
    assert!(attributes(1).contains(&"k8s.deployment.name".to_string()));
}
