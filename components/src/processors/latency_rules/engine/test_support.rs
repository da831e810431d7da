//! Exposes the engine's internals to the tests of this folder.

use super::*;
use crate::processors::latency_rules::decision::Latency;
use crate::processors::latency_rules::percentile::nearest_ranks;
use crate::processors::latency_rules::rule::glob_match;

/// Re-checks a window against its definition: sorted, breaches recounted, within its cap.
pub(in super::super) fn check_invariants(engine: &Engine) {
    for rule in &engine.rules {
        let w = &rule.window;
        assert!(w.samples.len() <= w.cap);
        assert!(
            w.samples
                .iter()
                .zip(w.samples.iter().skip(1))
                .all(|(a, b)| a.end <= b.end),
            "window of {} is not sorted",
            rule.rule.name
        );
        let breaches = w.samples.iter().filter(|s| s.duration > rule.above).count();
        assert_eq!(breaches, w.breaches, "breach count of {}", rule.rule.name);
    }
}

pub(in super::super) fn glob(pattern: &str, text: &str) -> bool {
    glob_match(pattern.as_bytes(), text.as_bytes())
}

pub(in super::super) fn percentiles(values: &mut [u64]) -> [u64; 3] {
    nearest_ranks(values, [50.0, 95.0, 99.0])
}

pub(in super::super) fn latency(d: Duration) -> String {
    Latency(d).to_string()
}
