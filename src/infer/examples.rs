//! Reference models built directly with the program API, as the IR interpreter would build
//! them: used by the inference proofs (tests/infer_*.rs) and the SVI benchmarks.
//!
//! In: data (or sizes and a seed for synthetic data). Out: validated `Model`s.

use super::constraint::Constraint;
use super::dist::Family;
use super::model::{Expr, GuideKind, LatentSite, Model, ModelError, ObserveSite, Site};
use super::rng::{StreamKey, standard_normal};
use ndarray::{Array1, Array2, ArrayD, IxDyn};
use std::sync::Arc;

/// A latent with the usual defaults (mean-field, real line, scalar).
pub fn latent(name: &str, plate: Option<usize>, family: Family, args: Vec<Expr>) -> LatentSite {
    LatentSite {
        name: name.into(),
        plate,
        shape: vec![],
        prior: Some((family, args)),
        constraint: Constraint::Real,
        guide: GuideKind::MeanField,
        init: None,
        init_scale: None,
        encoder: None,
        label: format!("latent {name}"),
    }
}

/// An observe site.
pub fn observe(
    name: &str,
    plate: Option<usize>,
    family: Family,
    args: Vec<Expr>,
    value: Expr,
) -> ObserveSite {
    ObserveSite {
        correction: None,
        name: name.into(),
        plate,
        family,
        args,
        value,
        label: format!("observe {name}"),
    }
}

fn column(v: &[f64]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap_or_default()
}

/// A fit of `m` from its guide's start with `cfg` (seed `cfg.seed`), in one process: what the
/// tests of the searches and scans run.
pub fn fit(
    m: &Model,
    cfg: &super::svi::SviConfig,
) -> Result<super::svi::SviState, super::error::InferError> {
    super::svi::run(
        m,
        cfg,
        super::svi::SviState::new(m, cfg.seed),
        &super::reduce::SingleProcess,
        &mut |_| {},
    )
}

/// Eight schools, non-centred: mu ~ N(0,5), tau ~ HalfCauchy(5), eta_j ~ N(0,1),
/// y_j ~ N(mu + tau eta_j, sigma_j).
pub fn eight_schools(y: &[f64], sigma: &[f64]) -> Result<Model, ModelError> {
    let mut m = Model::default();
    let school = m.plate("school", y.len(), None);
    m.data("y", vec![school], column(y))
        .data("sigma", vec![school], column(sigma));
    m.site(Site::Latent(latent(
        "mu",
        None,
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(5.0)],
    )));
    let mut tau = latent("tau", None, Family::HalfCauchy, vec![Expr::Const(5.0)]);
    tau.constraint = Constraint::Positive;
    tau.init = Some(1.0);
    m.site(Site::Latent(tau));
    m.site(Site::Latent(latent(
        "eta",
        Some(school),
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(1.0)],
    )));
    let theta = Expr::Call(Arc::new(|t, env| {
        let (mu, tau, eta) = (env.site("mu"), env.site("tau"), env.site("eta"));
        let (Some(mu), Some(tau), Some(eta)) = (mu, tau, eta) else {
            return Err(crate::tape::TapeError::UnknownNode(usize::MAX));
        };
        let te = t.mul(tau, eta)?;
        t.add(mu, te)
    }));
    m.site(Site::Observe(observe(
        "y",
        Some(school),
        Family::Normal,
        vec![theta, Expr::Data("sigma".into())],
        Expr::Data("y".into()),
    )));
    m.validate()?;
    Ok(m)
}

/// mu ~ N(prior_mean, prior_sd); x_i ~ N(mu, noise_sd): the conjugate normal-normal model.
pub fn normal_normal(
    x: &[f64],
    prior_mean: f64,
    prior_sd: f64,
    noise_sd: f64,
) -> Result<Model, ModelError> {
    let mut m = Model::default();
    let obs = m.plate("obs", x.len(), None);
    m.data("x", vec![obs], column(x));
    m.site(Site::Latent(latent(
        "mu",
        None,
        Family::Normal,
        vec![Expr::Const(prior_mean), Expr::Const(prior_sd)],
    )));
    let args = vec![Expr::Site("mu".into()), Expr::Const(noise_sd)];
    m.site(Site::Observe(observe(
        "x",
        Some(obs),
        Family::Normal,
        args,
        Expr::Data("x".into()),
    )));
    m.validate()?;
    Ok(m)
}

