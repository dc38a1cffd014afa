//! Log-densities against statrs (to 1e-12 relative), sampler moments against closed forms,
//! bijection log-Jacobians and the low-rank normal's adjoint against finite differences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::{ArrayD, IxDyn, array};
use proptest::prelude::*;
use spread::infer::constraint::Constraint;
use spread::infer::dist::{Dist, Family, enumerate_discrete, log_prob_f64};
use spread::infer::rng::StreamKey;
use spread::tape::{NodeId, Tape};
use statrs::distribution::{Continuous, Discrete};

fn close(ours: f64, reference: f64) {
    let tol = 1e-12 * reference.abs().max(1.0);
    assert!(
        (ours - reference).abs() <= tol,
        "ours {ours} vs statrs {reference}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn location_scale_families(x in -5.0..5.0f64, loc in -3.0..3.0f64, scale in 0.1..4.0f64) {
        use statrs::distribution as sd;
        close(log_prob_f64(Family::Normal, &[loc, scale], &[x]).unwrap(), sd::Normal::new(loc, scale).unwrap().ln_pdf(x));
        close(log_prob_f64(Family::Laplace, &[loc, scale], &[x]).unwrap(), sd::Laplace::new(loc, scale).unwrap().ln_pdf(x));
        let lo = loc.min(x) - 0.5;
        close(log_prob_f64(Family::Uniform, &[lo, lo + 10.0], &[x]).unwrap(), sd::Uniform::new(lo, lo + 10.0).unwrap().ln_pdf(x));
        for nu in [1.0, 2.5, 30.0] {
            close(log_prob_f64(Family::StudentT, &[nu, loc, scale], &[x]).unwrap(),
                  sd::StudentsT::new(loc, scale, nu).unwrap().ln_pdf(x));
        }
    }

    #[test]
    fn positive_families(x in 0.05..8.0f64, a in 0.3..5.0f64, b in 0.2..4.0f64) {
        use statrs::distribution as sd;
        close(log_prob_f64(Family::LogNormal, &[a - 2.0, b], &[x]).unwrap(), sd::LogNormal::new(a - 2.0, b).unwrap().ln_pdf(x));
        close(log_prob_f64(Family::Gamma, &[a, b], &[x]).unwrap(), sd::Gamma::new(a, b).unwrap().ln_pdf(x));
        close(log_prob_f64(Family::Exponential, &[b], &[x]).unwrap(), sd::Exp::new(b).unwrap().ln_pdf(x));
        // statrs has no half-normal or half-Cauchy: they are twice the folded density.
        close(log_prob_f64(Family::HalfNormal, &[b], &[x]).unwrap(), sd::Normal::new(0.0, b).unwrap().ln_pdf(x) + 2f64.ln());
        close(log_prob_f64(Family::HalfCauchy, &[b], &[x]).unwrap(), sd::Cauchy::new(0.0, b).unwrap().ln_pdf(x) + 2f64.ln());
    }

    #[test]
    fn beta_family(x in 0.01..0.99f64, a in 0.3..6.0f64, b in 0.3..6.0f64) {
        close(log_prob_f64(Family::Beta, &[a, b], &[x]).unwrap(), statrs::distribution::Beta::new(a, b).unwrap().ln_pdf(x));
    }

    #[test]
    fn counts(k in 0u64..60, rate in 0.1..40.0f64, readout in 0.0..9.0f64) {
        use statrs::distribution as sd;
        close(log_prob_f64(Family::Poisson, &[rate], &[k as f64]).unwrap(), sd::Poisson::new(rate).unwrap().ln_pmf(k));
        let gauss = sd::Normal::new(rate, (rate + readout).sqrt()).unwrap().ln_pdf(k as f64);
        close(log_prob_f64(Family::PoissonGaussian, &[rate, readout], &[k as f64]).unwrap(), gauss);
    }

    #[test]
    fn categorical(logits in prop::collection::vec(-3.0..3.0f64, 4), k in 0usize..4) {
        let mut t = Tape::new();
        let l = t.constant_real(ArrayD::from_shape_vec(IxDyn(&[4]), logits.clone()).unwrap());
        let x = t.scalar(k as f64);
        let lp = Dist::new(Family::Categorical, vec![l]).unwrap().log_prob(&mut t, x).unwrap();
        let p: Vec<f64> = logits.iter().map(|v| v.exp()).collect();
        let reference = statrs::distribution::Categorical::new(&p).unwrap().ln_pmf(k as u64);
        close(t.scalar_value(lp).unwrap(), reference);
    }

    #[test]
    fn multivariate_normals(v in prop::collection::vec(-1.5..1.5f64, 12), d in prop::collection::vec(0.3..2.0f64, 3)) {
        let x = vec![v[0], v[1], v[2]];
        let loc = vec![v[3], v[4], v[5]];
        let w = vec![v[6], v[7], v[8], v[9], v[10], v[11]]; // 3×2, row-major
        let mut cov = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                cov[i * 3 + j] = (0..2).map(|k| w[i * 2 + k] * w[j * 2 + k]).sum::<f64>() + if i == j { d[i] * d[i] } else { 0.0 };
            }
        }
        let reference = statrs::distribution::MultivariateNormal::new(loc.clone(), cov).unwrap()
            .ln_pdf(&nalgebra::DVector::from_vec(x.clone()));
        let mut t = Tape::new();
        let vecn = |t: &mut Tape, v: &[f64], shape: &[usize]| t.leaf_real(ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap());
        let (xn, ln, wn, dn) = (vecn(&mut t, &x, &[3]), vecn(&mut t, &loc, &[3]), vecn(&mut t, &w, &[3, 2]), vecn(&mut t, &d, &[3]));
        let lp = Dist::new(Family::MvnLowRank, vec![ln, wn, dn]).unwrap().log_prob(&mut t, xn).unwrap();
        close(t.scalar_value(lp).unwrap(), reference);
        let diag_cov: Vec<f64> = (0..9).map(|k| if k % 4 == 0 { d[k / 4] * d[k / 4] } else { 0.0 }).collect();
        let reference = statrs::distribution::MultivariateNormal::new(loc, diag_cov).unwrap()
            .ln_pdf(&nalgebra::DVector::from_vec(x));
        let lp = Dist::new(Family::MvnDiag, vec![ln, dn]).unwrap().log_prob(&mut t, xn).unwrap();
        close(t.scalar_value(lp).unwrap(), reference);
    }
}

