//! The second baseline: a KEDA-style trigger on requests per second per replica, the scaler
//! most clusters put on a request-serving workload today.
//!
//! KEDA polls the trigger's metric every `pollingInterval` (30 s by default) and hands it to the
//! Horizontal Pod Autoscaler as an external metric with an `AverageValue` target of
//! `threshold` per replica; the HPA then does what it does for any metric (15 s sync, tolerance
//! 0.1, 300 s scale-down stabilisation, the default scale-up rate limit, min/max replicas).
//!
//! The metric of a service is its arrival rate, read like Prometheus'
//! `sum(rate(requests_total[1m]))`: the requests that arrived at the service over the last
//! 60 s of statistics rows, divided by the time those rows cover.
//!
//! The threshold is what an operator would set after a load test: the per-replica capacity
//! times a target utilisation of 0.7 (see [`per_replica_capacity`]).

use std::collections::VecDeque;

use super::config::{SimConfig, secs, to_secs_f64};
use super::engine::Sim;
use super::hpa::{HpaConfig, hpa_finish};
use super::records::{IntervalStats, ScaleAction};
use super::scenario::ReplicaController;

/// Tuning of the requests-per-second baseline; the defaults are KEDA's and the HPA's.
#[derive(Clone, Debug, PartialEq)]
pub struct RpsConfig {
    /// How often the metric is read (KEDA's `pollingInterval`); the HPA sees the last value
    /// read until the next poll.
    pub polling_interval_ns: u64,
    /// The window the rate is taken over (the `[1m]` of a Prometheus `rate`).
    pub rate_window_ns: u64,
    /// Fraction of a replica's capacity the threshold asks for.
    pub target_utilisation: f64,
    /// The HPA acting on the metric.
    pub hpa: HpaConfig,
}

impl Default for RpsConfig {
    fn default() -> Self {
        Self {
            polling_interval_ns: secs(30),
            rate_window_ns: secs(60),
            target_utilisation: 0.7,
            hpa: HpaConfig::default(),
        }
    }
}

/// Mean of a log-normal own-work time with median `median_ns` and shape `sigma`, in seconds.
fn mean_own_work_s(median_ns: u64, sigma: f64) -> f64 {
    to_secs_f64(median_ns) * (sigma * sigma / 2.0).exp()
}

/// How long one visit of the service at `index` holds its slot when nothing queues, in
/// seconds: its mean own work plus, for each call, the callee's own hold time times the
/// expected number of calls (`probability * count`). `None` on a call cycle or unknown callee.
fn healthy_hold_s(cfg: &SimConfig, index: usize, depth: usize) -> Option<f64> {
    let s = cfg.services.get(index)?;
    if depth > cfg.services.len() {
        return None;
    }
    let mut hold = mean_own_work_s(s.median_service_ns, s.service_sigma);
    for call in &s.calls {
        let callee = cfg.services.iter().position(|c| c.name == call.service)?;
        hold += call.probability * f64::from(call.count) * healthy_hold_s(cfg, callee, depth + 1)?;
    }
    Some(hold)
}

/// Requests per second one replica of `service` serves at saturation, as a load test would
/// measure it: `slots_per_replica / hold`, where `hold` is the mean time a request holds its
/// slot at healthy latency (the log-normal's mean `median * exp(sigma² / 2)` plus, for a
/// caller, the healthy hold time of each callee times the expected calls to it), and no more
/// than the replica's cores allow: `cores_per_replica / (cpu_per_request * mean own work)`.
pub fn per_replica_capacity(cfg: &SimConfig, service: &str) -> Option<f64> {
    let index = cfg.services.iter().position(|s| s.name == service)?;
    let s = &cfg.services[index];
    let hold = healthy_hold_s(cfg, index, 0)?;
    if hold <= 0.0 {
        return None;
    }
    let by_slots = f64::from(s.slots_per_replica) / hold;
    let cpu_s = s.cpu_per_request * mean_own_work_s(s.median_service_ns, s.service_sigma);
    let by_cores = if cpu_s > 0.0 {
        s.cores_per_replica / cpu_s
    } else {
        f64::INFINITY
    };
    Some(by_slots.min(by_cores))
}

/// The arrival rate of one service as the trigger reads it: a sliding window of statistics
/// rows, sampled every polling interval, the sample held in between.
#[derive(Clone, Debug)]
pub(super) struct PolledRate {
    window_ns: u64,
    interval_ns: u64,
    /// `(start, end, arrivals)` of the rows in the window, oldest first.
    rows: VecDeque<(u64, u64, u64)>,
    next_poll: u64,
    value: Option<f64>,
}

