//! Per-instance goodness of fit of the Poisson observations: names an image the fit explains
//! far worse than its counting noise allows (an image left in a wrong mode, whose misfit other
//! latents, e.g. the edge, then follow).
//!
//! In: the model, the fitted state. Out: per instance of the top-level plate that holds the
//! Poisson observations, z = (log P(y | μ) − E[log P(Y | μ)]) / sd[log P(Y | μ)] summed over its
//! pixels, with Y ~ Poisson(μ) at μ drawn from the fitted guide (the mean over `draws` draws).
//! A fit that explains the counts has z of order one (a little above zero, as μ is fitted to
//! them); a misfit image has a large negative z.
//!
//! How: the model is copied three times with every Poisson observation replaced by a factor —
//! zero, log P(y | μ) − E[log P(Y | μ)], and Var[log P(Y | μ)] — and each copy's per-instance
//! score is taken with the same guide draws, so the priors and guide terms cancel in the
//! differences. E and Var are sums over the counts within 12 sds of μ. An observation under a
//! gain flow is checked at its corrected expectation μ* = μ e^h (the Poisson mean of its
//! likelihood), with the fitted conditioner; one under another flow kind, which changes the residual's law rather than the
//! mean, on its uncorrected Poisson likelihood. Guarantee: the state is not changed.

use super::dist::Family;
use super::engine::{Evaluator, ParticleSpec};
use super::error::InferError;
use super::flow::{ElementTerm, FlowKind};
use super::model::{Expr, FactorSite, Model, ObserveSite, PlateId, Site};
use super::svi::SviState;
use crate::tape::TapeError;
use ndarray::{ArrayD, Zip};
use std::sync::Arc;

/// z below this names an instance in a note.
pub const MISFIT_Z: f64 = -10.0;

/// The fit of one instance.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InstanceFit {
    /// Instance index in the plate.
    pub instance: usize,
    /// log P(y | μ) − E[log P(Y | μ)] over the instance's Poisson elements (nats).
    pub excess_nats: f64,
    /// sd[log P(Y | μ)] over them.
    pub sd_nats: f64,
    /// excess / sd.
    pub z: f64,
}

/// The check over one plate.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FitCheck {
    /// The top-level plate.
    pub plate: String,
    /// Its id in the model.
    #[serde(skip)]
    pub plate_id: PlateId,
    /// Guide draws averaged.
    pub draws: u64,
    /// One row per instance.
    pub instances: Vec<InstanceFit>,
    /// A correction flow other than a gain flow acts on (some of) the Poisson observations: the
    /// check is of the uncorrected physics, and a flow that absorbs misfit leaves the physics
    /// misfit by design. (A gain flow's observations are checked at its corrected expectation.)
    pub corrected: bool,
}

/// E[log P(Y | μ)] and Var[log P(Y | μ)] for Y ~ Poisson(μ), by summing over the counts
/// within 12 sds (and 20 counts) of μ.
pub fn poisson_log_prob_moments(mu: f64) -> (f64, f64) {
    if mu.is_nan() || mu <= 0.0 || mu.is_infinite() {
        return (0.0, 0.0);
    }
    let half = 12.0 * mu.sqrt() + 20.0;
    let lo = (mu - half).max(0.0).floor() as u64;
    let hi = (mu + half).ceil() as u64;
    let (ln_mu, mut m1, mut m2, mut mass) = (mu.ln(), 0.0, 0.0, 0.0);
    for y in lo..=hi {
        let lp = y as f64 * ln_mu - mu - statrs::function::gamma::ln_gamma(y as f64 + 1.0);
        let p = lp.exp();
        mass += p;
        m1 += p * lp;
        m2 += p * lp * lp;
    }
    let mean = m1 / mass;
    (mean, (m2 / mass - mean * mean).max(0.0))
}

/// What a Poisson observation is replaced by in each copy.
#[derive(Clone, Copy)]
enum Term {
    Zero,
    Excess,
    Variance,
}

/// One element's term at expected count `m` and observed count `y`.
fn term_value(term: Term, m: f64, y: f64) -> f64 {
    match term {
        Term::Zero => 0.0,
        Term::Excess => {
            let (mean, _) = poisson_log_prob_moments(m);
            y * m.ln() - m - statrs::function::gamma::ln_gamma(y + 1.0) - mean
        }
        Term::Variance => poisson_log_prob_moments(m).1,
    }
}

