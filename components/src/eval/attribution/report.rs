//! The figures of an attribution replay: per fault, the culprit the rankings named inside its
//! window; per fault type and over the latency faults, how often that was the injected service.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::faults::Fault;
use super::replay::{DerivedObjective, Replay};
use crate::processors::slo_scaler::engine::Ranking;

/// What happened during one fault.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultOutcome {
    /// The fault's id.
    pub id: String,
    /// Its kind.
    pub fault_type: String,
    /// The service it was injected into.
    pub service: String,
    /// True for a latency fault.
    pub latency: bool,
    /// Spans that started in its window.
    pub spans: u64,
    /// Seconds from the fault's start to the first of them: the data may begin late.
    pub first_span_seconds: Option<f64>,
    /// Evaluations inside the window at which an objective burned (each makes a ranking).
    pub burning_evaluations: u64,
    /// Of those, the ones whose ranking named at least one culprit.
    pub namings: u64,
    /// Services by how often they were named first, then by their mean place: the first is
    /// the culprit named for the fault.
    pub named: Vec<String>,
    /// The injected service is `named[0]`.
    pub top1: bool,
    /// The injected service is among `named[..3]`.
    pub top3: bool,
    /// The share of namings that put the injected service first.
    pub correct_share: Option<f64>,
    /// Seconds from the fault's start to the first naming that put the injected service first.
    pub delay_seconds: Option<f64>,
}

/// Figures over a set of faults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    /// The fault type, or `latency faults` for the overall line.
    pub name: String,
    /// Faults.
    pub faults: u64,
    /// Of which with spans in their window.
    pub with_spans: u64,
    /// Of which with a burning objective in their window.
    pub burned: u64,
    /// Faults whose named culprit is the injected service. A fault without spans or without a
    /// burning objective names nothing and counts as a miss.
    pub top1: u64,
    /// Faults with the injected service among the first three named.
    pub top3: u64,
    /// `top1 / faults`.
    pub top1_rate: Option<f64>,
    /// `top3 / faults`.
    pub top3_rate: Option<f64>,
    /// `top1 / with_spans`.
    pub top1_rate_with_spans: Option<f64>,
    /// `top3 / with_spans`.
    pub top3_rate_with_spans: Option<f64>,
    /// Median over the faults named right of the delay to the first right naming.
    pub median_delay_seconds: Option<f64>,
    /// The same, counted from the first span in the fault's window instead of its start.
    pub median_delay_after_first_span_seconds: Option<f64>,
}

/// The report of `tracescale attribute`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributionReport {
    /// Spans replayed.
    pub spans: u64,
    /// Complete traces analysed.
    pub traces: u64,
    /// Of which matched an objective.
    pub objective_traces: u64,
    /// The objectives, with their learned targets.
    pub objectives: Vec<DerivedObjective>,
    /// Evaluations at which an objective burned, inside fault windows or not.
    pub burning_evaluations: u64,
    /// Of which outside every fault's window: false alarms, unless the data holds a slowdown
    /// nobody injected.
    pub burning_outside_faults: u64,
    /// Per fault type, in order of first appearance.
    pub by_type: Vec<Figures>,
    /// Over the latency faults.
    pub latency_faults: Figures,
    /// Per fault, in the faults CSV's order.
    pub faults: Vec<FaultOutcome>,
}

/// Scores a replay against the faults.
pub fn score(
    faults: &[Fault],
    objectives: Vec<DerivedObjective>,
    replay: &Replay,
) -> AttributionReport {
    let outcomes: Vec<FaultOutcome> = faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let spans = replay.spans_in_window.get(i).copied().unwrap_or_default();
            let first = replay.first_span.get(i).copied().flatten();
            outcome(f, spans, first, &replay.rankings)
        })
        .collect();
    let mut types: Vec<&str> = Vec::new();
    for f in faults {
        if !types.contains(&f.fault_type.as_str()) {
            types.push(&f.fault_type);
        }
    }
    let by_type = types
        .iter()
        .map(|t| figures(t, outcomes.iter().filter(|o| o.fault_type == *t)))
        .collect();
    AttributionReport {
        spans: replay.spans,
        traces: replay.traces,
        objective_traces: replay.objective_traces,
        objectives,
        burning_evaluations: replay.rankings.len() as u64,
        burning_outside_faults: replay
            .rankings
            .iter()
            .filter(|r| {
                !faults
                    .iter()
                    .any(|f| f.start <= r.at_unix_nano && r.at_unix_nano < f.end)
            })
            .count() as u64,
        by_type,
        latency_faults: figures("latency faults", outcomes.iter().filter(|o| o.latency)),
        faults: outcomes,
    }
}

