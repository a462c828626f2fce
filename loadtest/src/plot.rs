//! A latency-percentile plot per protocol and operation, as SVG: percentile
//! on a log scale of 1/(1-q) (50% .. 99.99%), latency in ms, a line per target.

use std::fmt::Write as _;

use crate::report::TargetResult;
use crate::workload::{Op, Protocol};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 60.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Percentiles plotted: 50% up to 99.99%.
const MAX_NINES: f64 = 4.0;

/// The plot for one protocol and operation over every target that ran it.
pub fn percentile_svg(
    results: &[TargetResult],
    protocol: Protocol,
    op: Op,
    title: &str,
) -> Option<String> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = results
        .iter()
        .filter(|r| r.protocol == protocol)
        .filter_map(|r| {
            let histogram = r.latency_us.get(&op).filter(|h| !h.is_empty())?;
            let points = (0..=80)
                .map(|i| {
                    // x in "nines": 0.3 (50%) .. 4 (99.99%)
                    let nines = 0.301 + (MAX_NINES - 0.301) * f64::from(i) / 80.0;
                    let q = 1.0 - 10f64.powf(-nines);
                    (nines, histogram.value_at_quantile(q) as f64 / 1000.0)
                })
                .collect();
            Some((r.target.as_str(), points))
        })
        .collect();
    if lines.is_empty() {
        return None;
    }
    let max_ms = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(0.1, f64::max)
        * 1.05;
    let x = |nines: f64| MARGIN + (nines - 0.301) / (MAX_NINES - 0.301) * (WIDTH - 2.0 * MARGIN);
    let y = |ms: f64| HEIGHT - MARGIN - ms / max_ms * (HEIGHT - 2.0 * MARGIN);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="14">{title}</text>
<line x1="{MARGIN}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">percentile</text>
<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency (ms)</text>
"#,
        WIDTH / 2.0,
        HEIGHT - MARGIN,
        WIDTH - MARGIN,
        HEIGHT - MARGIN,
        HEIGHT - MARGIN,
        WIDTH / 2.0,
        HEIGHT - 16.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0,
    );
    for (label, nines) in [
        ("50%", 0.301),
        ("90%", 1.0),
        ("99%", 2.0),
        ("99.9%", 3.0),
        ("99.99%", 4.0),
    ] {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            x(nines),
            HEIGHT - MARGIN + 16.0
        );
    }
    for i in 0..=4 {
        let ms = max_ms * f64::from(i) / 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{ms:.1}</text>"#,
            MARGIN - 6.0,
            y(ms) + 4.0
        );
    }
    for (i, (label, points)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(n, ms)| format!("{:.1},{:.1}", x(*n), y(*ms)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{label}</text>"#,
            MARGIN + 12.0,
            MARGIN + 16.0 * (i as f64 + 1.0)
        );
    }
    svg.push_str("</svg>\n");
    Some(svg)
}
