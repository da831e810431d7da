//! What puts an objective at risk before it burns: a service on its path whose latency keeps
//! growing, its queue's wait or its own work. Either means more arrives than it serves, and
//! every objective behind it will breach, however high its target, given time; waiting for
//! the burn only adds the backlog that has to drain.

use super::super::window::slope;
use super::decide::saturated;
use super::{Engine, SLOWER_WORK, TREND_SECONDS};
use crate::tracetree::Symbol;

/// A saturated queue gaining this much wait a second (arrivals about 5 % past what it
/// serves), or own work past its baseline gaining this much a second, is an overload on its way
/// to every objective behind it.
const ANTICIPATE_GROWTH: f64 = 0.05;

/// A service whose latency keeps growing.
#[derive(Debug, Clone, Copy)]
pub(super) struct Growing {
    pub(super) service: Symbol,
    pub(super) part: GrowingPart,
    /// Seconds gained per second, per visit.
    pub(super) growth: f64,
    /// Its latest second's value per visit, seconds.
    pub(super) now: f64,
}

/// What part of a visit keeps growing.
#[derive(Debug, Clone, Copy)]
pub(super) enum GrowingPart {
    /// The wait to be served: a queue.
    Wait,
    /// The own work, past its healthy `healthy` seconds: visits contending inside the service.
    Work { healthy: f64 },
}

impl Engine {
    /// Services on an objective's path, with a workload and replicas serving, whose latency
    /// keeps growing: every objective behind them will breach, however high its target, given
    /// time. Either their visits lately waited longer than they were served and the wait keeps
    /// growing (more arrive than they serve: a queue), or their own work is past its baseline
    /// and keeps growing (visits contending for cores: the queue is inside the work).
    pub(super) fn growing(&self, end: u64, now: u64) -> Vec<Growing> {
        let mut growing = Vec::new();
        for (&symbol, state) in &self.services {
            if state.objectives.is_empty()
                || self.pods(symbol, now) == 0
                || self.workload(symbol).is_none()
            {
                continue;
            }
            let recent = self.seconds.service(symbol, end, TREND_SECONDS);
            let Some((occupancy, own_work, wait)) = recent.per_visit() else {
                continue;
            };
            // A queue's wait builds up: its trend is its growth. Own work can also step up and
            // stay (a slowdown that happened, not one that goes on): it must have risen in each
            // of the last three seconds, since the second a step happened in holds a mix of
            // before and after, and two rises can be that mix and the step.
            if saturated(wait, occupancy)
                && let Some((growth, last)) =
                    trend(&self.seconds.wait_series(symbol, end, TREND_SECONDS))
            {
                growing.push(Growing {
                    service: symbol,
                    part: GrowingPart::Wait,
                    growth,
                    now: last,
                });
            } else if let Some(b) = state.baseline
                && own_work > SLOWER_WORK * b.own_work
                && let work = self.seconds.work_series(symbol, end, TREND_SECONDS)
                && last_rises(&work) >= 3
                && let Some((growth, last)) = trend(&work)
            {
                growing.push(Growing {
                    service: symbol,
                    part: GrowingPart::Work {
                        healthy: b.own_work / 1e9,
                    },
                    growth,
                    now: last,
                });
            }
        }
        growing
    }
}

/// (growth a second, latest value) of a series that grows by at least [`ANTICIPATE_GROWTH`] a
/// second.
fn trend(series: &[(f64, f64)]) -> Option<(f64, f64)> {
    let last = series.last()?.1;
    slope(series)
        .filter(|g| *g >= ANTICIPATE_GROWTH)
        .map(|g| (g, last))
}

/// How many of a series' last steps rose, counted back from its latest.
fn last_rises(series: &[(f64, f64)]) -> usize {
    series
        .windows(2)
        .rev()
        .take_while(|w| w[1].1 > w[0].1)
        .count()
}
