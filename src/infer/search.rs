//! A multi-start search over the modes of per-instance latents (e.g. the orientation and the
//! mosaic-domain tilts of each image): gradient steps cannot leave a wrong mode of a
//! multimodal likelihood, so at chosen steps of the fit every instance of the sites' top-level
//! plate tries K starts drawn from the sites' priors, each refined by a few SVI steps, against
//! its current guide, and keeps the best.
//!
//! In: a model, an `SviState`, a `ModeSearch` (sites, K, refinement steps), the run's SVI
//! settings. Out: the state with the winning instances' guide parameters (and Adam moments)
//! replaced, and a `SearchRound` record.
//! Guarantees:
//! - The instances of a top-level plate are conditionally independent given the global sites.
//!   During refinement the parameters of everything outside the plate (dataset latents, shared
//!   networks) are frozen, so one refinement of start k for all instances at once is K
//!   independent refinements, and each instance picks its own winner.
//! - Start 0 is the current guide, refined the same way, so a start wins only against a fair
//!   rival. The winner is chosen by the instance's ELBO (log p(x_i, z_i | globals) - log q,
//!   over the instance and its nested plates), averaged over `SCORE_DRAWS` draws that all starts
//!   share. Instances whose current guide wins keep their parameters untouched.
//! - A targeted round (`MisfitSearch`, `search_misfits`) searches only the instances the
//!   goodness-of-fit check (`super::fit_check`) names, with the plate restricted to them
//!   (`Plate::restrict`), each start refined by a fresh Adam run at the base rate; with none
//!   named it changes nothing.
//! - Deterministic given the state: the refinement's random streams are keyed apart from the
//!   run's, so the same state gives the same search with any thread count, and a resumed run
//!   repeats it to the bit.

use super::engine::{Evaluator, ParticleSpec, Proposal};
use super::error::InferError;
use super::model::{GuideKind, Model, PlateId, Site};
use super::reduce::GradientReduce;
use super::rng::StreamKey;
use super::svi::{SviConfig, SviState, step_masked};
use std::ops::Range;

/// Top of the step coordinates of the search's random streams (SVI steps count up from 0).
const SEARCH_STREAM_TOP: u64 = u64::MAX - (1 << 32);
/// Guide draws averaged in each instance's score.
const SCORE_DRAWS: u64 = 4;

/// Which sites to search, how widely and how long each start is refined.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModeSearch {
    /// Indices of the latent sites (all in the same top-level plate).
    pub sites: Vec<usize>,
    /// Starts drawn from the priors per instance (besides the current guide).
    pub candidates: usize,
    /// SVI steps refining every start (dataset-level parameters frozen).
    pub refine_steps: u64,
    /// Steps before which a search runs (a step already searched is not searched again).
    pub at_steps: Vec<u64>,
    /// A targeted round for the instances the goodness-of-fit check names.
    #[serde(default)]
    pub misfit: Option<MisfitSearch>,
}

/// A targeted search round: before `at_step` the per-instance goodness-of-fit check
/// (`super::fit_check`) names the instances whose counts the fit explains far worse than
/// Poisson noise allows (z below `MISFIT_Z`), and those alone try `candidates` starts, each
/// refined by a fresh Adam run at the base learning rate (the fit's own may have decayed), only
/// they evaluated: an image left in a wrong mode pulls the dataset-level latents, and a wider
/// search for it costs the few instances named, not the whole plate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MisfitSearch {
    /// The step before which it runs.
    pub at_step: u64,
    /// Starts drawn per named instance (besides its current guide).
    pub candidates: usize,
}

/// What one search did.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchRound {
    /// Steps done when it ran.
    pub step: u64,
    /// The searched sites.
    pub sites: Vec<String>,
    /// The plate whose instances chose independently.
    pub plate: String,
    /// Starts drawn per instance.
    pub candidates: usize,
    /// SVI steps refining each start.
    pub refine_steps: u64,
    /// Instances of that plate.
    pub instances: usize,
    /// (instance, start, score gain in nats over the refined current guide) of every instance
    /// that moved to a drawn start.
    pub moved: Vec<(usize, usize, f64)>,
    /// Starts whose refinement failed (a non-finite value) and were passed over.
    pub failed: usize,
    /// For a targeted round: the instances the goodness-of-fit check named (the only ones
    /// searched; empty when none was named). None: every instance was searched.
    #[serde(default)]
    pub targeted: Option<Vec<usize>>,
}

