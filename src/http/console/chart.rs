//! Server-rendered SVG charts for the overview: stacked bars (counts per
//! bucket) and lines (a rate or a latency per bucket). No script and no
//! `style` attribute (the console's CSP allows neither inline): colours
//! are SVG presentation attributes (`fill`, `stroke`).
//!
//! Policy: the builder writes markup itself, so every text it puts in
//! (titles, series names, bucket labels) goes through `escape`; the
//! template includes the result unescaped. Each bar and point carries a
//! `<title>` with its bucket, series and value (what a screen reader and a
//! hover read), and `data-value` for tests. The y axis runs from 0 to a
//! "nice" maximum (1, 2 or 5 × 10ⁿ) at or above the largest value.

use std::fmt::Write;

/// Chart area, in SVG user units (the SVG scales to its box's width).
const W: f64 = 600.0;
const H: f64 = 180.0;
/// Room on the left for the axis labels, and below for the time labels.
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 20.0;

/// Series colours, in order (then again).
pub const PALETTE: [&str; 8] = [
    "#2f7d4f", "#c0392b", "#d68910", "#2e86c1", "#7d3c98", "#5d6d7e", "#16a085", "#a04000",
];

/// One named series, one value per bucket (`None`: no data there).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

impl Series {
    pub fn counts(name: &str, values: &[i64]) -> Self {
        Series {
            name: name.to_owned(),
            values: values.iter().map(|v| Some(*v as f64)).collect(),
        }
    }
}

/// `s` safe inside SVG text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `max` (1 for nothing).
pub fn nice_max(max: f64) -> f64 {
    if !max.is_finite() || max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        let candidate = step * magnitude;
        // A hair of tolerance: 0.3 / 0.1 is not exactly 3.
        if candidate >= max * (1.0 - 1e-9) {
            return candidate;
        }
    }
    10.0 * magnitude
}

/// Height in user units of `value` on a `0..=top` axis.
pub fn scale(value: f64, top: f64) -> f64 {
    (value.max(0.0) / top).min(1.0) * (H - BOTTOM)
}

/// A number for a label: integers without a fraction, others with one
/// decimal.
fn num(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The frame: the `<svg>` opening, the y axis' top label and the first
/// and last bucket labels.
fn frame(id: &str, title: &str, labels: &[String], top: f64, unit: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="{id}-title" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{}</title>"#,
        escape(title)
    );
    let base = H - BOTTOM;
    let _ = write!(
        s,
        r##"<line x1="{LEFT}" y1="{base}" x2="{W}" y2="{base}" stroke="#99a3ad"/><text x="{}" y="10" font-size="10" text-anchor="end" fill="#5d6b78">{}{}</text><text x="{}" y="{base}" font-size="10" text-anchor="end" fill="#5d6b78">0</text>"##,
        LEFT - 4.0,
        num(top),
        escape(unit),
        LEFT - 4.0,
    );
    if let (Some(first), Some(last)) = (labels.first(), labels.last()) {
        let _ = write!(
            s,
            r##"<text x="{LEFT}" y="{H}" font-size="10" fill="#5d6b78">{}</text><text x="{W}" y="{H}" font-size="10" text-anchor="end" fill="#5d6b78">{}</text>"##,
            escape(first),
            escape(last)
        );
    }
    s
}

fn slot(n: usize) -> f64 {
    (W - LEFT) / n.max(1) as f64
}

