//! The figures of a replay: confusion matrix, ratios, AUC and per-fault detection.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Spans;
use crate::processors::hstree::{Detector, Verdict};

/// Detection quality of one replay. `None` (JSON `null`) where a ratio has no denominator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionReport {
    /// Spans replayed and judged or trained on, after the warm start.
    pub spans: u64,
    /// Spans learned in the warm start (`--warm-start`): neither judged nor in any figure.
    pub warm_start_spans: u64,
    /// Spans learned but not judged (training or operation warm-up) or passed on overflow;
    /// left out of every other figure.
    pub training_spans: u64,
    /// Label 1, flagged.
    pub tp: u64,
    /// Label 0, flagged.
    pub fp: u64,
    /// Label 1, not flagged.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Label 0, not flagged.
    pub tn: u64,
    /// TP / (TP + FP).
    pub precision: Option<f64>,
    /// TP / (TP + FN).
    pub recall: Option<f64>,
    /// Harmonic mean of precision and recall.
    pub f1: Option<f64>,
    /// FP / (FP + TN).
    pub fpr: Option<f64>,
    /// FPR over the label-0 spans outside every fault's window (`None` without a `fault_id`
    /// column): the share of healthy traffic flagged, free of the noise of unlabeled spans
    /// that a fault slowed.
    pub fpr_fault_free: Option<f64>,
    /// (TP + TN) / judged.
    pub accuracy: Option<f64>,
    /// Area under the ROC curve of the score against the label, over judged spans.
    pub auc: Option<f64>,
    /// Faults with at least one label-1 span (`None` without a `fault_id` column).
    pub faults: Option<u64>,
    /// Of those, faults with at least one label-1 span flagged.
    pub faults_detected: Option<u64>,
    /// `faults_detected / faults`.
    pub fault_detection_rate: Option<f64>,
    /// Median over detected faults of the time from the fault's first label-1 span's end to
    /// its first flagged label-1 span's end.
    pub median_detection_delay_seconds: Option<f64>,
    /// Wall time of the replay loop divided by the spans replayed.
    pub ns_per_span: f64,
}

/// Replays every row through the detector, in order, and scores the verdicts.
///
/// With `warm_start`, the rows that end within that long of the first row are a warm start
/// from a fault-free stretch, as the processor's `warm_start` reads a recording: those with
/// label 0 outside every fault's window are learned, the others are left out, and none is
/// scored.
pub fn replay(
    detector: &mut Detector,
    spans: &Spans,
    warm_start: Option<Duration>,
) -> DetectionReport {
    let warm_rows = match (warm_start, spans.rows.first()) {
        (Some(stretch), Some(first)) => {
            let until = first
                .end_unix_nano
                .saturating_add(u64::try_from(stretch.as_nanos()).unwrap_or(u64::MAX));
            spans.rows.partition_point(|row| row.end_unix_nano < until)
        }
        _ => 0,
    };
    let (warm, judged) = spans.rows.split_at(warm_rows);
    let mut learned = 0u64;
    for row in warm.iter().filter(|row| !row.label && row.fault.is_none()) {
        let (service, operation) = &spans.operations[row.operation as usize];
        detector.observe(service, operation, row.duration_ns, row.end_unix_nano);
        learned += 1;
    }
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(judged.len());
    let started = Instant::now();
    for row in judged {
        let (service, operation) = &spans.operations[row.operation as usize];
        verdicts.push(detector.observe(service, operation, row.duration_ns, row.end_unix_nano));
    }
    let elapsed = started.elapsed();
    let mut report = score(spans, warm_rows, &verdicts);
    report.warm_start_spans = learned;
    report.ns_per_span = if judged.is_empty() {
        0.0
    } else {
        elapsed.as_nanos() as f64 / judged.len() as f64
    };
    report
}

