//! What a physics run reports beyond the latents: the f'/f'' posterior of each metal site
//! (fp_fdp.csv, fp_fdp.svg), the probability of each reference state of a site
//! (state_probabilities.csv) and the data counts.
//!
//! In: the program (its lets and `oxidation_state` / `reference_curve` calls), the planned
//! model, the fitted state and the posterior draws. Out: [`SiteDraws`] per site (dataset-level
//! lets named `fp_<site>` and `fdp_<site>` over the channel grid, with every reference curve the
//! model reads overlaid) and [`StateProbability`] rows. Guarantees: a state probability is
//! P(first) = σ(Δ), Δ the mean over particles of the log-likelihood difference between the
//! weight pinned at the first and at the second state, with common random numbers for all other
//! latents drawn from the fitted guide: an approximation of the Bayes factor by the expected
//! log-likelihood ratio under the guide (equal prior odds), stated in README. The mean runs
//! over up to `particles` draws and stops early once more draws could not change the printed
//! probability (`decided`); its Monte Carlo standard error is reported with it.

use super::{LatentDraws, RunError};
use crate::infer::constraint::Constraint;
use crate::infer::engine::{Evaluator, ParticleSpec};
use crate::infer::guide::{ParamLayout, softplus_inv};
use crate::infer::model::{Expr, LetSite, Model, Site};
use crate::infer::svi::SviState;
use crate::ir::{self, ExprKind, Program, StmtKind};
use crate::plan::Planned;
use crate::report::{ReferenceCurve, SiteDraws, StateProbability};
use ndarray::Array2;

/// Unconstrained value pinning a (0, 1) weight next to 0 or 1: logit(1 − 6e-6).
const PIN_LOGIT: f64 = 12.0;

/// A site's two reference states and the latent weighting them.
#[derive(Debug, Clone, PartialEq)]
pub struct StateChoice {
    /// Site label.
    pub site: String,
    /// The weight latent (of the first state).
    pub weight: String,
    /// Label of the state at weight 1.
    pub first: String,
    /// Label of the state at weight 0.
    pub second: String,
}

