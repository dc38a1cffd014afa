//! f'/f'' parametrizations: values against independent forms (statrs densities, closed-form
//! two-state posteriors, the table itself), VJPs against central finite differences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::anomalous::*;
use spread::physics::kramers_kronig::KramersKronig;
use spread::physics::scattering_tables::{sasaki, sherrell};
use statrs::distribution::{Continuous, Normal};

fn fixture(path: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/").to_string() + path
}

fn central<F: Fn(&[f64]) -> f64>(f: F, x: &[f64], h: f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let (mut p, mut m) = (x.to_vec(), x.to_vec());
            p[i] += h;
            m[i] -= h;
            (f(&p) - f(&m)) / (2.0 * h)
        })
        .collect()
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * y.abs().max(1.0),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn smoothness_restraint_is_a_gaussian_random_walk() {
    let x = [-7.1, -7.3, -6.8, -6.0, -6.2];
    let sigma = 0.3;
    let statrs_sum: f64 = x
        .windows(2)
        .map(|w| Normal::new(w[0], sigma).unwrap().ln_pdf(w[1]))
        .sum();
    let normaliser = 4.0 * (sigma * (2.0 * std::f64::consts::PI).sqrt()).ln();
    assert!((smoothness_log_density(&x, sigma) - (statrs_sum + normaliser)).abs() < 1e-12);
    let numeric = central(|v| 2.5 * smoothness_log_density(v, sigma), &x, 1e-6);
    assert_close(
        &smoothness_log_density_vjp(&x, sigma, 2.5),
        &numeric,
        1e-7,
        "smoothness vjp",
    );
}

