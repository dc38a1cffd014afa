//! The pixel model as a library against the oracle: a DIALS-frame description of case square_mono gives
//! nanoBragg's image; the response matrix equals the kernel; shoebox regions equal crops of the image;
//! the amorphous background equals nanoBragg's water term (water_bg − square_mono).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use spread::physics::background::{AVOGADRO, AmorphousTable, WATER_F, WATER_MW, add_amorphous};
use spread::physics::beam::{Beam, equal_weight_channels, spectrum_channels};
use spread::physics::geometry::detector::Panel;
use spread::physics::geometry::{Mat3, Vec3};
use spread::physics::lattice::Shape;
use spread::physics::mosaic::MosaicDomains;
use spread::physics::nanobragg::{Simulation, args};
use spread::physics::polarization::Polarization;
use spread::physics::response::ResponseMatrix;
use spread::physics::spot::{
    ChannelFsq, ConstantF, Region, SpotModel, render, render_serial, spot_vjp,
};
use std::path::Path;

fn golden(case: &str) -> Vec<f64> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/oracle/{case}.f32"));
    std::fs::read(p)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

fn case_sim(argv: &str) -> Simulation {
    let a = args::parse(
        &argv
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    Simulation::from_args(&a, None).unwrap()
}

const SQUARE_MONO: &str = "-cell 50 50 50 90 90 90 -misset 10 20 30 -default_F 100 -N 5 -square_xtal -lambda 1 \
     -distance 100 -pixel 0.1 -detpixels 128 -oversample 1 -polar 0";

/// nanoBragg lab (x along the beam) → DIALS lab (beam along −z): (x, y, z) ↦ (z, y, −x).
fn to_dials(v: Vec3) -> Vec3 {
    [v[2], v[1], -v[0]]
}

#[test]
fn dials_frame_panel_reproduces_square_mono() {
    let nb = case_sim(SQUARE_MONO);
    let m = &nb.model;
    let origin_mm = nb.model.panel.dials_origin_mm();
    assert_eq!(origin_mm, [-6.5, 6.5, -100.0]); // printed by nanoBragg as "dials origin"
    let panel = Panel::from_dials(
        origin_mm,
        to_dials(m.panel.fast),
        to_dials(m.panel.slow),
        [0.1, 0.1],
        [128, 128],
    )
    .unwrap();
    let mut beam = m.beam.clone();
    beam.incident = to_dials(beam.incident);
    beam.polar_vector = to_dials(beam.polar_vector);
    let real: Mat3 = m.real_space_m.map(to_dials);
    let dials = SpotModel {
        polarization: Polarization::new(beam.incident, beam.polar_vector, 0.0),
        panel,
        beam,
        real_space_m: real,
        ..m.clone()
    };
    let region = Region::full(&dials.panel);
    let mut out = vec![0.0; region.len()];
    render(&dials, &ConstantF(100.0), &region, &mut out).unwrap();
    let g = golden("square_mono");
    let max = g.iter().copied().fold(0.0, f64::max);
    for (a, b) in out.iter().zip(&g) {
        let ok = if *b > 1e-6 * max {
            (a - b).abs() <= 1e-6 * b
        } else {
            (a - b).abs() <= 1e-6 * max
        };
        assert!(ok, "{a} vs {b}");
    }
}

/// A polychromatic, mosaic, oversampled GAUSS model with per-channel |F|² (the fit's configuration).
fn fit_model() -> SpotModel {
    let mut m = case_sim(SQUARE_MONO).model;
    let wavelengths: Vec<f64> = (0..7).map(|k| 0.997 + 0.001 * k as f64).collect();
    let weights: Vec<f64> = (0..7).map(|k| 1.0 + 0.1 * k as f64).collect();
    m.beam.channels = spectrum_channels(&wavelengths, &weights).unwrap();
    m.domains = MosaicDomains::isotropic(0.1, 6, 5, true);
    m.shape = Shape::Gauss;
    m.oversample = 2;
    m.scale = 0.8;
    m.background = 3.0;
    m
}

const SHOEBOX: Region = Region {
    slow0: 66,
    fast0: 101,
    n_slow: 15,
    n_fast: 15,
};

#[test]
fn response_matrix_equals_direct_kernel() {
    let m = fit_model();
    let fsq: Vec<f64> = (0..7).map(|k| 8000.0 + 500.0 * (k as f64).sin()).collect();
    let mut direct = vec![0.0; SHOEBOX.len()];
    render(&m, &ChannelFsq(&fsq), &SHOEBOX, &mut direct).unwrap();
    let r = ResponseMatrix::build(&m, &SHOEBOX).unwrap();
    assert_eq!(r.matrix.dim(), (SHOEBOX.len(), 7));
    let via_r = r.apply(&fsq).unwrap();
    for (a, b) in via_r.iter().zip(&direct) {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
    }
    let up: Vec<f64> = (0..SHOEBOX.len()).map(|i| (i as f64 * 0.3).cos()).collect();
    let g = spot_vjp(&m, &fsq, &SHOEBOX, &up).unwrap();
    for (a, b) in r.vjp_fsq(&up).unwrap().iter().zip(&g.fsq) {
        assert!((a - b).abs() <= 1e-10 * b.abs().max(1e-3), "{a} vs {b}");
    }
}

#[test]
fn shoebox_equals_crop_of_full_image_and_serial_equals_parallel() {
    let m = fit_model();
    let fsq = vec![9000.0; 7];
    let full = Region::full(&m.panel);
    let mut image = vec![0.0; full.len()];
    render(&m, &ChannelFsq(&fsq), &full, &mut image).unwrap();
    let mut sb = vec![0.0; SHOEBOX.len()];
    render_serial(&m, &ChannelFsq(&fsq), &SHOEBOX, &mut sb).unwrap();
    for r in 0..SHOEBOX.n_slow {
        for c in 0..SHOEBOX.n_fast {
            let want = image[(SHOEBOX.slow0 + r) * 128 + SHOEBOX.fast0 + c];
            assert_eq!(sb[r * SHOEBOX.n_fast + c], want);
        }
    }
}

#[test]
fn amorphous_background_equals_nanobragg_water_term() {
    // With steps = 1 and r_e²Φ = 1, water_bg − square_mono is r_e²Φ·P·Ω·F_water²·n_molecules.
    let nb = case_sim(SQUARE_MONO);
    let w = 0.03e-6;
    let n_molecules = w * w * w * 1e6 * AVOGADRO / WATER_MW;
    let table = AmorphousTable::new(vec![0.0, 1.0], vec![WATER_F, WATER_F]).unwrap();
    let beam = Beam::nanobragg(equal_weight_channels(&[1.0]).unwrap(), 0.0);
    let region = Region::full(&nb.model.panel);
    let mut bg = vec![0.0; region.len()];
    add_amorphous(
        &nb.model.panel,
        &beam,
        &nb.model.polarization,
        &table,
        n_molecules,
        &region,
        &mut bg,
    );
    let (water, spots) = (golden("water_bg"), golden("square_mono"));
    for ((b, wv), s) in bg.iter().zip(&water).zip(&spots) {
        // the float32 difference carries one rounding of the water_bg pixel
        assert!(
            (b - (wv - s)).abs() <= 2.0 * f64::from(f32::EPSILON) * wv,
            "{b} vs {}",
            wv - s
        );
    }
    assert!(bg[0] > 5.86 && bg[0] < 5.88 && bg[64 * 128 + 64] > 5.96);
}
