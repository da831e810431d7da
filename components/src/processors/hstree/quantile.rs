//! The P² streaming quantile estimator (Jain & Chlamtac, CACM 1985): five markers, constant
//! memory and time per value, no assumption about the scale of the values. It calibrates the
//! HS-Tree decision (a high quantile of each operation's scores) and is the `p99` detector.

use serde::{Deserialize, Serialize};

/// A running estimate of one quantile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct P2Quantile {
    #[serde(with = "super::floats::exact")]
    p: f64,
    count: u64,
    /// Marker heights; the first `count` hold the raw values until there are five.
    #[serde(with = "super::floats::exact::five")]
    q: [f64; 5],
    /// Marker positions, 1-based.
    #[serde(with = "super::floats::exact::five")]
    n: [f64; 5],
    /// Desired marker positions.
    #[serde(with = "super::floats::exact::five")]
    want: [f64; 5],
}

impl P2Quantile {
    /// An estimator of quantile `p`, in `(0, 1]`.
    pub fn new(p: f64) -> Self {
        Self {
            p,
            count: 0,
            q: [0.0; 5],
            n: [1.0, 2.0, 3.0, 4.0, 5.0],
            want: [1.0, 1.0 + 2.0 * p, 1.0 + 4.0 * p, 3.0 + 2.0 * p, 5.0],
        }
    }

    /// The quantile tracked.
    pub fn quantile_level(&self) -> f64 {
        self.p
    }

    /// Values seen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The estimate; `None` before the first value. Below five values it is the sample quantile.
    pub fn quantile(&self) -> Option<f64> {
        match self.count {
            0 => None,
            c if c < 5 => {
                let mut v = [0.0; 5];
                let len = c as usize;
                v[..len].copy_from_slice(&self.q[..len]);
                v[..len].sort_by(f64::total_cmp);
                let rank = (self.p * c as f64).ceil() as usize;
                Some(v[rank.clamp(1, len) - 1])
            }
            _ => Some(self.q[2]),
        }
    }

    /// Adds one value; NaN is ignored.
    pub fn observe(&mut self, x: f64) {
        if x.is_nan() {
            return;
        }
        if self.count < 5 {
            self.q[self.count as usize] = x;
            self.count += 1;
            if self.count == 5 {
                self.q.sort_by(f64::total_cmp);
            }
            return;
        }
        self.count = self.count.saturating_add(1);
        let q = &mut self.q;
        let k = if x < q[0] {
            q[0] = x;
            0
        } else if x < q[1] {
            0
        } else if x < q[2] {
            1
        } else if x < q[3] {
            2
        } else if x <= q[4] {
            3
        } else {
            q[4] = x;
            3
        };
        for n in &mut self.n[k + 1..] {
            *n += 1.0;
        }
        let p = self.p;
        let step = [0.0, p / 2.0, p, (1.0 + p) / 2.0, 1.0];
        for (w, s) in self.want.iter_mut().zip(step) {
            *w += s;
        }
        for i in 1..4 {
            let d = self.want[i] - self.n[i];
            if (d >= 1.0 && self.n[i + 1] - self.n[i] > 1.0)
                || (d <= -1.0 && self.n[i - 1] - self.n[i] < -1.0)
            {
                let d = d.signum();
                let candidate = self.parabolic(i, d);
                self.q[i] = if self.q[i - 1] < candidate && candidate < self.q[i + 1] {
                    candidate
                } else {
                    self.linear(i, d)
                };
                self.n[i] += d;
            }
        }
    }

    fn parabolic(&self, i: usize, d: f64) -> f64 {
        let (q, n) = (&self.q, &self.n);
        q[i] + d / (n[i + 1] - n[i - 1])
            * ((n[i] - n[i - 1] + d) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
                + (n[i + 1] - n[i] - d) * (q[i] - q[i - 1]) / (n[i] - n[i - 1]))
    }

    fn linear(&self, i: usize, d: f64) -> f64 {
        let j = if d > 0.0 { i + 1 } else { i - 1 };
        self.q[i] + d * (self.q[j] - self.q[i]) / (self.n[j] - self.n[i])
    }

