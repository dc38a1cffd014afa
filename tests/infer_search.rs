//! The mode search (`spread::infer::search`) on a model with two modes per instance and a
//! known answer: x_g ~ Normal(1.5, 1), y_g ~ Normal(x_g², 0.05) with y_g = 4, so x_g = ±2
//! fit the data equally and the prior prefers +2 by 6 nats. Every guide starts at x = -1, in
//! the basin of the wrong mode -2, which plain SVI cannot leave. Near +2 the posterior is
//! Normal with mean 2 - 0.5 (0.05/4)² / (1 + (0.05/4)²) = 1.99992 and sd 0.0125 (the
//! likelihood linearized: x² ≈ 4 + 4 (x - 2)). A global c ~ Normal(0, 1), observed through
//! z ~ Normal(c, 0.1) with z = 0.5, checks that the search leaves dataset-level guides alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ndarray::{ArrayD, IxDyn};
use spread::infer::dist::Family;
use spread::infer::examples::{latent, observe};
use spread::infer::model::{Expr, Model, Site};
use spread::infer::optim::{Adam, LrSchedule};
use spread::infer::reduce::SingleProcess;
use spread::infer::search::{ModeSearch, search};
use spread::infer::svi::{self, SviConfig, SviState};
use std::sync::Arc;

const GROUPS: usize = 5;
/// Posterior mean of x_g in the right mode (see the module comment).
const RIGHT_MEAN: f64 = 1.999_921_9;

fn model() -> Model {
    let mut m = Model::default();
    let g = m.plate("g", GROUPS, None);
    m.data("y", vec![g], ArrayD::from_elem(IxDyn(&[GROUPS]), 4.0));
    m.data("z", vec![], ArrayD::from_elem(IxDyn(&[]), 0.5));
    m.site(Site::Latent(latent(
        "c",
        None,
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(1.0)],
    )));
    m.site(Site::Observe(observe(
        "zc",
        None,
        Family::Normal,
        vec![Expr::Site("c".into()), Expr::Const(0.1)],
        Expr::Data("z".into()),
    )));
    let mut x = latent(
        "x",
        Some(g),
        Family::Normal,
        vec![Expr::Const(1.5), Expr::Const(1.0)],
    );
    x.init = Some(-1.0);
    m.site(Site::Latent(x));
    let square = Expr::Call(Arc::new(|t, env| {
        let x = env
            .site("x")
            .ok_or(spread::tape::TapeError::UnknownNode(0))?;
        t.square(x)
    }));
    m.site(Site::Observe(observe(
        "y",
        Some(g),
        Family::Normal,
        vec![square, Expr::Const(0.05)],
        Expr::Data("y".into()),
    )));
    m.validate().expect("a valid model");
    m
}

fn config(steps: u64, search: Option<ModeSearch>) -> SviConfig {
    SviConfig {
        steps,
        seed: 3,
        adam: Adam {
            lr: 0.05,
            schedule: LrSchedule::Exponential {
                decay: 0.01,
                every: 400,
            },
            ..Adam::default()
        },
        search,
        ..SviConfig::default()
    }
}

fn x_search(m: &Model, at: Vec<u64>) -> ModeSearch {
    ModeSearch {
        sites: vec![m.site_index("x").expect("x")],
        candidates: 8,
        refine_steps: 50,
        at_steps: at,
        misfit: None,
    }
}

/// Guide location of x_g.
fn x_loc(m: &Model, st: &SviState, g: usize) -> f64 {
    let b = st.layout.blocks[m.site_index("x").expect("x")]
        .as_ref()
        .expect("x has a guide");
    st.params[b.instance_offset(g)]
}

fn fit(m: &Model, cfg: &SviConfig) -> SviState {
    spread::infer::examples::fit(m, cfg).expect("fit")
}

