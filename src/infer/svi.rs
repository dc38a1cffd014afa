//! The SVI loop: state in, state out (NumPyro style), with checkpoints and stopping rules.
//!
//! In: a validated model, an `SviConfig`, optionally a resumed `SviState`. Out: the final
//! state; per-step reports through a callback. Guarantees: the state (params, Adam moments,
//! step = the random-stream counter, ELBO history) is one serde struct; a checkpoint is
//! written to a temporary file and renamed, so a crash or a non-finite value never leaves a
//! partial file, and the last good checkpoint stays in place. Resuming gives, to the bit, the
//! same trajectory as an uninterrupted run.

use super::engine::{Evaluator, Objective, Particle, ParticleSpec};
use super::error::InferError;
use super::guide::ParamLayout;
use super::model::Model;
use super::optim::Adam;
use super::reduce::GradientReduce;
use super::scan::{ProfileScan, ScanRound};
use super::search::{ModeSearch, SearchRound};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Settings of a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SviConfig {
    /// Stop after this many steps in total (counting resumed ones).
    pub steps: u64,
    /// Seed of all random streams.
    pub seed: u64,
    /// Particles per step.
    pub particles: usize,
    /// ELBO or importance-weighted bound.
    pub objective: Objective,
    /// Closed-form KL where available (mean-field guide, Normal prior, real support).
    pub analytic_kl: bool,
    /// Optimizer.
    pub adam: Adam,
    /// Stop when the relative change of the windowed mean ELBO falls below this.
    pub rel_tol: Option<f64>,
    /// Window (steps) of the stopping rule.
    pub window: usize,
    /// Write a checkpoint every this many steps.
    pub checkpoint_every: Option<u64>,
    /// Where checkpoints go.
    pub checkpoint_path: Option<PathBuf>,
    /// A mode search of a per-instance latent at chosen steps (`super::search`).
    pub search: Option<ModeSearch>,
    /// A profile scan of a dataset-level latent at chosen steps (`super::scan`).
    #[serde(default)]
    pub scan: Option<ProfileScan>,
    /// Sites whose guide parameters are held at their start for the first steps.
    #[serde(default)]
    pub hold: Option<Hold>,
}

/// Guide parameters held at their start for the first steps of a fit: e.g. a dataset-level
/// latent that the early gradients, taken while the per-image latents are still far from the
/// data, would drive into a far mode (stage-wise fitting: the locals first, then the globals).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hold {
    /// Indices of the held latent sites (every instance of each).
    pub sites: Vec<usize>,
    /// Steps before this one hold them; from it on they move.
    pub until_step: u64,
}

/// The mask of the guide parameters of `sites` (every instance of each) in the layout.
pub fn site_mask(layout: &ParamLayout, sites: &[usize]) -> Vec<bool> {
    let mut mask = vec![false; layout.total];
    for b in sites.iter().filter_map(|&s| layout.blocks[s].as_ref()) {
        mask[b.offset..b.offset + b.len()].fill(true);
    }
    mask
}

impl Default for SviConfig {
    fn default() -> Self {
        SviConfig {
            steps: 1000,
            seed: 0,
            particles: 1,
            objective: Objective::Elbo,
            analytic_kl: false,
            adam: Adam::default(),
            rel_tol: None,
            window: 100,
            checkpoint_every: None,
            checkpoint_path: None,
            search: None,
            scan: None,
            hold: None,
        }
    }
}

/// Everything needed to continue a run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SviState {
    /// Steps taken (also the counter of the random streams).
    pub step: u64,
    /// Seed of the random streams.
    pub seed: u64,
    /// Guide parameters.
    pub params: Vec<f64>,
    /// Adam first moments.
    pub m: Vec<f64>,
    /// Adam second moments.
    pub v: Vec<f64>,
    /// Objective per step.
    pub elbo: Vec<f64>,
    /// Parameter layout (checked on resume).
    pub layout: ParamLayout,
    /// The mode searches run so far.
    #[serde(default)]
    pub searches: Vec<SearchRound>,
    /// The profile scans run so far.
    #[serde(default)]
    pub scans: Vec<ScanRound>,
}

