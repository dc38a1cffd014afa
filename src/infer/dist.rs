//! Probability distributions as tape expressions: elementwise log-densities with
//! tape-valued (hence differentiable) parameters, and reparameterized sampling.
//!
//! In: a `Family` and parameter nodes on a tape. Out: a node holding log p(x) elementwise
//! (multivariate families reduce their last axis), or a sample node whose value is a
//! differentiable function of the parameters where the family allows it (see `rsample`).
//! Support is the caller's guarantee (constraints map latents into it); outside it the
//! density is not defined and the result is unspecified (often NaN, caught by the SVI loop).

use super::lowrank::LowRankLogPdf;
use crate::tape::{NodeId, Tape, TapeError};
use ndarray::ArrayD;
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use std::f64::consts::{LN_2, PI};
use std::sync::Arc;

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// A distribution family; parameters are given in the order listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Family {
    /// (loc, scale)
    Normal,
    /// (loc, scale) of ln x
    LogNormal,
    /// (scale)
    HalfNormal,
    /// (scale)
    HalfCauchy,
    /// (degrees of freedom, loc, scale)
    StudentT,
    /// (shape α, rate β)
    Gamma,
    /// (rate)
    Exponential,
    /// (α, β)
    Beta,
    /// (low, high)
    Uniform,
    /// (loc, scale)
    Laplace,
    /// (loc vector, scale vector): independent normals summed over the last axis
    MvnDiag,
    /// (loc vector d, factor matrix d×r, diagonal scale d): covariance W Wᵀ + diag(D²)
    MvnLowRank,
    /// (rate) for counts x
    Poisson,
    /// (rate, readout variance): Normal(rate, sqrt(rate + variance)) for counts
    PoissonGaussian,
    /// (logits along the last axis) for an index x
    Categorical,
}

impl Family {
    /// Number of parameters.
    pub fn arity(self) -> usize {
        match self {
            Family::HalfNormal
            | Family::HalfCauchy
            | Family::Exponential
            | Family::Poisson
            | Family::Categorical => 1,
            Family::StudentT | Family::MvnLowRank => 3,
            _ => 2,
        }
    }

    /// Name as written in model files.
    pub fn name(self) -> &'static str {
        match self {
            Family::Normal => "Normal",
            Family::LogNormal => "LogNormal",
            Family::HalfNormal => "HalfNormal",
            Family::HalfCauchy => "HalfCauchy",
            Family::StudentT => "StudentT",
            Family::Gamma => "Gamma",
            Family::Exponential => "Exponential",
            Family::Beta => "Beta",
            Family::Uniform => "Uniform",
            Family::Laplace => "Laplace",
            Family::MvnDiag => "MultivariateNormalDiag",
            Family::MvnLowRank => "MultivariateNormalLowRank",
            Family::Poisson => "Poisson",
            Family::PoissonGaussian => "PoissonGaussian",
            Family::Categorical => "Categorical",
        }
    }
}

/// A distribution with parameters living on a tape.
#[derive(Clone, Debug)]
pub struct Dist {
    /// The family.
    pub family: Family,
    /// Parameter nodes, in the family's order.
    pub params: Vec<NodeId>,
}

/// A log-density or sampling error.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum DistError {
    /// Wrong number of parameters.
    #[error("{family} takes {expected} parameters, got {found}")]
    Arity {
        /// Family name.
        family: &'static str,
        /// Parameters the family takes.
        expected: usize,
        /// Parameters given.
        found: usize,
    },
    /// The family cannot do what was asked.
    #[error("{family}: {detail}")]
    Unsupported {
        /// Family name.
        family: &'static str,
        /// What is not supported.
        detail: String,
    },
    /// A tape operator failed.
    #[error(transparent)]
    Tape(#[from] TapeError),
}

impl Dist {
    /// A distribution, checking the parameter count.
    pub fn new(family: Family, params: Vec<NodeId>) -> Result<Self, DistError> {
        if params.len() != family.arity() {
            return Err(DistError::Arity {
                family: family.name(),
                expected: family.arity(),
                found: params.len(),
            });
        }
        Ok(Dist { family, params })
    }

