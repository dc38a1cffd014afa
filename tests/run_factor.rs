//! `factor` statements and the `smoothness` restraint against closed-form Gaussian posteriors.
//!
//! Every model here has a Gaussian posterior, so the mean-field guide's optimum is known exactly:
//! its means are the posterior means and its variances are 1/Q_ii, the inverse diagonal of the
//! posterior precision Q. Tolerances: means within 0.02 (the Monte Carlo error of 20 000 draws is
//! ~0.003), sds within 3%.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::report::latents::LatentDraws;
use spread::run::{RunConfig, run_model};
use std::path::PathBuf;

fn fit(name: &str, model: &str, files: &[(&str, &str)]) -> Vec<LatentDraws> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("factor_{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.spread"), model).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let cfg = RunConfig {
        model: dir.join("model.spread"),
        data: dir.clone(),
        out: dir.join("out"),
        steps: 4000,
        seed: 7,
        threads: Some(1),
        draws: 20_000,
        particles: 16,
        ..RunConfig::default()
    };
    run_model(&cfg, &mut |_| {}).unwrap().quantities
}

/// (mean, sd) of every element of latent `name`, from the posterior draws.
fn moments(q: &[LatentDraws], name: &str) -> Vec<(f64, f64)> {
    let d = q.iter().find(|d| d.name == name).unwrap();
    let n = d.draws.len() as f64;
    let k: usize = d.shape.iter().product::<usize>().max(1);
    (0..k)
        .map(|j| {
            let mean = d.draws.iter().map(|x| x[j]).sum::<f64>() / n;
            let var = d.draws.iter().map(|x| (x[j] - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (mean, var.sqrt())
        })
        .collect()
}

fn assert_close(what: &str, got: (f64, f64), mean: f64, sd: f64) {
    assert!(
        (got.0 - mean).abs() < 0.02,
        "{what}: mean {} vs {mean}",
        got.0
    );
    assert!(
        (got.1 / sd - 1.0).abs() < 0.03,
        "{what}: sd {} vs {sd}",
        got.1
    );
}

/// x ~ N(0, 1) with the factor −(x − 2)²/(2 · 0.5²): precision 1 + 4 = 5, mean 8/5.
#[test]
fn a_quadratic_factor_gives_the_conjugate_posterior() {
    let q = fit(
        "scalar",
        "latent x ~ Normal(0.0, 1.0)\nfactor -0.5 * (x - 2.0)^2 / 0.25\n",
        &[],
    );
    assert_close("x", moments(&q, "x")[0], 1.6, (0.2f64).sqrt());
}

/// Solves the tridiagonal system (diag, off) x = rhs (Thomas algorithm; off is symmetric).
fn solve_tridiagonal(diag: &[f64], off: &[f64], rhs: &[f64]) -> Vec<f64> {
    let n = diag.len();
    let (mut c, mut d) = (vec![0.0; n], vec![0.0; n]);
    for i in 0..n {
        let lower = if i > 0 { off[i - 1] } else { 0.0 };
        let denom = diag[i] - lower * if i > 0 { c[i - 1] } else { 0.0 };
        c[i] = if i + 1 < n { off[i] / denom } else { 0.0 };
        d[i] = (rhs[i] - lower * if i > 0 { d[i - 1] } else { 0.0 }) / denom;
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = d[i] - if i + 1 < n { c[i] * x[i + 1] } else { 0.0 };
    }
    x
}

/// f[k] ~ N(m_k, τ = 1) per channel plus the random-walk restraint of step σ = 0.5:
/// Q = I/τ² + DᵀD/σ² (tridiagonal), mean Q⁻¹ m/τ², mean-field sd 1/√Q_kk.
#[test]
fn the_smoothness_restraint_gives_the_random_walk_posterior() {
    let m = [0.0, 0.0, 1.0, 1.0, 3.0, 3.0];
    let model = "use anomalous.smoothness\n\
                 const m = [0.0, 0.0, 1.0, 1.0, 3.0, 3.0]\n\
                 latent f[6] ~ Normal(m, 1.0)\n\
                 factor smoothness(f, 0.5)\n";
    let q = fit("smooth", model, &[]);
    let w = 1.0 / 0.25;
    let diag: Vec<f64> = (0..6)
        .map(|k| 1.0 + w * if k == 0 || k == 5 { 1.0 } else { 2.0 })
        .collect();
    let mean = solve_tridiagonal(&diag, &[-w; 5], &m);
    for (k, got) in moments(&q, "f").into_iter().enumerate() {
        assert_close(&format!("f[{k}]"), got, mean[k], 1.0 / diag[k].sqrt());
    }
    // The restraint pulls the step 1 -> 3 together: f[4] - f[3] is well under the prior's 2.
    assert!(mean[4] - mean[3] < 0.6, "{mean:?}");
}

/// A factor inside a data plate is added once per row: z_r ~ N(0, 1), factor −(z_r − y_r)²/2,
/// so z_r | y ~ N(y_r/2, 1/√2).
#[test]
fn a_factor_in_a_plate_counts_once_per_row() {
    let model = "data t = table(\"t.csv\", y: real)\n\
                 plate r in t.rows {\n  latent z ~ Normal(0.0, 1.0)\n  factor -0.5 * (z - r.y)^2\n}\n";
    let q = fit("plate", model, &[("t.csv", "y\n1.0\n-2.0\n3.0\n")]);
    let got = moments(&q, "z");
    for (r, y) in [1.0, -2.0, 3.0].into_iter().enumerate() {
        assert_close(&format!("z[{r}]"), got[r], y / 2.0, (0.5f64).sqrt());
    }
}

/// The restraint's width must be a constant: a latent sigma is a clear error, not a silent
/// gradient drop.
#[test]
fn a_latent_smoothness_width_is_an_error() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("factor_latent_sigma");
    std::fs::create_dir_all(&dir).unwrap();
    let model = "use anomalous.smoothness\nlatent s ~ LogNormal(0.0, 1.0)\n\
                 latent f[4] ~ Normal(0.0, 1.0)\nfactor smoothness(f, s)\n";
    std::fs::write(dir.join("model.spread"), model).unwrap();
    let cfg = RunConfig {
        model: dir.join("model.spread"),
        data: dir.clone(),
        out: dir.join("out"),
        steps: 5,
        ..RunConfig::default()
    };
    let err = run_model(&cfg, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("smoothness") && err.contains("sigma"), "{err}");
}
