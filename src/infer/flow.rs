//! Correction flows: a normalizing flow on the standardized residuals of a count likelihood,
//! conditioned on metadata, that turns the physics likelihood P(y | μ) into a corrected P*(y | μ)
//! (Takeishi & Kalousis 2021; the seed paper's model correction).
//!
//! Formulation (also in README and stdlib/flows.spread). For `observe y ~ Poisson(μ) corrected by
//! F(context...) penalty W`, every observed element i has the Gaussian approximation of its
//! Poisson count with readout noise, σᵢ = √(μᵢ + readout²), and the standardized residual
//! rᵢ = (yᵢ − μᵢ)/σᵢ. Uncorrected, rᵢ ~ N(0, 1). The flow is a bijection T_c of the real line whose
//! parameters an MLP computes from the element's context cᵢ = [ln(1 + μᵢ) unless `given_expected =
//! false`, the user's inputs]; the
//! corrected likelihood is the change of variables
//!
//! ```text
//!   log P*(yᵢ | μᵢ) = log N(T_c(rᵢ); 0, 1) + log T_c'(rᵢ) − log σᵢ,
//! ```
//!
//! and the penalty, per observation (one shoebox), is W times the mean over its n elements of
//! KL(P ‖ P*) = KL(N(0, 1) ‖ law of r under P*) = E_{x~N(0,1)}[log N(x) − log N(T(x)) − log T'(x)].
//! The KL is zero exactly when T is the identity and grows with the departure from physics; the
//! conditioner's output layer starts at zero, so every flow starts as the identity and the fit
//! starts as pure physics (the Gaussian approximation). The mean (not the sum) over elements makes
//! the penalty act like a prior on the correction: with more pixels the data outweigh it.
//!
//! Kinds (the residual is one-dimensional, so a coupling's conditioning half is the context):
//! - `affine_coupling`: T(x) = (x − b) e^{−s}, (b, s) from the MLP; one layer (stacked affine
//!   layers compose to one). KL = s + (1 + b²) e^{−2s}/2 − 1/2 in closed form.
//! - `planar`: L layers x ← x + u tanh(w x + c) with w = e^ŵ and u = (e^v − 1)/w, so that
//!   T' = Π (1 + (e^v − 1)(1 − tanh²)) > 0 (invertible for any v, ŵ, c); (v, ŵ, c) = 0 is the
//!   identity. Its KL is a deterministic quadrature: the trapezoid rule on [−8, 8] with step 0.5
//!   against the standard normal weight (33 nodes; exponentially accurate for these analytic
//!   integrands), so no extra randomness enters the ELBO.
//! - `spline` (src/infer/spline.rs): a monotone rational-quadratic spline (Durkan et al. 2019) of
//!   K = `bins` bins on [−B, B], B = 5, the identity outside. The MLP gives K width logits, K
//!   height logits and K − 1 interior knot-slope pre-activations per element: widths and heights
//!   are 2B (m + (1 − K m) softmax), m = 1e-3; interior slopes δ = 10⁻³ + softplus(d + c) with
//!   softplus(c) = 1 − 10⁻³, so d = 0 gives δ = 1; the two end slopes are 1, so T and T' are
//!   continuous into the tails. Zero outputs give uniform bins and unit slopes: the identity. In
//!   bin k, with ξ = (x − xₖ)/wₖ, sₖ = hₖ/wₖ, θ = ξ(1 − ξ), D = sₖ + (δₖ₊₁ + δₖ − 2sₖ)θ:
//!   T = yₖ + hₖ(sₖξ² + δₖθ)/D and T' = sₖ²(δₖ₊₁ξ² + 2sₖθ + δₖ(1 − ξ)²)/D². One layer (the
//!   planner refuses more; raise `bins` instead). T maps [−B, B] onto itself and is the identity
//!   beyond, so the KL integrand vanishes outside [−B, B]; inside it is analytic between knots,
//!   and the KL is 8-point Gauss–Legendre on each piece of [−B, B] cut at 5 equal cells and at
//!   the knots (8 (K + 4) nodes; the pieces' ends at knots move with them and the adjoint
//!   differentiates that). Against a 10⁶-interval reference it is within 1.5e-5 relative for
//!   conditioner outputs of scale 1 and 4.2e-4 for scale 3 (tests/run_flows.rs).
//!
//! - `gain`: a flow on the expected count rather than on the residual, for the family "the
//!   expected count is off by a factor": the MLP gives one output h per element, the corrected
//!   expected count is μ* = μ e^h (a bijection of the rate), and the likelihood stays exactly
//!   Poisson, log Poisson(y | μ*), with no Gaussian approximation; the penalty is W times the
//!   mean over the elements of KL(Poisson(μ) ‖ Poisson(μ*)) = μ (e^h − 1 − h). At h = 0 it is the
//!   physics' own Poisson likelihood. Given the pixel's position on the detector (and not
//!   ln(1 + μ): `given_expected = false`) it is a smooth flat-field (gain) correction. Its terms
//!   are ordinary tensor tape nodes over (h, μ), so the latents' gradients pass through μ.
//!   (Until 2026-12-07 the gain kind was the Gaussian approximation at μ*, an affine map of the
//!   residual; on clean data that left every image ~4.5 sds below its Poisson expectation.)
//!
//! For the residual kinds, the likelihood terms and the penalty of all elements are one fused
//! tape node with a hand adjoint (`CorrectedLogLik`); the conditioner is ordinary dense layers
//! on the tape.