fn outcome(f: &Fault, spans: u64, first: Option<u64>, rankings: &[Ranking]) -> FaultOutcome {
    let inside: Vec<&Ranking> = rankings
        .iter()
        .filter(|r| f.start <= r.at_unix_nano && r.at_unix_nano < f.end)
        .collect();
    // Per service: times named first, summed place (a ranking that omits it puts it last).
    let mut tally: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    let namings: Vec<&Ranking> = inside
        .iter()
        .copied()
        .filter(|r| !r.culprits.is_empty())
        .collect();
    for r in &namings {
        for (place, (name, _)) in r.culprits.iter().enumerate() {
            let t = tally.entry(name).or_default();
            t.0 += u64::from(place == 0);
            t.1 += place as f64;
        }
    }
    for (name, t) in tally.iter_mut() {
        let absent = namings
            .iter()
            .filter(|r| !r.culprits.iter().any(|(n, _)| n == name))
            .map(|r| r.culprits.len() as f64)
            .sum::<f64>();
        t.1 = (t.1 + absent) / namings.len().max(1) as f64;
    }
    let mut named: Vec<(&str, (u64, f64))> = tally.into_iter().collect();
    named.sort_by(|a, b| {
        b.1.0
            .cmp(&a.1.0)
            .then(a.1.1.total_cmp(&b.1.1))
            .then(a.0.cmp(b.0))
    });
    let named: Vec<String> = named.into_iter().map(|(n, _)| n.to_string()).collect();
    let first_right = |r: &Ranking| r.culprits.first().is_some_and(|(n, _)| *n == f.service);
    let right = namings.iter().filter(|r| first_right(r)).count();
    FaultOutcome {
        id: f.id.clone(),
        fault_type: f.fault_type.clone(),
        service: f.service.clone(),
        latency: f.latency,
        spans,
        first_span_seconds: first.map(|t| t.saturating_sub(f.start) as f64 / 1e9),
        burning_evaluations: inside.len() as u64,
        namings: namings.len() as u64,
        top1: named.first() == Some(&f.service),
        top3: named.iter().take(3).any(|n| *n == f.service),
        correct_share: (!namings.is_empty()).then(|| right as f64 / namings.len() as f64),
        delay_seconds: namings
            .iter()
            .find(|r| first_right(r))
            .map(|r| r.at_unix_nano.saturating_sub(f.start) as f64 / 1e9),
        named,
    }
}

fn figures<'a>(name: &str, outcomes: impl Iterator<Item = &'a FaultOutcome>) -> Figures {
    let outcomes: Vec<&FaultOutcome> = outcomes.collect();
    let count = |p: &dyn Fn(&FaultOutcome) -> bool| outcomes.iter().filter(|o| p(o)).count() as u64;
    let faults = outcomes.len() as u64;
    let with_spans = count(&|o| o.spans > 0);
    let top1 = count(&|o| o.top1);
    let top3 = count(&|o| o.top3);
    let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    let delays = |from_data: bool| {
        let mut d: Vec<f64> = outcomes
            .iter()
            .filter(|o| o.top1)
            .filter_map(|o| {
                let after = if from_data {
                    o.first_span_seconds?
                } else {
                    0.0
                };
                Some(o.delay_seconds? - after)
            })
            .collect();
        d.sort_by(f64::total_cmp);
        match d.len() {
            0 => None,
            n if n % 2 == 1 => Some(d[n / 2]),
            n => Some((d[n / 2 - 1] + d[n / 2]) / 2.0),
        }
    };
    Figures {
        name: name.to_string(),
        faults,
        with_spans,
        burned: count(&|o| o.burning_evaluations > 0),
        top1,
        top3,
        top1_rate: ratio(top1, faults),
        top3_rate: ratio(top3, faults),
        top1_rate_with_spans: ratio(top1, with_spans),
        top3_rate_with_spans: ratio(top3, with_spans),
        median_delay_seconds: delays(false),
        median_delay_after_first_span_seconds: delays(true),
    }
}

