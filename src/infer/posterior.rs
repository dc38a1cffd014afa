//! Posterior draws and summaries from a fitted guide.
//!
//! In: a model and an `SviState`. Out: draws of every latent's constrained value per plate
//! instance (row-major over the instance's plates), and mean, sd and quantiles per element.
//! Guarantees: draws use their own random streams (step tag `u64::MAX`), so summarizing never
//! changes the trajectory of a resumed run.

use super::constraint::Constraint;
use super::encoder::refine_leaves;
use super::error::InferError;
use super::guide::{SiteBlock, draw};
use super::model::{Env, GuideKind, LatentSite, Model, Site};
use super::rng::StreamKey;
use super::svi::SviState;
use crate::tape::Tape;
use crate::tape::elementwise::softplus;
use ndarray::IxDyn;
use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use rand_distr::StandardNormal;

/// Draws of one latent: `values[d][instance * event + element]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SiteDraws {
    /// Site name.
    pub name: String,
    /// Number of plate instances.
    pub instances: usize,
    /// Elements per instance.
    pub event: usize,
    /// Draw-major values, each draw's instances one after another (row-major).
    pub values: Vec<Vec<f64>>,
}

impl SiteDraws {
    /// Element `element` of instance `instance` in draw `d`.
    pub fn value(&self, d: usize, instance: usize, element: usize) -> f64 {
        self.values[d][instance * self.event + element]
    }
}

/// Summary of one element of one instance of a latent.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ElementSummary {
    /// Site name.
    pub site: String,
    /// Flat plate instance.
    pub instance: usize,
    /// Element within the instance.
    pub element: usize,
    /// Posterior mean.
    pub mean: f64,
    /// Posterior standard deviation.
    pub sd: f64,
    /// 2.5%, 16%, 50%, 84%, 97.5% quantiles.
    pub quantiles: [f64; 5],
}

/// `n` joint draws of every latent from the guide.
pub fn sample(model: &Model, state: &SviState, n: usize) -> Result<Vec<SiteDraws>, InferError> {
    sample_except(model, state, n, &[])
}

/// `sample` without the sites whose index `skip` marks (their draws come from
/// `sample_instances` instead, a block of instances at a time). A skipped site must not be
/// one a partially centred site's prior depends on.
pub fn sample_except(
    model: &Model,
    state: &SviState,
    n: usize,
    skip: &[bool],
) -> Result<Vec<SiteDraws>, InferError> {
    let mut out = Vec::new();
    let mut tape = Tape::new();
    for (i, (site, block)) in model.sites.iter().zip(&state.layout.blocks).enumerate() {
        let (Site::Latent(l), Some(b)) = (site, block) else {
            continue;
        };
        if skip.get(i).copied().unwrap_or(false) {
            continue;
        }
        let mut values = vec![Vec::with_capacity(b.instances * b.event); n];
        for (d, per_draw) in values.iter_mut().enumerate() {
            draw_instances(
                model,
                state,
                &mut tape,
                (i, l, b),
                d,
                0..b.instances,
                per_draw,
            )?;
        }
        if b.kind == GuideKind::PartialCentring {
            centre_draws(model, state, &mut tape, (i, l, b), &out, &mut values)?;
        }
        out.push(SiteDraws {
            name: l.name.clone(),
            instances: b.instances,
            event: b.event,
            values,
        });
    }
    Ok(out)
}

/// Draws `n` of the instances `instances` of latent site `site`: `values[d]` holds draw d's
/// elements of those instances, row-major; the same bits as the same instances' part of
/// `sample` (every draw of every instance has its own stream). Not for partially centred
/// sites, whose draws need those of the sites before them.
pub fn sample_instances(
    model: &Model,
    state: &SviState,
    n: usize,
    site: usize,
    instances: std::ops::Range<usize>,
) -> Result<Vec<Vec<f64>>, InferError> {
    let (Some(Site::Latent(l)), Some(Some(b))) =
        (model.sites.get(site), state.layout.blocks.get(site))
    else {
        return Err(InferError::Posterior(format!(
            "site {site} is not a latent with a guide"
        )));
    };
    if b.kind == GuideKind::PartialCentring {
        return Err(InferError::Posterior(format!(
            "`{}`: a partially centred site is drawn with the sites before it",
            l.name
        )));
    }
    let mut tape = Tape::new();
    let mut values = vec![Vec::with_capacity(instances.len() * b.event); n];
    for (d, per_draw) in values.iter_mut().enumerate() {
        draw_instances(
            model,
            state,
            &mut tape,
            (site, l, b),
            d,
            instances.clone(),
            per_draw,
        )?;
    }
    Ok(values)
}

