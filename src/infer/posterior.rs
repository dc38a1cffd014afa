//! Posterior draws and summaries from a fitted guide.
//!
//! In: a model and an `SviState`. Out: draws of every latent's constrained value per plate
//! instance (row-major over the instance's plates), and mean, sd and quantiles per element.
//! Guarantees: draws use their own random streams (step tag `u64::MAX`), so summarizing never
//! changes the trajectory of a resumed run.

use super::error::InferError;
use super::guide::draw;
use super::model::{Env, Model, Site};
use super::rng::StreamKey;
use super::svi::SviState;
use crate::tape::Tape;

/// Draws of one latent: `values[d][instance][element]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SiteDraws {
    /// Site name.
    pub name: String,
    /// Number of plate instances.
    pub instances: usize,
    /// Elements per instance.
    pub event: usize,
    /// Draw-major values.
    pub values: Vec<Vec<Vec<f64>>>,
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
    let mut out = Vec::new();
    let mut tape = Tape::new();
    for (i, (site, block)) in model.sites.iter().zip(&state.layout.blocks).enumerate() {
        let (Site::Latent(l), Some(b)) = (site, block) else {
            continue;
        };
        let mut values = vec![vec![Vec::new(); b.instances]; n];
        for (d, per_draw) in values.iter_mut().enumerate() {
            for (inst, slot) in per_draw.iter_mut().enumerate() {
                let key = StreamKey {
                    seed: state.seed,
                    step: u64::MAX,
                    particle: d as u64,
                    site: i as u64,
                    instance: inst as u64,
                };
                let off = b.instance_offset(inst);
                tape.clear();
                let fail = |e| InferError::from_tape(e, state.step, l.name.clone());
                let g = match &l.encoder {
                    Some(enc) => {
                        let env = Env {
                            instance: instance_path(model, l.plate, inst),
                            ..Env::new(model)
                        };
                        let features = enc
                            .features(&mut tape, &env, inst, &l.label)
                            .map_err(fail)?;
                        let weights =
                            enc.weight_leaves(&mut tape, &state.params[off..off + b.len()]);
                        enc.draw(&mut tape, b, &weights, &features, &mut key.rng())
                            .map_err(fail)?
                    }
                    None => draw(
                        &mut tape,
                        b,
                        &state.params[off..off + b.per_instance],
                        &mut key.rng(),
                    )
                    .map_err(fail)?,
                };
                let u = tape
                    .real(g.u)
                    .map_err(|e| InferError::from_tape(e, state.step, l.name.clone()))?;
                *slot = u.iter().map(|&v| l.constraint.apply(v)).collect();
            }
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
                let mut v: Vec<f64> = s.values.iter().map(|d| d[instance][element]).collect();
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
