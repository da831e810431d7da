//! Nearest-rank percentiles.

/// The nearest rank of percentile `p` among `n` samples, in 1..=n.
pub(super) fn rank(p: f64, n: usize) -> usize {
    let r = (p / 100.0 * n as f64).ceil();
    (r as usize).clamp(1, n.max(1))
}

/// The nearest-rank percentile of `values` (reordered in place); 0 when empty.
pub(super) fn percentile_of(values: &mut [u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let k = rank(p, values.len()) - 1;
    *values.select_nth_unstable(k).1
}

/// Several nearest-rank percentiles of `values` (reordered in place), `ps` ascending. Each
/// selection only looks at what lies above the previous one, about 1.5 n in all.
pub(super) fn nearest_ranks<const N: usize>(values: &mut [u64], ps: [f64; N]) -> [u64; N] {
    let mut out = [0; N];
    let n = values.len();
    if n == 0 {
        return out;
    }
    let mut base = 0;
    for (i, p) in ps.into_iter().enumerate() {
        let k = rank(p, n) - 1;
        if k < base {
            // The same rank as the previous percentile.
            out[i] = out[i.saturating_sub(1)];
            continue;
        }
        out[i] = *values[base..].select_nth_unstable(k - base).1;
        base = k + 1;
    }
    out
}
