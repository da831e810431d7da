//! The process-wide memory limiter, in the manner of the Collector's `memory_limiter`: the
//! resident set size is sampled on a short interval; above the soft limit (the limit minus a
//! spike allowance) receivers refuse new data with their protocol's back-off answer, and at the
//! hard limit `/readyz` fails too, so that an orchestrator stops sending traffic.
//!
//! The level is process-wide state on purpose: memory is one budget for every pipeline.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::health::HealthHandle;

/// How often the resident set size is read.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How close the process is to its memory limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Below the soft limit, or no limit configured.
    Normal,
    /// Above the soft limit: receivers refuse new data.
    Soft,
    /// At or above the hard limit: receivers refuse and `/readyz` fails.
    Hard,
}

static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The current level, as last sampled. Cheap: one relaxed atomic load.
pub fn pressure() -> Pressure {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Pressure::Normal,
        1 => Pressure::Soft,
        _ => Pressure::Hard,
    }
}

fn set(p: Pressure) {
    LEVEL.store(p as u8, Ordering::Relaxed);
}

/// The resident set size of this process in bytes, from `/proc/self/status` (Linux).
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The limits, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Refuse new data above this many resident bytes.
    pub soft: u64,
    /// Fail `/readyz` too at this many.
    pub hard: u64,
}

impl Limits {
    /// The level `rss` is at.
    pub fn level(&self, rss: u64) -> Pressure {
        if rss >= self.hard {
            Pressure::Hard
        } else if rss >= self.soft {
            Pressure::Soft
        } else {
            Pressure::Normal
        }
    }
}

/// Samples the resident set size until `stop`, keeping [`pressure`] and the health of
/// `service/memory_limiter` up to date, and logging each change of level.
pub async fn run(limits: Limits, health: HealthHandle, stop: CancellationToken) {
    if resident_bytes().is_none() {
        tracing::warn!(
            "memory_limit is set, but this system does not report resident memory; it is not enforced"
        );
        return;
    }
    health.ready(None);
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was = Pressure::Normal;
    let gauge = metrics::gauge!("tracescale_process_resident_memory_bytes");
    let refusing = metrics::gauge!("tracescale_memory_limiter_level");
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let Some(rss) = resident_bytes() else {
            continue;
        };
        gauge.set(rss as f64);
        let now = limits.level(rss);
        set(now);
        refusing.set(f64::from(now as u8));
        if now != was {
            let mib = |b: u64| b / (1024 * 1024);
            match now {
                Pressure::Normal => {
                    tracing::info!(
                        rss_mib = mib(rss),
                        "memory back under the soft limit; accepting data again"
                    );
                    health.ready(None);
                }
                Pressure::Soft => {
                    tracing::warn!(
                        rss_mib = mib(rss),
                        soft_limit_mib = mib(limits.soft),
                        "memory above the soft limit; receivers refuse new data"
                    );
                    health.ready(Some(format!(
                        "refusing new data: {} MiB resident, soft limit {} MiB",
                        mib(rss),
                        mib(limits.soft)
                    )));
                }
                Pressure::Hard => {
                    tracing::warn!(
                        rss_mib = mib(rss),
                        limit_mib = mib(limits.hard),
                        "memory at the hard limit; not ready"
                    );
                    health.not_ready(format!(
                        "{} MiB resident, memory_limit {} MiB",
                        mib(rss),
                        mib(limits.hard)
                    ));
                }
            }
            was = now;
        }
    }
    set(Pressure::Normal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_limits() {
        let l = Limits {
            soft: 80,
            hard: 100,
        };
        assert_eq!(l.level(0), Pressure::Normal);
        assert_eq!(l.level(79), Pressure::Normal);
        assert_eq!(l.level(80), Pressure::Soft);
        assert_eq!(l.level(99), Pressure::Soft);
        assert_eq!(l.level(100), Pressure::Hard);
    }

    #[test]
    fn this_process_reports_its_resident_memory() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|b| b > 0));
        }
    }
}
