//! Structure factors of 1BRF (975 atoms, P212121) at 100 spectrum channels for every unique
//! reflection to d_min, on 1 and 2 threads: the per-hkl precomputation (once per model), the
//! fixed part (once per channel set), and the per-step metal update F = F_fixed + (f' + i f'') G
//! with its adjoint. Prints times, structure factors per second, and the 2-thread speedup.
//! Run: cargo bench --bench structure_factor [-- D_MIN]

use ndarray::Array2;
use num_complex::Complex64;
use spread::physics::atoms;
use spread::physics::form_factor::FormFactors;
use spread::physics::miller;
use spread::physics::scattering_tables::henke::HenkeTable;
use spread::physics::scattering_tables::wk1995::GaussianSet;
use spread::physics::structure_factor::{
    StructureFactorModel, structure_factor_vjp, structure_factors,
};
use std::hint::black_box;
use std::time::Instant;

const CHANNELS: usize = 100;

/// Median seconds of `runs` calls of `f`.
fn median_seconds<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// Seconds for (precompute, fixed part, forward, adjoint) on the current rayon pool.
fn measure(crystal: &atoms::Crystal, hkl: &[[i32; 3]], energies: &[f64]) -> [f64; 4] {
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap_or_else(|e| panic!("{e}"));
    let henke = |el: &str, e: f64| HenkeTable::embedded(el)?.at_ev(e);
    let model =
        StructureFactorModel::new(crystal, hkl, &wk, &["Fe"]).unwrap_or_else(|e| panic!("{e}"));
    let precompute = median_seconds(3, || {
        black_box(
            StructureFactorModel::new(crystal, hkl, &wk, &["Fe"]).unwrap_or_else(|e| panic!("{e}")),
        );
    });
    let tables: Vec<HenkeTable> = ["H", "C", "N", "O", "S"]
        .iter()
        .map(|el| HenkeTable::embedded(el).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let cached = |el: &str, e: f64| {
        tables
            .iter()
            .find(|t| t.element == el)
            .map_or_else(|| henke(el, e), |t| t.at_ev(e))
    };
    let fixed = model
        .fixed_part(energies, cached)
        .unwrap_or_else(|e| panic!("{e}"));
    let fixed_time = median_seconds(5, || {
        black_box(
            model
                .fixed_part(energies, cached)
                .unwrap_or_else(|e| panic!("{e}")),
        );
    });
    let fp = Array2::from_shape_fn((1, CHANNELS), |(_, e)| -7.0 + 0.01 * e as f64);
    let fdp = Array2::from_shape_fn((1, CHANNELS), |(_, e)| 0.5 + 0.03 * e as f64);
    let forward = median_seconds(21, || {
        black_box(
            structure_factors(&model, &fixed, fp.view(), fdp.view())
                .unwrap_or_else(|e| panic!("{e}")),
        );
    });
    let grad = Array2::from_elem((hkl.len(), CHANNELS), Complex64::new(0.3, -0.2));
    let adjoint = median_seconds(21, || {
        black_box(structure_factor_vjp(&model, grad.view()));
    });
    [precompute, fixed_time, forward, adjoint]
}

fn main() {
    let d_min: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2.0);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pdb/Fe_1brf_snip_reduced.pdb"
    );
    let crystal = atoms::read(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    let hkl = miller::unique_to_d_min(&crystal.cell, &crystal.space_group, d_min);
    let energies: Vec<f64> = (0..CHANNELS).map(|i| 7070.0 + i as f64).collect();
    let n_sf = (hkl.len() * CHANNELS) as f64;
    let atom_images = (hkl.len() * crystal.atoms.len() * crystal.space_group.order()) as f64;
    println!(
        "1BRF: {} atoms x {} operators, {} unique hkl to d_min {d_min} A, {CHANNELS} channels",
        crystal.atoms.len(),
        crystal.space_group.order(),
        hkl.len()
    );
    let mut results = Vec::new();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let t = pool.install(|| measure(&crystal, &hkl, &energies));
        println!("{threads} thread(s):");
        println!(
            "  precompute per hkl   {:9.3} ms  {:8.2e} atom-images/s",
            t[0] * 1e3,
            atom_images / t[0]
        );
        println!(
            "  fixed part (100 ch)  {:9.3} ms  {:8.2e} F/s",
            t[1] * 1e3,
            n_sf / t[1]
        );
        println!(
            "  metal update forward {:9.3} ms  {:8.2e} F/s",
            t[2] * 1e3,
            n_sf / t[2]
        );
        println!(
            "  metal update adjoint {:9.3} ms  {:8.2e} F/s  (adjoint/forward {:.2})",
            t[3] * 1e3,
            n_sf / t[3],
            t[3] / t[2]
        );
        let total = t[0] + t[1] + t[2];
        println!(
            "  from scratch         {:9.3} ms  {:8.2e} F/s  (per-step update is {:.0}x faster)",
            total * 1e3,
            n_sf / total,
            total / t[2]
        );
        results.push(t);
    }
    let names = ["precompute", "fixed part", "forward", "adjoint"];
    let speedups: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n} {:.2}x", results[0][i] / results[1][i]))
        .collect();
    println!("2 threads vs 1: {}", speedups.join(", "));
}
