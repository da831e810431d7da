//! The baseline trace-driven scaling is compared against: the Kubernetes Horizontal Pod
//! Autoscaler on simulated CPU utilisation.

use std::collections::VecDeque;

use super::config::secs;
use super::engine::Sim;
use super::records::ScaleAction;

/// Tuning of the HPA baseline; the defaults are the Kubernetes defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct HpaConfig {
    /// Time between evaluations (controller sync period).
    pub sync_period_ns: u64,
    /// Relative deviation from the target that is ignored.
    pub tolerance: f64,
    /// Window whose highest recommendation bounds a scale-down.
    pub downscale_stabilisation_ns: u64,
    /// Caps each scale-up at `max(2 * current, current + 4)`, the default
    /// scale-up policy.
    pub limit_scale_up_rate: bool,
}

impl Default for HpaConfig {
    fn default() -> Self {
        Self {
            sync_period_ns: secs(15),
            tolerance: 0.1,
            downscale_stabilisation_ns: secs(300),
            limit_scale_up_rate: true,
        }
    }
}

struct HpaService {
    name: String,
    target: f64,
    last_busy: f64,
    last_capacity: f64,
    history: VecDeque<(u64, u32)>,
}

/// What the HPA controller does with a raw recommendation, whatever the metric: remembers it,
/// applies the scale-down stabilisation window and the default scale-up rate limit, and keeps
/// the result within the service's replica bounds.
pub(super) fn hpa_finish(
    cfg: &HpaConfig,
    history: &mut VecDeque<(u64, u32)>,
    now: u64,
    current: u32,
    raw: u32,
    (lo, hi): (u32, u32),
) -> u32 {
    let window = cfg.downscale_stabilisation_ns;
    while history
        .front()
        .is_some_and(|&(t, _)| t.saturating_add(window) <= now)
    {
        history.pop_front();
    }
    history.push_back((now, raw));
    let mut rec = hpa_stabilise(current, raw, history);
    if cfg.limit_scale_up_rate && rec > current {
        rec = rec.min(current.saturating_mul(2).max(current.saturating_add(4)));
    }
    rec.clamp(lo, hi)
}

/// The Kubernetes Horizontal Pod Autoscaler on CPU utilisation, as the
/// baseline that trace-driven scaling is compared against.
pub struct Hpa {
    cfg: HpaConfig,
    next_sync: u64,
    services: Vec<HpaService>,
}

/// Unstabilised HPA recommendation. Starting replicas count as idle when
/// scaling up, as the controller does, so a scale-up already under way is
/// not repeated.
pub(super) fn hpa_raw_recommendation(
    current: u32,
    ready: u32,
    utilisation: f64,
    target: f64,
    tolerance: f64,
) -> u32 {
    if current == 0 || target.is_nan() || target <= 0.0 || !utilisation.is_finite() {
        return current;
    }
    let mut ratio = utilisation / target;
    if (ratio - 1.0).abs() <= tolerance {
        return current;
    }
    if ratio > 1.0 && ready < current {
        ratio *= f64::from(ready) / f64::from(current);
        if ratio <= 1.0 + tolerance {
            return current;
        }
    }
    let want = (f64::from(current) * ratio).ceil();
    if want >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        want as u32
    }
}

/// Applies the stabilisation windows: scale-up immediately, scale-down only
/// to the highest recommendation in the window (`history` holds it,
/// including the newest).
pub(super) fn hpa_stabilise(current: u32, raw: u32, history: &VecDeque<(u64, u32)>) -> u32 {
    let down = history
        .iter()
        .map(|&(_, r)| r)
        .max()
        .unwrap_or(raw)
        .max(raw);
    let mut rec = current;
    if rec < raw {
        rec = raw;
    }
    if rec > down {
        rec = down;
    }
    rec
}

impl Hpa {
    /// Manages every service with an HPA target; first evaluation one sync
    /// period after the current time so it sees a full window.
    pub fn new(sim: &Sim, cfg: HpaConfig) -> Self {
        let services = sim
            .service_names()
            .iter()
            .filter_map(|name| {
                let target = sim.hpa_target(name)?;
                let (b, c) = sim.cpu_totals(name)?;
                Some(HpaService {
                    name: name.clone(),
                    target,
                    last_busy: b,
                    last_capacity: c,
                    history: VecDeque::new(),
                })
            })
            .collect();
        Self {
            next_sync: sim.now().saturating_add(cfg.sync_period_ns),
            cfg,
            services,
        }
    }

    /// Evaluates if a sync is due at the simulator's current time and
    /// returns the replica changes made.
    pub fn step(&mut self, sim: &mut Sim) -> Vec<ScaleAction> {
        let now = sim.now();
        let mut actions = Vec::new();
        if now < self.next_sync {
            return actions;
        }
        while self.next_sync <= now {
            self.next_sync = self
                .next_sync
                .saturating_add(self.cfg.sync_period_ns.max(1));
        }
        for hs in &mut self.services {
            let (Some((b, c)), Some(current), Some(ready), Some(bounds)) = (
                sim.cpu_totals(&hs.name),
                sim.replicas(&hs.name),
                sim.ready_replicas(&hs.name),
                sim.replica_bounds(&hs.name),
            ) else {
                continue;
            };
            let (db, dc) = (b - hs.last_busy, c - hs.last_capacity);
            hs.last_busy = b;
            hs.last_capacity = c;
            if dc <= 0.0 {
                continue;
            }
            let raw =
                hpa_raw_recommendation(current, ready, db / dc, hs.target, self.cfg.tolerance);
            let rec = hpa_finish(&self.cfg, &mut hs.history, now, current, raw, bounds);
            if rec != current
                && let Ok(Some(a)) = sim.scale(&hs.name, rec)
            {
                actions.push(a);
            }
        }
        actions
    }
}
