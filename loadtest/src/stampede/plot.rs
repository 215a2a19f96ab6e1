//! The PNG of a stampede: latency percentiles per second (log scale) above,
//! committed orders, rejections and errors per second below.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail};
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::load::PhaseResult;
use crate::stats::Percentiles;

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

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

type Series = Vec<(f64, f64)>;

pub fn png(result: &PhaseResult, title: &str, path: &Path) -> anyhow::Result<()> {
    register_font()?;
    let (mut p50, mut p90, mut p99, mut max) = (Series::new(), Series::new(), Series::new(), Series::new());
    for (second, hist) in &result.latency_by_second {
        if hist.is_empty() {
            continue;
        }
        let x = *second as f64 + 0.5;
        let p = Percentiles::of(hist);
        p50.push((x, p.p50_ms));
        p90.push((x, p.p90_ms));
        p99.push((x, p.p99_ms));
        max.push((x, p.max_ms));
    }
    if p50.is_empty() {
        bail!("no answers: no plot");
    }
    let (mut committed, mut rejected, mut errors) = (Series::new(), Series::new(), Series::new());
    for (second, c) in &result.counts_by_second {
        let x = *second as f64 + 0.5;
        committed.push((x, c.committed as f64));
        rejected.push((x, c.rejected as f64));
        errors.push((x, c.errors as f64));
    }
    let x_max = p50
        .iter()
        .chain(&committed)
        .map(|p| p.0)
        .fold(1.0f64, f64::max)
        .ceil();
    let lat = [&p50, &p90, &p99, &max];
    let y_max = lat
        .iter()
        .flat_map(|s| s.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 4.0;
    let y_min = lat
        .iter()
        .flat_map(|s| s.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .clamp(0.01, 1.0)
        / 2.0;

    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (top, bottom) = root.split_vertically(480);
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the start")
        .y_desc("latency (ms)")
        .y_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(plot_error)?;
    let lines: [(&Series, &str, RGBColor); 4] = [
        (&max, "max", RGBColor(120, 120, 120)),
        (&p99, "p99", RED),
        (&p90, "p90", RGBColor(230, 140, 0)),
        (&p50, "p50", BLUE),
    ];
    for (series, label, color) in lines {
        chart
            .draw_series(LineSeries::new(series.iter().copied(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_error)?;

    let d_max = committed
        .iter()
        .chain(&rejected)
        .chain(&errors)
        .map(|p| p.1)
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut lower = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..d_max)
        .map_err(plot_error)?;
    lower
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("answers/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_error)?;
    let rates: [(&Series, &str, RGBColor); 3] = [
        (&committed, "committed (201)", RGBColor(0, 150, 60)),
        (&rejected, "rejected (4xx)", BLUE),
        (&errors, "errors", RED),
    ];
    for (series, label, color) in rates {
        lower
            .draw_series(LineSeries::new(series.iter().copied(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    lower
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}