impl PolledRate {
    /// A rate over `window_ns`, first read at `interval_ns`.
    pub(super) fn new(window_ns: u64, interval_ns: u64) -> Self {
        Self {
            window_ns,
            interval_ns: interval_ns.max(1),
            rows: VecDeque::new(),
            next_poll: interval_ns,
            value: None,
        }
    }

    /// Takes in one closed row of the service.
    pub(super) fn observe(&mut self, start: u64, end: u64, arrivals: u64) {
        self.rows.push_back((start, end, arrivals));
    }

    /// The value the trigger reports at `now`: read afresh if a poll is due, else the last
    /// reading; `None` before the first poll.
    pub(super) fn at(&mut self, now: u64) -> Option<f64> {
        if now >= self.next_poll {
            while self.next_poll <= now {
                self.next_poll = self.next_poll.saturating_add(self.interval_ns);
            }
            let from = now.saturating_sub(self.window_ns);
            while self.rows.front().is_some_and(|&(_, end, _)| end <= from) {
                self.rows.pop_front();
            }
            let covered: u64 = self
                .rows
                .iter()
                .map(|&(start, end, _)| end.min(now).saturating_sub(start.max(from)))
                .sum();
            let arrivals: u64 = self.rows.iter().map(|&(_, _, a)| a).sum();
            if covered > 0 {
                self.value = Some(arrivals as f64 / to_secs_f64(covered));
            }
        }
        self.value
    }
}

/// The HPA's recommendation for an external metric with an `AverageValue` target: the current
/// count while `rate / (threshold * current)` is within the tolerance of 1, else
/// `ceil(rate / threshold)`. Unlike a CPU target, starting replicas do not change it: the
/// metric is the service's total, not an average over ready pods.
pub(super) fn rps_raw_recommendation(
    current: u32,
    rate: f64,
    threshold: f64,
    tolerance: f64,
) -> u32 {
    if current == 0 || !(threshold.is_finite() && threshold > 0.0) || !rate.is_finite() {
        return current;
    }
    let ratio = rate / (threshold * f64::from(current));
    if (ratio - 1.0).abs() <= tolerance {
        return current;
    }
    let want = (rate / threshold).ceil().max(0.0);
    if want >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        want as u32
    }
}

struct RpsService {
    name: String,
    threshold: f64,
    rate: PolledRate,
    history: VecDeque<(u64, u32)>,
}

/// A KEDA-style scaler on requests per second per replica, for every service the CPU baseline
/// manages (those with an HPA target), so both baselines scale the same workloads.
pub struct RpsScaler {
    cfg: RpsConfig,
    next_sync: u64,
    services: Vec<RpsService>,
}

impl RpsScaler {
    /// Thresholds from the shop's configuration; first evaluation one sync period after the
    /// simulator's current time.
    pub fn new(sim: &Sim, shop: &SimConfig, cfg: RpsConfig) -> Self {
        let services = shop
            .services
            .iter()
            .filter(|s| s.hpa_target_utilisation.is_some())
            .filter_map(|s| {
                let capacity = per_replica_capacity(shop, &s.name)?;
                Some(RpsService {
                    name: s.name.clone(),
                    threshold: capacity * cfg.target_utilisation,
                    rate: PolledRate::new(cfg.rate_window_ns, cfg.polling_interval_ns),
                    history: VecDeque::new(),
                })
            })
            .collect();
        Self {
            next_sync: sim.now().saturating_add(cfg.hpa.sync_period_ns),
            cfg,
            services,
        }
    }

    /// Each managed service's threshold, in requests per second per replica.
    pub fn thresholds(&self) -> Vec<(String, f64)> {
        self.services
            .iter()
            .map(|s| (s.name.clone(), s.threshold))
            .collect()
    }
}