#[test]
fn plain_svi_stays_in_the_wrong_mode_and_the_search_moves_every_instance_out() {
    let m = model();
    let plain = fit(&m, &config(400, None));
    for g in 0..GROUPS {
        let x = x_loc(&m, &plain, g);
        assert!(
            (x + 2.0).abs() < 0.01,
            "group {g}: plain SVI at {x}, not the -2 mode"
        );
    }
    let searched = fit(&m, &config(1000, Some(x_search(&m, vec![50]))));
    assert_eq!(searched.searches.len(), 1);
    let round = &searched.searches[0];
    assert_eq!(round.moved.len(), GROUPS, "{round:?}");
    // Each instance's score is the ELBO of 4 draws; converged, the modes differ by
    // log N(2; 1.5, 1) - log N(-2; 1.5, 1) = 6 nats.
    let gains: Vec<f64> = round.moved.iter().map(|m| m.2).collect();
    assert!(gains.iter().all(|&g| g > 0.0), "{gains:?}");
    let mean_gain = gains.iter().sum::<f64>() / GROUPS as f64;
    assert!((mean_gain - 6.0).abs() < 1.0, "{gains:?}");
    for g in 0..GROUPS {
        let x = x_loc(&m, &searched, g);
        // Within a fifth of the posterior sd (0.0125) of the closed-form mean.
        // Within 0.4 posterior sds (0.0125) of the closed-form mean.
        assert!((x - RIGHT_MEAN).abs() < 0.005, "group {g}: {x}");
    }
}

#[test]
fn the_search_leaves_dataset_level_guides_alone() {
    let m = model();
    let mut state = fit(&m, &config(50, None));
    let before = state.clone();
    let cfg = config(400, None);
    let scales = state.layout.step_scales(&m);
    let round = search(
        &m,
        &mut state,
        &x_search(&m, vec![50]),
        &cfg,
        &SingleProcess,
        &scales,
    )
    .expect("search");
    assert_eq!(round.moved.len(), GROUPS);
    let c = state.layout.blocks[m.site_index("c").expect("c")]
        .clone()
        .expect("c has a guide");
    let range = c.offset..c.offset + c.len();
    assert_eq!(state.params[range.clone()], before.params[range.clone()]);
    assert_eq!(state.m[range.clone()], before.m[range]);
    assert_eq!(state.step, before.step);
}

#[test]
fn a_resumed_run_repeats_the_search_to_the_bit() {
    let m = model();
    let search = || Some(x_search(&m, vec![30, 60]));
    let straight = fit(&m, &config(100, search()));
    let half = fit(&m, &config(50, search()));
    let resumed = svi::run(
        &m,
        &config(100, search()),
        half,
        &SingleProcess,
        &mut |_| {},
    )
    .expect("resume");
    assert_eq!(straight.params, resumed.params);
    assert_eq!(straight.searches, resumed.searches);
    assert_eq!(straight.searches.len(), 2);
}

/// With `guide partial_centring` the guide's location is ũ's, not x's: the search must start
/// ũ at λμ + (x - μ) / σ^(1-λ) for the drawn x (here μ = 1.5, σ = 1, so ũ = x - 1.5 (1 - λ)),
/// and the fit still ends in the right mode at the closed-form mean.
#[test]
fn the_search_starts_a_partially_centred_latent_through_its_centring() {
    let mut m = model();
    let site = m.site_index("x").expect("x");
    if let Site::Latent(l) = &mut m.sites[site] {
        l.guide = spread::infer::model::GuideKind::PartialCentring;
    }
    let searched = fit(&m, &config(1000, Some(x_search(&m, vec![50]))));
    assert_eq!(searched.searches[0].moved.len(), GROUPS);
    let b = searched.layout.blocks[site]
        .as_ref()
        .expect("x has a guide");
    let lambda = 1.0 / (1.0 + (-searched.params[b.centring_offset()]).exp());
    for g in 0..GROUPS {
        let x = x_loc(&m, &searched, g) + 1.5 * (1.0 - lambda);
        assert!(
            (x - RIGHT_MEAN).abs() < 0.005,
            "group {g}: {x} (λ {lambda})"
        );
    }
}
