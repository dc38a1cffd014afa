//! The f'/f'' parametrizations of `physics::anomalous` as tape nodes.
//!
//! In (static): channel energies, reference curves or tables, restraint widths, reference states.
//! In (tensors): the parameters (edge position, width and levels; an edge shift in eV; per-channel
//! values; state logits; per-state log-likelihoods). Out: curves of shape (2, channel) with row 0 f'
//! and row 1 f'' (the layout of stdlib's `reference_curve`), or a scalar log density. Guarantees:
//! forward and VJP are the physics module's functions; scalar parameters accept shape [] or [1] and
//! get gradients of the same shape.

use super::{OpsError, real_grad, real_input, real_scalar, real_values, shaped};
use crate::physics::anomalous::{
    Curves, SigmoidEdge, log_marginal, mixture_curves, mixture_curves_vjp, shifted_reference,
    shifted_reference_vjp, smoothness_log_density, smoothness_log_density_vjp, state_posterior,
};
use crate::physics::kramers_kronig::KramersKronig;
use crate::physics::scattering_tables::SpectralTable;
use crate::tape::{FusedOp, Value};
use ndarray::ArrayD;

/// A table read at the channel energies, shape (2, channel): the constant `reference_curve`.
pub fn reference_curve(table: &SpectralTable, energy_ev: &[f64]) -> Result<ArrayD<f64>, OpsError> {
    curves_value(&shifted_reference(table, energy_ev, 0.0)?).map_err(|detail| OpsError::Shape {
        op: "reference_curve",
        detail,
    })
}

/// Pack curves as a (2, channel) tensor.
fn curves_value(c: &Curves) -> Result<ArrayD<f64>, String> {
    let n = c.fp.len();
    let values = c.fp.iter().chain(&c.fdp).copied().collect();
    match shaped(values, &[2, n])? {
        Value::Real(a) => Ok(a),
        Value::Complex(_) => Err("curves are real".into()),
    }
}

/// Split a (2, channel) gradient into its f' and f'' rows.
fn split_curves_grad(grad: &Value, n: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
    let g: Vec<f64> = real_grad(grad, 2 * n)?.iter().copied().collect();
    Ok((g[..n].to_vec(), g[n..].to_vec()))
}

/// Shape of input `i` for its gradient.
fn input_shape(inputs: &[&Value], i: usize, name: &str) -> Result<Vec<usize>, String> {
    Ok(real_input(inputs, i, name)?.shape().to_vec())
}

/// Sigmoid f'' edge with f' by Kramers-Kronig: inputs edge_ev, width_ev, fdp_low, fdp_high.
pub struct SigmoidEdgeOp {
    kk: KramersKronig,
    reference: Curves,
}

impl std::fmt::Debug for SigmoidEdgeOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigmoidEdgeOp")
            .field("channels", &self.kk.len())
            .finish()
    }
}

const EDGE_INPUTS: [&str; 4] = ["edge_ev", "width_ev", "fdp_low", "fdp_high"];

impl SigmoidEdgeOp {
    /// On the uniform grid `energy_ev`, KK tails from `reference` (one value per channel).
    pub fn new(energy_ev: &[f64], reference: Curves) -> Result<Self, OpsError> {
        let kk = KramersKronig::on_grid(energy_ev)?;
        if reference.fp.len() != kk.len() || reference.fdp.len() != kk.len() {
            return Err(OpsError::Shape {
                op: "sigmoid_edge",
                detail: format!("reference curve must have {} values per row", kk.len()),
            });
        }
        Ok(Self { kk, reference })
    }

    fn edge(inputs: &[&Value]) -> Result<SigmoidEdge, String> {
        let v = |i: usize| real_scalar(inputs, i, EDGE_INPUTS[i]);
        let edge = SigmoidEdge {
            edge_ev: v(0)?,
            width_ev: v(1)?,
            fdp_low: v(2)?,
            fdp_high: v(3)?,
        };
        if edge.width_ev.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Err(format!(
                "input 1 (width_ev) must be > 0, got {}",
                edge.width_ev
            ));
        }
        Ok(edge)
    }
}

impl FusedOp for SigmoidEdgeOp {
    fn name(&self) -> &'static str {
        "sigmoid_edge"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let curves = Self::edge(inputs)?
            .curves(&self.kk, &self.reference)
            .map_err(|e| e.to_string())?;
        Ok(Value::Real(curves_value(&curves)?))
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        _output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let (g_fp, g_fdp) = split_curves_grad(grad, self.kk.len())?;
        let g = Self::edge(inputs)?
            .curves_vjp(&self.kk, &g_fp, &g_fdp)
            .map_err(|e| e.to_string())?;
        [g.edge_ev, g.width_ev, g.fdp_low, g.fdp_high]
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                Ok(Some(shaped(
                    vec![v],
                    &input_shape(inputs, i, EDGE_INPUTS[i])?,
                )?))
            })
            .collect()
    }
}

/// A reference table shifted by a latent edge offset (eV): input shift_ev, output (2, channel).
#[derive(Debug, Clone)]
pub struct ShiftedCurveOp {
    table: SpectralTable,
    energy_ev: Vec<f64>,
}

impl ShiftedCurveOp {
    /// `table` read at `energy_ev` − shift.
    pub fn new(table: SpectralTable, energy_ev: Vec<f64>) -> Self {
        Self { table, energy_ev }
    }
}

