//! A small, pure SVG chart writer for the dashboard: time-series charts (lines, steps, points and bands over a
//! time window) and grouped horizontal bar charts. No IO and no clock: the caller passes the window and the data,
//! and gets back one `<svg>` element as text, well-formed XML, so it can be inlined in an HTML page that needs no
//! script.
//!
//! Readability rules it applies: both axes are labelled (times in UTC on the x axis), the value range is chosen
//! from the data with "nice" tick steps (1, 2 or 5 times a power of ten), the legend sits outside the plot and
//! lists every series (a series with nothing to draw in the window says so, rather than vanishing), and colours
//! come from the Okabe-Ito palette, which stays distinguishable under the common colour-vision deficiencies;
//! lines also differ by dash pattern, so colour is never the only cue.

use std::fmt::Write;

use crate::domain::model::UnixMillis;

/// Okabe-Ito colours (Okabe and Ito, 2008), by name.
pub mod colour {
    /// Orange.
    pub const ORANGE: &str = "#E69F00";
    /// Sky blue.
    pub const SKY_BLUE: &str = "#56B4E9";
    /// Bluish green.
    pub const GREEN: &str = "#009E73";
    /// Yellow (too light for thin lines on white: used for bands only).
    pub const YELLOW: &str = "#F0E442";
    /// Blue.
    pub const BLUE: &str = "#0072B2";
    /// Vermillion.
    pub const VERMILLION: &str = "#D55E00";
    /// Reddish purple.
    pub const PURPLE: &str = "#CC79A7";
    /// Black.
    pub const BLACK: &str = "#000000";
}

/// Escapes text for HTML and XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0; they carry nothing a reader needs.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// How a series is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// A line through the points, broken where the data has a gap.
    Line(Vec<(UnixMillis, f64)>),
    /// A value that holds until the next point (and the last one until the end of the window).
    Step(Vec<(UnixMillis, f64)>),
    /// Separate markers.
    Points(Vec<(UnixMillis, f64)>),
    /// A shaded range between a lower and an upper value, broken where the data has a gap.
    Band(Vec<(UnixMillis, f64, f64)>),
}

/// One series of a time chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Colour (one of [`colour`]).
    pub colour: &'static str,
    /// SVG `stroke-dasharray`, for lines.
    pub dash: Option<&'static str>,
    /// The data.
    pub data: Data,
}

impl Series {
    /// A series named `name` drawn in `colour`.
    pub fn new(name: impl Into<String>, colour: &'static str, data: Data) -> Self {
        Series {
            name: name.into(),
            colour,
            dash: None,
            data,
        }
    }

    /// The same series with a dash pattern.
    pub fn dashed(mut self, dash: &'static str) -> Self {
        self.dash = Some(dash);
        self
    }

    /// Values in `[from, to]`, for scaling (steps also count the point in force at `from`).
    fn values_in(&self, from: UnixMillis, to: UnixMillis) -> Vec<f64> {
        let within = |t: UnixMillis| t >= from && t <= to;
        let finite = |v: &f64| v.is_finite();
        match &self.data {
            Data::Line(p) | Data::Points(p) => p
                .iter()
                .filter(|(t, _)| within(*t))
                .map(|(_, v)| *v)
                .filter(finite)
                .collect(),
            Data::Step(p) => {
                let before = p.iter().rev().find(|(t, _)| *t < from).map(|(_, v)| *v);
                before
                    .into_iter()
                    .chain(p.iter().filter(|(t, _)| within(*t)).map(|(_, v)| *v))
                    .filter(finite)
                    .collect()
            }
            Data::Band(p) => p
                .iter()
                .filter(|(t, _, _)| within(*t))
                .flat_map(|(_, lo, hi)| [*lo, *hi])
                .filter(finite)
                .collect(),
        }
    }
}

/// A chart of values over a time window.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeChart {
    /// Title above the plot.
    pub title: String,
    /// Y axis label, with the unit.
    pub y_label: String,
    /// Start of the window.
    pub from: UnixMillis,
    /// End of the window.
    pub to: UnixMillis,
    /// The series, drawn in order (bands first is the caller's choice).
    pub series: Vec<Series>,
    /// Whether the value axis starts at zero (true for utilizations and counts).
    pub from_zero: bool,
}