use super::dist::{Dist, DistError, Family};
use super::mlp::Mlp;
use super::model::{Env, Expr};
use super::spline::{MAX_SPLINE_BINS, spline, spline_kl, spline_outputs};
use crate::tape::{FusedOp, NodeId, Tape, Value};
use ndarray::{ArrayD, IxDyn};
use std::borrow::Cow;
use std::sync::Arc;

const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;
/// Planar layers at most (the adjoint keeps every layer's state on the stack).
pub const MAX_PLANAR_LAYERS: usize = 16;
/// Quadrature of the planar flow's KL: nodes −8, −7.5, ..., 8.
const QUAD_STEP: f64 = 0.5;
const QUAD_NODES: usize = 33;

/// The bijection family of a correction flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    /// x ↦ (x − b) e^{−s}.
    AffineCoupling,
    /// A stack of planar layers x ↦ x + u tanh(w x + c).
    Planar {
        /// Layers.
        layers: usize,
    },
    /// A monotone rational-quadratic spline on [−B, B], the identity outside (one layer).
    Spline {
        /// Bins K.
        bins: usize,
    },
    /// The affine map of a multiplicative error of μ: μ* = μ e^h, h from the conditioner.
    Gain,
}

impl FlowKind {
    /// Conditioner outputs per element.
    pub fn outputs(self) -> usize {
        // The gain kind's one output is its log-gain h.
        self.residual_map().map_or(1, ResidualMap::outputs)
    }

    /// The kind's name as a flow declaration writes it (with its size).
    pub fn describe(self) -> String {
        match self {
            FlowKind::AffineCoupling => "affine_coupling".into(),
            FlowKind::Planar { layers } => format!("planar ({layers} layers)"),
            FlowKind::Spline { bins } => format!("spline ({bins} bins)"),
            FlowKind::Gain => "gain".into(),
        }
    }

    /// The bijection of the standardized residual for the kinds that act on the Gaussian
    /// approximation; None for the gain kind, whose likelihood is Poisson at μ e^h.
    pub fn residual_map(self) -> Option<ResidualMap> {
        match self {
            FlowKind::AffineCoupling => Some(ResidualMap::AffineCoupling),
            FlowKind::Planar { layers } => Some(ResidualMap::Planar { layers }),
            FlowKind::Spline { bins } => Some(ResidualMap::Spline { bins }),
            FlowKind::Gain => None,
        }
    }
}

/// The bijection T of a standardized residual (the flow kinds but the gain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResidualMap {
    /// x ↦ (x − b) e^{−s}.
    AffineCoupling,
    /// A stack of planar layers x ↦ x + u tanh(w x + c).
    Planar {
        /// Layers.
        layers: usize,
    },
    /// A monotone rational-quadratic spline on [−B, B], the identity outside (one layer).
    Spline {
        /// Bins K.
        bins: usize,
    },
}

