//! The bragg spot, response-matrix and plane-background nodes on an oracle-like geometry (MOSFLM
//! detector, 60 mm, 0.1 mm pixels, 256², oversample 2, as oracle case gauss_oversample) with the
//! 1BRF cell (tests/fixtures/pdb) and a polychromatic spectrum around the Fe edge: forward equals
//! the physics call, gradients through the tape against central differences, the response path
//! agrees with the full kernel, and one chain from an edge shift to a Poisson likelihood.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops_support;

use ndarray::{ArrayD, IxDyn};
use ops_support::{check_fd, eval, fixture, op_loss, tape_gradient};
use spread::ops::{
    BraggSpotOp, MosaicInput, PlaneBackgroundOp, ResponseOp, ShiftedCurveOp, StructureFactorOp,
    StructureFactorOutput,
};
use spread::physics::atoms;
use spread::physics::background::BackgroundPlane;
use spread::physics::beam::{Beam, spectrum_channels};
use spread::physics::crystal::{UnitCell, nanobragg_real_space};
use spread::physics::form_factor::FormFactors;
use spread::physics::geometry::detector::{MosflmDetector, Panel};
use spread::physics::lattice::Shape;
use spread::physics::mosaic::MosaicDomains;
use spread::physics::polarization::Polarization;
use spread::physics::scattering_tables::henke::HenkeTable;
use spread::physics::scattering_tables::sherrell;
use spread::physics::scattering_tables::wk1995::GaussianSet;
use spread::physics::spot::{ChannelFsq, ConstantF, Region, SpotModel, render};
use spread::physics::structure_factor::StructureFactorModel;
use spread::tape::{FusedOp, NodeId, Tape, Value};
use std::sync::Arc;

/// `n` channels of 1 eV centred on 7120 eV with a Gaussian SASE-like envelope (sd 20 eV).
fn beam(n: usize) -> Beam {
    let energy: Vec<f64> = (0..n).map(|i| 7120.0 + i as f64 - (n / 2) as f64).collect();
    let wavelengths: Vec<f64> = energy.iter().map(|e| 12398.4198 / e).collect();
    let weights: Vec<f64> = energy
        .iter()
        .map(|e| (-((e - 7120.0) / 20.0).powi(2) / 2.0).exp())
        .collect();
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
        .map(|&(s, f)| Region {
            slow0: s - 5,
            fast0: f - 5,
            n_slow: 11,
            n_fast: 11,
        })
        .collect()
}

fn fsq_rows(n_boxes: usize, n_ch: usize) -> ArrayD<f64> {
    ArrayD::from_shape_fn(IxDyn(&[n_boxes, n_ch]), |i| {
        9000.0 + 800.0 * i[0] as f64 + 15.0 * i[1] as f64
    })
}

fn vector(v: &[f64]) -> ArrayD<f64> {
    ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap()
}

fn tilts(m: &SpotModel) -> ArrayD<f64> {
    let spread = 0.05f64.to_radians();
    let flat = m
        .domains
        .draws
        .iter()
        .flat_map(|d| d.map(|x| x * spread))
        .collect();
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
            tilts(&m)
                .as_slice()
                .unwrap()
                .chunks(3)
                .map(|c| [c[0], c[1], c[2]])
                .collect(),
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
        assert_eq!(
            &ours.as_slice().unwrap()[offsets[i]..offsets[i + 1]],
            &direct[..]
        );
        peak = peak.max(direct.iter().copied().fold(0.0, f64::max));
    }
    println!("brightest pixel {peak:.3e} photons");
    assert!(peak > 1e-3, "the shoeboxes hold a spot: {peak}");
}

