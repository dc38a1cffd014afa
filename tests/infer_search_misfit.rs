//! The targeted round of the mode search (`--search-misfit`, `spread::infer::search::
//! search_misfits`) on a Poisson model whose one instance sits in a local mode that cannot
//! explain its counts: x_g ~ Normal(0, 3), 40 counts per group, all 40, with rate
//!   mu(x) = 2 + 50 exp(-(x - 3)^2 / 8) + 20 exp(-(x + 2)^2 / 0.5),
//! a broad bump that reaches 40 at x = 3 - sqrt(8 ln(50/38)) = 1.518 (and 4.482), and a narrow
//! one near -2 whose top, mu ~ 24, explains the counts far worse (~ -140 nats). Groups 0-4
//! start at x = 1.5, group 5 at -1.5, in the narrow bump's basin, which plain SVI cannot leave.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ndarray::{ArrayD, IxDyn};
use spread::infer::dist::Family;
use spread::infer::examples::{latent, observe};
use spread::infer::fit_check::fit_check;
use spread::infer::model::{Expr, Model, Site};
use spread::infer::optim::{Adam, LrSchedule};
use spread::infer::reduce::SingleProcess;
use spread::infer::search::{MisfitSearch, ModeSearch};
use spread::infer::svi::{self, SviConfig, SviState};
use spread::tape::elementwise::softplus;
use std::sync::Arc;

const GROUPS: usize = 6;
const COUNTS: usize = 40;
const Y: f64 = 40.0;
const STUCK: usize = 5;

fn mu(x: f64) -> f64 {
    2.0 + 50.0 * (-(x - 3.0).powi(2) / 8.0).exp() + 20.0 * (-(x + 2.0).powi(2) / 0.5).exp()
}

fn model() -> Model {
    let mut m = Model::default();
    let g = m.plate("g", GROUPS, None);
    m.data("y", vec![g], ArrayD::from_elem(IxDyn(&[GROUPS, COUNTS]), Y));
    m.site(Site::Latent(latent(
        "x",
        Some(g),
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(3.0)],
    )));
    let rate = Expr::Call(Arc::new(|t, env| {
        let x = env
            .site("x")
            .ok_or(spread::tape::TapeError::UnknownNode(0))?;
        let c =
            |t: &mut spread::tape::Tape, v: f64| t.constant_real(ArrayD::from_elem(IxDyn(&[]), v));
        let bump = |t: &mut spread::tape::Tape, centre: f64, width2: f64, height: f64| {
            let shift = c(t, -centre);
            let d = t.add(x, shift)?;
            let d2 = t.square(d)?;
            let k = c(t, -1.0 / width2);
            let e = t.mul(d2, k)?;
            let e = t.exp(e)?;
            let h = c(t, height);
            t.mul(e, h)
        };
        let broad = bump(t, 3.0, 8.0, 50.0)?;
        let narrow = bump(t, -2.0, 0.5, 20.0)?;
        let sum = t.add(broad, narrow)?;
        let base = c(t, 2.0);
        let r = t.add(sum, base)?;
        let ones = t.constant_real(ArrayD::ones(IxDyn(&[COUNTS])));
        t.mul(ones, r)
    }));
    m.site(Site::Observe(observe(
        "y",
        Some(g),
        Family::Poisson,
        vec![rate],
        Expr::Data("y".into()),
    )));
    m.validate().expect("a valid model");
    m
}

fn config(steps: u64, misfit: Option<MisfitSearch>, m: &Model) -> SviConfig {
    SviConfig {
        steps,
        seed: 5,
        adam: Adam {
            lr: 0.05,
            schedule: LrSchedule::Exponential {
                decay: 0.05,
                every: steps,
            },
            ..Adam::default()
        },
        search: Some(ModeSearch {
            sites: vec![m.site_index("x").expect("x")],
            candidates: 4,
            refine_steps: 100,
            // A wide round at a step the fit never reaches: only the targeted one runs.
            at_steps: vec![u64::MAX],
            misfit,
        }),
        ..SviConfig::default()
    }
}

/// A fresh state with group `STUCK` started at -1.5, the others at 1.5.
fn start(m: &Model, seed: u64) -> SviState {
    let mut st = SviState::new(m, seed);
    for g in 0..GROUPS {
        let at = loc_index(m, &st, g);
        st.params[at] = if g == STUCK { -1.5 } else { 1.5 };
    }
    st
}

fn loc_index(m: &Model, st: &SviState, g: usize) -> usize {
    let b = st.layout.blocks[m.site_index("x").expect("x")]
        .as_ref()
        .expect("x has a guide");
    b.instance_offset(g)
}

