//! Scale-out: behind trace-ID load balancing each of N tracescale replicas sees a uniform sample
//! of whole traces, and the leader decides from its 1/N. `configs/slo-sharded.toml` runs the
//! simulated shop into a single instance that scales it and, beside it, the same slo_scaler on a
//! one-in-three sample whose decisions go to a file only. The shard must name the same culprits
//! at sizes within one replica of the single instance's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::util::{bin, run_to_end};

/// Seconds by which the shard's scale-up may trail or lead the single instance's.
const SAME_MOMENT_S: f64 = 5.0;

#[derive(Debug)]
struct Decided {
    at_s: f64,
    target: String,
    to: i64,
    /// Scale-ups name the objective; scale-downs the processor.
    up: bool,
}

fn decisions(path: &Path) -> Vec<Decided> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            Decided {
                at_s: v["timestamp_unix_nano"].as_f64().unwrap() / 1e9,
                target: format!(
                    "{}/{}",
                    v["target"]["kind"].as_str().unwrap(),
                    v["target"]["name"].as_str().unwrap()
                ),
                to: v["change"]["to"].as_i64().unwrap(),
                up: v["rule"].as_str().unwrap() != "slo_scaler",
            }
        })
        .collect()
}

/// The scale-ups of `a` with no scale-up in `b` on the same target within one replica and
/// [`SAME_MOMENT_S`].
fn unmatched_ups<'a>(a: &'a [Decided], b: &[Decided]) -> Vec<&'a Decided> {
    a.iter()
        .filter(|x| x.up)
        .filter(|x| {
            !b.iter().any(|y| {
                y.up && y.target == x.target
                    && (y.to - x.to).abs() <= 1
                    && (y.at_s - x.at_s).abs() <= SAME_MOMENT_S
            })
        })
        .collect()
}

/// Where each calm stretch (from one burst of scale-ups to the next) left each target: the
/// lowest size scaled down to. Scale-downs are compared by where they end, not step by step:
/// the cluster follows the single instance only, so once their steps part the shard asks
/// again for what it asked before, and its calm is judged on a third of the traces.
fn scaled_down_to(d: &[Decided], bursts: &[f64]) -> BTreeMap<(usize, String), i64> {
    let mut lowest = BTreeMap::new();
    for x in d.iter().filter(|x| !x.up) {
        let stretch = bursts.iter().filter(|&&t| t <= x.at_s).count();
        lowest
            .entry((stretch, x.target.clone()))
            .and_modify(|n: &mut i64| *n = (*n).min(x.to))
            .or_insert(x.to);
    }
    lowest
}

#[test]
fn a_one_in_three_shard_names_the_same_culprits_at_sizes_within_one_replica() {
    for seed in 1..=3 {
        let dir = tempfile::TempDir::new().unwrap();
        let out = run_to_end(
            bin()
                .args(["simulate", "-c", "configs/slo-sharded.toml"])
                .args(["--seed", &seed.to_string(), "--speed", "0"])
                .env("TRACESCALE_DECISIONS_DIR", dir.path()),
            Duration::from_secs(300),
        );
        assert!(
            out.status.success(),
            "seed {seed}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = decisions(&dir.path().join("decisions-all.jsonl"));
        let shard = decisions(&dir.path().join("decisions-shard.jsonl"));
        for culprit in ["StatefulSet/db", "Deployment/worker"] {
            assert!(
                all.iter().any(|d| d.up && d.target == culprit),
                "seed {seed}: the single instance never scaled {culprit} up: {all:#?}"
            );
        }
        for (a, b, which) in [(&all, &shard, "single instance"), (&shard, &all, "shard")] {
            let missing = unmatched_ups(a, b);
            assert!(
                missing.is_empty(),
                "seed {seed}: scale-ups of the {which} without a counterpart: {missing:#?}\n\
                 single instance: {all:#?}\nshard: {shard:#?}"
            );
        }
        // A burst starts at a scale-up more than a cooldown after the one before.
        let mut bursts: Vec<f64> = Vec::new();
        for x in all.iter().filter(|x| x.up) {
            if bursts.last().is_none_or(|&t| x.at_s - t > 60.0) {
                bursts.push(x.at_s - SAME_MOMENT_S);
            }
        }
        let (single_down, shard_down) = (
            scaled_down_to(&all, &bursts),
            scaled_down_to(&shard, &bursts),
        );
        assert_eq!(
            single_down.keys().collect::<Vec<_>>(),
            shard_down.keys().collect::<Vec<_>>(),
            "seed {seed}: the shard scaled other targets down, or in other stretches"
        );
        for (key, to) in &single_down {
            assert!(
                (shard_down[key] - to).abs() <= 1,
                "seed {seed}: {key:?} scaled down to {to} by the single instance, {} by the shard",
                shard_down[key]
            );
        }
    }
}