fn rubredoxin_reference() -> (KramersKronig, Curves) {
    let path = fixture("tables/Fe_ox_red_7000_7300.csv");
    let columns = sherrell::parse_columns(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let red = sherrell::curve(&path, &columns, ["energy_eV", "red_fp", "red_fdp"]).unwrap();
    (
        KramersKronig::on_grid(&red.energy_ev).unwrap(),
        Curves {
            fp: red.fp,
            fdp: red.fdp,
        },
    )
}

#[test]
fn sigmoid_edge_with_kk_fp_and_its_vjp() {
    let (kk, reference) = rubredoxin_reference();
    let edge = SigmoidEdge {
        edge_ev: 7120.3,
        width_ev: 2.5,
        fdp_low: 0.5,
        fdp_high: 3.9,
    };
    let curves = edge.curves(&kk, &reference).unwrap();
    let energies = kk.energy_ev();
    assert!(
        (curves.fdp[120] - 0.5 - 3.4 * 1.0 / (1.0 + (0.3f64 / 2.5).exp())).abs() < 1e-12,
        "f'' at 7120 eV"
    );
    let dip = curves.fp.iter().copied().fold(f64::INFINITY, f64::min);
    let at = energies[curves.fp.iter().position(|&v| v == dip).unwrap()];
    assert!(
        (at - 7120.3).abs() < 3.0,
        "KK puts the f' minimum at the edge: {at} eV"
    );
    let (w_fp, w_fdp): (Vec<f64>, Vec<f64>) = energies
        .iter()
        .map(|e| ((e * 0.01).sin(), (e * 0.02).cos()))
        .unzip();
    let loss = |p: &[f64]| {
        let c = SigmoidEdge {
            edge_ev: p[0],
            width_ev: p[1],
            fdp_low: p[2],
            fdp_high: p[3],
        }
        .curves(&kk, &reference)
        .unwrap();
        dot(&c.fp, &w_fp) + dot(&c.fdp, &w_fdp)
    };
    let g = edge.curves_vjp(&kk, &w_fp, &w_fdp).unwrap();
    let numeric = central(loss, &[7120.3, 2.5, 0.5, 3.9], 1e-5);
    assert_close(
        &[g.edge_ev, g.width_ev, g.fdp_low, g.fdp_high],
        &numeric,
        1e-6,
        "sigmoid vjp",
    );
}

#[test]
fn shifted_reference_and_its_offset_gradient() {
    let table = sasaki::read(std::path::Path::new(&fixture("tables/sasaki_K_Fe.dat"))).unwrap();
    let energies: Vec<f64> = (0..60).map(|i| 7090.0 + i as f64).collect();
    let shifted = shifted_reference(&table, &energies, 1.8).unwrap();
    let direct = table.at_ev(7120.0 - 1.8).unwrap();
    assert_eq!((shifted.fp[30], shifted.fdp[30]), direct);
    let (w_fp, w_fdp): (Vec<f64>, Vec<f64>) = energies
        .iter()
        .map(|e| ((e * 0.3).sin(), 1.0 + (e * 0.1).cos()))
        .collect();
    let loss = |s: &[f64]| {
        let c = shifted_reference(&table, &energies, s[0]).unwrap();
        dot(&c.fp, &w_fp) + dot(&c.fdp, &w_fdp)
    };
    // The curve is piecewise linear: differentiable away from the table's knots. Check that no
    // shifted energy lies within 1e-3 eV of a knot, so 1e-4 eV FD steps stay inside one segment.
    for e in &energies {
        assert!(
            table.energy_ev.iter().all(|k| (e - 1.83 - k).abs() > 1e-3),
            "{e} eV sits on a knot"
        );
    }
    let analytic = shifted_reference_vjp(&table, &energies, 1.83, &w_fp, &w_fdp).unwrap();
    assert_close(
        &[analytic],
        &central(loss, &[1.83], 1e-4),
        1e-6,
        "shift vjp",
    );
}

#[test]
fn mixture_of_states_and_posterior_probabilities() {
    let (_, red) = rubredoxin_reference();
    let path = fixture("tables/Fe_ox_red_7000_7300.csv");
    let columns = sherrell::parse_columns(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let ox = sherrell::curve(&path, &columns, ["energy_eV", "ox_fp", "ox_fdp"]).unwrap();
    let states = [
        Curves {
            fp: ox.fp,
            fdp: ox.fdp,
        },
        red,
    ];
    let logits = [0.4, -0.9];
    let p_ox = 1.0 / (1.0 + (-1.3f64).exp());
    let mixed = mixture_curves(&logits, &states);
    assert!(
        (mixed.fdp[120] - (p_ox * states[0].fdp[120] + (1.0 - p_ox) * states[1].fdp[120])).abs()
            < 1e-12
    );
    let (w_fp, w_fdp): (Vec<f64>, Vec<f64>) = (0..301)
        .map(|i| ((i as f64 * 0.05).sin(), (i as f64 * 0.07).cos()))
        .unzip();
    let loss = |z: &[f64]| {
        let c = mixture_curves(z, &states);
        dot(&c.fp, &w_fp) + dot(&c.fdp, &w_fdp)
    };
    assert_close(
        &mixture_curves_vjp(&logits, &states, &w_fp, &w_fdp),
        &central(loss, &logits, 1e-6),
        1e-6,
        "mixture vjp",
    );
    // Two states: P(ox | data) = 1 / (1 + prior_red/prior_ox * exp(l_red - l_ox)).
    let (log_prior, log_lik) = ([0.3f64.ln(), 0.7f64.ln()], [-1002.5, -1004.0]);
    let posterior = state_posterior(&log_prior, &log_lik);
    let closed = 1.0 / (1.0 + (0.7 / 0.3) * (-1.5f64).exp());
    assert!(
        (posterior[0] - closed).abs() < 1e-14 && (posterior[0] + posterior[1] - 1.0).abs() < 1e-15
    );
    let numeric = central(|l| log_marginal(&log_prior, l), &log_lik, 1e-6);
    assert_close(&posterior, &numeric, 1e-7, "log-marginal vjp");
}