fn as_factor(o: &ObserveSite, term: Term) -> Site {
    let (mu, y) = (o.args[0].clone(), o.value.clone());
    let value = Expr::Call(Arc::new(move |t, env| {
        let mu = env.eval(t, &mu)?;
        let y = env.eval(t, &y)?;
        let (mu, y) = (t.real(mu)?.clone(), t.real(y)?);
        let shape_err = || TapeError::Op {
            op: "fit check",
            label: String::new(),
            detail: "expected and observed counts differ in shape".into(),
        };
        let y = y.broadcast(mu.raw_dim()).ok_or_else(shape_err)?;
        let mut out = ArrayD::zeros(mu.raw_dim());
        Zip::from(&mut out)
            .and(&mu)
            .and(&y)
            .for_each(|o, &m, &y| *o = term_value(term, m, y));
        Ok(t.constant_real(out))
    }));
    Site::Factor(FactorSite {
        name: format!("fit check of {}", o.name),
        plate: o.plate,
        value,
        label: o.label.clone(),
    })
}

fn with_terms(model: &Model, term: Term) -> Model {
    let mut m = model.clone();
    for site in &mut m.sites {
        let Site::Observe(o) = site else { continue };
        if o.family != Family::Poisson {
            continue;
        }
        match &o.correction {
            Some(c) if c.kind == FlowKind::Gain => {
                let mut checked = (**c).clone();
                checked.check = Some(ElementTerm(Arc::new(move |m, y| term_value(term, m, y))));
                o.correction = Some(Arc::new(checked));
            }
            _ => *site = as_factor(o, term),
        }
    }
    m
}

/// The top-level plate of the Poisson observations, if they all share one.
pub fn poisson_plate(model: &Model) -> Option<usize> {
    let mut tops = model.sites.iter().filter_map(|s| match s {
        Site::Observe(o) if o.family == Family::Poisson => Some(
            o.plate
                .and_then(|p| model.plate_chain(Some(p)).first().copied()),
        ),
        _ => None,
    });
    let first = tops.next()??;
    tops.all(|t| t == Some(first)).then_some(first)
}

/// The check, or None when the model has no Poisson observation in one top-level plate (or
/// that plate is chunked, whose instances are not scored one by one).
pub fn fit_check(
    model: &Model,
    state: &SviState,
    draws: u64,
) -> Result<Option<FitCheck>, InferError> {
    let Some(plate) = poisson_plate(model) else {
        return Ok(None);
    };
    if model.plates[plate].chunk.is_some() {
        return Ok(None);
    }
    let copies = [Term::Zero, Term::Excess, Term::Variance].map(|t| with_terms(model, t));
    let n = model.plates[plate].size;
    let mut sums = [vec![0.0; n], vec![0.0; n], vec![0.0; n]];
    for d in 0..draws.max(1) {
        for (copy, sum) in copies.iter().zip(&mut sums) {
            let scores = Evaluator {
                model: copy,
                layout: &state.layout,
                params: &state.params,
                spec: ParticleSpec {
                    seed: state.seed,
                    step: u64::MAX - 3,
                    particle: d,
                    analytic_kl: false,
                },
                proposal: None,
            }
            .instance_scores(plate)?;
            for (s, v) in sum.iter_mut().zip(scores) {
                *s += v?.value;
            }
        }
    }
    let k = draws.max(1) as f64;
    let instances = (0..n)
        .map(|i| {
            let excess = (sums[1][i] - sums[0][i]) / k;
            let sd = ((sums[2][i] - sums[0][i]) / k).max(0.0).sqrt();
            InstanceFit {
                instance: i,
                excess_nats: excess,
                sd_nats: sd,
                z: if sd > 0.0 { excess / sd } else { 0.0 },
            }
        })
        .collect();
    let corrected = model.sites.iter().any(|s| {
        matches!(s, Site::Observe(o) if o.family == Family::Poisson
            && o.correction.as_ref().is_some_and(|c| c.kind != FlowKind::Gain))
    });
    Ok(Some(FitCheck {
        plate: model.plates[plate].name.clone(),
        plate_id: plate,
        draws: draws.max(1),
        instances,
        corrected,
    }))
}

impl FitCheck {
    /// The instances with z below `MISFIT_Z`, in instance order.
    pub fn misfits(&self) -> Vec<usize> {
        let bad = self.instances.iter().filter(|f| f.z < MISFIT_Z);
        bad.map(|f| f.instance).collect()
    }
}