/// The top-level plate of searchable sites, or why they cannot be searched.
pub fn search_plate(model: &Model, sites: &[usize]) -> Result<PlateId, InferError> {
    let mut top = None;
    for &site in sites {
        let t = site_plate(model, site)?;
        if top.is_some_and(|p| p != t) {
            return Err(InferError::Search(
                "the searched latents must lie in the same top-level plate".into(),
            ));
        }
        top = Some(t);
    }
    top.ok_or_else(|| InferError::Search("no latent to search".into()))
}

fn site_plate(model: &Model, site: usize) -> Result<PlateId, InferError> {
    let Some(Site::Latent(l)) = model.sites.get(site) else {
        return Err(InferError::Search(format!("site {site} is not a latent")));
    };
    if l.prior.is_none() {
        return Err(InferError::Search(format!(
            "`{}` has no prior to draw starts from",
            l.name
        )));
    }
    if matches!(l.guide, GuideKind::Encoder | GuideKind::Flow) {
        return Err(InferError::Search(format!(
            "`{}` has an amortized (encoder) guide, with no location per instance to move",
            l.name
        )));
    }
    let chain = model.plate_chain(l.plate);
    let Some(&top) = chain.first() else {
        return Err(InferError::Search(format!(
            "`{}` is a dataset-level latent: only latents inside a plate are searched, one \
             instance at a time",
            l.name
        )));
    };
    if chain.iter().any(|&p| model.plates[p].chunk.is_some()) {
        return Err(InferError::Search(format!(
            "`{}` is in a chunked (vectorized) plate",
            l.name
        )));
    }
    Ok(top)
}

/// Flat instances of a site's plate chain that lie under instance `i` of its top plate
/// (contiguous: nested plates are numbered row-major, ragged ones in parent order).
fn subtree(model: &Model, chain: &[PlateId], i: usize) -> Range<usize> {
    let mut range = i..i + 1;
    for &p in &chain[1..] {
        range = if model.plates[p].ragged.is_some() {
            let (first, last) = (range.start, range.end.saturating_sub(1));
            model.child_instances(p, first).start..model.child_instances(p, last).end
        } else {
            let n = model.plates[p].size;
            range.start * n..range.end * n
        };
    }
    range
}

/// Parameter ranges (in the flat vector) of everything under instance `i` of plate `top`.
fn instance_params(model: &Model, state: &SviState, top: PlateId, i: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for (block, site) in state.layout.blocks.iter().zip(&model.sites) {
        let (Some(b), Site::Latent(l)) = (block, site) else {
            continue;
        };
        let chain = model.plate_chain(l.plate);
        if chain.first() != Some(&top) || matches!(b.kind, GuideKind::Encoder | GuideKind::Flow) {
            continue;
        }
        let flats = subtree(model, &chain, i);
        if !flats.is_empty() {
            out.push(b.instance_offset(flats.start)..b.instance_offset(flats.end));
        }
    }
    out
}

/// Runs one search at the state's current step and moves the winning instances.
pub fn search(
    model: &Model,
    state: &mut SviState,
    s: &ModeSearch,
    cfg: &SviConfig,
    reducer: &dyn GradientReduce,
    step_scale: &[f64],
) -> Result<SearchRound, InferError> {
    let top = search_plate(model, &s.sites)?;
    let rounds = Rounds {
        cfg,
        reducer,
        step_scale,
        fresh_adam: false,
    };
    let instances: Vec<usize> = (0..model.plates[top].size).collect();
    run_search(model, state, s, (top, &instances, s.candidates), rounds)
}

