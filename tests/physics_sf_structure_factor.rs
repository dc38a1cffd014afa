//! Structure factors against CCTBX direct summation (tests/fixtures/ref, see SOURCES.md) to 1e-6
//! relative on every listed reflection, and the adjoints against central finite differences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ndarray::Array2;
use num_complex::Complex64;
use spread::physics::atoms;
use spread::physics::form_factor::FormFactors;
use spread::physics::scattering_tables::henke::HenkeTable;
use spread::physics::scattering_tables::wk1995::GaussianSet;
use spread::physics::structure_factor::{
    StructureFactorModel, intensities, intensity_site_vjp, intensity_vjp, structure_factor_vjp,
    structure_factors,
};
use std::path::Path;

fn fixture(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

struct Reference {
    header: String,
    hkl: Vec<[i32; 3]>,
    d: Vec<f64>,
    f: Vec<Complex64>,
}

fn read_reference(name: &str) -> Reference {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    let header = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut r = Reference {
        header,
        hkl: vec![],
        d: vec![],
        f: vec![],
    };
    for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
        let v: Vec<&str> = line.split(',').collect();
        r.hkl.push([0, 1, 2].map(|i| v[i].parse().unwrap()));
        r.d.push(v[3].parse().unwrap());
        r.f.push(Complex64::new(v[4].parse().unwrap(), v[5].parse().unwrap()));
    }
    r
}

/// |F - F_ref| <= 1e-6 |F_ref| + 1e-6: relative 1e-6, plus the CSV's printed precision (6 decimals).
fn assert_matches(ours: &[Complex64], reference: &Reference, what: &str) {
    let worst = ours
        .iter()
        .zip(&reference.f)
        .filter(|(_, r)| r.norm() > 1.0)
        .map(|(f, r)| (f - r).norm() / r.norm())
        .fold(0.0, f64::max);
    println!(
        "{what}: max |F - F_cctbx| / |F_cctbx| = {worst:.2e} over {} reflections",
        ours.len()
    );
    for (i, (f, r)) in ours.iter().zip(&reference.f).enumerate() {
        let tol = 1e-6 * r.norm() + 1e-6;
        assert!(
            (f - r).norm() <= tol,
            "{what} hkl {:?}: ours {f} cctbx {r} (|diff| {:.3e} > {tol:.3e})",
            reference.hkl[i],
            (f - r).norm()
        );
    }
}

fn fe_values_from_header(header: &str) -> (f64, f64) {
    let tail = header.split(" = ").last().unwrap();
    let v: Vec<f64> = tail.split(',').map(|x| x.trim().parse().unwrap()).collect();
    (v[0], v[1])
}

#[test]
fn rubredoxin_matches_cctbx_at_three_energies() {
    let crystal = atoms::read(&fixture("pdb/Fe_1brf_snip_reduced.pdb")).unwrap();
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    for energy in [7110.0, 7120.0, 7130.0] {
        let reference = read_reference(&format!("ref/1brf_ox_{energy:.0}.csv"));
        let model = StructureFactorModel::new(&crystal, &reference.hkl, &wk, &["Fe"]).unwrap();
        for (d, r) in model.d_spacing.iter().zip(&reference.d) {
            assert!((d - r).abs() < 1e-5, "d spacing {d} vs {r}");
        }
        let fixed = model
            .fixed_part(&[energy], |el, e| HenkeTable::embedded(el)?.at_ev_f32(e))
            .unwrap();
        let (fp, fdp) = fe_values_from_header(&reference.header);
        let f = structure_factors(
            &model,
            &fixed,
            Array2::from_elem((1, 1), fp).view(),
            Array2::from_elem((1, 1), fdp).view(),
        )
        .unwrap();
        assert_matches(
            f.as_slice().unwrap(),
            &reference,
            &format!("1brf {energy} eV"),
        );
        // CCTBX interpolates Henke tables in f32; the f64 path must agree as well.
        let fixed64 = model
            .fixed_part(&[energy], |el, e| HenkeTable::embedded(el)?.at_ev(e))
            .unwrap();
        let fp = Array2::from_elem((1, 1), fp);
        let fdp = Array2::from_elem((1, 1), fdp);
        let f64_path = structure_factors(&model, &fixed64, fp.view(), fdp.view()).unwrap();
        let what = format!("1brf {energy} eV, Henke in f64");
        assert_matches(f64_path.as_slice().unwrap(), &reference, &what);
    }
}