/// The figures of a replay from its verdicts, one per row from row `first` on (the rows before
/// it were a warm start); `ns_per_span` and `warm_start_spans` are left at 0.
pub fn score(spans: &Spans, first: usize, verdicts: &[Verdict]) -> DetectionReport {
    let rows = spans.rows.get(first..).unwrap_or_default();
    let (mut tp, mut fp, mut fn_, mut tn, mut training) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut free_fp, mut free_tn) = (0u64, 0u64);
    let mut judged: Vec<(f64, bool)> = Vec::with_capacity(verdicts.len());
    // Per fault: (first label-1 end, first flagged label-1 end).
    let mut faults: Vec<(Option<u64>, Option<u64>)> = vec![(None, None); spans.faults.len()];
    for (row, v) in rows.iter().zip(verdicts) {
        let judged_span = !(v.training || v.overflow);
        let flagged = judged_span && v.anomalous;
        if row.label
            && let Some(f) = row.fault
        {
            let (first, first_flagged) = &mut faults[f as usize];
            first.get_or_insert(row.end_unix_nano);
            if flagged {
                first_flagged.get_or_insert(row.end_unix_nano);
            }
        }
        if !judged_span {
            training += 1;
            continue;
        }
        judged.push((v.score, row.label));
        if !row.label && row.fault.is_none() {
            if flagged {
                free_fp += 1;
            } else {
                free_tn += 1;
            }
        }
        match (row.label, flagged) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let has_faults = spans.has_fault_column;
    let labeled: Vec<_> = faults.iter().filter(|(first, _)| first.is_some()).collect();
    let mut delays: Vec<f64> = labeled
        .iter()
        .filter_map(|(first, flagged)| {
            Some(flagged.as_ref()?.saturating_sub((*first)?) as f64 / 1e9)
        })
        .collect();
    let n_faults = labeled.len() as u64;
    let detected = delays.len() as u64;
    DetectionReport {
        spans: rows.len() as u64,
        warm_start_spans: 0,
        training_spans: training,
        tp,
        fp,
        fn_,
        tn,
        precision,
        recall,
        f1,
        fpr: ratio(fp, fp + tn),
        fpr_fault_free: if spans.has_fault_column {
            ratio(free_fp, free_fp + free_tn)
        } else {
            None
        },
        accuracy: ratio(tp + tn, tp + fp + fn_ + tn),
        auc: auc(&mut judged),
        faults: has_faults.then_some(n_faults),
        faults_detected: has_faults.then_some(detected),
        fault_detection_rate: if has_faults {
            ratio(detected, n_faults)
        } else {
            None
        },
        median_detection_delay_seconds: median(&mut delays),
        ns_per_span: 0.0,
    }
}