/// Runs the targeted round of `s.misfit` at the state's current step: the goodness-of-fit
/// check names the misfit instances of the searched plate, and they alone are searched.
pub fn search_misfits(
    model: &Model,
    state: &mut SviState,
    s: &ModeSearch,
    cfg: &SviConfig,
    reducer: &dyn GradientReduce,
    step_scale: &[f64],
) -> Result<SearchRound, InferError> {
    let top = search_plate(model, &s.sites)?;
    let candidates = s.misfit.as_ref().map_or(s.candidates, |m| m.candidates);
    let check = super::fit_check::fit_check(model, state, MISFIT_CHECK_DRAWS)?;
    let named = match check {
        Some(c) if c.plate_id == top => c.misfits(),
        _ => {
            return Err(InferError::Search(format!(
                "a targeted search needs the Poisson observations inside plate `{}`, the \
                 searched latents' plate",
                model.plates[top].name
            )));
        }
    };
    let mut restricted = model.clone();
    restricted.plates[top].restrict = Some(std::sync::Arc::new(named.clone()));
    let rounds = Rounds {
        cfg,
        reducer,
        step_scale,
        fresh_adam: true,
    };
    let mut round = if named.is_empty() {
        empty_round(model, s, top, candidates, state.step)
    } else {
        run_search(&restricted, state, s, (top, &named, candidates), rounds)?
    };
    round.instances = model.plates[top].size;
    round.targeted = Some(named);
    Ok(round)
}

/// Guide draws of the goodness-of-fit check that picks a targeted round's instances.
const MISFIT_CHECK_DRAWS: u64 = 2;

/// How the starts of a round are refined.
#[derive(Clone, Copy)]
struct Rounds<'a> {
    cfg: &'a SviConfig,
    reducer: &'a dyn GradientReduce,
    step_scale: &'a [f64],
    /// Refine every start by a fresh Adam run at the base rate (moments cleared, schedule
    /// from step 0) instead of continuing the fit's schedule.
    fresh_adam: bool,
}

fn empty_round(
    model: &Model,
    s: &ModeSearch,
    top: PlateId,
    candidates: usize,
    step: u64,
) -> SearchRound {
    SearchRound {
        step,
        sites: s
            .sites
            .iter()
            .map(|&i| model.sites[i].name().to_string())
            .collect(),
        plate: model.plates[top].name.clone(),
        candidates,
        refine_steps: s.refine_steps,
        instances: model.plates[top].size,
        moved: Vec::new(),
        failed: 0,
        targeted: None,
    }
}

/// The search over `instances` of `top` (all of them, or the model's `restrict` list).
fn run_search(
    model: &Model,
    state: &mut SviState,
    s: &ModeSearch,
    (top, instances, candidates): (PlateId, &[usize], usize),
    rounds: Rounds<'_>,
) -> Result<SearchRound, InferError> {
    let stream_step = SEARCH_STREAM_TOP - state.step;
    let per_instance: Vec<Vec<Range<usize>>> = instances
        .iter()
        .map(|&i| instance_params(model, state, top, i))
        .collect();
    let mut frozen = vec![true; state.params.len()];
    for r in per_instance.iter().flatten() {
        frozen[r.clone()].fill(false);
    }
    let mut round = empty_round(model, s, top, candidates, state.step);
    let mut refined: Vec<Option<(SviState, Vec<f64>)>> = Vec::with_capacity(candidates + 1);
    for k in 0..=candidates {
        let start = if k == 0 {
            Ok(state.clone())
        } else {
            drawn_start(model, state, s, top, k as u64, stream_step)
        };
        let result = start.and_then(|mut st| {
            refine(model, &mut st, s, rounds, (&frozen, k))?;
            let scores = scores(model, &st, top, stream_step)?;
            Ok((st, scores))
        });
        match result {
            Ok(r) => refined.push(Some(r)),
            // The current guide must refine and score: a failure there is the model's.
            Err(e) if k == 0 => return Err(e),
            Err(_) => {
                round.failed += 1;
                refined.push(None);
            }
        }
    }
    let Some((_, current)) = &refined[0] else {
        return Ok(round);
    };
    for (pos, (&i, ranges)) in instances.iter().zip(&per_instance).enumerate() {
        let best = (1..refined.len())
            .filter_map(|k| refined[k].as_ref().map(|(_, v)| (k, v[pos])))
            .fold(None, |b: Option<(usize, f64)>, (k, v)| match b {
                Some((_, bv)) if bv >= v => b,
                _ => Some((k, v)),
            });
        let Some((k, v)) = best.filter(|&(_, v)| v > current[pos]) else {
            continue;
        };
        let Some((st, _)) = &refined[k] else { continue };
        for r in ranges {
            state.params[r.clone()].copy_from_slice(&st.params[r.clone()]);
            if rounds.fresh_adam {
                // The start's moments belong to its own fresh run: momentum cleared, the
                // fit's scale estimates kept.
                state.m[r.clone()].fill(0.0);
            } else {
                state.m[r.clone()].copy_from_slice(&st.m[r.clone()]);
                state.v[r.clone()].copy_from_slice(&st.v[r.clone()]);
            }
        }
        round.moved.push((i, k, v - current[pos]));
    }
    Ok(round)
}