/// w ~ N(0, prior_sd I); y_i ~ N(x_i · w, noise_sd), with the given guide on w.
pub fn linear_regression(
    x: &Array2<f64>,
    y: &Array1<f64>,
    prior_sd: f64,
    noise_sd: f64,
    guide: GuideKind,
) -> Result<Model, ModelError> {
    let mut m = Model::default();
    let row = m.plate("row", y.len(), None);
    m.data("x", vec![row], x.clone().into_dyn())
        .data("y", vec![row], y.clone().into_dyn());
    let mut w = latent(
        "w",
        None,
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(prior_sd)],
    );
    w.shape = vec![x.ncols()];
    w.guide = guide;
    m.site(Site::Latent(w));
    let mean = Expr::Call(Arc::new(|t, env| {
        let (Some(w), Some(xi)) = (env.site("w"), env.data_slice("x")) else {
            return Err(crate::tape::TapeError::UnknownNode(usize::MAX));
        };
        let xn = t.constant_real(xi);
        let p = t.mul(xn, w)?;
        t.sum(p)
    }));
    let args = vec![mean, Expr::Const(noise_sd)];
    m.site(Site::Observe(observe(
        "y",
        Some(row),
        Family::Normal,
        args,
        Expr::Data("y".into()),
    )));
    m.validate()?;
    Ok(m)
}

/// Hierarchical regression on synthetic data: a ~ N(0,5), s ~ HalfNormal(2), b ~ N(0,2);
/// per group g: alpha_g ~ N(a, s); y_gi ~ N(alpha_g + b x_gi, 1), `per_group` rows per group.
/// The likelihood broadcasts over a leading group axis, so the plate may be chunked.
/// The likelihood broadcasts over a leading group axis, so the plate may be chunked.
pub fn hierarchical_regression(
    groups: usize,
    per_group: usize,
    seed: u64,
) -> Result<Model, ModelError> {
    let key = |site| StreamKey {
        seed,
        step: 0,
        particle: 0,
        site,
        instance: 0,
    };
    let x = standard_normal(&mut key(1).rng(), &[groups, per_group]);
    let alpha = standard_normal(&mut key(2).rng(), &[groups]).mapv(|v| 1.0 + 0.5 * v);
    let noise = standard_normal(&mut key(3).rng(), &[groups, per_group]);
    let y = ArrayD::from_shape_fn(IxDyn(&[groups, per_group]), |i| {
        alpha[[i[0]]] + 0.7 * x[[i[0], i[1]]] + noise[[i[0], i[1]]]
    });
    let mut m = Model::default();
    let group = m.plate("group", groups, None);
    m.data("x", vec![group], x).data("y", vec![group], y);
    m.site(Site::Latent(latent(
        "a",
        None,
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(5.0)],
    )));
    let mut s = latent("s", None, Family::HalfNormal, vec![Expr::Const(2.0)]);
    s.constraint = Constraint::Positive;
    s.init = Some(1.0);
    m.site(Site::Latent(s));
    m.site(Site::Latent(latent(
        "b",
        None,
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(2.0)],
    )));
    let prior = vec![Expr::Site("a".into()), Expr::Site("s".into())];
    m.site(Site::Latent(latent(
        "alpha",
        Some(group),
        Family::Normal,
        prior,
    )));
    let mean = Expr::Call(Arc::new(|t, env| {
        let (Some(alpha), Some(b), Some(x)) =
            (env.site("alpha"), env.site("b"), env.data_node(t, "x"))
        else {
            return Err(crate::tape::TapeError::UnknownNode(usize::MAX));
        };
        let shape = t.shape(x).to_vec();
        let mut column = shape[..shape.len() - 1].to_vec();
        column.push(1);
        let xn = x;
        let bx = t.mul(b, xn)?;
        // alpha is [] for one instance or [rows] for a chunk; x is [n] or [rows, n].
        let alpha = if column.len() > 1 {
            t.reshape(alpha, &column)?
        } else {
            alpha
        };
        t.add(alpha, bx)
    }));
    let args = vec![mean, Expr::Const(1.0)];
    m.site(Site::Observe(observe(
        "y",
        Some(group),
        Family::Normal,
        args,
        Expr::Data("y".into()),
    )));
    m.validate()?;
    Ok(m)
}
