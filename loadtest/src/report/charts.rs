//! Charts with axes, ticks, grid lines and units, drawn by plotters' SVG
//! backend into strings that the HTML report inlines.

use plotters::prelude::*;

/// Chart size in pixels.
const W: u32 = 860;
const H: u32 = 320;

/// One line of a chart.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

pub const BLUE_: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE_: RGBColor = RGBColor(255, 127, 14);
pub const GREEN_: RGBColor = RGBColor(44, 160, 44);
pub const RED_: RGBColor = RGBColor(214, 39, 40);
pub const PURPLE_: RGBColor = RGBColor(148, 103, 189);
pub const GREY_: RGBColor = RGBColor(127, 127, 127);

/// Colors for runs of a comparison (side A blues, side B oranges).
pub fn palette(i: usize) -> RGBColor {
    [BLUE_, ORANGE_, GREEN_, RED_, PURPLE_, GREY_][i % 6]
}

fn bounds(lines: &[Line]) -> (f64, f64) {
    let xmax = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let ymax = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    (xmax.max(1e-9), ymax.max(1e-9) * 1.1)
}

fn svg_or_error(r: Result<String, String>, title: &str) -> String {
    match r {
        Ok(s) => s,
        Err(e) => format!("<p>chart {title:?} could not be drawn: {e}</p>"),
    }
}

/// A line chart on linear axes.
pub fn lines(title: &str, x_desc: &str, y_desc: &str, lines: &[Line]) -> String {
    svg_or_error(draw_linear(title, x_desc, y_desc, lines), title)
}

fn draw_linear(title: &str, x_desc: &str, y_desc: &str, lines: &[Line]) -> Result<String, String> {
    let (xmax, ymax) = bounds(lines);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|x| tick(*x, xmax))
            .y_label_formatter(&|y| tick(*y, ymax))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines(&mut chart, lines)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    lines: &[Line],
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for l in lines {
        let color = l.color;
        chart
            .draw_series(LineSeries::new(
                l.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(l.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    if lines.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(GREY_)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The latency percentile distribution: x is 1/(1-q) on a log axis (the
/// usual HdrHistogram plot, so p99.9 and p99.99 are visible), labelled as
/// percentiles; y is milliseconds. Points are (quantile, ms).
pub fn percentiles(title: &str, lines: &[Line]) -> String {
    svg_or_error(draw_percentiles(title, lines), title)
}

fn draw_percentiles(title: &str, lines: &[Line]) -> Result<String, String> {
    // q = 1 has no place on this axis; cap at 1 - 1e-6.
    let lines: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            name: l.name.clone(),
            points: l
                .points
                .iter()
                .map(|&(q, ms)| (1.0 / (1.0 - q.min(0.999_999)), ms))
                .collect(),
            color: l.color,
        })
        .collect();
    let (xmax, ymax) = bounds(&lines);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(70)
            .build_cartesian_2d((1f64..xmax.max(10.0)).log_scale(), 0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| tick(*y, ymax))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_lines(&mut chart, &lines)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A tick label with as many decimals as the axis range needs, and
/// thousands as "k".
fn tick(v: f64, range: f64) -> String {
    if range >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if range >= 20.0 {
        format!("{v:.0}")
    } else if range >= 2.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// 1/(1-q) as a percentile: 10 -> "90%", 1000 -> "99.9%".
fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".into();
    }
    let q = (1.0 - 1.0 / x) * 100.0;
    let digits = (x.log10().round() as usize).saturating_sub(2);
    format!("{q:.digits$}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(100_000.0), "99.999%");
    }

    #[test]
    fn charts_are_svg_with_axes() {
        let l = Line {
            name: "p99".into(),
            points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
            color: RED_,
        };
        let s = lines("latency", "seconds", "ms", &[l]);
        assert!(s.starts_with("<svg"), "{s}");
        assert!(s.contains("seconds") && s.contains("ms"));
        let q = percentiles(
            "dist",
            &[Line {
                name: "run".into(),
                points: vec![(0.5, 1.0), (0.99, 5.0), (0.999, 9.0), (1.0, 12.0)],
                color: BLUE_,
            }],
        );
        assert!(q.contains("99.9%"), "{q}");
    }
}
