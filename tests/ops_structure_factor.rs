//! The structure-factor node on 1BRF (tests/fixtures/pdb, see tests/fixtures/SOURCES.md): its
//! forward equals the direct physics call bit for bit, its occupancy input against rebuilding the
//! model from an edited crystal, and its gradients through the tape against central differences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ops_support;

use ndarray::{Array2, ArrayD, IxDyn};
use ops_support::{check_fd, fixture, op_loss};
use spread::ops::{StructureFactorOp, StructureFactorOutput};
use spread::physics::atoms::{self, Crystal};
use spread::physics::form_factor::FormFactors;
use spread::physics::scattering_tables::henke::HenkeTable;
use spread::physics::scattering_tables::wk1995::GaussianSet;
use spread::physics::structure_factor::{FixedPart, StructureFactorModel, structure_factors};
use spread::tape::{FusedOp, NodeId, Tape, Value};
use std::sync::Arc;

const ENERGIES: [f64; 5] = [7116.0, 7118.0, 7120.0, 7122.0, 7124.0];

fn rubredoxin() -> Crystal {
    atoms::read(&fixture("pdb/Fe_1brf_snip_reduced.pdb")).unwrap()
}

fn model_of(
    crystal: &Crystal,
    hkl: &[[i32; 3]],
    metals: &[&str],
) -> (Arc<StructureFactorModel>, Arc<FixedPart>) {
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    let model = StructureFactorModel::new(crystal, hkl, &wk, metals).unwrap();
    let fixed = model
        .fixed_part(&ENERGIES, |el, e| HenkeTable::embedded(el)?.at_ev(e))
        .unwrap();
    (Arc::new(model), Arc::new(fixed))
}

/// Sherrell-like Fe values around the edge, per channel.
fn fp_fdp() -> (Array2<f64>, Array2<f64>) {
    let fp = Array2::from_shape_fn((1, 5), |(_, e)| -6.0 - 0.8 * (e as f64 - 2.0).powi(2) / 4.0);
    let fdp = Array2::from_shape_fn((1, 5), |(_, e)| 0.6 + 0.8 * e as f64);
    (fp, fdp)
}

fn hkl_list() -> Vec<[i32; 3]> {
    let c = rubredoxin();
    spread::physics::miller::unique_to_d_min(&c.cell, &c.space_group, 4.0)
}

#[test]
fn forward_equals_the_physics_call() {
    let crystal = rubredoxin();
    let hkl = hkl_list();
    assert!(hkl.len() > 100, "{} reflections", hkl.len());
    let (model, fixed) = model_of(&crystal, &hkl, &["Fe"]);
    let (fp, fdp) = fp_fdp();
    let direct = structure_factors(&model, &fixed, fp.view(), fdp.view()).unwrap();
    let inputs = [Value::Real(fp.into_dyn()), Value::Real(fdp.into_dyn())];
    let refs: Vec<&Value> = inputs.iter().collect();
    let complex =
        StructureFactorOp::new(model.clone(), fixed.clone(), StructureFactorOutput::Complex);
    assert_eq!(
        complex.forward(&refs).unwrap(),
        Value::Complex(direct.clone().into_dyn())
    );
    let intensity = StructureFactorOp::new(model, fixed, StructureFactorOutput::Intensity);
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    let built = StructureFactorOp::from_crystal(
        &crystal,
        &hkl,
        &ENERGIES,
        &wk,
        &["Fe"],
        StructureFactorOutput::Intensity,
    )
    .unwrap();
    assert_eq!(
        built.forward(&refs).unwrap(),
        intensity.forward(&refs).unwrap()
    );
    assert_eq!(
        intensity.forward(&refs).unwrap(),
        Value::Real(direct.mapv(|f| f.norm_sqr()).into_dyn())
    );
}

/// q scales the Fe atom's occupancy: F(q) equals F of the crystal whose Fe occupancy is q times
/// the file's, computed from scratch (and q = 0 equals the crystal without Fe).
#[test]
fn occupancy_matches_an_edited_crystal() {
    let crystal = rubredoxin();
    let hkl = hkl_list();
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    let (model, fixed) = model_of(&crystal, &hkl, &["Fe"]);
    let op = StructureFactorOp::new(model, fixed, StructureFactorOutput::Complex)
        .with_occupancy(&crystal, &wk)
        .unwrap();
    let (fp, fdp) = fp_fdp();
    for q in [0.0, 0.37, 1.0] {
        let mut edited = crystal.clone();
        let fe = edited
            .atoms
            .iter()
            .position(|a| a.element.eq_ignore_ascii_case("Fe"))
            .unwrap();
        edited.atoms[fe].occupancy *= q;
        let (m2, f2) = model_of(&edited, &hkl, &["Fe"]);
        let expected = structure_factors(&m2, &f2, fp.view(), fdp.view()).unwrap();
        let inputs = [
            Value::Real(fp.clone().into_dyn()),
            Value::Real(fdp.clone().into_dyn()),
            Value::Real(ArrayD::from_elem(IxDyn(&[1]), q)),
        ];
        let Value::Complex(ours) = op.forward(&inputs.iter().collect::<Vec<_>>()).unwrap() else {
            panic!("complex output expected");
        };
        let worst = ours
            .iter()
            .zip(expected.iter())
            .map(|(a, b)| (a - b).norm() / b.norm().max(1.0))
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-12,
            "q = {q}: worst relative difference {worst:.2e}"
        );
    }
}

