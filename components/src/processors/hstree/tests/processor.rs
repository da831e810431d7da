//! The processor: building, tag and drop modes, invalid spans, the model file at start and stop.

use super::*;

#[test]
fn builds_from_toml_and_reports_bad_keys_at_their_place() {
    build("trees = 25\nheight = 15\nmode = \"drop\"\nstate_path = \"/tmp/x\"");
    let err = build_error("height = 0\ntarget_fpr = 2.0");
    assert!(err.contains("processors.hstree.height"), "{err}");
    assert!(err.contains("processors.hstree.target_fpr"), "{err}");
    let err = build_error("treez = 3");
    assert!(err.contains("did you mean `trees`"), "{err}");
    let err = build_error("features = \"dense\"");
    assert!(err.contains("operation"), "{err}");
}

#[test]
fn building_touches_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let p = build(&format!("state_path = {:?}", path.display().to_string()));
    assert_eq!(p.tick_interval(), Some(Duration::from_secs(60)));
    drop(p);
    assert!(!path.exists());
    assert_eq!(build("").tick_interval(), None);
}

#[tokio::test]
async fn tag_mode_forwards_everything_and_tags_judged_spans() {
    let mut p = build("train_size = 500\noperation_warmup = 50\nwindow_size = 100");
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    let mut rng = SplitMix64::new(1);
    let training = trained(&mut p, 500, &mut rng).await;
    let spans = spans_of(&training);
    assert_eq!(spans.len(), 500);
    assert!(
        spans.iter().all(|s| s.attributes.is_empty()),
        "training spans are not tagged"
    );

    let mut out = Emitter::new();
    let mut batch: Vec<Span> = (0..99)
        .map(|k| {
            span(
                1000 + k,
                "PlaceOrder",
                (10.0e6 * (0.2 * rng.standard_normal()).exp()) as u64,
            )
        })
        .collect();
    batch.push(span(2000, "PlaceOrder", 400_000_000));
    p.process(batch_of("checkout", batch), &mut out)
        .await
        .unwrap();
    let spans = spans_of(&out.take());
    assert_eq!(spans.len(), 100);
    for s in &spans {
        let Some(any_value::Value::DoubleValue(score)) = attribute(s, ANOMALY_SCORE) else {
            panic!("no score on {s:?}")
        };
        assert!((0.0..=1.0).contains(score));
    }
    let slow = spans.last().unwrap();
    assert_eq!(
        attribute(slow, ANOMALY),
        Some(&any_value::Value::BoolValue(true))
    );
    let flagged = spans
        .iter()
        .filter(|s| attribute(s, ANOMALY).is_some())
        .count();
    assert!(flagged < 10, "{flagged} of 100 flagged");
}

#[tokio::test]
async fn drop_mode_forwards_only_anomalous_spans_with_their_resource_and_scope() {
    let mut p =
        build("mode = \"drop\"\ntrain_size = 500\noperation_warmup = 50\nwindow_size = 100");
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    let mut rng = SplitMix64::new(2);
    // Drop mode forwards nothing while training.
    assert!(trained(&mut p, 500, &mut rng).await.is_empty());

    let mut out = Emitter::new();
    let mut batch: Vec<Span> = (0..50)
        .map(|k| {
            span(
                1000 + k,
                "PlaceOrder",
                (10.0e6 * (0.2 * rng.standard_normal()).exp()) as u64,
            )
        })
        .collect();
    batch.insert(25, span(3000, "PlaceOrder", 500_000_000));
    p.process(batch_of("checkout", batch), &mut out)
        .await
        .unwrap();
    let out = out.take();
    let spans = spans_of(&out);
    assert!(
        spans
            .iter()
            .any(|s| s.end_time_unix_nano - s.start_time_unix_nano == 500_000_000)
    );
    assert!(spans.len() <= 3, "{} spans kept", spans.len());
    let Signal::Traces(t) = &out[0] else { panic!() };
    let rs = &t.resource_spans[0];
    assert_eq!(service_name(rs.resource.as_ref()), "checkout");
    assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "test");
    assert!(spans.iter().all(|s| attribute(s, ANOMALY_SCORE).is_none()));

    // A batch with nothing anomalous emits nothing at all.
    let mut out = Emitter::new();
    let calm = (0..10)
        .map(|k| span(4000 + k, "PlaceOrder", 10_000_000))
        .collect();
    p.process(batch_of("checkout", calm), &mut out)
        .await
        .unwrap();
    assert!(out.is_empty());
}

#[tokio::test]
async fn invalid_spans_are_counted_and_never_learned() {
    let mut bad_time = span(1, "PlaceOrder", 1000);
    bad_time.end_time_unix_nano = bad_time.start_time_unix_nano - 1;
    let mut no_trace = span(2, "PlaceOrder", 1000);
    no_trace.trace_id = vec![0; 16];
    let mut short_span_id = span(3, "PlaceOrder", 1000);
    short_span_id.span_id = vec![1, 2];
    let bad = vec![bad_time, no_trace, short_span_id];

    let mut tag = HsTree::new(
        "hstree".into(),
        HsTreeConfig::default(),
        Detector::new(&HsTreeConfig::default()).unwrap(),
    );
    tag.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    let mut out = Emitter::new();
    tag.process(batch_of("checkout", bad.clone()), &mut out)
        .await
        .unwrap();
    let spans = spans_of(&out.take());
    assert_eq!(spans.len(), 3, "tag mode passes invalid spans through");
    assert!(spans.iter().all(|s| s.attributes.is_empty()));
    assert_eq!(tag.detector().seen(), 0);

    let config = HsTreeConfig {
        mode: Mode::Drop,
        ..Default::default()
    };
    let mut drop = HsTree::new(
        "hstree".into(),
        config.clone(),
        Detector::new(&config).unwrap(),
    );
    drop.process(batch_of("checkout", bad), &mut out)
        .await
        .unwrap();
    assert!(out.is_empty(), "drop mode drops them");
}

