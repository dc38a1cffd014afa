//! The profile scan (`spread::infer::scan`) on a dataset-level latent with two modes and a
//! known answer: c ~ Normal(1.5, 1), y_g ~ Normal(c², 0.5) with y_g of mean 4 in five groups (a
//! mini-batch of 2 a step), so c = ±2 fit the data equally and the prior prefers +2 by 6 nats.
//! The guide starts at c = -1, in the basin of the wrong mode -2, which plain SVI cannot leave
//! (c = 0 is 160 nats below either mode). Near +2 the posterior has sd ≈ 1/√321 = 0.056; its
//! mean there is integrated numerically over c > 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ndarray::{ArrayD, IxDyn};
use spread::infer::dist::Family;
use spread::infer::examples::{latent, observe};
use spread::infer::model::{Expr, Model, Site};
use spread::infer::optim::{Adam, LrSchedule};
use spread::infer::reduce::SingleProcess;
use spread::infer::scan::{ProfileScan, Refiner, check_site, scan};
use spread::infer::svi::{self, Hold, SviConfig, SviState};
use spread::run::profile::{end_check, end_note, grid};
use std::sync::Arc;

const GROUPS: usize = 5;
/// y_g, mean 4: a mini-batch's scaled sum differs from the full one.
const Y: [f64; GROUPS] = [4.0, 3.6, 4.4, 3.8, 4.2];
const SIGMA: f64 = 0.5;

/// The square of latent `name`, as an expression.
fn square_of(name: &'static str) -> Expr {
    Expr::Call(Arc::new(move |t, env| {
        let v = env
            .site(name)
            .ok_or(spread::tape::TapeError::UnknownNode(0))?;
        t.square(v)
    }))
}

fn model(init_scale: Option<f64>) -> Model {
    let mut m = Model::default();
    let g = m.plate("g", GROUPS, None);
    m.plates[g].subsample = Some(2);
    m.data(
        "y",
        vec![g],
        ArrayD::from_shape_vec(IxDyn(&[GROUPS]), Y.to_vec()).unwrap(),
    );
    let mut c = latent(
        "c",
        None,
        Family::Normal,
        vec![Expr::Const(1.5), Expr::Const(1.0)],
    );
    c.init = Some(-1.0);
    c.init_scale = init_scale;
    m.site(Site::Latent(c));
    m.site(Site::Latent(latent(
        "x",
        Some(g),
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(1.0)],
    )));
    let square = square_of("c");
    m.site(Site::Observe(observe(
        "y",
        Some(g),
        Family::Normal,
        vec![square, Expr::Const(SIGMA)],
        Expr::Data("y".into()),
    )));
    m.validate().expect("a valid model");
    m
}

fn config(steps: u64, scan: Option<ProfileScan>) -> SviConfig {
    adam_config((steps, 5), (0.05, 400), scan)
}

/// `steps` Adam steps from `lr`, decaying 100x over `every` steps.
fn adam_config(
    (steps, seed): (u64, u64),
    (lr, every): (f64, u64),
    scan: Option<ProfileScan>,
) -> SviConfig {
    SviConfig {
        steps,
        seed,
        adam: Adam {
            lr,
            schedule: LrSchedule::Exponential { decay: 0.01, every },
            ..Adam::default()
        },
        scan,
        ..SviConfig::default()
    }
}

fn c_scan(m: &Model, at: Vec<u64>, draws: u64) -> ProfileScan {
    ProfileScan {
        site: m.site_index("c").expect("c"),
        values: grid(-3.0, 3.0, 0.25).unwrap(),
        at_steps: at,
        draws,
        refine_steps: 0,
    }
}

fn c_loc(m: &Model, st: &SviState) -> f64 {
    let b = st.layout.blocks[m.site_index("c").expect("c")]
        .as_ref()
        .expect("c has a guide");
    st.params[b.instance_offset(0)]
}

fn fit(m: &Model, cfg: &SviConfig) -> SviState {
    spread::infer::examples::fit(m, cfg).expect("fit")
}

/// log p(y | c) + log p(c) over all five groups, up to a constant.
fn log_joint(c: f64) -> f64 {
    let lik: f64 = Y
        .iter()
        .map(|y| -(y - c * c).powi(2) / (2.0 * SIGMA * SIGMA))
        .sum();
    lik - (c - 1.5).powi(2) / 2.0
}