const WIDTH: f64 = 760.0;
const PLOT_HEIGHT: f64 = 200.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 30.0;
const X_AXIS: f64 = 42.0;
const LEGEND_ROW: f64 = 18.0;
const FAMILY: &str = "font-family=\"sans-serif\"";
const FONT: &str = "font-family=\"sans-serif\" font-size=\"11\"";

/// A "nice" step (1, 2 or 5 times a power of ten) near `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    let fraction = raw / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// The value axis for `values`: (low, high, step), low and high multiples of step, about five ticks.
pub fn value_axis(values: &[f64], from_zero: bool) -> (f64, f64, f64) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (mut lo, mut hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        // Nothing to show: an empty 0-1 axis.
        return (0.0, 1.0, 0.2);
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + lo.abs().max(1.0);
    }
    // A little headroom, so the largest value is not drawn on the plot's border.
    hi += (hi - lo) * 0.05;
    let step = nice_step((hi - lo) / 5.0);
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    (lo, hi, step)
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const TIME_STEPS: [i64; 14] = [
    MINUTE,
    5 * MINUTE,
    10 * MINUTE,
    15 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    7 * DAY,
    14 * DAY,
];

/// Time ticks in `[from, to]`: multiples of a step from [`TIME_STEPS`] (in UTC), at most eight.
pub fn time_ticks(from: UnixMillis, to: UnixMillis) -> (i64, Vec<UnixMillis>) {
    let span = (to - from).max(1);
    let step = TIME_STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 8)
        .unwrap_or_else(|| (span / 8).max(1));
    let first = from + (step - from.rem_euclid(step)) % step;
    let ticks = (0..)
        .map(|i| first + i * step)
        .take_while(|t| *t <= to)
        .collect();
    (step, ticks)
}

/// A tick label: the time of day for steps under a day (with the date at midnight), the date otherwise.
pub fn time_label(at: UnixMillis, step: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(at) else {
        return String::new();
    };
    if step >= DAY || at.rem_euclid(DAY) == 0 {
        t.strftime("%b %d").to_string()
    } else {
        t.strftime("%H:%M").to_string()
    }
}

/// A value label: no more decimals than the step needs.
pub fn value_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// Splits time-ordered points where consecutive times are more than three typical spacings apart (a pause in
/// collection), so no line is drawn across missing data.
fn segments<T: Copy>(points: &[T], time: impl Fn(&T) -> UnixMillis) -> Vec<Vec<T>> {
    let mut gaps: Vec<i64> = points
        .windows(2)
        .map(|w| time(&w[1]) - time(&w[0]))
        .collect();
    gaps.sort_unstable();
    let typical = gaps.get(gaps.len() / 2).copied().unwrap_or(0).max(1);
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut last: Option<UnixMillis> = None;
    for p in points {
        let t = time(p);
        match (last, out.last_mut()) {
            (Some(prev), Some(current)) if t - prev <= 3 * typical => current.push(*p),
            _ => out.push(vec![*p]),
        }
        last = Some(t);
    }
    out
}