impl SviState {
    /// A fresh state at the guide's initial parameters.
    pub fn new(model: &Model, seed: u64) -> Self {
        let layout = ParamLayout::new(model);
        let params = layout.init(model);
        let n = params.len();
        SviState {
            step: 0,
            seed,
            params,
            m: vec![0.0; n],
            v: vec![0.0; n],
            elbo: Vec::new(),
            layout,
            searches: Vec::new(),
            scans: Vec::new(),
        }
    }

    /// Writes the state atomically (temporary file in the same directory, then rename).
    pub fn save(&self, path: &Path) -> Result<(), InferError> {
        let err = |detail: String| InferError::Checkpoint {
            path: path.display().to_string(),
            detail,
        };
        let bytes = rmp_serde::to_vec_named(self).map_err(|e| err(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| err(format!("writing {}: {e}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(|e| err(format!("renaming {}: {e}", tmp.display())))
    }

    /// Reads a state written by `save`.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        let err = |detail: String| InferError::Checkpoint {
            path: path.display().to_string(),
            detail,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        rmp_serde::from_slice(&bytes).map_err(|e| err(format!("not a spread checkpoint: {e}")))
    }
}

/// What the loop reports after each step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Steps done.
    pub step: u64,
    /// Objective estimate of this step.
    pub elbo: f64,
}

/// The objective estimate of the current step (its random streams are fixed by seed and step)
/// and the gradient of the loss (= -objective) with respect to the parameters, with the mask of
/// parameters that took part.
pub fn objective_and_gradient(
    model: &Model,
    state: &SviState,
    cfg: &SviConfig,
    reducer: &dyn GradientReduce,
) -> Result<(f64, Vec<f64>, Vec<bool>), InferError> {
    // Particles are independent (own random streams) and collected in index order, so running
    // them in parallel leaves the result bit-identical for any thread count.
    let particle = |k: u64| {
        let spec = ParticleSpec {
            seed: state.seed,
            step: state.step,
            particle: k,
            analytic_kl: cfg.analytic_kl,
        };
        Evaluator {
            model,
            layout: &state.layout,
            params: &state.params,
            spec,
            proposal: None,
        }
        .particle(reducer)
    };
    let mut particles = match cfg.particles.max(1) {
        // One particle: no region of its own (its plates still run theirs).
        1 => vec![particle(0)?],
        k => {
            super::warm::release();
            (0..k as u64)
                .into_par_iter()
                .map(particle)
                .collect::<Result<Vec<Particle>, InferError>>()?
        }
    };
    let (value, weights) = combine(&particles, cfg.objective);
    if let ([p], [w]) = (particles.as_mut_slice(), weights.as_slice()) {
        // One particle: its gradient, negated in place (0 - w g, as below, to the bit).
        p.grad.iter_mut().for_each(|g| *g = 0.0 - w * *g);
        return Ok((
            value,
            std::mem::take(&mut p.grad),
            std::mem::take(&mut p.touched),
        ));
    }
    let n = state.params.len();
    let mut loss_grad = vec![0.0; n];
    let mut touched = vec![false; n];
    for (p, w) in particles.iter().zip(&weights) {
        loss_grad
            .iter_mut()
            .zip(&p.grad)
            .for_each(|(a, g)| *a -= w * g);
        touched
            .iter_mut()
            .zip(&p.touched)
            .for_each(|(a, t)| *a |= t);
    }
    Ok((value, loss_grad, touched))
}

/// Runs one step: K particles, combined gradient, Adam update with the per-parameter
/// `step_scale` (`ParamLayout::step_scales`, computed once per run). Returns the objective
/// estimate.
pub fn step(
    model: &Model,
    state: &mut SviState,
    cfg: &SviConfig,
    reducer: &dyn GradientReduce,
    step_scale: &[f64],
) -> Result<f64, InferError> {
    step_masked(model, state, cfg, reducer, step_scale, None)
}

/// `step` with the parameters marked in `frozen` held fixed (their moments too).
pub fn step_masked(
    model: &Model,
    state: &mut SviState,
    cfg: &SviConfig,
    reducer: &dyn GradientReduce,
    step_scale: &[f64],
    frozen: Option<&[bool]>,
) -> Result<f64, InferError> {
    let (value, mut loss_grad, mut touched) = objective_and_gradient(model, state, cfg, reducer)?;
    if let Some(frozen) = frozen {
        for ((g, t), &f) in loss_grad.iter_mut().zip(&mut touched).zip(frozen) {
            if f {
                *g = 0.0;
                *t = false;
            }
        }
    }
    cfg.adam.update(
        &mut state.params,
        &mut state.m,
        &mut state.v,
        super::optim::Gradient {
            grad: &loss_grad,
            touched: &touched,
            step_scale,
        },
        state.step,
    );
    state.step += 1;
    state.elbo.push(value);
    Ok(value)
}

/// The objective and each particle's weight in the gradient.
fn combine(particles: &[Particle], objective: Objective) -> (f64, Vec<f64>) {
    let k = particles.len() as f64;
    let lw: Vec<f64> = particles.iter().map(|p| p.log_weight).collect();
    match objective {
        Objective::Elbo => (lw.iter().sum::<f64>() / k, vec![1.0 / k; particles.len()]),
        Objective::Iwae => {
            let lse = crate::tape::reduce::lse(lw.iter().copied());
            (lse - k.ln(), lw.iter().map(|l| (l - lse).exp()).collect())
        }
    }
}

/// Runs until `cfg.steps` or the stopping rule; checkpoints as configured.
pub fn run(
    model: &Model,
    cfg: &SviConfig,
    mut state: SviState,
    reducer: &dyn GradientReduce,
    on_step: &mut dyn FnMut(StepReport),
) -> Result<SviState, InferError> {
    if state.layout != ParamLayout::new(model) {
        return Err(InferError::StateMismatch(
            "parameter layout differs from the model's".into(),
        ));
    }
    let step_scale = state.layout.step_scales(model);
    let held = cfg
        .hold
        .as_ref()
        .map(|h| (h.until_step, site_mask(&state.layout, &h.sites)));
    while state.step < cfg.steps {
        if let Some(s) = &cfg.scan
            && s.at_steps.contains(&state.step)
            && !state.scans.iter().any(|r| r.step == state.step)
        {
            let refiner = super::scan::Refiner {
                cfg,
                reducer,
                step_scale: &step_scale,
            };
            let round = super::scan::scan(model, &mut state, s, true, Some(refiner))?;
            state.scans.push(round);
        }
        if let Some(s) = &cfg.search
            && s.at_steps.contains(&state.step)
            && !state
                .searches
                .iter()
                .any(|r| r.step == state.step && r.targeted.is_none())
        {
            let round = super::search::search(model, &mut state, s, cfg, reducer, &step_scale)?;
            state.searches.push(round);
        }
        if let Some(s) = &cfg.search
            && let Some(m) = &s.misfit
            && m.at_step == state.step
            && !state
                .searches
                .iter()
                .any(|r| r.step == state.step && r.targeted.is_some())
        {
            let round =
                super::search::search_misfits(model, &mut state, s, cfg, reducer, &step_scale)?;
            state.searches.push(round);
        }
        let frozen = match &held {
            Some((until, mask)) if state.step < *until => Some(mask.as_slice()),
            _ => None,
        };
        let elbo = step_masked(model, &mut state, cfg, reducer, &step_scale, frozen)?;
        on_step(StepReport {
            step: state.step,
            elbo,
        });
        if let (Some(every), Some(path)) = (cfg.checkpoint_every, &cfg.checkpoint_path)
            && state.step.is_multiple_of(every.max(1))
        {
            state.save(path)?;
        }
        if converged(&state.elbo, cfg) {
            break;
        }
    }
    Ok(state)
}

/// Relative change of the mean objective between the last two windows below `rel_tol`.
fn converged(elbo: &[f64], cfg: &SviConfig) -> bool {
    let (Some(tol), w) = (cfg.rel_tol, cfg.window.max(1)) else {
        return false;
    };
    if elbo.len() < 2 * w {
        return false;
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (prev, last) = (
        mean(&elbo[elbo.len() - 2 * w..elbo.len() - w]),
        mean(&elbo[elbo.len() - w..]),
    );
    ((last - prev) / prev.abs().max(1e-12)).abs() < tol
}