/// Posterior mean of c over c > 0 (the right mode), by the trapezoid rule on 0.5 ... 3.5.
fn right_mean() -> f64 {
    let (n, lo, hi) = (30_000, 0.5, 3.5);
    let h = (hi - lo) / n as f64;
    let peak = log_joint(2.0);
    let (mut w, mut wc) = (0.0, 0.0);
    for k in 0..=n {
        let c = lo + k as f64 * h;
        let f = (log_joint(c) - peak).exp() * if k == 0 || k == n { 0.5 } else { 1.0 };
        w += f;
        wc += f * c;
    }
    wc / w
}

/// With a guide of sd 1e-12 the score of a point is the log joint there (the guide's entropy
/// and the other latents' terms are the same at every point): each gain over the start c = -1
/// must be log_joint(v) - log_joint(-1), over all groups though a step sees two.
#[test]
fn gains_are_the_log_joint_differences_over_all_the_data() {
    let m = model(Some(1e-12));
    let s = c_scan(&m, vec![], 2);
    let mut st = SviState::new(&m, 5);
    let r = scan(&m, &mut st, &s, false, None).unwrap();
    assert_eq!(r.current, -1.0);
    assert!(r.moved_to.is_none(), "a reporting scan never moves");
    assert_eq!(c_loc(&m, &st), -1.0);
    for (&v, &gain) in r.values.iter().zip(&r.gains) {
        let want = log_joint(v) - log_joint(-1.0);
        assert!(
            (gain - want).abs() < 1e-7 * want.abs().max(1.0),
            "c = {v}: gain {gain}, closed form {want}"
        );
    }
    let (best, gain) = r.best().unwrap();
    assert_eq!(best, 2.0);
    assert!((gain - (log_joint(2.0) - log_joint(-1.0))).abs() < 1e-3);
}

#[test]
fn plain_svi_stays_in_the_wrong_mode_and_the_end_check_says_so() {
    let m = model(None);
    let plain = fit(&m, &config(400, None));
    let c = c_loc(&m, &plain);
    assert!((c + 2.0).abs() < 0.05, "plain SVI left the -2 basin: {c}");
    let r = end_check(&m, &plain, &c_scan(&m, vec![], 64), None).unwrap();
    assert_eq!(r.best().unwrap().0, 2.0);
    // The grid points at the two modes differ by the prior's 6 nats (the guide's sd is the
    // same at both; 64 draws leave ~0.1 nats of noise from the likelihood's skew).
    let at = |v: f64| r.gains[r.values.iter().position(|&x| x == v).unwrap()];
    let between = at(2.0) - at(-2.0);
    assert!((between - 6.0).abs() < 0.5, "+2 over -2: {between} nats");
    let note = end_note(&r).expect("a far mode is noted");
    assert!(note.contains("worse mode of c"), "{note}");
    assert_eq!(c_loc(&m, &plain), c, "the end check does not move the fit");
}

#[test]
fn the_scan_moves_the_fit_to_the_right_mode_and_the_posterior_there() {
    let m = model(None);
    let st = fit(&m, &config(400, Some(c_scan(&m, vec![100], 8))));
    assert_eq!(st.scans.len(), 1);
    let round = &st.scans[0];
    assert_eq!(round.step, 100);
    assert!((round.current + 2.0).abs() < 0.1, "{}", round.current);
    assert_eq!(round.moved_to, Some(2.0));
    let (c, want) = (c_loc(&m, &st), right_mean());
    assert!((want - 2.0).abs() < 0.01, "{want}");
    assert!(
        (c - want).abs() < 0.01,
        "fitted c {c}, posterior mean {want}"
    );
    // At the right mode the end check finds nothing better than the fit.
    let r = end_check(&m, &st, &c_scan(&m, vec![], 8), None).unwrap();
    assert!(end_note(&r).is_none(), "{:?}", r.best());
}

#[test]
fn resumed_runs_repeat_the_scan_to_the_bit() {
    let m = model(None);
    let cfg = config(120, Some(c_scan(&m, vec![50], 2)));
    let whole = fit(&m, &cfg);
    let path = std::env::temp_dir().join(format!("infer_scan_{}.msgpack", std::process::id()));
    fit(&m, &config(60, cfg.scan.clone())).save(&path).unwrap();
    let half = SviState::load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let rest = svi::run(&m, &cfg, half, &SingleProcess, &mut |_| {}).unwrap();
    assert_eq!(whole.params, rest.params);
    assert_eq!(whole.scans, rest.scans);
}

