//! Correlated guides declared in the language (`guide full_rank`, `guide low_rank(R)`) against
//! closed-form Gaussian posteriors.
//!
//! Each model's posterior is Gaussian with precision Q, so a full-rank guide (and a low-rank one
//! whose rank reaches d − 1: Σ = λ_min I + a rank d − 1 remainder) can match it exactly: means
//! Q⁻¹ b, sds √(Q⁻¹)_kk and correlations, not the mean-field 1/√Q_kk. Tolerances: means within
//! 0.02 (Monte Carlo error of 20 000 draws ~0.005), sds within 3%, correlations within 0.03.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::report::latents::LatentDraws;
use spread::run::{RunConfig, run_model};
use std::path::PathBuf;

fn fit(name: &str, model: &str, files: &[(&str, &str)], steps: u64) -> Vec<LatentDraws> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("guides_{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.spread"), model).unwrap();
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let cfg = RunConfig {
        model: dir.join("model.spread"),
        data: dir.clone(),
        out: dir.join("out"),
        steps,
        seed: 11,
        threads: Some(1),
        draws: 20_000,
        particles: 16,
        ..RunConfig::default()
    };
    run_model(&cfg, &mut |_| {}).unwrap().quantities
}

/// Draws of latent `name`, one Vec per draw.
fn draws<'a>(q: &'a [LatentDraws], name: &str) -> &'a [Vec<f64>] {
    &q.iter().find(|d| d.name == name).unwrap().draws
}

/// Sample mean vector and covariance matrix of the draws.
fn mean_cov(x: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (n, d) = (x.len() as f64, x[0].len());
    let mean: Vec<f64> = (0..d)
        .map(|j| x.iter().map(|v| v[j]).sum::<f64>() / n)
        .collect();
    let cov = (0..d)
        .map(|i| {
            (0..d)
                .map(|j| {
                    x.iter()
                        .map(|v| (v[i] - mean[i]) * (v[j] - mean[j]))
                        .sum::<f64>()
                        / (n - 1.0)
                })
                .collect()
        })
        .collect();
    (mean, cov)
}

/// Inverse of a small symmetric positive-definite matrix (Gauss–Jordan, no pivoting needed).
fn inverse(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let d = a.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut row = r.clone();
            row.extend((0..d).map(|j| f64::from(u8::from(i == j))));
            row
        })
        .collect();
    for c in 0..d {
        let p = m[c][c];
        m[c].iter_mut().for_each(|v| *v /= p);
        for r in 0..d {
            if r != c {
                let f = m[r][c];
                let pivot = m[c].clone();
                m[r].iter_mut().zip(&pivot).for_each(|(v, pv)| *v -= f * pv);
            }
        }
    }
    m.into_iter().map(|r| r[d..].to_vec()).collect()
}

fn mat_vec(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    a.iter()
        .map(|r| r.iter().zip(b).map(|(x, y)| x * y).sum())
        .collect()
}

/// Compares the draws' mean, sds and correlations with the exact posterior N(Q⁻¹ b, Q⁻¹).
fn assert_matches_posterior(what: &str, x: &[Vec<f64>], precision: &[Vec<f64>], b: &[f64]) {
    let cov = inverse(precision);
    let mean = mat_vec(&cov, b);
    let (m, c) = mean_cov(x);
    let d = mean.len();
    for i in 0..d {
        let sd = cov[i][i].sqrt();
        assert!(
            (m[i] - mean[i]).abs() < 0.02 * sd.max(1.0),
            "{what}[{i}]: mean {} vs {}",
            m[i],
            mean[i]
        );
        let got_sd = c[i][i].sqrt();
        assert!(
            (got_sd / sd - 1.0).abs() < 0.03,
            "{what}[{i}]: sd {got_sd} vs {sd}"
        );
        for j in 0..i {
            let rho = cov[i][j] / (sd * cov[j][j].sqrt());
            let got = c[i][j] / (got_sd * c[j][j].sqrt());
            assert!(
                (got - rho).abs() < 0.03,
                "{what}[{i},{j}]: correlation {got} vs {rho}"
            );
        }
    }
}

const SMOOTH_MODEL: &str = "use anomalous.smoothness\n\
     const m = [0.0, 0.0, 1.0, 1.0, 3.0, 3.0]\n\
     latent f[6] ~ Normal(m, 1.0) guide GUIDE\n\
     factor smoothness(f, 0.5)\n";

/// Precision and b of f ~ N(m, I) with the random-walk restraint of step 0.5.
fn smooth_posterior() -> (Vec<Vec<f64>>, Vec<f64>) {
    let w = 1.0 / 0.25;
    let q = (0..6usize)
        .map(|i| {
            (0..6)
                .map(|j: usize| match i.abs_diff(j) {
                    0 => 1.0 + w * if i == 0 || i == 5 { 1.0 } else { 2.0 },
                    1 => -w,
                    _ => 0.0,
                })
                .collect()
        })
        .collect();
    (q, vec![0.0, 0.0, 1.0, 1.0, 3.0, 3.0])
}

/// Neighbouring channels are correlated ~0.8 under the restraint: the full-rank guide gets the
/// marginal sds (≈ 2x the mean-field ones) and the correlations.
#[test]
fn a_full_rank_guide_matches_the_restrained_posterior() {
    let q = fit(
        "smooth_full",
        &SMOOTH_MODEL.replace("GUIDE", "full_rank"),
        &[],
        4000,
    );
    let (p, b) = smooth_posterior();
    assert_matches_posterior("f", draws(&q, "f"), &p, &b);
}

/// Rank 5 of 6 is enough for any covariance (λ_min I plus a rank-5 remainder).
#[test]
fn a_low_rank_guide_of_rank_d_minus_1_matches_the_restrained_posterior() {
    let q = fit(
        "smooth_low",
        &SMOOTH_MODEL.replace("GUIDE", "low_rank(5)"),
        &[],
        6000,
    );
    let (p, b) = smooth_posterior();
    assert_matches_posterior("f", draws(&q, "f"), &p, &b);
}

/// Bayesian linear regression with an uncentred x: intercept and slope are strongly
/// anti-correlated (ρ ≈ −0.96). coef ~ N(0, 10² I), y ~ N(X coef, 0.5²):
/// Q = I/100 + XᵀX/0.25, b = Xᵀy/0.25.
#[test]
fn a_full_rank_guide_matches_bayesian_linear_regression() {
    let x = [3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5];
    let y = [2.1, 2.6, 2.8, 3.5, 3.6, 4.4, 4.5, 5.1];
    let csv: String = std::iter::once("x,y\n".to_string())
        .chain(x.iter().zip(&y).map(|(a, b)| format!("{a},{b}\n")))
        .collect();
    let model = "data t = table(\"t.csv\", x: real, y: real)\n\
                 latent coef[2] ~ Normal(0.0, 10.0) guide full_rank\n\
                 plate r in t.rows {\n  observe r.y ~ Normal(coef[0] + coef[1] * r.x, 0.5)\n}\n";
    let q = fit("regression", model, &[("t.csv", &csv)], 6000);
    let s2 = 0.25;
    let sx: f64 = x.iter().sum();
    let sxx: f64 = x.iter().map(|v| v * v).sum();
    let precision = vec![
        vec![0.01 + x.len() as f64 / s2, sx / s2],
        vec![sx / s2, 0.01 + sxx / s2],
    ];
    let b = vec![
        y.iter().sum::<f64>() / s2,
        x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>() / s2,
    ];
    assert_matches_posterior("coef", draws(&q, "coef"), &precision, &b);
}
