//! Exponential back-off with jitter, for the exporters that retry a failed call.
//!
//! A [`Backoff`] yields the waits between the attempts at one call: each the previous one times
//! a multiplier, spread by a random factor drawn from a [`Jitter`] so that many exporters do not
//! retry in step, never above a maximum, and never shorter than what the server asked for.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use crate::random::SplitMix64;

/// The random source of jitter: spread, not secrecy, so a seeded [`SplitMix64`].
#[derive(Debug, Clone)]
pub struct Jitter(SplitMix64);

impl Jitter {
    /// Seeded from the process's hash keys, which the standard library draws from the OS.
    pub fn from_entropy() -> Self {
        Self::seeded(RandomState::new().hash_one(0x5eed_u64))
    }

    /// A fixed seed, so tests repeat.
    pub fn seeded(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0.next_f64()
    }

    /// `d` times a factor drawn uniformly from `[1 − below, 1 + above)`.
    pub fn spread(&mut self, d: Duration, spread: Spread) -> Duration {
        let factor = 1.0 - spread.below + (spread.below + spread.above) * self.unit();
        scale(d, factor)
    }
}

/// How far a wait may move either way, as fractions of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Down to `1 − below` times the wait.
    pub below: f64,
    /// Up to (not including) `1 + above` times the wait.
    pub above: f64,
}

impl Spread {
    /// `± fraction`.
    pub fn symmetric(fraction: f64) -> Self {
        Self {
            below: fraction,
            above: fraction,
        }
    }

    /// Up to `fraction` shorter, never longer.
    pub fn shorter(fraction: f64) -> Self {
        Self {
            below: fraction,
            above: 0.0,
        }
    }
}

/// How the waits of a [`Backoff`] grow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The wait before the first retry, before jitter.
    pub initial: Duration,
    /// The longest wait, after jitter.
    pub max: Duration,
    /// Each wait is the previous one (before jitter) times this.
    pub multiplier: f64,
    /// The jitter of each wait.
    pub spread: Spread,
}

/// The waits between the attempts at one call.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    interval: Duration,
}

impl Backoff {
    /// The waits for a new call.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            interval: policy.initial,
            policy,
        }
    }

    /// The next wait. `server` is what the server asked for: the wait is the longer of the two,
    /// so a server cannot make a client retry faster than its back-off.
    pub fn next(&mut self, jitter: &mut Jitter, server: Option<Duration>) -> Duration {
        let p = &self.policy;
        let base = self.interval;
        self.interval = scale(base, p.multiplier).min(p.max);
        let backoff = jitter.spread(base, p.spread).min(p.max);
        server.map_or(backoff, |s| s.max(backoff))
    }

    /// Starts over from the initial wait, after a success.
    pub fn reset(&mut self) {
        self.interval = self.policy.initial;
    }
}

thread_local! {
    static THREAD_JITTER: RefCell<Jitter> = RefCell::new(Jitter::from_entropy());
}

/// `d` spread by `spread`, drawn from a per-thread [`Jitter`] seeded from the OS: for callers
/// that keep no random source of their own.
pub fn jittered(d: Duration, spread: Spread) -> Duration {
    THREAD_JITTER.with_borrow_mut(|j| j.spread(d, spread))
}

/// `d × factor`, saturating instead of panicking as `Duration::mul_f64` would.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OTLP exporter's defaults: 1 s, × 1.5, at most 30 s, ± 50 %.
    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 1.5,
            spread: Spread::symmetric(0.5),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_below_the_maximum() {
        let mut jitter = Jitter::seeded(7);
        let mut backoff = Backoff::new(policy());
        let mut interval = 1.0_f64;
        for _ in 0..30 {
            let wait = backoff.next(&mut jitter, None).as_secs_f64();
            let low = (interval * 0.5).min(30.0);
            let high = (interval * 1.5).min(30.0);
            assert!((low..=high).contains(&wait), "{wait} not in {low}..={high}");
            interval = (interval * 1.5).min(30.0);
        }
    }

    #[test]
    fn jitter_spreads_waits() {
        let mut jitter = Jitter::seeded(1);
        let waits: Vec<_> = (0..50)
            .map(|_| Backoff::new(policy()).next(&mut jitter, None))
            .collect();
        let min = waits.iter().min().copied().unwrap_or_default();
        let max = waits.iter().max().copied().unwrap_or_default();
        assert!(max - min > Duration::from_millis(500), "{min:?}..{max:?}");
    }

    #[test]
    fn the_server_wait_is_a_floor() {
        let no_jitter = BackoffPolicy {
            spread: Spread::symmetric(0.0),
            ..policy()
        };
        let mut jitter = Jitter::seeded(3);
        let mut backoff = Backoff::new(no_jitter);
        assert_eq!(
            backoff.next(&mut jitter, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        // A shorter server wait does not shorten the back-off.
        assert_eq!(
            backoff.next(&mut jitter, Some(Duration::from_millis(1))),
            Duration::from_millis(1500)
        );
        backoff.reset();
        assert_eq!(backoff.next(&mut jitter, None), Duration::from_secs(1));
    }

    #[test]
    fn a_shorter_spread_never_lengthens() {
        let d = Duration::from_millis(400);
        let mut jitter = Jitter::seeded(5);
        let waits: Vec<_> = (0..200)
            .map(|_| jitter.spread(d, Spread::shorter(0.25)))
            .collect();
        assert!(
            waits.iter().all(|w| *w <= d && *w >= d * 3 / 4),
            "{waits:?}"
        );
        assert!(waits.iter().any(|w| *w < d * 9 / 10));
        let w = jittered(d, Spread::shorter(0.25));
        assert!(w <= d && w >= d * 3 / 4, "{w:?}");
    }
}
