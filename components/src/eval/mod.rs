//! `tracescale eval`: replays a labeled span CSV through an `hstree` processor's [`Detector`] and
//! measures how well its verdicts match the labels.
//!
//! Plain synchronous code: read the CSV (`.gz` transparently), replay every row in file order,
//! then compute the confusion matrix, AUC and per-fault detection. The CSV shape is described in
//! the data README: a header with at least `trace_id, span_id, parent_span_id, service,
//! operation, start_unix_nano, end_unix_nano, label`, optionally `fault_id`; extra columns are
//! ignored. Fields are split on commas: quoted fields are rejected, not parsed.

pub mod synth;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::processors::hstree::{Detector, HsTreeConfig, Verdict};

/// Columns every labeled span CSV has.
pub const REQUIRED_COLUMNS: [&str; 8] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "operation",
    "start_unix_nano",
    "end_unix_nano",
    "label",
];

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The pipeline file has no usable `hstree` processor under that id, or its config is
    /// invalid.
    #[error("{}: {message}", path.display())]
    Processor {
        /// The pipeline file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The CSV is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// 1-based line number (the header is line 1).
        line: u64,
        /// What is wrong.
        message: String,
    },
}

impl EvalError {
    /// True when the error is in the pipeline file (exit status 2) rather than in the data.
    pub fn is_config(&self) -> bool {
        matches!(self, EvalError::Processor { .. })
    }
}

/// Builds the detector of processor `id` from a pipeline file, which must be of type `hstree`
/// (its `type` key, or the part of the id before `/`).
pub fn detector_from_file(path: &Path, id: &str) -> Result<Detector, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    detector_from_str(path, &text, id)
}

/// [`detector_from_file`] on the file's text.
pub fn detector_from_str(path: &Path, text: &str, id: &str) -> Result<Detector, EvalError> {
    let fail = |message: String| EvalError::Processor {
        path: path.to_path_buf(),
        message,
    };
    // The engine's own reading: `${env:…}` expands as it does for `tracescale run`.
    let expanded = tracescale_core::config::component_table(
        path,
        text,
        tracescale_core::component::ComponentKind::Processor,
        id,
    )
    .map_err(|e| fail(e.render(false)))?;
    let Some(table) = expanded else {
        let root = toml::from_str::<toml::Table>(text).map_err(|e| fail(e.to_string()))?;
        let processors = root.get("processors").and_then(toml::Value::as_table);
        let known: Vec<&str> = processors
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        return Err(fail(format!(
            "no processor `{id}`; the file has: {}",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    let mut table = table;
    let type_name = match table.remove("type") {
        Some(toml::Value::String(t)) => t,
        Some(_) => return Err(fail(format!("processor `{id}`: `type` must be a string"))),
        None => id.split('/').next().unwrap_or(id).to_string(),
    };
    if type_name != "hstree" {
        return Err(fail(format!(
            "processor `{id}` is of type `{type_name}`; eval needs an `hstree` processor"
        )));
    }
    let config: HsTreeConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e| fail(format!("processor `{id}`: {e}")))?;
    let problems = config.problems();
    if !problems.is_empty() {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("`{}` {}", p.key, p.message))
            .collect();
        return Err(fail(format!("processor `{id}`: {}", list.join("; "))));
    }
    Detector::new(&config).map_err(|e| fail(format!("processor `{id}`: `{}` {}", e.key, e.message)))
}

/// One labeled span, with its strings interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// Index into [`Spans::operations`].
    pub operation: u32,
    /// `end − start`, 0 when the end is before the start.
    pub duration_ns: u64,
    /// The span's end time.
    pub end_unix_nano: u64,
    /// True for label 1.
    pub label: bool,
    /// Index into [`Spans::faults`], if the span is in a fault's window.
    pub fault: Option<u32>,
}

/// A labeled span stream, in file order.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    /// Distinct `(service, operation)` pairs.
    pub operations: Vec<(String, String)>,
    /// Distinct fault ids.
    pub faults: Vec<String>,
    /// True when the file has a `fault_id` column.
    pub has_fault_column: bool,
    /// The rows.
    pub rows: Vec<Row>,
}

