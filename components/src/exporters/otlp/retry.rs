//! When to retry: the OTLP specification's retryable codes and the server's own `Retry-After` /
//! `RetryInfo`. Plain synchronous code; the waits themselves are [`crate::backoff`]'s.

use std::time::{Duration, SystemTime};

use tonic::Code;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
