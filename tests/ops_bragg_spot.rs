//! The bragg spot, response-matrix and plane-background nodes on an oracle-like geometry (MOSFLM
//! detector, 60 mm, 0.1 mm pixels, 256², oversample 2, as oracle case gauss_oversample) with the
//! 1BRF cell (tests/fixtures/pdb) and a polychromatic spectrum around the Fe edge: forward equals
//! the physics call, gradients through the tape against central differences, the response path
//! agrees with the full kernel, and one chain from an edge shift to a Poisson likelihood.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops_support;

use ndarray::{ArrayD, IxDyn};
use ops_support::{check_fd, fixture, op_loss, tape_gradient};
use spread::ops::{BraggSpotOp, MosaicInput, PlaneBackgroundOp, ResponseOp};
use spread::physics::atoms;
use spread::physics::background::BackgroundPlane;
use spread::physics::beam::{Beam, spectrum_channels};
use spread::physics::crystal::{UnitCell, nanobragg_real_space};
use spread::physics::geometry::detector::{MosflmDetector, Panel};
use spread::physics::lattice::Shape;
use spread::physics::mosaic::MosaicDomains;
use spread::physics::polarization::Polarization;
use spread::physics::spot::{ChannelFsq, ConstantF, Region, SpotModel, render};
use spread::tape::{FusedOp, NodeId, Tape, Value};
use std::sync::Arc;

/// `n` channels of 1 eV centred on 7120 eV with a Gaussian SASE-like envelope (sd 20 eV).
fn beam(n: usize) -> Beam {
    let energy: Vec<f64> = (0..n).map(|i| 7120.0 + i as f64 - (n / 2) as f64).collect();
    let wavelengths: Vec<f64> = energy.iter().map(|e| 12398.4198 / e).collect();
    let weights: Vec<f64> = energy.iter().map(|e| (-((e - 7120.0) / 20.0).powi(2) / 2.0).exp()).collect();
    let total: f64 = weights.iter().sum();
    let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
    Beam::nanobragg(spectrum_channels(&wavelengths, &weights).unwrap(), 0.0)
}

fn template(shape: Shape, n_channels: usize) -> SpotModel {
    let crystal = atoms::read(&fixture("pdb/Fe_1brf_snip_reduced.pdb")).unwrap();
    let cell = UnitCell::new(crystal.cell.lengths, crystal.cell.angles_deg).unwrap();
    let panel = Panel::mosflm(&MosflmDetector {
        distance_mm: 60.0,
        pixel_mm: 0.1,
        n_fast: 256,
        n_slow: 256,
        xbeam_mm: None,
        ybeam_mm: None,
    })
    .unwrap();
    let beam = beam(n_channels);
    SpotModel {
        polarization: Polarization::new(beam.incident, beam.polar_vector, beam.kahn),
        panel,
        beam,
        real_space_m: nanobragg_real_space(&cell, [10.0, 20.0, 30.0]),
        rotation: [4e-4, -3e-4, 2e-4],
        domains: MosaicDomains::isotropic(0.05, 4, 7, false),
        shape,
        n_cells: [10.0, 10.0, 10.0],
        oversample: 2,
        scale: 1.0,
        background: 0.0,
    }
}

/// 11×11 shoeboxes around the two brightest spots of the image (found at one channel and F = 100).
fn shoeboxes(model: &SpotModel) -> Vec<Region> {
    let mono = SpotModel {
        beam: beam(1),
        domains: MosaicDomains::single(),
        oversample: 1,
        ..model.clone()
    };
    let full = Region::full(&mono.panel);
    let mut image = vec![0.0; full.len()];
    render(&mono, &ConstantF(100.0), &full, &mut image).unwrap();
    let mut order: Vec<usize> = (0..image.len()).collect();
    order.sort_by(|a, b| image[*b].total_cmp(&image[*a]));
    let mut centres: Vec<(usize, usize)> = Vec::new();
    for i in order {
        let (s, f) = (i / 256, i % 256);
        let far = |c: &(usize, usize)| s.abs_diff(c.0) > 11 || f.abs_diff(c.1) > 11;
        if (5..251).contains(&s) && (5..251).contains(&f) && centres.iter().all(far) {
            centres.push((s, f));
        }
        if centres.len() == 2 {
            break;
        }
    }
    centres
        .iter()
        .map(|&(s, f)| Region { slow0: s - 5, fast0: f - 5, n_slow: 11, n_fast: 11 })
        .collect()
}

