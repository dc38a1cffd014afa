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
    groups_model(counts(), None, None)
}

/// GROUPS groups of COUNTS counts `y`, each with its rate exp(log_rate), observed as Poisson, with
/// per-count data `x` and a correction flow when given.
fn groups_model(
    y: Vec<f64>,
    x: Option<Vec<f64>>,
    correction: Option<spread::infer::flow::CorrectionSpec>,
) -> Model {
    let mut m = Model::default();
    let g = m.plate("g", GROUPS, None);
    let table = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&[GROUPS, COUNTS]), v).unwrap();
    m.data("y", vec![g], table(y));
    if let Some(x) = x {
        m.data("x", vec![g], table(x));
    }
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
    let mut o = observe(
        "y",
        Some(g),
        Family::Poisson,
        vec![rate],
        Expr::Data("y".into()),
    );
    o.correction = correction.map(Arc::new);
    m.site(Site::Observe(o));
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

/// A gain flow's observations are checked at the corrected expectation μ e^h. Six groups of 60
/// counts drawn as Poisson(20 e^{0.8 x}) with x from −1 to 1 along each group, fitted by a
/// Poisson rate of 20 (its guide pinned there) under a gain flow given x (a conditioner without
/// hidden layer: h = w x + b). With w = 0.8 the check's excess and sd of every group equal the
/// direct sums over the counts at 20 e^{0.8 x} (and every |z| is of order one); with the flow at
/// the identity (w = 0), the direct sums at 20, every group named. An affine-coupling flow,
/// which changes the residual's law rather than the mean, is checked on the uncorrected
/// Poisson likelihood whatever its parameters.
#[test]
fn a_gain_flow_is_checked_at_its_corrected_expectation() {
    use spread::infer::flow::{ContextInput, CorrectionSpec, FlowKind};
    use spread::infer::guide::softplus_inv;
    use spread::infer::mlp::Mlp;
    use spread::tape::linalg::Activation;
    const SLOPE: f64 = 0.8;
    let x = |k: usize| -1.0 + 2.0 * k as f64 / (COUNTS - 1) as f64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let y: Vec<f64> = (0..GROUPS * COUNTS)
        .map(|k| {
            Poisson::new(20.0 * (SLOPE * x(k % COUNTS)).exp())
                .unwrap()
                .sample(&mut rng)
        })
        .collect();
    let xs: Vec<f64> = (0..GROUPS * COUNTS).map(|k| x(k % COUNTS)).collect();
    let build = |kind: FlowKind| {
        let flow = CorrectionSpec {
            flow: "flat_field".into(),
            kind,
            conditioner: Mlp {
                widths: vec![1, kind.outputs()],
                activation: Activation::Tanh,
            },
            context: vec![ContextInput {
                expr: Expr::Data("x".into()),
                per_row: true,
                width: 1,
            }],
            penalty: 1.0,
            readout: 1.0,
            given_expected: false,
            check: None,
        };
        groups_model(y.clone(), Some(xs.clone()), Some(flow))
    };
    // The state with log_rate pinned at ln 20 and the conditioner's first weight at `w`.
    let pinned = |m: &Model, w: f64| {
        let mut st = SviState::new(m, 3);
        let rate = st.layout.blocks[m.site_index("log_rate").unwrap()]
            .clone()
            .unwrap();
        for g in 0..GROUPS {
            let at = rate.instance_offset(g);
            st.params[at] = 20f64.ln();
            st.params[at + 1] = softplus_inv(1e-9);
        }
        let flow = st.layout.blocks[m.site_index("y").unwrap()]
            .clone()
            .unwrap();
        st.params[flow.offset..flow.offset + flow.len()].fill(0.0);
        st.params[flow.offset] = w;
        st
    };
    // Direct sums over 0..500 counts of one group's excess and variance at expected counts m(k).
    let direct = |g: usize, m: &dyn Fn(usize) -> f64| {
        let (mut excess, mut var) = (0.0, 0.0);
        for k in 0..COUNTS {
            let mu = m(k);
            let log_p = |y: f64| y * mu.ln() - mu - statrs::function::gamma::ln_gamma(y + 1.0);
            let (m1, m2) = (0..500).map(f64::from).fold((0.0, 0.0), |(a, b), y| {
                let lp = log_p(y);
                (a + lp.exp() * lp, b + lp.exp() * lp * lp)
            });
            excess += log_p(y[g * COUNTS + k]) - m1;
            var += m2 - m1 * m1;
        }
        (excess, var.sqrt())
    };
    let gain_model = build(FlowKind::Gain);
    for (w, expect_named) in [(SLOPE, false), (0.0, true)] {
        let check = fit_check(&gain_model, &pinned(&gain_model, w), 2)
            .unwrap()
            .expect("a Poisson plate");
        assert!(!check.corrected, "a gain flow is checked as corrected");
        for f in &check.instances {
            let (excess, sd) = direct(f.instance, &|k| 20.0 * (w * x(k)).exp());
            assert!(
                (f.excess_nats - excess).abs() < 1e-4,
                "w = {w}: {f:?} vs {excess}"
            );
            assert!((f.sd_nats - sd).abs() < 1e-6, "w = {w}: {f:?} vs {sd}");
            if expect_named {
                assert!(f.z < MISFIT_Z, "w = {w}: {f:?}");
            } else {
                assert!(f.z.abs() < 4.0, "w = {w}: {f:?}");
            }
        }
    }
    let affine = build(FlowKind::AffineCoupling);
    let check = fit_check(&affine, &pinned(&affine, SLOPE), 2)
        .unwrap()
        .unwrap();
    assert!(check.corrected);
    for f in &check.instances {
        let (excess, _) = direct(f.instance, &|_| 20.0);
        assert!((f.excess_nats - excess).abs() < 1e-4, "{f:?} vs {excess}");
    }
}
