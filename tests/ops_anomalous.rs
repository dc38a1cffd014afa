//! The f'/f'' nodes (Kramers-Kronig, sigmoid edge, shifted reference, smoothness restraint, state
//! mixture and marginal) on the rubredoxin ox/red curves and the Sasaki Fe table
//! (tests/fixtures/tables, see tests/fixtures/SOURCES.md): forward equals the physics call, and
//! gradients through the tape against central differences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops_support;

use ndarray::{ArrayD, IxDyn};
use ops_support::{check_fd, fixture, op_loss};
use spread::ops::anomalous::reference_curve;
use spread::ops::{
    KramersKronigOp, MixtureOp, ShiftedCurveOp, SigmoidEdgeOp, SmoothnessOp, StateMarginalOp,
};
use spread::physics::anomalous::{
    Curves, SigmoidEdge, mixture_curves, shifted_reference, smoothness_log_density,
};
use spread::physics::kramers_kronig::KramersKronig;
use spread::physics::scattering_tables::{SpectralTable, sasaki, sherrell};
use spread::tape::{FusedOp, NodeId, Tape, Value};
use std::sync::Arc;

/// 100 channels of 1 eV from 7070 eV, as in the rubredoxin model.
fn channels() -> Vec<f64> {
    (0..100).map(|i| 7070.0 + i as f64).collect()
}

fn rubredoxin_state(state: &str) -> SpectralTable {
    let path = fixture("tables/Fe_ox_red_7000_7300.csv")
        .display()
        .to_string();
    let columns = sherrell::parse_columns(&path, &std::fs::read_to_string(&path).unwrap()).unwrap();
    let names = [
        "energy_eV",
        &format!("{state}_fp") as &str,
        &format!("{state}_fdp") as &str,
    ];
    sherrell::curve(&path, &columns, names).unwrap()
}

fn curves_at(table: &SpectralTable, energy: &[f64]) -> Curves {
    shifted_reference(table, energy, 0.0).unwrap()
}

fn forward(op: &dyn FusedOp, inputs: &[ArrayD<f64>]) -> ArrayD<f64> {
    let values: Vec<Value> = inputs.iter().map(|a| Value::Real(a.clone())).collect();
    match op.forward(&values.iter().collect::<Vec<_>>()).unwrap() {
        Value::Real(a) => a,
        Value::Complex(_) => panic!("real output expected"),
    }
}

fn fd(op: Arc<dyn FusedOp>, inputs: &[ArrayD<f64>], steps: &[f64], rtol: f64, what: &str) {
    let loss = move |tape: &mut Tape, ids: &[NodeId]| op_loss(tape, &op, ids);
    check_fd(&loss, inputs, steps, rtol, what);
}

fn scalar(v: f64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[]), v)
}

fn rows(rows: &[&[f64]]) -> ArrayD<f64> {
    let n = rows[0].len();
    let flat = rows.iter().flat_map(|r| r.iter().copied()).collect();
    ArrayD::from_shape_vec(IxDyn(&[rows.len(), n]), flat).unwrap()
}

#[test]
fn kramers_kronig_node() {
    let e = channels();
    let red = curves_at(&rubredoxin_state("red"), &e);
    let ox = curves_at(&rubredoxin_state("ox"), &e);
    let op = KramersKronigOp::new(&e, red.clone()).unwrap();
    let fdp = rows(&[&ox.fdp, &red.fdp]);
    let kk = KramersKronig::on_grid(&e).unwrap();
    let direct = kk.apply_with_reference(&ox.fdp, &red.fp, &red.fdp).unwrap();
    let ours = forward(&op, std::slice::from_ref(&fdp));
    assert_eq!(ours.as_slice().unwrap()[..100], direct[..]);
    // The reference row maps to the reference f' exactly (KK of zero is zero).
    assert_eq!(ours.as_slice().unwrap()[100..], red.fp[..]);
    // Linear in f'': central differences are exact up to rounding.
    fd(Arc::new(op), &[fdp], &[1e-3], 1e-7, "kramers_kronig");
    let henke = KramersKronigOp::with_henke(&e, "Fe").unwrap();
    assert_eq!(henke.n_channels(), 100);
}

#[test]
fn sigmoid_edge_node() {
    let e = channels();
    let red = curves_at(&rubredoxin_state("red"), &e);
    let op = SigmoidEdgeOp::new(&e, red.clone()).unwrap();
    let params = [7120.3, 2.5, 0.5, 3.9];
    let inputs: Vec<ArrayD<f64>> = params.iter().map(|&v| scalar(v)).collect();
    let edge = SigmoidEdge {
        edge_ev: 7120.3,
        width_ev: 2.5,
        fdp_low: 0.5,
        fdp_high: 3.9,
    };
    let direct = edge
        .curves(&KramersKronig::on_grid(&e).unwrap(), &red)
        .unwrap();
    let ours = forward(&op, &inputs);
    assert_eq!(ours, rows(&[&direct.fp, &direct.fdp]));
    // Smooth in all four: O(h²) truncation ~1e-9 relative at these steps; 1e-6.
    fd(
        Arc::new(op),
        &inputs,
        &[1e-4, 1e-5, 1e-4, 1e-4],
        1e-6,
        "sigmoid_edge",
    );
}

