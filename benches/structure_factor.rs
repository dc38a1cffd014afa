//! Structure factors of 1BRF (975 atoms, P212121) at 100 spectrum channels for every unique
//! reflection to d_min, on 1 and 2 threads: the per-hkl precomputation (once per model), the
//! fixed part (once per channel set), and the per-step metal update F = F_fixed + (f' + i f'') G
//! with its fused |F|^2 adjoint. Prints wall and process-CPU times (the CPU time stays
//! meaningful on a shared machine), structure factors per second, and the 2-thread speedup.
//! Run: cargo bench --bench structure_factor [-- D_MIN]

use ndarray::Array2;
use spread::physics::atoms;
use spread::physics::form_factor::FormFactors;
use spread::physics::miller;
use spread::physics::scattering_tables::henke::HenkeTable;
use spread::physics::scattering_tables::wk1995::GaussianSet;
use spread::physics::structure_factor::{
    StructureFactorModel, intensity_site_vjp, structure_factors, structure_factors_into,
};
use std::hint::black_box;
use std::time::Instant;

const CHANNELS: usize = 100;

/// Process CPU seconds (user + system) from /proc/self/stat; NaN where unavailable.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the command name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// Median wall seconds and mean CPU seconds of `runs` calls of `f`.
fn timed<F: FnMut()>(runs: usize, mut f: F) -> (f64, f64) {
    let cpu_start = cpu_seconds();
    let mut walls: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    let cpu = (cpu_seconds() - cpu_start) / runs as f64;
    walls.sort_by(f64::total_cmp);
    (walls[runs / 2], cpu)
}

/// (wall, cpu) for precompute, fixed part, forward, adjoint on the current rayon pool.
fn measure(crystal: &atoms::Crystal, hkl: &[[i32; 3]], energies: &[f64]) -> [(f64, f64); 4] {
    let fail = |e: &dyn std::fmt::Display| -> ! { panic!("{e}") };
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap_or_else(|e| fail(&e));
    let build =
        || StructureFactorModel::new(crystal, hkl, &wk, &["Fe"]).unwrap_or_else(|e| fail(&e));
    let model = build();
    let precompute = timed(3, || {
        black_box(build());
    });
    let tables: Vec<HenkeTable> = model
        .types
        .iter()
        .map(|el| HenkeTable::embedded(el).unwrap_or_else(|e| fail(&e)))
        .collect();
    let henke = |el: &str, e: f64| {
        tables
            .iter()
            .find(|t| t.element == el)
            .map_or(Ok((0.0, 0.0)), |t| t.at_ev(e))
    };
    let fixed = model
        .fixed_part(energies, henke)
        .unwrap_or_else(|e| fail(&e));
    let fixed_time = timed(5, || {
        black_box(
            model
                .fixed_part(energies, henke)
                .unwrap_or_else(|e| fail(&e)),
        );
    });
    let fp = Array2::from_shape_fn((1, CHANNELS), |(_, e)| -7.0 + 0.01 * e as f64);
    let fdp = Array2::from_shape_fn((1, CHANNELS), |(_, e)| 0.5 + 0.03 * e as f64);
    let mut f =
        structure_factors(&model, &fixed, fp.view(), fdp.view()).unwrap_or_else(|e| fail(&e));
    let forward = timed(41, || {
        structure_factors_into(&model, &fixed, fp.view(), fdp.view(), &mut f)
            .unwrap_or_else(|e| fail(&e));
        black_box(&f);
    });
    let grad_i = Array2::from_elem(f.dim(), 0.25);
    let adjoint = timed(41, || {
        black_box(intensity_site_vjp(&model, f.view(), grad_i.view()));
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
    let images = (hkl.len() * crystal.atoms.len() * crystal.space_group.order()) as f64;
    println!(
        "1BRF: {} atoms x {} operators, {} unique hkl to d_min {d_min} A, {CHANNELS} channels",
        crystal.atoms.len(),
        crystal.space_group.order(),
        hkl.len()
    );
    let names = [
        "precompute G(h)",
        "fixed part",
        "forward update",
        "fused adjoint",
    ];
    let per = [images, n_sf, n_sf, n_sf];
    let unit = ["atom-images", "F", "F", "F"];
    let mut walls = Vec::new();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let t = pool.install(|| measure(&crystal, &hkl, &energies));
        println!(
            "{threads} thread(s):          wall ms    per second (wall)   CPU ms   per CPU-second"
        );
        for i in 0..4 {
            let (wall, cpu) = t[i];
            println!(
                "  {:16} {:10.3}  {:10.3e} {:11} {:8.1}  {:10.3e}",
                names[i],
                wall * 1e3,
                per[i] / wall,
                unit[i],
                cpu * 1e3,
                per[i] / cpu
            );
        }
        let scratch = t[0].0 + t[1].0 + t[2].0;
        println!(
            "  from scratch: {:.1} ms, {:.3e} F/s; a step that moves only f'/f'' is {:.0}x cheaper; adjoint/forward {:.2}",
            scratch * 1e3,
            n_sf / scratch,
            scratch / t[2].0,
            t[3].0 / t[2].0
        );
        walls.push(t.map(|x| x.0));
    }
    let speedups: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{n} {:.2}x", walls[0][i] / walls[1][i]))
        .collect();
    println!("2 threads vs 1 (wall): {}", speedups.join(", "));
}
