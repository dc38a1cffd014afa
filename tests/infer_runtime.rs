//! Runtime guarantees: thread-count independence, checkpoint/resume to the bit, mini-batch
//! scaling, located non-finite errors with the last good checkpoint kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::infer::dist::Family;
use spread::infer::engine::{Evaluator, ParticleSpec};
use spread::infer::error::InferError;
use spread::infer::examples::{hierarchical_regression, latent, normal_normal, observe};
use spread::infer::model::{Expr, GuideKind, Model, Site};
use spread::infer::reduce::SingleProcess;
use spread::infer::svi::{SviConfig, SviState, run};
use std::sync::Arc;

fn cfg(steps: u64) -> SviConfig {
    SviConfig {
        steps,
        seed: 42,
        particles: 2,
        ..SviConfig::default()
    }
}

fn run_with_threads(model: &Model, steps: u64, threads: usize) -> SviState {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        run(
            model,
            &cfg(steps),
            SviState::new(model, 42),
            &SingleProcess,
            &mut |_| {},
        )
        .unwrap()
    })
}

/// One particle's log-weight at `step` (seed 1) with the state's parameters.
fn log_weight(model: &Model, state: &SviState, step: u64) -> f64 {
    let spec = ParticleSpec {
        seed: 1,
        step,
        particle: 0,
        analytic_kl: false,
    };
    Evaluator {
        model,
        layout: &state.layout,
        params: &state.params,
        spec,
        proposal: None,
    }
    .particle(&SingleProcess)
    .unwrap()
    .log_weight
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn same_seed_is_bit_identical_with_one_and_two_threads() {
    let mut model = hierarchical_regression(64, 8, 3).unwrap();
    model.plates[0].subsample = Some(24);
    let one = run_with_threads(&model, 40, 1);
    let two = run_with_threads(&model, 40, 2);
    assert_eq!(bits(&one.params), bits(&two.params));
    assert_eq!(bits(&one.elbo), bits(&two.elbo));
    assert!(one.elbo.iter().all(|e| e.is_finite()));
}

#[test]
fn resume_from_checkpoint_is_bit_identical() {
    let model = hierarchical_regression(16, 6, 9).unwrap();
    let dir = std::env::temp_dir().join(format!("spread_ckpt_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.msgpack");
    let straight = run(
        &model,
        &cfg(100),
        SviState::new(&model, 42),
        &SingleProcess,
        &mut |_| {},
    )
    .unwrap();
    let half = run(
        &model,
        &cfg(50),
        SviState::new(&model, 42),
        &SingleProcess,
        &mut |_| {},
    )
    .unwrap();
    half.save(&path).unwrap();
    let resumed = SviState::load(&path).unwrap();
    assert_eq!(resumed, half);
    let resumed = run(&model, &cfg(100), resumed, &SingleProcess, &mut |_| {}).unwrap();
    assert_eq!(resumed.step, 100);
    assert_eq!(bits(&straight.params), bits(&resumed.params));
    assert_eq!(bits(&straight.m), bits(&resumed.m));
    assert_eq!(bits(&straight.v), bits(&resumed.v));
    assert_eq!(bits(&straight.elbo), bits(&resumed.elbo));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With a point guide the log-weight is deterministic given the batch; averaged over many
/// random batches of 10 out of 30 it must approach the full-data value (the N/b scaling makes
/// the estimate unbiased). Tolerance: 4 standard errors of the average.
#[test]
fn minibatch_likelihood_is_scaled_by_n_over_batch() {
    let x: Vec<f64> = (0..30)
        .map(|i| (i as f64 * 0.9).sin() * 2.0 + 1.0)
        .collect();
    let mut model = normal_normal(&x, 0.0, 10.0, 1.0).unwrap();
    if let Site::Latent(l) = &mut model.sites[0] {
        l.guide = GuideKind::Point;
        l.init = Some(0.4);
    }
    let state = SviState::new(&model, 1);
    let weight = |model: &Model, step| log_weight(model, &state, step);
    let full = weight(&model, 0);
    model.plates[0].subsample = Some(10);
    let w: Vec<f64> = (0..4000).map(|s| weight(&model, s)).collect();
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    let se = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (w.len() as f64 - 1.0)).sqrt()
        / (w.len() as f64).sqrt();
    assert!(
        (mean - full).abs() < 4.0 * se,
        "batch mean {mean} vs full {full} (se {se})"
    );
    assert!(
        w.iter().any(|&v| (v - full).abs() > 1e-6),
        "batches must differ from the full data"
    );
}

/// mu drifts up towards x = 1000 (site x); site guard's log(5 - mu) turns NaN once mu > 5. The error names the
/// operator, the source label, the plate instance and the step; the last checkpoint written
/// (every step) is the step before and loads.
#[test]
fn non_finite_value_stops_with_location_and_keeps_last_checkpoint() {
    let mut model = Model::default();
    let obs = model.plate("obs", 3, None);
    model.data(
        "x",
        vec![obs],
        ndarray::arr1(&[1000.0, 1000.0, 1000.0]).into_dyn(),
    );
    model.site(Site::Latent(latent(
        "mu",
        None,
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(100.0)],
    )));
    let loc = Expr::Call(Arc::new(|t, env| {
        let mu = env.site("mu").unwrap();
        let neg = t.neg(mu)?;
        let five = t.shift(neg, 5.0)?;
        t.set_label("model.spread:7:12");
        t.log(five)
    }));
    let pull = vec![Expr::Site("mu".into()), Expr::Const(1.0)];
    model.site(Site::Observe(observe(
        "x",
        Some(obs),
        Family::Normal,
        pull,
        Expr::Data("x".into()),
    )));
    model.site(Site::Observe(observe(
        "guard",
        Some(obs),
        Family::Normal,
        vec![loc, Expr::Const(1.0)],
        Expr::Const(0.0),
    )));
    model.validate().unwrap();
    let dir = std::env::temp_dir().join(format!("spread_nan_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.msgpack");
    let mut config = cfg(1000);
    config.adam.lr = 0.5;
    config.checkpoint_every = Some(1);
    config.checkpoint_path = Some(path.clone());
    let err = run(
        &model,
        &config,
        SviState::new(&model, 42),
        &SingleProcess,
        &mut |_| {},
    )
    .unwrap_err();
    let InferError::NonFinite {
        step,
        op,
        label,
        plates,
        ..
    } = &err
    else {
        panic!("unexpected error {err}")
    };
    assert_eq!(
        (*op, label.as_str(), plates.as_str()),
        ("log", "model.spread:7:12", "obs 0"),
        "{err}"
    );
    let kept = SviState::load(&path).unwrap();
    assert_eq!(kept.step, *step, "checkpoint holds the last good step");
    assert!(!path.with_extension("tmp").exists());
    assert!(err.to_string().contains(&format!("step {step}")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A chunked plate (64 instances per tape, batched on a leading axis) computes the same
/// log-weight and gradient as one tape per instance (same random streams; only the order of
/// floating-point sums differs: relative 1e-12), and stays bit-identical across threads.
#[test]
fn chunked_plate_matches_per_instance_evaluation() {
    let per_instance = hierarchical_regression(150, 7, 5).unwrap();
    let mut chunked = per_instance.clone();
    chunked.plates[0].chunk = Some(64);
    chunked.validate().unwrap();
    let mut state = SviState::new(&per_instance, 3);
    state
        .params
        .iter_mut()
        .enumerate()
        .for_each(|(i, p)| *p += 0.01 * (i % 7) as f64);
    let particle = |model: &Model| {
        let spec = ParticleSpec {
            seed: 3,
            step: 4,
            particle: 0,
            analytic_kl: false,
        };
        Evaluator {
            model,
            layout: &state.layout,
            params: &state.params,
            spec,
            proposal: None,
        }
        .particle(&SingleProcess)
        .unwrap()
    };
    let (a, b) = (particle(&per_instance), particle(&chunked));
    assert!(
        (a.log_weight - b.log_weight).abs() < 1e-12 * a.log_weight.abs(),
        "{} vs {}",
        a.log_weight,
        b.log_weight
    );
    for (i, (x, y)) in a.grad.iter().zip(&b.grad).enumerate() {
        assert!(
            (x - y).abs() < 1e-12 * (1.0 + x.abs()),
            "grad[{i}]: {x} vs {y}"
        );
    }
    assert_eq!(a.touched, b.touched);
    let one = run_with_threads(&chunked, 30, 1);
    let two = run_with_threads(&chunked, 30, 2);
    assert_eq!(bits(&one.params), bits(&two.params));
}

/// With the step's random streams fixed, the ELBO and IWAE estimates are smooth functions of
/// the parameters: the engine's gradient (global tape seeded by the plates' reduced gradients,
/// bijection, guide, IWAE weighting) must match central differences of the estimate itself.
#[test]
fn engine_gradient_matches_finite_differences_of_the_estimate() {
    use spread::infer::engine::Objective;
    use spread::infer::examples::eight_schools;
    use spread::infer::svi::objective_and_gradient;
    let y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0];
    let sigma = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0];
    let mut model = eight_schools(&y, &sigma).unwrap();
    for chunk in [None, Some(3)] {
        model.plates[0].chunk = chunk;
        for (objective, particles, analytic_kl) in [
            (Objective::Elbo, 2, false),
            (Objective::Elbo, 1, true),
            (Objective::Iwae, 4, false),
        ] {
            let cfg = SviConfig {
                particles,
                objective,
                analytic_kl,
                ..cfg(1)
            };
            let mut state = SviState::new(&model, 5);
            state.step = 7;
            state
                .params
                .iter_mut()
                .enumerate()
                .for_each(|(i, p)| *p += 0.05 * ((i * 5) % 9) as f64 - 0.2);
            let (_, grad, _) =
                objective_and_gradient(&model, &state, &cfg, &SingleProcess).unwrap();
            let h = 1e-6;
            for (i, g) in grad.iter().enumerate() {
                let mut s = state.clone();
                s.params[i] += h;
                let up = objective_and_gradient(&model, &s, &cfg, &SingleProcess)
                    .unwrap()
                    .0;
                s.params[i] -= 2.0 * h;
                let down = objective_and_gradient(&model, &s, &cfg, &SingleProcess)
                    .unwrap()
                    .0;
                let fd = -(up - down) / (2.0 * h);
                let tol = 1e-5 * (1.0 + fd.abs());
                assert!(
                    (g - fd).abs() < tol,
                    "{objective:?} chunk {chunk:?} param {i}: {g} vs {fd}"
                );
            }
        }
    }
}

/// The same finite-difference check for the correlated guides (full-rank, low-rank) on a
/// three-coefficient regression.
#[test]
fn correlated_guide_gradients_match_finite_differences() {
    use spread::infer::engine::Objective;
    use spread::infer::examples::linear_regression;
    use spread::infer::svi::objective_and_gradient;
    let x = ndarray::Array2::from_shape_fn((12, 3), |(i, j)| ((i * (j + 2)) as f64 * 0.37).sin());
    let y = ndarray::Array1::from_shape_fn(12, |i| (i as f64 * 0.3).cos());
    for guide in [GuideKind::FullRank, GuideKind::LowRank(2)] {
        let model = linear_regression(&x, &y, 3.0, 0.8, guide).unwrap();
        for objective in [Objective::Elbo, Objective::Iwae] {
            let cfg = SviConfig {
                particles: 3,
                objective,
                ..cfg(1)
            };
            let mut state = SviState::new(&model, 8);
            state
                .params
                .iter_mut()
                .enumerate()
                .for_each(|(i, p)| *p += 0.03 * ((i * 5) % 7) as f64 - 0.1);
            let (_, grad, _) =
                objective_and_gradient(&model, &state, &cfg, &SingleProcess).unwrap();
            let h = 1e-6;
            for (i, g) in grad.iter().enumerate() {
                let mut s = state.clone();
                s.params[i] += h;
                let up = objective_and_gradient(&model, &s, &cfg, &SingleProcess)
                    .unwrap()
                    .0;
                s.params[i] -= 2.0 * h;
                let down = objective_and_gradient(&model, &s, &cfg, &SingleProcess)
                    .unwrap()
                    .0;
                let fd = -(up - down) / (2.0 * h);
                assert!(
                    (g - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                    "{guide:?} {objective:?} param {i}: {g} vs {fd}"
                );
            }
        }
    }
}

/// A ragged plate (items of three groups: 5, 7 and 8) subsampled to at most 3 items per group:
/// each group's likelihood is scaled by its own count / 3, so over many batches the log-weight
/// averages to the full-data value (4 standard errors).
#[test]
fn ragged_minibatch_is_scaled_per_parent() {
    let x: Vec<f64> = (0..20).map(|i| (i as f64 * 0.7).cos() * 3.0).collect();
    let mut model = Model::default();
    let group = model.plate("group", 3, None);
    let item = model.ragged_plate("item", group, vec![0, 5, 12, 20]);
    model.data(
        "x",
        vec![item],
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[20]), x).unwrap(),
    );
    let mut mu = latent(
        "mu",
        None,
        Family::Normal,
        vec![Expr::Const(0.0), Expr::Const(5.0)],
    );
    mu.guide = GuideKind::Point;
    mu.init = Some(0.3);
    model.site(Site::Latent(mu));
    model.site(Site::Observe(observe(
        "x",
        Some(item),
        Family::Normal,
        vec![Expr::Site("mu".into()), Expr::Const(1.0)],
        Expr::Data("x".into()),
    )));
    model.validate().unwrap();
    let state = SviState::new(&model, 1);
    let weight = |model: &Model, step| log_weight(model, &state, step);
    let full = weight(&model, 0);
    // Closed form: the full-data log-likelihood plus the prior term, independent of the engine.
    let ll: f64 = (0..20)
        .map(|i| {
            let d = (i as f64 * 0.7).cos() * 3.0 - 0.3;
            -0.5 * d * d - 0.918_938_533_204_672_8
        })
        .sum();
    let prior = -0.5 * (0.3f64 / 5.0).powi(2) - 5.0f64.ln() - 0.918_938_533_204_672_8;
    assert!((full - ll - prior).abs() < 1e-9, "{full} vs {}", ll + prior);
    model.plates[item].subsample = Some(3);
    model.validate().unwrap();
    let w: Vec<f64> = (0..4000).map(|s| weight(&model, s)).collect();
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    let se = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (w.len() as f64 - 1.0)).sqrt()
        / (w.len() as f64).sqrt();
    assert!(
        (mean - full).abs() < 4.0 * se,
        "batch mean {mean} vs full {full} (se {se})"
    );
    assert!(w.iter().any(|&v| (v - full).abs() > 1e-6));
}

/// The forward-only `log_weight` is the particle's log weight to the bit, for tapes per
/// instance, chunked plates and mini-batches (the same batch: the same streams).
#[test]
fn forward_only_log_weight_is_the_particles_to_the_bit() {
    let mut chunked = hierarchical_regression(40, 6, 3).unwrap();
    chunked.plates[0].chunk = Some(7);
    let mut batched = hierarchical_regression(40, 6, 3).unwrap();
    batched.plates[0].subsample = Some(9);
    for model in [hierarchical_regression(40, 6, 3).unwrap(), chunked, batched] {
        let state = run_with_threads(&model, 20, 2);
        for particle in 0..3 {
            let evaluator = Evaluator {
                model: &model,
                layout: &state.layout,
                params: &state.params,
                spec: ParticleSpec {
                    seed: 5,
                    step: 77,
                    particle,
                    analytic_kl: false,
                },
                proposal: None,
            };
            let with_grad = evaluator.particle(&SingleProcess).unwrap().log_weight;
            let forward = evaluator.log_weight().unwrap();
            assert!(with_grad.is_finite());
            assert_eq!(
                with_grad.to_bits(),
                forward.to_bits(),
                "{with_grad} vs {forward}"
            );
        }
    }
}
