//! Charts as inline SVG drawn on the server (no script, no library): stacked bars per day and series (a model), and
//! a key row's 7-day sparkline. Colours come from the stylesheet's `series-N` classes (the CSP allows no inline
//! styles); every bar has a `<title>` with its exact value, and the chart a title naming what it shows. The markup is
//! built here from numbers and escaped text only, so pages include it as is. Floats are used for geometry alone,
//! never for the values shown.

use std::fmt::Write as _;

/// The drawing's size in SVG units (it scales to its box).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 240.0;
/// Room for the value axis' labels, and the day labels below.
const LEFT: f64 = 84.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;
/// Colour classes in the stylesheet (`series-0` … `series-7`), reused in turn beyond that.
pub const PALETTE: usize = 8;

/// A stacked bar chart.
pub struct BarChart<'a> {
    /// An id unique in the page (for the title's `aria-labelledby`).
    pub id: &'a str,
    /// What it shows, e.g. "Requests per day by model".
    pub title: &'a str,
    /// The stacked series' names, in stacking order (bottom first).
    pub series: &'a [String],
    /// One label per bar, e.g. "12-01".
    pub labels: &'a [String],
    /// `values[bar][series]`.
    pub values: &'a [Vec<u64>],
    /// How a value reads (axis labels and bar titles): a count, or cents from micro-cents.
    pub format: &'a dyn Fn(u64) -> String,
}