    /// True when a saved estimator could have been produced by this code: finite values,
    /// increasing positions, ordered heights. Guards loading a hand-edited or corrupt file.
    pub(crate) fn is_consistent(&self) -> bool {
        let finite = self
            .q
            .iter()
            .chain(&self.n)
            .chain(&self.want)
            .all(|v| v.is_finite());
        if !(finite && self.p > 0.0 && self.p <= 1.0) {
            return false;
        }
        if self.count < 5 {
            return true;
        }
        self.n.windows(2).all(|w| w[0] < w[1])
            && self.q.windows(2).all(|w| w[0] <= w[1])
            && self.n[4] <= self.count as f64
    }
}

/// A P² estimate over the latest one to two windows of values instead of all of them: it
/// follows an operation whose durations move with its load (as its log-duration statistics do)
/// while a window's worth of values keeps its extreme quantiles steady.
///
/// The estimate is that of the last complete window, or of the first window while it fills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowedQuantile {
    /// Values per window.
    window: u64,
    /// The estimate in use: the last complete window, or the first while it fills.
    current: P2Quantile,
    /// The window being filled once `current` is complete.
    next: P2Quantile,
}

impl WindowedQuantile {
    /// An estimator of quantile `p`, in `(0, 1]`, over windows of `window` values (at least 1).
    pub fn new(p: f64, window: u64) -> Self {
        Self {
            window: window.max(1),
            current: P2Quantile::new(p),
            next: P2Quantile::new(p),
        }
    }

    /// The quantile tracked.
    pub fn quantile_level(&self) -> f64 {
        self.current.quantile_level()
    }

    /// Values per window.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The estimate; `None` before the first value.
    pub fn quantile(&self) -> Option<f64> {
        self.current.quantile()
    }

    /// Adds one value; NaN is ignored.
    pub fn observe(&mut self, x: f64) {
        if self.current.count() < self.window {
            self.current.observe(x);
            return;
        }
        self.next.observe(x);
        if self.next.count() >= self.window {
            let fresh = P2Quantile::new(self.next.p);
            self.current = std::mem::replace(&mut self.next, fresh);
        }
    }

    /// True when both estimates are consistent and share a level.
    pub(crate) fn is_consistent(&self) -> bool {
        self.current.is_consistent()
            && self.next.is_consistent()
            && self.current.p == self.next.p
            && self.window > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_a_high_quantile_of_a_uniform_stream() {
        let mut est = P2Quantile::new(0.99);
        let mut rng = crate::random::SplitMix64::new(3);
        for _ in 0..100_000 {
            est.observe(rng.next_f64());
        }
        let q = est.quantile().unwrap();
        assert!((q - 0.99).abs() < 0.005, "{q}");
        assert!(est.is_consistent());
    }

    #[test]
    fn small_samples_give_the_sample_quantile() {
        let mut est = P2Quantile::new(0.5);
        assert_eq!(est.quantile(), None);
        for x in [3.0, 1.0, 2.0] {
            est.observe(x);
        }
        assert_eq!(est.quantile(), Some(2.0));
    }

    #[test]
    fn a_windowed_quantile_follows_a_shift_within_two_windows() {
        let mut est = WindowedQuantile::new(0.99, 10_000);
        let mut rng = crate::random::SplitMix64::new(4);
        for _ in 0..30_000 {
            est.observe(rng.next_f64());
        }
        let q = est.quantile().unwrap();
        assert!((q - 0.99).abs() < 0.01, "{q}");
        // Twice as large from now on: the all-time estimate would stay near 1.
        for _ in 0..20_000 {
            est.observe(2.0 * rng.next_f64());
        }
        let q = est.quantile().unwrap();
        assert!((q - 1.98).abs() < 0.02, "{q}");
        assert!(est.is_consistent());
    }

    #[test]
    fn constant_streams_stay_put() {
        let mut est = P2Quantile::new(0.99);
        for _ in 0..1000 {
            est.observe(0.7);
        }
        assert_eq!(est.quantile(), Some(0.7));
    }
}
