//! Kramers-Kronig: the FFT operator against its dense matrix, its adjoint against the transpose,
//! a Lorentzian against its closed-form Hilbert pair, and Sherrell's measured rubredoxin ox/red
//! curves (an independent FFT-KK, tests/fixtures/tables/Fe_ox_red_7000_7300.csv).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::kramers_kronig::{KramersKronig, hat_kernel, power_law_tail};
use spread::physics::scattering_tables::henke::HenkeTable;
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

/// Henke's f1 is itself a Kramers-Kronig transform of his f2 (plus the constant Z*). KK of the f2
/// table on a 1 eV grid over 30 eV-30 keV, plus the closed-form power-law tail above 30 keV, must
/// reproduce f1 - Z* at every tabulated energy from 5 to 10 keV. The two points 0.1 eV either side
/// of the K edge are left out: Henke interpolates f2 linearly across the 33 eV below them, which
/// is not the step his f1 was computed from. The 0.004 e left is a near-constant offset from f2
/// below 30 eV, which the table does not give.
#[test]
fn henke_f1_is_the_kk_transform_of_f2() {
    let table = HenkeTable::read(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tables/fe.nff"
    )))
    .unwrap();
    let t = &table.table;
    let n = 29_971;
    let kk = KramersKronig::new(30.0, 1.0, n).unwrap();
    let energies = kk.energy_ev();
    let fdp: Vec<f64> = energies
        .iter()
        .map(|&e| table.at_ev(e).unwrap().1)
        .collect();
    let fp = kk.apply(&fdp).unwrap();
    let last = t.energy_ev.len() - 1;
    let exponent =
        -(t.fdp[last] / t.fdp[last - 1]).ln() / (t.energy_ev[last] / t.energy_ev[last - 1]).ln();
    let z = f64::from(table.z);
    let z_star = z - (z / 82.5).powf(2.37);
    let mut worst: f64 = 0.0;
    for (i, &e) in t.energy_ev.iter().enumerate() {
        if !(5000.0..=10000.0).contains(&e) || (7111.0..7113.0).contains(&e) {
            continue;
        }
        let j = (e - 30.0).floor() as usize;
        let ours = fp[j] + (e - energies[j]) * (fp[j + 1] - fp[j]);
        let tail = power_law_tail(&[e], 30000.0, t.fdp[last], exponent).unwrap()[0];
        let henke = t.fp[i] + z - z_star;
        worst = worst.max((ours + tail - henke).abs());
    }
    println!(
        "KK of Henke Fe f2 vs Henke f1 - Z*: max difference {worst:.4} e (5-10 keV, edge excluded)"
    );
    assert!(worst < 0.006, "max difference {worst} e");
}

#[test]
fn power_law_tail_matches_quadrature() {
    // f'' = 0.3 (E'/30000)^-2 above 30 keV; midpoint rule on E' = 30000 e^u, u up to 12.
    let (end, f_end, p, e) = (30000.0f64, 0.3, 2.0, 7000.0f64);
    let steps = 200_000;
    let du = 12.0 / steps as f64;
    let quadrature: f64 = (0..steps)
        .map(|k| {
            let ep = end * ((k as f64 + 0.5) * du).exp();
            ep * f_end * (ep / end).powf(-p) / (e * e - ep * ep) * ep * du
        })
        .sum::<f64>()
        * 2.0
        / PI;
    let closed = power_law_tail(&[e], end, f_end, p).unwrap()[0];
    assert!(
        (closed - quadrature).abs() < 1e-8,
        "{closed} vs {quadrature}"
    );
    assert!(power_law_tail(&[40000.0], end, f_end, p).is_err());
}

/// The `kramers_kronig` operator on the rubredoxin model's window (100 channels, 7070-7169 eV):
/// f' of each Sherrell state from its f'' relative to the *other* state's curves, against the
/// measured f', and the same relative to Henke's free-atom Fe curve. The ox-red difference
/// extends over 7041-7248 eV, beyond the window, so the windowed transform of the difference is
/// truncated; measured: RMS 0.032 e, max 0.160 e with the other Sherrell state as reference,
/// against RMS 2.86 e, max 4.70 e with the Henke reference, whose edge (7112 eV, no white line)
/// differs from the measured one over hundreds of eV. Hence the model uses a measured reference.
#[test]
fn window_transform_needs_a_measured_reference() {
    use spread::ops::kramers_kronig::KramersKronigOp;
    use spread::physics::anomalous::shifted_reference;
    use spread::plan::reference::table;
    use spread::tape::{FusedOp, Value};
    let e: Vec<f64> = (0..100).map(|k| 7070.0 + k as f64).collect();
    let curves = |name: &str| shifted_reference(&table(name).unwrap(), &e, 0.0).unwrap();
    let (ox, red) = (curves("sherrell_fe_ox"), curves("sherrell_fe_red"));
    let apply = |op: KramersKronigOp, fdp: &[f64]| -> Vec<f64> {
        let v =
            Value::Real(ndarray::ArrayD::from_shape_vec(vec![fdp.len()], fdp.to_vec()).unwrap());
        match op.forward(&[&v]).unwrap() {
            Value::Real(a) => a.iter().copied().collect(),
            _ => panic!("complex"),
        }
    };
    let errors = |p: &[f64], m: &[f64]| {
        let d: Vec<f64> = p.iter().zip(m).map(|(a, b)| a - b).collect();
        let rms = (d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64).sqrt();
        (rms, d.iter().fold(0.0f64, |m, x| m.max(x.abs())))
    };
    for (state, other, name) in [(&ox, &red, "ox"), (&red, &ox, "red")] {
        let from_other = apply(KramersKronigOp::new(&e, other.clone()).unwrap(), &state.fdp);
        let from_henke = apply(KramersKronigOp::with_henke(&e, "FE").unwrap(), &state.fdp);
        let (rms_s, max_s) = errors(&from_other, &state.fp);
        let (rms_h, max_h) = errors(&from_henke, &state.fp);
        println!(
            "{name}: Sherrell reference RMS {rms_s:.3} e max {max_s:.3} e; Henke RMS {rms_h:.3} e max {max_h:.3} e"
        );
        assert!(rms_s < 0.05 && max_s < 0.2, "{name}: {rms_s} {max_s}");
        assert!(
            rms_h > 2.0,
            "{name}: the Henke reference was expected to be far off: {rms_h}"
        );
        // With its own curves as reference the transform is exact (the difference is zero).
        let own = apply(KramersKronigOp::new(&e, state.clone()).unwrap(), &state.fdp);
        assert!(errors(&own, &state.fp).1 < 1e-12);
    }
}
