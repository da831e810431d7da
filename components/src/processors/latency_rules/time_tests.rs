//! The periods after a start, and staleness, as an operator sees them: the processor driven
//! on tokio's paused clock the way the engine drives it (a tick every `interval`, the first one
//! `interval` after start), spans arriving as a service sends them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::time::Instant;
use tracescale_core::component::{
    ComponentKind, ComponentTelemetry, Emitter, Processor, ProcessorContext,
};
use tracescale_core::config::{Built, ComponentId, build_from_toml};
use tracescale_core::health::{Health, Phase};
use tracescale_core::registry;
use tracescale_core::signal::{Decision, Signal, Traces};

const MS: u64 = 1_000_000;

fn processor(toml: &str) -> Box<dyn Processor> {
    let factory = registry::lookup(ComponentKind::Processor, "latency_rules")
        .expect("latency_rules is registered");
    match build_from_toml(factory, "latency_rules", toml) {
        Ok(Built::Processor(p)) => p,
        Ok(_) => panic!("not a processor"),
        Err(e) => panic!("{}", e.render(false)),
    }
}

fn context(health: &Health) -> ProcessorContext {
    let id = ComponentId::parse("latency_rules").expect("a valid id");
    ProcessorContext {
        telemetry: ComponentTelemetry::new(ComponentKind::Processor, &id),
        health: health.handle("processor/scaling/latency_rules"),
        pipeline: "scaling".into(),
        id,
    }
}

/// One span of `ms` milliseconds of payments-db that ended at `end` (Unix nanoseconds).
fn batch(end: u64, ms: u64) -> Signal {
    Signal::Traces(Traces::new(vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("payments-db".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![1; 16],
                span_id: vec![1; 8],
                name: "INSERT payments".into(),
                start_time_unix_nano: end - ms * MS,
                end_time_unix_nano: end,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }]))
}

fn decisions(out: &mut Emitter) -> Vec<Decision> {
    out.take()
        .into_iter()
        .filter_map(|s| match s {
            Signal::Decisions(d) => Some(d),
            Signal::Traces(_) => None,
        })
        .flatten()
        .collect()
}

fn config(period: &str, stale_after: &str) -> String {
    format!(
        r#"
interval = "1s"
allowed_lateness = "5s"
stale_after = "{stale_after}"

[[rules]]
name = "db-slow"
service = "payments-db"
operation = "INSERT payments"
above = "300ms"
count = 3
window = "10s"
scale = {{ target = "statefulset/payments-db", namespace = "shop", step = 1, max = 5 }}
scale_down = {{ below = "100ms", for = "{period}", step = 1 }}
"#
    )
}

/// What happened to a processor run for `run_for`, fed a fast span every 100 ms from
/// `traffic_from` to `traffic_until` after its start.
#[derive(Debug, Default)]
struct Run {
    /// When each scale-down was decided, since start, and its reason.
    downs: Vec<(Duration, String)>,
    /// When `/readyz` first named the rule stale, since start.
    stale_at: Option<Duration>,
}

async fn run(
    toml: &str,
    traffic_from: Duration,
    traffic_until: Duration,
    run_for: Duration,
) -> Run {
    let health = Health::new();
    health.set_phase(Phase::Running);
    let mut p = processor(toml);
    let interval = p.tick_interval().expect("the rules tick");
    let start = Instant::now();
    // The processor maps tokio's clock onto Unix time from its start; so do the spans.
    let unix_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    p.start(&context(&health)).await.expect("starts");
    let step = Duration::from_millis(100);
    let mut next_tick = interval;
    let mut out = Emitter::new();
    let mut result = Run::default();
    let mut since = Duration::ZERO;
    while since < run_for {
        tokio::time::advance(step).await;
        since = start.elapsed();
        if since >= traffic_from && since < traffic_until {
            let end = unix_start + u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
            p.process(batch(end, 20), &mut out)
                .await
                .expect("processes");
        }
        if since >= next_tick {
            next_tick += interval;
            p.tick(&mut out).await.expect("ticks");
        }
        for d in decisions(&mut out) {
            result.downs.push((since, d.reason));
        }
        let stale = health.readiness().components["processor/scaling/latency_rules"]
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("stale"));
        if stale && result.stale_at.is_none() {
            result.stale_at = Some(since);
        }
    }
    result
}

const SECOND: Duration = Duration::from_secs(1);

