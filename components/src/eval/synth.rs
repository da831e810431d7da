//! `tracescale synth`: a seeded generator of synthetic labeled traces, written as the labeled
//! span CSV that `tracescale eval` reads (its schema is in the eval README).
//!
//! A small shop: `frontend` serves product pages (`catalog` → `catalog-db` and `cart` → `redis`
//! in parallel) and checkouts (`catalog`, then `checkout` → `cart` → `redis`, `payment` →
//! `payments-db`, `shipping` in sequence). Every `service::operation` has its own log-normal self
//! time; a span covers its self time (half before its children, half after) plus its children.
//! Traces arrive as a Poisson process; their spans are buffered and written in end-time order,
//! as a collector would receive them.
//!
//! With faults on, the timeline is a clean first fifth (for training), then six fault windows
//! separated by clean gaps, in this order:
//!
//! | type | effect | `label = 1` |
//! |---|---|---|
//! | `slow_downstream` | `payments-db` ×8 slower | its spans in the window, and ancestors |
//! | `network_delay` | +100 ms on the `checkout` → `cart` call | the calling `checkout` spans and ancestors, not `cart` |
//! | `heavy_tail` | `redis` sigma 0.3 → 1.3 | only `redis` spans above its normal p99, and ancestors |
//! | `queue_saturation` | `catalog` self time grows ×1 → ×20 over the window | its spans in the window, and ancestors |
//! | `slow_drift` | `shipping` grows ×1 → ×6 over a window twice as long | its spans in the window, and ancestors |
//! | `level_shift` | `catalog-db` ×4 from a "deploy" time to the end of the file | only the spans of the window after the deploy (its first unit of time, at most 3 minutes), and ancestors |
//!
//! `trace_label` is 1 when any span of the trace has label 1. `fault_id` / `fault_type` name the
//! fault whose window the span starts in, whatever its label. The same seed gives a
//! byte-identical file.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::labeled_csv;
use crate::random::{self, SplitMix64};

/// The CSV header written first.
pub const HEADER: &str = "trace_id,span_id,parent_span_id,service,operation,start_unix_nano,end_unix_nano,label,trace_label,fault_id,fault_type";

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Seed of every random draw: the same seed gives the same file.
    pub seed: u64,
    /// Number of traces.
    pub traces: u64,
    /// Start time of the first trace's arrival process, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// Inject the six faults; without them every label is 0.
    pub faults: bool,
    /// Mean trace arrival rate, traces per second.
    pub traces_per_second: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            traces: 10_000,
            start_unix_nano: 1_700_000_000_000_000_000,
            faults: true,
            traces_per_second: 10.0,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SynthSummary {
    /// Rows written.
    pub spans: u64,
    /// Traces written.
    pub traces: u64,
    /// Rows with label 1.
    pub anomalous_spans: u64,
    /// Injected faults: id, type, window start and end (nanoseconds since the Unix epoch).
    pub faults: Vec<(String, &'static str, u64, u64)>,
}

/// `(service, operation, median self time in ms, sigma of its log)`.
const OPS: [(&str, &str, f64, f64); 10] = [
    ("frontend", "GET /product", 2.0, 0.4),
    ("frontend", "POST /checkout", 3.0, 0.4),
    ("catalog", "GetProduct", 1.5, 0.5),
    ("catalog-db", "SELECT products", 4.0, 0.6),
    ("checkout", "PlaceOrder", 2.5, 0.5),
    ("cart", "GetCart", 1.0, 0.4),
    ("redis", "GET", 0.3, 0.3),
    ("payment", "Charge", 8.0, 0.5),
    ("payments-db", "INSERT charges", 6.0, 0.7),
    ("shipping", "ShipOrder", 40.0, 0.8),
];
const PRODUCT: usize = 0;
const CHECKOUT_PAGE: usize = 1;
const CATALOG: usize = 2;
const CATALOG_DB: usize = 3;
const PLACE_ORDER: usize = 4;
const CART: usize = 5;
const REDIS: usize = 6;
const PAYMENT: usize = 7;
const PAYMENTS_DB: usize = 8;
const SHIPPING: usize = 9;

/// Share of traces that are checkouts; the rest are product pages.
const CHECKOUT_SHARE: f64 = 0.35;
/// Network time on every call, each way.
const HOP_NS: u64 = 50_000;
/// z of the 99th percentile of a standard normal.
const Z99: f64 = 2.326;
/// Longest labeled window after a level shift.
const LEVEL_SHIFT_LABEL_NS: u64 = 180_000_000_000;

/// One node of a call tree.
struct Node {
    op: usize,
    parallel: bool,
    children: Vec<Node>,
}

fn node(op: usize, parallel: bool, children: Vec<Node>) -> Node {
    Node {
        op,
        parallel,
        children,
    }
}

fn leaf(op: usize) -> Node {
    node(op, false, Vec::new())
}

fn product_page() -> Node {
    node(
        PRODUCT,
        true,
        vec![
            node(CATALOG, false, vec![leaf(CATALOG_DB)]),
            node(CART, false, vec![leaf(REDIS)]),
        ],
    )
}

fn checkout_page() -> Node {
    node(
        CHECKOUT_PAGE,
        false,
        vec![
            node(CATALOG, false, vec![leaf(CATALOG_DB)]),
            node(
                PLACE_ORDER,
                false,
                vec![
                    node(CART, false, vec![leaf(REDIS)]),
                    node(PAYMENT, false, vec![leaf(PAYMENTS_DB)]),
                    leaf(SHIPPING),
                ],
            ),
        ],
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    SlowDownstream,
    NetworkDelay,
    HeavyTail,
    QueueSaturation,
    SlowDrift,
    LevelShift,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::SlowDownstream => "slow_downstream",
            Kind::NetworkDelay => "network_delay",
            Kind::HeavyTail => "heavy_tail",
            Kind::QueueSaturation => "queue_saturation",
            Kind::SlowDrift => "slow_drift",
            Kind::LevelShift => "level_shift",
        }
    }
}