/// Gradients in fsq, scale, θ, N and the tilts; 8 channels keep the 2·29 forward calls cheap.
fn check_shape(shape: Shape, mosaic: MosaicInput, spread: &ArrayD<f64>) {
    let m = template(shape, 8);
    let regions = shoeboxes(&m);
    let op: Arc<dyn FusedOp> = Arc::new(BraggSpotOp::new(m.clone(), regions, mosaic).unwrap());
    let mut inputs = spot_inputs(&m, fsq_rows(2, 8));
    let mut steps = vec![1.0, 1e-4, 1e-7, 1e-4, 1e-7];
    if mosaic == MosaicInput::Spread {
        inputs[4] = spread.clone();
        steps[4] = 1e-8;
    }
    let loss = move |tape: &mut Tape, ids: &[NodeId]| op_loss(tape, &op, ids);
    // fsq and scale enter linearly (exact); θ, N, tilts with O(h²) truncation far below 1e-6.
    let what = match mosaic {
        MosaicInput::Spread => format!("bragg_spot {shape:?} spread of shape {:?}", spread.shape()),
        _ => format!("bragg_spot {shape:?} {mosaic:?}"),
    };
    check_fd(&loss, &inputs, &steps, 1e-6, &what);
}

#[test]
fn gauss_gradients_through_the_tape() {
    let per_axis = vector(&[0.05, 0.07, 0.03].map(f64::to_radians));
    let isotropic = ArrayD::from_elem(IxDyn(&[]), 0.05f64.to_radians());
    check_shape(Shape::Gauss, MosaicInput::Tilts, &per_axis);
    check_shape(Shape::Gauss, MosaicInput::Spread, &per_axis);
    check_shape(Shape::Gauss, MosaicInput::Spread, &isotropic);
}

#[test]
fn square_gradients_through_the_tape() {
    check_shape(Shape::Square, MosaicInput::Tilts, &vector(&[0.0]));
}

#[test]
fn round_gradients_through_the_tape() {
    check_shape(Shape::Round, MosaicInput::Tilts, &vector(&[0.0]));
}

#[test]
fn plane_background_node() {
    let m = template(Shape::Gauss, 8);
    let regions = shoeboxes(&m);
    let op = PlaneBackgroundOp::new(regions.clone()).unwrap();
    let coeffs =
        ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![3.0, 0.2, -0.1, 5.0, -0.3, 0.25]).unwrap();
    let Value::Real(ours) = op.forward(&[&Value::Real(coeffs.clone())]).unwrap() else {
        panic!("real output expected")
    };
    for (i, r) in regions.iter().enumerate() {
        let c = &coeffs.as_slice().unwrap()[3 * i..3 * i + 3];
        let mut direct = vec![0.0; r.len()];
        BackgroundPlane {
            offset: c[0],
            slope_fast: c[1],
            slope_slow: c[2],
        }
        .add_to(r, &mut direct);
        assert_eq!(
            &ours.as_slice().unwrap()[121 * i..121 * (i + 1)],
            &direct[..]
        );
    }
    let op: Arc<dyn FusedOp> = Arc::new(op);
    let loss = move |tape: &mut Tape, ids: &[NodeId]| op_loss(tape, &op, ids);
    // Linear: central differences exact up to rounding.
    check_fd(&loss, &[coeffs], &[1e-3], 1e-8, "plane_background");
}

/// The Miller index nearest the scattering vector at a shoebox centre (channel 7120 eV).
fn hkl_at(m: &SpotModel, r: &Region) -> [i32; 3] {
    let p = m.panel.subpixel_position(r.slow0 + 5, r.fast0 + 5, 0, 0, 1);
    let len = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
    let wavelength_m = 12398.4198 / 7120.0 * 1e-10;
    let s: Vec<f64> = (0..3)
        .map(|i| (p[i] / len - m.beam.incident[i]) / wavelength_m)
        .collect();
    m.real_space_m
        .map(|a| (a[0] * s[0] + a[1] * s[1] + a[2] * s[2]).round() as i32)
}

/// The chain a fit records for one image: edge shift → shifted ox curve → f', f'' → |F|² of the two
/// shoeboxes' reflections → bragg (full kernel or response matrix) + plane → Poisson log-likelihood.
struct Chain {
    curve: Arc<dyn FusedOp>,
    sf: Arc<dyn FusedOp>,
    spot: Arc<dyn FusedOp>,
    plane: Arc<dyn FusedOp>,
    counts: ArrayD<f64>,
}

