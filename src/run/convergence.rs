//! Has the fit stopped where the ELBO is flat? A check of the fitted guide's locations.
//!
//! In: the model and the final SVI state. Out: one `Drift` per latent site whose guide
//! location the ELBO's gradient still pulls away, and the notes `spreadc run` prints for them.
//!
//! For a Gaussian guide of a near-Gaussian posterior, d ELBO / d loc = (μ − loc) / σ², where μ
//! is the optimum and σ the posterior sd, so g·s (g the gradient, s the guide's sd) estimates how
//! many sds the location still lies from the optimum. The gradient is averaged over `draws`
//! independent draws (each with its own mini-batch), which also gives its standard error; a
//! location is flagged when it lies more than `MIN_DISTANCE_SD` sds from the optimum and that
//! distance is more than `MIN_T` standard errors from zero. The ELBO trend misses this when
//! the learning rate has decayed: a dataset-level latent can stay several sds off while the
//! ELBO, dominated by the settled per-image terms, no longer moves.
//!
//! Dataset-level (plate-less) latents are checked with gradients over all the data, not
//! mini-batches: a mini-batch of 32 of 540 images scales each image's pull by 17, and its
//! noise buried the estimate (a standard error of several sds), so only the guide's own draws
//! are left in theirs. Every element of those latents is reported (`Distance`, in
//! summary.json), flagged or not: the distance of the edge from its optimum, with its standard
//! error, tells a fit that stopped short from a posterior that is merely narrow.
//!
//! For those elements the scale is checked too (mean-field guides): with g = s · d ELBO / d s,
//! the ELBO of a Gaussian guide along its sd is ln s − s² C / 2 + const (C the expected
//! curvature of the log joint), so g = 1 − s² C and the sd that maximizes it is
//! s / sqrt(1 − g). `Distance::sd_optimum_ratio` reports that ratio: an sd the optimizer left
//! narrower than its own optimum (a learning rate decayed before the sd grew from its start)
//! shows as a ratio above 1, with its standard error from the same draws.

use super::RunError;
use crate::infer::engine::{Evaluator, ParticleSpec};
use crate::infer::error::InferError;
use crate::infer::guide::{SiteBlock, gaussian_moments};
use crate::infer::model::{GuideKind, Model, Site};
use crate::infer::reduce::SingleProcess;
use crate::infer::svi::SviState;
use rayon::prelude::*;

/// A location flagged when it is this many guide sds from the optimum...
pub const MIN_DISTANCE_SD: f64 = 0.5;
/// ... and the estimate is this many standard errors from zero.
pub const MIN_T: f64 = 5.0;
/// The gradient draws' streams: steps counted down from here (other post-fit evaluations use
/// u64::MAX, MAX − 1 and MAX − 2).
const STREAM_TOP: u64 = u64::MAX - 1000;

/// A latent site with locations still pulled by the gradient.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Drift {
    /// Site name.
    pub site: String,
    /// Elements of the site (over all its plate instances) that were checked.
    pub elements: usize,
    /// How many of them are flagged.
    pub flagged: usize,
    /// The flagged element farthest from its optimum: its flat index (instance-major)...
    pub worst_element: usize,
    /// ... its distance from the optimum in guide sds (sign: the direction of the optimum)...
    pub worst_distance_sd: f64,
    /// ... and that distance over its standard error.
    pub worst_t: f64,
    /// True for a dataset-level (plate-less) site.
    pub global: bool,
}

/// How far a dataset-level latent's guide location lies from the ELBO's optimum, from
/// gradients over all the data.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Distance {
    /// Site name.
    pub site: String,
    /// Element (flat index in the site's event).
    pub element: usize,
    /// Guide sd of the element (unconstrained space).
    pub guide_sd: f64,
    /// The optimum's distance from the location, in guide sds (sign: its direction).
    pub distance_sd: f64,
    /// Standard error of `distance_sd` over the gradient draws.
    pub standard_error_sd: f64,
    /// The sd that maximizes the ELBO over the guide's sd, all else held, over the guide's sd
    /// (mean-field guides; None for correlated ones or where the estimate has no optimum).
    pub sd_optimum_ratio: Option<f64>,
    /// Standard error of `sd_optimum_ratio` over the gradient draws.
    pub sd_optimum_ratio_se: Option<f64>,
}