fn text(e: &ir::Expr) -> Option<String> {
    match &e.kind {
        ExprKind::Const(crate::check::value::Value::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

/// Every `oxidation_state(site, weight, first, second)` call of the program whose let the
/// likelihood depends on, and a note for each call it does not (e.g. under another variant).
pub fn state_choices(program: &Program) -> (Vec<StateChoice>, Vec<String>) {
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    for s in &program.log_joint {
        let StmtKind::Let {
            name: let_name,
            value,
        } = &s.kind
        else {
            continue;
        };
        let mut found = Vec::new();
        crate::plan::walk(value, &mut |e: &ir::Expr| {
            if let ExprKind::Extern(name, args) = &e.kind
                && name == "oxidation_state"
                && let [site, w, a, b] = args.as_slice()
                && let (Some(site), ExprKind::Var(weight), Some(first), Some(second)) =
                    (text(site), &w.kind, text(a), text(b))
            {
                found.push(StateChoice {
                    site,
                    weight: weight.clone(),
                    first,
                    second,
                });
            }
        });
        for c in found {
            if likelihood_reads(program, let_name) {
                out.push(c);
            } else {
                notes.push(format!(
                    "note: no state probabilities for {}: `{let_name}` does not enter the likelihood of this model (variant)",
                    c.site
                ));
            }
        }
    }
    (out, notes)
}

/// The names an expression reads, through the lets it reads (transitively).
fn reads(program: &Program, e: &ir::Expr, name: &str, seen: &mut Vec<String>) -> bool {
    let mut vars = Vec::new();
    crate::plan::walk(e, &mut |x: &ir::Expr| {
        if let ExprKind::Var(v) = &x.kind {
            vars.push(v.clone());
        }
    });
    for v in vars {
        if v == name {
            return true;
        }
        if seen.contains(&v) {
            continue;
        }
        seen.push(v.clone());
        let value = program.log_joint.iter().find_map(|s| match &s.kind {
            StmtKind::Let { name: n, value } if *n == v => Some(value),
            _ => None,
        });
        if let Some(value) = value
            && reads(program, value, name, seen)
        {
            return true;
        }
    }
    false
}

/// True when the let `let_name` depends on `name`.
fn let_reads(program: &Program, let_name: &str, name: &str) -> bool {
    program.log_joint.iter().any(|s| match &s.kind {
        StmtKind::Let { name: n, value } if n == let_name => {
            reads(program, value, name, &mut Vec::new())
        }
        _ => false,
    })
}

/// True when some observation's likelihood depends on `name`.
pub fn likelihood_reads(program: &Program, name: &str) -> bool {
    program.log_joint.iter().any(|s| match &s.kind {
        StmtKind::Observe { dist, .. } => dist
            .args
            .iter()
            .any(|a| reads(program, a, name, &mut Vec::new())),
        _ => false,
    })
}

/// Names of the built-in reference tables the program reads (`reference_curve("NAME", ...)`).
fn reference_tables(program: &Program) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut visit = |e: &ir::Expr| {
        crate::plan::walk(e, &mut |x: &ir::Expr| {
            if let ExprKind::Extern(name, args) = &x.kind
                && (name == "reference_curve" || name == "shifted_curve")
                && let Some(t) = args.first().and_then(text)
                && !out.contains(&t)
            {
                out.push(t);
            }
        });
    };
    for s in &program.log_joint {
        if let StmtKind::Let { value, .. } = &s.kind {
            visit(value);
        }
    }
    out
}

/// Draws of a dataset-level let as (draws × channels), if it has one row of `k` channels.
fn curve_draws(q: &LatentDraws, k: usize) -> Option<Array2<f64>> {
    let flat: usize = q.shape.iter().product();
    if flat != k || q.draws.is_empty() {
        return None;
    }
    let values: Vec<f64> = q.draws.iter().flatten().copied().collect();
    Array2::from_shape_vec((q.draws.len(), k), values).ok()
}

/// f'/f'' posterior of every site with lets `fp_<site>` and `fdp_<site>` over the grid.
pub fn anomalous_sites(
    program: &Program,
    planned: &Planned,
    quantities: &[LatentDraws],
) -> Vec<SiteDraws> {
    let Some((_, data)) = planned.physics.dials.first() else {
        return Vec::new();
    };
    let energy_ev = data.energy_ev.clone();
    let k = energy_ev.len();
    let references: Vec<ReferenceCurve> = reference_tables(program)
        .into_iter()
        .filter_map(|name| {
            let table = crate::plan::reference::table(&name).ok()?;
            let rows: Vec<(f64, f64)> = energy_ev
                .iter()
                .map(|&e| table.at_ev(e))
                .collect::<Result<_, _>>()
                .ok()?;
            Some(ReferenceCurve {
                label: name,
                energy_ev: energy_ev.clone(),
                fp: rows.iter().map(|r| r.0).collect(),
                fdp: rows.iter().map(|r| r.1).collect(),
            })
        })
        .collect();
    let mut sites = Vec::new();
    for q in quantities {
        let Some(site) = q.name.strip_prefix("fp_") else {
            continue;
        };
        let Some(fdp) = quantities.iter().find(|d| d.name == format!("fdp_{site}")) else {
            continue;
        };
        let (Some(fp), Some(fdp)) = (curve_draws(q, k), curve_draws(fdp, k)) else {
            continue;
        };
        // The edge is marked only where this site's f'' depends on it.
        let edge_ev = quantities
            .iter()
            .filter(|_| let_reads(program, &format!("fdp_{site}"), "edge_ev"))
            .find(|d| d.name == "edge_ev" && d.shape.is_empty())
            .map(|d| d.draws.iter().flatten().sum::<f64>() / d.draws.len().max(1) as f64);
        sites.push(SiteDraws {
            site: site.to_uppercase(),
            energy_ev: energy_ev.clone(),
            fp,
            fdp,
            references: references.clone(),
            edge_ev,
        });
    }
    sites
}

/// The model with its observations replaced by lets of zero (same sites, same indices): the
/// difference of a particle's log-weight on the two is its log-likelihood.
pub fn without_observations(model: &Model) -> Result<Model, RunError> {
    let mut m = model.clone();
    for s in &mut m.sites {
        if let Site::Observe(o) = s {
            *s = Site::Let(LetSite {
                name: o.name.clone(),
                plate: o.plate,
                value: Expr::Const(0.0),
                label: o.label.clone(),
            });
        }
    }
    m.validate()
        .map_err(crate::infer::error::InferError::from)?;
    Ok(m)
}

/// The fitted parameters with the weight's guide a point mass at unconstrained `u`.
fn pinned(layout: &ParamLayout, params: &[f64], site: usize, u: f64) -> Vec<f64> {
    let mut p = params.to_vec();
    if let Some(b) = &layout.blocks[site] {
        let block = &mut p[b.offset..b.offset + b.per_instance];
        block[..b.event].fill(u);
        block[b.event..].fill(softplus_inv(1e-12));
    }
    p
}

/// Fewest guide draws a state comparison averages before it may stop early.
const STATE_MIN_PARTICLES: usize = 4;
/// Standard errors either side of the mean log-odds that must map to one printed probability.
const STATE_DECIDED_Z: f64 = 3.0;
/// Half the last digit of the printed probability (four decimals).
const STATE_PRINT_HALF_DIGIT: f64 = 5e-5;

/// The mean of the per-draw log-likelihood ratios and its Monte Carlo standard error.
#[derive(Debug, Clone, Copy)]
struct LogOdds {
    mean: f64,
    se: f64,
}

impl LogOdds {
    fn of(deltas: &[f64]) -> Self {
        let k = deltas.len().max(1) as f64;
        let mean = deltas.iter().sum::<f64>() / k;
        let se = if deltas.len() > 1 {
            let ss: f64 = deltas.iter().map(|d| (d - mean).powi(2)).sum();
            (ss / (k - 1.0) / k).sqrt()
        } else {
            f64::INFINITY
        };
        LogOdds { mean, se }
    }
}

/// Whether more draws could no longer change the printed probability: after at least
/// `STATE_MIN_PARTICLES` draws, the logistic of the mean log-odds ± `STATE_DECIDED_Z` standard
/// errors rounds to the same four decimals (a decisive comparison, e.g. thousands of nats on
/// 20,000 shoeboxes, stops at the minimum; a close one uses every draw).
fn decided(deltas: &[f64]) -> bool {
    if deltas.len() < STATE_MIN_PARTICLES {
        return false;
    }
    let LogOdds { mean, se } = LogOdds::of(deltas);
    let p = |x: f64| 1.0 / (1.0 + (-x).exp());
    let (lo, hi) = (
        p(mean - STATE_DECIDED_Z * se),
        p(mean + STATE_DECIDED_Z * se),
    );
    hi - lo < STATE_PRINT_HALF_DIGIT
}

/// P(first state) and P(second) of every state choice, from up to `particles` draws of the
/// guide (fewer once `decided`).
pub fn state_probabilities(
    model: &Model,
    state: &SviState,
    choices: &[StateChoice],
    particles: usize,
) -> Result<Vec<StateProbability>, RunError> {
    let mut out = Vec::new();
    if choices.is_empty() {
        return Ok(out);
    }
    // Every image, not a mini-batch scaled up: the probability is a statement about all the
    // data (a training step's subsample would put one random batch's noise into it).
    let mut full = model.clone();
    full.plates.iter_mut().for_each(|p| p.subsample = None);
    let model = &full;
    let bare = without_observations(model)?;
    for c in choices {
        let i = model
            .site_index(&c.weight)
            .ok_or_else(|| not_a_weight(c, "is not a latent"))?;
        match &model.sites[i] {
            Site::Latent(l)
                if l.plate.is_none()
                    && l.shape.iter().product::<usize>() == 1
                    && l.constraint == Constraint::Interval(0.0, 1.0) => {}
            _ => {
                return Err(not_a_weight(
                    c,
                    "must be one dataset-level latent in (0, 1)",
                ));
            }
        }
        let log_lik = |u: f64, particle: u64| -> Result<f64, RunError> {
            let params = pinned(&state.layout, &state.params, i, u);
            let spec = ParticleSpec {
                seed: state.seed,
                step: u64::MAX - 1,
                particle,
                analytic_kl: false,
            };
            let eval = |m: &Model| {
                Evaluator {
                    model: m,
                    layout: &state.layout,
                    params: &params,
                    spec,
                    proposal: None,
                }
                .log_weight()
            };
            Ok(eval(model)? - eval(&bare)?)
        };
        let mut deltas = Vec::new();
        for k in 0..particles.max(1) as u64 {
            deltas.push(log_lik(PIN_LOGIT, k)? - log_lik(-PIN_LOGIT, k)?);
            if decided(&deltas) {
                break;
            }
        }
        let odds = LogOdds::of(&deltas);
        let p_first = 1.0 / (1.0 + (-odds.mean).exp());
        let row = |state: &str, probability: f64, sign: f64| StateProbability {
            site: c.site.clone(),
            state: state.to_string(),
            probability,
            log_odds: sign * odds.mean,
            log_odds_se: odds.se,
            particles: deltas.len(),
        };
        out.push(row(&c.first, p_first, 1.0));
        out.push(row(&c.second, 1.0 - p_first, -1.0));
    }
    Ok(out)
}

fn not_a_weight(c: &StateChoice, why: &str) -> RunError {
    RunError::Physics(format!(
        "oxidation_state(\"{}\", {}, ...): `{}` {why}",
        c.site, c.weight, c.weight
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decisive_comparison_stops_at_the_minimum_draws() {
        let d = [5012.0, 4987.5, 5101.2, 4950.3];
        assert!(!decided(&d[..3]), "never before STATE_MIN_PARTICLES draws");
        assert!(decided(&d));
        let o = LogOdds::of(&d);
        assert!((o.mean - 5012.75).abs() < 1e-9);
        // Sample sd 64.0 over √4.
        let sd = (d.iter().map(|x| (x - o.mean).powi(2)).sum::<f64>() / 3.0).sqrt();
        assert!((o.se - sd / 2.0).abs() < 1e-12);
    }

    #[test]
    fn a_close_or_noisy_comparison_takes_more_draws() {
        // P ≈ 0.8: the band ± 3 se spans far more than the printed digit.
        assert!(!decided(&[1.2, 1.6, 1.3, 1.5, 1.4]));
        // A large mean with a larger spread: sigmoid(11.75 - 3 se) is not yet 1.0000.
        assert!(!decided(&[20.0, -5.0, 30.0, 2.0]));
        // Equal draws (zero spread): more draws cannot move the mean.
        assert!(decided(&[3.0; 4]));
    }
}