    /// Elementwise log-density of `x` (multivariate families and Categorical reduce the last axis).
    pub fn log_prob(&self, t: &mut Tape, x: NodeId) -> Result<NodeId, DistError> {
        let p = &self.params;
        Ok(match self.family {
            Family::Normal => normal(t, x, p[0], p[1])?,
            Family::LogNormal => {
                let lx = t.log(x)?;
                let n = normal(t, lx, p[0], p[1])?;
                t.sub(n, lx)?
            }
            Family::HalfNormal => {
                let zero = t.scalar(0.0);
                let n = normal(t, x, zero, p[0])?;
                t.shift(n, LN_2)?
            }
            Family::HalfCauchy => half_cauchy(t, x, p[0])?,
            Family::StudentT => student_t(t, x, p[0], p[1], p[2])?,
            Family::Gamma => gamma(t, x, p[0], p[1])?,
            Family::Exponential => {
                let lr = t.log(p[0])?;
                let rx = t.mul(p[0], x)?;
                t.sub(lr, rx)?
            }
            Family::Beta => beta(t, x, p[0], p[1])?,
            Family::Uniform => uniform(t, x, p[0], p[1])?,
            Family::Laplace => laplace(t, x, p[0], p[1])?,
            Family::MvnDiag => {
                let n = normal(t, x, p[0], p[1])?;
                let last = t.shape(n).len().saturating_sub(1);
                t.sum_axis(n, last)?
            }
            Family::MvnLowRank => t.fused(Arc::new(LowRankLogPdf), &[x, p[0], p[1], p[2]])?,
            Family::Poisson => poisson(t, x, p[0])?,
            Family::PoissonGaussian => {
                let var = t.add(p[0], p[1])?;
                let sd = t.sqrt(var)?;
                normal(t, x, p[0], sd)?
            }
            Family::Categorical => categorical(t, x, p[0])?,
        })
    }
}

/// log N(x; μ, σ) as one fused node.
/// log N(x; μ, σ) as one node: a deferred elementwise node (fused with its inputs' elementwise
/// ops and with a sum of it) when large, the slice kernel `NormalLogPdf` when small (per-instance
/// tapes, where a fused tree's setup would cost more than it saves).
fn normal(t: &mut Tape, x: NodeId, loc: NodeId, scale: NodeId) -> Result<NodeId, TapeError> {
    let len = crate::tape::value::broadcast_shape(t.shape(x), t.shape(loc))
        .and_then(|s| crate::tape::value::broadcast_shape(&s, t.shape(scale)))
        .map_or(0, |s| s.iter().product::<usize>());
    if len >= crate::tape::graph::DEFER_MIN_LEN {
        return t.normal_log_pdf(x, loc, scale);
    }
    t.fused(
        Arc::new(super::normal_kernel::NormalLogPdf),
        &[x, loc, scale],
    )
}

/// -(x-μ)²/(2σ²) - ln σ - ln √(2π), from elementwise nodes (the reference for the fused kernel).
pub fn normal_unfused(
    t: &mut Tape,
    x: NodeId,
    loc: NodeId,
    scale: NodeId,
) -> Result<NodeId, TapeError> {
    let d = t.sub(x, loc)?;
    let z = t.div(d, scale)?;
    let z2 = t.square(z)?;
    let half = t.scale(z2, -0.5)?;
    let ls = t.log(scale)?;
    let lp = t.sub(half, ls)?;
    t.shift(lp, -LN_SQRT_2PI)
}

/// ln 2 - ln π - ln γ - ln(1 + (x/γ)²)
fn half_cauchy(t: &mut Tape, x: NodeId, scale: NodeId) -> Result<NodeId, TapeError> {
    let z = t.div(x, scale)?;
    let z2 = t.square(z)?;
    let l1 = t.log1p(z2)?;
    let ls = t.log(scale)?;
    let s = t.add(l1, ls)?;
    let n = t.neg(s)?;
    t.shift(n, LN_2 - PI.ln())
}

/// ln Γ((ν+1)/2) - ln Γ(ν/2) - ½ ln(νπ) - ln σ - (ν+1)/2 ln(1 + z²/ν)
fn student_t(
    t: &mut Tape,
    x: NodeId,
    nu: NodeId,
    loc: NodeId,
    scale: NodeId,
) -> Result<NodeId, TapeError> {
    let d = t.sub(x, loc)?;
    let z = t.div(d, scale)?;
    let z2 = t.square(z)?;
    let r = t.div(z2, nu)?;
    let l1 = t.log1p(r)?;
    let nu1 = t.shift(nu, 1.0)?;
    let half_nu1 = t.scale(nu1, 0.5)?;
    let tail = t.mul(half_nu1, l1)?;
    let g1 = t.lgamma(half_nu1)?;
    let half_nu = t.scale(nu, 0.5)?;
    let g2 = t.lgamma(half_nu)?;
    let lnu = t.log(nu)?;
    let half_lnu = t.scale(lnu, 0.5)?;
    let ls = t.log(scale)?;
    let a = t.sub(g1, g2)?;
    let b = t.sub(a, half_lnu)?;
    let c = t.sub(b, ls)?;
    let e = t.sub(c, tail)?;
    t.shift(e, -0.5 * PI.ln())
}

