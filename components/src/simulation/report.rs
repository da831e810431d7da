//! The comparison `tracescale simulate` prints: the pipeline against the CPU baseline on one
//! scenario and one seed, as a table, as JSON, and as an SVG chart of p99 latency and replicas.

use std::fmt::Write as _;

use serde::Serialize;

use super::{
    Hpa, HpaConfig, IntervalStats, NANOS_PER_SEC, RunResult, RunScore, Scenario, Sim, SimError,
    run_scenario,
};

/// The figures of one run, as `--json` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Seconds whose end-to-end p99 was above the scenario's SLO (failed requests count as
    /// infinitely slow).
    pub slo_violation_seconds: f64,
    /// Replicas of every service integrated over the run.
    pub replica_seconds: f64,
    /// Seconds from the (first) fault to the first scale-up of the right service, if any.
    pub first_correct_action_seconds: Option<f64>,
    /// Scale-ups of a service that was the wrong target at the time.
    pub wrong_target_actions: u32,
    /// Every replica change.
    pub actions: usize,
}

impl Summary {
    /// The figures of a report and its actions.
    pub fn new(report: &RunScore, actions: usize) -> Self {
        Self {
            slo_violation_seconds: report.slo_violation_seconds,
            replica_seconds: report.replica_seconds,
            first_correct_action_seconds: report.first_correct_action_seconds,
            wrong_target_actions: report.wrong_target_actions,
            actions,
        }
    }
}

/// The CPU baseline: the HPA algorithm on simulated CPU (target utilisation per service,
/// tolerance 0.1, 15 s sync, 300 s scale-down stabilisation) on the same scenario and seed.
pub fn run_baseline(scenario: &Scenario) -> Result<RunResult, SimError> {
    let probe = Sim::new(&scenario.sim)?;
    let mut hpa = Hpa::new(&probe, HpaConfig::default());
    run_scenario(scenario, &mut hpa)
}

/// A side-by-side table.
pub fn table(scenario: &Scenario, pipeline: &Summary, baseline: Option<&Summary>) -> String {
    let mut s = String::new();
    let slo_ms = scenario.slo_latency_ns as f64 / 1e6;
    let _ = writeln!(
        s,
        "scenario {} (seed {}, {} s simulated, SLO: end-to-end p99 <= {slo_ms:.0} ms)",
        scenario.name,
        scenario.sim.seed,
        scenario.duration_ns / NANOS_PER_SEC
    );
    let _ = writeln!(s);
    let cells = |m: &Summary| {
        [
            format!("{:.0}", m.slo_violation_seconds),
            format!("{:.0}", m.replica_seconds),
            m.first_correct_action_seconds
                .map_or_else(|| "never".to_string(), |v| format!("{v:.0}")),
            m.wrong_target_actions.to_string(),
            m.actions.to_string(),
        ]
    };
    let names = [
        "SLO-violation seconds",
        "replica-seconds",
        "fault → first correct action (s)",
        "actions on a wrong target",
        "replica changes",
    ];
    let ours = cells(pipeline);
    let theirs = baseline.map(cells);
    let _ = write!(s, "{:<34} {:>14}", "", "trace-driven");
    if baseline.is_some() {
        let _ = write!(s, " {:>14}", "cpu-hpa");
    }
    s.push('\n');
    for (i, name) in names.iter().enumerate() {
        let _ = write!(s, "{name:<34} {:>14}", ours[i]);
        if let Some(b) = &theirs {
            let _ = write!(s, " {:>14}", b[i]);
        }
        s.push('\n');
    }
    if let Some(b) = baseline
        && b.slo_violation_seconds > 0.0
    {
        let change = 100.0 * (pipeline.slo_violation_seconds / b.slo_violation_seconds - 1.0);
        let _ = writeln!(
            s,
            "\nSLO-violation time vs cpu-hpa: {change:+.0} %; replica-seconds vs cpu-hpa: {:+.0} %",
            100.0 * (pipeline.replica_seconds / b.replica_seconds.max(1e-9) - 1.0)
        );
    }
    s
}

/// One run for the chart.
pub struct Series<'a> {
    /// Legend label.
    pub label: &'a str,
    /// Its per-second rows.
    pub rows: &'a [IntervalStats],
    /// Stroke colour.
    pub color: &'a str,
}

