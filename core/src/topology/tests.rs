use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::output::{Output, TrySendError};
use super::*;
use crate::config::load_str;
use crate::signal::Signal;
use crate::test_components::{aborts, outputs, sinks};

pub(crate) fn batch(spans: usize) -> Signal {
    Signal::Traces(crate::signal::Traces::new(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span::default(); spans],
            ..Default::default()
        }],
        ..Default::default()
    }]))
}

pub(crate) async fn start(text: &str) -> RunningTopology {
    let config = load_str(Path::new("test.toml"), text).unwrap();
    let health = Health::new();
    RunningTopology::start(config, health).await.unwrap()
}

pub(crate) fn output(key: &str) -> Output {
    outputs().lock().unwrap().get(key).cloned().unwrap()
}

/// Items and decisions a sink received.
pub(crate) fn sink(key: &str) -> (usize, Vec<String>) {
    let sinks = sinks().lock().unwrap();
    let mut spans = 0;
    let mut rules = Vec::new();
    for s in sinks.get(key).map(Vec::as_slice).unwrap_or_default() {
        match s {
            Signal::Traces(t) => spans += t.span_count(),
            Signal::Decisions(d) => rules.extend(d.iter().map(|d| d.rule.clone())),
        }
    }
    (spans, rules)
}

#[tokio::test]
async fn receivers_fan_in_and_shutdown_drains_every_queue() {
    let t = start(
        r#"
[receivers.t_source]
key = "fanin-a"
[receivers."t_source/b"]
key = "fanin-b"
[processors.t_rules]
[exporters.t_sink]
key = "fanin"
when_full = "block"
[pipelines.p]
receivers = ["t_source", "t_source/b"]
processors = ["t_rules"]
exporters = ["t_sink"]
queue_size = 2
"#,
    )
    .await;
    let (a, b) = (output("fanin-a"), output("fanin-b"));
    for _ in 0..50 {
        a.send(batch(3)).await.unwrap();
        b.send(batch(2)).await.unwrap();
    }
    drop((a, b));
    let report = t.shutdown().await;
    assert!(report.drained);
    let (spans, rules) = sink("fanin");
    assert_eq!(spans, 250);
    assert_eq!(
        rules,
        vec!["flush"],
        "the processor flushes once, into the sink"
    );
}

#[tokio::test]
async fn one_receiver_feeds_several_pipelines_and_exporters() {
    let t = start(
        r#"
[receivers.t_source]
key = "fanout"
[exporters.t_sink]
key = "fanout-1"
when_full = "block"
[exporters."t_sink/2"]
key = "fanout-2"
when_full = "block"
[exporters."t_sink/3"]
key = "fanout-3"
when_full = "block"
[pipelines.one]
receivers = ["t_source"]
exporters = ["t_sink", "t_sink/2"]
[pipelines.two]
receivers = ["t_source"]
exporters = ["t_sink/3"]
"#,
    )
    .await;
    let out = output("fanout");
    for _ in 0..10 {
        out.send(batch(1)).await.unwrap();
    }
    drop(out);
    assert!(t.shutdown().await.drained);
    assert_eq!(sink("fanout-1").0, 10);
    assert_eq!(sink("fanout-2").0, 10);
    assert_eq!(sink("fanout-3").0, 10);
}

#[tokio::test(start_paused = true)]
async fn a_blocking_exporter_pushes_back_to_the_receiver() {
    let t = start(
        r#"
[receivers.t_source]
key = "backpressure"
[exporters.t_sink]
key = "backpressure"
delay_ms = 1000
queue_size = 1
when_full = "block"
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
queue_size = 1
"#,
    )
    .await;
    let out = output("backpressure");
    let mut accepted = 0;
    let refused = loop {
        match out.try_send(batch(1)) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        tokio::task::yield_now().await;
        assert!(accepted < 100, "the pipeline never filled up");
    };
    assert!(matches!(refused, TrySendError::Full(_)));
    assert!(out.is_full());
    drop(out);
    assert!(t.shutdown().await.drained);
    assert_eq!(sink("backpressure").0, accepted, "nothing accepted is lost");
}

#[tokio::test(start_paused = true)]
async fn a_queue_holds_at_most_queue_items_and_a_larger_batch_alone() {
    let t = start(
        r#"
[receivers.t_source]
key = "items"
[processors.t_rules]
delay_ms = 1000
[exporters.t_sink]
key = "items"
when_full = "block"
[pipelines.p]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink"]
queue_items = 10
"#,
    )
    .await;
    let out = output("items");
    let full = |r: Result<(), TrySendError>| matches!(r, Err(TrySendError::Full(_)));
    // The first batch is taken at once; the processor then works on it for a second.
    out.try_send(batch(6)).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    out.try_send(batch(6)).unwrap();
    assert!(full(out.try_send(batch(6))), "12 items do not fit in 10");
    out.try_send(batch(4)).unwrap();
    assert!(full(out.try_send(batch(1))), "the queue holds 10 items");
    assert!(out.is_full());
    // Once the queue has drained, a batch larger than the whole bound goes in, alone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    out.try_send(batch(25)).unwrap();
    assert!(full(out.try_send(batch(1))));
    drop(out);
    assert!(t.shutdown().await.drained);
    assert_eq!(sink("items").0, 6 + 6 + 4 + 25, "nothing accepted is lost");
}