#[test]
fn only_one_element_dataset_level_latents_are_scanned() {
    let m = model(None);
    let x = m.site_index("x").unwrap();
    let e = check_site(&m, x).unwrap_err().to_string();
    assert!(e.contains("`x` lies in a plate"), "{e}");
    let y = m.site_index("y").unwrap();
    assert!(
        check_site(&m, y)
            .unwrap_err()
            .to_string()
            .contains("not a latent")
    );
    check_site(&m, m.site_index("c").unwrap()).unwrap();
}

// A sign flip that only a refined scan can see: c ~ Normal(0, 3) with w ~ Normal(c², 0.1) at
// w = 4 fixes |c| = 2; x_g ~ Normal(1, 1) and y_g ~ Normal(c x_g, 0.1) at y_g = 4 in five groups.
// The modes (c, x) = (2, 2) and (-2, -2) fit the data alike; the prior of x prefers the first.
// With x integrated out, y_g ~ Normal(c, √(c² + 0.01)), so the two modes differ by
// Σ_g [(y_g + 2)² - (y_g - 2)²] / (2 × 4.01) = 5 × 32 / 8.02 = 19.95 nats. A fit started at
// c = -1, x = -1 ends in the wrong mode; at c = +2 with x held at -2 the fit is thousands of
// nats worse, so an unrefined scan stays, and a refined one (x follows c) finds the gain.
const FLIP_SIGMA: f64 = 0.1;
const FLIP_Y: f64 = 4.0;

fn flip_model() -> Model {
    flip_model_from(-1.0, -1.0)
}

fn flip_model_from(c_init: f64, x_init: f64) -> Model {
    let mut m = Model::default();
    let g = m.plate("g", GROUPS, None);
    m.data(
        "y",
        vec![g],
        ArrayD::from_shape_vec(IxDyn(&[GROUPS]), vec![FLIP_Y; GROUPS]).unwrap(),
    );
    m.data(
        "w",
        vec![],
        ArrayD::from_shape_vec(IxDyn(&[]), vec![4.0]).unwrap(),
    );
    let mut c = latent(
        "c",
        None,
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(3.0)],
    );
    c.init = Some(c_init);
    m.site(Site::Latent(c));
    let square = square_of("c");
    m.site(Site::Observe(observe(
        "w",
        None,
        Family::Normal,
        vec![square, Expr::Const(FLIP_SIGMA)],
        Expr::Data("w".into()),
    )));
    let mut x = latent(
        "x",
        Some(g),
        Family::Normal,
        vec![Expr::Const(1.0), Expr::Const(1.0)],
    );
    x.init = Some(x_init);
    m.site(Site::Latent(x));
    let product = Expr::Call(Arc::new(|t, env| {
        let c = env
            .site("c")
            .ok_or(spread::tape::TapeError::UnknownNode(0))?;
        let x = env
            .site("x")
            .ok_or(spread::tape::TapeError::UnknownNode(1))?;
        t.mul(c, x)
    }));
    m.site(Site::Observe(observe(
        "y",
        Some(g),
        Family::Normal,
        vec![product, Expr::Const(FLIP_SIGMA)],
        Expr::Data("y".into()),
    )));
    m.validate().expect("a valid model");
    m
}

/// The gain of the mode c = +2 over c = -2 with x integrated out (the header's closed form).
fn flip_gain() -> f64 {
    let var = 4.0 + FLIP_SIGMA * FLIP_SIGMA;
    GROUPS as f64 * ((FLIP_Y + 2.0).powi(2) - (FLIP_Y - 2.0).powi(2)) / (2.0 * var)
}

fn flip_scan(m: &Model, at: Vec<u64>, refine_steps: u64) -> ProfileScan {
    ProfileScan {
        site: m.site_index("c").expect("c"),
        values: vec![-2.0, 2.0],
        at_steps: at,
        draws: 64,
        refine_steps,
    }
}

fn flip_config(steps: u64, scan: Option<ProfileScan>) -> SviConfig {
    adam_config((steps, 3), (0.02, 1500), scan)
}

