//! The exporter through a real gRPC client over loopback: the four RPCs, the refusals and
//! their codes, the stream limit, and a decision path that unread streams never hold up.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::{Instant, timeout};
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use tracescale_core::component::{ComponentKind, Exporter};
use tracescale_core::config::build_from_toml;
use tracescale_core::registry;
use tracescale_core::signal::{
    Decision, Evidence, ReplicaLimits, ScaleChange, Signal, Target, now_unix_nano,
};
use tracescale_core::testing;

use super::proto::external_scaler_client::ExternalScalerClient;
use super::proto::{GetMetricsRequest, IsActiveResponse, ScaledObjectRef};
use super::{KedaExporter, ServeSettings, metric_name};
use crate::scaling::{AllowList, AllowPattern, Policy, ScalerSettings};

/// Long enough for anything on loopback; only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(20);

/// A started exporter on a free loopback port: policy floor `min`, no cooldown or
/// stabilisation, so each decision moves the count at once.
async fn exporter(min: u32, activity_window: Duration, max_streams: usize) -> KedaExporter {
    let mut policy = Policy {
        min_replicas: min,
        max_replicas: 10,
        cooldown: Duration::ZERO,
        ..Policy::default()
    };
    for d in [&mut policy.scale_up, &mut policy.scale_down] {
        d.stabilization_window = Duration::ZERO;
        d.max_replicas_per_period = u32::MAX;
    }
    let settings = ScalerSettings {
        allow: AllowList::new(vec![AllowPattern::parse("shop/deployment/*").unwrap()]),
        policy,
        overrides: Vec::new(),
        max_decision_age: Duration::from_secs(30),
        max_targets: 100,
    };
    let mut e = KedaExporter::new(
        settings,
        ServeSettings {
            endpoint: "127.0.0.1:0".parse().unwrap(),
            activity_window,
            max_streams,
        },
    );
    e.start(&testing::exporter_context("keda")).await.unwrap();
    e
}

async fn client(e: &KedaExporter) -> ExternalScalerClient<Channel> {
    let address = e.local_addr().unwrap();
    ExternalScalerClient::connect(format!("http://{address}"))
        .await
        .unwrap()
}

fn reference(namespace: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "checkout".into(),
        namespace: namespace.into(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

fn checkout() -> ScaledObjectRef {
    reference("shop", &[("target", "deployment/checkout")])
}

fn decision(change: ScaleChange) -> Decision {
    Decision {
        target: Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
            namespace: "shop".into(),
        },
        change,
        limits: ReplicaLimits {
            min: Some(0),
            max: None,
        },
        rule: "test".into(),
        reason: "test".into(),
        evidence: Evidence::default(),
        resources: None,
        timestamp_unix_nano: now_unix_nano(),
    }
}

async fn desired(c: &mut ExternalScalerClient<Channel>) -> i64 {
    let values = c
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(checkout()),
            metric_name: "tracescale-deployment-checkout".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .metric_values;
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].metric_name, "tracescale-deployment-checkout");
    assert_eq!(values[0].metric_value_float, values[0].metric_value as f64);
    values[0].metric_value
}

async fn next(stream: &mut Streaming<IsActiveResponse>) -> bool {
    timeout(PATIENCE, stream.message())
        .await
        .expect("a stream message")
        .unwrap()
        .expect("an open stream")
        .result
}