/// Draw `d` of the instances `instances` of a site, appended to `per_draw`.
fn draw_instances(
    model: &Model,
    state: &SviState,
    tape: &mut Tape,
    (i, l, b): (usize, &LatentSite, &SiteBlock),
    d: usize,
    instances: std::ops::Range<usize>,
    per_draw: &mut Vec<f64>,
) -> Result<(), InferError> {
    let prefix = StreamKey {
        seed: state.seed,
        step: u64::MAX,
        particle: d as u64,
        site: i as u64,
        instance: 0,
    }
    .prefix();
    for inst in instances {
        let block = &state.params[b.instance_offset(inst)..];
        let mut rng = prefix.rng(inst as u64);
        match (&l.encoder, b.kind) {
            (None, GuideKind::Point | GuideKind::MeanField | GuideKind::PartialCentring) => {
                diagonal_draw(b, block, &mut rng, l.constraint, per_draw);
            }
            _ => {
                let u = taped_draw(model, state, tape, (l, b), inst, &mut rng)?;
                per_draw.extend(u.iter().map(|&v| l.constraint.apply(v)));
            }
        }
    }
    Ok(())
}

/// Turns the ũ draws of a partially centred site into draws of the latent,
/// z = μ + σ^(1-λ) (ũ - λμ), with μ and σ its prior's location and scale evaluated at the
/// same draw of the sites before it (dataset-level ones, and those of the site's own plate
/// instances; the lets among them are recomputed).
fn centre_draws(
    model: &Model,
    state: &SviState,
    tape: &mut Tape,
    (i, l, b): (usize, &LatentSite, &SiteBlock),
    drawn: &[SiteDraws],
    values: &mut [Vec<f64>],
) -> Result<(), InferError> {
    let fail = |e| InferError::from_tape(e, state.step, format!("posterior draw of `{}`", l.name));
    let Some((super::dist::Family::Normal, args)) = &l.prior else {
        return Err(InferError::Posterior(format!(
            "`{}`: a partially centred guide needs a Normal prior",
            l.name
        )));
    };
    let chain = model.plate_chain(l.plate);
    let by_name = |name: &str| drawn.iter().find(|s| s.name == name);
    let lambda = b.centring(&state.params);
    for (d, per_draw) in values.iter_mut().enumerate() {
        // The dataset-level values of this draw, computed once.
        tape.clear();
        let mut env = Env::new(model);
        set_earlier(model, tape, &mut env, (i, d), &by_name, None).map_err(fail)?;
        let globals: Vec<(usize, crate::tape::Value)> = (0..i)
            .filter(|&j| model.sites[j].plate().is_none())
            .filter_map(|j| env.values[j].map(|n| (j, tape.value(n).clone())))
            .collect();
        for inst in 0..b.instances {
            tape.clear();
            let path = instance_path(model, l.plate, inst);
            let mut env = Env {
                instance: path.clone(),
                ..Env::new(model)
            };
            for (j, v) in &globals {
                env.values[*j] = Some(tape.leaf(v.clone()));
            }
            set_earlier(
                model,
                tape,
                &mut env,
                (i, d),
                &by_name,
                Some((&path, &chain)),
            )
            .map_err(fail)?;
            let mu = env.eval(tape, &args[0]).map_err(fail)?;
            let sigma = env.eval(tape, &args[1]).map_err(fail)?;
            let (mu, sigma) = (
                tape.real(mu).map_err(fail)?,
                tape.real(sigma).map_err(fail)?,
            );
            let shape = IxDyn(&l.shape);
            let (Some(mu), Some(sigma)) = (mu.broadcast(shape.clone()), sigma.broadcast(shape))
            else {
                return Err(InferError::Posterior(format!(
                    "`{}`: its prior's location {:?} and scale {:?} do not broadcast to its \
                     shape {:?}",
                    l.name,
                    mu.shape(),
                    sigma.shape(),
                    l.shape
                )));
            };
            let z = &mut per_draw[inst * b.event..(inst + 1) * b.event];
            for ((u, &m), &sd) in z.iter_mut().zip(mu.iter()).zip(sigma.iter()) {
                *u = centred_value(m, sd, lambda, *u);
            }
        }
    }
    Ok(())
}

