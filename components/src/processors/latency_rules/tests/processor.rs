//! The processor on tokio's paused clock: firing on arrival, taps, passthrough and readiness.

use super::*;

const PROCESSOR: &str = r#"
interval = "1s"
allowed_lateness = "5s"
stale_after = "30s"

[[rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 3
window = "10s"
scale = { target = "statefulset/payments-db", namespace = "shop", step = 1, max = 5 }
scale_down = { below = "100ms", for = "1m", step = 1 }
"#;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap()
}

fn context(health: &Health) -> ProcessorContext {
    let id = ComponentId::parse("latency_rules").unwrap();
    ProcessorContext {
        telemetry: ComponentTelemetry::new(ComponentKind::Processor, &id),
        health: health.handle("processor/scaling/latency_rules"),
        pipeline: "scaling".into(),
        id,
    }
}

fn decisions(out: &mut Emitter) -> (Vec<Decision>, usize) {
    let mut decisions = Vec::new();
    let mut spans = 0;
    for signal in out.take() {
        match signal {
            Signal::Decisions(d) => decisions.extend(d),
            Signal::Traces(t) => spans += t.span_count(),
        }
    }
    (decisions, spans)
}

/// A batch of `n` payments-db spans of `ms` that ended `ago` before the processor's clock.
fn db_batch(base: u64, n: usize, ms: u64) -> Signal {
    Signal::Traces(batch("payments-db", spans("INSERT payments", n, base, ms)))
}

#[tokio::test(start_paused = true)]
async fn the_processor_fires_on_arrival_and_passes_traces_on() {
    let health = Health::new();
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&health)).await.unwrap();
    let base = unix_now();
    let mut out = Emitter::new();
    p.process(db_batch(base, 2, 500), &mut out).await.unwrap();
    let (d, spans) = decisions(&mut out);
    assert!(d.is_empty());
    assert_eq!(spans, 2);
    p.process(db_batch(base, 1, 500), &mut out).await.unwrap();
    let (d, spans) = decisions(&mut out);
    assert_eq!(d.len(), 1);
    assert_eq!(spans, 1);
    assert_eq!(d[0].target.kind, "StatefulSet");
    assert_eq!(d[0].target.to_string(), "shop/statefulset/payments-db");
    assert_eq!(
        d[0].limits,
        ReplicaLimits {
            min: Some(1),
            max: Some(5)
        }
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    p.shutdown(&mut out, deadline).await.unwrap();
    p.shutdown(&mut out, deadline).await.unwrap();
    assert!(out.take().is_empty());
}

#[tokio::test(start_paused = true)]
async fn refused_spans_count_through_the_tap_and_a_retry_counts_once() {
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    let tap = p.tap().expect("the processor offers a tap by default");
    let base = unix_now();
    let batch_of_two = db_batch(base, 2, 500);
    tap.refused(&batch_of_two);
    // The client retries: refused again, then let in.
    tap.refused(&batch_of_two);
    let mut out = Emitter::new();
    p.process(batch_of_two, &mut out).await.unwrap();
    let (d, spans) = decisions(&mut out);
    assert!(
        d.is_empty(),
        "two breaches counted once each stay below count = 3"
    );
    assert_eq!(spans, 2, "the accepted batch still passes on");

    // A third breach that is only ever refused: the rule fires, and since a tap cannot emit,
    // the decision leaves with the next tick.
    let third = Signal::Traces(batch(
        "payments-db",
        vec![span_in("INSERT payments", base, 500, 9)],
    ));
    tap.refused(&third);
    tokio::time::advance(Duration::from_secs(1)).await;
    p.tick(&mut out).await.unwrap();
    let (d, _) = decisions(&mut out);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].target.to_string(), "shop/statefulset/payments-db");
    assert_eq!(d[0].evidence.breaches, 3);
}

#[tokio::test]
async fn observe_refused_false_offers_no_tap() {
    let p = build(&format!("observe_refused = false\n{PROCESSOR}")).unwrap();
    assert!(p.tap().is_none());
    assert!(build_error("max_refused_ids = 0").contains("max_refused_ids"));
}