struct Fault {
    id: String,
    kind: Kind,
    /// The operation it slows; for `network_delay`, the callee.
    op: usize,
    /// For `network_delay`, the caller.
    caller: usize,
    /// The labeled window `[start, end)`.
    start: u64,
    end: u64,
}

impl Fault {
    /// Where `t` falls in the window, in `[0, 1)`.
    fn progress(&self, t: u64) -> f64 {
        (t - self.start) as f64 / (self.end - self.start).max(1) as f64
    }

    fn in_window(&self, t: u64) -> bool {
        (self.start..self.end).contains(&t)
    }
}

/// The fault schedule over `[begin, begin + length)`; see the module docs.
fn schedule(begin: u64, length: u64) -> Vec<Fault> {
    // After a clean fifth: gap, slow_downstream, gap, network_delay, gap, heavy_tail, gap,
    // queue_saturation, gap, slow_drift (2 units), gap, level_shift (labeled 1 unit), tail.
    let unit = length * 4 / 5 / 14;
    let mut at = begin + length / 5;
    let plan = [
        (Kind::SlowDownstream, PAYMENTS_DB, 1),
        (Kind::NetworkDelay, CART, 1),
        (Kind::HeavyTail, REDIS, 1),
        (Kind::QueueSaturation, CATALOG, 1),
        (Kind::SlowDrift, SHIPPING, 2),
        (Kind::LevelShift, CATALOG_DB, 1),
    ];
    plan.iter()
        .enumerate()
        .map(|(i, &(kind, op, units))| {
            at += unit;
            let start = at;
            at += unit * units;
            let end = if kind == Kind::LevelShift {
                start + (unit * units).min(LEVEL_SHIFT_LABEL_NS)
            } else {
                at
            };
            Fault {
                id: format!("f{}-{}", i + 1, kind.as_str()),
                kind,
                op,
                caller: PLACE_ORDER,
                start,
                end,
            }
        })
        .collect()
}