/// At most two points (the lowest and the highest, in time order) per `buckets`-th of the window, so a long
/// series draws in a bounded number of points without hiding its peaks.
pub fn downsample(
    points: &[(UnixMillis, f64)],
    from: UnixMillis,
    to: UnixMillis,
    buckets: usize,
) -> Vec<(UnixMillis, f64)> {
    if points.len() <= 2 * buckets || buckets == 0 {
        return points.to_vec();
    }
    let width = ((to - from).max(1) as f64 / buckets as f64).max(1.0);
    let mut out = Vec::with_capacity(2 * buckets);
    let mut bucket: Vec<(UnixMillis, f64)> = Vec::new();
    let mut current = None;
    let flush = |bucket: &mut Vec<(UnixMillis, f64)>, out: &mut Vec<(UnixMillis, f64)>| {
        let finite = bucket.iter().filter(|p| p.1.is_finite());
        let lo = finite.clone().min_by(|a, b| a.1.total_cmp(&b.1));
        let hi = finite.max_by(|a, b| a.1.total_cmp(&b.1));
        match (lo, hi) {
            (Some(lo), Some(hi)) if lo.0 == hi.0 => out.push(*lo),
            (Some(lo), Some(hi)) if lo.0 < hi.0 => out.extend([*lo, *hi]),
            (Some(lo), Some(hi)) => out.extend([*hi, *lo]),
            _ => {}
        }
        bucket.clear();
    };
    for p in points {
        let index = ((p.0 - from) as f64 / width).floor() as i64;
        if current.is_some_and(|c| c != index) {
            flush(&mut bucket, &mut out);
        }
        current = Some(index);
        bucket.push(*p);
    }
    flush(&mut bucket, &mut out);
    out
}

/// Legend rows: each item's (x offset, row), wrapping at the chart width.
fn legend_layout(names: &[String]) -> (Vec<(f64, usize)>, usize) {
    let mut x = LEFT;
    let mut row = 0;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        // Swatch, gap, text (about 6.5 px per character at 11 px), spacing.
        let width = 28.0 + 6.5 * name.chars().count() as f64 + 18.0;
        if x + width > WIDTH - RIGHT && x > LEFT {
            row += 1;
            x = LEFT;
        }
        out.push((x, row));
        x += width;
    }
    (out, if names.is_empty() { 0 } else { row + 1 })
}

impl TimeChart {
    /// The chart as one `<svg>` element.
    pub fn render(&self) -> String {
        let (from, to) = (self.from, self.to.max(self.from + 1));
        let values: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.values_in(from, to))
            .collect();
        let (lo, hi, step) = value_axis(&values, self.from_zero);
        let plot_w = WIDTH - LEFT - RIGHT;
        let x = |t: UnixMillis| LEFT + (t - from) as f64 / (to - from) as f64 * plot_w;
        let y = |v: f64| TOP + (hi - v.clamp(lo, hi)) / (hi - lo) * PLOT_HEIGHT;
        let names: Vec<String> = self
            .series
            .iter()
            .map(|s| {
                if s.values_in(from, to).is_empty() {
                    format!("{} (no data in this window)", s.name)
                } else {
                    s.name.clone()
                }
            })
            .collect();
        let (legend, rows) = legend_layout(&names);
        let legend_top = TOP + PLOT_HEIGHT + X_AXIS;
        let height = legend_top + rows as f64 * LEGEND_ROW + 6.0;

