//! Training curves as SVG (plotters' SVG backend: no fonts or system
//! libraries needed).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One named curve: `(x, y)` points.
pub type Series<'a> = (&'a str, &'a [(f64, f64)]);

/// Writes the curves to an SVG file: one line per series, shared axes,
/// a legend. Non-finite points are left out; nothing to draw writes an
/// empty chart.
pub fn write_svg(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[Series<'_>],
) -> Result<(), String> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let pts = || series.iter().flat_map(|s| s.1.iter().filter(finite));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().filter(finite).copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// One named series of a bar chart: a value per category (`NaN` = no bar).
pub type Bars<'a> = (&'a str, &'a [f64]);

/// Writes a grouped bar chart to an SVG file: one group per category
/// along x, one bar per series in each group (colour and legend per
/// series), values on a shared y axis from 0 (or from the smallest value
/// when it is negative).
pub fn write_bars_svg(
    path: &Path,
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[Bars<'_>],
) -> Result<(), String> {
    let values = || {
        series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .filter(|v| v.is_finite())
    };
    let y0 = values().fold(0.0f64, f64::min);
    let mut y1 = values().fold(0.0f64, f64::max);
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let y1 = y1 + (y1 - y0) * 0.08;
    let n = categories.len().max(1);
    let k = series.len().max(1);
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let width = (160 + 90 * n as u32 * (k as u32).min(4)).clamp(640, 1600);
    let root = SVGBackend::new(path, (width, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..n as f64, y0..y1)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(&e))?;
    // Category names under their groups, in the x label area.
    let style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, label) in categories.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, y0));
        root.draw(&Text::new(label.clone(), (px, py + 8), style.clone()))
            .map_err(|e| err(&e))?;
    }
    let bar = 0.8 / k as f64;
    for (j, (name, vals)) in series.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let rects = vals
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, &v)| {
                let x = i as f64 + 0.1 + bar * j as f64;
                Rectangle::new([(x, 0.0f64.max(y0)), (x + bar * 0.92, v)], color.filled())
            });
        chart
            .draw_series(rects)
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_series_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("loss.svg");
        let a: Vec<(f64, f64)> = (0..50)
            .map(|i| (f64::from(i), 1.0 / f64::from(i + 1)))
            .collect();
        let b = [(0.0, 0.5), (49.0, f64::NAN), (25.0, 0.2)];
        write_svg(&path, "loss", "step", &[("train", &a), ("test", &b)]).expect("svg");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        assert!(svg.contains(">\ntrain\n<") && svg.contains(">\ntest\n<"));
        assert!(svg.contains("<polyline"));
        // Nothing to draw is still a valid chart.
        write_svg(&path, "empty", "step", &[]).expect("empty");
    }

    #[test]
    fn writes_a_bar_chart_with_a_bar_per_finite_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bars.svg");
        let cats = vec!["baseline".to_string(), "TransAct".to_string()];
        write_bars_svg(
            &path,
            "HIT@3",
            "HIT@3",
            &cats,
            &[("repin", &[1.5, 1.7]), ("hide", &[0.09, f64::NAN])],
        )
        .expect("svg");
        let svg = std::fs::read_to_string(&path).expect("read");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(">\nrepin\n<") && svg.contains(">\nhide\n<"));
        assert!(svg.contains("TransAct"));
        // Three bars plus two legend swatches (plus the background).
        assert!(svg.matches("<rect").count() >= 5, "{svg}");
        write_bars_svg(&path, "empty", "ms", &[], &[]).expect("empty");
    }
}