/// One span, as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    end: u64,
    seq: u64,
    start: u64,
    trace_id: u128,
    span_id: u64,
    parent: Option<u64>,
    op: usize,
    label: bool,
    trace_label: bool,
    fault: Option<usize>,
}

struct TraceSynthesizer {
    rng: SplitMix64,
    faults: Vec<Fault>,
    seq: u64,
}

impl TraceSynthesizer {
    /// Standard normal (Box–Muller on two uniforms in `(0, 1]`).
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.rng.next_f64_nonzero(), self.rng.next_f64_nonzero());
        random::box_muller(u, v).0
    }

    /// Self time of `op` for a span starting at `t`, and whether a fault makes it anomalous.
    fn self_time(&mut self, op: usize, t: u64) -> (u64, bool) {
        let (_, _, median_ms, sigma) = OPS[op];
        let z = self.normal();
        let mut mult = 1.0;
        let mut sig = sigma;
        let mut faulty = false;
        let mut tail = false;
        for f in self.faults.iter().filter(|f| f.op == op) {
            match f.kind {
                Kind::NetworkDelay => {}
                Kind::LevelShift if t >= f.start => {
                    mult *= 4.0;
                    faulty |= f.in_window(t);
                }
                _ if !f.in_window(t) => {}
                Kind::SlowDownstream => {
                    mult *= 8.0;
                    faulty = true;
                }
                Kind::HeavyTail => {
                    sig = 1.3;
                    tail = true;
                }
                Kind::QueueSaturation => {
                    mult *= 1.0 + 19.0 * f.progress(t);
                    faulty = true;
                }
                Kind::SlowDrift => {
                    mult *= 1.0 + 5.0 * f.progress(t);
                    faulty = true;
                }
                Kind::LevelShift => {}
            }
        }
        let ms = random::log_normal(median_ms, sig, z) * mult;
        if tail && ms > median_ms * (Z99 * sigma).exp() {
            faulty = true;
        }
        ((ms * 1e6).round().max(1.0) as u64, faulty)
    }

    /// Extra delay on the call `caller` → `callee` at `t`, each way.
    fn edge_delay(&self, caller: usize, callee: usize, t: u64) -> u64 {
        self.faults
            .iter()
            .filter(|f| {
                f.kind == Kind::NetworkDelay
                    && f.caller == caller
                    && f.op == callee
                    && f.in_window(t)
            })
            .map(|_| 50_000_000)
            .sum()
    }

    /// Generates `node` starting at `start` and its subtree into `out`; returns (end, label).
    fn span(
        &mut self,
        node: &Node,
        trace_id: u128,
        parent: Option<u64>,
        start: u64,
        out: &mut Vec<Span>,
    ) -> (u64, bool) {
        let span_id = self.rng.next_nonzero();
        let index = out.len();
        out.push(Span {
            end: 0,
            seq: 0,
            start,
            trace_id,
            span_id,
            parent,
            op: node.op,
            label: false,
            trace_label: false,
            fault: None,
        });
        let (self_ns, mut label) = self.self_time(node.op, start);
        let before = self_ns / 2;
        let mut cursor = start + before;
        let fan_out = cursor;
        for child in &node.children {
            let delay = self.edge_delay(node.op, child.op, cursor);
            label |= delay > 0;
            let child_start = if node.parallel { fan_out } else { cursor } + HOP_NS + delay;
            let (child_end, child_label) =
                self.span(child, trace_id, Some(span_id), child_start, out);
            label |= child_label;
            cursor = cursor.max(child_end + HOP_NS + delay);
        }
        let end = cursor + (self_ns - before);
        let span = &mut out[index];
        span.end = end;
        span.label = label;
        (end, label)
    }

    fn trace(&mut self, start: u64) -> Vec<Span> {
        let root = if self.rng.next_f64_nonzero() < CHECKOUT_SHARE {
            checkout_page()
        } else {
            product_page()
        };
        let trace_id =
            (u128::from(self.rng.next_nonzero()) << 64) | u128::from(self.rng.next_u64());
        let mut spans = Vec::new();
        let (_, trace_label) = self.span(&root, trace_id, None, start, &mut spans);
        for span in &mut spans {
            span.trace_label = trace_label;
            span.fault = self.faults.iter().position(|f| f.in_window(span.start));
            span.seq = self.seq;
            self.seq += 1;
        }
        spans
    }
}