/// Stacked bars: per bucket, each series' count on top of the ones before.
pub fn stacked_bars(id: &str, title: &str, labels: &[String], series: &[Series]) -> String {
    let n = labels.len();
    let totals: Vec<f64> = (0..n)
        .map(|i| {
            series
                .iter()
                .filter_map(|s| s.values.get(i).copied().flatten())
                .sum()
        })
        .collect();
    let top = nice_max(totals.iter().copied().fold(0.0, f64::max));
    let mut s = frame(id, title, labels, top, "");
    let width = slot(n);
    for (i, label) in labels.iter().enumerate() {
        let mut y = H - BOTTOM;
        for (k, serie) in series.iter().enumerate() {
            let v = serie.values.get(i).copied().flatten().unwrap_or(0.0);
            if v <= 0.0 {
                continue;
            }
            let h = scale(v, top);
            y -= h;
            let _ = write!(
                s,
                r#"<rect class="bar" data-series="{}" data-value="{}" x="{:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                escape(&serie.name),
                num(v),
                LEFT + i as f64 * width + 0.5,
                (width - 1.0).max(0.5),
                PALETTE[k % PALETTE.len()],
                escape(label),
                escape(&serie.name),
                num(v)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Lines: each series' values joined where present, a point at each (with
/// its `<title>`); `top` fixes the axis (e.g. 100 for a percentage), else
/// it follows the data.
pub fn lines(
    id: &str,
    title: &str,
    labels: &[String],
    series: &[Series],
    top: Option<f64>,
    unit: &str,
) -> String {
    let n = labels.len();
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .copied()
        .fold(0.0, f64::max);
    let top = top.unwrap_or_else(|| nice_max(max));
    let mut s = frame(id, title, labels, top, unit);
    let width = slot(n);
    for (k, serie) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let points: Vec<(usize, f64)> = serie
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .collect();
        let xy = |i: usize, v: f64| (LEFT + (i as f64 + 0.5) * width, H - BOTTOM - scale(v, top));
        if points.len() > 1 {
            let path: Vec<String> = points
                .iter()
                .map(|(i, v)| {
                    let (x, y) = xy(*i, *v);
                    format!("{x:.1},{y:.1}")
                })
                .collect();
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
                path.join(" ")
            );
        }
        for (i, v) in points {
            let (x, y) = xy(i, v);
            let _ = write!(
                s,
                r#"<circle class="point" data-series="{}" data-value="{}" cx="{x:.1}" cy="{y:.1}" r="2.5" fill="{colour}"><title>{} {}: {}{}</title></circle>"#,
                escape(&serie.name),
                num(v),
                escape(&labels[i.min(n.saturating_sub(1))]),
                escape(&serie.name),
                num(v),
                escape(unit)
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_top_is_a_nice_number_at_or_above_the_largest_value() {
        for (max, top) in [
            (0.0, 1.0),
            (-3.0, 1.0),
            (f64::NAN, 1.0),
            (1.0, 1.0),
            (1.2, 2.0),
            (3.0, 5.0),
            (7.0, 10.0),
            (10.0, 10.0),
            (11.0, 20.0),
            (0.3, 0.5),
            (480.0, 500.0),
            (501.0, 1000.0),
        ] {
            assert_eq!(nice_max(max), top, "{max}");
        }
    }

    #[test]
    fn values_scale_to_the_plot_height_and_stay_within_it() {
        assert_eq!(scale(0.0, 10.0), 0.0);
        assert_eq!(scale(10.0, 10.0), H - BOTTOM);
        assert_eq!(scale(5.0, 10.0), (H - BOTTOM) / 2.0);
        assert_eq!(scale(20.0, 10.0), H - BOTTOM, "clipped");
        assert_eq!(scale(-1.0, 10.0), 0.0);
    }

    #[test]
    fn bars_stack_per_bucket_and_carry_their_numbers() {
        let labels = vec!["20:00".to_owned(), "20:01".to_owned()];
        let svg = stacked_bars(
            "c",
            "Triggers",
            &labels,
            &[
                Series::counts("accepted", &[3, 0]),
                Series::counts("rate-limited", &[2, 1]),
            ],
        );
        // Zero draws nothing; the three others each have a title.
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(svg.contains("<title>20:00 accepted: 3</title>"));
        assert!(svg.contains("<title>20:01 rate-limited: 1</title>"));
        // The total of 5 tops the axis at 5: the first bucket fills it.
        let full = H - BOTTOM;
        assert!(svg.contains(r#"y="0.0" width"#), "{svg}");
        assert!(svg.contains(&format!(r#"height="{:.1}""#, full * 3.0 / 5.0)));
        assert!(!svg.contains("style="));
    }

    #[test]
    fn every_text_is_escaped() {
        let evil = r#"<script>alert("x")</script>&'"#;
        let labels = vec![evil.to_owned()];
        let series = [Series::counts(evil, &[1])];
        for svg in [
            stacked_bars("c", evil, &labels, &series),
            lines("c", evil, &labels, &series, None, evil),
        ] {
            assert!(!svg.contains("<script"), "{svg}");
            assert!(!svg.contains(r#""x""#), "{svg}");
            assert!(svg.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
        }
    }

    #[test]
    fn lines_skip_missing_values_and_honour_a_fixed_top() {
        let labels: Vec<String> = (0..3).map(|i| format!("m{i}")).collect();
        let s = Series {
            name: "hooks".into(),
            values: vec![Some(100.0), None, Some(50.0)],
        };
        let svg = lines("c", "Success", &labels, &[s], Some(100.0), "%");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("<title>m2 hooks: 50%</title>"));
        assert!(svg.contains(r#"cy="0.0""#), "100 of 100 is the top: {svg}");
    }
}