impl ResidualMap {
    /// Conditioner outputs per element.
    pub fn outputs(self) -> usize {
        match self {
            ResidualMap::AffineCoupling => 2,
            ResidualMap::Planar { layers } => 3 * layers,
            ResidualMap::Spline { bins } => spline_outputs(bins),
        }
    }
}

/// One context input of the conditioner.
#[derive(Clone, Debug)]
pub struct ContextInput {
    /// The data expression.
    pub expr: Expr,
    /// One row per observed element (else one value set per observation, given to every row).
    pub per_row: bool,
    /// Values per row.
    pub width: usize,
}

/// A correction flow attached to one observe site.
#[derive(Clone, Debug)]
pub struct CorrectionSpec {
    /// Flow declaration name.
    pub flow: String,
    /// Bijection family.
    pub kind: FlowKind,
    /// The conditioner: widths 1 + context width, hidden..., `kind.outputs()`.
    pub conditioner: Mlp,
    /// The user's context inputs (data), after ln(1 + μ).
    pub context: Vec<ContextInput>,
    /// Penalty weight W.
    pub penalty: f64,
    /// Readout noise (counts) of the Gaussian approximation.
    pub readout: f64,
    /// The conditioner sees ln(1 + μ) first (on the tape: the correction may depend on the
    /// physics' prediction, and the latents' gradients pass through it).
    pub given_expected: bool,
    /// Set (for the gain kind) by the goodness-of-fit check (src/infer/fit_check.rs): the
    /// observation's term is then Σᵢ check(μᵢ e^{hᵢ}, yᵢ) at the corrected expectation, not
    /// its likelihood. None in a fitted model.
    pub check: Option<ElementTerm>,
}

/// A function of one element's (expected count, observed count), summed over the elements in
/// place of a likelihood.
#[derive(Clone)]
pub struct ElementTerm(pub Arc<dyn Fn(f64, f64) -> f64 + Send + Sync>);

impl std::fmt::Debug for ElementTerm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ElementTerm")
    }
}

impl CorrectionSpec {
    /// Parameters of the conditioner.
    pub fn n_params(&self) -> usize {
        self.conditioner.n_params()
    }

    /// The context matrix (rows × context width) of the user's inputs, from their values.
    pub fn context_matrix(
        &self,
        rows: usize,
        values: &[&ArrayD<f64>],
    ) -> Result<ArrayD<f64>, String> {
        let width: usize = self.context.iter().map(|c| c.width).sum();
        let mut flat = vec![0.0; rows * width];
        let mut col = 0;
        for (c, v) in self.context.iter().zip(values) {
            // A per-row input evaluated outside the rows' plate is one set for all rows.
            let per_row = c.per_row && v.len() == rows * c.width && rows > 1;
            if v.len() != c.width && !per_row {
                return Err(format!(
                    "correction flow `{}`: a context input of shape {:?} does not give {} value(s) {}",
                    self.flow,
                    v.shape(),
                    c.width,
                    if c.per_row {
                        "per observed element"
                    } else {
                        "per observation"
                    }
                ));
            }
            for (k, x) in v.iter().enumerate() {
                let (r, j) = if per_row {
                    (k / c.width, k % c.width)
                } else {
                    (0, k)
                };
                flat[r * width + col + j] = *x;
            }
            if !per_row {
                for r in 1..rows {
                    let (head, tail) = flat.split_at_mut(r * width);
                    tail[col..col + c.width].copy_from_slice(&head[col..col + c.width]);
                }
            }
            col += c.width;
        }
        ArrayD::from_shape_vec(IxDyn(&[rows, width]), flat).map_err(|e| e.to_string())
    }
}