fn write_span<W: Write>(w: &mut csv::Writer<W>, s: &Span, faults: &[Fault]) -> io::Result<()> {
    let (service, operation, _, _) = OPS[s.op];
    let parent = s.parent.map(|p| format!("{p:016x}")).unwrap_or_default();
    let (fault_id, fault_type) = match s.fault.map(|i| &faults[i]) {
        Some(f) => (f.id.as_str(), f.kind.as_str()),
        None => ("", ""),
    };
    w.write_record([
        format!("{:032x}", s.trace_id).as_str(),
        &format!("{:016x}", s.span_id),
        &parent,
        service,
        operation,
        &s.start.to_string(),
        &s.end.to_string(),
        if s.label { "1" } else { "0" },
        if s.trace_label { "1" } else { "0" },
        fault_id,
        fault_type,
    ])?;
    Ok(())
}

/// Writes the header and the spans of `config.traces` traces, sorted by end time.
pub fn generate(config: &SynthConfig, writer: impl Write) -> io::Result<SynthSummary> {
    let mut w = labeled_csv::writer(writer);
    let rate = if config.traces_per_second > 0.0 {
        config.traces_per_second
    } else {
        SynthConfig::default().traces_per_second
    };
    let length = (config.traces as f64 / rate * 1e9) as u64;
    let faults = if config.faults {
        schedule(config.start_unix_nano, length)
    } else {
        Vec::new()
    };
    let mut summary = SynthSummary {
        faults: faults
            .iter()
            .map(|f| (f.id.clone(), f.kind.as_str(), f.start, f.end))
            .collect(),
        ..SynthSummary::default()
    };
    let mut synth = TraceSynthesizer {
        rng: SplitMix64::new(config.seed),
        faults,
        seq: 0,
    };
    w.write_record(HEADER.split(','))?;
    let mut pending: BinaryHeap<Reverse<Span>> = BinaryHeap::new();
    let mut emit = |w: &mut csv::Writer<_>, s: &Span, faults: &[Fault]| {
        summary.spans += 1;
        summary.anomalous_spans += u64::from(s.label);
        write_span(w, s, faults)
    };
    let mut now = config.start_unix_nano as f64;
    for _ in 0..config.traces {
        now += random::exponential(synth.rng.next_f64_nonzero(), rate) * 1e9;
        let start = now as u64;
        while let Some(Reverse(s)) = pending.peek() {
            if s.end > start {
                break;
            }
            emit(&mut w, s, &synth.faults)?;
            pending.pop();
        }
        for span in synth.trace(start) {
            pending.push(Reverse(span));
        }
    }
    while let Some(Reverse(s)) = pending.pop() {
        emit(&mut w, &s, &synth.faults)?;
    }
    w.flush()?;
    summary.traces = config.traces;
    Ok(summary)
}

