//! fp_fdp.svg: posterior f'(E) and f''(E) per metal site with 68%/95% bands, reference curves
//! overlaid and the edge marked (plotters, SVG backend).
//!
//! In: the sites' draws (for references and edges) and their summaries. Out: an SVG string with
//! one panel per site, stacked vertically. Guarantees: axes span the posterior bands and the
//! references within the posterior's energy range, so nothing plotted is clipped.

use super::posterior::{CurveSummary, PointSummary, SiteDraws};
use plotters::prelude::*;

const PANEL_W: u32 = 900;
const PANEL_H: u32 = 380;
const FP_COLOR: RGBColor = RGBColor(31, 119, 180);
const FDP_COLOR: RGBColor = RGBColor(214, 39, 40);
const REF_COLORS: [RGBColor; 4] = [
    RGBColor(40, 40, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Renders the plot; the error is plotters' message.
pub fn fp_fdp_svg(sites: &[SiteDraws], curves: &[CurveSummary]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let height = PANEL_H * (curves.len().max(1) as u32);
        let root = SVGBackend::with_string(&mut svg, (PANEL_W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let panels = root.split_evenly((curves.len().max(1), 1));
        for ((panel, site), curve) in panels.iter().zip(sites).zip(curves) {
            draw_site(panel, site, curve).map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

type Panel<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

fn draw_site(panel: &Panel<'_>, site: &SiteDraws, curve: &CurveSummary) -> DrawResult {
    let (x_range, y_range) = ranges(site, curve);
    let caption = format!(
        "site {}: f' and f'' (posterior mean, 68% and 95% bands)",
        curve.site
    );
    let mut chart = ChartBuilder::on(panel)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .margin_right(30)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x_range.clone(), y_range.clone())?;
    chart
        .configure_mesh()
        .x_desc("energy (eV)")
        .y_desc("electrons")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    draw_posterior(&mut chart, curve, &curve.fp, FP_COLOR, "f'")?;
    draw_posterior(&mut chart, curve, &curve.fdp, FDP_COLOR, "f''")?;
    draw_references(&mut chart, site, &x_range)?;
    if let Some(edge) = site.edge_ev.filter(|e| x_range.contains(e)) {
        let line = vec![(edge, y_range.start), (edge, y_range.end)];
        let style = BLACK.mix(0.6).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(line, 6, 4, style))?
            .label(format!("edge {edge:.1} eV"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::MiddleLeft)
        .draw()
}

/// The 95% band, the 68% band and the mean of one quantity.
fn draw_posterior(
    chart: &mut Chart<'_, '_>,
    curve: &CurveSummary,
    points: &[PointSummary],
    color: RGBColor,
    name: &str,
) -> DrawResult {
    let energy = &curve.energy_ev;
    draw_band(chart, energy, points, |p| (p.q025, p.q975), color.mix(0.18))?;
    draw_band(chart, energy, points, |p| (p.q16, p.q84), color.mix(0.35))?;
    let mean = energy.iter().zip(points).map(|(&e, p)| (e, p.mean));
    chart
        .draw_series(LineSeries::new(mean, color.stroke_width(2)))?
        .label(format!("{name} posterior"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    Ok(())
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

fn draw_band(
    chart: &mut Chart<'_, '_>,
    energy: &[f64],
    points: &[PointSummary],
    bounds: impl Fn(&PointSummary) -> (f64, f64),
    color: RGBAColor,
) -> DrawResult {
    let upper = energy.iter().zip(points).map(|(&e, p)| (e, bounds(p).1));
    let lower = energy
        .iter()
        .zip(points)
        .rev()
        .map(|(&e, p)| (e, bounds(p).0));
    let outline: Vec<(f64, f64)> = upper.chain(lower).collect();
    chart.draw_series(std::iter::once(Polygon::new(outline, color.filled())))?;
    Ok(())
}

fn draw_references(
    chart: &mut Chart<'_, '_>,
    site: &SiteDraws,
    x: &std::ops::Range<f64>,
) -> DrawResult {
    for (k, reference) in site.references.iter().enumerate() {
        let color = REF_COLORS[k % REF_COLORS.len()];
        let inside = |e: &&f64| x.contains(*e);
        for values in [&reference.fp, &reference.fdp] {
            let points: Vec<(f64, f64)> = reference
                .energy_ev
                .iter()
                .zip(values.iter())
                .filter(|(e, _)| inside(e))
                .map(|(&e, &v)| (e, v))
                .collect();
            let series =
                chart.draw_series(DashedLineSeries::new(points, 5, 3, color.stroke_width(1)))?;
            if std::ptr::eq(values, &reference.fp) {
                series
                    .label(format!("reference: {}", reference.label))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            }
        }
    }
    Ok(())
}

/// Energy range of the posterior grid; value range covering bands and visible references.
fn ranges(site: &SiteDraws, curve: &CurveSummary) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let (e0, e1) = min_max(curve.energy_ev.iter().copied());
    let x = if e1 > e0 { e0..e1 } else { e0 - 1.0..e0 + 1.0 };
    let bands = curve
        .fp
        .iter()
        .chain(&curve.fdp)
        .flat_map(|p| [p.q025, p.q975]);
    let refs = site.references.iter().flat_map(|r| {
        let visible = r.energy_ev.iter().zip(r.fp.iter().zip(&r.fdp));
        visible
            .filter(|(e, _)| x.contains(*e))
            .flat_map(|(_, (&fp, &fdp))| [fp, fdp])
            .collect::<Vec<_>>()
    });
    let (y0, y1) = min_max(bands.chain(refs));
    let pad = ((y1 - y0) * 0.08).max(0.1);
    (x, y0 - pad..y1 + pad)
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}