fn check_op(op: StructureFactorOp, with_q: bool, what: &str) {
    let op: Arc<dyn FusedOp> = Arc::new(op);
    let loss = move |tape: &mut Tape, ids: &[NodeId]| op_loss(tape, &op, ids);
    let (fp, fdp) = fp_fdp();
    let mut inputs = vec![fp.into_dyn(), fdp.into_dyn()];
    let mut steps = vec![1e-4, 1e-4];
    if with_q {
        inputs.push(ArrayD::from_elem(IxDyn(&[1]), 0.8));
        steps.push(1e-5);
    }
    // With the other inputs fixed, L is at most quadratic in each of f', f'', q, so central
    // differences are exact up to the rounding of L (~1e-16 |L| / h); 1e-6 relative.
    check_fd(&loss, &inputs, &steps, 1e-6, what);
}

#[test]
fn gradients_through_the_tape_match_central_differences() {
    let crystal = rubredoxin();
    let hkl = hkl_list();
    let wk = FormFactors::embedded(GaussianSet::Wk1995).unwrap();
    let (model, fixed) = model_of(&crystal, &hkl, &["Fe"]);
    let new = |out| StructureFactorOp::new(model.clone(), fixed.clone(), out);
    check_op(new(StructureFactorOutput::Complex), false, "F");
    check_op(new(StructureFactorOutput::Intensity), false, "|F|^2");
    let with_q = new(StructureFactorOutput::Intensity)
        .with_occupancy(&crystal, &wk)
        .unwrap();
    check_op(with_q, true, "|F|^2 with occupancy");
    let (one, one_fixed) = model_of(&crystal, &[[3, 5, 7]], &["Fe"]);
    let single = StructureFactorOp::new(one, one_fixed, StructureFactorOutput::Complex);
    let single = single.squeezed().unwrap();
    check_op(single, false, "F of one hkl, squeezed to (channel)");
    let with_q = new(StructureFactorOutput::Complex)
        .with_occupancy(&crystal, &wk)
        .unwrap();
    check_op(with_q, true, "F with occupancy");
}

#[test]
fn bad_inputs_are_errors_naming_the_input() {
    let crystal = rubredoxin();
    let (model, fixed) = model_of(&crystal, &[[1, 2, 3], [2, 0, 1]], &["Fe"]);
    let op = StructureFactorOp::new(
        model.clone(),
        fixed.clone(),
        StructureFactorOutput::Intensity,
    );
    let wrong = Value::Real(ArrayD::zeros(IxDyn(&[2, 5])));
    let right = Value::Real(ArrayD::zeros(IxDyn(&[1, 5])));
    let e = op.forward(&[&right, &wrong]).unwrap_err();
    assert!(e.contains("input 1 (fdp)") && e.contains("[1, 5]"), "{e}");
    let e = op.forward(&[&right]).unwrap_err();
    assert!(e.contains("missing input 1"), "{e}");
    assert!(
        StructureFactorOp::new(model, fixed, StructureFactorOutput::Complex)
            .squeezed()
            .is_err()
    );
}

/// The node keeps F of its last |F|² forward for the VJP; two tapes sharing the node with
/// different inputs must still get their own gradients.
#[test]
fn shared_node_gives_each_tape_its_own_gradient() {
    let crystal = rubredoxin();
    let (model, fixed) = model_of(&crystal, &hkl_list(), &["Fe"]);
    let op: Arc<dyn FusedOp> = Arc::new(StructureFactorOp::new(
        model,
        fixed,
        StructureFactorOutput::Intensity,
    ));
    let (fp, fdp) = fp_fdp();
    let record = |shift: f64| {
        let mut tape = Tape::new();
        let a = tape.leaf_real((&fp + shift).into_dyn());
        let b = tape.leaf_real(fdp.clone().into_dyn());
        let l = op_loss(&mut tape, &op, &[a, b]);
        (tape, a, l)
    };
    let (mut first, a1, l1) = record(0.0);
    let (_second, _, _) = record(1.5);
    first.backward(l1).unwrap();
    let interleaved = first.grad_real(a1).unwrap();
    let (mut fresh, a, l) = record(0.0);
    fresh.backward(l).unwrap();
    assert_eq!(interleaved, fresh.grad_real(a).unwrap());
    let (mut other, a2, l2) = record(1.5);
    other.backward(l2).unwrap();
    assert_ne!(interleaved, other.grad_real(a2).unwrap());
}