#[test]
fn oec_fixture_matches_cctbx() {
    let crystal = atoms::read(&fixture("pdb/psii_OEC_chainA_fixture.pdb")).unwrap();
    assert_eq!((crystal.atoms.len(), crystal.space_group.order()), (14, 4));
    let it = FormFactors::embedded(GaussianSet::It1992).unwrap();
    let reference = read_reference("ref/ref_sf_OEC_fixture.csv");
    let model = StructureFactorModel::new(&crystal, &reference.hkl, &it, &["Mn"]).unwrap();
    assert_eq!(model.n_sites(), 4);
    let fixed = model.fixed_part(&[6550.0], |_, _| Ok((0.0, 0.0))).unwrap();
    let f = structure_factors(
        &model,
        &fixed,
        Array2::from_elem((4, 1), -7.0).view(),
        Array2::from_elem((4, 1), 3.5).view(),
    )
    .unwrap();
    assert_matches(f.as_slice().unwrap(), &reference, "OEC");
}

/// L = sum w_I |F|^2 with fixed random-ish weights; its gradient in f'/f'' by the adjoints.
#[test]
fn adjoints_match_central_differences() {
    let crystal = atoms::read(&fixture("pdb/psii_OEC_chainA_fixture.pdb")).unwrap();
    let it = FormFactors::embedded(GaussianSet::It1992).unwrap();
    let hkl = [[1, 2, 3], [-2, 3, 5], [5, -7, 11], [4, 0, 6], [3, 3, 3]];
    let model = StructureFactorModel::new(&crystal, &hkl, &it, &["Mn"]).unwrap();
    let energies = [6540.0, 6550.0, 6560.0];
    let fixed = model
        .fixed_part(&energies, |_, e| Ok((0.1 * (e - 6550.0) / 10.0, 0.3)))
        .unwrap();
    let fp = Array2::from_shape_fn((4, 3), |(m, e)| -7.0 + 0.3 * m as f64 - 0.2 * e as f64);
    let fdp = Array2::from_shape_fn((4, 3), |(m, e)| 3.5 + 0.1 * m as f64 + 0.4 * e as f64);
    let weights = Array2::from_shape_fn((5, 3), |(i, e)| 1.0 + 0.37 * i as f64 - 0.21 * e as f64);
    let loss = |fp: &Array2<f64>, fdp: &Array2<f64>| {
        let f = structure_factors(&model, &fixed, fp.view(), fdp.view()).unwrap();
        (intensities(f.view()) * &weights).sum()
    };
    let f = structure_factors(&model, &fixed, fp.view(), fdp.view()).unwrap();
    let grad_f = intensity_vjp(f.view(), weights.view());
    let (g_fp, g_fdp) = structure_factor_vjp(&model, grad_f.view());
    let (fused_fp, fused_fdp) = intensity_site_vjp(&model, f.view(), weights.view());
    assert_eq!((&fused_fp, &fused_fdp), (&g_fp, &g_fdp));
    let h = 1e-4;
    for m in 0..4 {
        for e in 0..3 {
            for (which, analytic) in [(0, g_fp[(m, e)]), (1, g_fdp[(m, e)])] {
                let (mut plus, mut minus) = ((fp.clone(), fdp.clone()), (fp.clone(), fdp.clone()));
                if which == 0 {
                    plus.0[(m, e)] += h;
                    minus.0[(m, e)] -= h;
                } else {
                    plus.1[(m, e)] += h;
                    minus.1[(m, e)] -= h;
                }
                let numeric = (loss(&plus.0, &plus.1) - loss(&minus.0, &minus.1)) / (2.0 * h);
                assert!(
                    (numeric - analytic).abs() <= 1e-6 * analytic.abs().max(1.0),
                    "site {m} channel {e} param {which}: FD {numeric} vs adjoint {analytic}"
                );
            }
        }
    }
}