/// α ln β + (α-1) ln x - β x - ln Γ(α)
fn gamma(t: &mut Tape, x: NodeId, shape: NodeId, rate: NodeId) -> Result<NodeId, TapeError> {
    let lr = t.log(rate)?;
    let a = t.mul(shape, lr)?;
    let am1 = t.shift(shape, -1.0)?;
    let lx = t.log(x)?;
    let b = t.mul(am1, lx)?;
    let rx = t.mul(rate, x)?;
    let g = t.lgamma(shape)?;
    let s = t.add(a, b)?;
    let s = t.sub(s, rx)?;
    t.sub(s, g)
}

/// (α-1) ln x + (β-1) ln(1-x) - ln B(α, β)
fn beta(t: &mut Tape, x: NodeId, a: NodeId, b: NodeId) -> Result<NodeId, TapeError> {
    let lx = t.log(x)?;
    let nx = t.neg(x)?;
    let l1x = t.log1p(nx)?;
    let am1 = t.shift(a, -1.0)?;
    let bm1 = t.shift(b, -1.0)?;
    let p = t.mul(am1, lx)?;
    let q = t.mul(bm1, l1x)?;
    let ab = t.add(a, b)?;
    let (ga, gb, gab) = (t.lgamma(a)?, t.lgamma(b)?, t.lgamma(ab)?);
    let s = t.add(p, q)?;
    let s = t.sub(s, ga)?;
    let s = t.sub(s, gb)?;
    t.add(s, gab)
}

/// -ln(high - low), broadcast to x's shape.
fn uniform(t: &mut Tape, x: NodeId, low: NodeId, high: NodeId) -> Result<NodeId, TapeError> {
    let w = t.sub(high, low)?;
    let lw = t.log(w)?;
    let zero = t.scale(x, 0.0)?;
    t.sub(zero, lw)
}

/// -ln(2b) - |x-μ|/b
fn laplace(t: &mut Tape, x: NodeId, loc: NodeId, scale: NodeId) -> Result<NodeId, TapeError> {
    let d = t.sub(x, loc)?;
    let a = t.abs(d)?;
    let z = t.div(a, scale)?;
    let ls = t.log(scale)?;
    let s = t.add(z, ls)?;
    let n = t.neg(s)?;
    t.shift(n, -LN_2)
}

/// x ln λ - λ - ln Γ(x+1)
fn poisson(t: &mut Tape, x: NodeId, rate: NodeId) -> Result<NodeId, TapeError> {
    let lr = t.log(rate)?;
    let a = t.mul(x, lr)?;
    let b = t.sub(a, rate)?;
    let x1 = t.shift(x, 1.0)?;
    let g = t.lgamma(x1)?;
    t.sub(b, g)
}

/// logits[x] - logsumexp(logits) for a 0-d or 1-d index tensor x (the last axis of logits).
fn categorical(t: &mut Tape, x: NodeId, logits: NodeId) -> Result<NodeId, DistError> {
    let unsupported = |detail: &str| DistError::Unsupported {
        family: "Categorical",
        detail: detail.into(),
    };
    if t.shape(logits).len() != 1 {
        return Err(unsupported("logits must be a vector"));
    }
    let k = t.shape(logits)[0];
    let index: Vec<usize> = t.real(x)?.iter().map(|&v| v as usize).collect();
    if let Some(bad) = index.iter().find(|&&i| i >= k) {
        return Err(unsupported(&format!("category {bad} out of range 0..{k}")));
    }
    let picked = t.gather(logits, 0, &index)?;
    let lse = t.logsumexp(logits)?;
    Ok(t.sub(picked, lse)?)
}

/// ln Σ_k softmax(logits)_k exp(loglik_k): a discrete choice (e.g. an oxidation state)
/// marginalized by enumeration; `loglik` holds one log-likelihood per category (last axis).
pub fn enumerate_discrete(
    t: &mut Tape,
    logits: NodeId,
    loglik: NodeId,
) -> Result<NodeId, TapeError> {
    let lse = t.logsumexp(logits)?;
    let log_prior = t.sub(logits, lse)?;
    let joint = t.add(log_prior, loglik)?;
    let last = t.shape(joint).len().saturating_sub(1);
    t.logsumexp_axis(joint, last)
}