/// The state with the searched sites' guide locations at the k-th draws from their priors
/// (given the global sites drawn from their guides), in every instance of `top`.
fn drawn_start(
    model: &Model,
    state: &SviState,
    s: &ModeSearch,
    top: PlateId,
    k: u64,
    stream_step: u64,
) -> Result<SviState, InferError> {
    let proposal = Proposal {
        sites: s.sites.clone(),
        candidate: k,
        stream_step,
    };
    let draws = Evaluator {
        model,
        layout: &state.layout,
        params: &state.params,
        spec: spec(state, stream_step, 0),
        proposal: Some(&proposal),
    }
    .instance_scores(top)?;
    let mut start = state.clone();
    for instance in draws {
        for (site, flat, z) in instance?.proposals {
            let (Some(b), Site::Latent(l)) = (&state.layout.blocks[site], &model.sites[site])
            else {
                continue;
            };
            let loc = &mut start.params[b.instance_offset(flat)..][..b.event];
            for (u, &v) in loc.iter_mut().zip(&z) {
                *u = l.constraint.inverse(v);
            }
        }
    }
    Ok(start)
}

/// `refine_steps` SVI steps of start k with `frozen` parameters held, on streams of its own
/// (a fresh Adam run from step 0 if `rounds.fresh_adam`).
fn refine(
    model: &Model,
    st: &mut SviState,
    s: &ModeSearch,
    rounds: Rounds<'_>,
    (frozen, k): (&[bool], usize),
) -> Result<(), InferError> {
    let (seed, step) = (st.seed, st.step);
    st.seed = StreamKey {
        seed,
        step: SEARCH_STREAM_TOP - step,
        particle: k as u64,
        site: u64::MAX,
        instance: 0,
    }
    .hash();
    if rounds.fresh_adam {
        st.m.fill(0.0);
        st.v.fill(0.0);
        st.step = 0;
    }
    for _ in 0..s.refine_steps {
        step_masked(
            model,
            st,
            rounds.cfg,
            rounds.reducer,
            rounds.step_scale,
            Some(frozen),
        )?;
    }
    st.seed = seed;
    st.step = step + s.refine_steps;
    Ok(())
}

/// Each instance's ELBO (of the `restrict` list's, if any, in its order), averaged over
/// `SCORE_DRAWS` draws shared by every start.
fn scores(
    model: &Model,
    st: &SviState,
    top: PlateId,
    stream_step: u64,
) -> Result<Vec<f64>, InferError> {
    let p = &model.plates[top];
    let mut total = vec![0.0; p.restrict.as_ref().map_or(p.size, |r| r.len())];
    for p in 0..SCORE_DRAWS {
        let values = Evaluator {
            model,
            layout: &st.layout,
            params: &st.params,
            spec: spec(st, stream_step, p),
            proposal: None,
        }
        .instance_scores(top)?;
        for (t, v) in total.iter_mut().zip(values) {
            *t += v?.value / SCORE_DRAWS as f64;
        }
    }
    Ok(total)
}

fn spec(st: &SviState, stream_step: u64, particle: u64) -> ParticleSpec {
    ParticleSpec {
        seed: st.seed,
        step: stream_step,
        particle,
        analytic_kl: false,
    }
}