/// The adjoint reduces fixed chunks in a fixed order: the same bits on 1 and 2 threads.
#[test]
fn adjoint_is_bit_identical_across_thread_counts() {
    let crystal = atoms::read(&fixture("pdb/Fe_1brf_snip_reduced.pdb")).unwrap();
    let hkl = spread::physics::miller::unique_to_d_min(&crystal.cell, &crystal.space_group, 3.0);
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    let model = StructureFactorModel::new(&crystal, &hkl, &wk, &["Fe"]).unwrap();
    let energies: Vec<f64> = (0..7).map(|i| 7115.0 + i as f64).collect();
    let fixed = model
        .fixed_part(&energies, |el, e| HenkeTable::embedded(el)?.at_ev(e))
        .unwrap();
    let fp = Array2::from_elem((1, 7), -7.0);
    let fdp = Array2::from_elem((1, 7), 2.0);
    let f = structure_factors(&model, &fixed, fp.view(), fdp.view()).unwrap();
    let weights = Array2::from_shape_fn(f.dim(), |(i, e)| ((i * 7 + e) as f64 * 0.37).sin());
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| intensity_site_vjp(&model, f.view(), weights.view()))
    };
    assert_eq!(run(1), run(2));
}

/// Monoclinic C2 and hexagonal P6122 with atoms on 2-fold axes (site multiplicity 2 of 4 and 6 of
/// 12), against CCTBX (tests/fixtures/ref/gen_sf_special.py): orthogonalization of oblique cells,
/// centring, screw axes and CCTBX's special-position weighting.
#[test]
fn special_positions_and_oblique_cells_match_cctbx() {
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    for (key, anomalous) in [
        ("c2", vec![("Fe", (-3.1, 3.9)), ("S", (0.2, 0.5))]),
        ("p6122", vec![("Zn", (-1.5, 2.6)), ("Mn", (-4.0, 3.0))]),
    ] {
        let crystal = atoms::read(&fixture(&format!("pdb/special_{key}.pdb"))).unwrap();
        let text = std::fs::read_to_string(fixture(&format!("ref/sf_special_{key}.csv"))).unwrap();
        let (mut hkl, mut reference) = (Vec::new(), Vec::new());
        for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
            let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
            hkl.push([v[0] as i32, v[1] as i32, v[2] as i32]);
            reference.push(Complex64::new(v[4], v[5]));
        }
        let model = StructureFactorModel::new(&crystal, &hkl, &wk, &[]).unwrap();
        let lookup = |el: &str, _| {
            Ok(anomalous
                .iter()
                .find(|(e, _)| *e == el)
                .map_or((0.0, 0.0), |a| a.1))
        };
        let fixed = model.fixed_part(&[7000.0], lookup).unwrap();
        let none = Array2::zeros((0, 1));
        let f = structure_factors(&model, &fixed, none.view(), none.view()).unwrap();
        let mut worst: f64 = 0.0;
        for (i, (ours, cctbx)) in f.iter().zip(&reference).enumerate() {
            let diff = (ours - cctbx).norm();
            worst = worst.max(diff / cctbx.norm().max(1.0));
            assert!(
                diff <= 1e-6 * cctbx.norm() + 1e-8,
                "{key} {:?}: ours {ours} cctbx {cctbx}",
                hkl[i]
            );
        }
        println!(
            "{key}: {} reflections, max relative difference {worst:.2e}",
            hkl.len()
        );
    }
}
