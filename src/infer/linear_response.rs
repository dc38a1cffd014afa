//! Linear-response covariances of the dataset-level latents.
//!
//! In: a model and a fitted `SviState` whose latents have Gaussian guides. Out: the
//! covariance, in unconstrained space, of chosen plate-less latents with every other
//! Gaussian-guided latent (per image, per shoebox, ...) integrated out, beside the mean-field
//! sds; and posterior draws from it.
//!
//! A mean-field guide matches each latent's conditional curvature, not its marginal: for a
//! Gaussian posterior of precision P it reports the sd 1/sqrt(P_kk), while the marginal sd is
//! sqrt((P⁻¹)_kk), larger wherever latents are correlated (by 1/sqrt(1 − ρ²) for a pair of
//! correlation ρ). Linear response (Giordano, Broderick & Jordan 2015, "Linear response methods
//! for accurate covariance estimates from mean field variational Bayes") recovers the
//! marginals from the expected curvature of the log joint in the guide's locations:
//! Σ = (−E_q[∇²_m log p])⁻¹, with the guide's scales held, over all the data (no mini-batches).
//! The expectation is what keeps this positive definite for a hierarchical scale and its
//! draws (a funnel, whose log density is not concave at any one point): E_q adds the guide's
//! variance of the draws to the scale's curvature.
//!
//! Coordinates are scaled by the guide's sds, x = (m − m̂)/s, so the Hessian A = −S E_q[∇² log p] S
//! has a unit diagonal at the mean-field optimum of a Gaussian posterior. Column k of A⁻¹ comes
//! from conjugate gradients, each Hessian-vector product a central difference of two
//! gradients averaged over `CURVATURE_DRAWS` fixed guide draws (common random numbers);
//! Σ_jk = s_j (A⁻¹)_jk s_k. Guarantees: deterministic (fixed random streams); a Hessian that
//! is not positive definite along a search direction is an error (the fit is not at a mode),
//! never a silent answer.
//! Latents with `param`/`map` guides are held at their values (conditioned on).

use super::engine::{Evaluator, ParticleSpec};
use super::error::InferError;
use super::guide::{ParamLayout, SiteBlock, gaussian_moments};
use super::model::{GuideKind, Model, Site};
use super::posterior::SiteDraws;
use super::reduce::SingleProcess;
use super::rng::{StreamKey, standard_normal};
use super::svi::SviState;

/// Guide draws the expected curvature E_q[∇² log p] is averaged over (the same draws in
/// every Hessian-vector product, so conjugate gradients see one fixed symmetric matrix).
pub const CURVATURE_DRAWS: usize = 8;
/// Central-difference step of the Hessian-vector products, in guide sds.
pub const DIFFERENCE_STEP: f64 = 1e-3;
/// Conjugate gradients stop when the residual's norm falls below this (the right-hand side
/// has norm 1).
pub const CG_TOLERANCE: f64 = 1e-6;
/// ... or after this many iterations (an error: the curvature is too ill-conditioned).
pub const CG_MAX_ITERATIONS: usize = 1000;
/// At most this many target elements (one conjugate-gradient solve each).
pub const MAX_TARGET_ELEMENTS: usize = 64;
/// Random-stream steps of the curvature's draws, counted down from here (posterior draws use
/// u64::MAX, the state probabilities MAX − 1, the correction reports MAX − 2, the
/// convergence check MAX − 1000 down).
const CURVATURE_STREAM: u64 = u64::MAX - 100;
/// ... and of the draws from the linear-response covariance.
const DRAW_STREAM: u64 = u64::MAX - 4;

/// One element of a target latent.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ResponseElement {
    /// Site name.
    pub site: String,
    /// Element within the site.
    pub element: usize,
    /// The guide's location (unconstrained).
    pub location: f64,
    /// The mean-field guide's sd (unconstrained).
    pub mean_field_sd: f64,
    /// The linear-response sd (unconstrained).
    pub linear_response_sd: f64,
    /// The Hessian's diagonal entry in guide-sd units: 1 at a mean-field optimum of a Gaussian
    /// posterior (much above or below 1: the guide's sd does not match the local curvature).
    pub curvature: f64,
    /// Conjugate-gradient iterations of this element's column.
    pub iterations: usize,
}

