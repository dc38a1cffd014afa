//! A profile scan of one scalar dataset-level latent (e.g. the edge position `edge_ev`): the
//! gradient steps of a fit cannot leave a far mode of a dataset-level latent once the
//! per-image latents have settled around it, and the per-instance search (`super::search`)
//! does not move dataset-level latents. At chosen steps the scan sets the site's guide
//! location to each value of a grid in turn, everything else held, scores the ELBO over all
//! the data, and moves the location to the best point when it beats the current one.
//!
//! With `refine_steps` > 0 the scan is a profile proper: at each grid point (and at the current
//! location) every other parameter is refined by that many SVI steps with the site's guide
//! held, on streams of the point's own, before the score; a move then takes the whole refined
//! state of the winning point. Without refinement the other latents stay where the fit put
//! them, adapted to the current location, so the scan favours it.
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
use super::reduce::GradientReduce;
use super::rng::StreamKey;
use super::svi::{SviConfig, SviState, site_mask, step_masked};

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
    /// SVI steps refining every other parameter at each point before its score (0: none).
    #[serde(default)]
    pub refine_steps: u64,
}

/// What a refined scan needs to take SVI steps: the run's configuration, its reducer and the
/// per-parameter step scales.
#[derive(Clone, Copy)]
pub struct Refiner<'a> {
    /// The run's SVI configuration (optimizer, particles, objective).
    pub cfg: &'a SviConfig,
    /// The gradient reduction across processes.
    pub reducer: &'a dyn GradientReduce,
    /// `ParamLayout::step_scales` of the model.
    pub step_scale: &'a [f64],
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
    /// SVI steps each point was refined by before its score.
    #[serde(default)]
    pub refine_steps: u64,
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
/// beats the current one by `MIN_GAIN_NATS`. A scan with `refine_steps` > 0 needs `refiner`.
pub fn scan(
    model: &Model,
    state: &mut SviState,
    s: &ProfileScan,
    may_move: bool,
    refiner: Option<Refiner<'_>>,
) -> Result<ScanRound, InferError> {
    check_site(model, s.site)?;
    let Some(Site::Latent(l)) = model.sites.get(s.site) else {
        return Err(InferError::Scan(format!("site {} is not a latent", s.site)));
    };
    let Some(block) = &state.layout.blocks[s.site] else {
        return Err(InferError::Scan(format!("`{}` has no guide", l.name)));
    };
    let refine = match (s.refine_steps, refiner) {
        (0, _) => None,
        (n, Some(r)) => Some((n, r, site_mask(&state.layout, &[s.site]))),
        (_, None) => {
            return Err(InferError::Scan(
                "a refined scan was asked for without the run's optimizer".into(),
            ));
        }
    };
    let loc = block.instance_offset(0);
    let current = l.constraint.apply(state.params[loc]);
    let stream_step = SCAN_STREAM_TOP - state.step;
    let point = |u: f64, k: u64| -> Result<(f64, Option<SviState>), InferError> {
        let mut st = state.clone();
        st.params[loc] = u;
        let refined = match &refine {
            Some((n, r, frozen)) => {
                refine_point(model, &mut st, *r, (frozen, *n), (stream_step, k))?;
                true
            }
            None => false,
        };
        let value = score(model, &st, (stream_step, s.draws))?;
        Ok((value, refined.then_some(st)))
    };
    let (base, base_state) = point(state.params[loc], 0)?;
    let mut best: Option<(f64, SviState)> = None;
    let mut gains = Vec::with_capacity(s.values.len());
    for (k, &v) in s.values.iter().enumerate() {
        match point(l.constraint.inverse(v), k as u64 + 1) {
            Ok((value, st)) => {
                gains.push(value - base);
                if let Some(st) = st
                    && best.as_ref().is_none_or(|(b, _)| value > *b)
                {
                    best = Some((value, st));
                }
            }
            Err(_) => gains.push(f64::NAN),
        }
    }
    let mut round = ScanRound {
        step: state.step,
        site: l.name.clone(),
        current,
        values: s.values.clone(),
        gains,
        moved_to: None,
        may_move,
        refine_steps: s.refine_steps,
    };
    let Some((v, g)) = round.best() else {
        return Ok(round);
    };
    if may_move && g > MIN_GAIN_NATS {
        match best {
            Some((_, st)) => adopt(state, &st),
            None => {
                state.params[loc] = l.constraint.inverse(v);
                state.m[loc] = 0.0;
            }
        }
        round.moved_to = Some(v);
    } else if may_move && let Some(st) = base_state {
        // The current location refined alike: the refinement steps are not wasted.
        adopt(state, &st);
    }
    Ok(round)
}

/// The parameters and Adam moments of a refined state; the step count and ELBO trace stay.
fn adopt(state: &mut SviState, refined: &SviState) {
    state.params.clone_from(&refined.params);
    state.m.clone_from(&refined.m);
    state.v.clone_from(&refined.v);
}

/// `steps` SVI steps of point k with `frozen` held, on streams of the point's own: a fresh
/// Adam run (moments cleared, its schedule from step 0, so at the run's base learning rate),
/// since the other latents may have far to go and the fit's own rate may have decayed.
fn refine_point(
    model: &Model,
    st: &mut SviState,
    r: Refiner<'_>,
    (frozen, steps): (&[bool], u64),
    (stream_step, k): (u64, u64),
) -> Result<(), InferError> {
    let (seed, step) = (st.seed, st.step);
    st.m.fill(0.0);
    st.v.fill(0.0);
    st.step = 0;
    st.seed = StreamKey {
        seed,
        step: stream_step,
        particle: k,
        site: u64::MAX - 1,
        instance: 0,
    }
    .hash();
    for _ in 0..steps {
        step_masked(model, st, r.cfg, r.reducer, r.step_scale, Some(frozen))?;
    }
    st.seed = seed;
    st.step = step;
    st.elbo.truncate(st.elbo.len() - steps as usize);
    Ok(())
}

/// The full-data ELBO of the state's guide, averaged over draws.
fn score(
    model: &Model,
    state: &SviState,
    (stream_step, draws): (u64, u64),
) -> Result<f64, InferError> {
    let params = &state.params;
    let mut total = 0.0;
    for p in 0..draws.max(1) {
        let value = Evaluator {
            model,
            layout: &state.layout,
            params,
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