/// The corrected log-likelihood of counts `y` with Poisson rate `rate` (broadcast to y), minus
/// the penalty, on the tape: standardized residuals, the conditioner on [ln(1 + μ), context],
/// the fused flow term, and −Σ log σ.
pub fn corrected_log_lik(
    t: &mut Tape,
    env: &Env,
    c: &CorrectionSpec,
    weights: &[(usize, NodeId)],
    rate: NodeId,
    y: NodeId,
) -> Result<NodeId, DistError> {
    let shape = t.shape(y).to_vec();
    let n: usize = shape.iter().product();
    let mu = if t.shape(rate) == shape.as_slice() {
        rate
    } else {
        t.broadcast_to(rate, &shape)?
    };
    let mu = t.reshape(mu, &[n])?;
    let y = t.reshape(y, &[n])?;
    let x = conditioner_input(t, env, c, mu, n)?;
    let p = c.conditioner.forward(t, weights, x)?;
    let Some(map) = c.kind.residual_map() else {
        return match &c.check {
            Some(check) => check_at_corrected_expectation(t, check, p, mu, y),
            None => poisson_gain_log_lik(t, c.penalty, p, mu, y, n),
        };
    };
    let var = t.shift(mu, c.readout * c.readout)?;
    let sigma = t.sqrt(var)?;
    let diff = t.sub(y, mu)?;
    let r = t.div(diff, sigma)?;
    let log_sigma = t.log(sigma)?;
    let log_sigma = t.sum(log_sigma)?;
    let op = CorrectedLogLik {
        map,
        penalty: c.penalty,
    };
    let flow = t.fused(Arc::new(op), &[r, p])?;
    Ok(t.sub(flow, log_sigma)?)
}

/// The conditioner's input (n × width): ln(1 + μ) (on the tape: it depends on the latents)
/// unless `given_expected = false`, then the user's context inputs (data).
fn conditioner_input(
    t: &mut Tape,
    env: &Env,
    c: &CorrectionSpec,
    mu: NodeId,
    n: usize,
) -> Result<NodeId, DistError> {
    let mut parts = Vec::with_capacity(2);
    if c.given_expected {
        let one_plus = t.shift(mu, 1.0)?;
        let log_mu = t.log(one_plus)?;
        parts.push(t.reshape(log_mu, &[n, 1])?);
    }
    if !c.context.is_empty() {
        let nodes: Vec<NodeId> = c
            .context
            .iter()
            .map(|ci| env.eval(t, &ci.expr))
            .collect::<Result<_, _>>()?;
        let values: Vec<&ArrayD<f64>> =
            nodes.iter().map(|&k| t.real(k)).collect::<Result<_, _>>()?;
        let m = c
            .context_matrix(n, &values)
            .map_err(|detail| DistError::Unsupported {
                family: "correction flow",
                detail,
            })?;
        parts.push(t.constant_real(m));
    }
    Ok(match parts.as_slice() {
        [] => t.constant_real(ArrayD::zeros(IxDyn(&[n, 0]))),
        [one] => *one,
        _ => t.concat(&parts, 1)?,
    })
}

/// The gain kind: Σᵢ log Poisson(yᵢ | μᵢ e^{hᵢ}) − (W/n) Σᵢ μᵢ (e^{hᵢ} − 1 − hᵢ), the second sum
/// being KL(Poisson(μᵢ) ‖ Poisson(μᵢ e^{hᵢ})); tensor nodes over the n elements.
fn poisson_gain_log_lik(
    t: &mut Tape,
    penalty: f64,
    h: NodeId,
    mu: NodeId,
    y: NodeId,
    n: usize,
) -> Result<NodeId, DistError> {
    let h = t.reshape(h, &[n])?;
    let gain = t.exp(h)?;
    let mu_star = t.mul(mu, gain)?;
    let log_lik = Dist::new(Family::Poisson, vec![mu_star])?.log_prob(t, y)?;
    let log_lik = t.sum(log_lik)?;
    if n == 0 || penalty == 0.0 {
        return Ok(log_lik);
    }
    let gain_less_one = t.shift(gain, -1.0)?;
    let excess = t.sub(gain_less_one, h)?;
    let kl = t.mul(mu, excess)?;
    let kl = t.sum(kl)?;
    let kl = t.scale(kl, -penalty / n as f64)?;
    Ok(t.add(log_lik, kl)?)
}