#[tokio::test(start_paused = true)]
async fn taps_see_exactly_the_batches_receivers_refuse() {
    let t = start(
        r#"
[receivers.t_source]
key = "taps"
[processors.t_rules]
tap = "taps"
delay_ms = 1000
[exporters.t_sink]
key = "taps"
when_full = "block"
[pipelines.p]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink"]
queue_size = 1
[pipelines.other]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    )
    .await;
    let tapped = || {
        crate::test_components::tapped()
            .lock()
            .unwrap()
            .get("taps")
            .copied()
    };
    let out = output("taps");
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20 {
        match out.try_send(batch(3)) {
            Ok(()) => accepted += 3,
            Err(TrySendError::Full(_)) => refused += 3,
            Err(e) => panic!("{e}"),
        }
        tokio::task::yield_now().await;
    }
    assert!(refused > 0, "the slow processor never filled its queue");
    assert_eq!(
        tapped(),
        Some(refused),
        "the tap sees every refused span, and only those"
    );
    // A refusal of the receiver's own, such as the memory limit, reaches the taps too.
    out.shed(&batch(2));
    assert_eq!(tapped(), Some(refused + 2));
    drop(out);
    assert!(t.shutdown().await.drained);
    assert_eq!(
        sink("taps").0,
        2 * accepted,
        "both pipelines deliver what was accepted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_dropping_exporter_does_not_stall_the_others() {
    let t = start(
        r#"
[receivers.t_source]
key = "isolation"
[exporters.t_sink]
key = "isolation-slow"
delay_ms = 1000
queue_size = 1
when_full = "drop_newest"
[exporters."t_sink/fast"]
key = "isolation-fast"
when_full = "block"
queue_size = 1000
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink", "t_sink/fast"]
"#,
    )
    .await;
    let out = output("isolation");
    for _ in 0..200 {
        out.send(batch(1)).await.unwrap();
    }
    drop(out);
    assert!(t.shutdown().await.drained);
    assert_eq!(sink("isolation-fast").0, 200);
    let slow = sink("isolation-slow").0;
    assert!(
        slow < 200,
        "the slow exporter's queue should have dropped some ({slow})"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_shutdown() {
    let t = start(
        r#"
[receivers.t_source]
key = "deadline"
[exporters.t_sink]
key = "deadline"
delay_ms = 10000
when_full = "block"
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
[service]
shutdown_deadline = "3s"
"#,
    )
    .await;
    let out = output("deadline");
    for _ in 0..5 {
        out.send(batch(1)).await.unwrap();
    }
    drop(out);
    let begun = Instant::now();
    let report = t.shutdown().await;
    assert!(!report.drained);
    assert!(
        begun.elapsed() <= Duration::from_secs(5),
        "{:?}",
        begun.elapsed()
    );
}

/// Every queue drains in time, but an exporter gave up on what it held: the shutdown is not
/// complete, so the process exits 1 and a supervisor sees the loss.
#[tokio::test]
async fn an_exporter_that_fails_its_shutdown_makes_it_incomplete() {
    let t = start(
        r#"
[receivers.t_source]
key = "lossy"
[exporters.t_sink]
key = "lossy"
fail_shutdown = true
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    )
    .await;
    output("lossy").send(batch(1)).await.unwrap();
    assert!(!t.shutdown().await.drained);
}

#[tokio::test]
async fn a_receiver_that_fails_the_run_is_reported_once_and_what_it_sent_is_delivered() {
    let t = start(
        r#"
[receivers.t_source]
key = "failing"
[exporters.t_sink]
key = "failing"
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    )
    .await;
    let failed = t.failed();
    output("failing").send(batch(3)).await.unwrap();
    let abort = aborts().lock().unwrap().get("failing").cloned().unwrap();
    abort.fail(ComponentError::other("line 7 is broken"));
    abort.fail(ComponentError::other("a later error"));
    failed.await;
    let (id, err) = t.take_failure().unwrap();
    assert_eq!(id.to_string(), "t_source");
    assert_eq!(err.to_string(), "line 7 is broken");
    assert!(t.take_failure().is_none());
    assert!(t.shutdown().await.drained);
    assert_eq!(sink("failing").0, 3);
}

#[tokio::test(start_paused = true)]
async fn processors_tick_on_the_engine_clock() {
    let t = start(
        r#"
[receivers.t_source]
key = "tick"
[processors.t_rules]
tick_ms = 1000
[exporters.t_sink]
key = "tick"
when_full = "block"
[pipelines.p]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink"]
"#,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (_, rules) = sink("tick");
    assert_eq!(rules, vec!["tick"; 3]);
    drop(output("tick"));
    outputs().lock().unwrap().remove("tick");
    assert!(t.shutdown().await.drained);
}

#[tokio::test]
async fn signals_a_processor_does_not_take_pass_it_by() {
    let t = start(
        r#"
[receivers.t_source]
key = "bypass"
[processors.t_rules]
decide_every = 10
[processors.t_decide]
[exporters.t_sink]
key = "bypass"
when_full = "block"
[pipelines.p]
receivers = ["t_source"]
processors = ["t_rules", "t_decide"]
exporters = ["t_sink"]
"#,
    )
    .await;
    let out = output("bypass");
    for _ in 0..4 {
        out.send(batch(5)).await.unwrap();
    }
    drop(out);
    assert!(t.shutdown().await.drained);
    let (spans, rules) = sink("bypass");
    assert_eq!(spans, 20);
    assert_eq!(rules, vec!["every", "every", "flush"]);
}

#[tokio::test]
async fn a_pipeline_ends_by_itself_when_its_receivers_are_done() {
    let mut t = start(
        r#"
[receivers.t_source]
key = "finish"
[exporters.t_sink]
key = "finish"
when_full = "block"
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    )
    .await;
    let out = outputs().lock().unwrap().remove("finish").unwrap();
    out.send(batch(7)).await.unwrap();
    drop(out);
    tokio::time::timeout(Duration::from_secs(10), t.finished())
        .await
        .unwrap();
    assert_eq!(sink("finish").0, 7);
    assert!(t.shutdown().await.drained);
}

#[tokio::test]
async fn settle_returns_once_every_stage_has_handled_what_was_sent_before_it() {
    let t = start(
        r#"
[receivers.t_source]
key = "settle"
[processors.t_rules]
delay_ms = 5
decide_every = 10
[exporters.t_sink]
key = "settle"
delay_ms = 5
when_full = "block"
[exporters."t_sink/other"]
key = "settle-other"
delay_ms = 1
when_full = "block"
[pipelines.p]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink", "t_sink/other"]
queue_size = 2
"#,
    )
    .await;
    let out = output("settle");
    for round in 1..=3usize {
        for _ in 0..4 {
            out.send(batch(5)).await.unwrap();
        }
        out.settle().await.unwrap();
        // Nothing is in flight: both exporters hold exactly what was sent, and the decisions
        // those spans caused.
        for key in ["settle", "settle-other"] {
            let (spans, rules) = sink(key);
            assert_eq!(spans, 20 * round, "{key} after round {round}");
            assert_eq!(rules.len(), 2 * round, "{key} after round {round}");
        }
    }
    drop(out);
    assert!(t.shutdown().await.drained);
}

#[tokio::test]
async fn settle_is_not_held_up_by_a_full_dropping_exporter() {
    let t = start(
        r#"
[receivers.t_source]
key = "settle-drop"
[exporters.t_sink]
key = "settle-drop"
delay_ms = 200
queue_size = 1
when_full = "drop_newest"
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
"#,
    )
    .await;
    let out = output("settle-drop");
    for _ in 0..5 {
        out.send(batch(1)).await.unwrap();
    }
    out.settle().await.unwrap();
    drop(out);
    assert!(t.shutdown().await.drained);
}

#[tokio::test(start_paused = true)]
async fn exporters_block_by_default_so_nothing_accepted_is_lost() {
    let t = start(
        r#"
[receivers.t_source]
key = "default-block"
[exporters.t_sink]
key = "default-block"
delay_ms = 10
queue_size = 1
[pipelines.p]
receivers = ["t_source"]
exporters = ["t_sink"]
queue_size = 1
"#,
    )
    .await;
    let out = output("default-block");
    let mut refused = 0;
    for _ in 0..100 {
        if out.try_send(batch(1)).is_err() {
            refused += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(out);
    assert!(t.shutdown().await.drained);
    assert!(refused > 0, "a full pipeline pushes back to the receiver");
    assert_eq!(
        sink("default-block").0,
        100 - refused,
        "every batch the receiver accepted was exported"
    );
}

#[tokio::test]
async fn an_exporter_gets_only_the_signals_it_is_limited_to() {
    let t = start(
        r#"
[receivers.t_source]
key = "signals"
[processors.t_rules]
decide_every = 5
[exporters."t_sink/all"]
key = "signals-all"
[exporters."t_sink/decisions"]
key = "signals-decisions"
signals = ["decisions"]
[pipelines.p]
receivers = ["t_source"]
processors = ["t_rules"]
exporters = ["t_sink/all", "t_sink/decisions"]
"#,
    )
    .await;
    let out = output("signals");
    for _ in 0..4 {
        out.send(batch(5)).await.unwrap();
    }
    drop(out);
    assert!(t.shutdown().await.drained);
    let (spans, decisions) = sink("signals-all");
    assert_eq!(spans, 20);
    assert!(!decisions.is_empty());
    let (spans, only) = sink("signals-decisions");
    assert_eq!(
        spans, 0,
        "no trace batch reached the decisions-only exporter"
    );
    assert_eq!(only, decisions);
}
