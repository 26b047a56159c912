//! Training curves as SVG (plotters' SVG backend: no fonts or system
//! libraries needed).

use std::path::Path;

use plotters::prelude::*;

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
}