/// A note naming the instances with z below `MISFIT_Z`, worst first, with the likeliest
/// cause: a few named instances are each in a wrong mode; 40% of them or more named, the
/// physics lacks an effect of the data; under a correction flow, the physics is checked without the
/// correction that absorbs its misfit.
pub fn note(c: &FitCheck) -> Option<String> {
    let mut bad: Vec<&InstanceFit> = c.instances.iter().filter(|f| f.z < MISFIT_Z).collect();
    if bad.is_empty() {
        return None;
    }
    bad.sort_by(|a, b| a.z.total_cmp(&b.z));
    let list: Vec<String> = bad
        .iter()
        .take(8)
        .map(|f| {
            format!(
                "{} {} (z = {:.0}, {:.0} nats below its Poisson expectation)",
                c.plate, f.instance, f.z, -f.excess_nats
            )
        })
        .collect();
    let more = match bad.len() {
        n if n > 8 => format!(" and {} more", n - 8),
        _ => String::new(),
    };
    let cause = if c.corrected {
        "the check is of the uncorrected physics, and with the correction flow on, the misfit \
         it names is what the flow absorbed (compare a fit without the flow)"
    } else if 5 * bad.len() >= 2 * c.instances.len() {
        "with so many instances named, the physics more likely lacks an effect of the data (a \
         detector or spot-profile effect; try a correction flow) than each is in a wrong mode"
    } else {
        "one left in a wrong mode can pull the dataset-level latents (try --search with more \
         starts, or --search-misfit) before trusting them"
    };
    Some(format!(
        "note: {} of {} instances of plate `{}` fit their counts far worse than Poisson noise \
         allows: {}{more}; {cause}",
        bad.len(),
        c.instances.len(),
        c.plate,
        list.join("; "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(zs: &[f64], corrected: bool) -> FitCheck {
        let instances = zs
            .iter()
            .enumerate()
            .map(|(i, &z)| InstanceFit {
                instance: i,
                excess_nats: 10.0 * z,
                sd_nats: 10.0,
                z,
            })
            .collect();
        FitCheck {
            plate: "image".into(),
            plate_id: 0,
            draws: 2,
            instances,
            corrected,
        }
    }

    /// None named, no note; under 40% named: a wrong mode; 40% or more: a missing effect;
    /// under a correction flow: the uncorrected physics.
    #[test]
    fn the_note_names_the_likeliest_cause() {
        assert_eq!(note(&check(&[-1.0, 0.5, -9.9], false)), None);
        let few = note(&check(&[-1.0, -40.0, 0.2, -0.3], false)).unwrap();
        assert!(few.contains("1 of 4 instances of plate `image`"), "{few}");
        assert!(few.contains("image 1 (z = -40, 400 nats below"), "{few}");
        assert!(few.contains("wrong mode"), "{few}");
        let most = note(&check(&[-11.0, -40.0, -12.0, -0.3], false)).unwrap();
        assert!(
            most.contains("3 of 4") && most.contains("lacks an effect"),
            "{most}"
        );
        let two_of_five = note(&check(&[-11.0, 0.0, -12.0, 0.3, 1.0], false)).unwrap();
        assert!(two_of_five.contains("lacks an effect"), "{two_of_five}");
        let two_of_six = note(&check(&[-11.0, 0.0, -12.0, 0.3, 1.0, 0.1], false)).unwrap();
        assert!(two_of_six.contains("wrong mode"), "{two_of_six}");
        assert!(most.find("image 1").unwrap() < most.find("image 2").unwrap());
        let flow = note(&check(&[-11.0, -40.0, -12.0, -0.3], true)).unwrap();
        assert!(flow.contains("uncorrected physics"), "{flow}");
    }

    /// Against a direct sum over 0..2000 counts and, for large μ, the normal limit
    /// E = −½ ln(2πeμ), Var = ½.
    #[test]
    fn moments_match_a_direct_sum_and_the_normal_limit() {
        for &mu in &[0.05, 0.7, 2.0, 15.0, 300.0] {
            let (mut m1, mut m2) = (0.0, 0.0);
            for y in 0..2000u64 {
                let lp =
                    y as f64 * f64::ln(mu) - mu - statrs::function::gamma::ln_gamma(y as f64 + 1.0);
                m1 += lp.exp() * lp;
                m2 += lp.exp() * lp * lp;
            }
            let (mean, var) = poisson_log_prob_moments(mu);
            assert!(
                (mean - m1).abs() < 1e-10 * m1.abs().max(1.0),
                "{mu}: {mean} vs {m1}"
            );
            assert!((var - (m2 - m1 * m1)).abs() < 1e-8, "{mu}: {var}");
        }
        let mu = 1e6;
        let (mean, var) = poisson_log_prob_moments(mu);
        let e = -0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E * mu).ln();
        assert!((mean - e).abs() < 1e-5, "{mean} vs {e}");
        assert!((var - 0.5).abs() < 1e-4, "{var}");
    }
}
