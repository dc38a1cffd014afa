//! Posterior summaries of f'(E) and f''(E) from draws: mean, sd and quantiles per energy.
//!
//! In: draws as an `ndarray` (draws × energies) for each quantity of a metal site. Out: per-energy
//! [`CurveSummary`] rows (mean, sd, q025, q05, q16, q25, q50, q75, q84, q95, q975: the 50%, 68%
//! and 95% bands and the 90% interval). Quantiles come from statrs' `OrderStatistics` (R type 8). Guarantees:
//! draws with a non-finite value are an error naming the site, quantity and energy.

use ndarray::Array2;
use serde::Serialize;
use statrs::statistics::{Data, OrderStatistics, Statistics};

/// The posterior of one metal site's anomalous scattering factors over the energy grid.
#[derive(Debug, Clone)]
pub struct SiteDraws {
    /// Site label (e.g. `FE1`).
    pub site: String,
    /// Energy grid, eV.
    pub energy_ev: Vec<f64>,
    /// f' draws, shape (draws, energies).
    pub fp: Array2<f64>,
    /// f'' draws, shape (draws, energies).
    pub fdp: Array2<f64>,
    /// Reference curves to overlay (tabulated f', f'' of known states).
    pub references: Vec<ReferenceCurve>,
    /// Absorption edge to mark, eV (e.g. the posterior mean of an edge latent).
    pub edge_ev: Option<f64>,
}

/// A tabulated f'(E), f''(E) curve (e.g. the Sherrell oxidized/reduced rubredoxin Fe).
#[derive(Debug, Clone)]
pub struct ReferenceCurve {
    /// Legend label.
    pub label: String,
    /// Energies, eV.
    pub energy_ev: Vec<f64>,
    /// f', electrons.
    pub fp: Vec<f64>,
    /// f'', electrons.
    pub fdp: Vec<f64>,
}

/// Summary statistics of one quantity at one energy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PointSummary {
    /// Posterior mean.
    pub mean: f64,
    /// Posterior standard deviation (n - 1 denominator).
    pub sd: f64,
    /// 2.5% quantile.
    pub q025: f64,
    /// 5% quantile.
    pub q05: f64,
    /// 16% quantile (lower edge of the 68% band).
    pub q16: f64,
    /// 25% quantile (lower edge of the 50% band).
    pub q25: f64,
    /// Median.
    pub q50: f64,
    /// 75% quantile.
    pub q75: f64,
    /// 84% quantile.
    pub q84: f64,
    /// 95% quantile.
    pub q95: f64,
    /// 97.5% quantile.
    pub q975: f64,
}

/// f' and f'' summaries of one site at every energy.
#[derive(Debug, Clone, Serialize)]
pub struct CurveSummary {
    /// Site label.
    pub site: String,
    /// Energy grid, eV.
    pub energy_ev: Vec<f64>,
    /// f' per energy.
    pub fp: Vec<PointSummary>,
    /// f'' per energy.
    pub fdp: Vec<PointSummary>,
}

/// Posterior draws that cannot be summarized.
#[derive(Debug, thiserror::Error)]
pub enum PosteriorError {
    /// Shape mismatch between draws and the energy grid.
    #[error(
        "site `{site}` field `{quantity}`: draws have {found} energies, the grid has {expected}"
    )]
    Shape {
        /// Site label.
        site: String,
        /// `fp` or `fdp`.
        quantity: &'static str,
        /// Grid length.
        expected: usize,
        /// Columns in the draws.
        found: usize,
    },
    /// A non-finite draw, or no draws at all.
    #[error("site `{site}` field `{quantity}` at {energy_ev} eV: {what}")]
    BadDraws {
        /// Site label.
        site: String,
        /// `fp` or `fdp`.
        quantity: &'static str,
        /// The energy.
        energy_ev: f64,
        /// What is wrong.
        what: &'static str,
    },
}

/// Summarizes a sample (at least one finite value).
pub fn summarize_sample(values: Vec<f64>) -> PointSummary {
    let mean = values.iter().mean();
    let sd = if values.len() > 1 {
        values.iter().std_dev()
    } else {
        0.0
    };
    let mut data = Data::new(values);
    PointSummary {
        mean,
        sd,
        q025: data.quantile(0.025),
        q05: data.quantile(0.05),
        q16: data.quantile(0.16),
        q25: data.quantile(0.25),
        q50: data.quantile(0.5),
        q75: data.quantile(0.75),
        q84: data.quantile(0.84),
        q95: data.quantile(0.95),
        q975: data.quantile(0.975),
    }
}

/// Summarizes f' and f'' of one site at every energy.
pub fn summarize_site(site: &SiteDraws) -> Result<CurveSummary, PosteriorError> {
    Ok(CurveSummary {
        site: site.site.clone(),
        energy_ev: site.energy_ev.clone(),
        fp: summarize_quantity(site, &site.fp, "fp")?,
        fdp: summarize_quantity(site, &site.fdp, "fdp")?,
    })
}

fn summarize_quantity(
    site: &SiteDraws,
    draws: &Array2<f64>,
    quantity: &'static str,
) -> Result<Vec<PointSummary>, PosteriorError> {
    if draws.ncols() != site.energy_ev.len() {
        return Err(PosteriorError::Shape {
            site: site.site.clone(),
            quantity,
            expected: site.energy_ev.len(),
            found: draws.ncols(),
        });
    }
    let bad = |energy_ev, what| PosteriorError::BadDraws {
        site: site.site.clone(),
        quantity,
        energy_ev,
        what,
    };
    draws
        .columns()
        .into_iter()
        .zip(&site.energy_ev)
        .map(|(column, &e)| {
            if column.is_empty() {
                return Err(bad(e, "no draws"));
            }
            if column.iter().any(|v| !v.is_finite()) {
                return Err(bad(e, "a draw is NaN or infinite"));
            }
            Ok(summarize_sample(column.to_vec()))
        })
        .collect()
}