impl Dist {
    /// A draw of the given shape: a differentiable function of the parameters for Normal,
    /// LogNormal, HalfNormal, HalfCauchy, Exponential, Uniform, Laplace, MvnDiag and
    /// MvnLowRank; of loc and scale (not ν) for StudentT; of the rate (not α) for Gamma;
    /// a constant draw for Beta, Poisson, PoissonGaussian and Categorical.
    pub fn rsample(
        &self,
        t: &mut Tape,
        rng: &mut Xoshiro256PlusPlus,
        shape: &[usize],
    ) -> Result<NodeId, DistError> {
        use super::rng::{standard_normal, uniform_open};
        let p = &self.params;
        let noise = |t: &mut Tape, a: ArrayD<f64>| t.constant_real(a);
        Ok(match self.family {
            Family::Normal | Family::LogNormal | Family::MvnDiag => {
                let e = noise(t, standard_normal(rng, shape));
                let se = t.mul(p[1], e)?;
                let z = t.add(p[0], se)?;
                if self.family == Family::LogNormal {
                    t.exp(z)?
                } else {
                    z
                }
            }
            Family::HalfNormal => {
                let e = noise(t, standard_normal(rng, shape).mapv(f64::abs));
                t.mul(p[0], e)?
            }
            Family::HalfCauchy => {
                let c = uniform_open(rng, shape).mapv(|u| (0.5 * PI * u).tan());
                let e = noise(t, c);
                t.mul(p[0], e)?
            }
            Family::Exponential => {
                let e = noise(t, uniform_open(rng, shape).mapv(|u| -u.ln()));
                t.div(e, p[0])?
            }
            Family::Uniform => {
                let u = noise(t, uniform_open(rng, shape));
                let w = t.sub(p[1], p[0])?;
                let wu = t.mul(w, u)?;
                t.add(p[0], wu)?
            }
            Family::Laplace => {
                let l = uniform_open(rng, shape).mapv(|u| {
                    let v = u - 0.5;
                    -v.signum() * (1.0 - 2.0 * v.abs()).max(f64::MIN_POSITIVE).ln()
                });
                let e = noise(t, l);
                let se = t.mul(p[1], e)?;
                t.add(p[0], se)?
            }
            Family::StudentT => {
                let nu = t.real(p[0])?.iter().copied().next().unwrap_or(f64::NAN);
                let draws = student_t_draws(rng, nu, shape)?;
                let e = noise(t, draws);
                let se = t.mul(p[2], e)?;
                t.add(p[1], se)?
            }
            Family::Gamma => {
                let alpha = t.real(p[0])?.iter().copied().next().unwrap_or(f64::NAN);
                let g = gamma_draws(rng, alpha, shape)?;
                let e = noise(t, g);
                t.div(e, p[1])?
            }
            Family::MvnLowRank => self.rsample_low_rank(t, rng)?,
            family => {
                return Err(DistError::Unsupported {
                    family: family.name(),
                    detail: "no sampler (observation-only family)".into(),
                });
            }
        })
    }

    fn rsample_low_rank(
        &self,
        t: &mut Tape,
        rng: &mut Xoshiro256PlusPlus,
    ) -> Result<NodeId, DistError> {
        use super::rng::standard_normal;
        let p = &self.params;
        let rank = t.shape(p[1]).get(1).copied().unwrap_or(0);
        let d = t.shape(p[0]).to_vec();
        let e1 = t.constant_real(standard_normal(rng, &[rank]));
        let e2 = t.constant_real(standard_normal(rng, &d));
        let we = t.matmul(p[1], e1)?;
        let de = t.mul(p[2], e2)?;
        let s = t.add(we, de)?;
        Ok(t.add(p[0], s)?)
    }
}

fn student_t_draws(
    rng: &mut Xoshiro256PlusPlus,
    nu: f64,
    shape: &[usize],
) -> Result<ArrayD<f64>, DistError> {
    let d = rand_distr::StudentT::new(nu).map_err(|e| DistError::Unsupported {
        family: "StudentT",
        detail: format!("degrees of freedom {nu}: {e}"),
    })?;
    Ok(ArrayD::from_shape_simple_fn(ndarray::IxDyn(shape), || {
        rng.sample(d)
    }))
}

fn gamma_draws(
    rng: &mut Xoshiro256PlusPlus,
    alpha: f64,
    shape: &[usize],
) -> Result<ArrayD<f64>, DistError> {
    let d = rand_distr::Gamma::new(alpha, 1.0).map_err(|e| DistError::Unsupported {
        family: "Gamma",
        detail: format!("shape {alpha}: {e}"),
    })?;
    Ok(ArrayD::from_shape_simple_fn(ndarray::IxDyn(shape), || {
        rng.sample(d)
    }))
}

/// log p(x) for plain numbers: one tape per call (for tests, summaries and checks).
pub fn log_prob_f64(family: Family, params: &[f64], x: &[f64]) -> Result<f64, DistError> {
    let mut t = Tape::new();
    let to_node = |t: &mut Tape, v: &[f64]| {
        if v.len() == 1 {
            t.scalar(v[0])
        } else {
            t.constant_real(
                ArrayD::from_shape_vec(ndarray::IxDyn(&[v.len()]), v.to_vec()).unwrap_or_default(),
            )
        }
    };
    let ids = params.iter().map(|&p| t.scalar(p)).collect();
    let d = Dist::new(family, ids)?;
    let xn = to_node(&mut t, x);
    let lp = d.log_prob(&mut t, xn)?;
    let s = t.sum(lp)?;
    Ok(t.scalar_value(s)?)
}