#[test]
fn only_a_refined_scan_sees_a_mode_the_other_latents_must_follow() {
    let m = flip_model();
    let cfg = flip_config(1500, None);
    let plain = fit(&m, &cfg);
    let c = c_loc(&m, &plain);
    assert!((c + 2.0).abs() < 0.05, "plain SVI left the -2 mode: {c}");
    let held = end_check(&m, &plain, &flip_scan(&m, vec![], 0), None).unwrap();
    assert!(
        held.gains[1] < -1000.0,
        "c = +2 with x held at -2: {}",
        held.gains[1]
    );
    assert!(end_note(&held).is_none(), "{:?}", held.best());
    let step_scale = plain.layout.step_scales(&m);
    let refiner = Refiner {
        cfg: &cfg,
        reducer: &SingleProcess,
        step_scale: &step_scale,
    };
    let refined = end_check(&m, &plain, &flip_scan(&m, vec![], 600), Some(refiner)).unwrap();
    let gain = refined.gains[1] - refined.gains[0];
    eprintln!(
        "refined gain of +2 over -2: {gain} nats (closed form {})",
        flip_gain()
    );
    assert!(
        (gain - flip_gain()).abs() < 0.5,
        "refined +2 over -2: {gain} nats, closed form {}",
        flip_gain()
    );
    let note = end_note(&refined).expect("the refined end check names the better mode");
    assert!(note.contains("worse mode of c"), "{note}");
    assert_eq!(c_loc(&m, &plain), c, "the end check does not move the fit");
}

#[test]
fn a_refined_scan_moves_the_fit_and_its_followers_to_the_right_mode() {
    let m = flip_model();
    let st = fit(&m, &flip_config(1500, Some(flip_scan(&m, vec![300], 600))));
    assert_eq!(st.scans[0].moved_to, Some(2.0), "{:?}", st.scans[0]);
    assert_eq!(st.scans[0].refine_steps, 600);
    assert_eq!(st.elbo.len(), 1500, "refinement steps are not the fit's");
    let c = c_loc(&m, &st);
    assert!((c - 2.0).abs() < 0.05, "{c}");
    let x = st.layout.blocks[m.site_index("x").unwrap()]
        .as_ref()
        .unwrap();
    for g in 0..GROUPS {
        let xg = st.params[x.instance_offset(g)];
        assert!((xg - 2.0).abs() < 0.1, "x[{g}] = {xg}");
    }
}

/// `Hold`: c started at +0.3 with x at -1.5. Unheld, c reaches zero before the x_g do (Adam
/// moves each about a rate a step) and the fit ends in the wrong mode (-2, -2). Held for the
/// first 300 steps, c keeps its start to the bit while the x_g follow it past zero (towards
/// y_g / c), and released, the fit ends in the right mode (2, 2).
#[test]
fn holding_a_global_while_the_locals_fit_keeps_it_out_of_the_wrong_mode() {
    let m = flip_model_from(0.3, -1.5);
    let site = m.site_index("c").unwrap();
    let x_at = |st: &SviState, g: usize| {
        let b = st.layout.blocks[m.site_index("x").unwrap()]
            .as_ref()
            .unwrap();
        st.params[b.instance_offset(g)]
    };
    let held_cfg = |steps| SviConfig {
        hold: Some(Hold {
            sites: vec![site],
            until_step: 300,
        }),
        ..flip_config(steps, None)
    };
    let start = SviState::new(&m, 3);
    let c_block = start.layout.blocks[site].clone().unwrap();
    let c_params =
        |st: &SviState| st.params[c_block.offset..c_block.offset + c_block.len()].to_vec();
    let during = fit(&m, &held_cfg(300));
    assert_eq!(
        c_params(&during),
        c_params(&start),
        "held: c's guide unchanged"
    );
    for g in 0..GROUPS {
        assert!(x_at(&during, g) > 2.0, "x[{g}] = {}", x_at(&during, g));
    }
    let held = fit(&m, &held_cfg(1500));
    assert!(
        (c_loc(&m, &held) - 2.0).abs() < 0.05,
        "{}",
        c_loc(&m, &held)
    );
    for g in 0..GROUPS {
        assert!(
            (x_at(&held, g) - 2.0).abs() < 0.1,
            "x[{g}] = {}",
            x_at(&held, g)
        );
    }
    let plain = fit(&m, &flip_config(1500, None));
    assert!(
        (c_loc(&m, &plain) + 2.0).abs() < 0.05,
        "unheld: {}",
        c_loc(&m, &plain)
    );
}