/// z = μ + σ^(1-λ) (ũ - λμ), in the engine's order of operations.
fn centred_value(mu: f64, sigma: f64, lambda: f64, u: f64) -> f64 {
    let ln_sigma = sigma.ln();
    let lam_ln = lambda * ln_sigma;
    mu + (ln_sigma - lam_ln).exp() * (u - lambda * mu)
}

/// A plate instance's path, outermost first, and the chain of plates it runs through.
type PlateScope<'a> = (&'a [(usize, usize)], &'a [usize]);

/// Sets the sites before site `i` on `env` at draw `d`: without `scope`, the dataset-level
/// ones; with `(path, chain)`, those of the plates of `chain` at the instance `path`
/// (latents from their draws, lets evaluated).
fn set_earlier<'m>(
    model: &'m Model,
    tape: &mut Tape,
    env: &mut Env<'m>,
    (i, d): (usize, usize),
    by_name: &dyn Fn(&str) -> Option<&'m SiteDraws>,
    scope: Option<PlateScope>,
) -> Result<(), crate::tape::TapeError> {
    let path = scope.map_or(&[][..], |(p, _)| p);
    for j in 0..i {
        let site = &model.sites[j];
        let wanted = match (site.plate(), scope) {
            (None, None) => true,
            (Some(p), Some((_, chain))) => chain.contains(&p),
            _ => false,
        };
        if !wanted {
            continue;
        }
        match site {
            Site::Latent(lj) => {
                let Some(draws) = by_name(&lj.name) else {
                    continue;
                };
                let flat = match site.plate() {
                    None => 0,
                    Some(p) => {
                        let depth = path.iter().position(|&(q, _)| q == p).unwrap_or(0);
                        model.flat_index(&path[..=depth])
                    }
                };
                let v = &draws.values[d][flat * draws.event..(flat + 1) * draws.event];
                let a = ndarray::ArrayD::from_shape_vec(IxDyn(&lj.shape), v.to_vec())
                    .unwrap_or_default();
                env.values[j] = Some(tape.constant_real(a));
            }
            Site::Let(lt) => {
                env.values[j] = Some(env.eval(tape, &lt.value)?);
            }
            Site::Observe(_) | Site::Factor(_) => {}
        }
    }
    Ok(())
}

/// A point or mean-field guide's draw without a tape, appended to `out` through the
/// constraint: the same stream and the same arithmetic as `guide::draw` (loc + softplus(raw) ε,
/// ε in row-major order), so the same bits.
fn diagonal_draw(
    b: &SiteBlock,
    block: &[f64],
    rng: &mut Xoshiro256PlusPlus,
    constraint: Constraint,
    out: &mut Vec<f64>,
) {
    let d = b.event;
    if b.kind == GuideKind::Point {
        out.extend(block[..d].iter().map(|&v| constraint.apply(v)));
        return;
    }
    let (loc, raw) = (&block[..d], &block[d..2 * d]);
    for (&m, &r) in loc.iter().zip(raw) {
        let e: f64 = rng.sample(StandardNormal);
        out.push(constraint.apply(m + softplus(r) * e));
    }
}