/// The low-rank normal's hand adjoint against central differences, every input element.
#[test]
fn low_rank_adjoint_matches_finite_differences() {
    let inputs = [
        array![0.3, -1.2, 0.8].into_dyn(),
        array![0.1, 0.4, -0.2].into_dyn(),
        array![[0.5, -0.3], [0.2, 0.9], [-0.7, 0.1]].into_dyn(),
        array![0.6, 1.3, 0.9].into_dyn(),
    ];
    let eval = |inp: &[ArrayD<f64>]| -> (f64, Vec<ArrayD<f64>>) {
        let mut t = Tape::new();
        let ids: Vec<NodeId> = inp.iter().map(|a| t.leaf_real(a.clone())).collect();
        let lp = Dist::new(Family::MvnLowRank, ids[1..].to_vec())
            .unwrap()
            .log_prob(&mut t, ids[0])
            .unwrap();
        t.backward(lp).unwrap();
        (
            t.scalar_value(lp).unwrap(),
            ids.iter().map(|&i| t.grad_real(i).unwrap()).collect(),
        )
    };
    let (_, grads) = eval(&inputs);
    let h = 1e-6;
    for k in 0..4 {
        for i in 0..inputs[k].len() {
            let (mut p, mut m) = (inputs.to_vec(), inputs.to_vec());
            p[k].as_slice_mut().unwrap()[i] += h;
            m[k].as_slice_mut().unwrap()[i] -= h;
            let fd = (eval(&p).0 - eval(&m).0) / (2.0 * h);
            let a = grads[k].as_standard_layout().as_slice().unwrap()[i];
            assert!(
                (a - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                "input {k}[{i}]: {a} vs {fd}"
            );
        }
    }
}

/// Sample means and variances of reparameterized draws against closed forms (n = 200000,
/// tolerance 5 standard errors of the estimate).
#[test]
fn rsample_moments() {
    let n = 200_000;
    let cases: [(Family, Vec<f64>, f64, f64); 7] = [
        (Family::Normal, vec![1.5, 2.0], 1.5, 4.0),
        (
            Family::LogNormal,
            vec![0.1, 0.4],
            (0.1f64 + 0.08).exp(),
            ((0.16f64).exp() - 1.0) * (0.2f64 + 0.16).exp(),
        ),
        (
            Family::HalfNormal,
            vec![2.0],
            2.0 * (2.0 / std::f64::consts::PI).sqrt(),
            4.0 * (1.0 - 2.0 / std::f64::consts::PI),
        ),
        (Family::Exponential, vec![2.5], 0.4, 0.16),
        (Family::Uniform, vec![-1.0, 3.0], 1.0, 16.0 / 12.0),
        (Family::Laplace, vec![0.5, 1.5], 0.5, 2.0 * 2.25),
        (Family::Gamma, vec![3.0, 2.0], 1.5, 0.75),
    ];
    for (i, (family, params, mean, var)) in cases.into_iter().enumerate() {
        let mut t = Tape::new();
        let ids = params.iter().map(|&p| t.scalar(p)).collect();
        let key = StreamKey {
            seed: 7,
            step: 0,
            particle: 0,
            site: i as u64,
            instance: 0,
        };
        let s = Dist::new(family, ids)
            .unwrap()
            .rsample(&mut t, &mut key.rng(), &[n])
            .unwrap();
        let v = t.real(s).unwrap();
        let m = v.mean().unwrap();
        let sv = v.var(1.0);
        assert!(
            (m - mean).abs() < 5.0 * (var / n as f64).sqrt(),
            "{family:?} mean {m} vs {mean}"
        );
        assert!(
            (sv - var).abs() < 0.05 * var,
            "{family:?} variance {sv} vs {var}"
        );
    }
}

/// log|dz/du| of each bijection against a central difference of z(u).
#[test]
fn bijection_log_jacobians() {
    for c in [
        Constraint::Positive,
        Constraint::GreaterThan(2.0),
        Constraint::Interval(-1.0, 3.0),
    ] {
        for u in [-2.0, -0.3, 0.0, 0.7, 2.5] {
            let mut t = Tape::new();
            let un = t.scalar(u);
            let (z, lj) = c.forward(&mut t, un).unwrap();
            let h = 1e-6;
            let fd = (c.apply(u + h) - c.apply(u - h)) / (2.0 * h);
            assert!(
                (t.scalar_value(lj.unwrap()).unwrap() - fd.ln()).abs() < 1e-8,
                "{c:?} at {u}"
            );
            assert!(
                (c.inverse(t.scalar_value(z).unwrap()) - u).abs() < 1e-10,
                "{c:?} inverse at {u}"
            );
        }
    }
}

/// Enumerating a discrete choice equals ln Σ_k p_k L_k computed directly.
#[test]
fn enumerated_categorical_marginal() {
    let logits = [0.2, -1.0, 0.7];
    let loglik = [-3.0, -1.5, -2.2];
    let mut t = Tape::new();
    let l = t.constant_real(ArrayD::from_shape_vec(IxDyn(&[3]), logits.to_vec()).unwrap());
    let ll = t.constant_real(ArrayD::from_shape_vec(IxDyn(&[3]), loglik.to_vec()).unwrap());
    let m = enumerate_discrete(&mut t, l, ll).unwrap();
    let z: f64 = logits.iter().map(|v: &f64| v.exp()).sum();
    let direct: f64 = logits
        .iter()
        .zip(loglik)
        .map(|(a, b)| a.exp() / z * b.exp())
        .sum::<f64>()
        .ln();
    close(t.scalar_value(m).unwrap(), direct);
}

/// The fused normal kernel equals the elementwise formula and its adjoint matches central
/// differences: with numpy broadcasting on every input (general path), and with full and
/// single-number operands (the slice fast path).
#[test]
fn fused_normal_matches_unfused_and_finite_differences() {
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.3, -1.2, 0.8, 2.0, -0.1, 0.5]).unwrap();
    check_fused_normal(&[
        x.clone(),
        ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.1, 0.4, -0.2]).unwrap(),
        ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![0.7, 1.6]).unwrap(),
    ]);
    check_fused_normal(&[
        x.clone(),
        ArrayD::from_elem(IxDyn(&[]), 0.25),
        ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0.7, 1.6, 0.9, 1.1, 0.5, 2.0]).unwrap(),
    ]);
    check_fused_normal(&[
        x,
        ArrayD::from_elem(IxDyn(&[]), -0.3),
        ArrayD::from_elem(IxDyn(&[]), 1.3),
    ]);
}

