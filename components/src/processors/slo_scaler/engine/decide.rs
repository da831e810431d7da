//! The decisions: the culprit of a burning objective and its size, the way back down, and how
//! each is explained.

use std::fmt::Write as _;
use std::time::Duration;

use tracescale_core::signal::{Decision, Evidence, MAX_EXEMPLARS, ReplicaLimits, ScaleChange};

use super::super::window::{ServiceSecond, slope};
use super::risk::{Growing, GrowingPart};
use super::{
    Baseline, Engine, MAX_WORK_RATIO, SAME_LOAD, SATURATED_WAIT_NS, SATURATED_WAIT_SHARE,
    SLOWER_WORK, SlowWork, TREND_SECONDS, Workload,
};
use crate::tracetree::Symbol;
/// What a saturated service's queue says about its load.
/// Visits beyond this many times what the entry traffic explains are an upstream backlog.
const BACKLOG_EXCESS: f64 = 1.1;

pub(super) struct QueueLoad {
    /// Seconds of wait gained per second.
    growth: f64,
    /// The wait of the visits that ended last, seconds.
    last_wait: f64,
    /// The share of visits turned away.
    turned_away: f64,
    /// Arrivals over capacity.
    pub(super) load: f64,
    /// Arrivals over the visits served, counted: no more than the arrivals seen, where the
    /// growth of the wait also reads the capacity that slots held by slow calls have lost.
    pub(super) arrived: f64,
}

/// Why an objective's culprit is sought.
#[derive(Debug, Clone, Copy)]
pub(super) enum Trigger {
    /// The objective burns its error budget this many times as fast as allowed, over the short
    /// and the long window.
    Burning { short: f64, long: f64 },
    /// Not burning yet: the latency of a service on its path keeps growing.
    Growing(Growing),
}

/// A decision's explanation, one service's line.
struct Share {
    name: String,
    now: ServiceSecond,
    base: Option<Baseline>,
}