/// The end-of-fit check: the drifting sites and the distances of every dataset-level element.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Check {
    /// Sites with elements still pulled by the gradient.
    pub drifts: Vec<Drift>,
    /// Every dataset-level element of a Gaussian guide.
    pub global_distances: Vec<Distance>,
}

/// The location entries and their guide sds of every instance of a Gaussian guide block
/// (None for point, encoder and flow blocks, which have no per-instance location and sd).
fn locations(block: &SiteBlock, params: &[f64]) -> Option<Vec<(usize, f64)>> {
    if !matches!(
        block.kind,
        GuideKind::MeanField
            | GuideKind::PartialCentring
            | GuideKind::LowRank(_)
            | GuideKind::FullRank
    ) {
        return None;
    }
    let mut out = Vec::with_capacity(block.instances * block.event);
    for inst in 0..block.instances {
        let off = block.instance_offset(inst);
        let (_, cov) = gaussian_moments(block, &params[off..][..block.per_instance]);
        out.extend((0..block.event).map(|k| (off + k, cov[k][k].sqrt())));
    }
    Some(out)
}

/// The ELBO's gradient at the final parameters, one vector per draw (mini-batches as the
/// model subsamples).
fn gradient_draws(
    model: &Model,
    state: &SviState,
    draws: usize,
) -> Result<Vec<Vec<f64>>, RunError> {
    (0..draws.max(2) as u64)
        .into_par_iter()
        .map(|k| {
            Evaluator {
                model,
                layout: &state.layout,
                params: &state.params,
                spec: ParticleSpec {
                    seed: state.seed,
                    step: STREAM_TOP - k,
                    particle: 0,
                    analytic_kl: false,
                },
                proposal: None,
            }
            .particle(&SingleProcess)
            .map(|p| p.grad)
        })
        .collect::<Result<Vec<_>, InferError>>()
        .map_err(RunError::from)
}

/// Every latent site whose guide location the ELBO's gradient still pulls away (see the
/// module documentation), from `draws` gradient draws at the final parameters.
pub fn drifts(model: &Model, state: &SviState, draws: usize) -> Result<Vec<Drift>, RunError> {
    Ok(check(model, state, draws)?.drifts)
}

/// The drifting sites and the dataset-level distances, from `draws` gradient draws at the
/// final parameters: mini-batches for plate-level sites, all the data for dataset-level ones.
pub fn check(model: &Model, state: &SviState, draws: usize) -> Result<Check, RunError> {
    let batched = gradient_draws(model, state, draws)?;
    let subsampled = model.plates.iter().any(|p| p.subsample.is_some());
    let has_global = model
        .sites
        .iter()
        .any(|s| matches!(s, Site::Latent(l) if l.plate.is_none()));
    let full = if subsampled && has_global {
        let mut whole = model.clone();
        whole.plates.iter_mut().for_each(|p| p.subsample = None);
        Some(gradient_draws(&whole, state, draws)?)
    } else {
        None
    };
    let mut out = Check {
        drifts: Vec::new(),
        global_distances: Vec::new(),
    };
    for (block, site) in state.layout.blocks.iter().zip(&model.sites) {
        let (Some(b), Site::Latent(l)) = (block, site) else {
            continue;
        };
        if l.prior.is_none() {
            continue;
        }
        let Some(locs) = locations(b, &state.params) else {
            continue;
        };
        let global = l.plate.is_none();
        let grads = match (&full, global) {
            (Some(f), true) => f,
            _ => &batched,
        };
        let mut drift = Drift {
            site: l.name.clone(),
            elements: locs.len(),
            flagged: 0,
            worst_element: 0,
            worst_distance_sd: 0.0,
            worst_t: 0.0,
            global,
        };
        for (e, &(at, sd)) in locs.iter().enumerate() {
            let (mean, se) = mean_and_standard_error(grads.iter().map(|g| g[at] * sd));
            let t = mean / se.max(1e-300);
            if global {
                let (ratio, ratio_se) = match b.kind {
                    GuideKind::MeanField => sd_optimum_ratio(grads, at + b.event, sd),
                    _ => (None, None),
                };
                out.global_distances.push(Distance {
                    site: l.name.clone(),
                    element: e,
                    guide_sd: sd,
                    distance_sd: mean,
                    standard_error_sd: se,
                    sd_optimum_ratio: ratio,
                    sd_optimum_ratio_se: ratio_se,
                });
            }
            if mean.abs() > MIN_DISTANCE_SD && t.abs() > MIN_T {
                drift.flagged += 1;
                if mean.abs() > drift.worst_distance_sd.abs() {
                    drift.worst_element = e;
                    drift.worst_distance_sd = mean;
                    drift.worst_t = t;
                }
            }
        }
        if drift.flagged > 0 {
            out.drifts.push(drift);
        }
    }
    Ok(out)
}

