//! A profile scan of one scalar dataset-level latent (e.g. the edge position `edge_ev`): the
//! gradient steps of a fit cannot leave a far mode of a dataset-level latent once the
//! per-image latents have settled around it, and the per-instance search (`super::search`)
//! does not move dataset-level latents. At chosen steps the scan sets the site's guide
//! location to each value of a grid in turn, everything else held, scores the ELBO over all
//! the data, and moves the location to the best point when it beats the current one.
//!
//! In: a model, an `SviState`, a `ProfileScan` (site, grid, steps, draws). Out: the state
//! with the site's location moved (its Adam first moment cleared), and a `ScanRound` record
//! of the whole profile, also kept by the end-of-fit check, which reports without moving.
//! Guarantees:
//! - Every grid point and the current location are scored with the same draws of every other
//!   latent (common random numbers, on streams keyed apart from the run's), so their
//!   differences carry no Monte Carlo noise from the rest of the model; the score is over all
//!   instances of every top-level plate, never the step's mini-batch.
//! - The current location is scored the same way and wins ties: the scan moves only to a
//!   point that is better by `MIN_GAIN_NATS`.
//! - Deterministic given the state: the same state gives the same scan with any thread count.

use super::engine::{Evaluator, ParticleSpec};
use super::error::InferError;
use super::model::{GuideKind, Model, Site};
use super::svi::SviState;

/// Top of the step coordinates of the scan's random streams (below the search's).
const SCAN_STREAM_TOP: u64 = u64::MAX - (1 << 33);
/// A grid point must beat the current location by this much to move it.
pub const MIN_GAIN_NATS: f64 = 1.0;
/// Grid points at most (a scan is one full-data evaluation per point and draw).
pub const MAX_POINTS: usize = 2000;

/// Which site to scan, over which values, when.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProfileScan {
    /// Index of the latent site (dataset-level, one element).
    pub site: usize,
    /// Grid of values in the site's support (constrained space).
    pub values: Vec<f64>,
    /// Steps before which a scan runs and may move the location.
    pub at_steps: Vec<u64>,
    /// Guide draws averaged in each score (the same draws for every point).
    pub draws: u64,
}

/// What one scan found.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScanRound {
    /// Steps done when it ran.
    pub step: u64,
    /// The scanned site.
    pub site: String,
    /// The site's location before the scan (constrained space).
    pub current: f64,
    /// The grid.
    pub values: Vec<f64>,
    /// Score of each grid point minus the current location's (nats; NaN where the model
    /// failed to evaluate there).
    pub gains: Vec<f64>,
    /// The location the scan moved to, if it moved.
    pub moved_to: Option<f64>,
    /// Whether this scan could move the location (false for the end-of-fit check).
    pub may_move: bool,
}

impl ScanRound {
    /// The best grid point and its gain over the current location.
    pub fn best(&self) -> Option<(f64, f64)> {
        self.values
            .iter()
            .zip(&self.gains)
            .filter(|(_, g)| g.is_finite())
            .map(|(&v, &g)| (v, g))
            .fold(None, |b: Option<(f64, f64)>, (v, g)| match b {
                Some((_, bg)) if bg >= g => b,
                _ => Some((v, g)),
            })
    }
}

/// Why a site cannot be scanned, or Ok.
pub fn check_site(model: &Model, site: usize) -> Result<(), InferError> {
    let Some(Site::Latent(l)) = model.sites.get(site) else {
        return Err(InferError::Scan(format!("site {site} is not a latent")));
    };
    if !model.plate_chain(l.plate).is_empty() {
        return Err(InferError::Scan(format!(
            "`{}` lies in a plate: only dataset-level latents are scanned (per-instance \
             latents have --search)",
            l.name
        )));
    }
    if l.shape.iter().product::<usize>() != 1 {
        return Err(InferError::Scan(format!(
            "`{}` has {} elements: only a latent of one element is scanned",
            l.name,
            l.shape.iter().product::<usize>()
        )));
    }
    if !matches!(
        l.guide,
        GuideKind::MeanField | GuideKind::LowRank(_) | GuideKind::FullRank | GuideKind::Point
    ) {
        return Err(InferError::Scan(format!(
            "`{}` has a {:?} guide, with no location to set",
            l.name, l.guide
        )));
    }
    Ok(())
}

/// Whether `value` lies in the site's support (its constraint maps it to a finite location).
pub fn in_support(model: &Model, site: usize, value: f64) -> bool {
    match model.sites.get(site) {
        Some(Site::Latent(l)) => l.constraint.inverse(value).is_finite(),
        _ => false,
    }
}

/// Scores the grid at the state's current step; moves the location if `may_move` and a point
/// beats the current one by `MIN_GAIN_NATS`.
pub fn scan(
    model: &Model,
    state: &mut SviState,
    s: &ProfileScan,
    may_move: bool,
) -> Result<ScanRound, InferError> {
    check_site(model, s.site)?;
    let Site::Latent(l) = &model.sites[s.site] else {
        unreachable!("check_site accepts latents only")
    };
    let Some(block) = &state.layout.blocks[s.site] else {
        return Err(InferError::Scan(format!("`{}` has no guide", l.name)));
    };
    let loc = block.instance_offset(0);
    let current = l.constraint.apply(state.params[loc]);
    let stream_step = SCAN_STREAM_TOP - state.step;
    let base = score(model, state, state.params[loc], (loc, stream_step, s.draws))?;
    let gains: Vec<f64> = s
        .values
        .iter()
        .map(|&v| {
            let u = l.constraint.inverse(v);
            match score(model, state, u, (loc, stream_step, s.draws)) {
                Ok(x) => x - base,
                Err(_) => f64::NAN,
            }
        })
        .collect();
    let mut round = ScanRound {
        step: state.step,
        site: l.name.clone(),
        current,
        values: s.values.clone(),
        gains,
        moved_to: None,
        may_move,
    };
    if let Some((v, g)) = round.best()
        && may_move
        && g > MIN_GAIN_NATS
    {
        state.params[loc] = l.constraint.inverse(v);
        state.m[loc] = 0.0;
        round.moved_to = Some(v);
    }
    Ok(round)
}

/// The full-data ELBO with the site's location at `u` (unconstrained), averaged over draws.
fn score(
    model: &Model,
    state: &SviState,
    u: f64,
    (loc, stream_step, draws): (usize, u64, u64),
) -> Result<f64, InferError> {
    let mut params = state.params.clone();
    params[loc] = u;
    let mut total = 0.0;
    for p in 0..draws.max(1) {
        let value = Evaluator {
            model,
            layout: &state.layout,
            params: &params,
            spec: ParticleSpec {
                seed: state.seed,
                step: stream_step,
                particle: p,
                analytic_kl: false,
            },
            proposal: None,
        }
        .full_log_weight()?;
        total += value;
    }
    let mean = total / draws.max(1) as f64;
    if mean.is_finite() {
        Ok(mean)
    } else {
        Err(InferError::Scan("a non-finite score".into()))
    }
}