/// Reads a labeled span CSV (gzip when the name ends in `.gz`), at most `limit` rows.
pub fn read_csv(path: &Path, limit: Option<u64>) -> Result<Spans, EvalError> {
    let file = File::open(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    parse_csv(path, BufReader::with_capacity(1 << 16, reader), limit)
}

/// [`read_csv`] on any reader; `path` only names the source in errors.
pub fn parse_csv(
    path: &Path,
    mut input: impl BufRead,
    limit: Option<u64>,
) -> Result<Spans, EvalError> {
    let csv_error = |line: u64, message: String| EvalError::Csv {
        path: path.to_path_buf(),
        line,
        message,
    };
    let io_error = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = String::new();
    if input.read_line(&mut buf).map_err(io_error)? == 0 {
        return Err(csv_error(1, "empty file: expected a header".to_string()));
    }
    let header: Vec<String> = buf
        .trim_end_matches(['\r', '\n'])
        .split(',')
        .map(|h| h.trim().to_string())
        .collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let mut idx = [0usize; 8];
    let missing: Vec<&str> = REQUIRED_COLUMNS
        .iter()
        .zip(idx.iter_mut())
        .filter_map(|(name, slot)| match column(name) {
            Some(i) => {
                *slot = i;
                None
            }
            None => Some(*name),
        })
        .collect();
    if !missing.is_empty() {
        return Err(csv_error(
            1,
            format!("header lacks column(s): {}", missing.join(", ")),
        ));
    }
    let [_, _, _, service_i, operation_i, start_i, end_i, label_i] = idx;
    let fault_i = column("fault_id");
    let width = header.len();

    let mut spans = Spans {
        has_fault_column: fault_i.is_some(),
        ..Spans::default()
    };
    let mut op_index: HashMap<String, HashMap<String, u32>> = HashMap::new();
    let mut fault_index: HashMap<String, u32> = HashMap::new();
    let mut line_no = 1u64;
    let limit = limit.unwrap_or(u64::MAX);
    let mut count = 0u64;
    while count < limit {
        buf.clear();
        if input.read_line(&mut buf).map_err(io_error)? == 0 {
            break;
        }
        line_no += 1;
        let line = buf.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            continue;
        }
        if line.contains('"') {
            return Err(csv_error(
                line_no,
                "quoted fields are not supported".to_string(),
            ));
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != width {
            return Err(csv_error(
                line_no,
                format!("{} fields, the header has {width}", fields.len()),
            ));
        }
        let number = |i: usize| {
            fields[i].parse::<u64>().map_err(|_| {
                csv_error(
                    line_no,
                    format!("`{}` is not a number: {:?}", header[i], fields[i]),
                )
            })
        };
        let start = number(start_i)?;
        let end = number(end_i)?;
        let label = match fields[label_i] {
            "0" => false,
            "1" => true,
            other => {
                return Err(csv_error(
                    line_no,
                    format!("`label` must be 0 or 1, not {other:?}"),
                ));
            }
        };
        let (service, op) = (fields[service_i], fields[operation_i]);
        let by_op = match op_index.get_mut(service) {
            Some(m) => m,
            None => op_index.entry(service.to_string()).or_default(),
        };
        let operation = match by_op.get(op) {
            Some(&i) => i,
            None => {
                let i = spans.operations.len() as u32;
                by_op.insert(op.to_string(), i);
                spans.operations.push((service.to_string(), op.to_string()));
                i
            }
        };
        let fault = match fault_i.map(|i| fields[i]) {
            None | Some("") => None,
            Some(f) => Some(match fault_index.get(f) {
                Some(&i) => i,
                None => {
                    let i = spans.faults.len() as u32;
                    fault_index.insert(f.to_string(), i);
                    spans.faults.push(f.to_string());
                    i
                }
            }),
        };
        spans.rows.push(Row {
            operation,
            duration_ns: end.saturating_sub(start),
            end_unix_nano: end,
            label,
            fault,
        });
        count += 1;
    }
    Ok(spans)
}

/// Detection quality of one replay. `None` (JSON `null`) where a ratio has no denominator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Spans replayed.
    pub spans: u64,
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
pub fn replay(detector: &mut Detector, spans: &Spans) -> Report {
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(spans.rows.len());
    let started = Instant::now();
    for row in &spans.rows {
        let (service, operation) = &spans.operations[row.operation as usize];
        verdicts.push(detector.observe(service, operation, row.duration_ns, row.end_unix_nano));
    }
    let elapsed = started.elapsed();
    let mut report = score(spans, &verdicts);
    report.ns_per_span = if spans.rows.is_empty() {
        0.0
    } else {
        elapsed.as_nanos() as f64 / spans.rows.len() as f64
    };
    report
}

/// The figures of a replay from its verdicts (one per row); `ns_per_span` is left at 0.
pub fn score(spans: &Spans, verdicts: &[Verdict]) -> Report {
    let (mut tp, mut fp, mut fn_, mut tn, mut training) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut judged: Vec<(f64, bool)> = Vec::with_capacity(verdicts.len());
    // Per fault: (first label-1 end, first flagged label-1 end).
    let mut faults: Vec<(Option<u64>, Option<u64>)> = vec![(None, None); spans.faults.len()];
    for (row, v) in spans.rows.iter().zip(verdicts) {
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
    Report {
        spans: spans.rows.len() as u64,
        training_spans: training,
        tp,
        fp,
        fn_,
        tn,
        precision,
        recall,
        f1,
        fpr: ratio(fp, fp + tn),
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

impl Report {
    /// The report as an aligned two-column table.
    pub fn table(&self) -> String {
        let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        let count = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        let rows = [
            ("spans", self.spans.to_string()),
            ("training_spans", self.training_spans.to_string()),
            ("tp", self.tp.to_string()),
            ("fp", self.fp.to_string()),
            ("fn", self.fn_.to_string()),
            ("tn", self.tn.to_string()),
            ("precision", num(self.precision)),
            ("recall", num(self.recall)),
            ("f1", num(self.f1)),
            ("fpr", num(self.fpr)),
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

    fn verdict(score: f64, anomalous: bool, training: bool) -> Verdict {
        Verdict {
            score,
            anomalous,
            training,
            overflow: false,
        }
    }

    const HEADER: &str = "trace_id,span_id,parent_span_id,service,operation,start_unix_nano,end_unix_nano,label,fault_id\n";

    fn parse(body: &str) -> Result<Spans, EvalError> {
        let text = format!("{HEADER}{body}");
        parse_csv(Path::new("t.csv"), text.as_bytes(), None)
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
        let r = score(&spans, &verdicts);
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
        let r = score(&spans, &verdicts);
        assert_eq!(r.faults, Some(3));
        assert_eq!(r.faults_detected, Some(2));
        assert_eq!(r.median_detection_delay_seconds, Some(1.0));
    }

    #[test]
    fn a_malformed_row_names_its_line() {
        let err = parse("t,a,,s,o,0,10,1,\nt,b,,s,o,x,10,0,\n").unwrap_err();
        assert!(err.to_string().starts_with("t.csv:3: "), "{err}");
        let err = parse("t,a,,s,o,0,10,2,\n").unwrap_err();
        assert!(err.to_string().contains("t.csv:2: `label`"), "{err}");
        let err = parse("t,a,,s,o,0,10\n").unwrap_err();
        assert!(err.to_string().contains("7 fields"), "{err}");
        let err = parse_csv(Path::new("t.csv"), &b"service,label\n"[..], None).unwrap_err();
        assert!(err.to_string().contains("header lacks"), "{err}");
    }

    #[test]
    fn a_limit_stops_reading_and_operations_are_interned() {
        let text = format!("{HEADER}t,a,,s,o,5,10,0,\nt,b,,s,p,0,10,0,\nt,c,,s,o,0,10,0,\n");
        let spans = parse_csv(Path::new("t.csv"), text.as_bytes(), Some(2)).unwrap();
        assert_eq!(spans.rows.len(), 2);
        assert_eq!(spans.rows[0].duration_ns, 5);
        assert_eq!(spans.operations.len(), 2);
        let all = parse_csv(Path::new("t.csv"), text.as_bytes(), None).unwrap();
        assert_eq!(all.rows[2].operation, 0);
    }

    #[test]
    fn the_processor_must_exist_and_be_an_hstree() {
        let path = Path::new("p.toml");
        let text = "[processors.latency_rules]\n[processors.\"hstree/a\"]\ntrain_size = 10\n\
                    [processors.b]\ntype = \"hstree\"\ntrees = 0\n";
        assert!(detector_from_str(path, text, "hstree/a").is_ok());
        let err = detector_from_str(path, text, "nope").unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("no processor `nope`"), "{err}");
        let err = detector_from_str(path, text, "latency_rules").unwrap_err();
        assert!(err.to_string().contains("needs an `hstree`"), "{err}");
        let err = detector_from_str(path, text, "b").unwrap_err();
        assert!(err.to_string().contains("`trees`"), "{err}");
    }

    #[test]
    fn env_references_expand_as_for_a_run() {
        let path = Path::new("p.toml");
        // A default makes the test independent of the environment it runs in.
        let text = "[processors.hstree]
trees = \"${env:TRACESCALE_EVAL_TEST_UNSET_TREES:-0}\"\n";
        let err = detector_from_str(path, text, "hstree").unwrap_err();
        assert!(
            err.to_string().contains("`trees`"),
            "expanded to 0 and refused: {err}"
        );
        let text = "[processors.hstree]
trees = \"${env:TRACESCALE_EVAL_TEST_UNSET_TREES:-8}\"\n";
        assert!(detector_from_str(path, text, "hstree").is_ok());
        let text = "[processors.hstree]
trees = \"${env:TRACESCALE_EVAL_TEST_UNSET_TREES}\"\n";
        let err = detector_from_str(path, text, "hstree").unwrap_err();
        assert!(
            err.to_string().contains("TRACESCALE_EVAL_TEST_UNSET_TREES"),
            "{err}"
        );
    }
}