/// Guide location and sd of x_g.
fn guide(m: &Model, st: &SviState, g: usize) -> (f64, f64) {
    let at = loc_index(m, st, g);
    (st.params[at], softplus(st.params[at + 1]))
}

fn run(m: &Model, cfg: &SviConfig, st: SviState) -> SviState {
    svi::run(m, cfg, st, &SingleProcess, &mut |_| {}).expect("fit")
}

/// log p(y_g, x) of one group: its counts' Poisson log-likelihood and the prior.
fn log_joint(x: f64) -> f64 {
    let l = mu(x);
    let lgamma = statrs::function::gamma::ln_gamma(Y + 1.0);
    let prior = -0.5 * (x / 3.0).powi(2) - (3.0 * (2.0 * std::f64::consts::PI).sqrt()).ln();
    COUNTS as f64 * (Y * l.ln() - l - lgamma) + prior
}

#[test]
fn the_check_names_the_stuck_group_and_the_targeted_round_moves_it_alone() {
    let m = model();
    let plain = run(&m, &config(600, None, &m), start(&m, 5));
    let (stuck_x, stuck_sd) = guide(&m, &plain, STUCK);
    assert!((stuck_x + 2.0).abs() < 0.3, "plain SVI left x at {stuck_x}");
    let check = fit_check(&m, &plain, 4).unwrap().expect("a Poisson plate");
    assert_eq!(check.misfits(), vec![STUCK], "{check:?}");

    let misfit = MisfitSearch {
        at_step: 200,
        candidates: 16,
    };
    let searched = run(&m, &config(600, Some(misfit), &m), start(&m, 5));
    assert_eq!(searched.searches.len(), 1);
    let round = &searched.searches[0];
    assert_eq!(round.targeted.as_deref(), Some(&[STUCK][..]), "{round:?}");
    assert_eq!(round.instances, GROUPS);
    assert_eq!(round.moved.len(), 1, "{round:?}");
    let (g, _, gain) = round.moved[0];
    assert_eq!(g, STUCK);
    // Every group ends where the counts put it: 1.518 (or the mirror point 4.482).
    for g in 0..GROUPS {
        let (x, _) = guide(&m, &searched, g);
        assert!(
            (x - 1.518).abs() < 0.05 || (x - 4.482).abs() < 0.05,
            "group {g}: {x}"
        );
    }
    // The gain is the ELBO difference of two Gaussian guides at the modes, log p(y, x) at
    // their locations plus the entropy difference ln(sd_right / sd_stuck) (each guide's
    // E[log p] falls 1/2 below log p at its mode); the round scores 4 shared draws.
    let (right_x, right_sd) = guide(&m, &searched, STUCK);
    let expected = log_joint(right_x) - log_joint(stuck_x) + (right_sd / stuck_sd).ln();
    assert!(
        expected > 100.0 && (gain - expected).abs() < 2.0,
        "gain {gain} against {expected} (x {stuck_x} -> {right_x})"
    );
    let check = fit_check(&m, &searched, 4)
        .unwrap()
        .expect("a Poisson plate");
    assert!(check.misfits().is_empty(), "{check:?}");
}

#[test]
fn with_nothing_misfit_the_round_changes_nothing_and_a_resumed_run_repeats_it() {
    let m = model();
    let all_right = |m: &Model| {
        let mut st = start(m, 5);
        let at = loc_index(m, &st, STUCK);
        st.params[at] = 1.5;
        st
    };
    let misfit = MisfitSearch {
        at_step: 100,
        candidates: 8,
    };
    let plain = run(&m, &config(300, None, &m), all_right(&m));
    let searched = run(&m, &config(300, Some(misfit.clone()), &m), all_right(&m));
    assert_eq!(searched.searches.len(), 1);
    assert_eq!(searched.searches[0].targeted, Some(Vec::new()));
    assert!(searched.searches[0].moved.is_empty());
    assert_eq!(plain.params, searched.params);

    // With the stuck group: stop after the round, resume, and get the same run to the bit.
    let whole = run(&m, &config(300, Some(misfit.clone()), &m), start(&m, 5));
    let mut first = config(300, Some(misfit.clone()), &m);
    first.steps = 150;
    let half = run(&m, &first, start(&m, 5));
    let resumed = run(&m, &config(300, Some(misfit), &m), half);
    assert_eq!(whole.searches, resumed.searches);
    assert_eq!(whole.params, resumed.params);
    assert_eq!(whole.searches[0].moved.len(), 1);
}