/// An SVG chart: end-to-end p99 (log scale, with the SLO) above, replicas per service below,
/// for each run.
pub fn svg(scenario: &Scenario, series: &[Series<'_>]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 300.0;
    const LEFT: f64 = 60.0;
    const GAP: f64 = 50.0;
    let total_s = (scenario.duration_ns as f64 / 1e9).max(1.0);
    let x = |t_ns: u64| LEFT + (t_ns as f64 / 1e9) / total_s * (W - LEFT - 20.0);
    // Latency: log10 of ms from 1 ms to 100 s.
    let y_lat = |ms: f64| {
        let v = ms.clamp(1.0, 100_000.0).log10() / 5.0;
        20.0 + (1.0 - v) * (H - 40.0)
    };
    let max_replicas = series
        .iter()
        .flat_map(|s| s.rows.iter())
        .flat_map(|r| r.services.iter().map(|s| s.desired_replicas))
        .max()
        .unwrap_or(1)
        .max(1);
    let top2 = H + GAP;
    let y_rep = |n: u32| top2 + 20.0 + (1.0 - f64::from(n) / f64::from(max_replicas)) * (H - 40.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{}" font-family="sans-serif" font-size="12">"#,
        2.0 * H + GAP + 30.0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="14">{}: end-to-end p99 latency (log scale)</text>"#,
        xml_escape(&scenario.name)
    );
    for ms in [1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0] {
        let y = y_lat(ms);
        let label = if ms >= 1000.0 {
            format!("{} s", ms / 1000.0)
        } else {
            format!("{ms} ms")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="4" y="{:.1}">{label}</text>"##,
            W - 20.0,
            y + 4.0
        );
    }
    let slo = y_lat(scenario.slo_latency_ns as f64 / 1e6);
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" x2="{}" y1="{slo:.1}" y2="{slo:.1}" stroke="red" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" fill="red">SLO</text>"#,
        W - 20.0,
        W - 50.0,
        slo - 4.0
    );
    for phase in &scenario.phases {
        let (a, b) = (x(phase.start), x(phase.end));
        for top in [20.0, top2 + 20.0] {
            let _ = writeln!(
                s,
                r##"<rect x="{a:.1}" y="{top}" width="{:.1}" height="{}" fill="#f5e6c8" opacity="0.5"/>"##,
                b - a,
                H - 40.0
            );
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}">replicas per service (solid: first service, dashed: second, dotted: third)</text>"#,
        top2 + 14.0
    );
    for n in 0..=max_replicas {
        if max_replicas > 12 && n % 2 == 1 {
            continue;
        }
        let y = y_rep(n);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="30" y="{:.1}">{n}</text>"##,
            W - 20.0,
            y + 4.0
        );
    }
    let dashes = ["", "8 4", "2 3", "12 3 2 3"];
    for (i, run) in series.iter().enumerate() {
        let lat: Vec<String> = run
            .rows
            .iter()
            .filter_map(|r| {
                // Failed requests count as infinitely slow: drawn at the top of the scale.
                let ms = match r.e2e_p99_ns? {
                    u64::MAX => 100_000.0,
                    ns => ns as f64 / 1e6,
                };
                Some(format!("{:.1},{:.1}", x(r.end), y_lat(ms)))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            run.color,
            lat.join(" ")
        );
        let services: Vec<String> = run
            .rows
            .first()
            .map(|r| r.services.iter().map(|s| s.service.clone()).collect())
            .unwrap_or_default();
        for (j, name) in services.iter().enumerate() {
            let pts: Vec<String> = run
                .rows
                .iter()
                .filter_map(|r| r.services.get(j).map(|s| (r.end, s.desired_replicas)))
                .map(|(t, n)| format!("{:.1},{:.1}", x(t), y_rep(n)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.5" stroke-dasharray="{}" points="{}"><title>{} {name}</title></polyline>"#,
                run.color,
                dashes[j % dashes.len()],
                pts.join(" "),
                xml_escape(run.label),
                name = xml_escape(name),
            );
        }
        let legend_y = 2.0 * H + GAP + 20.0;
        let lx = LEFT + i as f64 * 220.0;
        let names = xml_escape(&services.join(", "));
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="3"/><text x="{}" y="{legend_y}">{} ({names})</text>"#,
            lx + 20.0,
            legend_y - 4.0,
            legend_y - 4.0,
            run.color,
            lx + 26.0,
            xml_escape(run.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// `text` with the five characters XML gives a meaning escaped, so a name can be neither markup
/// nor break out of an attribute.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