/// Σᵢ check(μᵢ e^{hᵢ}, yᵢ) as a constant (the check is evaluated, not differentiated).
fn check_at_corrected_expectation(
    t: &mut Tape,
    check: &ElementTerm,
    h: NodeId,
    mu: NodeId,
    y: NodeId,
) -> Result<NodeId, DistError> {
    let (h, mu, y) = (t.real(h)?, t.real(mu)?, t.real(y)?);
    let total: f64 = h
        .iter()
        .zip(mu.iter())
        .zip(y.iter())
        .map(|((&h, &mu), &y)| (check.0)(mu * h.exp(), y))
        .sum();
    Ok(t.constant_real(ArrayD::from_elem(IxDyn(&[]), total)))
}

/// Σᵢ [log N(T(rᵢ)) + log T'(rᵢ)] − (W/n) Σᵢ KL(pᵢ) over the n elements, as one tape node.
/// Inputs: r (n), the conditioner's output p (n × outputs). Output: a 0-d tensor.
#[derive(Clone, Copy, Debug)]
pub struct CorrectedLogLik {
    /// The bijection.
    pub map: ResidualMap,
    /// Penalty weight W.
    pub penalty: f64,
}

/// Nodes and weights of the KL quadrature (weights sum to 1).
fn quadrature() -> [(f64, f64); QUAD_NODES] {
    let mut q = [(0.0, 0.0); QUAD_NODES];
    let mut total = 0.0;
    for (k, slot) in q.iter_mut().enumerate() {
        let x = -8.0 + QUAD_STEP * k as f64;
        let w = (-0.5 * x * x).exp();
        total += w;
        *slot = (x, w);
    }
    q.iter_mut().for_each(|s| s.1 /= total);
    q
}

/// f(x) = −T(x)²/2 + ln T'(x) of the affine map: −z²/2 − s with z = (x − b)e^{−s}; with
/// `grads`, adds weight × (∂f/∂x, ∂f/∂b, ∂f/∂s).
fn affine(x: f64, p: &[f64], weight: f64, grads: Option<(&mut f64, &mut [f64])>) -> f64 {
    let (b, s) = (p[0], p[1]);
    let e = (-s).exp();
    let z = (x - b) * e;
    if let Some((dx, dp)) = grads {
        *dx += -weight * z * e;
        dp[0] += weight * z * e;
        dp[1] += weight * (z * z - 1.0);
    }
    -0.5 * z * z - s
}

/// KL(N(0,1) ‖ N(b, e^{2s})) = s + (1 + b²)e^{−2s}/2 − 1/2; with `dp`, adds weight × gradient.
fn affine_kl(p: &[f64], weight: f64, dp: Option<&mut [f64]>) -> f64 {
    let (b, s) = (p[0], p[1]);
    let e2 = (-2.0 * s).exp();
    if let Some(dp) = dp {
        dp[0] += weight * b * e2;
        dp[1] += weight * (1.0 - (1.0 + b * b) * e2);
    }
    s + 0.5 * (1.0 + b * b) * e2 - 0.5
}

/// State of one planar layer kept for the adjoint.
#[derive(Clone, Copy, Default)]
struct PlanarLayer {
    x: f64,
    a: f64,
    w: f64,
    ev: f64,
    u: f64,
    d: f64,
}

