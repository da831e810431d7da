//! Seeded random numbers: one place for every generator and distribution the crate draws from.
//!
//! Two generators, both from `rand_xoshiro`:
//!
//! - [`SeededRng`], xoshiro256** seeded from a `u64` through SplitMix64, with the normal draws
//!   cached in pairs: the simulation's generator.
//! - [`SplitMix64`], whose whole state is one `u64`: for synthetic data, jitter, and the `hstree`
//!   model, which saves that state with the model.
//!
//! The same seed gives the same stream on every platform and every release: seeded outputs
//! (synthetic CSVs, simulation figures, saved models) depend on it, and the tests below pin the
//! first values of both streams.
//!
//! The distributions are free functions over uniforms, so each caller keeps the exact draws its
//! figures were made with: [`unit_f64`] in `[0, 1)`, [`unit_f64_nonzero`] in `(0, 1]`,
//! [`box_muller`] for normals, [`log_normal`] and [`exponential`] on top of them.

use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// The increment of SplitMix64's state per draw (the golden ratio in 64-bit fixed point).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64: small, fast, seedable, and its whole state is one `u64` to save.
///
/// The draws are `rand_xoshiro`'s; the state is kept here as a plain `u64` so the generator is
/// `Copy` and serializes as `{"state": n}`, the form saved models already hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first draw mixes `seed + GOLDEN_GAMMA`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Raw 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut rng = rand_xoshiro::SplitMix64::seed_from_u64(self.state);
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        rng.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Uniform in `(0, 1]`.
    pub fn next_f64_nonzero(&mut self) -> f64 {
        unit_f64_nonzero(self.next_u64())
    }

    /// Standard normal by Box–Muller on two `[0, 1)` uniforms, the first kept above zero; the
    /// second value of the pair is dropped.
    pub fn standard_normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        box_muller(u1, u2).0
    }

    /// A non-zero draw (ids must not be all zeros).
    pub fn next_nonzero(&mut self) -> u64 {
        loop {
            let x = self.next_u64();
            if x != 0 {
                return x;
            }
        }
    }
}

impl RngCore for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn next_u64(&mut self) -> u64 {
        SplitMix64::next_u64(self)
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dst);
    }
}

/// xoshiro256** seeded from a `u64` through SplitMix64, so nearby seeds give unrelated streams.
#[derive(Clone, Debug)]
pub struct SeededRng {
    rng: rand_xoshiro::Xoshiro256StarStar,
    spare_normal: Option<f64>,
}

impl SeededRng {
    /// The generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: rand_xoshiro::Xoshiro256StarStar::seed_from_u64(seed),
            spare_normal: None,
        }
    }

    /// Raw 64 random bits, the basis of every other draw.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Exponential with the given rate (mean `1 / rate`), for Poisson gaps.
    pub fn exponential(&mut self, rate: f64) -> f64 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        exponential(1.0 - self.next_f64(), rate)
    }

    /// Standard normal by Box–Muller; the second value is cached so no draw is wasted.
    pub fn standard_normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let (z, spare) = box_muller(u1, u2);
        self.spare_normal = Some(spare);
        z
    }

    /// Log-normal parameterised by its median, which is how latency is usually quoted.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        log_normal(median, sigma, self.standard_normal())
    }
}

/// Uniform in `[0, 1)` from the top 53 bits of `bits`, which fill an `f64`'s mantissa exactly.
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Uniform in `(0, 1]` from the top 53 bits of `bits`: never zero, so its logarithm is finite.
pub fn unit_f64_nonzero(bits: u64) -> f64 {
    ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// Two independent standard normals from two uniforms, `u1` in `(0, 1]` and `u2` in `[0, 1)`
/// (Box–Muller): `(r cos θ, r sin θ)` with `r = √(−2 ln u1)` and `θ = 2π u2`.
pub fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = std::f64::consts::TAU * u2;
    (r * theta.cos(), r * theta.sin())
}

/// The log-normal value with median `median` and log-sigma `sigma` at the standard normal `z`.
pub fn log_normal(median: f64, sigma: f64, z: f64) -> f64 {
    median * (sigma * z).exp()
}

/// The exponential value with rate `rate` (mean `1 / rate`) at the uniform `u` in `(0, 1]`.
pub fn exponential(u: f64, rate: f64) -> f64 {
    -u.ln() / rate
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn splitmix64_stream_is_pinned_and_matches_the_crate() {
        let mut ours = SplitMix64::new(7);
        let first: Vec<u64> = (0..4).map(|_| ours.next_u64()).collect();
        assert_eq!(
            first,
            [
                0x63cb_e1e4_5932_0dd7,
                0x044c_3cd7_f43c_661c,
                0xe698_4080_bab1_2a02,
                0x953a_eb70_673e_29cb
            ]
        );
        let mut theirs = rand_xoshiro::SplitMix64::seed_from_u64(12_345);
        let mut ours = SplitMix64::new(12_345);
        for _ in 0..1000 {
            assert_eq!(ours.next_u64(), theirs.next_u64());
        }
    }

    #[test]
    fn xoshiro_stream_is_pinned() {
        let mut rng = SeededRng::new(7);
        let first: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                0xb358_faf7_4ef9_765a,
                0x475c_3d96_4f48_2cd2,
                0xd6f1_d349_952c_7996,
                0xfb29_3873_1e80_7240
            ]
        );
    }

    #[test]
    fn splitmix64_saves_as_its_state() {
        let mut rng = SplitMix64::new(3);
        rng.next_u64();
        let json = serde_json::to_string(&rng).unwrap();
        assert_eq!(
            json,
            format!("{{\"state\":{}}}", 3u64.wrapping_add(GOLDEN_GAMMA))
        );
        let mut back: SplitMix64 = serde_json::from_str(&json).unwrap();
        assert_eq!(back.next_u64(), rng.next_u64());
    }

    #[test]
    fn uniforms_stay_in_their_ranges() {
        assert_eq!(unit_f64(0), 0.0);
        assert!(unit_f64(u64::MAX) < 1.0);
        assert_eq!(unit_f64_nonzero(u64::MAX), 1.0);
        assert!(unit_f64_nonzero(0) > 0.0);
    }

    #[test]
    fn rng_distributions_have_the_right_moments() {
        let mut rng = SeededRng::new(42);
        let n = 200_000;
        let (mut se, mut sl) = (0.0, 0.0);
        let mut logs = Vec::with_capacity(n);
        for _ in 0..n {
            se += rng.exponential(4.0);
            let x = rng.log_normal(10.0, 0.5);
            sl += x;
            logs.push(x);
        }
        assert!((se / n as f64 - 0.25).abs() < 0.005);
        assert!((sl / n as f64 - 10.0 * 0.125f64.exp()).abs() < 0.1);
        logs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        assert!((logs[n / 2] - 10.0).abs() < 0.1);
    }
}
