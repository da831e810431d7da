//! Tests of the hash, the share kept and whole-trace sampling.

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tracescale_core::component::{ComponentKind, Emitter, Processor};
use tracescale_core::config::{Built, build_from_toml};
use tracescale_core::registry;
use tracescale_core::signal::{Signal, Traces};

use super::*;
use crate::random::SplitMix64;

fn build(toml_text: &str) -> Result<Box<dyn Processor>, String> {
    let factory = registry::lookup(ComponentKind::Processor, "probabilistic_sampler")
        .ok_or("not registered")?;
    match build_from_toml(factory, "probabilistic_sampler", toml_text) {
        Ok(Built::Processor(p)) => Ok(p),
        Ok(_) => Err("not a processor".into()),
        Err(e) => Err(e.render(false)),
    }
}

fn trace_ids(n: usize, seed: u64) -> Vec<[u8; 16]> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            id[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
            id
        })
        .collect()
}

/// Three spans for each trace id, spread over two resources.
fn batch(ids: &[[u8; 16]]) -> Traces {
    let spans = |k: u8| -> Vec<Span> {
        ids.iter()
            .flat_map(|id| {
                (0..3u8).filter(move |i| i % 2 == k).map(|i| Span {
                    trace_id: id.to_vec(),
                    span_id: vec![i + 1; 8],
                    name: format!("op{i}"),
                    ..Span::default()
                })
            })
            .collect()
    };
    Traces::new(
        (0..2)
            .map(|k| ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: spans(k),
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            })
            .collect(),
    )
}

async fn sample(p: &mut Box<dyn Processor>, traces: Traces) -> Vec<Span> {
    let mut out = Emitter::new();
    p.process(Signal::Traces(traces), &mut out).await.unwrap();
    out.take()
        .into_iter()
        .flat_map(|s| match s {
            Signal::Traces(t) => t
                .resource_spans
                .into_iter()
                .flat_map(|rs| rs.scope_spans)
                .flat_map(|ss| ss.spans)
                .collect(),
            Signal::Decisions(_) => Vec::new(),
        })
        .collect()
}

#[test]
fn fnv1a_matches_the_reference_vectors() {
    // From the FNV reference (draft-eastlake-fnv): 32-bit FNV-1a.
    assert_eq!(fnv1a(b""), 0x811c_9dc5);
    assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
}

#[test]
fn the_percentage_rounds_down_to_buckets_as_the_collector_does() {
    assert_eq!(threshold(100.0), BUCKETS);
    assert_eq!(threshold(0.0), 0);
    assert_eq!(threshold(50.0), BUCKETS / 2);
    assert_eq!(threshold(100.0 / 3.0), 5461);
}

#[tokio::test]
async fn one_in_three_keeps_a_third_of_the_traces_and_every_span_of_each() {
    let mut p = build("sampling_percentage = 33.333").unwrap();
    let ids = trace_ids(30_000, 7);
    let kept = sample(&mut p, batch(&ids)).await;
    let mut per_trace = std::collections::HashMap::<Vec<u8>, usize>::new();
    for span in &kept {
        *per_trace.entry(span.trace_id.clone()).or_default() += 1;
    }
    assert!(per_trace.values().all(|&n| n == 3), "a trace was split");
    let share = per_trace.len() as f64 / ids.len() as f64;
    assert!((0.32..0.347).contains(&share), "kept {share}");
}

#[tokio::test]
async fn samplers_with_one_seed_agree_and_other_seeds_pick_other_traces() {
    let ids = trace_ids(5_000, 11);
    let mut a = build("sampling_percentage = 25\nhash_seed = 9").unwrap();
    let mut b = build("sampling_percentage = 25\nhash_seed = 9").unwrap();
    let mut c = build("sampling_percentage = 25\nhash_seed = 10").unwrap();
    let ka = sample(&mut a, batch(&ids)).await;
    let kb = sample(&mut b, batch(&ids)).await;
    let kc = sample(&mut c, batch(&ids)).await;
    assert_eq!(ka, kb);
    assert_ne!(ka, kc);
}

#[tokio::test]
async fn all_or_nothing_at_the_ends_and_spans_without_a_trace_id_follow_fail_closed() {
    let ids = trace_ids(1_000, 3);
    assert_eq!(
        sample(
            &mut build("sampling_percentage = 100").unwrap(),
            batch(&ids)
        )
        .await
        .len(),
        3_000
    );
    assert!(
        sample(&mut build("sampling_percentage = 0").unwrap(), batch(&ids))
            .await
            .is_empty()
    );
    let zero = [[0u8; 16]];
    let closed = build("sampling_percentage = 100").unwrap();
    let open = build("sampling_percentage = 100\nfail_closed = false").unwrap();
    assert!(sample(&mut { closed }, batch(&zero)).await.is_empty());
    assert_eq!(sample(&mut { open }, batch(&zero)).await.len(), 3);
}

#[test]
fn a_percentage_out_of_range_or_an_unknown_key_is_refused_with_its_key() {
    let err = build("sampling_percentage = 150").err().unwrap_or_default();
    assert!(
        err.contains("sampling_percentage") && err.contains("0 to 100"),
        "{err}"
    );
    let err = build("sampling_percentage = 10\nseed = 1")
        .err()
        .unwrap_or_default();
    assert!(err.contains("seed"), "{err}");
    let err = build("hash_seed = 1").err().unwrap_or_default();
    assert!(err.contains("sampling_percentage"), "{err}");
}