/// f(x) = −T(x)²/2 + ln T'(x) of a planar stack with parameters p = [v, ŵ, c] per layer; with
/// `grads`, adds weight × (∂f/∂x, ∂f/∂p).
fn planar(x0: f64, p: &[f64], weight: f64, grads: Option<(&mut f64, &mut [f64])>) -> f64 {
    let layers = p.len() / 3;
    let mut st = [PlanarLayer::default(); MAX_PLANAR_LAYERS];
    let mut x = x0;
    let mut log_det = 0.0;
    for (l, s) in st.iter_mut().enumerate().take(layers) {
        let (v, w_hat, c) = (p[3 * l], p[3 * l + 1], p[3 * l + 2]);
        let (w, ev) = (w_hat.exp(), v.exp());
        let u = (ev - 1.0) / w;
        let a = (w * x + c).tanh();
        let d = 1.0 + (ev - 1.0) * (1.0 - a * a);
        *s = PlanarLayer { x, a, w, ev, u, d };
        x += u * a;
        log_det += d.ln();
    }
    if let Some((dx, dp)) = grads {
        let mut y_bar = -x * weight;
        for l in (0..layers).rev() {
            let PlanarLayer { x, a, w, ev, u, d } = st[l];
            let g = 1.0 - a * a;
            let lnd_a = weight * (ev - 1.0) * (-2.0 * a) / d;
            let pre_bar = (y_bar * u + lnd_a) * g;
            dp[3 * l] += y_bar * (ev / w) * a + weight * ev * g / d;
            dp[3 * l + 1] += -y_bar * u * a + pre_bar * w * x;
            dp[3 * l + 2] += pre_bar;
            y_bar += pre_bar * w;
        }
        *dx += y_bar;
    }
    -0.5 * x * x + log_det
}

impl CorrectedLogLik {
    /// f of one element (and its weighted gradient).
    fn f(&self, x: f64, p: &[f64], weight: f64, grads: Option<(&mut f64, &mut [f64])>) -> f64 {
        match self.map {
            ResidualMap::AffineCoupling => affine(x, p, weight, grads),
            ResidualMap::Planar { .. } => planar(x, p, weight, grads),
            ResidualMap::Spline { bins } => spline(x, p, bins, weight, grads),
        }
    }

    /// KL(P ‖ P*) of one element (and weight × its gradient added into `dp`).
    fn kl(&self, p: &[f64], weight: f64, mut dp: Option<&mut [f64]>) -> f64 {
        match self.map {
            ResidualMap::AffineCoupling => return affine_kl(p, weight, dp),
            ResidualMap::Spline { bins } => return spline_kl(p, bins, weight, dp),
            ResidualMap::Planar { .. } => {}
        }
        // KL = −Σ_q w_q [x_q²/2 + f(x_q)].
        let mut kl = 0.0;
        let mut dx_unused = 0.0;
        for (x, w) in quadrature() {
            let g = dp.as_deref_mut().map(|d| (&mut dx_unused, d));
            kl -= w * (0.5 * x * x + self.f(x, p, -weight * w, g));
        }
        kl
    }

    /// The residuals and the parameters in logical (row-major) order: borrowed when the arrays
    /// are in standard layout, else copied (a concatenation's output can be column-major).
    #[allow(clippy::type_complexity)]
    fn unpack<'a>(
        &self,
        inputs: &[&'a Value],
    ) -> Result<(Cow<'a, [f64]>, Cow<'a, [f64]>, usize), String> {
        let (Some(Value::Real(r)), Some(Value::Real(p))) = (inputs.first(), inputs.get(1)) else {
            return Err("inputs must be the residuals and the conditioner output (reals)".into());
        };
        if let ResidualMap::Spline { bins } = self.map
            && !(1..=MAX_SPLINE_BINS).contains(&bins)
        {
            return Err(format!(
                "a spline flow of {bins} bins (1 to {MAX_SPLINE_BINS})"
            ));
        }
        let m = self.map.outputs();
        let n = r.len();
        if p.len() != n * m {
            return Err(format!(
                "{n} residuals but a conditioner output of shape {:?} (want [{n}, {m}])",
                p.shape()
            ));
        }
        let logical = |a: &'a ArrayD<f64>| match a.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(a.iter().copied().collect()),
        };
        Ok((logical(r), logical(p), m))
    }
}