impl FusedOp for ShiftedCurveOp {
    fn name(&self) -> &'static str {
        "shifted_curve"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let shift = real_scalar(inputs, 0, "shift_ev")?;
        let curves =
            shifted_reference(&self.table, &self.energy_ev, shift).map_err(|e| e.to_string())?;
        Ok(Value::Real(curves_value(&curves)?))
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        _output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let shift = real_scalar(inputs, 0, "shift_ev")?;
        let (g_fp, g_fdp) = split_curves_grad(grad, self.energy_ev.len())?;
        let g = shifted_reference_vjp(&self.table, &self.energy_ev, shift, &g_fp, &g_fdp)
            .map_err(|e| e.to_string())?;
        Ok(vec![Some(shaped(
            vec![g],
            &input_shape(inputs, 0, "shift_ev")?,
        )?)])
    }
}

/// The smoothness restraint's log density summed over rows: input (channel) or (site, channel).
#[derive(Debug, Clone, Copy)]
pub struct SmoothnessOp {
    sigma: f64,
}

impl SmoothnessOp {
    /// A Gaussian random walk of step width `sigma` (electrons) between adjacent channels.
    pub fn new(sigma: f64) -> Result<Self, OpsError> {
        if !(sigma > 0.0 && sigma.is_finite()) {
            return Err(OpsError::Shape {
                op: "smoothness",
                detail: format!("sigma must be finite and > 0, got {sigma}"),
            });
        }
        Ok(Self { sigma })
    }

    fn rows(inputs: &[&Value]) -> Result<(Vec<f64>, usize, Vec<usize>), String> {
        let x = real_input(inputs, 0, "values")?;
        let width = match x.shape() {
            [n] | [_, n] => *n,
            s => {
                return Err(format!(
                    "input 0 (values) must be [channel] or [site, channel], got {s:?}"
                ));
            }
        };
        Ok((
            x.iter().copied().collect(),
            width.max(1),
            x.shape().to_vec(),
        ))
    }
}

impl FusedOp for SmoothnessOp {
    fn name(&self) -> &'static str {
        "smoothness"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let (x, width, _) = Self::rows(inputs)?;
        let total = x
            .chunks(width)
            .map(|r| smoothness_log_density(r, self.sigma))
            .sum();
        shaped(vec![total], &[])
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        _output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let (x, width, shape) = Self::rows(inputs)?;
        let up = real_grad(grad, 1)?.iter().copied().sum::<f64>();
        let g = x
            .chunks(width)
            .flat_map(|r| smoothness_log_density_vjp(r, self.sigma, up))
            .collect();
        Ok(vec![Some(shaped(g, &shape)?)])
    }
}

/// Mixture of reference states: input logits (state), output Σ softmax(logits)_k curve_k, (2, channel).
#[derive(Debug, Clone)]
pub struct MixtureOp {
    states: Vec<Curves>,
}

impl MixtureOp {
    /// Over `states` (each f'/f'' at the channels, all of one length).
    pub fn new(states: Vec<Curves>) -> Result<Self, OpsError> {
        let n = states.first().map_or(0, |s| s.fp.len());
        if states.is_empty() || states.iter().any(|s| s.fp.len() != n || s.fdp.len() != n) {
            return Err(OpsError::Shape {
                op: "state_mixture",
                detail: "need at least one state, all with the same number of channels".into(),
            });
        }
        Ok(Self { states })
    }
}

impl FusedOp for MixtureOp {
    fn name(&self) -> &'static str {
        "state_mixture"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let logits = real_values(inputs, 0, "logits", self.states.len())?;
        Ok(Value::Real(curves_value(&mixture_curves(
            &logits,
            &self.states,
        ))?))
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        _output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let logits = real_values(inputs, 0, "logits", self.states.len())?;
        let (g_fp, g_fdp) = split_curves_grad(grad, self.states[0].fp.len())?;
        let g = mixture_curves_vjp(&logits, &self.states, &g_fp, &g_fdp);
        Ok(vec![Some(shaped(g, &input_shape(inputs, 0, "logits")?)?)])
    }
}

/// log Σ_k exp(log prior_k + log-likelihood_k): the state-marginal likelihood; input (state), out [].
#[derive(Debug, Clone)]
pub struct StateMarginalOp {
    log_prior: Vec<f64>,
}

impl StateMarginalOp {
    /// With prior probabilities `prior` (positive, summing to 1 within 1e-9).
    pub fn new(prior: &[f64]) -> Result<Self, OpsError> {
        let total: f64 = prior.iter().sum();
        if prior.is_empty()
            || prior
                .iter()
                .any(|p| p.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
            || (total - 1.0).abs() > 1e-9
        {
            return Err(OpsError::Shape {
                op: "state_marginal",
                detail: format!("prior must be positive and sum to 1, got {prior:?}"),
            });
        }
        Ok(Self {
            log_prior: prior.iter().map(|p| p.ln()).collect(),
        })
    }

    /// P(state | data) for per-state log-likelihoods (the quantity reported per site).
    pub fn posterior(&self, log_likelihood: &[f64]) -> Vec<f64> {
        state_posterior(&self.log_prior, log_likelihood)
    }
}

impl FusedOp for StateMarginalOp {
    fn name(&self) -> &'static str {
        "state_marginal"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let ll = real_values(inputs, 0, "log_likelihood", self.log_prior.len())?;
        shaped(vec![log_marginal(&self.log_prior, &ll)], &[])
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        _output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let ll = real_values(inputs, 0, "log_likelihood", self.log_prior.len())?;
        let up = real_grad(grad, 1)?.iter().copied().sum::<f64>();
        let g = self.posterior(&ll).iter().map(|p| p * up).collect();
        Ok(vec![Some(shaped(
            g,
            &input_shape(inputs, 0, "log_likelihood")?,
        )?)])
    }
}
