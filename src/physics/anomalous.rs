//! Parametrizations of a metal site's f'(E), f''(E) on the channel energies, each a forward
//! function with its vector-Jacobian product (VJP) beside it:
//!
//! - per-channel values with a smoothness restraint (Sauter et al. 2020): a Gaussian random walk
//!   on adjacent channels, log p = -sum (x_{e+1} - x_e)^2 / (2 sigma^2);
//! - a sigmoid K edge for f'' with f' from Kramers-Kronig against a reference table (diffBragg);
//! - a reference curve shifted by an edge offset in eV;
//! - a categorical mixture over reference states (ox/red): softmax weights, the mixed curve,
//!   and the posterior state probabilities from per-state log-likelihoods (log-sum-exp).
//!
//! In: parameters and channel energies (eV). Out: f', f'' per channel (electrons) and gradients.
//! Guarantees: every VJP is the exact transpose of its forward Jacobian (tested by central
//! differences); the shifted curve is piecewise linear, so its offset gradient is the one-sided
//! slope of the segment the shifted energy falls in.

use crate::physics::kramers_kronig::{KramersKronig, KramersKronigError};
use crate::physics::scattering_tables::{SpectralTable, TableError};

/// f' and f'' on the channel grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    /// f' per channel, electrons.
    pub fp: Vec<f64>,
    /// f'' per channel, electrons.
    pub fdp: Vec<f64>,
}

/// The smoothness restraint's log density, -sum (x_{e+1} - x_e)^2 / (2 sigma^2).
pub fn smoothness_log_density(values: &[f64], sigma: f64) -> f64 {
    -values
        .windows(2)
        .map(|w| (w[1] - w[0]).powi(2))
        .sum::<f64>()
        / (2.0 * sigma * sigma)
}

/// VJP of [`smoothness_log_density`]: d(upstream * log p)/dx.
pub fn smoothness_log_density_vjp(values: &[f64], sigma: f64, upstream: f64) -> Vec<f64> {
    let mut grad = vec![0.0; values.len()];
    let scale = upstream / (sigma * sigma);
    for e in 0..values.len().saturating_sub(1) {
        let d = values[e + 1] - values[e];
        grad[e + 1] -= scale * d;
        grad[e] += scale * d;
    }
    grad
}

/// Parameters of a sigmoid f'' edge: f''(E) = low + (high - low) / (1 + exp(-(E - edge)/width)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SigmoidEdge {
    /// Edge position (half height), eV.
    pub edge_ev: f64,
    /// Edge width, eV (> 0).
    pub width_ev: f64,
    /// f'' below the edge, electrons.
    pub fdp_low: f64,
    /// f'' above the edge, electrons.
    pub fdp_high: f64,
}

/// Gradient with respect to the four [`SigmoidEdge`] parameters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SigmoidEdgeGrad {
    /// d/d edge_ev.
    pub edge_ev: f64,
    /// d/d width_ev.
    pub width_ev: f64,
    /// d/d fdp_low.
    pub fdp_low: f64,
    /// d/d fdp_high.
    pub fdp_high: f64,
}

/// Logistic function.
fn logistic(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        x.exp() / (1.0 + x.exp())
    }
}

impl SigmoidEdge {
    /// f'' at each energy.
    pub fn fdp(&self, energy_ev: &[f64]) -> Vec<f64> {
        energy_ev
            .iter()
            .map(|e| {
                self.fdp_low
                    + (self.fdp_high - self.fdp_low) * logistic((e - self.edge_ev) / self.width_ev)
            })
            .collect()
    }

    /// f'' from the sigmoid and f' = f'_ref + KK[f'' - f''_ref] on the KK operator's grid.
    pub fn curves(
        &self,
        kk: &KramersKronig,
        reference: &Curves,
    ) -> Result<Curves, KramersKronigError> {
        let fdp = self.fdp(&kk.energy_ev());
        let fp = kk.apply_with_reference(&fdp, &reference.fp, &reference.fdp)?;
        Ok(Curves { fp, fdp })
    }

    /// VJP of [`SigmoidEdge::curves`]: upstream gradients on f' and f'' to the four parameters.
    pub fn curves_vjp(
        &self,
        kk: &KramersKronig,
        grad_fp: &[f64],
        grad_fdp: &[f64],
    ) -> Result<SigmoidEdgeGrad, KramersKronigError> {
        let through_kk = kk.adjoint(grad_fp)?;
        let mut grad = SigmoidEdgeGrad::default();
        for ((e, g_kk), g_direct) in kk.energy_ev().iter().zip(&through_kk).zip(grad_fdp) {
            let g = g_kk + g_direct;
            let x = (e - self.edge_ev) / self.width_ev;
            let s = logistic(x);
            let ds = s * (1.0 - s) * (self.fdp_high - self.fdp_low);
            grad.fdp_low += g * (1.0 - s);
            grad.fdp_high += g * s;
            grad.edge_ev -= g * ds / self.width_ev;
            grad.width_ev -= g * ds * x / self.width_ev;
        }
        Ok(grad)
    }
}

