//! The PNG of a run: latency percentiles per second of scheduled send time
//! (log scale), and deliveries per second below.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::server::SecondSample;
use crate::stats::{Percentiles, Recorder};

/// Fonts plotters can draw text with (pure Rust `ab_glyph`, so one must be
/// loaded from disk once).
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
/// Picks one value of a [`SecondSample`].
type Pick = fn(&SecondSample) -> f64;

pub fn latency_png(
    recorder: &Recorder,
    seconds: &[SecondSample],
    start_us: u64,
    title: &str,
    path: &Path,
) -> anyhow::Result<()> {
    register_font()?;
    let start_s = start_us as f64 / 1e6;
    let (mut p50, mut p90, mut p99, mut max, mut chat_p99) = (
        Series::new(),
        Series::new(),
        Series::new(),
        Series::new(),
        Series::new(),
    );
    for (second, (host, chat)) in &recorder.per_second {
        // Centre each point in its second.
        let x = *second as f64 + 0.5 - start_s;
        if !host.is_empty() {
            let p = Percentiles::of(host);
            p50.push((x, p.p50_ms));
            p90.push((x, p.p90_ms));
            p99.push((x, p.p99_ms));
            max.push((x, p.max_ms));
        }
        if !chat.is_empty() {
            chat_p99.push((x, Percentiles::of(chat).p99_ms));
        }
    }
    let arrivals: Series = recorder
        .arrivals
        .iter()
        .map(|(s, n)| (*s as f64 + 0.5 - start_s, *n as f64))
        .collect();
    let all = [&p50, &p90, &p99, &max, &chat_p99];
    if all.iter().all(|s| s.is_empty()) {
        bail!("nothing was delivered: no plot");
    }
    let x_max = all
        .iter()
        .chain([&&arrivals])
        .flat_map(|s| s.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .ceil();
    let y_max = all
        .iter()
        .flat_map(|s| s.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 6.0;
    let y_min = all
        .iter()
        .flat_map(|s| s.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .clamp(0.01, 1.0)
        / 2.0;

    let root = BitMapBackend::new(path, (1200, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (top, rest) = root.split_vertically(560);
    let (bottom, cpu_area) = rest.split_vertically(220);
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first scheduled event")
        .y_desc("latency from scheduled send (ms)")
        .y_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(plot_error)?;
    let lines: [(&Series, &str, RGBColor); 5] = [
        (&max, "host max", RGBColor(120, 120, 120)),
        (&p99, "host p99", RED),
        (&p90, "host p90", RGBColor(230, 140, 0)),
        (&p50, "host p50", BLUE),
        (&chat_p99, "chat p99", RGBColor(0, 150, 60)),
    ];
    for (series, label, color) in lines {
        if series.is_empty() {
            continue;
        }
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

    let d_max = arrivals.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.15;
    let mut lower = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..d_max)
        .map_err(plot_error)?;
    lower
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("deliveries/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_error)?;
    lower
        .draw_series(LineSeries::new(arrivals.iter().copied(), BLUE.stroke_width(2)))
        .map_err(plot_error)?;
    let mut cpu = ChartBuilder::on(&cpu_area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..110.0)
        .map_err(plot_error)?;
    cpu.configure_mesh()
        .x_desc("seconds")
        .y_desc("% of one CPU")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(plot_error)?;
    let lines: [(Pick, &str, RGBColor); 4] = [
        (|s| s.hub_cpu_pct, "hub CPU", RED),
        (|s| s.hub_wait_pct, "hub waiting for a CPU", RGBColor(230, 140, 0)),
        (|s| s.generator_cpu_pct, "generator CPU", BLUE),
        (|s| s.others_pct, "other processes", RGBColor(120, 120, 120)),
    ];
    for (value, label, color) in lines {
        cpu.draw_series(LineSeries::new(
            seconds.iter().map(|s| (s.t - 0.5, value(s))),
            color.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    cpu.configure_series_labels()
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
