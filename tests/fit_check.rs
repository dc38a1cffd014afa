//! The per-instance goodness-of-fit check (`spread::infer::fit_check`): six groups of 60 counts,
//! each fitted with its own Poisson rate. Five groups are Poisson(20) draws and fit as their
//! noise allows (|z| of order one); group 3 holds counts of 5 and 35 alternately, which no
//! single rate explains: at its fitted rate 20 a log-likelihood of −8.55 per count against an
//! expected −2.92 (338 nats over the 60, z ≈ −62, computed here by direct sums over the
//! counts). The check must name group 3 alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ndarray::{ArrayD, IxDyn};
use rand::SeedableRng;
use rand_distr::{Distribution, Poisson};
use spread::infer::dist::Family;
use spread::infer::examples::{latent, observe};
use spread::infer::fit_check::{MISFIT_Z, fit_check, note};
use spread::infer::model::{Expr, Model, Site};
use spread::infer::optim::Adam;
use spread::infer::reduce::SingleProcess;
use spread::infer::svi::{self, SviConfig, SviState};
use std::sync::Arc;

const GROUPS: usize = 6;
const COUNTS: usize = 60;
const MISFIT: usize = 3;

fn counts() -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let poisson = Poisson::new(20.0).unwrap();
    (0..GROUPS * COUNTS)
        .map(|k| match k / COUNTS {
            MISFIT if k % 2 == 0 => 5.0,
            MISFIT => 35.0,
            _ => poisson.sample(&mut rng),
        })
        .collect()
}

fn model() -> Model {
    let mut m = Model::default();
    let g = m.plate("g", GROUPS, None);
    m.data(
        "y",
        vec![g],
        ArrayD::from_shape_vec(IxDyn(&[GROUPS, COUNTS]), counts()).unwrap(),
    );
    m.site(Site::Latent(latent(
        "log_rate",
        Some(g),
        Family::Normal,
        vec![Expr::Const(3.0), Expr::Const(1.0)],
    )));
    let rate = Expr::Call(Arc::new(|t, env| {
        let l = env
            .site("log_rate")
            .ok_or(spread::tape::TapeError::UnknownNode(0))?;
        let r = t.exp(l)?;
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

/// log P(y | 20) − E[log P(Y | 20)] summed over group 3's counts, and the sd of the sum, by
/// direct sums over 0..400 counts.
fn misfit_closed_form() -> (f64, f64) {
    let log_p = |y: f64| y * 20f64.ln() - 20.0 - statrs::function::gamma::ln_gamma(y + 1.0);
    let (m1, m2) = (0..400).map(f64::from).fold((0.0, 0.0), |(a, b), y| {
        let lp = log_p(y);
        (a + lp.exp() * lp, b + lp.exp() * lp * lp)
    });
    let observed: f64 = (0..COUNTS)
        .map(|k| log_p(if k % 2 == 0 { 5.0 } else { 35.0 }))
        .sum();
    (
        observed - COUNTS as f64 * m1,
        (COUNTS as f64 * (m2 - m1 * m1)).sqrt(),
    )
}

#[test]
fn the_check_names_the_one_group_its_rate_cannot_explain() {
    let m = model();
    let cfg = SviConfig {
        steps: 1500,
        seed: 2,
        adam: Adam {
            lr: 0.02,
            ..Adam::default()
        },
        ..SviConfig::default()
    };
    let st = svi::run(&m, &cfg, SviState::new(&m, 2), &SingleProcess, &mut |_| {}).unwrap();
    let check = fit_check(&m, &st, 8).unwrap().expect("a Poisson plate");
    assert_eq!(check.plate, "g");
    for f in &check.instances {
        if f.instance == MISFIT {
            let (excess, sd) = misfit_closed_form();
            assert!((f.excess_nats - excess).abs() < 3.0, "{f:?} vs {excess}");
            assert!((f.sd_nats - sd).abs() < 0.05, "{f:?} vs {sd}");
        } else {
            assert!(f.z.abs() < 4.0, "group {}: {f:?}", f.instance);
        }
    }
    let n = note(&check).expect("a note");
    assert!(
        n.contains("1 of 6 instances of plate `g`") && n.contains("g 3 (z = "),
        "{n}"
    );
    const { assert!(MISFIT_Z > -30.0) };
}