/// The sd that maximizes the ELBO over a mean-field guide's sd, over the guide's sd `sd`, and
/// its standard error, from the gradient draws' entries at `raw` (the raw scale, sd =
/// softplus(raw)): g = sd · d ELBO / d sd = 1 − sd² C gives the optimum sd / sqrt(1 − g).
/// None when the mean g is not below 1 (no curvature to speak of).
fn sd_optimum_ratio(grads: &[Vec<f64>], raw: usize, sd: f64) -> (Option<f64>, Option<f64>) {
    // d sd / d raw = logistic(raw) = 1 − exp(−sd).
    let d_sd_d_raw = -(-sd).exp_m1();
    let (g, se) = mean_and_standard_error(grads.iter().map(|v| v[raw] / d_sd_d_raw * sd));
    if g.partial_cmp(&1.0) != Some(std::cmp::Ordering::Less) {
        return (None, None);
    }
    let ratio = (1.0 - g).powf(-0.5);
    (Some(ratio), Some(0.5 * (1.0 - g).powf(-1.5) * se))
}

/// An sd this far from its optimum, as a fraction of it...
pub const MIN_SD_RATIO_OFF: f64 = 0.1;

/// A note naming the dataset-level elements whose guide sd lies more than `MIN_SD_RATIO_OFF`
/// from the ELBO's optimum over it, by more than `MIN_T` standard errors (None if none does).
pub fn scale_note(distances: &[Distance], draws: usize) -> Option<String> {
    let off: Vec<String> = distances
        .iter()
        .filter_map(|d| {
            let (r, se) = (d.sd_optimum_ratio?, d.sd_optimum_ratio_se?);
            let far = (r - 1.0).abs() > MIN_SD_RATIO_OFF && (r - 1.0).abs() > MIN_T * se;
            far.then(|| {
                let which = if r > 1.0 { "too narrow" } else { "too wide" };
                format!(
                    "`{}`[{}]: optimum {r:.2} ± {se:.2} x the guide's sd ({which})",
                    d.site, d.element
                )
            })
        })
        .collect();
    (!off.is_empty()).then(|| {
        format!(
            "note: the ELBO's gradient at the end ({draws} draws over all the data) puts these guide sds off their optimum: {}; --resume with more steps (or --lr-horizon longer than the run) lets them settle",
            off.join("; ")
        )
    })
}

/// Mean of the values and its standard error (sample sd / sqrt(n)).
fn mean_and_standard_error(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// The note `spreadc run` prints for the drifting sites (None when there are none).
pub fn note(drifts: &[Drift], draws: usize) -> Option<String> {
    let parts: Vec<String> = drifts
        .iter()
        .filter(|d| worth_a_note(d))
        .map(|d| {
            let dir = if d.worst_distance_sd > 0.0 { "above" } else { "below" };
            let which = if d.elements == 1 {
                format!("`{}`:", d.site)
            } else {
                format!(
                    "`{}`: {} of {} elements, farthest element {}:",
                    d.site, d.flagged, d.elements, d.worst_element
                )
            };
            format!(
                "{which} optimum {:.1} sds {dir} the fitted mean by the local slope ({:.0} standard errors)",
                d.worst_distance_sd.abs(),
                d.worst_t.abs()
            )
        })
        .collect();
    (!parts.is_empty()).then(|| format!(
        "note: the ELBO's gradient at the end ({draws} draws) says these latents have not converged: {}; run more steps (--resume continues the fit; --lr-horizon longer than the run keeps the learning rate up) before trusting their intervals",
        parts.join("; ")
    ))
}

/// A site worth a printed note: a dataset-level one, or a plate-level one with more than one
/// flagged element or one at least a sd off. Among the hundreds of per-shoebox backgrounds
/// of a converged fit, single elements pass the 5-standard-error cut by chance (2 of 20
/// converged calibration fits had one, 0.6 and 0.7 sd off); summary.json lists them all.
fn worth_a_note(d: &Drift) -> bool {
    d.global || d.flagged > 1 || d.worst_distance_sd.abs() >= 1.0
}
