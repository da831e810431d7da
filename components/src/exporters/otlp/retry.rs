//! When to retry, and how long to wait: the OTLP specification's retryable codes, exponential
//! back-off with jitter, and the server's own `Retry-After` / `RetryInfo`. Plain synchronous code.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

use tonic::Code;

use super::config::RetryConfig;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Try again; the server may have said how long to wait at least.
    Retry {
        /// The wait the server asked for (`RetryInfo`, `Retry-After`), if any.
        after: Option<Duration>,
    },
    /// Retrying cannot help: drop the batch.
    Permanent,
}

/// The verdict on a gRPC status, per the OTLP specification. `retry_info` is the `RetryInfo`
/// detail when the status carried one (its delay, or zero when it named none).
pub(super) fn grpc_verdict(code: Code, retry_info: Option<Duration>) -> Verdict {
    match code {
        Code::Unavailable
        | Code::Aborted
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::OutOfRange
        | Code::DataLoss => Verdict::Retry { after: retry_info },
        // The server is out of a resource it may never get back (a quota) unless it says when.
        Code::ResourceExhausted if retry_info.is_some() => Verdict::Retry { after: retry_info },
        _ => Verdict::Permanent,
    }
}

/// The verdict on an HTTP status, per the OTLP specification.
pub(super) fn http_verdict(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        429 | 502 | 503 | 504 => Verdict::Retry { after: retry_after },
        _ => Verdict::Permanent,
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP-date (a date in the past means now).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The retry settings, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RetryPolicy {
    pub(super) enabled: bool,
    pub(super) initial_interval: Duration,
    pub(super) max_interval: Duration,
    /// `None`: retry until shutdown.
    pub(super) max_elapsed_time: Option<Duration>,
    pub(super) multiplier: f64,
    pub(super) randomization_factor: f64,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(c: &RetryConfig) -> Self {
        let max_elapsed = c.max_elapsed_time.get();
        Self {
            enabled: c.enabled,
            initial_interval: c.initial_interval.get(),
            max_interval: c.max_interval.get(),
            max_elapsed_time: (!max_elapsed.is_zero()).then_some(max_elapsed),
            multiplier: c.multiplier,
            randomization_factor: c.randomization_factor,
        }
    }
}

/// The waits between the attempts at one batch: each the previous one times the multiplier,
/// randomised by ± the randomisation factor, never above `max_interval`.
#[derive(Debug)]
pub(super) struct Backoff {
    policy: RetryPolicy,
    interval: Duration,
}

impl Backoff {
    /// The waits for a new batch.
    pub(super) fn new(policy: RetryPolicy) -> Self {
        Self {
            interval: policy.initial_interval,
            policy,
        }
    }

    /// The next wait. `server` is what the server asked for: the wait is the longer of the two,
    /// as in the Collector, so a server cannot make a client retry faster than its back-off.
    pub(super) fn next(&mut self, jitter: &mut Jitter, server: Option<Duration>) -> Duration {
        let p = &self.policy;
        let base = self.interval;
        self.interval = scale(base, p.multiplier).min(p.max_interval);
        let factor = 1.0 - p.randomization_factor + 2.0 * p.randomization_factor * jitter.unit();
        let backoff = scale(base, factor).min(p.max_interval);
        server.map_or(backoff, |s| s.max(backoff))
    }
}

/// `d × factor`, saturating instead of panicking as `Duration::mul_f64` would.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

/// A small random source for jitter (SplitMix64). Jitter needs spread, not cryptographic
/// quality, and this keeps a random-number crate out of the dependency tree.
#[derive(Debug, Clone)]
pub(super) struct Jitter(u64);

impl Jitter {
    /// Seeded from the process's hash keys, which the standard library draws from the OS.
    pub(super) fn from_entropy() -> Self {
        Self(RandomState::new().hash_one(0x5eed_u64))
    }

    /// A fixed seed, for tests.
    #[cfg(test)]
    pub(super) fn seeded(seed: u64) -> Self {
        Self(seed)
    }

    /// A number in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 53 bits fill an f64's mantissa exactly.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::from(&RetryConfig::default())
    }

    #[test]
    fn the_otlp_retryable_grpc_codes_are_retried() {
        for code in [
            Code::Unavailable,
            Code::Aborted,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert_eq!(
                grpc_verdict(code, None),
                Verdict::Retry { after: None },
                "{code:?}"
            );
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Unimplemented,
            Code::Internal,
            Code::Unknown,
            Code::FailedPrecondition,
        ] {
            assert_eq!(grpc_verdict(code, None), Verdict::Permanent, "{code:?}");
        }
    }

    #[test]
    fn resource_exhausted_is_retried_only_with_retry_info() {
        assert_eq!(
            grpc_verdict(Code::ResourceExhausted, None),
            Verdict::Permanent
        );
        let after = Some(Duration::from_secs(1));
        assert_eq!(
            grpc_verdict(Code::ResourceExhausted, after),
            Verdict::Retry { after }
        );
    }

    #[test]
    fn the_otlp_retryable_http_statuses_are_retried() {
        for status in [429, 502, 503, 504] {
            assert!(matches!(http_verdict(status, None), Verdict::Retry { .. }));
        }
        for status in [400, 401, 403, 404, 413, 415, 500, 501] {
            assert_eq!(http_verdict(status, None), Verdict::Permanent, "{status}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 06 Nov 1994 08:49:37
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        // The two obsolete formats recipients must accept.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:39 GMT", now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:40 1994", now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
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
        let no_jitter = RetryPolicy {
            randomization_factor: 0.0,
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
    }

    #[test]
    fn zero_max_elapsed_time_means_unbounded() {
        let c = RetryConfig {
            max_elapsed_time: tracescale_core::config::HumanDuration::from_secs(0),
            ..RetryConfig::default()
        };
        assert_eq!(RetryPolicy::from(&c).max_elapsed_time, None);
        assert_eq!(policy().max_elapsed_time, Some(Duration::from_secs(300)));
    }
}