impl ReplicaController for RpsScaler {
    fn on_tick(&mut self, sim: &mut Sim, closed: &[IntervalStats]) -> Vec<ScaleAction> {
        for row in closed {
            for rs in &mut self.services {
                if let Some(s) = row.service(&rs.name) {
                    rs.rate.observe(row.start, row.end, s.arrivals);
                }
            }
        }
        let now = sim.now();
        let mut actions = Vec::new();
        let sync = now >= self.next_sync;
        while self.next_sync <= now {
            self.next_sync = self
                .next_sync
                .saturating_add(self.cfg.hpa.sync_period_ns.max(1));
        }
        for rs in &mut self.services {
            // Polled on its own clock, whether or not the HPA syncs now.
            let rate = rs.rate.at(now);
            let (true, Some(rate), Some(current), Some(bounds)) = (
                sync,
                rate,
                sim.replicas(&rs.name),
                sim.replica_bounds(&rs.name),
            ) else {
                continue;
            };
            let raw = rps_raw_recommendation(current, rate, rs.threshold, self.cfg.hpa.tolerance);
            let rec = hpa_finish(&self.cfg.hpa, &mut rs.history, now, current, raw, bounds);
            if rec != current
                && let Ok(Some(a)) = sim.scale(&rs.name, rec)
            {
                actions.push(a);
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulation::presets;

    #[test]
    fn a_known_rate_gives_the_expected_replicas() {
        // 300 req/s against 72 per replica: ceil(4.17) = 5, from any count outside tolerance.
        assert_eq!(rps_raw_recommendation(2, 300.0, 72.0, 0.1), 5);
        assert_eq!(rps_raw_recommendation(8, 300.0, 72.0, 0.1), 5);
        // 150 req/s on 2 replicas is 1.04 of the target: within the tolerance.
        assert_eq!(rps_raw_recommendation(2, 150.0, 72.0, 0.1), 2);
        // 160 req/s is 1.11 of it: one more.
        assert_eq!(rps_raw_recommendation(2, 160.0, 72.0, 0.1), 3);
        // No traffic asks for zero; the bounds keep the minimum.
        assert_eq!(rps_raw_recommendation(3, 0.0, 72.0, 0.1), 0);
        assert_eq!(rps_raw_recommendation(3, f64::NAN, 72.0, 0.1), 3);
    }

    #[test]
    fn scale_down_waits_out_the_stabilisation_window_and_scale_up_is_rate_limited() {
        let cfg = HpaConfig::default();
        let mut history = VecDeque::new();
        let t = secs;
        // A burst recommends 5; the traffic then drops to what 1 replica serves.
        assert_eq!(hpa_finish(&cfg, &mut history, t(15), 2, 5, (1, 10)), 5);
        assert_eq!(hpa_finish(&cfg, &mut history, t(30), 5, 1, (1, 10)), 5);
        assert_eq!(hpa_finish(&cfg, &mut history, t(300), 5, 1, (1, 10)), 5);
        // 300 s after the burst's recommendation it leaves the window.
        assert_eq!(hpa_finish(&cfg, &mut history, t(315), 5, 1, (1, 10)), 1);
        // From 1 replica at most +4 per sync; from 10 at most double; and never above max.
        let mut history = VecDeque::new();
        assert_eq!(hpa_finish(&cfg, &mut history, t(15), 1, 40, (1, 100)), 5);
        assert_eq!(hpa_finish(&cfg, &mut history, t(30), 10, 40, (1, 100)), 20);
        assert_eq!(hpa_finish(&cfg, &mut history, t(45), 20, 40, (1, 30)), 30);
    }

    #[test]
    fn the_polled_rate_holds_its_value_between_polls() {
        let mut rate = PolledRate::new(secs(60), secs(30));
        let feed = |rate: &mut PolledRate, from: u64, to: u64, per_s: u64| {
            for s in from..to {
                rate.observe(secs(s), secs(s + 1), per_s);
            }
        };
        feed(&mut rate, 0, 15, 100);
        assert_eq!(rate.at(secs(15)), None, "no poll before 30 s");
        feed(&mut rate, 15, 30, 100);
        assert_eq!(rate.at(secs(30)), Some(100.0));
        // Four times the traffic, but the trigger is not read again until 60 s.
        feed(&mut rate, 30, 45, 400);
        assert_eq!(rate.at(secs(45)), Some(100.0));
        feed(&mut rate, 45, 60, 400);
        assert_eq!(rate.at(secs(60)), Some(250.0), "(30 * 100 + 30 * 400) / 60");
        // A minute later the window holds only the high rate.
        feed(&mut rate, 60, 90, 400);
        assert_eq!(rate.at(secs(90)), Some(400.0));
    }

    #[test]
    fn thresholds_follow_from_the_configuration() {
        let shop = presets::worker_cap().sim;
        let mean = |median_ms: f64, sigma: f64| median_ms / 1e3 * (sigma * sigma / 2.0_f64).exp();
        // The database: 64 slots, but 3 cores at one core per 5 ms query bound it.
        let db = per_replica_capacity(&shop, "db").unwrap();
        assert!((db - 3.0 / mean(5.0, 0.3)).abs() < 1e-6, "{db}");
        // A worker holds one of 4 slots for its own 25 ms and two healthy queries.
        let hold = mean(25.0, 0.5) + 2.0 * mean(5.0, 0.3);
        let worker = per_replica_capacity(&shop, "worker").unwrap();
        assert!((worker - 4.0 / hold).abs() < 1e-6, "{worker}");
        assert!(per_replica_capacity(&shop, "nope").is_none());
    }
}