impl FusedOp for CorrectedLogLik {
    fn name(&self) -> &'static str {
        "correction_flow"
    }

    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let (r, p, m) = self.unpack(inputs)?;
        let lambda = self.penalty / r.len().max(1) as f64;
        let total: f64 = r
            .iter()
            .zip(p.chunks_exact(m))
            .map(|(&x, pi)| {
                self.f(x, pi, 0.0, None) - HALF_LN_2PI - lambda * self.kl(pi, 0.0, None)
            })
            .sum();
        Ok(Value::Real(ArrayD::from_elem(IxDyn(&[]), total)))
    }

    fn vjp(
        &self,
        inputs: &[&Value],
        _output: &Value,
        grad: &Value,
    ) -> Result<Vec<Option<Value>>, String> {
        let (r, p, m) = self.unpack(inputs)?;
        let Value::Real(g) = grad else {
            return Err("the gradient must be real".into());
        };
        let g = g.iter().next().copied().unwrap_or(0.0);
        let lambda = self.penalty / r.len().max(1) as f64;
        let mut dr = vec![0.0; r.len()];
        let mut dp = vec![0.0; p.len()];
        for ((x, pi), (dxi, dpi)) in r
            .iter()
            .zip(p.chunks_exact(m))
            .zip(dr.iter_mut().zip(dp.chunks_exact_mut(m)))
        {
            self.f(*x, pi, g, Some((dxi, dpi)));
            self.kl(pi, -lambda * g, Some(dpi));
        }
        let shape_r = inputs[0].shape().to_vec();
        let shape_p = inputs[1].shape().to_vec();
        let arr = |shape: Vec<usize>, v: Vec<f64>| {
            ArrayD::from_shape_vec(IxDyn(&shape), v)
                .map(Value::Real)
                .map_err(|e| e.to_string())
        };
        Ok(vec![Some(arr(shape_r, dr)?), Some(arr(shape_p, dp)?)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(op: &CorrectedLogLik, r: &[f64], p: &[f64]) -> f64 {
        let m = op.map.outputs();
        let rv =
            Value::Real(ArrayD::from_shape_vec(IxDyn(&[r.len()]), r.to_vec()).unwrap_or_default());
        let pv = Value::Real(
            ArrayD::from_shape_vec(IxDyn(&[r.len(), m]), p.to_vec()).unwrap_or_default(),
        );
        match op.forward(&[&rv, &pv]) {
            Ok(Value::Real(a)) => a.iter().next().copied().unwrap_or(f64::NAN),
            _ => f64::NAN,
        }
    }

    /// At zero parameters every flow is the identity: the value is Σ log N(r) and the penalty 0.
    #[test]
    fn zero_parameters_are_the_identity() {
        let r = [0.3, -1.7, 2.2];
        let plain: f64 = r.iter().map(|x| -0.5 * x * x - HALF_LN_2PI).sum();
        for map in [
            ResidualMap::AffineCoupling,
            ResidualMap::Planar { layers: 3 },
            ResidualMap::Spline { bins: 8 },
        ] {
            let op = CorrectedLogLik { map, penalty: 5.0 };
            let p = vec![0.0; 3 * map.outputs()];
            assert!((eval(&op, &r, &p) - plain).abs() < 1e-12, "{map:?}");
            assert!(
                op.kl(&p[..map.outputs()], 0.0, None).abs() < 1e-12,
                "{map:?}"
            );
        }
    }

    /// The planar KL by quadrature equals the affine closed form for a planar layer that is
    /// nearly affine (w → 0 is not reachable, so compare the affine quadrature instead).
    #[test]
    fn quadrature_reproduces_the_affine_kl() {
        let op = CorrectedLogLik {
            map: ResidualMap::AffineCoupling,
            penalty: 1.0,
        };
        for p in [[0.4, -0.3], [-1.1, 0.5], [2.0, 0.0]] {
            let q: f64 = quadrature()
                .iter()
                .map(|(x, w)| -w * (0.5 * x * x + op.f(*x, &p, 0.0, None)))
                .sum();
            let exact = affine_kl(&p, 0.0, None);
            assert!((q - exact).abs() < 1e-9, "{p:?}: {q} vs {exact}");
        }
    }

    /// The gain kind's log-likelihood of counts y at μ with log-gains h by its tape path, and
    /// its gradients in μ and in h.
    fn gain_path(y: &[f64], mu: &[f64], h: &[f64], penalty: f64) -> (f64, Vec<f64>, Vec<f64>) {
        let n = y.len();
        let arr = |v: &[f64], shape: &[usize]| {
            ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap_or_default()
        };
        let mut t = Tape::new();
        let mu_node = t.leaf_real(arr(mu, &[n]));
        let y_node = t.constant_real(arr(y, &[n]));
        let h_node = t.leaf_real(arr(h, &[n, 1]));
        let Ok(out) = poisson_gain_log_lik(&mut t, penalty, h_node, mu_node, y_node, n) else {
            return (f64::NAN, Vec::new(), Vec::new());
        };
        let value = t.real(out).map(|a| a.sum()).unwrap_or(f64::NAN);
        if t.backward(out).is_err() {
            return (value, Vec::new(), Vec::new());
        }
        let grad = |node| match t.grad_real(node) {
            Ok(g) => g.iter().copied().collect(),
            Err(_) => Vec::new(),
        };
        (value, grad(mu_node), grad(h_node))
    }

    /// The gain kind is the Poisson likelihood at the corrected count μ e^h: Σ log Poisson(y |
    /// μ*) − (W/n) Σ μ (e^h − 1 − h), written out (the KL(Poisson(μ) ‖ Poisson(μ*)) of each
    /// element also as the direct sum Σ_k P(k | μ) ln(P(k | μ)/P(k | μ*))); zero gains give the
    /// plain Poisson log-likelihood; the gradients in μ and in h match central differences.
    #[test]
    fn the_gain_kind_is_the_poisson_at_the_corrected_count() {
        let penalty = 3.0;
        let y: [f64; 5] = [0.0, 4.0, 37.0, 160.0, 1020.0];
        let mu: [f64; 5] = [0.3, 5.2, 30.0, 171.0, 950.0];
        let h: [f64; 5] = [0.4, -0.2, 0.25, -0.1, 0.05];
        let n = y.len() as f64;
        let ln_fact = |k: f64| statrs::function::gamma::ln_gamma(k + 1.0);
        let log_poisson = |k: f64, m: f64| k * m.ln() - m - ln_fact(k);
        let kl_direct = |m: f64, m_star: f64| {
            (0..4000)
                .map(f64::from)
                .map(|k| log_poisson(k, m).exp() * (log_poisson(k, m) - log_poisson(k, m_star)))
                .sum::<f64>()
        };
        let expected: f64 = (0..y.len())
            .map(|i| {
                let m_star = mu[i] * h[i].exp();
                let kl = mu[i] * (h[i].exp() - 1.0 - h[i]);
                assert!((kl - kl_direct(mu[i], m_star)).abs() < 1e-9 * kl.max(1e-3));
                log_poisson(y[i], m_star) - penalty / n * kl
            })
            .sum();
        let (got, grad_mu, grad_h) = gain_path(&y, &mu, &h, penalty);
        assert!(
            (got - expected).abs() < 1e-10 * expected.abs(),
            "{got} vs {expected}"
        );
        let plain: f64 = (0..y.len()).map(|i| log_poisson(y[i], mu[i])).sum();
        let at_identity = gain_path(&y, &mu, &[0.0; 5], penalty).0;
        assert!((at_identity - plain).abs() < 1e-10 * plain.abs());
        assert_eq!((grad_mu.len(), grad_h.len()), (5, 5));
        for i in 0..mu.len() {
            let fd = |f: &dyn Fn(f64) -> f64, step: f64| (f(step) - f(-step)) / (2.0 * step);
            let in_mu = |d: f64| {
                let mut m = mu;
                m[i] += d;
                gain_path(&y, &m, &h, penalty).0
            };
            let in_h = |d: f64| {
                let mut g = h;
                g[i] += d;
                gain_path(&y, &mu, &g, penalty).0
            };
            let (fd_mu, fd_h) = (fd(&in_mu, 1e-6 * mu[i]), fd(&in_h, 1e-6));
            assert!(
                (grad_mu[i] - fd_mu).abs() < 1e-6 * fd_mu.abs().max(1.0),
                "element {i}: {} vs {fd_mu}",
                grad_mu[i]
            );
            assert!(
                (grad_h[i] - fd_h).abs() < 1e-6 * fd_h.abs().max(1.0),
                "element {i}: {} vs {fd_h}",
                grad_h[i]
            );
        }
    }
}