/// After a start the rule has seen nothing: the first scale-down comes after a whole `for` of
/// calm it observed, counted from its first span, never earlier. Before, it came 5 s after the
/// start with `for = "8s"` and 2 s with `for = "4s"`, the periods having been started on a
/// clock that trails the wall by `allowed_lateness`.
#[tokio::test(start_paused = true)]
async fn the_first_scale_down_waits_a_whole_period_of_observed_calm() {
    for (period, seconds) in [("4s", 4), ("8s", 8), ("30s", 30), ("1m", 60)] {
        for traffic_from in [Duration::ZERO, 2 * SECOND] {
            let r = run(
                &config(period, "5m"),
                traffic_from,
                Duration::from_secs(3600),
                Duration::from_secs(seconds + 10),
            )
            .await;
            let (first, reason) = r.downs.first().expect("a scale-down");
            let first_span = traffic_from.max(Duration::from_millis(100));
            let due = first_span + Duration::from_secs(seconds);
            // At the first tick once the period is over: ticks come every second.
            assert!(
                *first >= due && *first < due + SECOND,
                "for = {period}, traffic from {traffic_from:?}: first scale-down at {first:?}"
            );
            assert!(reason.contains(&format!("for {period}")), "{reason}");
        }
    }
}

/// A stale rule holds; when spans come back, the calm is counted from the first of them.
#[tokio::test(start_paused = true)]
async fn after_a_stale_period_the_calm_is_counted_from_the_first_span_back() {
    let toml = config("8s", "10s");
    let health = Health::new();
    health.set_phase(Phase::Running);
    let mut p = processor(&toml);
    let unix_start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let start = Instant::now();
    p.start(&context(&health)).await.expect("starts");
    let mut out = Emitter::new();
    let mut downs = Vec::new();
    for tenth in 1..=1200u64 {
        tokio::time::advance(Duration::from_millis(100)).await;
        let since = start.elapsed();
        // Spans for 20 s, silence for 40 s (stale after 10 s of it), spans again from 60 s.
        let sending = since < 20 * SECOND || since >= 60 * SECOND;
        if sending {
            let end = unix_start + u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
            p.process(batch(end, 20), &mut out)
                .await
                .expect("processes");
        }
        if tenth % 10 == 0 {
            p.tick(&mut out).await.expect("ticks");
        }
        downs.extend(decisions(&mut out).into_iter().map(|_| since));
    }
    let after_return: Vec<_> = downs.iter().filter(|&&t| t >= 20 * SECOND).collect();
    assert_eq!(
        after_return,
        [
            &(68 * SECOND),
            &(76 * SECOND),
            &(84 * SECOND),
            &(92 * SECOND),
            &(100 * SECOND),
            &(108 * SECOND),
            &(116 * SECOND)
        ],
        "{downs:?}"
    );
}

/// Spans stop: the silence after them is no calm, however long `stale_after` is. Before, the
/// 8 s period ending 5 s into the silence (the event clock trails the wall by
/// `allowed_lateness`) brought a scale-down at 30 s.
#[tokio::test(start_paused = true)]
async fn a_silence_at_the_end_of_the_period_is_not_calm() {
    let r = run(
        &config("8s", "5m"),
        Duration::ZERO,
        20 * SECOND,
        60 * SECOND,
    )
    .await;
    let downs: Vec<Duration> = r.downs.iter().map(|d| d.0).collect();
    assert_eq!(downs, [9 * SECOND, 17 * SECOND]);
}

/// `stale_after = "3s"` makes `/readyz` name the rule 3 s after its last span (at the next
/// tick), not `stale_after` + `allowed_lateness` later (it did at 8.1 s, and 15.1 s for
/// `"10s"`).
#[tokio::test(start_paused = true)]
async fn a_rule_is_stale_stale_after_its_last_span() {
    for (stale_after, seconds) in [("3s", 3), ("10s", 10)] {
        let r = run(
            &config("1m", stale_after),
            Duration::ZERO,
            20 * SECOND,
            40 * SECOND,
        )
        .await;
        let last_span = Duration::from_millis(19_900);
        let due = last_span + Duration::from_secs(seconds);
        let stale_at = r.stale_at.expect("the rule goes stale");
        assert!(
            stale_at >= due && stale_at < due + SECOND,
            "stale_after = {stale_after}: stale at {stale_at:?}"
        );
    }
}