/// The linear-response covariance of the target elements.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LinearResponse {
    /// The target elements, in site order.
    pub elements: Vec<ResponseElement>,
    /// Their covariance in unconstrained space (row-major, `elements.len()` squared).
    pub covariance: Vec<Vec<f64>>,
    /// Coordinates of the Hessian (every Gaussian-guided latent element of every instance).
    pub coordinates: usize,
    /// Gradient evaluations spent.
    pub gradient_evaluations: usize,
}

/// A location entry of the flat parameter vector and its guide sd.
#[derive(Clone, Copy, Debug)]
struct Coordinate {
    param: usize,
    sd: f64,
}

/// The targets named in `names` (None: every plate-less latent with a Gaussian guide), as
/// (site index, block).
fn targets<'a>(
    model: &Model,
    layout: &'a ParamLayout,
    names: Option<&[String]>,
) -> Result<Vec<(usize, &'a SiteBlock)>, InferError> {
    let fail = |m: String| InferError::LinearResponse(m);
    let gaussian = |k: GuideKind| {
        matches!(
            k,
            GuideKind::MeanField | GuideKind::LowRank(_) | GuideKind::FullRank
        )
    };
    let pick = |i: usize| match (&model.sites[i], &layout.blocks[i]) {
        (Site::Latent(l), Some(b)) if l.prior.is_some() => Some((l, b)),
        _ => None,
    };
    let out: Vec<(usize, &SiteBlock)> = match names {
        None => (0..model.sites.len())
            .filter_map(|i| pick(i).map(|(l, b)| (i, l, b)))
            .filter(|(_, l, b)| l.plate.is_none() && gaussian(b.kind) && l.encoder.is_none())
            .map(|(i, _, b)| (i, b))
            .collect(),
        Some(names) => names
            .iter()
            .map(|n| {
                let i = model
                    .site_index(n)
                    .ok_or_else(|| fail(format!("no site `{n}` in the model")))?;
                let (l, b) =
                    pick(i).ok_or_else(|| fail(format!("`{n}` is not a latent with a prior")))?;
                if l.plate.is_some() {
                    return Err(fail(format!(
                        "`{n}` lives in a plate; linear response is for dataset-level latents"
                    )));
                }
                if !gaussian(b.kind) || l.encoder.is_some() {
                    return Err(fail(format!(
                        "`{n}` has a {:?} guide; linear response needs a Gaussian one",
                        b.kind
                    )));
                }
                Ok((i, b))
            })
            .collect::<Result<_, _>>()?,
    };
    let elements: usize = out.iter().map(|(_, b)| b.event).sum();
    if out.is_empty() {
        return Err(fail("no dataset-level latent with a Gaussian guide".into()));
    }
    if elements > MAX_TARGET_ELEMENTS {
        return Err(fail(format!(
            "{elements} target elements (at most {MAX_TARGET_ELEMENTS}, one solve each): name \
             fewer sites"
        )));
    }
    Ok(out)
}

/// Checks a request before the fit: the named sites (None: every dataset-level latent with a
/// Gaussian guide) exist, are plate-less with Gaussian guides, and are at most
/// `MAX_TARGET_ELEMENTS` elements.
pub fn check_targets(model: &Model, names: Option<&[String]>) -> Result<(), InferError> {
    targets(model, &ParamLayout::new(model), names).map(|_| ())
}

/// Every Gaussian-guided latent element's location and guide sd; an error for guides the
/// curvature cannot be taken through (encoders and flows draw from networks, not locations).
fn coordinates(model: &Model, state: &SviState) -> Result<Vec<Coordinate>, InferError> {
    let mut out = Vec::new();
    for (site, block) in model.sites.iter().zip(&state.layout.blocks) {
        let (Site::Latent(l), Some(b)) = (site, block) else {
            continue;
        };
        if l.prior.is_none() || b.kind == GuideKind::Point {
            continue;
        }
        if l.encoder.is_some() || matches!(b.kind, GuideKind::Encoder | GuideKind::Flow) {
            return Err(InferError::LinearResponse(format!(
                "latent `{}` has an amortized guide; linear response needs locations",
                l.name
            )));
        }
        if b.kind == GuideKind::PartialCentring {
            return Err(InferError::LinearResponse(format!(
                "latent `{}` has a partially centred guide, whose locations are not the \
                 latent's; linear response needs mean-field, low-rank or full-rank guides",
                l.name
            )));
        }
        for inst in 0..b.instances {
            let off = b.instance_offset(inst);
            let (_, cov) = gaussian_moments(b, &state.params[off..][..b.per_instance]);
            out.extend((0..b.event).map(|k| Coordinate {
                param: off + k,
                sd: cov[k][k].sqrt(),
            }));
        }
    }
    Ok(out)
}

