//! A hand-written SVG of a run: latency (p50, p99, max of each second, log
//! scale) above, throughput (delivered/s against published/s × clients)
//! below, one point per second.

use std::fmt::Write;

/// One second of a run.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the program started.
    pub t: f64,
    pub connected: u64,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    /// Latencies of the messages received that second, µs; `None` when no
    /// message arrived.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub max_us: Option<u64>,
}

const W: f64 = 960.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const PANEL_H: f64 = 220.0;
const TOP1: f64 = 50.0;
const TOP2: f64 = TOP1 + PANEL_H + 60.0;
const H: f64 = TOP2 + PANEL_H + 60.0;

pub fn render(title: &str, samples: &[Sample]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="24" font-size="15">{}</text>"#,
        escape(title)
    );
    let t0 = samples.first().map_or(0.0, |x| x.t);
    let t1 = samples.last().map_or(1.0, |x| x.t).max(t0 + 1.0);
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0) * (W - LEFT - RIGHT);

    // Latency, log10 of ms, from 0.01 ms up to the largest max seen.
    let top_ms = samples
        .iter()
        .filter_map(|x| x.max_us)
        .max()
        .map_or(10.0, |us| us as f64 / 1000.0)
        .max(1.0);
    let (lo, hi) = (-2.0f64, top_ms.log10().ceil());
    let y1 = |ms: f64| TOP1 + PANEL_H - (ms.max(0.01).log10() - lo) / (hi - lo) * PANEL_H;
    frame(&mut s, TOP1, "latency, ms (log)");
    let mut e = lo as i32;
    while e as f64 <= hi {
        let ms = 10f64.powi(e);
        tick(&mut s, y1(ms), &fmt_num(ms));
        e += 1;
    }
    for (name, color, f) in [
        (
            "max",
            "#d62728",
            (|x: &Sample| x.max_us) as fn(&Sample) -> Option<u64>,
        ),
        ("p99", "#ff7f0e", |x: &Sample| x.p99_us),
        ("p50", "#1f77b4", |x: &Sample| x.p50_us),
    ] {
        let pts: Vec<(f64, f64)> = samples
            .iter()
            .filter_map(|p| f(p).map(|us| (x(p.t), y1(us as f64 / 1000.0))))
            .collect();
        line(&mut s, &pts, color);
        legend(&mut s, TOP1, name, color);
    }

    // Throughput.
    let expected = |p: &Sample| p.published_per_s * p.connected as f64;
    let top = samples
        .iter()
        .map(|p| p.delivered_per_s.max(expected(p)))
        .fold(1.0, f64::max)
        * 1.1;
    let y2 = |v: f64| TOP2 + PANEL_H - v / top * PANEL_H;
    frame(&mut s, TOP2, "messages delivered per second");
    for i in 0..=4 {
        let v = top * i as f64 / 4.0;
        tick(&mut s, y2(v), &fmt_num(v));
    }
    let pts: Vec<(f64, f64)> = samples.iter().map(|p| (x(p.t), y2(expected(p)))).collect();
    line(&mut s, &pts, "#aaaaaa");
    legend(&mut s, TOP2, "published/s × clients", "#aaaaaa");
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .map(|p| (x(p.t), y2(p.delivered_per_s)))
        .collect();
    line(&mut s, &pts, "#2ca02c");
    legend(&mut s, TOP2, "delivered/s", "#2ca02c");

    // Time axis under each panel.
    for top in [TOP1, TOP2] {
        let steps = 10;
        for i in 0..=steps {
            let t = t0 + (t1 - t0) * i as f64 / steps as f64;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}s</text>"#,
                x(t),
                top + PANEL_H + 16.0,
                t
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn frame(s: &mut String, top: f64, label: &str) {
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL_H}" fill="none" stroke="#444"/>"##,
        W - LEFT - RIGHT
    );
    let _ = writeln!(s, r#"<text x="{LEFT}" y="{}">{label}</text>"#, top - 8.0);
}

fn tick(s: &mut String, y: f64, label: &str) {
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
        W - RIGHT,
        LEFT - 6.0,
        y + 4.0
    );
}

fn line(s: &mut String, pts: &[(f64, f64)], color: &str) {
    if pts.is_empty() {
        return;
    }
    let coords: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        s,
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
        coords.join(" ")
    );
}

fn legend(s: &mut String, top: f64, name: &str, color: &str) {
    // Legends stack leftwards from the right edge; position by a hash of
    // the name is not needed: count what is already drawn for this panel.
    let n = s.matches(&format!("data-panel=\"{top}\"")).count() as f64;
    let x = W - RIGHT - 170.0 * (n + 1.0);
    let _ = writeln!(
        s,
        r#"<g data-panel="{top}"><rect x="{x:.0}" y="{}" width="14" height="4" fill="{color}"/><text x="{:.0}" y="{}">{}</text></g>"#,
        top - 14.0,
        x + 18.0,
        top - 8.0,
        escape(name)
    );
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_document() {
        let samples: Vec<Sample> = (0..5)
            .map(|i| Sample {
                t: i as f64,
                connected: 10,
                published_per_s: 100.0,
                delivered_per_s: 1000.0,
                p50_us: Some(100 + i),
                p99_us: (i != 2).then_some(900),
                max_us: Some(5000),
            })
            .collect();
        let svg = render("a <b> & c", &samples);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(!render("empty", &[]).contains("NaN"));
    }
}