impl Chain {
    fn new(response: bool) -> Self {
        let m = SpotModel {
            scale: 1.0,
            ..template(Shape::Gauss, 100)
        };
        let regions = shoeboxes(&m);
        let energy: Vec<f64> = m
            .beam
            .channels
            .iter()
            .map(|c| 12398.4198e-10 / c.wavelength_m)
            .collect();
        let path = fixture("tables/Fe_ox_red_7000_7300.csv")
            .display()
            .to_string();
        let columns =
            sherrell::parse_columns(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
        let ox = sherrell::curve(&path, &columns, ["energy_eV", "ox_fp", "ox_fdp"]).unwrap();
        let crystal = atoms::read(&fixture("pdb/Fe_1brf_snip_reduced.pdb")).unwrap();
        let hkl: Vec<[i32; 3]> = regions.iter().map(|r| hkl_at(&m, r)).collect();
        let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
        let model = StructureFactorModel::new(&crystal, &hkl, &wk, &["Fe"]).unwrap();
        let fixed = model
            .fixed_part(&energy, |el, e| HenkeTable::embedded(el)?.at_ev(e))
            .unwrap();
        let sf = StructureFactorOp::new(
            Arc::new(model),
            Arc::new(fixed),
            StructureFactorOutput::Intensity,
        );
        let spot: Arc<dyn FusedOp> = if response {
            Arc::new(ResponseOp::new(&m, &regions).unwrap())
        } else {
            Arc::new(BraggSpotOp::new(m.clone(), regions.clone(), MosaicInput::Fixed).unwrap())
        };
        let counts = ArrayD::from_shape_fn(IxDyn(&[242]), |i| ((i[0] * 7) % 13) as f64 + 2.0);
        Self {
            curve: Arc::new(ShiftedCurveOp::new(ox, energy)),
            sf: Arc::new(sf),
            spot,
            plane: Arc::new(PlaneBackgroundOp::new(regions).unwrap()),
            counts,
        }
    }

    /// Leaves: shift (eV), scale, plane coefficients (2, 3); the full kernel's θ and N are constants.
    fn loss(&self, tape: &mut Tape, ids: &[NodeId], response: bool) -> NodeId {
        let curves = tape.fused(self.curve.clone(), &ids[..1]).unwrap();
        let fp = tape.gather(curves, 0, &[0]).unwrap();
        let fdp = tape.gather(curves, 0, &[1]).unwrap();
        let fsq = tape.fused(self.sf.clone(), &[fp, fdp]).unwrap();
        let bragg = if response {
            tape.fused(self.spot.clone(), &[fsq, ids[1]]).unwrap()
        } else {
            let m = template(Shape::Gauss, 1);
            let rot = tape.constant_real(vector(&m.rotation));
            let n = tape.constant_real(vector(&m.n_cells));
            tape.fused(self.spot.clone(), &[fsq, ids[1], rot, n])
                .unwrap()
        };
        let plane = tape.fused(self.plane.clone(), &ids[2..3]).unwrap();
        let mu = tape.add(bragg, plane).unwrap();
        let log_mu = tape.log(mu).unwrap();
        let y = tape.constant_real(self.counts.clone());
        let y_log_mu = tape.mul(y, log_mu).unwrap();
        let terms = tape.sub(y_log_mu, mu).unwrap();
        tape.sum(terms).unwrap()
    }
}

fn chain_inputs() -> Vec<ArrayD<f64>> {
    vec![
        ArrayD::from_elem(IxDyn(&[]), 1.37),
        vector(&[2e-4]),
        ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![3.0, 0.02, -0.01, 5.0, -0.03, 0.025]).unwrap(),
    ]
}

#[test]
fn chain_from_edge_shift_to_poisson_likelihood() {
    for response in [false, true] {
        let chain = Chain::new(response);
        let loss = |tape: &mut Tape, ids: &[NodeId]| chain.loss(tape, ids, response);
        // Each forward is smooth in every leaf (the shifted curve is linear between table nodes,
        // 1 eV apart, and 1.37 ± 1e-5 eV crosses none); O(h²) truncation; 1e-6.
        let what = if response {
            "chain via response"
        } else {
            "chain via kernel"
        };
        check_fd(&loss, &chain_inputs(), &[1e-5, 1e-9, 1e-4], 1e-6, what);
    }
}