/// A draw of instance `inst` of a latent on the tape (encoder, full-rank and low-rank guides).
fn taped_draw(
    model: &Model,
    state: &SviState,
    tape: &mut Tape,
    (l, b): (&LatentSite, &SiteBlock),
    inst: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> Result<Vec<f64>, InferError> {
    let block = &state.params[b.instance_offset(inst)..];
    tape.clear();
    let fail = |e| InferError::from_tape(e, state.step, l.name.clone());
    let g = match &l.encoder {
        Some(enc) => {
            let env = Env {
                instance: instance_path(model, l.plate, inst),
                ..Env::new(model)
            };
            let features = enc.features(tape, &env, inst, &l.label).map_err(fail)?;
            let weights = enc.weight_leaves(tape, &block[..b.per_instance]);
            let refine = b
                .refine_offset(inst)
                .map(|o| refine_leaves(tape, b, &state.params[o..o + b.refine]));
            enc.draw(tape, b, &weights, &features, refine, rng)
                .map_err(fail)?
        }
        None => draw(tape, b, &block[..b.per_instance], rng).map_err(fail)?,
    };
    Ok(tape.real(g.u).map_err(fail)?.iter().copied().collect())
}

/// (plate, index) from outermost to `plate` of the flat instance `flat` (the inverse of
/// `Model::flat_index`; a ragged plate's parent is the one whose range holds it).
fn instance_path(model: &Model, plate: Option<usize>, flat: usize) -> Vec<(usize, usize)> {
    let chain = model.plate_chain(plate);
    let mut path = vec![(0, 0); chain.len()];
    let mut rest = flat;
    for (k, &p) in chain.iter().enumerate().rev() {
        match &model.plates[p].ragged {
            Some(offsets) => {
                path[k] = (p, rest);
                rest = offsets.partition_point(|&o| o <= rest).saturating_sub(1);
            }
            None => {
                let n = model.plates[p].size.max(1);
                path[k] = (p, rest % n);
                rest /= n;
            }
        }
    }
    path
}

/// Mean, sd and quantiles of every element of every latent.
pub fn summarize(draws: &[SiteDraws]) -> Vec<ElementSummary> {
    let mut out = Vec::new();
    for s in draws {
        for instance in 0..s.instances {
            for element in 0..s.event {
                let mut v: Vec<f64> = (0..s.values.len())
                    .map(|d| s.value(d, instance, element))
                    .collect();
                out.push(element_summary(&s.name, instance, element, &mut v));
            }
        }
    }
    out
}

fn element_summary(site: &str, instance: usize, element: usize, v: &mut [f64]) -> ElementSummary {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    ElementSummary {
        site: site.into(),
        instance,
        element,
        mean,
        sd,
        quantiles: [q(0.025), q(0.16), q(0.5), q(0.84), q(0.975)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tape-free draw is the guide's draw on a tape to the bit (the same stream, the same
    /// arithmetic), for point and mean-field blocks, through a constraint.
    #[test]
    fn diagonal_draws_match_the_taped_guide_draw() {
        for kind in [GuideKind::MeanField, GuideKind::Point] {
            let b = SiteBlock {
                site: 0,
                offset: 0,
                per_instance: if kind == GuideKind::Point { 3 } else { 6 },
                instances: 1,
                event: 3,
                shape: vec![3],
                kind,
                refine: 0,
            };
            let block = [0.3, -1.2, 2.5, -0.7, 0.1, 1.9];
            let key = StreamKey {
                seed: 11,
                step: u64::MAX,
                particle: 4,
                site: 2,
                instance: 9,
            };
            let mut direct = Vec::new();
            diagonal_draw(
                &b,
                &block,
                &mut key.rng(),
                Constraint::Positive,
                &mut direct,
            );
            let mut tape = Tape::new();
            let g = draw(&mut tape, &b, &block[..b.per_instance], &mut key.rng()).unwrap();
            let taped: Vec<f64> = tape
                .real(g.u)
                .unwrap()
                .iter()
                .map(|&v| Constraint::Positive.apply(v))
                .collect();
            assert_eq!(direct.len(), 3);
            for (a, t) in direct.iter().zip(&taped) {
                assert_eq!(a.to_bits(), t.to_bits(), "{kind:?}: {a} vs {t}");
            }
        }
    }
}