impl Engine {
    pub(super) fn scale_up(
        &mut self,
        objective: usize,
        trigger: Trigger,
        end: u64,
        now: u64,
        out: &mut Vec<Decision>,
    ) {
        let short = self.settings.short_window_s;
        // A growing queue is caught at its onset, when the short window is still mostly the
        // seconds before it: the services are compared over the seconds that showed it.
        let window = match trigger {
            Trigger::Burning { .. } => short,
            Trigger::Growing(_) => self.recent_s(),
        };
        // Every service on the objectives' paths, by growth against its healthy share.
        let ranking = self.rank(end, window);
        let shares: Vec<(Symbol, Share)> = ranking
            .iter()
            .map(|s| {
                let share = Share {
                    name: self.catalog.service_name(s.service).to_string(),
                    now: self.seconds.service(s.service, end, window),
                    base: self.services.get(&s.service).and_then(|st| st.baseline),
                };
                (s.service, share)
            })
            .collect();
        tracing::debug!(
            objective = %self.settings.objectives[objective].name,
            ranking = ?ranking
                .iter()
                .take(5)
                .map(|s| (self.catalog.service_name(s.service), (s.growth / 1e6).round(), s.symptom, s.traces))
                .collect::<Vec<_>>(),
            "ranked"
        );
        let culprit = ranking
            .iter()
            .find(|s| s.can_be_culprit() && self.workload(s.service).is_some())
            .map(|s| s.service);
        let Some(culprit) = culprit else {
            if let Trigger::Burning { .. } = trigger {
                self.counters.no_culprit += 1;
            }
            return;
        };
        let Some(workload) = self.workload(culprit) else {
            return;
        };
        if self.settling(culprit, now) {
            // Replicas it was just given have begun to serve: the window's figures are of the
            // load they are taking over, so size again once a window has seen them.
            tracing::debug!(
                objective = %self.settings.objectives[objective].name,
                culprit = %workload.target,
                "not sizing while new replicas settle in"
            );
            return;
        }
        let pods = self.pods(culprit, now);
        // Sized from the last few seconds: at the onset of an overload the short window is
        // still mostly the seconds before it, and a size read there falls short.
        let sizing = self.recent_s();
        let culprit_v = self.seconds.service(culprit, end, sizing);
        let base = self.services.get(&culprit).and_then(|s| s.baseline);
        let Some((occupancy, own_work, wait)) = culprit_v.per_visit() else {
            return;
        };
        let rate = culprit_v.visits as f64 / sizing as f64;
        let mut size = String::new();
        let mut ratio: f64 = 0.0;
        if saturated(wait, occupancy)
            && let Some(q) = self.queue_load(culprit, &culprit_v, sizing, end)
        {
            // More visits than the entry traffic explains, at a wait that is not growing: an
            // upstream backlog draining through the service (a dependency recovered, and its
            // callers now send what they held). It passes without help: size for the traffic.
            let backlog = q.growth <= 0.0
                && q.turned_away == 0.0
                && self
                    .entry_explained_rate(objective, culprit, end)
                    .is_some_and(|expected| rate > BACKLOG_EXCESS * expected);
            let drains_by_itself = backlog
                || (q.growth < 0.0 && q.last_wait / -q.growth <= self.settings.drain_within_s);
            if !drains_by_itself {
                let need = (1.0 / self.settings.target_utilisation)
                    .max(1.0 + q.last_wait / self.settings.drain_within_s);
                ratio = q.load * need;
                let _ = write!(
                    size,
                    "{pods} replicas serve {rate:.0} visits/s, each waiting {:.0}ms (growing {:+.2} s/s, {:.0} % turned away: arrivals {:.2}× capacity); for {:.0} % utilisation and the backlog to drain within {:.0}s",
                    wait / 1e6,
                    q.growth,
                    q.turned_away * 100.0,
                    q.load,
                    self.settings.target_utilisation * 100.0,
                    self.settings.drain_within_s
                );
            }
        }
        let mut slower = false;
        if let Some(b) = base
            && b.own_work > 0.0
            && own_work > SLOWER_WORK * b.own_work
        {
            let work = (own_work / b.own_work).min(MAX_WORK_RATIO);
            slower = rate <= SAME_LOAD * b.rate;
            // Slower under more visits than it had healthy, when those visits are a backlog
            // passing through: more than the entry traffic explains, or sent by a caller
            // whose queue drains by itself (it was just given replicas). The extra load ends
            // with the backlog, before replicas started now would serve.
            let passing = !slower
                && (self
                    .entry_explained_rate(objective, culprit, end)
                    .is_some_and(|expected| rate > BACKLOG_EXCESS * expected)
                    || self.draining_caller(culprit, end).is_some());
            if passing {
                tracing::debug!(
                    objective = %self.settings.objectives[objective].name,
                    culprit = %workload.target,
                    "not sizing from own work: its extra load is a backlog passing through"
                );
            } else if slower && self.settings.slow_work == SlowWork::Hold {
                tracing::info!(
                    objective = %self.settings.objectives[objective].name,
                    culprit = %workload.target,
                    "holding: the culprit's own work is slower at the same load, which more replicas may not fix"
                );
                return;
            }
            if !passing && work > ratio {
                ratio = work;
                size.clear();
                let _ = write!(
                    size,
                    "{pods} replicas serve {rate:.0} visits/s at {:.1}ms own work each against {:.1}ms healthy: {work:.2}× the capacity",
                    own_work / 1e6,
                    b.own_work / 1e6
                );
            }
        }
        if pods == 0 || ratio <= 1.0 {
            // A queue draining by itself, or no replica count to size from.
            return;
        }
        let desired = (f64::from(pods) * ratio).ceil().min(f64::from(u32::MAX)) as u32;
        let desired = clamp(desired, &workload);
        // Replicas asked for lately may still be starting, unseen in the traces: a size under
        // them would scale the workload down.
        if desired <= pods.max(self.recently_asked(culprit, now))
            || !self.due(culprit, now, desired, true)
        {
            return;
        }
        let o = &self.settings.objectives[objective];
        let mut reason = format!(
            "objective {:?} ({} {} p{} ≤ {}ms) ",
            o.name,
            o.service,
            o.operation,
            o.percentile,
            o.target_ns / 1_000_000,
        );
        match trigger {
            Trigger::Burning { short: s, long: l } => {
                let _ = write!(
                    reason,
                    "burns its error budget {s:.1}× ({short}s) and {l:.1}× ({}s)",
                    self.settings.long_window_s
                );
            }
            Trigger::Growing(g) => {
                let name = self.catalog.service_name(g.service);
                let growth = g.growth;
                let _ = match g.part {
                    GrowingPart::Wait => write!(
                        reason,
                        "is at risk: the queue of {name} on its path grows {growth:+.2} s/s (its visits wait {:.0}ms), more arrive than it serves",
                        g.now * 1e3
                    ),
                    GrowingPart::Work { healthy } => write!(
                        reason,
                        "is at risk: the own work of {name} on its path grows {growth:+.2} s/s ({:.0}ms a visit, {:.0}ms healthy), its visits contend for what it has",
                        g.now * 1e3,
                        healthy * 1e3
                    ),
                };
            }
        }
        let _ = write!(
            reason,
            "; culprit {}: on the critical path",
            self.catalog.service_name(culprit)
        );
        for (symbol, share, ..) in shares.iter().take(4) {
            let _ = write!(reason, " {}", describe(share));
            if *symbol != culprit && share.now.cp_downstream > 0 {
                reason.push(',');
            }
        }
        let _ = write!(reason, "; size: {size} → {pods} to {desired} replicas");
        if slower {
            reason.push_str(
                "; its own work is slower at the same load, which more replicas may not fix",
            );
        }
        let evidence = self.evidence(objective, end);
        out.push(self.decision(&workload, desired, &o.name.clone(), reason, evidence, now));
        if let Some(s) = self.services.get_mut(&culprit) {
            s.last_decision = Some((now, desired));
        }
    }

