//! Shared by tests/ops_*.rs: a scalar loss through the tape and a central finite-difference check
//! of the tape's gradient of it, and the fixture paths.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ndarray::{ArrayD, IxDyn};
use spread::tape::{FusedOp, NodeId, Tape, Value};
use std::sync::Arc;

pub fn fixture(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

/// Deterministic, sign-changing loss weights, so the seed gradient is not all ones.
pub fn weights(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 1.0 + 0.6 * (0.37 * i as f64).sin())
        .collect()
}

/// Records `op` on `inputs` (all leaves) and L = Σ w·out (complex: Σ w·Re − 0.7 Σ w·Im) after it.
pub fn op_loss(tape: &mut Tape, op: &Arc<dyn FusedOp>, ids: &[NodeId]) -> NodeId {
    let out = tape.fused(op.clone(), ids).unwrap();
    weighted_sum(tape, out)
}

/// L = Σ w·x for a real node, or Σ w·Re x − 0.7 Σ w·Im x for a complex one.
pub fn weighted_sum(tape: &mut Tape, out: NodeId) -> NodeId {
    let shape = tape.value(out).shape().to_vec();
    let n = shape.iter().product();
    let w = tape.constant_real(ArrayD::from_shape_vec(IxDyn(&shape), weights(n)).unwrap());
    let real = match tape.value(out) {
        Value::Real(_) => out,
        Value::Complex(_) => {
            let re = tape.re(out).unwrap();
            let im = tape.im(out).unwrap();
            let im = tape.scale(im, -0.7).unwrap();
            tape.add(re, im).unwrap()
        }
    };
    let prod = tape.mul(real, w).unwrap();
    tape.sum(prod).unwrap()
}

/// Any tape builder from leaf ids to a scalar loss.
pub type Loss<'a> = dyn Fn(&mut Tape, &[NodeId]) -> NodeId + 'a;

pub fn eval(loss: &Loss, inputs: &[ArrayD<f64>]) -> f64 {
    let mut tape = Tape::new();
    let ids: Vec<NodeId> = inputs.iter().map(|a| tape.leaf_real(a.clone())).collect();
    let l = loss(&mut tape, &ids);
    tape.scalar_value(l).unwrap()
}

/// The tape gradient of every input.
pub fn tape_gradient(loss: &Loss, inputs: &[ArrayD<f64>]) -> Vec<ArrayD<f64>> {
    let mut tape = Tape::new();
    let ids: Vec<NodeId> = inputs.iter().map(|a| tape.leaf_real(a.clone())).collect();
    let l = loss(&mut tape, &ids);
    tape.backward(l).unwrap();
    ids.iter()
        .map(|&id| {
            tape.grad_real(id)
                .unwrap()
                .as_standard_layout()
                .into_owned()
        })
        .collect()
}

/// Compares the tape gradient of every element of input k with (L(x+h_k) − L(x−h_k)) / 2h_k:
/// |tape − fd| ≤ rtol·|fd| + atol_k with atol_k = rtol·max_i |fd_i| over that input (a floor for
/// elements whose gradient is small against the input's largest). Returns the worst relative error.
pub fn check_fd(loss: &Loss, inputs: &[ArrayD<f64>], steps: &[f64], rtol: f64, what: &str) -> f64 {
    let analytic = tape_gradient(loss, inputs);
    let mut worst: f64 = 0.0;
    for (k, input) in inputs.iter().enumerate() {
        let fd: Vec<f64> = (0..input.len())
            .map(|i| {
                let (mut plus, mut minus) = (inputs.to_vec(), inputs.to_vec());
                plus[k].as_slice_mut().unwrap()[i] += steps[k];
                minus[k].as_slice_mut().unwrap()[i] -= steps[k];
                (eval(loss, &plus) - eval(loss, &minus)) / (2.0 * steps[k])
            })
            .collect();
        let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}: input {k} has an all-zero gradient");
        for (i, (a, f)) in analytic[k].iter().zip(&fd).enumerate() {
            let err = (a - f).abs();
            worst = worst.max(err / (f.abs() + scale * 1e-3));
            assert!(
                err <= rtol * f.abs() + rtol * scale,
                "{what}: input {k} element {i}: tape {a:.12e} vs finite difference {f:.12e}"
            );
        }
    }
    println!("{what}: worst |tape - fd| / (|fd| + 1e-3 max|fd|) = {worst:.2e}");
    worst
}
