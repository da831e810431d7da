//! The chart `tracescale simulate --plot` writes: one panel per policy over a shared time axis,
//! the end-to-end p99 against the SLO and the replicas of each service, with the fault windows
//! shaded and each policy's figures in the caption.

use std::fmt::Write as _;

use super::report::Summary;
use super::{FaultPhase, IntervalStats, Scenario, TrafficPattern};

/// One run (one policy) for the chart.
pub struct Series<'a> {
    /// The policy's name: the panel's title and its legend entry.
    pub label: &'a str,
    /// Its per-second rows.
    pub rows: &'a [IntervalStats],
    /// Its figures, for the caption.
    pub summary: Option<&'a Summary>,
}

/// Width of `text` at `size` px in a sans-serif font, estimated generously (0.62 em a
/// character; digits and lower case run narrower), so boxes laid out with it do not touch.
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.62
}

/// One colour per service, in the order the services first appear; red is kept for the SLO.
const SERVICE_COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
];

/// One line style per policy, in the order of the series.
const POLICY_DASHES: [&str; 4] = ["none", "7 4", "2 3", "10 3 2 3"];

/// Readable text over lines: a white halo under the glyphs.
const HALO: &str =
    r#"paint-order="stroke" stroke="white" stroke-width="3" stroke-linejoin="round""#;

/// What a fault window is: the traffic spikes and slowdowns of the shop that overlap it, and
/// the service whose scale-up fixes it.
fn fault_label(scenario: &Scenario, index: usize, phase: &FaultPhase) -> (String, String) {
    let overlaps = |start: u64, end: u64| start < phase.end && end > phase.start;
    let mut causes = Vec::new();
    if let TrafficPattern::Spike {
        base_rps,
        peak_rps,
        at,
        duration,
    } = scenario.sim.traffic
        && overlaps(at, at.saturating_add(duration))
    {
        causes.push(format!("traffic {base_rps:.0} → {peak_rps:.0} req/s"));
    }
    for f in &scenario.sim.traffic_spikes {
        if overlaps(f.start, f.end) {
            causes.push(format!("traffic {}×", f.factor));
        }
    }
    for f in &scenario.sim.faults {
        if overlaps(f.start, f.end) {
            causes.push(format!("{} {}× slower", f.service, f.factor));
        }
    }
    for f in &scenario.sim.network_delays {
        if overlaps(f.start, f.end) {
            causes.push(format!(
                "{} → {} +{}ms",
                f.caller,
                f.callee,
                f.delay / 1_000_000
            ));
        }
    }
    for f in &scenario.sim.replica_losses {
        if overlaps(f.at, f.at.saturating_add(1)) {
            causes.push(format!("{} loses {}", f.service, f.count));
        }
    }
    if causes.is_empty() {
        causes.push("fault".to_string());
    }
    (
        format!("fault {}: {}", index + 1, causes.join(", ")),
        format!("right target: {}", phase.right_target),
    )
}

/// The step between labelled time ticks: at most twelve ticks over the run.
fn time_step(total_s: f64) -> f64 {
    [
        5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|step| total_s / step <= 12.0)
    .unwrap_or((total_s / 12.0).ceil())
}