#[test]
fn shifted_curve_node() {
    let table = sasaki::read(&fixture("tables/sasaki_K_Fe.dat")).unwrap();
    let e: Vec<f64> = (0..60).map(|i| 7090.0 + i as f64).collect();
    let op = ShiftedCurveOp::new(table.clone(), e.clone());
    let direct = shifted_reference(&table, &e, 1.234).unwrap();
    assert_eq!(
        forward(&op, &[scalar(1.234)]),
        rows(&[&direct.fp, &direct.fdp])
    );
    assert_eq!(
        reference_curve(&table, &e).unwrap(),
        forward(&op, &[scalar(0.0)])
    );
    // Piecewise linear: exact while no channel crosses a table node within ±h (the Sasaki grid
    // is ~0.6 eV here, h = 1e-6 eV).
    fd(
        Arc::new(op),
        &[scalar(1.234)],
        &[1e-6],
        1e-6,
        "shifted_curve",
    );
}

#[test]
fn smoothness_node() {
    let e = channels();
    let ox = curves_at(&rubredoxin_state("ox"), &e);
    let red = curves_at(&rubredoxin_state("red"), &e);
    let op = SmoothnessOp::new(0.3).unwrap();
    let x = rows(&[&ox.fp, &red.fdp]);
    let direct = smoothness_log_density(&ox.fp, 0.3) + smoothness_log_density(&red.fdp, 0.3);
    assert_eq!(forward(&op, std::slice::from_ref(&x)), scalar(direct));
    // Quadratic: central differences exact up to rounding.
    fd(Arc::new(op), &[x], &[1e-3], 1e-6, "smoothness");
    assert!(SmoothnessOp::new(0.0).is_err());
}

#[test]
fn state_mixture_and_marginal_nodes() {
    let e = channels();
    let states = vec![
        curves_at(&rubredoxin_state("ox"), &e),
        curves_at(&rubredoxin_state("red"), &e),
    ];
    let op = MixtureOp::new(states.clone()).unwrap();
    let logits = ArrayD::from_shape_vec(IxDyn(&[2]), vec![0.4, -0.3]).unwrap();
    let direct = mixture_curves(&[0.4, -0.3], &states);
    assert_eq!(
        forward(&op, std::slice::from_ref(&logits)),
        rows(&[&direct.fp, &direct.fdp])
    );
    fd(Arc::new(op), &[logits], &[1e-5], 1e-6, "state_mixture");

    let marginal = StateMarginalOp::new(&[0.3, 0.7]).unwrap();
    let ll = ArrayD::from_shape_vec(IxDyn(&[2]), vec![-1520.25, -1518.5]).unwrap();
    // Closed form: log(0.3 e^a + 0.7 e^b) = b + log(0.7 + 0.3 e^(a-b)).
    let closed = -1518.5 + (0.7 + 0.3 * (-1.75f64).exp()).ln();
    let ours = forward(&marginal, std::slice::from_ref(&ll));
    assert!((ours.iter().sum::<f64>() - closed).abs() < 1e-12);
    let p = marginal.posterior(&[-1520.25, -1518.5]);
    let p_ox = 0.3 * (-1.75f64).exp() / (0.3 * (-1.75f64).exp() + 0.7);
    // Rounding only: the op goes through log prior and a stable softmax, the closed form not.
    assert!((p[0] - p_ox).abs() < 1e-14, "{} vs {p_ox}", p[0]);
    assert!((p[0] + p[1] - 1.0).abs() < 1e-14);
    fd(Arc::new(marginal), &[ll], &[1e-5], 1e-6, "state_marginal");
    assert!(StateMarginalOp::new(&[0.5, 0.6]).is_err());
}

#[test]
fn bad_inputs_are_errors_naming_the_input() {
    let e = channels();
    let red = curves_at(&rubredoxin_state("red"), &e);
    let op = KramersKronigOp::new(&e, red.clone()).unwrap();
    let short = Value::Real(ArrayD::zeros(IxDyn(&[99])));
    let err = op.forward(&[&short]).unwrap_err();
    assert!(err.contains("fdp") && err.contains("[100]"), "{err}");
    let edge = SigmoidEdgeOp::new(&e, red).unwrap();
    let v: Vec<Value> = [7120.0, -1.0, 0.5, 3.9]
        .iter()
        .map(|&x| Value::Real(scalar(x)))
        .collect();
    let err = edge.forward(&v.iter().collect::<Vec<_>>()).unwrap_err();
    assert!(err.contains("width_ev"), "{err}");
    assert!(KramersKronigOp::new(&e[..50], curves_at(&rubredoxin_state("ox"), &e)).is_err());
}