#[tokio::test]
async fn spans_without_a_service_name_are_keyed_as_unknown_service() {
    let mut p = HsTree::new(
        "hstree".into(),
        HsTreeConfig::default(),
        Detector::new(&HsTreeConfig::default()).unwrap(),
    );
    let mut out = Emitter::new();
    let signal = Signal::Traces(Traces::new(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![span(1, "op", 10)],
            ..Default::default()
        }],
        ..Default::default()
    }]));
    p.process(signal, &mut out).await.unwrap();
    assert!(
        p.detector()
            .operations()
            .find(UNKNOWN_SERVICE, "op")
            .is_some()
    );
}

#[tokio::test]
async fn decisions_pass_through_untouched() {
    let decision = Decision {
        target: Target {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
            namespace: "shop".into(),
        },
        change: ScaleChange::Step(1),
        limits: Default::default(),
        rule: "checkout-slow".into(),
        reason: "slow".into(),
        evidence: Default::default(),
        resources: None,
        timestamp_unix_nano: 1,
    };
    let mut p = build("mode = \"drop\"");
    let mut out = Emitter::new();
    p.process(Signal::Decisions(vec![decision.clone()]), &mut out)
        .await
        .unwrap();
    assert_eq!(out.take(), vec![Signal::Decisions(vec![decision])]);
}

#[tokio::test]
async fn the_model_is_saved_at_shutdown_and_loaded_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hstree.model");
    let toml_text = format!(
        "state_path = {:?}\nsave_interval = \"1s\"",
        path.display().to_string()
    );
    let ctx = testing::processor_context("hstree");

    let (warnings, _guard) = count_warnings();
    let mut first = build(&toml_text);
    first.start(&ctx).await.unwrap();
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        1,
        "a missing file is a warning"
    );
    let mut rng = SplitMix64::new(3);
    trained(&mut first, 1200, &mut rng).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut out = Emitter::new();
    first.shutdown(&mut out, deadline).await.unwrap();
    let saved = std::fs::read(&path).unwrap();
    first.shutdown(&mut out, deadline).await.unwrap();
    assert!(
        std::fs::read(&path).unwrap() == saved,
        "second shutdown is a no-op"
    );

    let mut second = build(&toml_text);
    second.start(&ctx).await.unwrap();
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        1,
        "a good file loads silently"
    );
    // The restored model is past training: the first span is judged and tagged.
    let mut out = Emitter::new();
    second
        .process(
            batch_of("checkout", vec![span(9, "PlaceOrder", 10_000_000)]),
            &mut out,
        )
        .await
        .unwrap();
    let spans = spans_of(&out.take());
    assert!(attribute(&spans[0], ANOMALY_SCORE).is_some());
    // Ticks save too.
    second.tick(&mut out).await.unwrap();
    assert!(std::fs::read(&path).unwrap() != saved, "the tick saved");
}

#[tokio::test]
async fn a_corrupt_or_incompatible_file_gives_a_warning_and_a_fresh_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hstree.model");
    let toml_text = format!("state_path = {:?}", path.display().to_string());
    let ctx = testing::processor_context("hstree");
    let (warnings, _guard) = count_warnings();

    std::fs::write(&path, b"TSHSTREE garbage that is not a model").unwrap();
    let mut p = build(&toml_text);
    p.start(&ctx).await.unwrap();
    assert_eq!(warnings.load(Ordering::SeqCst), 1);
    let mut out = Emitter::new();
    p.process(
        batch_of("checkout", vec![span(1, "PlaceOrder", 1000)]),
        &mut out,
    )
    .await
    .unwrap();
    assert!(
        spans_of(&out.take())[0].attributes.is_empty(),
        "fresh model: training"
    );

    let (trained_model, _) = trained_detector(|c| c.trees = 5);
    trained_model.save_to(&path).unwrap();
    let mut p = build(&toml_text);
    p.start(&ctx).await.unwrap();
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        2,
        "other trees: incompatible"
    );
}

#[tokio::test]
async fn a_save_that_cannot_be_written_fails_the_tick_not_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("hstree.model");
    let mut p = build(&format!("state_path = {:?}", path.display().to_string()));
    p.start(&testing::processor_context("hstree"))
        .await
        .unwrap();
    let mut out = Emitter::new();
    p.process(
        batch_of("checkout", vec![span(1, "PlaceOrder", 1000)]),
        &mut out,
    )
    .await
    .unwrap();
    let err = p.tick(&mut out).await.unwrap_err();
    assert!(err.to_string().contains("hstree.model"), "{err}");
    p.process(
        batch_of("checkout", vec![span(2, "PlaceOrder", 1000)]),
        &mut out,
    )
    .await
    .unwrap();
}
