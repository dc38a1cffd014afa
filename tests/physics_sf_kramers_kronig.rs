//! Kramers-Kronig: the FFT operator against its dense matrix, its adjoint against the transpose,
//! a Lorentzian against its closed-form Hilbert pair, and Sherrell's measured rubredoxin ox/red
//! curves (an independent FFT-KK, tests/fixtures/tables/Fe_ox_red_7000_7300.csv).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::kramers_kronig::{KramersKronig, hat_kernel};
use spread::physics::scattering_tables::sherrell;
use std::f64::consts::PI;

fn dense(start: f64, step: f64, n: usize) -> Vec<Vec<f64>> {
    let a0 = 2.0 * start / step;
    (0..n)
        .map(|j| {
            (0..n)
                .map(|i| (hat_kernel(j as f64 - i as f64) - hat_kernel(a0 + (i + j) as f64)) / PI)
                .collect()
        })
        .collect()
}

fn signal(n: usize, seed: f64) -> Vec<f64> {
    (0..n)
        .map(|i| (i as f64 * 0.731 + seed).sin() * 3.0 + (i as f64 * 0.117).cos())
        .collect()
}

#[test]
fn fft_operator_equals_its_dense_matrix_and_adjoint_is_the_transpose() {
    for (start, step, n) in [(7000.0, 1.0, 37), (6500.0, 0.5, 64), (100.0, 2.0, 5)] {
        let kk = KramersKronig::new(start, step, n).unwrap();
        let a = dense(start, step, n);
        let (g, u) = (signal(n, 0.3), signal(n, 1.7));
        let fp = kk.apply(&g).unwrap();
        let back = kk.adjoint(&u).unwrap();
        for j in 0..n {
            let direct: f64 = (0..n).map(|i| a[j][i] * g[i]).sum();
            assert!(
                (fp[j] - direct).abs() < 1e-10,
                "apply row {j}: {} vs {direct}",
                fp[j]
            );
            let transpose: f64 = (0..n).map(|i| a[i][j] * u[i]).sum();
            assert!(
                (back[j] - transpose).abs() < 1e-10,
                "adjoint row {j}: {} vs {transpose}",
                back[j]
            );
        }
        let lhs: f64 = fp.iter().zip(&u).map(|(x, y)| x * y).sum();
        let rhs: f64 = g.iter().zip(&back).map(|(x, y)| x * y).sum();
        assert!((lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0));
    }
}

/// Closed form: for f''(E) = gamma / ((E - c)^2 + gamma^2), the full KK integral over (0, inf) is
/// f'(E) = (E - c)/((E - c)^2 + gamma^2) - (E + c)/((E + c)^2 + gamma^2) (poles at c +- i gamma).
fn lorentzian_error(step: f64) -> f64 {
    let (c, gamma, half_width) = (7120.0, 4.0, 600.0);
    let n = (2.0 * half_width / step) as usize + 1;
    let start = c - half_width;
    let kk = KramersKronig::new(start, step, n).unwrap();
    let energies = kk.energy_ev();
    let fdp: Vec<f64> = energies
        .iter()
        .map(|e| gamma / ((e - c).powi(2) + gamma * gamma))
        .collect();
    let fp = kk.apply(&fdp).unwrap();
    energies
        .iter()
        .zip(&fp)
        .filter(|(e, _)| (*e - c).abs() <= 50.0)
        .map(|(e, f)| {
            (f - ((e - c) / ((e - c).powi(2) + gamma * gamma)
                - (e + c) / ((e + c).powi(2) + gamma * gamma)))
                .abs()
        })
        .fold(0.0, f64::max)
}

#[test]
fn lorentzian_matches_its_closed_form_and_converges_at_second_order() {
    let (coarse, fine) = (lorentzian_error(0.5), lorentzian_error(0.25));
    // Truncating the tails at +-600 eV costs gamma/(pi 600^2) ~ 4e-6; discretisation is O(dE^2).
    assert!(fine < 2e-4, "max error within 50 eV of the line: {fine}");
    assert!(
        fine < coarse / 3.0,
        "second-order convergence: {coarse} -> {fine}"
    );
}

#[test]
fn sherrell_oxidized_from_reduced_reference() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tables/Fe_ox_red_7000_7300.csv"
    );
    let columns = sherrell::parse_columns(path, &std::fs::read_to_string(path).unwrap()).unwrap();
    let ox = sherrell::curve(path, &columns, ["energy_eV", "ox_fp", "ox_fdp"]).unwrap();
    let red = sherrell::curve(path, &columns, ["energy_eV", "red_fp", "red_fdp"]).unwrap();
    let kk = KramersKronig::on_grid(&ox.energy_ev).unwrap();
    let predicted_ox = kk.apply_with_reference(&ox.fdp, &red.fp, &red.fdp).unwrap();
    let predicted_red = kk.apply_with_reference(&red.fdp, &ox.fp, &ox.fdp).unwrap();
    for (predicted, measured, name) in [
        (&predicted_ox, &ox.fp, "ox"),
        (&predicted_red, &red.fp, "red"),
    ] {
        let errors: Vec<f64> = predicted.iter().zip(measured).map(|(p, m)| p - m).collect();
        let rms = (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt();
        let max = errors.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        let other = if name == "ox" { &red.fp } else { &ox.fp };
        let signal_rms = (measured
            .iter()
            .zip(other)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / errors.len() as f64)
            .sqrt();
        println!(
            "KK {name} from the other state's reference: RMS {rms:.4} e, max {max:.4} e (RMS ox-red f' difference {signal_rms:.3} e)"
        );
        // The two files were spliced: their f'' difference steps from -0.113 e to 0 between 7248 and
        // 7249 eV while their f' difference is exactly 0 outside 7041-7248 eV, which no KK pair does
        // (a step gives a log singularity). That splice bounds the agreement: measured RMS 0.034 e,
        // max 0.161 e at 7249 eV; the error is a smooth trend (+0.02 e at 7000 eV to -0.02 e at
        // 7300 eV) and the splice step. KK must still explain 75% of the RMS ox/red f' difference.
        assert!(rms < 0.04 && max < 0.17, "{name}: RMS {rms}, max {max}");
        assert!(
            rms < 0.25 * signal_rms,
            "{name}: RMS {rms} vs signal {signal_rms}"
        );
    }
}