#[tokio::test]
async fn the_four_rpcs_answer_what_the_decisions_asked_for() {
    let mut e = exporter(0, Duration::from_millis(300), 10).await;
    let mut c = client(&e).await;

    let spec = c.get_metric_spec(checkout()).await.unwrap().into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(
        spec.metric_specs[0].metric_name,
        "tracescale-deployment-checkout"
    );
    assert_eq!(
        (
            spec.metric_specs[0].target_size,
            spec.metric_specs[0].target_size_float
        ),
        (1, 1.0)
    );
    // Before any decision: the floor (0 here), inactive.
    assert_eq!(desired(&mut c).await, 0);
    assert!(!c.is_active(checkout()).await.unwrap().into_inner().result);
    let mut stream = c.stream_is_active(checkout()).await.unwrap().into_inner();
    assert!(!next(&mut stream).await, "the current activity comes first");

    // Up by two: the stream is told, and the next GetMetrics answers 2.
    e.export(Signal::Decisions(vec![decision(ScaleChange::Step(2))]))
        .await
        .unwrap();
    assert!(next(&mut stream).await);
    assert_eq!(desired(&mut c).await, 2);
    assert!(c.is_active(checkout()).await.unwrap().into_inner().result);

    // Down to zero: still active for the window after the scale-up, then not.
    e.export(Signal::Decisions(vec![decision(ScaleChange::To(0))]))
        .await
        .unwrap();
    assert_eq!(desired(&mut c).await, 0);
    assert!(!next(&mut stream).await, "inactive once the window ends");
    assert!(!c.is_active(checkout()).await.unwrap().into_inner().result);

    // Shutdown ends the stream, and is idempotent.
    let deadline = Instant::now() + Duration::from_secs(5);
    e.shutdown(deadline).await.unwrap();
    let end = timeout(PATIENCE, stream.message()).await.expect("the end");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    e.shutdown(deadline).await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_code_and_a_reason() {
    let mut e = exporter(1, Duration::ZERO, 10).await;
    let mut c = client(&e).await;
    let cases = [
        (reference("shop", &[]), Code::InvalidArgument, "no `target`"),
        (
            reference("shop", &[("target", "checkout")]),
            Code::InvalidArgument,
            "namespace/kind/name",
        ),
        (
            reference("shop", &[("target", "shop/deployment/*")]),
            Code::InvalidArgument,
            "not a name",
        ),
        (
            reference("", &[("target", "deployment/checkout")]),
            Code::InvalidArgument,
            "no namespace",
        ),
        (
            reference("other", &[("target", "shop/deployment/checkout")]),
            Code::PermissionDenied,
            "its own namespace",
        ),
        (
            reference("kube-system", &[("target", "deployment/coredns")]),
            Code::PermissionDenied,
            "not in the `allow` list",
        ),
        (
            reference("shop", &[("target", "statefulset/db")]),
            Code::PermissionDenied,
            "not in the `allow` list",
        ),
    ];
    for (r, code, says) in cases {
        let what = format!("{:?}", r.scaler_metadata);
        for status in [
            c.is_active(r.clone()).await.unwrap_err(),
            c.stream_is_active(r.clone()).await.unwrap_err(),
            c.get_metric_spec(r.clone()).await.unwrap_err(),
            c.get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(r.clone()),
                metric_name: "tracescale-deployment-checkout".into(),
            })
            .await
            .unwrap_err(),
        ] {
            assert_eq!(status.code(), code, "{what}: {status:?}");
            assert!(status.message().contains(says), "{what}: {status:?}");
        }
    }
    let wrong_name = c
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(checkout()),
            metric_name: "cpu".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong_name.code(), Code::NotFound, "{wrong_name:?}");
    assert!(
        wrong_name
            .message()
            .contains("tracescale-deployment-checkout")
    );
    let no_ref = c
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: None,
            metric_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_ref.code(), Code::InvalidArgument);
    // The full form, with a kind in any case, names the same workload.
    let full = reference("shop", &[("target", "shop/Deployment/checkout")]);
    assert!(c.is_active(full).await.unwrap().into_inner().result);
    e.shutdown(Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn streams_past_max_streams_are_refused_until_one_closes() {
    let mut e = exporter(1, Duration::ZERO, 2).await;
    let mut c = client(&e).await;
    let mut first = c.stream_is_active(checkout()).await.unwrap().into_inner();
    let _second = c.stream_is_active(checkout()).await.unwrap().into_inner();
    let refused = c.stream_is_active(checkout()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("max_streams"), "{refused:?}");
    assert!(next(&mut first).await);
    drop(first);
    // The server frees the slot once it sees the stream reset.
    let reopened = timeout(PATIENCE, async {
        loop {
            match c.stream_is_active(checkout()).await {
                Ok(s) => return s.into_inner(),
                Err(s) if s.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(s) => panic!("{s:?}"),
            }
        }
    })
    .await
    .expect("a slot freed by the closed stream");
    drop(reopened);
    e.shutdown(Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn streams_nobody_reads_never_hold_up_decisions() {
    let mut e = exporter(0, Duration::ZERO, 200).await;
    let mut c = client(&e).await;
    // 100 streams on one connection, as KEDA multiplexes them, none of them read.
    let mut unread = Vec::new();
    for _ in 0..100 {
        unread.push(c.stream_is_active(checkout()).await.unwrap().into_inner());
    }
    // 20 000 decisions, each flipping the activity: every one is a message for every stream,
    // far more than the client's flow-control window takes.
    let flips: Vec<Signal> = (0..20_000)
        .map(|i| Signal::Decisions(vec![decision(ScaleChange::To(i % 2))]))
        .collect();
    timeout(PATIENCE, async {
        for s in flips {
            e.export(s).await.unwrap();
        }
    })
    .await
    .expect("export never waits on a stream");
    // The last decision asked for 1: a reader that catches up sees that, not the backlog.
    e.export(Signal::Decisions(vec![decision(ScaleChange::To(1))]))
        .await
        .unwrap();
    let stream = &mut unread[0];
    let mut last = None;
    while let Ok(Ok(Some(m))) = timeout(Duration::from_millis(200), stream.message()).await {
        last = Some(m.result);
    }
    assert_eq!(last, Some(true));
    assert_eq!(desired(&mut c).await, 1);
    e.shutdown(Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
}

#[test]
fn metric_names_are_path_safe_and_name_the_workload() {
    let t = Target {
        api_version: String::new(),
        kind: "StatefulSet".into(),
        name: "payments-db".into(),
        namespace: "shop".into(),
    };
    assert_eq!(metric_name(&t), "tracescale-statefulset-payments-db");
}

#[test]
fn the_config_is_checked_at_its_keys() {
    let factory = registry::lookup(ComponentKind::Exporter, "keda").unwrap();
    for (text, says) in [
        ("allow = []", "allow"),
        (
            "allow = [\"shop/deployment/*\"]\nmax_streams = 0",
            "max_streams",
        ),
        ("allow = [\"shop\"]", "allow[0]"),
        ("allow = [\"*/*/*\"]\nendpoint = \"nowhere\"", "endpoint"),
        (
            "allow = [\"*/*/*\"]\nactivity_window = \"soon\"",
            "activity_window",
        ),
    ] {
        let Err(err) = build_from_toml(factory, "keda", text) else {
            panic!("{text} builds");
        };
        let rendered = err.render(false);
        assert!(rendered.contains(says), "{text}: {rendered}");
    }
    assert!(build_from_toml(factory, "keda", "allow = [\"shop/deployment/*\"]").is_ok());
}