/// [`generate`] into a file, gzip-compressed when its name ends in `.gz`.
pub fn write_file(config: &SynthConfig, path: &Path) -> io::Result<SynthSummary> {
    let file = File::create(path)?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let summary = generate(config, &mut gz)?;
        gz.finish()?.sync_all()?;
        Ok(summary)
    } else {
        let mut file = file;
        let summary = generate(config, &mut file)?;
        file.sync_all()?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use super::*;

    struct Parsed {
        trace: String,
        span: String,
        parent: String,
        start: u64,
        end: u64,
        label: bool,
        trace_label: bool,
    }

    fn render(config: &SynthConfig) -> (Vec<u8>, SynthSummary) {
        let mut out = Vec::new();
        let summary = generate(config, &mut out).unwrap();
        (out, summary)
    }

    fn parse(bytes: &[u8]) -> Vec<Parsed> {
        let text = std::str::from_utf8(bytes).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(HEADER));
        lines
            .map(|line| {
                let f: Vec<&str> = line.split(',').collect();
                assert_eq!(f.len(), 11, "{line}");
                assert_eq!(f[0].len(), 32);
                assert_eq!(f[1].len(), 16);
                Parsed {
                    trace: f[0].to_string(),
                    span: f[1].to_string(),
                    parent: f[2].to_string(),
                    start: f[5].parse().unwrap(),
                    end: f[6].parse().unwrap(),
                    label: f[7] == "1",
                    trace_label: f[8] == "1",
                }
            })
            .collect()
    }

    fn config(seed: u64, faults: bool) -> SynthConfig {
        SynthConfig {
            seed,
            traces: 3000,
            faults,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn synth_same_seed_gives_identical_bytes() {
        let (a, sa) = render(&config(7, true));
        let (b, sb) = render(&config(7, true));
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        let (c, _) = render(&config(8, true));
        assert_ne!(a, c);
    }

    #[test]
    fn synth_rows_are_sorted_by_end_and_trees_are_consistent() {
        let (bytes, summary) = render(&config(3, true));
        let rows = parse(&bytes);
        assert_eq!(rows.len() as u64, summary.spans);
        assert!(rows.windows(2).all(|w| w[0].end <= w[1].end));
        let by_id: HashMap<&str, &Parsed> = rows.iter().map(|r| (r.span.as_str(), r)).collect();
        assert_eq!(by_id.len(), rows.len(), "span ids are unique");
        let mut trace_labels: HashMap<&str, bool> = HashMap::new();
        for r in &rows {
            assert!(r.start <= r.end);
            *trace_labels.entry(&r.trace).or_default() |= r.label;
            if r.parent.is_empty() {
                continue;
            }
            let p = by_id[r.parent.as_str()];
            assert_eq!(p.trace, r.trace, "parent in the same trace");
            assert!(p.start <= r.start && r.end <= p.end, "child within parent");
            if r.label {
                assert!(p.label, "a labeled span's parent is labeled");
            }
        }
        assert_eq!(trace_labels.len() as u64, summary.traces);
        for r in &rows {
            assert_eq!(r.trace_label, trace_labels[r.trace.as_str()]);
        }
        let labeled = rows.iter().filter(|r| r.label).count() as u64;
        assert_eq!(labeled, summary.anomalous_spans);
        assert!(labeled > 0);
        assert_eq!(summary.faults.len(), 6);
    }

    #[test]
    fn synth_every_fault_labels_some_spans() {
        let (bytes, summary) = render(&config(5, true));
        let text = std::str::from_utf8(&bytes).unwrap();
        for (id, kind, start, end) in &summary.faults {
            assert!(start < end);
            let labeled = text
                .lines()
                .filter(|l| l.ends_with(&format!(",1,1,{id},{kind}")))
                .count();
            assert!(labeled > 0, "{id} labels no span");
        }
    }

    #[test]
    fn synth_without_faults_has_no_label() {
        let (bytes, summary) = render(&config(3, false));
        assert_eq!(summary.anomalous_spans, 0);
        assert!(summary.faults.is_empty());
        assert!(parse(&bytes).iter().all(|r| !r.label && !r.trace_label));
    }

    #[test]
    fn synth_output_parses_as_a_labeled_csv() {
        let (bytes, summary) = render(&config(3, true));
        let spans = crate::eval::parse_csv(Path::new("<synth>"), bytes.as_slice(), None).unwrap();
        assert_eq!(spans.rows.len() as u64, summary.spans);
        assert!(spans.has_fault_column);
        assert_eq!(spans.faults.len(), 6);
        assert_eq!(spans.operations.len(), OPS.len());
        let labeled = spans.rows.iter().filter(|r| r.label).count() as u64;
        assert_eq!(labeled, summary.anomalous_spans);
    }

    #[test]
    fn synth_writes_gzip_when_the_name_ends_in_gz() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv.gz");
        let summary = write_file(&config(3, true), &path).unwrap();
        let spans = crate::eval::read_csv(&path, None).unwrap();
        assert_eq!(spans.rows.len() as u64, summary.spans);
    }
}
