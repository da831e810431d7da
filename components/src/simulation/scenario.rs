//! Experiments and their scoring: a scenario (the shop, its length, its SLO and its ground
//! truth), the controllers that change replicas during a run, and how well they did.

use super::config::{SimConfig, SimError, to_secs_f64};
use super::engine::Sim;
use super::hpa::Hpa;
use super::records::{IntervalStats, ScaleAction, SimSpan};

/// One cause in a scenario, with the service a good scaler should add
/// capacity to and those where added capacity is wasted or harmful.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPhase {
    /// When the cause begins.
    pub start: u64,
    /// When the cause ends.
    pub end: u64,
    /// Service whose scale-up fixes the problem.
    pub right_target: String,
    /// Services whose scale-up is a mistake during this phase.
    pub wrong_targets: Vec<String>,
}

/// A complete experiment: the shop, its length, its SLO and its ground
/// truth. Plain data so it can be loaded from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Short identifier.
    pub name: String,
    /// The simulated shop.
    pub sim: SimConfig,
    /// Simulated length of the run.
    pub duration_ns: u64,
    /// End-to-end p99 latency objective.
    pub slo_latency_ns: u64,
    /// Causes in time order; each lasts until the next starts for the
    /// purpose of attributing actions.
    pub phases: Vec<FaultPhase>,
}

/// Outcome of one fault phase.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseReport {
    /// Phase start.
    pub start: u64,
    /// The phase's right target.
    pub right_target: String,
    /// Seconds from the phase start to the first scale-up of the right
    /// target.
    pub first_correct_action_seconds: Option<f64>,
    /// Scale-ups of wrong targets attributed to this phase.
    pub wrong_target_actions: u32,
}

/// How well a scaler did over a run; comparable across scalers because it
/// only needs the stats rows and the actions taken.
#[derive(Clone, Debug, PartialEq)]
pub struct RunScore {
    /// Seconds in intervals whose end-to-end p99 breaches the SLO, failed
    /// requests counting as infinitely slow.
    pub slo_violation_seconds: f64,
    /// Cost: desired replicas integrated over time, all services.
    pub replica_seconds: f64,
    /// Reaction time of the first phase (see [`PhaseReport`]).
    pub first_correct_action_seconds: Option<f64>,
    /// Wrong-target scale-ups over all phases.
    pub wrong_target_actions: u32,
    /// Per-phase detail.
    pub phases: Vec<PhaseReport>,
}

impl RunScore {
    /// Scores a run from its stats rows and the scaler's actions.
    pub fn compute(scenario: &Scenario, rows: &[IntervalStats], actions: &[ScaleAction]) -> Self {
        let mut slo_violation_seconds = 0.0;
        let mut replica_seconds = 0.0;
        for row in rows {
            let len = to_secs_f64(row.end.saturating_sub(row.start));
            if row.violates(scenario.slo_latency_ns) {
                slo_violation_seconds += len;
            }
            replica_seconds += row
                .services
                .iter()
                .map(|s| f64::from(s.desired_replicas) * len)
                .sum::<f64>();
        }
        let mut phases = Vec::with_capacity(scenario.phases.len());
        for (i, ph) in scenario.phases.iter().enumerate() {
            let until = scenario.phases.get(i + 1).map_or(u64::MAX, |n| n.start);
            let in_phase =
                |a: &&ScaleAction| a.is_scale_up() && a.time >= ph.start && a.time < until;
            let first = actions
                .iter()
                .filter(in_phase)
                .find(|a| a.service == ph.right_target)
                .map(|a| to_secs_f64(a.time - ph.start));
            let wrong = actions
                .iter()
                .filter(in_phase)
                .filter(|a| ph.wrong_targets.contains(&a.service))
                .count();
            phases.push(PhaseReport {
                start: ph.start,
                right_target: ph.right_target.clone(),
                first_correct_action_seconds: first,
                wrong_target_actions: u32::try_from(wrong).unwrap_or(u32::MAX),
            });
        }
        Self {
            slo_violation_seconds,
            replica_seconds,
            first_correct_action_seconds: phases
                .first()
                .and_then(|p| p.first_correct_action_seconds),
            wrong_target_actions: phases.iter().map(|p| p.wrong_target_actions).sum(),
            phases,
        }
    }
}

/// Anything that changes replicas during a run; the common interface lets
/// the HPA baseline and trace-driven scalers be scored the same way.
pub trait ReplicaController {
    /// Sees every span as it completes; trace-driven scalers learn here.
    fn observe_span(&mut self, span: &SimSpan<'_>) {
        let _ = span;
    }

    /// Called after each simulated tick with the rows just closed; returns
    /// the replica changes made.
    fn on_tick(&mut self, sim: &mut Sim, closed: &[IntervalStats]) -> Vec<ScaleAction>;
}

impl ReplicaController for Hpa {
    fn on_tick(&mut self, sim: &mut Sim, _closed: &[IntervalStats]) -> Vec<ScaleAction> {
        self.step(sim)
    }
}

/// Leaves replicas alone: the do-nothing reference.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoScaling;

impl ReplicaController for NoScaling {
    fn on_tick(&mut self, _sim: &mut Sim, _closed: &[IntervalStats]) -> Vec<ScaleAction> {
        Vec::new()
    }
}

/// A replica change fixed in advance, for oracle runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledStep {
    /// Earliest time to apply it.
    pub at: u64,
    /// Service to scale.
    pub service: String,
    /// Desired replicas.
    pub replicas: u32,
}

/// Applies fixed replica changes at given times, e.g. "the right action ten
/// seconds after the fault", to bound what a scaler could achieve.
#[derive(Clone, Debug, Default)]
pub struct ScheduledScaler {
    steps: Vec<ScheduledStep>,
    next: usize,
}

impl ScheduledScaler {
    /// Steps are applied in time order at the first tick at or after each.
    pub fn new(mut steps: Vec<ScheduledStep>) -> Self {
        steps.sort_by_key(|s| s.at);
        Self { steps, next: 0 }
    }
}

impl ReplicaController for ScheduledScaler {
    fn on_tick(&mut self, sim: &mut Sim, _closed: &[IntervalStats]) -> Vec<ScaleAction> {
        let mut actions = Vec::new();
        while let Some(step) = self.steps.get(self.next) {
            if step.at > sim.now() {
                break;
            }
            if let Ok(Some(a)) = sim.scale(&step.service, step.replicas) {
                actions.push(a);
            }
            self.next += 1;
        }
        actions
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// One row per statistics interval.
    pub rows: Vec<IntervalStats>,
    /// Replica changes made by the scaler.
    pub actions: Vec<ScaleAction>,
    /// Score of the run.
    pub report: RunScore,
    /// Number of spans produced.
    pub spans: u64,
}

/// Runs a scenario to its end, ticking the scaler once per statistics
/// interval.
pub fn run_scenario(
    scenario: &Scenario,
    scaler: &mut dyn ReplicaController,
) -> Result<RunResult, SimError> {
    let mut sim = Sim::new(&scenario.sim)?;
    let tick = scenario.sim.stats_interval_ns;
    let mut rows = Vec::new();
    let mut actions = Vec::new();
    let mut t = 0u64;
    while t < scenario.duration_ns {
        t = t.saturating_add(tick).min(scenario.duration_ns);
        let closed = sim.advance_to(t, &mut |s| scaler.observe_span(s));
        actions.extend(scaler.on_tick(&mut sim, &closed));
        rows.extend(closed);
    }
    let report = RunScore::compute(scenario, &rows, &actions);
    Ok(RunResult {
        rows,
        actions,
        report,
        spans: sim.spans_emitted(),
    })
}