/// The SVG chart: the fault windows labelled along the top, then one panel per policy, stacked
/// over a shared time axis in seconds, each with the end-to-end p99 (log scale, with the SLO
/// line) above the replicas of each service (one colour per service); then the legend and a
/// caption with each policy's figures.
pub fn svg(scenario: &Scenario, series: &[Series<'_>]) -> String {
    const W: f64 = 960.0;
    const LEFT: f64 = 84.0;
    const RIGHT: f64 = 28.0;
    const LAT_H: f64 = 110.0;
    const REP_H: f64 = 120.0;
    const TITLE_H: f64 = 22.0;
    const INNER_GAP: f64 = 16.0;
    const BLOCK_GAP: f64 = 18.0;
    const FIRST_PANEL: f64 = 76.0;
    const SMALL: f64 = 10.0;
    const FONT: f64 = 12.0;
    let plot_w = W - LEFT - RIGHT;
    let total_s = (scenario.duration_ns as f64 / 1e9).max(1.0);
    let xs = |t_s: f64| LEFT + t_s.clamp(0.0, total_s) / total_s * plot_w;
    let x = |t_ns: u64| xs(t_ns as f64 / 1e9);
    let block_h = TITLE_H + LAT_H + INNER_GAP + REP_H + BLOCK_GAP;
    let panels_bottom = FIRST_PANEL + block_h * series.len() as f64 - BLOCK_GAP;
    // Latency: log10 of ms from 1 ms to 100 s.
    let y_lat = |top: f64, ms: f64| {
        let v = ms.clamp(1.0, 100_000.0).log10() / 5.0;
        top + (1.0 - v) * LAT_H
    };
    let max_replicas = series
        .iter()
        .flat_map(|s| s.rows.iter())
        .flat_map(|r| r.services.iter().map(|s| s.desired_replicas))
        .max()
        .unwrap_or(1)
        .max(1);
    let rep_step = [1, 2, 4, 5, 10, 20, 25, 50, 100]
        .into_iter()
        .find(|step| max_replicas / step <= 6)
        .unwrap_or(max_replicas.div_ceil(6));
    let rep_top = max_replicas.div_ceil(rep_step) * rep_step;
    let y_rep = |top: f64, n: f64| top + (1.0 - n / f64::from(rep_top)) * REP_H;
    let mut services: Vec<&str> = Vec::new();
    for run in series {
        for svc in run.rows.iter().flat_map(|r| r.services.iter()) {
            if !services.contains(&svc.service.as_str()) {
                services.push(&svc.service);
            }
        }
    }
    let colour = |name: &str| {
        let i = services.iter().position(|s| *s == name).unwrap_or(0);
        SERVICE_COLOURS[i % SERVICE_COLOURS.len()]
    };
    let step = time_step(total_s);
    let ticks: Vec<f64> = (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|t| *t <= total_s + 1e-9)
        .collect();
    let tick_label = |t: f64| format!("{t:.0}");

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">{}</text>"#,
        xml_escape(&format!(
            "{} (seed {}): end-to-end p99 latency and replicas per service, by policy",
            scenario.name, scenario.sim.seed
        ))
    );
    // Fault windows: shaded behind every panel, labelled above the first.
    for (i, phase) in scenario.phases.iter().enumerate() {
        let (a, b) = (x(phase.start), x(phase.end));
        let (what, target) = fault_label(scenario, i, phase);
        let width = text_width(&what, 11.0).max(text_width(&target, 11.0));
        let tx = (a + 4.0).min(W - RIGHT - width).max(LEFT);
        let _ = writeln!(
            s,
            r##"<g class="fault"><rect x="{a:.1}" y="32" width="{:.1}" height="{:.1}" fill="#f6e3c0" opacity="0.6"/><text x="{tx:.1}" y="46" font-size="11">{}</text><text x="{tx:.1}" y="60" font-size="11" fill="#555">{}</text></g>"##,
            (b - a).max(1.0),
            panels_bottom - 32.0,
            xml_escape(&what),
            xml_escape(&target),
        );
    }
    let slo_ms = scenario.slo_latency_ns as f64 / 1e6;
    for (i, run) in series.iter().enumerate() {
        let top = FIRST_PANEL + block_h * i as f64;
        let lat_top = top + TITLE_H;
        let rep_top_y = lat_top + LAT_H + INNER_GAP;
        let dash = POLICY_DASHES[i % POLICY_DASHES.len()];
        let _ = writeln!(
            s,
            r#"<g class="panel" data-policy="{label}"><text x="{LEFT}" y="{:.1}" font-weight="bold">{label}</text>"#,
            top + 15.0,
            label = xml_escape(run.label),
        );
        // Frames, time grid and ticks.
        for (y0, h) in [(lat_top, LAT_H), (rep_top_y, REP_H)] {
            let _ = writeln!(
                s,
                r##"<rect x="{LEFT}" y="{y0:.1}" width="{plot_w:.1}" height="{h}" fill="none" stroke="#bbb"/>"##
            );
            for &t in &ticks {
                let tx = xs(t);
                let _ = writeln!(
                    s,
                    r##"<line x1="{tx:.1}" x2="{tx:.1}" y1="{y0:.1}" y2="{:.1}" stroke="#eee"/><line x1="{tx:.1}" x2="{tx:.1}" y1="{:.1}" y2="{:.1}" stroke="#888"/>"##,
                    y0 + h,
                    y0 + h,
                    y0 + h + 4.0,
                );
            }
        }
        // Latency axis.
        for (ms, label) in [
            (1.0, "1 ms"),
            (10.0, "10 ms"),
            (100.0, "100 ms"),
            (1_000.0, "1 s"),
            (10_000.0, "10 s"),
            (100_000.0, "100 s"),
        ] {
            let y = y_lat(lat_top, ms);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="{SMALL}" text-anchor="end">{label}</text>"##,
                W - RIGHT,
                LEFT - 5.0,
                y + 3.5
            );
        }
        let mid = lat_top + LAT_H / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="16" y="{mid:.1}" font-size="11" text-anchor="middle" transform="rotate(-90 16 {mid:.1})">p99 latency</text>"#
        );
        // Replica axis.
        let mut n = 0;
        while n <= rep_top {
            let y = y_rep(rep_top_y, f64::from(n));
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="{SMALL}" text-anchor="end">{n}</text>"##,
                W - RIGHT,
                LEFT - 5.0,
                y + 3.5
            );
            n += rep_step;
        }
        let mid = rep_top_y + REP_H / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="16" y="{mid:.1}" font-size="11" text-anchor="middle" transform="rotate(-90 16 {mid:.1})">replicas</text>"#
        );
        // The p99 line, in the policy's style.
        let lat: Vec<String> = run
            .rows
            .iter()
            .filter_map(|r| {
                // Failed requests count as infinitely slow: drawn at the top of the scale.
                let ms = match r.e2e_p99_ns? {
                    u64::MAX => 100_000.0,
                    ns => ns as f64 / 1e6,
                };
                Some(format!("{:.1},{:.1}", x(r.end), y_lat(lat_top, ms)))
            })
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#333" stroke-width="1.4" stroke-dasharray="{dash}" points="{}"><title>{} p99</title></polyline>"##,
            lat.join(" "),
            xml_escape(run.label),
        );
        let slo = y_lat(lat_top, slo_ms);
        let _ = writeln!(
            s,
            r#"<g class="slo"><line x1="{LEFT}" x2="{:.1}" y1="{slo:.1}" y2="{slo:.1}" stroke="red" stroke-width="1.2" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="11" fill="red" text-anchor="end" {HALO}>SLO {slo_ms:.0} ms</text></g>"#,
            W - RIGHT,
            W - RIGHT - 4.0,
            slo - 4.0
        );
        // Replicas: a step line per service; services at the same count are drawn side by
        // side (offset by their line width) rather than over each other.
        let count = services.len() as f64;
        for (j, name) in services.iter().enumerate() {
            let offset = (j as f64 - (count - 1.0) / 2.0) * 2.0;
            let mut pts: Vec<String> = Vec::new();
            let mut last: Option<u32> = None;
            for r in run.rows {
                let Some(svc) = r.service(name) else { continue };
                let n = svc.desired_replicas;
                let y = |n: u32| y_rep(rep_top_y, f64::from(n)) + offset;
                match last {
                    None => pts.push(format!("{:.1},{:.1}", x(r.start), y(n))),
                    Some(prev) if prev != n => {
                        pts.push(format!("{:.1},{:.1}", x(r.start), y(prev)));
                        pts.push(format!("{:.1},{:.1}", x(r.start), y(n)));
                    }
                    Some(_) => {}
                }
                last = Some(n);
            }
            if let (Some(n), Some(r)) = (last, run.rows.last()) {
                pts.push(format!(
                    "{:.1},{:.1}",
                    x(r.end),
                    y_rep(rep_top_y, f64::from(n)) + offset
                ));
            }
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"><title>{} {}</title></polyline>"#,
                colour(name),
                pts.join(" "),
                xml_escape(run.label),
                xml_escape(name),
            );
        }
        s.push_str("</g>\n");
    }
    // The shared time axis, under the last panel.
    let _ = write!(s, r#"<g class="x-axis">"#);
    for &t in &ticks {
        let _ = write!(
            s,
            r#"<text class="tick-label" x="{:.1}" y="{:.1}" font-size="{SMALL}" text-anchor="middle">{}</text>"#,
            xs(t),
            panels_bottom + 16.0,
            tick_label(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<text class="axis-title" x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">time (s)</text></g>"#,
        LEFT + plot_w / 2.0,
        panels_bottom + 32.0
    );
    // Legend: laid out from estimated text widths, wrapping, so no entry runs into the next.
    let mut entries: Vec<(&str, String, String)> = Vec::new();
    for name in &services {
        entries.push((
            "service",
            (*name).to_string(),
            format!(r#"stroke="{}" stroke-width="3""#, colour(name)),
        ));
    }
    for (i, run) in series.iter().enumerate() {
        entries.push((
            "policy",
            format!("{} (p99 line)", run.label),
            format!(
                r##"stroke="#333" stroke-width="1.6" stroke-dasharray="{}""##,
                POLICY_DASHES[i % POLICY_DASHES.len()]
            ),
        ));
    }
    let mut ly = panels_bottom + 56.0;
    let mut lx = LEFT;
    let _ = write!(s, r#"<g class="legend">"#);
    let mut kind_seen = "";
    for (kind, label, stroke) in &entries {
        let w = 28.0 + text_width(label, FONT);
        if (kind_seen != *kind && !kind_seen.is_empty()) || lx + w > W - RIGHT {
            ly += 20.0;
            lx = LEFT;
        }
        kind_seen = kind;
        let _ = write!(
            s,
            r#"<g class="legend-entry" data-kind="{kind}" data-name="{}"><line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" {stroke}/><text x="{:.1}" y="{ly:.1}" font-size="{FONT}">{}</text></g>"#,
            xml_escape(label),
            lx + 22.0,
            ly - 4.0,
            ly - 4.0,
            lx + 28.0,
            xml_escape(label),
        );
        lx += w + 18.0;
    }
    let _ = writeln!(s, "</g>");
    // Caption: each policy's figures.
    let mut cy = ly + 28.0;
    let _ = write!(s, r#"<g class="caption">"#);
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="{cy:.1}" font-size="11">{}</text>"#,
        xml_escape(&format!(
            "Over the {total_s:.0} s run (SLO: end-to-end p99 ≤ {slo_ms:.0} ms; shaded: fault windows; services at the same count are drawn side by side):"
        ))
    );
    for run in series {
        let Some(m) = run.summary else { continue };
        cy += 16.0;
        let _ = write!(
            s,
            r#"<text x="{LEFT}" y="{cy:.1}" font-size="11">{}</text>"#,
            xml_escape(&format!(
                "{}: {:.0} SLO-violation s, {:.0} replica-s",
                run.label, m.slo_violation_seconds, m.replica_seconds
            ))
        );
    }
    let _ = writeln!(s, "</g>");
    let height = cy + 14.0;
    let mut out = String::with_capacity(s.len() + 200);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0}" viewBox="0 0 {W} {height:.0}" font-family="sans-serif" font-size="{FONT}">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    out.push_str(&s);
    out.push_str("</svg>\n");
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulation::{NANOS_PER_SEC, ServiceIntervalStats, presets};

    fn rows(
        services: &[&str],
        seconds: u64,
        replicas: impl Fn(u64, usize) -> u32,
    ) -> Vec<IntervalStats> {
        (0..seconds)
            .map(|t| IntervalStats {
                start: t * NANOS_PER_SEC,
                end: (t + 1) * NANOS_PER_SEC,
                services: services
                    .iter()
                    .enumerate()
                    .map(|(j, name)| ServiceIntervalStats {
                        service: (*name).to_string(),
                        arrivals: 0,
                        completions: 0,
                        rejections: 0,
                        errors: 0,
                        p50_ns: None,
                        p99_ns: None,
                        queue_len: 0,
                        busy_slots: 0,
                        ready_replicas: replicas(t, j),
                        desired_replicas: replicas(t, j),
                        cpu_utilisation: 0.0,
                    })
                    .collect(),
                root_ok: 1,
                root_failed: 0,
                e2e_p50_ns: Some(20_000_000),
                e2e_p99_ns: Some(if t % 97 == 0 {
                    u64::MAX
                } else {
                    80_000_000 + t * 100_000
                }),
                e2e_ok_p99_ns: Some(80_000_000),
            })
            .collect()
    }

    fn summary(slo: f64, cost: f64) -> Summary {
        Summary {
            slo_violation_seconds: slo,
            replica_seconds: cost,
            first_correct_action_seconds: Some(3.0),
            wrong_target_actions: 0,
            actions: 2,
        }
    }

    /// The box `text` covers: from its x (or centred or right-aligned), a font-size high above
    /// its baseline, the width estimated at 0.6 em a character.
    fn text_box(node: roxmltree::Node<'_, '_>) -> (f64, f64, f64, f64) {
        let num = |name: &str| node.attribute(name).and_then(|v| v.parse::<f64>().ok());
        let size = num("font-size").unwrap_or(12.0);
        let width = node.text().unwrap_or("").chars().count() as f64 * size * 0.6;
        let (x, y) = (num("x").unwrap(), num("y").unwrap());
        let x0 = match node.attribute("text-anchor") {
            Some("middle") => x - width / 2.0,
            Some("end") => x - width,
            _ => x,
        };
        (x0, y - size, x0 + width, y + size * 0.25)
    }

    fn has_class(node: &roxmltree::Node<'_, '_>, class: &str) -> bool {
        node.attribute("class") == Some(class)
    }

    #[test]
    fn a_fault_window_is_labelled_with_what_the_shop_does_in_it() {
        let text = include_str!("../../../configs/shops/online-boutique.toml");
        let scenario = crate::simulation::shop::parse_shop("online-boutique.toml", text).unwrap();
        let labels: Vec<String> = scenario
            .phases
            .iter()
            .enumerate()
            .map(|(i, p)| fault_label(&scenario, i, p).0)
            .collect();
        assert_eq!(
            labels,
            ["fault 1: traffic 3×", "fault 2: catalogdb 6× slower"]
        );
    }

    #[test]
    fn the_chart_has_axes_labels_a_legend_and_no_overlapping_legend_text() {
        let scenario = presets::mixed();
        let services = ["frontend", "worker", "db"];
        let ours = rows(&services, 900, |t, j| if j == 1 && t > 70 { 5 } else { 2 });
        let cpu = rows(&services, 900, |t, j| if j == 1 && t > 90 { 4 } else { 2 });
        let rps = rows(&services, 900, |t, j| if j == 2 && t > 620 { 3 } else { 2 });
        let (a, b, c) = (
            summary(84.0, 7466.0),
            summary(115.0, 7050.0),
            summary(99.0, 7100.0),
        );
        let chart = svg(
            &scenario,
            &[
                Series {
                    label: "trace-driven",
                    rows: &ours,
                    summary: Some(&a),
                },
                Series {
                    label: "cpu-hpa",
                    rows: &cpu,
                    summary: Some(&b),
                },
                Series {
                    label: "rps",
                    rows: &rps,
                    summary: Some(&c),
                },
            ],
        );
        let doc = roxmltree::Document::parse(&chart).unwrap_or_else(|e| panic!("{e}\n{chart}"));
        let all: Vec<_> = doc.descendants().collect();

        // A time axis with numeric tick labels, and its title.
        let axis = all
            .iter()
            .find(|n| has_class(n, "x-axis"))
            .expect("no x-axis");
        let ticks: Vec<f64> = axis
            .descendants()
            .filter(|n| has_class(n, "tick-label"))
            .map(|n| n.text().unwrap().parse().unwrap())
            .collect();
        assert!(ticks.len() >= 5, "{ticks:?}");
        assert_eq!(ticks.first(), Some(&0.0));
        assert!(ticks.windows(2).all(|w| w[1] > w[0]), "{ticks:?}");
        assert!(axis.descendants().any(|n| n.text() == Some("time (s)")));

        // A legend entry per service and per policy.
        let entries: Vec<_> = all
            .iter()
            .filter(|n| has_class(n, "legend-entry"))
            .collect();
        for name in services {
            assert!(
                entries
                    .iter()
                    .any(|e| e.attribute("data-kind") == Some("service")
                        && e.attribute("data-name") == Some(name)),
                "no legend entry for {name}"
            );
        }
        for policy in ["trace-driven", "cpu-hpa", "rps"] {
            assert!(
                entries
                    .iter()
                    .any(|e| e.attribute("data-kind") == Some("policy")
                        && e.attribute("data-name")
                            .is_some_and(|n| n.starts_with(policy))),
                "no legend entry for {policy}"
            );
        }

        // The SLO line is labelled with its value, in every panel.
        let slos: Vec<_> = all.iter().filter(|n| has_class(n, "slo")).collect();
        assert_eq!(slos.len(), 3);
        for slo in slos {
            assert!(slo.children().any(|n| n.has_tag_name("line")));
            assert!(slo.descendants().any(|n| n.text() == Some("SLO 500 ms")));
        }

        // One labelled band per fault.
        let faults: Vec<_> = all.iter().filter(|n| has_class(n, "fault")).collect();
        assert_eq!(faults.len(), scenario.phases.len());
        for (f, label) in faults
            .iter()
            .zip(["traffic 80 → 240 req/s", "db 5× slower"])
        {
            assert!(f.children().any(|n| n.has_tag_name("rect")));
            let text: String = f.descendants().filter_map(|n| n.text()).collect();
            assert!(text.contains(label), "{text}");
        }

        // The caption carries each policy's figures.
        let caption: String = all
            .iter()
            .filter(|n| has_class(n, "caption"))
            .flat_map(|n| n.descendants().filter_map(|t| t.text()))
            .collect();
        assert!(
            caption.contains("cpu-hpa: 115 SLO-violation s, 7050 replica-s"),
            "{caption}"
        );

        // No two legend entries (swatch and text) overlap.
        let boxes: Vec<(f64, f64, f64, f64)> = entries
            .iter()
            .map(|e| {
                let text = e.children().find(|n| n.has_tag_name("text")).unwrap();
                let line = e.children().find(|n| n.has_tag_name("line")).unwrap();
                let x1: f64 = line.attribute("x1").unwrap().parse().unwrap();
                let (tx0, ty0, tx1, ty1) = text_box(text);
                (x1.min(tx0), ty0, tx1, ty1)
            })
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.2 <= 960.0, "legend entry {i} runs off the chart: {a:?}");
            for b in &boxes[i + 1..] {
                let apart = a.2 <= b.0 || b.2 <= a.0 || a.3 <= b.1 || b.3 <= a.1;
                assert!(apart, "legend boxes overlap: {a:?} {b:?}");
            }
        }
    }
}