/// Rank-based AUC (Mann–Whitney U), ties given their average rank; `None` unless both labels
/// occur. Sorts `points` by score.
pub fn auc(points: &mut [(f64, bool)]) -> Option<f64> {
    let positives = points.iter().filter(|p| p.1).count() as f64;
    let negatives = points.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    points.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < points.len() {
        let mut j = i;
        while j < points.len() && points[j].0 == points[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j, averaged.
        let rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += rank * points[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

impl DetectionReport {
    /// The report as an aligned two-column table.
    pub fn table(&self) -> String {
        let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        let count = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let rows = [
            ("spans", self.spans.to_string()),
            ("warm_start_spans", self.warm_start_spans.to_string()),
            ("training_spans", self.training_spans.to_string()),
            ("tp", self.tp.to_string()),
            ("fp", self.fp.to_string()),
            ("fn", self.fn_.to_string()),
            ("tn", self.tn.to_string()),
            ("precision", num(self.precision)),
            ("recall", num(self.recall)),
            ("f1", num(self.f1)),
            ("fpr", num(self.fpr)),
            ("fpr_fault_free", num(self.fpr_fault_free)),
            ("accuracy", num(self.accuracy)),
            ("auc", num(self.auc)),
            ("faults", count(self.faults)),
            ("faults_detected", count(self.faults_detected)),
            ("fault_detection_rate", num(self.fault_detection_rate)),
            (
                "median_detection_delay_seconds",
                num(self.median_detection_delay_seconds),
            ),
            ("ns_per_span", format!("{:.0}", self.ns_per_span)),
        ];
        let mut out = String::new();
        for (k, v) in rows {
            out.push_str(&format!("{k:<32} {v:>12}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::eval::labeled_csv::tests::parse;

    fn verdict(score: f64, anomalous: bool, training: bool) -> Verdict {
        Verdict {
            score,
            anomalous,
            training,
            overflow: false,
        }
    }

    #[test]
    fn auc_of_a_known_example_averages_ties() {
        // Positives 0.8, 0.4; negatives 0.4, 0.1. Pairs: (0.8>0.4) 1, (0.8>0.1) 1, (0.4=0.4)
        // 0.5, (0.4>0.1) 1 → 3.5 / 4.
        let mut points = vec![(0.8, true), (0.4, true), (0.4, false), (0.1, false)];
        assert_eq!(auc(&mut points), Some(0.875));
        let mut perfect = vec![(0.9, true), (0.2, false), (0.1, false)];
        assert_eq!(auc(&mut perfect), Some(1.0));
        let mut all_tied = vec![(0.5, true), (0.5, false)];
        assert_eq!(auc(&mut all_tied), Some(0.5));
        let mut one_class = vec![(0.5, true)];
        assert_eq!(auc(&mut one_class), None);
    }

    #[test]
    fn confusion_counts_leave_out_training_spans() {
        let spans = parse(
            "t,a,,s,o,0,10,1,\n\
             t,b,,s,o,0,10,1,\n\
             t,c,,s,o,0,10,0,\n\
             t,d,,s,o,0,10,0,\n\
             t,e,,s,o,0,10,0,\n\
             t,f,,s,o,0,10,1,\n",
        )
        .unwrap();
        let verdicts = [
            verdict(0.9, true, false),  // tp
            verdict(0.2, false, false), // fn
            verdict(0.8, true, false),  // fp
            verdict(0.1, false, false), // tn
            verdict(0.0, false, true),  // training
            verdict(0.0, false, true),  // training
        ];
        let r = score(&spans, 0, &verdicts);
        assert_eq!((r.tp, r.fp, r.fn_, r.tn, r.training_spans), (1, 1, 1, 1, 2));
        assert_eq!(r.precision, Some(0.5));
        assert_eq!(r.recall, Some(0.5));
        assert_eq!(r.f1, Some(0.5));
        assert_eq!(r.fpr, Some(0.5));
        assert_eq!(r.accuracy, Some(0.5));
        assert_eq!(r.auc, Some(0.75));
        assert_eq!(r.faults, Some(0), "a fault_id column with no labeled fault");
        assert_eq!(r.median_detection_delay_seconds, None);
    }

    #[test]
    fn a_warm_start_learns_the_fault_free_stretch_and_scores_only_what_follows() {
        // Seconds 1–3 are the stretch: two fault-free spans learned, one in a fault and one
        // labeled left out; seconds 4–6 are judged, one of them outside every fault.
        let spans = parse(
            "t,a,,s,o,0,1000000000,0,\n\
             t,b,,s,o,0,2000000000,0,f1\n\
             t,c,,s,o,0,2500000000,1,\n\
             t,d,,s,o,0,3000000000,0,\n\
             t,e,,s,o,0,4000000000,1,f2\n\
             t,f,,s,o,0,5000000000,0,f2\n\
             t,g,,s,o,0,6000000000,0,\n",
        )
        .unwrap();
        let mut detector = crate::processors::hstree::Detector::new(
            &crate::processors::hstree::HsTreeConfig::default(),
        )
        .unwrap();
        let r = replay(&mut detector, &spans, Some(Duration::from_millis(2500)));
        assert_eq!(r.warm_start_spans, 2);
        assert_eq!(detector.seen(), 2 + 3, "learned, then replayed");
        assert_eq!(r.spans, 3);
        assert_eq!(r.training_spans, 3, "the default train_size is not reached");
        let r = replay(&mut detector, &spans, None);
        assert_eq!((r.warm_start_spans, r.spans), (0, 7));
    }

    #[test]
    fn the_fault_free_fpr_leaves_out_spans_inside_fault_windows() {
        let spans = parse(
            "t,a,,s,o,0,10,0,f1\n\
             t,b,,s,o,0,10,0,f1\n\
             t,c,,s,o,0,10,0,\n\
             t,d,,s,o,0,10,0,\n",
        )
        .unwrap();
        let verdicts = [
            verdict(0.9, true, false),
            verdict(0.9, true, false),
            verdict(0.9, true, false),
            verdict(0.1, false, false),
        ];
        let r = score(&spans, 0, &verdicts);
        assert_eq!((r.fpr, r.fpr_fault_free), (Some(0.75), Some(0.5)));
    }

    #[test]
    fn per_fault_delay_runs_from_the_first_labeled_span_to_the_first_flagged_one() {
        let spans = parse(
            "t,a,,s,o,0,1000000000,1,f1\n\
             t,b,,s,o,0,2000000000,0,f1\n\
             t,c,,s,o,0,3000000000,1,f1\n\
             t,d,,s,o,0,4000000000,1,f1\n\
             t,e,,s,o,0,5000000000,1,f2\n\
             t,f,,s,o,0,6000000000,0,f3\n\
             t,g,,s,o,0,7000000000,1,f4\n\
             t,h,,s,o,0,8000000000,1,f4\n",
        )
        .unwrap();
        let verdicts = [
            verdict(0.1, false, false),
            verdict(0.9, true, false), // flagged, but label 0: does not detect f1
            verdict(0.9, true, false), // f1 detected 2 s after its first labeled span
            verdict(0.9, true, false),
            verdict(0.1, false, false), // f2 missed
            verdict(0.9, true, false),  // f3 has no labeled span: not a fault
            verdict(0.9, true, false),  // f4 detected at once
            verdict(0.9, true, false),
        ];
        let r = score(&spans, 0, &verdicts);
        assert_eq!(r.faults, Some(3));
        assert_eq!(r.faults_detected, Some(2));
        assert_eq!(r.median_detection_delay_seconds, Some(1.0));
    }
}