fn fsq_rows(n_boxes: usize, n_ch: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[n_boxes, n_ch]), |i| 9000.0 + 800.0 * i[0] as f64 + 15.0 * i[1] as f64)
}

fn vector(v: &[f64]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
}

fn tilts(m: &SpotModel) -> ArrayD<f64> {
    let spread = 0.05f64.to_radians();
    let flat = m.domains.draws.iter().flat_map(|d| d.map(|x| x * spread)).collect();
    ArrayD::from_shape_vec(IxDyn(&[m.domains.len(), 3]), flat).unwrap()
}

fn spot_inputs(m: &SpotModel, fsq: ArrayD<f64>) -> Vec<ArrayD<f64>> {
    vec![
        fsq,
        vector(&[1.3]),
        vector(&m.rotation),
        vector(&m.n_cells),
        tilts(m),
    ]
}

fn values(inputs: &[ArrayD<f64>]) -> Vec<Value> {
    inputs.iter().map(|a| Value::Real(a.clone())).collect()
}

#[test]
fn forward_equals_the_kernel() {
    let m = template(Shape::Gauss, 100);
    let regions = shoeboxes(&m);
    let op = BraggSpotOp::new(m.clone(), regions.clone(), MosaicInput::Tilts).unwrap();
    let fsq = fsq_rows(2, 100);
    let v = values(&spot_inputs(&m, fsq.clone()));
    let Value::Real(ours) = op.forward(&v.iter().collect::<Vec<_>>()).unwrap() else {
        panic!("real output expected")
    };
    let direct_model = SpotModel {
        scale: 1.3,
        domains: MosaicDomains::from_tilts(
            tilts(&m).as_slice().unwrap().chunks(3).map(|c| [c[0], c[1], c[2]]).collect(),
        ),
        ..m.clone()
    };
    let offsets = op.pixel_offsets().to_vec();
    assert_eq!(offsets, vec![0, 121, 242]);
    let mut peak: f64 = 0.0;
    for (i, r) in regions.iter().enumerate() {
        let mut direct = vec![0.0; r.len()];
        let row = &fsq.as_slice().unwrap()[i * 100..(i + 1) * 100];
        render(&direct_model, &ChannelFsq(row), r, &mut direct).unwrap();
        assert_eq!(&ours.as_slice().unwrap()[offsets[i]..offsets[i + 1]], &direct[..]);
        peak = peak.max(direct.iter().copied().fold(0.0, f64::max));
    }
    println!("brightest pixel {peak:.3e} photons");
    assert!(peak > 1e-3, "the shoeboxes hold a spot: {peak}");
}

/// Gradients in fsq, scale, θ, N and the tilts; 8 channels keep the 2·29 forward calls cheap.
fn check_shape(shape: Shape, mosaic: MosaicInput) {
    let m = template(shape, 8);
    let regions = shoeboxes(&m);
    let op: Arc<dyn FusedOp> = Arc::new(BraggSpotOp::new(m.clone(), regions, mosaic).unwrap());
    let mut inputs = spot_inputs(&m, fsq_rows(2, 8));
    let mut steps = vec![1.0, 1e-4, 1e-7, 1e-4, 1e-7];
    if mosaic == MosaicInput::Spread {
        inputs[4] = vector(&[0.05f64.to_radians(), 0.07f64.to_radians(), 0.03f64.to_radians()]);
        steps[4] = 1e-8;
    }
    let loss = move |tape: &mut Tape, ids: &[NodeId]| op_loss(tape, &op, ids);
    // fsq and scale enter linearly (exact); θ, N, tilts with O(h²) truncation far below 1e-6.
    check_fd(&loss, &inputs, &steps, 1e-6, &format!("bragg_spot {shape:?} {mosaic:?}"));
}

#[test]
fn gauss_gradients_through_the_tape() {
    check_shape(Shape::Gauss, MosaicInput::Tilts);
    check_shape(Shape::Gauss, MosaicInput::Spread);
}

#[test]
fn square_gradients_through_the_tape() {
    check_shape(Shape::Square, MosaicInput::Tilts);
}

#[test]
fn round_gradients_through_the_tape() {
    check_shape(Shape::Round, MosaicInput::Tilts);
}