/// The expected Hessian of −log p in guide-sd units, applied by differences of gradients.
struct Curvature<'a> {
    /// The model without mini-batches.
    model: Model,
    layout: &'a ParamLayout,
    base: Vec<f64>,
    coords: Vec<Coordinate>,
    seed: u64,
    evaluations: usize,
}

impl Curvature<'_> {
    /// S E_q[∇ log p] (over the fixed draws) with the locations moved by S x. The guide's
    /// log q does not depend on its location under the reparameterization, so the ELBO's
    /// location gradient is ∇ log p at the draw.
    fn scaled_gradient(&mut self, x: &[f64]) -> Result<Vec<f64>, InferError> {
        let mut params = self.base.clone();
        for (c, &xi) in self.coords.iter().zip(x) {
            params[c.param] += c.sd * xi;
        }
        let mut out = vec![0.0; self.coords.len()];
        for k in 0..CURVATURE_DRAWS as u64 {
            self.evaluations += 1;
            let particle = Evaluator {
                model: &self.model,
                layout: self.layout,
                params: &params,
                spec: ParticleSpec {
                    seed: self.seed,
                    step: CURVATURE_STREAM - k,
                    particle: 0,
                    analytic_kl: false,
                },
                proposal: None,
            }
            .particle(&SingleProcess)?;
            for (o, c) in out.iter_mut().zip(&self.coords) {
                *o += particle.grad[c.param] * c.sd / CURVATURE_DRAWS as f64;
            }
        }
        Ok(out)
    }

    /// A v by a central difference.
    fn apply(&mut self, v: &[f64]) -> Result<Vec<f64>, InferError> {
        let norm = v.iter().fold(0.0_f64, |m, x| m.max(x.abs())).max(1e-300);
        let h = DIFFERENCE_STEP / norm;
        let plus: Vec<f64> = v.iter().map(|x| h * x).collect();
        let minus: Vec<f64> = v.iter().map(|x| -h * x).collect();
        let gp = self.scaled_gradient(&plus)?;
        let gm = self.scaled_gradient(&minus)?;
        Ok(gp
            .iter()
            .zip(&gm)
            .map(|(p, m)| -(p - m) / (2.0 * h))
            .collect())
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Solves A x = e_k by conjugate gradients: (x, iterations, A_kk).
fn solve_column(
    curv: &mut Curvature,
    k: usize,
    name: &str,
) -> Result<(Vec<f64>, usize, f64), InferError> {
    let n = curv.coords.len();
    let mut x = vec![0.0; n];
    let mut r = vec![0.0; n];
    r[k] = 1.0;
    let mut p = r.clone();
    let mut rr = 1.0;
    let mut diagonal = f64::NAN;
    for it in 1..=CG_MAX_ITERATIONS {
        let ap = curv.apply(&p)?;
        let pap = dot(&p, &ap);
        if it == 1 {
            diagonal = ap[k];
        }
        if pap.is_nan() || pap <= 0.0 {
            return Err(InferError::LinearResponse(format!(
                "the curvature of −log p is not positive along conjugate-gradient direction \
                 {it} of `{name}` (pᵀAp = {pap:.3e}): the fit is not at a mode"
            )));
        }
        let alpha = rr / pap;
        x.iter_mut().zip(&p).for_each(|(xi, pi)| *xi += alpha * pi);
        r.iter_mut().zip(&ap).for_each(|(ri, ai)| *ri -= alpha * ai);
        let rr_new = dot(&r, &r);
        if rr_new.sqrt() < CG_TOLERANCE {
            return Ok((x, it, diagonal));
        }
        let beta = rr_new / rr;
        p.iter_mut()
            .zip(&r)
            .for_each(|(pi, ri)| *pi = ri + beta * *pi);
        rr = rr_new;
    }
    Err(InferError::LinearResponse(format!(
        "conjugate gradients for `{name}` did not converge in {CG_MAX_ITERATIONS} iterations"
    )))
}

/// The linear-response covariance of the latents named in `names` (None: every dataset-level
/// latent with a Gaussian guide), at the fitted state.
pub fn linear_response(
    model: &Model,
    state: &SviState,
    names: Option<&[String]>,
) -> Result<LinearResponse, InferError> {
    let targets = targets(model, &state.layout, names)?;
    let coords = coordinates(model, state)?;
    let mut full = model.clone();
    full.plates.iter_mut().for_each(|p| p.subsample = None);
    let mut curv = Curvature {
        model: full,
        layout: &state.layout,
        base: state.params.clone(),
        coords,
        seed: state.seed,
        evaluations: 0,
    };
    let mut elements = Vec::new();
    let mut at = Vec::new();
    for &(site, b) in &targets {
        for k in 0..b.event {
            let param = b.offset + k;
            let pos = curv
                .coords
                .iter()
                .position(|c| c.param == param)
                .ok_or_else(|| InferError::LinearResponse("target without coordinate".into()))?;
            at.push(pos);
            elements.push(ResponseElement {
                site: model.sites[site].name().to_string(),
                element: k,
                location: state.params[param],
                mean_field_sd: curv.coords[pos].sd,
                linear_response_sd: f64::NAN,
                curvature: f64::NAN,
                iterations: 0,
            });
        }
    }
    let m = at.len();
    let mut covariance = vec![vec![0.0; m]; m];
    for (j, &k) in at.iter().enumerate() {
        let name = format!("{}[{}]", elements[j].site, elements[j].element);
        let (x, iterations, diagonal) = solve_column(&mut curv, k, &name)?;
        elements[j].iterations = iterations;
        elements[j].curvature = diagonal;
        for (i, &ki) in at.iter().enumerate() {
            covariance[i][j] = curv.coords[ki].sd * x[ki] * curv.coords[k].sd;
        }
    }
    let covariance: Vec<Vec<f64>> = (0..m)
        .map(|i| {
            (0..m)
                .map(|j| 0.5 * (covariance[i][j] + covariance[j][i]))
                .collect()
        })
        .collect();
    for (i, e) in elements.iter_mut().enumerate() {
        e.linear_response_sd = covariance[i][i].max(0.0).sqrt();
    }
    Ok(LinearResponse {
        elements,
        covariance,
        coordinates: curv.coords.len(),
        gradient_evaluations: curv.evaluations,
    })
}

/// Replaces the guide's draws of the target sites in `draws` (all of one posterior sample,
/// `n` draws each) by joint draws from N(location, covariance), through each site's
/// constraint. An error if the covariance is not positive definite.
pub fn resample(
    lr: &LinearResponse,
    model: &Model,
    seed: u64,
    draws: &mut [SiteDraws],
) -> Result<(), InferError> {
    let m = lr.elements.len();
    let cov = ndarray::Array2::from_shape_fn((m, m), |(i, j)| lr.covariance[i][j]);
    let l = super::lowrank::cholesky(&cov).map_err(|_| {
        InferError::LinearResponse("the linear-response covariance is not positive definite".into())
    })?;
    for s in draws.iter_mut() {
        let Some(i) = model.site_index(&s.name) else {
            continue;
        };
        let Site::Latent(latent) = &model.sites[i] else {
            continue;
        };
        for (d, per_draw) in s.values.iter_mut().enumerate() {
            let key = StreamKey {
                seed,
                step: DRAW_STREAM,
                particle: d as u64,
                site: 0,
                instance: 0,
            };
            let eps = standard_normal(&mut key.rng(), &[m]);
            for (j, e) in lr.elements.iter().enumerate() {
                if e.site != s.name {
                    continue;
                }
                let u = e.location + (0..=j).map(|k| l[[j, k]] * eps[k]).sum::<f64>();
                per_draw[e.element] = latent.constraint.apply(u);
            }
        }
    }
    Ok(())
}
