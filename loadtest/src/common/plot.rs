//! The PNG of a run: panels stacked over one time axis, latency percentiles
//! per second on a log scale in the first, rates or CPU below. Each scenario
//! says what its panels hold (`fanout::report`, `stampede::report`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::anyhow;
use hdrhistogram::Histogram;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::stats::Percentiles;

/// Fonts plotters can draw text with (pure Rust `ab_glyph`, so one must be
/// loaded from disk once).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

pub const GREY: RGBColor = RGBColor(120, 120, 120);
pub const ORANGE: RGBColor = RGBColor(230, 140, 0);
pub const GREEN: RGBColor = RGBColor(0, 150, 60);
pub use plotters::style::{BLUE, RED};

/// Points `(seconds, value)`.
pub type Series = Vec<(f64, f64)>;

/// One line of a panel; a line with a label is in the panel's legend.
pub struct Line<'a> {
    pub points: &'a [(f64, f64)],
    pub label: Option<String>,
    pub color: RGBColor,
}

impl<'a> Line<'a> {
    pub fn new(points: &'a [(f64, f64)], label: impl Into<String>, color: RGBColor) -> Self {
        Line {
            points,
            label: Some(label.into()),
            color,
        }
    }

    pub fn unlabelled(points: &'a [(f64, f64)], color: RGBColor) -> Self {
        Line {
            points,
            label: None,
            color,
        }
    }
}

/// The vertical axis of a panel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Axis {
    /// From, to: latencies in ms (labels as they are).
    Log(f64, f64),
    /// From 0 to this (labels without decimals).
    Linear(f64),
}

impl Axis {
    /// A log axis from half the smallest value (at most 1, at least 0.01) to
    /// `headroom` times the largest (at least 1).
    pub fn log_over(series: &[&Series], headroom: f64) -> Axis {
        let values = || series.iter().flat_map(|s| s.iter().map(|p| p.1));
        let max = values().fold(1.0f64, f64::max) * headroom;
        let min = values().fold(f64::MAX, f64::min).clamp(0.01, 1.0) / 2.0;
        Axis::Log(min, max)
    }

    /// A linear axis from 0 to 1.15 × the largest value (at least 1).
    pub fn linear_over(series: &[&Series]) -> Axis {
        let max = series
            .iter()
            .flat_map(|s| s.iter().map(|p| p.1))
            .fold(1.0f64, f64::max);
        Axis::Linear(max * 1.15)
    }
}

pub struct Panel<'a> {
    /// Pixels; the last panel takes what is left.
    pub height: u32,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub y: Axis,
    pub lines: Vec<Line<'a>>,
}

pub struct Figure<'a> {
    pub size: (u32, u32),
    /// Above the first panel.
    pub title: &'a str,
    pub title_size: u32,
    /// The time axis of every panel runs from 0 to this.
    pub x_max: f64,
    pub panels: Vec<Panel<'a>>,
}

/// p50, p90, p99 and max per point in time, of the histograms that are not empty.
pub fn percentile_series<'h>(hists: impl IntoIterator<Item = (f64, &'h Histogram<u64>)>) -> [Series; 4] {
    let mut out: [Series; 4] = Default::default();
    for (x, hist) in hists {
        if hist.is_empty() {
            continue;
        }
        let p = Percentiles::of(hist);
        for (series, value) in out.iter_mut().zip([p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms]) {
            series.push((x, value));
        }
    }
    out
}

/// The lines of [`percentile_series`], the worst first, each label prefixed (e.g. `host `).
pub fn percentile_lines<'a>(prefix: &str, [p50, p90, p99, max]: &'a [Series; 4]) -> Vec<Line<'a>> {
    vec![
        Line::new(max, format!("{prefix}max"), GREY),
        Line::new(p99, format!("{prefix}p99"), RED),
        Line::new(p90, format!("{prefix}p90"), ORANGE),
        Line::new(p50, format!("{prefix}p50"), BLUE),
    ]
}

/// The largest time of the series, rounded up (at least 1).
pub fn x_max(series: &[&Series]) -> f64 {
    series
        .iter()
        .flat_map(|s| s.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .ceil()
}

/// Draws the figure into a PNG file.
pub fn draw(path: &Path, figure: &Figure) -> anyhow::Result<()> {
    register_font()?;
    let root = BitMapBackend::new(path, figure.size).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut rest = root.clone();
    let last = figure.panels.len().saturating_sub(1);
    for (i, panel) in figure.panels.iter().enumerate() {
        let area = if i == last {
            rest.clone()
        } else {
            let (area, below) = rest.split_vertically(panel.height);
            rest = below;
            area
        };
        let mut builder = ChartBuilder::on(&area);
        if i == 0 {
            builder.caption(figure.title, ("sans-serif", figure.title_size));
        }
        builder.margin(12).x_label_area_size(36).y_label_area_size(64);
        match panel.y {
            Axis::Log(from, to) => {
                let mut chart = builder
                    .build_cartesian_2d(0.0..figure.x_max, (from..to).log_scale())
                    .map_err(plot_error)?;
                draw_panel(&mut chart, panel, &|v| format!("{v}"))?;
            }
            Axis::Linear(to) => {
                let mut chart = builder
                    .build_cartesian_2d(0.0..figure.x_max, 0.0..to)
                    .map_err(plot_error)?;
                draw_panel(&mut chart, panel, &|v| format!("{v:.0}"))?;
            }
        }
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_panel<'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    panel: &Panel,
    y_labels: &dyn Fn(&f64) -> String,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .y_label_formatter(y_labels)
        .draw()
        .map_err(plot_error)?;
    for line in panel.lines.iter().filter(|l| !l.points.is_empty()) {
        let color = line.color;
        let drawn = chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(plot_error)?;
        if let Some(label) = &line.label {
            drawn
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if panel.lines.iter().any(|l| l.label.is_some()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_error)?;
    }
    Ok(())
}

fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for path in FONTS {
                if let Ok(bytes) = std::fs::read(path) {
                    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                    if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                        return Ok(());
                    }
                }
            }
            Err(format!("no usable font among {FONTS:?}"))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}