/// Text for SVG: `&`, `<`, `>` and quotes escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// The smallest of 1, 2 and 5 times a power of ten that is at least `max` (at least 1): the value axis' top, so
/// its labels are round and the tallest bar nearly fills the chart.
pub fn nice_ceiling(max: u64) -> u64 {
    let mut magnitude: u64 = 1;
    loop {
        for step in [1, 2, 5] {
            let candidate = magnitude.saturating_mul(step);
            if candidate >= max || candidate == u64::MAX {
                return candidate.max(1);
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

/// `value` of `top` as a length out of `span` units.
fn scale(value: u64, top: u64, span: f64) -> f64 {
    if top == 0 {
        return 0.0;
    }
    value as f64 / top as f64 * span
}

/// The chart's SVG markup.
pub fn bar_chart(chart: &BarChart<'_>) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    let tallest = chart
        .values
        .iter()
        .map(|bar| bar.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let top = nice_ceiling(tallest);
    let mut svg = String::with_capacity(4_096);
    let id = escape(chart.id);
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{id}-title"><title id="{id}-title">{}</title>"#,
        escape(chart.title)
    );
    // Grid lines at 0, the top and (when it is a round number too) half of it, labelled; an empty chart has only 0.
    let grid: &[u64] = match (tallest, top % 2) {
        (0, _) => &[0],
        (_, 0) => &[0, top / 2, top],
        _ => &[0, top],
    };
    for &value in grid {
        let y = base - scale(value, top, plot_h);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&(chart.format)(value))
        );
    }
    let bars = chart.values.len().max(1);
    let slot = plot_w / bars as f64;
    let bar_w = (slot * 0.7).max(1.0);
    // At most about ten day labels, whatever the number of bars.
    let label_every = bars.div_ceil(10);
    for (i, bar) in chart.values.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let label = chart.labels.get(i).map_or("", String::as_str);
        let mut stacked = 0_u64;
        for (s, &value) in bar.iter().enumerate() {
            if value == 0 {
                continue;
            }
            let y0 = base - scale(stacked, top, plot_h);
            stacked = stacked.saturating_add(value);
            let y1 = base - scale(stacked, top, plot_h);
            let name = chart.series.get(s).map_or("", String::as_str);
            let _ = write!(
                svg,
                r#"<rect class="series-{}" x="{x:.1}" y="{y1:.1}" width="{bar_w:.1}" height="{:.1}"><title>{} · {}: {}</title></rect>"#,
                s % PALETTE,
                (y0 - y1).max(0.5),
                escape(label),
                escape(name),
                escape(&(chart.format)(value))
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + bar_w / 2.0,
                base + 16.0,
                escape(label)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="{LEFT}" y1="{base:.1}" x2="{:.1}" y2="{base:.1}"/></svg>"#,
        WIDTH - RIGHT
    );
    svg
}

/// A row's small bar chart of daily counts (oldest first), with the counts in its accessible name.
pub fn sparkline(values: &[u64], what: &str) -> String {
    const BAR: f64 = 6.0;
    const GAP: f64 = 2.0;
    const H: f64 = 14.0;
    let width = (BAR + GAP) * values.len() as f64;
    let top = values.iter().copied().max().unwrap_or(0);
    let counts: Vec<String> = values.iter().map(u64::to_string).collect();
    let mut svg = format!(
        r#"<svg class="spark" viewBox="0 0 {width} {H}" role="img" aria-label="{}: {}">"#,
        escape(what),
        counts.join(", ")
    );
    for (i, &value) in values.iter().enumerate() {
        let x = (BAR + GAP) * i as f64;
        // A day with traffic shows at least a sliver; a day without shows a grey baseline.
        let (class, h) = if value == 0 {
            (r#" class="empty""#, 1.0)
        } else {
            ("", scale(value, top, H).max(2.0))
        };
        let _ = write!(
            svg,
            r#"<rect{class} x="{x}" y="{:.1}" width="{BAR}" height="{h:.1}"/>"#,
            H - h
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_top_is_a_round_number_at_or_above_the_tallest_bar() {
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(5), 5);
        assert_eq!(nice_ceiling(6), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(199), 200);
        assert_eq!(nice_ceiling(201), 500);
        assert_eq!(nice_ceiling(7_000_600), 10_000_000);
        assert!(nice_ceiling(u64::MAX) >= u64::MAX / 2);
    }

    fn count(v: u64) -> String {
        v.to_string()
    }

    #[test]
    fn bars_stack_and_scale_to_the_plot() {
        let series = vec!["fast".to_owned(), "<slow>".to_owned()];
        let labels = vec!["12-01".to_owned(), "12-02".to_owned()];
        let values = vec![vec![5, 5], vec![0, 0]];
        let svg = bar_chart(&BarChart {
            id: "requests",
            title: "Requests per day by model",
            series: &series,
            labels: &labels,
            values: &values,
            format: &count,
        });
        assert!(svg.starts_with("<svg class=\"chart\""), "{svg}");
        assert!(svg.contains(r#"aria-labelledby="requests-title""#));
        assert!(svg.contains("<title id=\"requests-title\">Requests per day by model</title>"));
        // Total 10 of a top of 10: the stack fills the plot (200 units tall, from y=12 to y=212), half each.
        assert!(svg.contains(r#"class="series-0" x="#), "{svg}");
        assert!(svg.contains(r#"y="112.0" width="#), "{svg}");
        assert!(svg.contains(r#"y="12.0" width="#), "{svg}");
        assert!(
            svg.contains(r#"height="100.0"><title>12-01 · fast: 5</title>"#),
            "{svg}"
        );
        // Names are escaped; a day without usage draws no bar.
        assert!(svg.contains("12-01 · &lt;slow&gt;: 5"), "{svg}");
        assert!(!svg.contains("12-02 ·"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2);
        // Axis labels at 0, 5 and 10.
        for label in [">0</text>", ">5</text>", ">10</text>", ">12-02</text>"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn an_odd_top_gets_no_half_line() {
        let values = vec![vec![5]];
        let svg = bar_chart(&BarChart {
            id: "c",
            title: "Five",
            series: &["m".to_owned()],
            labels: &["12-01".to_owned()],
            values: &values,
            format: &count,
        });
        assert_eq!(svg.matches(r#"class="grid""#).count(), 2, "{svg}");
        assert!(!svg.contains(">2</text>"), "{svg}");
    }

    #[test]
    fn an_empty_chart_still_draws_its_axis() {
        let svg = bar_chart(&BarChart {
            id: "c",
            title: "Nothing",
            series: &[],
            labels: &[],
            values: &[],
            format: &count,
        });
        assert!(!svg.contains("<rect"));
        assert!(svg.contains(r#"class="axis""#));
        assert_eq!(
            svg.matches(r#"class="grid""#).count(),
            1,
            "only the zero line"
        );
    }

    #[test]
    fn sparklines_scale_to_the_busiest_day_and_name_every_count() {
        let svg = sparkline(&[0, 5, 10], "Requests per day");
        assert!(
            svg.contains(r#"aria-label="Requests per day: 0, 5, 10""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<rect class="empty" x="0" y="13.0" width="6" height="1.0"/>"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<rect x="8" y="7.0" width="6" height="7.0"/>"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"<rect x="16" y="0.0" width="6" height="14.0"/>"#),
            "{svg}"
        );
        let quiet = sparkline(&[0; 7], "x");
        assert_eq!(quiet.matches("class=\"empty\"").count(), 7);
    }
}