        let mut svg = String::with_capacity(16 * 1024);
        let _ = write!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height}\" width=\"{WIDTH}\" \
             height=\"{height}\" role=\"img\" aria-label=\"{title}\" class=\"chart\"><title>{title}</title>",
            title = escape(&self.title)
        );
        let _ = write!(
            svg,
            "<text x=\"{LEFT}\" y=\"18\" {FAMILY} font-size=\"13\" font-weight=\"bold\">{}</text>",
            escape(&self.title)
        );
        // Value grid and labels.
        let mut v = lo;
        while v <= hi + step / 2.0 {
            let yy = y(v);
            let _ = write!(
                svg,
                "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#dddddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"end\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                value_label(v, step)
            );
            v += step;
        }
        let _ = write!(
            svg,
            "<text transform=\"translate(14 {:.1}) rotate(-90)\" {FONT} text-anchor=\"middle\">{}</text>",
            TOP + PLOT_HEIGHT / 2.0,
            escape(&self.y_label)
        );
        // Time grid and labels.
        let (tick_step, ticks) = time_ticks(from, to);
        for t in ticks {
            let xx = x(t);
            let _ = write!(
                svg,
                "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>\
                 <text x=\"{xx:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"middle\">{}</text>",
                TOP + PLOT_HEIGHT,
                TOP + PLOT_HEIGHT + 16.0,
                escape(&time_label(t, tick_step))
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"middle\">time (UTC), {} to {}</text>",
            LEFT + plot_w / 2.0,
            TOP + PLOT_HEIGHT + 34.0,
            crate::clock::rfc3339(from),
            crate::clock::rfc3339(to)
        );
        let _ = write!(
            svg,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w:.1}\" height=\"{PLOT_HEIGHT}\" fill=\"none\" \
             stroke=\"#888888\"/>"
        );
        // Series.
        for s in &self.series {
            let dash = s
                .dash
                .map(|d| format!(" stroke-dasharray=\"{d}\""))
                .unwrap_or_default();
            match &s.data {
                Data::Line(points) => {
                    let inside: Vec<_> = points
                        .iter()
                        .copied()
                        .filter(|(t, v)| *t >= from && *t <= to && v.is_finite())
                        .collect();
                    let inside = downsample(&inside, from, to, plot_w as usize / 2);
                    for seg in segments(&inside, |p| p.0) {
                        if seg.len() == 1 {
                            let _ = write!(
                                svg,
                                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"1.5\" fill=\"{}\"/>",
                                x(seg[0].0),
                                y(seg[0].1),
                                s.colour
                            );
                            continue;
                        }
                        let mut d = String::new();
                        for (i, (t, v)) in seg.iter().enumerate() {
                            let _ = write!(
                                d,
                                "{}{:.1} {:.1}",
                                if i == 0 { "M" } else { " L" },
                                x(*t),
                                y(*v)
                            );
                        }
                        let _ = write!(
                            svg,
                            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{dash}/>",
                            s.colour
                        );
                    }
                }
                Data::Step(points) => {
                    let mut held: Option<f64> = points
                        .iter()
                        .rev()
                        .find(|(t, _)| *t < from)
                        .map(|(_, v)| *v);
                    let mut d = String::new();
                    let mut at = from;
                    let mut moves = points
                        .iter()
                        .filter(|(t, v)| *t >= from && *t <= to && v.is_finite())
                        .peekable();
                    if held.is_none()
                        && let Some((t, v)) = moves.next()
                    {
                        held = Some(*v);
                        at = *t;
                    }
                    if let Some(v0) = held {
                        let _ = write!(d, "M{:.1} {:.1}", x(at), y(v0));
                        for (t, v) in moves {
                            let _ = write!(d, " H{:.1} V{:.1}", x(*t), y(*v));
                        }
                        let _ = write!(d, " H{:.1}", x(to));
                        let _ = write!(
                            svg,
                            "<path d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{dash}/>",
                            s.colour
                        );
                    }
                }
                Data::Points(points) => {
                    for (t, v) in points
                        .iter()
                        .filter(|(t, v)| *t >= from && *t <= to && v.is_finite())
                    {
                        let _ = write!(
                            svg,
                            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\" stroke=\"#ffffff\" \
                             stroke-width=\"0.8\"><title>{} {}: {:.1}</title></circle>",
                            x(*t),
                            y(*v),
                            s.colour,
                            escape(&s.name),
                            crate::clock::rfc3339(*t),
                            v
                        );
                    }
                }
                Data::Band(points) => {
                    let inside: Vec<_> = points
                        .iter()
                        .copied()
                        .filter(|(t, lo, hi)| {
                            *t >= from && *t <= to && lo.is_finite() && hi.is_finite()
                        })
                        .collect();
                    for seg in segments(&inside, |p| p.0) {
                        let mut d = String::new();
                        for (i, (t, _, hi)) in seg.iter().enumerate() {
                            let _ = write!(
                                d,
                                "{}{:.1} {:.1}",
                                if i == 0 { "M" } else { " L" },
                                x(*t),
                                y(*hi)
                            );
                        }
                        for (t, lo, _) in seg.iter().rev() {
                            let _ = write!(d, " L{:.1} {:.1}", x(*t), y(*lo));
                        }
                        let _ = write!(
                            svg,
                            "<path d=\"{d} Z\" fill=\"{}\" fill-opacity=\"0.35\" stroke=\"{}\" \
                             stroke-width=\"0.5\"/>",
                            s.colour, s.colour
                        );
                    }
                }
            }
        }
        if values.is_empty() {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" {FAMILY} font-size=\"13\" text-anchor=\"middle\" \
                 fill=\"#555555\">no data in this window</text>",
                LEFT + plot_w / 2.0,
                TOP + PLOT_HEIGHT / 2.0
            );
        }
        // Legend, below the axis so it never covers data.
        for ((s, name), (lx, row)) in self.series.iter().zip(&names).zip(&legend) {
            let ly = legend_top + *row as f64 * LEGEND_ROW + 8.0;
            let swatch = match &s.data {
                Data::Band(_) => format!(
                    "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"22\" height=\"10\" fill=\"{}\" fill-opacity=\"0.35\" \
                     stroke=\"{}\" stroke-width=\"0.5\"/>",
                    ly - 5.0,
                    s.colour,
                    s.colour
                ),
                Data::Points(_) => format!(
                    "<circle cx=\"{:.1}\" cy=\"{ly:.1}\" r=\"3\" fill=\"{}\"/>",
                    lx + 11.0,
                    s.colour
                ),
                Data::Line(_) | Data::Step(_) => format!(
                    "<line x1=\"{lx:.1}\" x2=\"{:.1}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\" stroke=\"{}\" \
                     stroke-width=\"2\"{}/>",
                    lx + 22.0,
                    s.colour,
                    s.dash
                        .map(|d| format!(" stroke-dasharray=\"{d}\""))
                        .unwrap_or_default()
                ),
            };
            let _ = write!(
                svg,
                "{swatch}<text x=\"{:.1}\" y=\"{:.1}\" {FONT}>{}</text>",
                lx + 28.0,
                ly + 4.0,
                escape(name)
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

/// A grouped horizontal bar chart: one group of bars per row label, one bar per series.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Title above the plot.
    pub title: String,
    /// Value axis label, with the unit.
    pub x_label: String,
    /// Series names and colours, in bar order.
    pub series: Vec<(String, &'static str)>,
    /// Row labels with one value per series (`None`: unknown, drawn as a note rather than a zero bar).
    pub rows: Vec<(String, Vec<Option<f64>>)>,
}

impl BarChart {
    /// The chart as one `<svg>` element.
    pub fn render(&self) -> String {
        // Room for the longest row label (about 6.5 px per character at 11 px), within reason.
        let longest = self
            .rows
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let label_w = (6.5 * longest as f64 + 16.0).clamp(120.0, 360.0);
        let bar_h = 9.0;
        let group_h = bar_h * self.series.len().max(1) as f64 + 8.0;
        let plot_top = TOP;
        let plot_h = (group_h * self.rows.len().max(1) as f64).max(group_h);
        let plot_left = label_w;
        let plot_w = WIDTH - plot_left - RIGHT;
        let values: Vec<f64> = self
            .rows
            .iter()
            .flat_map(|(_, v)| v.iter().flatten().copied())
            .collect();
        let (lo, hi, step) = value_axis(&values, true);
        let x = |v: f64| plot_left + (v.clamp(lo, hi) - lo) / (hi - lo) * plot_w;
        let names: Vec<String> = self.series.iter().map(|(n, _)| n.clone()).collect();
        let (legend, rows) = legend_layout(&names);
        let legend_top = plot_top + plot_h + X_AXIS;
        let height = legend_top + rows as f64 * LEGEND_ROW + 6.0;
        let mut svg = String::with_capacity(8 * 1024);
        let _ = write!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height:.1}\" width=\"{WIDTH}\" \
             height=\"{height:.1}\" role=\"img\" aria-label=\"{title}\" class=\"chart\"><title>{title}</title>\
             <text x=\"{LEFT}\" y=\"18\" {FAMILY} font-size=\"13\" font-weight=\"bold\">{title}</text>",
            title = escape(&self.title)
        );
        let mut v = lo;
        while v <= hi + step / 2.0 {
            let xx = x(v);
            let _ = write!(
                svg,
                "<line x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{plot_top}\" y2=\"{:.1}\" stroke=\"#dddddd\"/>\
                 <text x=\"{xx:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"middle\">{}</text>",
                plot_top + plot_h,
                plot_top + plot_h + 16.0,
                value_label(v, step)
            );
            v += step;
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"middle\">{}</text>",
            plot_left + plot_w / 2.0,
            plot_top + plot_h + 34.0,
            escape(&self.x_label)
        );
        for (i, (label, row)) in self.rows.iter().enumerate() {
            let gy = plot_top + i as f64 * group_h + 4.0;
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"end\">{}</text>",
                plot_left - 6.0,
                gy + group_h / 2.0,
                escape(label)
            );
            for (j, ((name, colour), value)) in self.series.iter().zip(row).enumerate() {
                let by = gy + j as f64 * bar_h;
                match value.filter(|v| v.is_finite()) {
                    Some(v) => {
                        let _ = write!(
                            svg,
                            "<rect x=\"{:.1}\" y=\"{by:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\">\
                             <title>{} {}: {v:.1}</title></rect>",
                            x(lo.max(0.0)),
                            (x(v) - x(lo.max(0.0))).max(0.5),
                            bar_h - 1.0,
                            escape(label),
                            escape(name)
                        );
                    }
                    None => {
                        let _ = write!(
                            svg,
                            "<text x=\"{:.1}\" y=\"{:.1}\" {FAMILY} font-size=\"9\" fill=\"#555555\">{} unknown</text>",
                            plot_left + 4.0,
                            by + bar_h - 1.5,
                            escape(name)
                        );
                    }
                }
            }
        }
        if self.rows.is_empty() {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" {FONT} text-anchor=\"middle\" fill=\"#555555\">nothing to show</text>",
                plot_left + plot_w / 2.0,
                plot_top + plot_h / 2.0 + 4.0
            );
        }
        for (((_, colour), name), (lx, row)) in self.series.iter().zip(&names).zip(&legend) {
            let ly = legend_top + *row as f64 * LEGEND_ROW + 8.0;
            let _ = write!(
                svg,
                "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"22\" height=\"10\" fill=\"{colour}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" {FONT}>{}</text>",
                ly - 5.0,
                lx + 28.0,
                ly + 4.0,
                escape(name)
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{1}b"), "a\u{FFFD}b");
    }

    #[test]
    fn value_axes_are_nice_and_cover_the_data() {
        assert_eq!(value_axis(&[3.0, 87.2], true), (0.0, 100.0, 20.0));
        assert_eq!(value_axis(&[41.0, 43.2], false), (41.0, 43.5, 0.5));
        // No data, or flat data, still gives a usable axis.
        assert_eq!(value_axis(&[], true), (0.0, 1.0, 0.2));
        let (lo, hi, _) = value_axis(&[5.0, 5.0], true);
        assert!(lo <= 5.0 && hi > 5.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(3.2), 5.0);
        assert_eq!(value_label(0.25, 0.05), "0.25");
        assert_eq!(value_label(40.0, 20.0), "40");
    }

    #[test]
    fn time_ticks_are_round_utc_times_and_few() {
        let day = 1_764_892_800_000; // 2025-12-05T00:00:00Z
        let (step, ticks) = time_ticks(day + 5 * MINUTE, day + 24 * HOUR + 5 * MINUTE);
        assert_eq!(step, 3 * HOUR);
        assert_eq!(ticks.len(), 8);
        assert_eq!(ticks[0], day + 3 * HOUR);
        assert_eq!(time_label(ticks[0], step), "03:00");
        assert_eq!(time_label(day + 24 * HOUR, step), "Dec 06");
        let (step, ticks) = time_ticks(day, day + 7 * DAY);
        assert_eq!(step, DAY);
        assert_eq!(ticks.len(), 8);
        assert_eq!(time_label(ticks[1], step), "Dec 06");
    }

    #[test]
    fn lines_break_at_gaps_and_long_series_are_bounded_without_losing_peaks() {
        let points: Vec<(i64, f64)> = (0..10)
            .map(|i| (i * 1000, 1.0))
            .chain((20..30).map(|i| (i * 1000, 2.0)))
            .collect();
        let segs = segments(&points, |p| p.0);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].len(), 10);
        let long: Vec<(i64, f64)> = (0..10_000)
            .map(|i| (i, if i == 5_000 { 99.0 } else { 1.0 }))
            .collect();
        let small = downsample(&long, 0, 10_000, 100);
        assert!(small.len() <= 200, "{}", small.len());
        assert!(small.iter().any(|p| p.1 == 99.0));
        assert!(small.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn a_chart_names_every_series_and_says_when_one_has_no_data() {
        let chart = TimeChart {
            title: "CPU <utilization>".into(),
            y_label: "% of requests".into(),
            from: 0,
            to: HOUR,
            series: vec![
                Series::new(
                    "raw",
                    colour::BLUE,
                    Data::Line(vec![(0, 10.0), (MINUTE, 60.0)]),
                ),
                Series::new("forecast", colour::ORANGE, Data::Band(vec![])),
                Series::new("target", colour::GREEN, Data::Step(vec![(-1, 50.0)])).dashed("6 3"),
            ],
            from_zero: true,
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("CPU &lt;utilization&gt;"));
        assert!(svg.contains(">raw<"));
        assert!(svg.contains("forecast (no data in this window)"));
        // The step in force before the window counts and is drawn.
        assert!(svg.contains(">target<"));
        assert!(svg.contains("stroke-dasharray=\"6 3\""));
        assert!(svg.contains(">60<") && svg.contains(">0<"));
        let empty = TimeChart {
            series: vec![],
            ..chart
        };
        assert!(empty.render().contains("no data in this window"));
    }

    /// Every chart is well-formed XML in the SVG namespace, whatever its labels hold.
    fn parses(svg: &str) {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        assert_eq!(
            doc.root_element().tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
    }

    #[test]
    fn charts_are_well_formed_xml() {
        let t0 = 1_764_892_800_000;
        let chart = TimeChart {
            title: "a <b> & 'c'".into(),
            y_label: "% \"of\" requests".into(),
            from: t0,
            to: t0 + DAY,
            series: vec![
                Series::new(
                    "band",
                    colour::SKY_BLUE,
                    Data::Band(vec![(t0, 1.0, 2.0), (t0 + HOUR, 2.0, 4.0)]),
                ),
                Series::new(
                    "line",
                    colour::BLACK,
                    Data::Line(vec![(t0, 1.0), (t0 + HOUR, f64::NAN), (t0 + 2 * HOUR, 3.0)]),
                ),
                Series::new("step", colour::GREEN, Data::Step(vec![(t0 + HOUR, 50.0)]))
                    .dashed("4 2"),
                Series::new(
                    "points",
                    colour::VERMILLION,
                    Data::Points(vec![(t0 + HOUR, 5.0)]),
                ),
            ],
            from_zero: true,
        };
        parses(&chart.render());
        parses(
            &TimeChart {
                series: vec![],
                ..chart
            }
            .render(),
        );
        parses(
            &BarChart {
                title: "<pools>".into(),
                x_label: "%".into(),
                series: vec![("a&b".into(), colour::BLUE)],
                rows: vec![("x\"y".into(), vec![Some(3.0)]), ("z".into(), vec![None])],
            }
            .render(),
        );
        parses(
            &BarChart {
                title: "none".into(),
                x_label: "%".into(),
                series: vec![],
                rows: vec![],
            }
            .render(),
        );
    }

    #[test]
    fn bars_show_unknown_values_as_unknown_not_zero() {
        let chart = BarChart {
            title: "pools".into(),
            x_label: "%".into(),
            series: vec![
                ("measured".into(), colour::BLUE),
                ("requested".into(), colour::ORANGE),
            ],
            rows: vec![("all".into(), vec![None, Some(40.0)])],
        };
        let svg = chart.render();
        assert!(svg.contains("measured unknown"));
        assert!(svg.contains("all requested: 40.0"));
    }
}