#[tokio::test(start_paused = true)]
async fn on_event_time_scale_downs_follow_span_time_not_the_wall_clock() {
    let mut p = build(&format!("clock = \"event\"\n{PROCESSOR}")).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    // A minute and a half of calm, fast spans, replayed in an instant of wall time, with no
    // tick at all: the scale-down (below 100 ms for 1 m) is decided as the spans cross it.
    let base = unix_now();
    let mut out = Emitter::new();
    let mut downs = Vec::new();
    for second in 0..90 {
        p.process(db_batch(base + second * SEC, 5, 20), &mut out)
            .await
            .unwrap();
        let (d, _) = decisions(&mut out);
        downs.extend(d.into_iter().map(|d| (second, d.change)));
    }
    assert_eq!(downs.len(), 1, "{downs:?}");
    let (second, change) = downs[0];
    assert_eq!(change, ScaleChange::Step(-1));
    assert!(
        (60..=62).contains(&second),
        "decided at {second} s of span time"
    );
    // The wall-clock tick evaluates nothing on event time.
    tokio::time::advance(Duration::from_secs(3600)).await;
    p.tick(&mut out).await.unwrap();
    assert!(decisions(&mut out).0.is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_passthrough_only_decisions_leave() {
    let mut p = build(&format!("passthrough = false\n{PROCESSOR}")).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    let mut out = Emitter::new();
    p.process(db_batch(unix_now(), 3, 500), &mut out)
        .await
        .unwrap();
    let (d, spans) = decisions(&mut out);
    assert_eq!((d.len(), spans), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn windows_slide_on_the_engine_clock() {
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    let base = unix_now();
    let mut out = Emitter::new();
    p.process(db_batch(base, 2, 500), &mut out).await.unwrap();
    // 20 s pass with no spans: the two breaches have left the window.
    for _ in 0..20 {
        tokio::time::advance(Duration::from_secs(1)).await;
        p.tick(&mut out).await.unwrap();
    }
    let now = base + 20 * SEC;
    p.process(db_batch(now, 1, 500), &mut out).await.unwrap();
    assert!(decisions(&mut out).0.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_processor_scales_down_after_the_period_and_a_stale_operation_holds_in_readyz() {
    let health = Health::new();
    health.set_phase(tracescale_core::health::Phase::Running);
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&health)).await.unwrap();
    let base = unix_now();
    let mut out = Emitter::new();
    let mut downs = Vec::new();
    // Two minutes of fast spans: one scale-down per minute-long period.
    for s in 0..=120u64 {
        p.process(db_batch(base + s * SEC, 1, 20), &mut out)
            .await
            .unwrap();
        p.tick(&mut out).await.unwrap();
        let (d, _) = decisions(&mut out);
        downs.extend(d.iter().map(|d| (s, d.change)));
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!(downs.len(), 2, "{downs:?}");
    assert!(downs.iter().all(|(_, c)| *c == ScaleChange::Step(-1)));
    // Not before a whole minute of calm was seen, from the start.
    assert_eq!((downs[0].0, downs[1].0), (60, 120), "{downs:?}");

    // Then silence: the rule goes stale, holds, and /readyz says so without going unready.
    for _ in 0..180 {
        p.tick(&mut out).await.unwrap();
        assert!(decisions(&mut out).0.is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let readiness = health.readiness();
    assert!(readiness.ready);
    let status = &readiness.components["processor/scaling/latency_rules"];
    assert!(status.ready);
    let detail = status.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("db-slow") && detail.contains("stale"),
        "{detail}"
    );

    // Spans again: the detail clears.
    let now = unix_now() + 300 * SEC;
    p.process(db_batch(now, 1, 20), &mut out).await.unwrap();
    p.tick(&mut out).await.unwrap();
    let readiness = health.readiness();
    assert_eq!(
        readiness.components["processor/scaling/latency_rules"].detail,
        None
    );
}

#[tokio::test(start_paused = true)]
async fn decisions_batches_pass_through_untouched() {
    let mut p = build(PROCESSOR).unwrap();
    p.start(&context(&Health::new())).await.unwrap();
    let mut out = Emitter::new();
    let d = Decision {
        target: target("x"),
        change: ScaleChange::Step(1),
        limits: ReplicaLimits::default(),
        rule: "upstream".into(),
        reason: "test".into(),
        evidence: Default::default(),
        resources: None,
        timestamp_unix_nano: 1,
    };
    p.process(Signal::Decisions(vec![d.clone()]), &mut out)
        .await
        .unwrap();
    assert_eq!(out.take(), vec![Signal::Decisions(vec![d])]);
}

#[test]
fn latencies_read_well() {
    assert_eq!(latency(Duration::from_millis(300)), "300ms");
    assert_eq!(latency(Duration::from_micros(1250)), "1.25ms");
    assert_eq!(latency(Duration::from_micros(250)), "250µs");
    assert_eq!(latency(Duration::from_secs(300)), "5m");
    assert_eq!(latency(Duration::from_secs(12)), "12s");
    assert_eq!(latency(Duration::from_secs(8)), "8s");
    assert_eq!(latency(Duration::from_millis(1500)), "1.5s");
    assert_eq!(latency(Duration::ZERO), "0ms");
}