    /// A service upstream of `service` (its caller, their callers and so on) that is
    /// saturated and whose queue drains within `drain_within` by itself: what it held flows
    /// down every call path below it.
    fn draining_caller(&self, service: Symbol, end: u64) -> Option<Symbol> {
        let short = self.settings.short_window_s;
        let edges = self.seconds.edges(end, short);
        let mut seen = vec![service];
        let mut next = vec![service];
        while let Some(callee) = next.pop() {
            for &(caller, _) in edges
                .keys()
                .filter(|&&(caller, c)| c == callee && caller != c)
            {
                if seen.contains(&caller) {
                    continue;
                }
                seen.push(caller);
                next.push(caller);
                let v = self.seconds.service(caller, end, short);
                let draining = v
                    .per_visit()
                    .is_some_and(|(occupancy, _, wait)| saturated(wait, occupancy))
                    && self.queue_load(caller, &v, short, end).is_some_and(|q| {
                        q.growth < 0.0 && q.last_wait / -q.growth <= self.settings.drain_within_s
                    });
                if draining {
                    return Some(caller);
                }
            }
        }
        None
    }

    /// The visits per second of `service` that the objective's entry traffic explains now: its
    /// healthy rate scaled by how the entry's arrivals compare with theirs when healthy.
    ///
    /// The entry's arrivals are counted in seconds old enough for their visits to have ended,
    /// as [`Engine::queue_load`] counts a service's: while the entry's visits take seconds, the
    /// latest seconds hold only the few arrivals that already ended, and every service behind
    /// the entry would look like a backlog passing through. Whichever count is higher: a
    /// backlog is named only when the service serves more than the entry's traffic explains.
    fn entry_explained_rate(&self, objective: usize, service: Symbol, end: u64) -> Option<f64> {
        let (entry, _) = self.keys.get(objective).copied().flatten()?;
        let entry_base = self.services.get(&entry)?.baseline?.rate;
        let base = self.services.get(&service)?.baseline?.rate;
        let visit_s = self
            .seconds
            .service(entry, end, 1)
            .per_visit()
            .map_or(0.0, |(occupancy, _, wait)| (occupancy + wait) / 1e9);
        let lag = (visit_s.ceil() as u64).saturating_add(1);
        let short = self.settings.short_window_s;
        // The latest seconds too: at a step in the traffic the older ones lag behind it.
        let entry_now = self
            .seconds
            .arrival_rate(entry, end.saturating_sub(lag), short)
            .max(self.seconds.arrival_rate(entry, end, short));
        (entry_base > 0.0).then(|| base * entry_now / entry_base)
    }