impl AttributionReport {
    /// The report as text: the objectives, a line per fault type and the latency faults, then a
    /// line per fault.
    pub fn table(&self) -> String {
        let seconds = |d: Option<f64>| d.map_or_else(|| "-".into(), |d| format!("{d:.0}s"));
        let ratio = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.2}"));
        let rate = |n: u64, r: Option<f64>| format!("{n} ({})", ratio(r));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} spans, {} traces ({} on an objective), {} evaluations with a burning objective ({} outside every fault's window)",
            self.spans,
            self.traces,
            self.objective_traces,
            self.burning_evaluations,
            self.burning_outside_faults
        );
        for o in &self.objectives {
            let _ = writeln!(
                out,
                "objective {}: p{} ≤ {:.0}ms (from {} fault-free requests, {} minutes)",
                o.name(),
                o.percentile,
                o.target_ms,
                o.fault_free_traces,
                o.minutes
            );
        }
        let _ = writeln!(
            out,
            "\n{:<18} {:>6} {:>6} {:>6} {:>12} {:>12} {:>9} {:>10}",
            "fault type", "faults", "spans", "burned", "top-1", "top-3", "delay p50", "after data"
        );
        for f in self.by_type.iter().chain([&self.latency_faults]) {
            let _ = writeln!(
                out,
                "{:<18} {:>6} {:>6} {:>6} {:>12} {:>12} {:>9} {:>10}",
                f.name,
                f.faults,
                f.with_spans,
                f.burned,
                rate(f.top1, f.top1_rate),
                rate(f.top3, f.top3_rate),
                seconds(f.median_delay_seconds),
                seconds(f.median_delay_after_first_span_seconds),
            );
        }
        let l = &self.latency_faults;
        let _ = writeln!(
            out,
            "over the {} latency faults with spans: top-1 {}, top-3 {}; a fault without spans or a burning objective counts as a miss",
            l.with_spans,
            ratio(l.top1_rate_with_spans),
            ratio(l.top3_rate_with_spans),
        );
        let _ = writeln!(
            out,
            "\n{:<10} {:<16} {:<24} {:>7} {:>6} {:>7} {:<24} {:>5} {:>6}",
            "fault",
            "type",
            "injected",
            "spans",
            "data",
            "named",
            "culprit named",
            "right",
            "delay"
        );
        for o in &self.faults {
            let right = match (o.top1, o.top3) {
                (true, _) => "yes",
                (false, true) => "top-3",
                (false, false) => "no",
            };
            let _ = writeln!(
                out,
                "{:<10} {:<16} {:<24} {:>7} {:>6} {:>7} {:<24} {:>5} {:>6}",
                o.id,
                o.fault_type,
                o.service,
                o.spans,
                seconds(o.first_span_seconds),
                o.namings,
                o.named.first().map_or("-", String::as_str),
                right,
                seconds(o.delay_seconds),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const S: u64 = 1_000_000_000;

    fn fault(id: &str, service: &str, start: u64, latency: bool) -> Fault {
        Fault {
            id: id.into(),
            start: start * S,
            end: (start + 100) * S,
            service: service.into(),
            fault_type: if latency { "cpu" } else { "exception" }.into(),
            latency,
        }
    }

    fn ranking(at: u64, culprits: &[&str]) -> Ranking {
        Ranking {
            at_unix_nano: at * S,
            objectives: vec!["o".into()],
            culprits: culprits.iter().map(|c| (c.to_string(), 1.0)).collect(),
        }
    }

    #[test]
    fn the_culprit_named_is_the_one_named_first_most_often() {
        let faults = [
            fault("f1", "cart", 100, true),
            fault("f2", "db", 300, true),
            fault("f3", "web", 500, true),
            fault("f4", "web", 700, false),
        ];
        let replay = Replay {
            spans: 10,
            spans_in_window: vec![5, 5, 0, 5],
            first_span: vec![Some(102 * S), Some(300 * S), None, Some(700 * S)],
            rankings: vec![
                ranking(99, &["db"]), // before f1: not counted
                ranking(104, &["web", "cart"]),
                ranking(105, &["cart", "web"]),
                ranking(106, &["cart"]),
                ranking(310, &["web", "cache", "db"]),
                ranking(311, &[]),
            ],
            ..Replay::default()
        };
        let r = score(&faults, Vec::new(), &replay);
        let f1 = &r.faults[0];
        assert_eq!(f1.named, ["cart", "web"]);
        assert!(f1.top1 && f1.top3);
        assert_eq!(f1.delay_seconds, Some(5.0));
        assert_eq!(f1.correct_share, Some(2.0 / 3.0));
        let f2 = &r.faults[1];
        assert_eq!(
            (f2.top1, f2.top3, f2.namings, f2.burning_evaluations),
            (false, true, 1, 2)
        );
        assert_eq!(r.faults[2].namings, 0, "no spans, no naming: a miss");
        let l = &r.latency_faults;
        assert_eq!(
            (l.faults, l.with_spans, l.burned, l.top1, l.top3),
            (3, 2, 2, 1, 2)
        );
        assert_eq!(l.top1_rate, Some(1.0 / 3.0));
        assert_eq!(l.top1_rate_with_spans, Some(0.5));
        assert_eq!(l.median_delay_seconds, Some(5.0));
        assert_eq!(l.median_delay_after_first_span_seconds, Some(3.0));
        assert_eq!(r.by_type.len(), 2);
        assert!(r.table().contains("f1         cpu"), "{}", r.table());
    }
}
