//! Percentiles, one definition for the whole crate: the nearest rank.
//!
//! The `p`-th percentile of `n` values is the value at rank `⌈p / 100 × n⌉` (1-based) in
//! ascending order, clamped to `1..=n`: always one of the values, never an interpolation. The
//! p99 of 100 values is the 99th smallest; of 10 values, the largest.

/// The nearest rank of percentile `p` (in percent) among `n` values, in `1..=n` (1 when `n` is
/// 0, so that `rank - 1` is always a valid index into a non-empty slice).
pub fn nearest_rank(p: f64, n: usize) -> usize {
    let r = (p / 100.0 * n as f64).ceil();
    (r as usize).clamp(1, n.max(1))
}

/// The nearest-rank percentile `p` (in percent) of `sorted` (ascending); `None` when empty.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    sorted.get(nearest_rank(p, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_a_member() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&ten, 99.0), Some(10));
        assert_eq!(percentile(&ten, 50.0), Some(5));
        assert_eq!(percentile::<u64>(&[], 50.0), None);
        assert_eq!(nearest_rank(99.0, 0), 1);
    }

    #[test]
    fn a_fraction_times_a_hundred_gives_the_same_rank() {
        // 0.99 and 99 / 100 are the same double, so callers that think in fractions agree.
        for n in 1..2000 {
            let r = ((0.99 * n as f64).ceil() as usize).clamp(1, n);
            assert_eq!(nearest_rank(99.0, n), r, "{n}");
        }
    }
}