    /// Arrivals over capacity of a saturated service, from the trend of its visits' wait
    /// (`λ/μ = 1/(1 - g)`) and the share it turned away; None without a trend to read. `v` is
    /// the service over the `len` seconds up to `end`.
    pub(super) fn queue_load(
        &self,
        service: Symbol,
        v: &ServiceSecond,
        len: u64,
        end: u64,
    ) -> Option<QueueLoad> {
        // The trend of the last few seconds: an older onset is not today's growth.
        let growth =
            slope(&self.seconds.wait_series(service, end, self.recent_s()))?.clamp(-0.9, 0.9);
        let last_wait = self
            .seconds
            .wait_series(service, end, 1)
            .first()
            .map_or(0.0, |p| p.1);
        // A full queue turns arrivals away: then they show as errors, not as wait.
        let served = v.served().max(1);
        let turned_away = v.errors as f64 / v.visits.max(1) as f64;
        // Arrivals counted by arrival time, in seconds old enough for their visits to have
        // ended, over the visits served per second now.
        let lag = (last_wait.ceil() as u64).saturating_add(1);
        let arrived = self
            .seconds
            .arrival_rate(service, end.saturating_sub(lag), TREND_SECONDS);
        let served_rate = served as f64 / len as f64;
        let counted = if served_rate > 0.0 {
            arrived / served_rate
        } else {
            1.0
        };
        let arrived = (v.visits as f64 / served as f64).max(counted);
        Some(QueueLoad {
            growth,
            last_wait,
            turned_away,
            load: (1.0 / (1.0 - growth)).max(arrived),
            arrived,
        })
    }

    pub(super) fn scale_down(&mut self, end: u64, now: u64, out: &mut Vec<Decision>) {
        let short = self.settings.short_window_s;
        let symbols: Vec<Symbol> = self.services.keys().copied().collect();
        for symbol in symbols {
            let Some(workload) = self.workload(symbol) else {
                continue;
            };
            let pods = self.pods(symbol, now);
            let v = self.seconds.service(symbol, end, short);
            let Some((occupancy, own_work, _)) = v.per_visit() else {
                continue;
            };
            let Some(state) = self.services.get(&symbol) else {
                continue;
            };
            if pods <= 1 {
                continue;
            }
            // Served visits: their occupancy is what holds the slots.
            let rate = v.served() as f64 / short as f64;
            let (recommended, how) = match state.slots_per_pod {
                Some(slots) if slots > 0.0 => {
                    let need = rate * occupancy / 1e9 / (self.settings.target_utilisation * slots);
                    (
                        (need.ceil().max(1.0).min(f64::from(u32::MAX))) as u32,
                        format!(
                            "{rate:.0} visits/s × {:.1}ms held = {:.1} busy slots; {slots:.1} slots a replica at {:.0} %",
                            occupancy / 1e6,
                            rate * occupancy / 1e9,
                            self.settings.target_utilisation * 100.0
                        ),
                    )
                }
                _ => {
                    let at_baseline = state
                        .baseline
                        .is_some_and(|b| own_work <= SLOWER_WORK * b.own_work);
                    let Some(known) = state.healthy_rate_per_pod.filter(|r| *r > 0.0) else {
                        continue;
                    };
                    if !at_baseline {
                        continue;
                    }
                    (
                        ((rate / known).ceil().max(1.0).min(f64::from(u32::MAX))) as u32,
                        format!(
                            "{rate:.0} visits/s; its capacity was never reached, and one replica carried {known:.0}/s healthy"
                        ),
                    )
                }
            };
            let window = self.settings.scale_down_after_ns;
            let Some(state) = self.services.get_mut(&symbol) else {
                continue;
            };
            state.down_history.push_back((now, recommended));
            while state
                .down_history
                .front()
                .is_some_and(|&(t, _)| t.saturating_add(window) < now)
            {
                state.down_history.pop_front();
            }
            let stabilised = state
                .down_history
                .iter()
                .map(|&(_, r)| r)
                .max()
                .unwrap_or(recommended);
            let desired = clamp(stabilised, &workload);
            if desired >= pods || !self.due(symbol, now, desired, false) {
                continue;
            }
            let reason = format!(
                "every objective within its error budget for {}s; {}: {how} → {pods} to {desired} replicas",
                window / 1_000_000_000,
                self.catalog.service_name(symbol)
            );
            out.push(self.decision(
                &workload,
                desired,
                "slo_scaler",
                reason,
                Evidence {
                    window: Duration::from_secs(short),
                    window_count: v.visits,
                    ..Evidence::default()
                },
                now,
            ));
            if let Some(s) = self.services.get_mut(&symbol) {
                s.last_decision = Some((now, desired));
                // The next step down needs a full period of its own.
                s.down_history.clear();
            }
            // Calm restarts, so scale-downs come one period apart.
            self.healthy_since = Some(now);
        }
    }