/// With fixed geometry the response matrix reproduces the full kernel: values to rounding, and
/// every gradient of the chain's likelihood.
#[test]
fn response_path_agrees_with_the_kernel() {
    let (kernel, response) = (Chain::new(false), Chain::new(true));
    let inputs = chain_inputs();
    let l_kernel = eval(
        &|t: &mut Tape, ids: &[NodeId]| kernel.loss(t, ids, false),
        &inputs,
    );
    let l_response = eval(
        &|t: &mut Tape, ids: &[NodeId]| response.loss(t, ids, true),
        &inputs,
    );
    assert!(
        (l_kernel - l_response).abs() <= 1e-12 * l_kernel.abs(),
        "{l_kernel} vs {l_response}"
    );
    let g_kernel = tape_gradient(
        &|t: &mut Tape, ids: &[NodeId]| kernel.loss(t, ids, false),
        &inputs,
    );
    let g_response = tape_gradient(
        &|t: &mut Tape, ids: &[NodeId]| response.loss(t, ids, true),
        &inputs,
    );
    for (k, (a, b)) in g_kernel.iter().zip(&g_response).enumerate() {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-10 * x.abs().max(1e-6),
                "input {k}: kernel {x} vs response {y}"
            );
        }
    }
    // Raw pixels of the two nodes agree to rounding as well.
    let fsq = fsq_rows(2, 100);
    let m = SpotModel {
        scale: 1.0,
        ..template(Shape::Gauss, 100)
    };
    let regions = shoeboxes(&m);
    let full = BraggSpotOp::new(m.clone(), regions.clone(), MosaicInput::Fixed).unwrap();
    let fast = ResponseOp::new(&m, &regions).unwrap();
    let scale = vector(&[1.3]);
    let v = values(&[fsq, scale, vector(&m.rotation), vector(&m.n_cells)]);
    let refs: Vec<&Value> = v.iter().collect();
    let (Value::Real(a), Value::Real(b)) = (
        full.forward(&refs).unwrap(),
        fast.forward(&refs[..2]).unwrap(),
    ) else {
        panic!("real outputs expected")
    };
    let peak = a.iter().copied().fold(0.0, f64::max);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-12 * peak, "kernel {x} vs response {y}");
    }
}

/// The batch node's values and gradients are bit-identical on 1 and 2 threads.
#[test]
fn batch_is_independent_of_the_thread_count() {
    let m = template(Shape::Gauss, 8);
    let regions = shoeboxes(&m);
    let op: Arc<dyn FusedOp> =
        Arc::new(BraggSpotOp::new(m.clone(), regions, MosaicInput::Tilts).unwrap());
    let inputs = spot_inputs(&m, fsq_rows(2, 8));
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let loss = |tape: &mut Tape, ids: &[NodeId]| op_loss(tape, &op, ids);
            (eval(&loss, &inputs), tape_gradient(&loss, &inputs))
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn bad_inputs_are_errors_naming_the_input() {
    let m = template(Shape::Gauss, 8);
    let regions = shoeboxes(&m);
    let op = BraggSpotOp::new(m.clone(), regions.clone(), MosaicInput::Tilts).unwrap();
    let mut v = values(&spot_inputs(&m, fsq_rows(1, 8)));
    let err = op.forward(&v.iter().collect::<Vec<_>>()).unwrap_err();
    assert!(
        err.contains("input 0 (fsq)") && err.contains("16 values"),
        "{err}"
    );
    v[0] = Value::Real(fsq_rows(2, 8));
    v[4] = Value::Real(ArrayD::zeros(IxDyn(&[4, 2])));
    let err = op.forward(&v.iter().collect::<Vec<_>>()).unwrap_err();
    assert!(err.contains("input 4 (tilts)"), "{err}");
    let err = op
        .forward(&v.iter().take(4).collect::<Vec<_>>())
        .unwrap_err();
    assert!(err.contains("expected 5 inputs"), "{err}");
    let off = Region {
        slow0: 250,
        fast0: 0,
        n_slow: 11,
        n_fast: 11,
    };
    assert!(BraggSpotOp::new(m.clone(), vec![off], MosaicInput::Fixed).is_err());
    assert!(ResponseOp::new(&m, &[off]).is_err());
    assert!(PlaneBackgroundOp::new(vec![]).is_err());
    let response = ResponseOp::new(&m, &regions).unwrap();
    let err = response.forward(&[&v[0], &v[2]]).unwrap_err();
    assert!(err.contains("input 1 (scale)"), "{err}");
}