/// A reference curve read at E - shift: the edge moves up by `shift_ev`.
pub fn shifted_reference(
    table: &SpectralTable,
    energy_ev: &[f64],
    shift_ev: f64,
) -> Result<Curves, TableError> {
    let values = energy_ev
        .iter()
        .map(|e| table.at_ev(e - shift_ev))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Curves {
        fp: values.iter().map(|v| v.0).collect(),
        fdp: values.iter().map(|v| v.1).collect(),
    })
}

/// VJP of [`shifted_reference`] with respect to the shift: -sum (g' slope' + g'' slope'').
pub fn shifted_reference_vjp(
    table: &SpectralTable,
    energy_ev: &[f64],
    shift_ev: f64,
    grad_fp: &[f64],
    grad_fdp: &[f64],
) -> Result<f64, TableError> {
    let mut grad = 0.0;
    for ((e, gp), gdp) in energy_ev.iter().zip(grad_fp).zip(grad_fdp) {
        let (i, _) = table.bracket(e - shift_ev)?;
        let de = table.energy_ev[i + 1] - table.energy_ev[i];
        let slope_fp = (table.fp[i + 1] - table.fp[i]) / de;
        let slope_fdp = (table.fdp[i + 1] - table.fdp[i]) / de;
        grad -= gp * slope_fp + gdp * slope_fdp;
    }
    Ok(grad)
}

/// Softmax of logits (stable).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|z| (z - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|x| x / total).collect()
}

/// VJP of [`softmax`]: dL/dz_k = p_k (g_k - sum_j p_j g_j).
pub fn softmax_vjp(probabilities: &[f64], grad: &[f64]) -> Vec<f64> {
    let mean: f64 = probabilities.iter().zip(grad).map(|(p, g)| p * g).sum();
    probabilities
        .iter()
        .zip(grad)
        .map(|(p, g)| p * (g - mean))
        .collect()
}

/// The mixed curve sum_k p_k curve_k with p = softmax(logits).
pub fn mixture_curves(logits: &[f64], states: &[Curves]) -> Curves {
    let p = softmax(logits);
    let n = states.first().map_or(0, |s| s.fp.len());
    let mix = |pick: fn(&Curves) -> &Vec<f64>| {
        (0..n)
            .map(|e| states.iter().zip(&p).map(|(s, w)| w * pick(s)[e]).sum())
            .collect()
    };
    Curves {
        fp: mix(|c| &c.fp),
        fdp: mix(|c| &c.fdp),
    }
}

/// VJP of [`mixture_curves`] with respect to the logits.
pub fn mixture_curves_vjp(
    logits: &[f64],
    states: &[Curves],
    grad_fp: &[f64],
    grad_fdp: &[f64],
) -> Vec<f64> {
    let p = softmax(logits);
    let grad_p: Vec<f64> = states
        .iter()
        .map(|s| {
            s.fp.iter().zip(grad_fp).map(|(f, g)| f * g).sum::<f64>()
                + s.fdp.iter().zip(grad_fdp).map(|(f, g)| f * g).sum::<f64>()
        })
        .collect();
    softmax_vjp(&p, &grad_p)
}

/// log sum_k exp(log_prior_k + log_likelihood_k): the marginal log-likelihood over states.
pub fn log_marginal(log_prior: &[f64], log_likelihood: &[f64]) -> f64 {
    let joint: Vec<f64> = log_prior
        .iter()
        .zip(log_likelihood)
        .map(|(a, b)| a + b)
        .collect();
    let max = joint.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + joint.iter().map(|j| (j - max).exp()).sum::<f64>().ln()
}

/// P(state | data) = softmax(log prior + log likelihood); also the VJP of [`log_marginal`] with
/// respect to each state's log-likelihood.
pub fn state_posterior(log_prior: &[f64], log_likelihood: &[f64]) -> Vec<f64> {
    let joint: Vec<f64> = log_prior
        .iter()
        .zip(log_likelihood)
        .map(|(a, b)| a + b)
        .collect();
    softmax(&joint)
}