    /// The size last asked for, within `scale_down_after` of asking; else 0.
    fn recently_asked(&self, service: Symbol, now: u64) -> u32 {
        match self.services.get(&service).and_then(|s| s.last_decision) {
            Some((at, asked)) if now.saturating_sub(at) < self.settings.scale_down_after_ns => {
                asked
            }
            _ => 0,
        }
    }

    /// True when a decision for `desired` replicas may go now: not the same size within the
    /// cooldown (a larger scale-up may).
    fn due(&self, service: Symbol, now: u64, desired: u32, up: bool) -> bool {
        match self.services.get(&service).and_then(|s| s.last_decision) {
            Some((at, last)) if now.saturating_sub(at) < self.settings.cooldown_ns => {
                up && desired > last
            }
            _ => true,
        }
    }

    fn evidence(&self, objective: usize, end: u64) -> Evidence {
        let short = self.settings.short_window_s;
        let mut latencies = Vec::new();
        let mut slowest: Vec<(u64, [u8; 16])> = Vec::new();
        let (mut traces, mut bad) = (0, 0);
        for s in self.seconds.range(end, short) {
            if let Some(o) = s.objectives.get(objective) {
                traces += o.traces;
                bad += o.bad;
                latencies.extend_from_slice(&o.latencies);
                slowest.extend_from_slice(&o.slowest);
            }
        }
        latencies.sort_unstable();
        slowest.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let at = |p: f64| {
            Duration::from_nanos(crate::stats::percentile(&latencies, p).unwrap_or_default())
        };
        Evidence {
            window: Duration::from_secs(short),
            window_count: traces,
            breaches: bad,
            p50: at(50.0),
            p95: at(95.0),
            p99: at(99.0),
            exemplars: slowest
                .iter()
                .take(MAX_EXEMPLARS)
                .map(|(_, id)| const_hex::encode(id))
                .collect(),
            anomaly_score: None,
        }
    }

    fn decision(
        &mut self,
        workload: &Workload,
        desired: u32,
        rule: &str,
        reason: String,
        evidence: Evidence,
        now: u64,
    ) -> Decision {
        self.counters.decisions += 1;
        Decision {
            target: workload.target.clone(),
            change: ScaleChange::To(desired),
            limits: ReplicaLimits {
                min: workload.min,
                max: workload.max,
            },
            rule: rule.to_string(),
            reason,
            evidence,
            resources: None,
            timestamp_unix_nano: now,
        }
    }
}

pub(super) fn saturated(wait: f64, occupancy: f64) -> bool {
    wait > SATURATED_WAIT_NS && wait > SATURATED_WAIT_SHARE * occupancy
}

fn clamp(desired: u32, w: &Workload) -> u32 {
    desired
        .max(w.min.unwrap_or(1))
        .min(w.max.unwrap_or(u32::MAX))
}

/// "db own 210ms (12ms), queueing 85ms (4ms)": per objective trace, now (healthy).
fn describe(share: &Share) -> String {
    let n = share.now.objective_traces.max(1) as f64;
    let ms = |v: u64| v as f64 / n / 1e6;
    let mut s = format!(
        "{} own {:.0}ms, queueing {:.0}ms, downstream {:.0}ms",
        share.name,
        ms(share.now.cp_own),
        ms(share.now.cp_queueing + share.now.cp_response),
        ms(share.now.cp_downstream)
    );
    if let Some(b) = share.base {
        let _ = write!(s, " (healthy share {:.0}ms)", b.cp_share / 1e6);
    }
    s
}