fn check_fused_normal(inputs: &[ArrayD<f64>]) {
    let eval = |inp: &[ArrayD<f64>], fused: bool| -> (f64, Vec<ArrayD<f64>>) {
        let mut t = Tape::new();
        let ids: Vec<NodeId> = inp.iter().map(|a| t.leaf_real(a.clone())).collect();
        let lp = if fused {
            Dist::new(Family::Normal, ids[1..].to_vec())
                .unwrap()
                .log_prob(&mut t, ids[0])
                .unwrap()
        } else {
            spread::infer::dist::normal_unfused(&mut t, ids[0], ids[1], ids[2]).unwrap()
        };
        let w = t.constant_real(
            ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -0.5, 0.3, 2.0, 0.7, -1.1]).unwrap(),
        );
        let p = t.mul(lp, w).unwrap();
        let s = t.sum(p).unwrap();
        t.backward(s).unwrap();
        (
            t.scalar_value(s).unwrap(),
            ids.iter().map(|&i| t.grad_real(i).unwrap()).collect(),
        )
    };
    let (vf, gf) = eval(inputs, true);
    let (vu, gu) = eval(inputs, false);
    close(vf, vu);
    let h = 1e-6;
    for k in 0..3 {
        for i in 0..inputs[k].len() {
            let (mut p, mut m) = (inputs.to_vec(), inputs.to_vec());
            p[k].as_slice_mut().unwrap()[i] += h;
            m[k].as_slice_mut().unwrap()[i] -= h;
            let fd = (eval(&p, true).0 - eval(&m, true).0) / (2.0 * h);
            let (a, b) = (gf[k].iter().nth(i).unwrap(), gu[k].iter().nth(i).unwrap());
            assert!(
                (a - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                "input {k}[{i}]: fused {a} vs fd {fd}"
            );
            assert!(
                (a - b).abs() < 1e-12 * (1.0 + b.abs()),
                "input {k}[{i}]: fused {a} vs unfused {b}"
            );
        }
    }
}
