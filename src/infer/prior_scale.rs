//! Initial guide scales of latents whose prior scale is not a constant.
//!
//! A latent with a constant prior scale s starts its guide at scale 0.1 s (at most 0.1) and
//! moves its location in steps of s × the learning rate (`ParamLayout::step_scales`). When the
//! scale depends on other latents, e.g. `rot ~ Normal(rot0, sqrt(a^2 + (mosaic * deg)^2 / n))`,
//! the planner cannot fold it, and the guide would start 0.1 wide in radians and jump by the
//! learning rate: a fit ruined in its first step. Here such a scale is evaluated once, with
//! every latent at its guide's initial location, at instance 0 of the latent's plates.
//!
//! In: a validated `Model`. Out: `init_scale` set on the latents whose prior scale evaluates to
//! a positive finite number. Guarantees: deterministic (no random draw), so a resumed run gets
//! the same scales; a scale that cannot be evaluated (its expression needs a value with no
//! initial location) leaves the latent at the default, as before.

use super::dist::Family;
use super::model::{Env, Expr, Model, Site};
use crate::tape::{NodeId, Tape};
use ndarray::{ArrayD, IxDyn};

/// Guide scales start at this fraction of the prior's scale, and at most at this value.
const FRACTION: f64 = 0.1;

/// Sets `init_scale` of every latent whose prior scale is an expression of other latents.
pub fn resolve(model: &mut Model) {
    let found = evaluate(model);
    for (site, scale) in found {
        if let Some(Site::Latent(l)) = model.sites.get_mut(site) {
            l.init_scale = Some(scale);
        }
    }
}

/// The argument of a family that is its scale in unconstrained space.
fn scale_argument(family: Family) -> Option<usize> {
    match family {
        Family::Normal | Family::LogNormal | Family::Laplace => Some(1),
        Family::StudentT => Some(2),
        _ => None,
    }
}

/// (site, initial guide scale) of the latents to resolve.
fn evaluate(model: &Model) -> Vec<(usize, f64)> {
    let mut tape = Tape::new();
    let mut env = Env::new(model);
    let mut found = Vec::new();
    for (i, site) in model.sites.iter().enumerate() {
        env.instance = model
            .plate_chain(site.plate())
            .into_iter()
            .map(|p| (p, 0))
            .collect();
        match site {
            Site::Latent(l) => {
                if l.init_scale.is_none()
                    && l.encoder.is_none()
                    && let Some((family, args)) = &l.prior
                    && let Some(arg) = scale_argument(*family).and_then(|k| args.get(k))
                    && !matches!(arg, Expr::Const(_))
                    && let Some(s) = env
                        .eval(&mut tape, arg)
                        .ok()
                        .and_then(|n| mean_abs(&tape, n))
                {
                    found.push((i, (FRACTION * s).min(FRACTION)));
                }
                let z = l
                    .constraint
                    .apply(l.init.map_or(0.0, |v| l.constraint.inverse(v)));
                let value = ArrayD::from_elem(IxDyn(&l.shape), z);
                env.values[i] = Some(tape.constant_real(value));
            }
            Site::Let(d) => env.values[i] = env.eval(&mut tape, &d.value).ok(),
            Site::Observe(_) | Site::Factor(_) => {}
        }
    }
    found
}

/// Mean |value| of a real node, if positive and finite.
fn mean_abs(tape: &Tape, node: NodeId) -> Option<f64> {
    let a = tape.real(node).ok()?;
    let s = a.iter().map(|v| v.abs()).sum::<f64>() / a.len().max(1) as f64;
    (s > 0.0 && s.is_finite()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::constraint::Constraint;
    use crate::infer::examples::latent;
    use std::sync::Arc;

    /// s ~ LogNormal(0, 1) starting at 2; x[g] ~ Normal(0, 0.001 s); y[g] ~ Normal(0, 3).
    fn model() -> Model {
        let mut m = Model::default();
        let g = m.plate("g", 3, None);
        let mut s = latent(
            "s",
            None,
            Family::LogNormal,
            vec![Expr::Const(0.0), Expr::Const(1.0)],
        );
        s.constraint = Constraint::Positive;
        s.init = Some(2.0);
        m.site(Site::Latent(s));
        let scale = Expr::Call(Arc::new(|t, env| {
            let s = env
                .site("s")
                .ok_or(crate::tape::TapeError::UnknownNode(0))?;
            t.scale(s, 0.001)
        }));
        m.site(Site::Latent(latent(
            "x",
            Some(g),
            Family::Normal,
            vec![Expr::Const(0.0), scale],
        )));
        m.site(Site::Latent(latent(
            "y",
            Some(g),
            Family::Normal,
            vec![Expr::Const(0.0), Expr::Const(3.0)],
        )));
        m.validate().expect("a valid model");
        m
    }

    fn init_scale(m: &Model, name: &str) -> Option<f64> {
        match &m.sites[m.sites.iter().position(|s| s.name() == name).expect(name)] {
            Site::Latent(l) => l.init_scale,
            _ => None,
        }
    }

    #[test]
    fn a_scale_of_other_latents_is_evaluated_at_their_initial_locations() {
        let mut m = model();
        resolve(&mut m);
        // 0.1 x (0.001 x 2), to rounding.
        let x = init_scale(&m, "x").expect("x resolved");
        assert!((x - 2e-4).abs() < 1e-18, "{x}");
        // Constant scales are the planner's, left alone here.
        assert_eq!(init_scale(&m, "y"), None);
        assert_eq!(init_scale(&m, "s"), None);
    }
}
