//! Every tape operator's VJP against central finite differences on random inputs (proptest).
//!
//! Each case builds a scalar loss L = Σ w ⊙ op(inputs) with random constant weights w (for
//! complex outputs L = Σ w1 Re + w2 Im), so the seed gradient is not all ones, then compares
//! the tape gradient of every input element with (L(x+h) - L(x-h)) / 2h, h = 1e-6.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cloned_ref_to_slice_refs
)]

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use spread::tape::{Activation, Binary, FusedOp, NodeId, Tape, TapeError, Unary, Value};
use std::sync::Arc;

type Builder = dyn Fn(&mut Tape, &[NodeId]) -> Result<NodeId, TapeError>;

/// Loss = Σ weights ⊙ out (real) or Σ w Re + w' Im (complex), weights derived from the out size.
fn weighted_loss(tape: &mut Tape, out: NodeId) -> NodeId {
    let shape = tape.value(out).shape().to_vec();
    let n: usize = shape.iter().product();
    let w = ArrayD::from_shape_vec(
        IxDyn(&shape),
        (0..n).map(|i| 0.3 + 0.17 * i as f64).collect(),
    )
    .unwrap();
    let real = match tape.value(out) {
        Value::Real(_) => out,
        Value::Complex(_) => {
            let re = tape.re(out).unwrap();
            let im = tape.im(out).unwrap();
            let im2 = tape.scale(im, -0.7).unwrap();
            tape.add(re, im2).unwrap()
        }
    };
    let wn = tape.constant_real(w);
    let prod = tape.mul(real, wn).unwrap();
    tape.sum(prod).unwrap()
}

fn eval(build: &Builder, inputs: &[ArrayD<f64>]) -> f64 {
    let mut tape = Tape::new();
    let ids: Vec<NodeId> = inputs.iter().map(|a| tape.leaf_real(a.clone())).collect();
    let out = build(&mut tape, &ids).unwrap();
    let loss = weighted_loss(&mut tape, out);
    tape.scalar_value(loss).unwrap()
}

/// Asserts analytic == finite-difference gradient for every element of every input.
fn check(build: &Builder, inputs: &[ArrayD<f64>]) {
    let mut tape = Tape::new();
    let ids: Vec<NodeId> = inputs.iter().map(|a| tape.leaf_real(a.clone())).collect();
    let out = build(&mut tape, &ids).unwrap();
    let loss = weighted_loss(&mut tape, out);
    tape.backward(loss).unwrap();
    let h = 1e-6;
    for (k, input) in inputs.iter().enumerate() {
        let analytic = tape
            .grad_real(ids[k])
            .unwrap()
            .as_standard_layout()
            .into_owned();
        for i in 0..input.len() {
            let mut plus = inputs.to_vec();
            let mut minus = inputs.to_vec();
            plus[k].as_slice_mut().unwrap()[i] += h;
            minus[k].as_slice_mut().unwrap()[i] -= h;
            let fd = (eval(build, &plus) - eval(build, &minus)) / (2.0 * h);
            let a = analytic.as_slice().unwrap()[i];
            let tol = 1e-5 * (1.0 + fd.abs());
            assert!(
                (a - fd).abs() < tol,
                "input {k} element {i}: tape {a} vs finite difference {fd}"
            );
        }
    }
}

fn arr(shape: &[usize], v: &[f64]) -> ArrayD<f64> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), v[..n].to_vec()).unwrap()
}

fn values(lo: f64, hi: f64) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(lo..hi, 24)
}

/// Values away from 0 so |x| and relu are differentiable at every sample.
fn away_from_zero() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(prop_oneof![-2.0..-0.05, 0.05..2.0], 24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn unary_real_line(v in values(-2.0, 2.0)) {
        for op in [Unary::Neg, Unary::Exp, Unary::Sin, Unary::Cos, Unary::Tanh, Unary::Sigmoid,
                   Unary::Softplus, Unary::Square, Unary::Scale(-1.7), Unary::Shift(0.4)] {
            check(&move |t, x| t.unary(op, x[0]), &[arr(&[2, 3], &v)]);
        }
    }

    #[test]
    fn unary_positive(v in values(0.2, 3.0)) {
        for op in [Unary::Log, Unary::Log1p, Unary::Sqrt, Unary::LnGamma, Unary::PowConst(1.7), Unary::PowConst(-0.5)] {
            check(&move |t, x| t.unary(op, x[0]), &[arr(&[6], &v)]);
        }
    }

    #[test]
    fn unary_kinks(v in away_from_zero()) {
        check(&|t, x| t.abs(x[0]), &[arr(&[4], &v)]);
        check(&|t, x| t.relu(x[0]), &[arr(&[4], &v)]);
    }

    #[test]
    fn binary_broadcasting(a in values(-2.0, 2.0), b in values(0.3, 2.0)) {
        let (x, y, row) = (arr(&[2, 3], &a), arr(&[2, 3], &b), arr(&[3], &b));
        check(&|t, x| t.add(x[0], x[1]), &[x.clone(), row.clone()]);
        check(&|t, x| t.sub(x[0], x[1]), &[row.clone(), x.clone()]);
        check(&|t, x| t.mul(x[0], x[1]), &[x.clone(), y.clone()]);
        check(&|t, x| t.div(x[0], x[1]), &[x.clone(), row.clone()]);
        check(&|t, x| t.div(x[0], x[1]), &[arr(&[2, 1], &a), y.clone()]);
        check(&|t, x| t.pow(x[0], x[1]), &[y.clone(), x.clone()]);
        // One side a single number (the slice fast path), either side, 0-d or length 1.
        let (s0, s1) = (arr(&[], &b[3..]), arr(&[1], &b[4..]));
        for op in [Binary::Add, Binary::Sub, Binary::Mul, Binary::Div, Binary::Pow] {
            check(&move |t, x| t.binary(op, x[0], x[1]), &[y.clone(), s0.clone()]);
            check(&move |t, x| t.binary(op, x[0], x[1]), &[s1.clone(), y.clone()]);
        }
    }

    #[test]
    fn complex_ops(a in values(-2.0, 2.0), b in values(-2.0, 2.0)) {
        let (x, y, col) = (arr(&[2, 3], &a), arr(&[2, 3], &b), arr(&[3], &b));
        check(&|t, x| t.complex(x[0], x[1]), &[x.clone(), col.clone()]);
        check(&|t, x| t.exp_i(x[0]), &[x.clone()]);
        check(&|t, x| { let z = t.complex(x[0], x[1])?; t.conj(z) }, &[x.clone(), y.clone()]);
        check(&|t, x| { let z = t.complex(x[0], x[1])?; t.abs2(z) }, &[x.clone(), y.clone()]);
        check(&|t, x| {
            let z = t.complex(x[0], x[1])?;
            let w = t.exp_i(x[2])?;
            t.cmul(z, w)
        }, &[x.clone(), y.clone(), col.clone()]);
        check(&|t, x| {
            let z = t.complex(x[0], x[1])?;
            let w = t.complex(x[1], x[0])?;
            t.cadd(z, w)
        }, &[x.clone(), y.clone()]);
        check(&|t, x| { let z = t.exp_i(x[1])?; t.cscale(x[0], z) }, &[col.clone(), x.clone()]);
        check(&|t, x| { let z = t.exp_i(x[0])?; let s = t.sum_axis(z, 1)?; t.abs2(s) }, &[x.clone()]);
    }

    #[test]
    fn reductions(a in values(-3.0, 3.0)) {
        let x = arr(&[2, 3, 4], &a);
        check(&|t, x| t.sum(x[0]), &[x.clone()]);
        check(&|t, x| t.mean(x[0]), &[x.clone()]);
        check(&|t, x| t.logsumexp(x[0]), &[x.clone()]);
        for axis in 0..3 {
            check(&move |t, x| t.sum_axis(x[0], axis), &[x.clone()]);
            check(&move |t, x| t.mean_axis(x[0], axis), &[x.clone()]);
            check(&move |t, x| t.logsumexp_axis(x[0], axis), &[x.clone()]);
        }
    }

    #[test]
    fn indexing(a in values(-2.0, 2.0), b in values(-2.0, 2.0)) {
        let x = arr(&[4, 3], &a);
        check(&|t, x| t.gather(x[0], 0, &[3, 0, 0, 2, 1]), &[x.clone()]);
        check(&|t, x| t.gather(x[0], 1, &[2, 2, 0]), &[x.clone()]);
        check(&|t, x| t.scatter_add(x[0], 0, &[1, 1, 4, 0], 6), &[x.clone()]);
        check(&|t, x| t.reshape(x[0], &[2, 6]), &[x.clone()]);
        check(&|t, x| t.transpose(x[0]), &[x.clone()]);
        check(&|t, x| t.broadcast_to(x[0], &[2, 4, 3]), &[x.clone()]);
        check(&|t, x| t.concat(&[x[0], x[1]], 0), &[x.clone(), arr(&[2, 3], &b)]);
        check(&|t, x| { let z = t.exp_i(x[0])?; let g = t.gather(z, 0, &[1, 1, 3])?; t.abs2(g) }, &[x.clone()]);
    }

    #[test]
    fn linear_algebra(a in values(-1.5, 1.5), b in values(-1.5, 1.5), c in values(-1.5, 1.5)) {
        check(&|t, x| t.matmul(x[0], x[1]), &[arr(&[2, 3], &a), arr(&[3, 4], &b)]);
        check(&|t, x| t.matmul(x[0], x[1]), &[arr(&[4, 3], &a), arr(&[3], &b)]);
        for act in [Activation::Identity, Activation::Tanh, Activation::Sigmoid, Activation::Softplus] {
            check(&move |t, x| t.dense(x[0], x[1], x[2], act), &[arr(&[3, 2], &a), arr(&[2, 4], &b), arr(&[4], &c)]);
        }
    }

    #[test]
    fn fused_operator(a in values(-2.0, 2.0), b in values(0.5, 2.0)) {
        let op: Arc<dyn FusedOp> = Arc::new(ScaledSquare);
        check(&move |t, x| t.fused(op.clone(), &[x[0], x[1]]), &[arr(&[5], &a), arr(&[1], &b)]);
    }
}

/// A test fused op y = s x^2 with s a 1-element tensor: its hand adjoint is checked like a built-in.
#[derive(Debug)]
struct ScaledSquare;

impl FusedOp for ScaledSquare {
    fn name(&self) -> &'static str {
        "scaled_square"
    }
    fn forward(&self, inputs: &[&Value]) -> Result<Value, String> {
        let (Value::Real(x), Value::Real(s)) = (inputs[0], inputs[1]) else {
            return Err("real inputs".into());
        };
        let s = s[[0]];
        Ok(Value::Real(x.mapv(|v| s * v * v)))
    }
    fn vjp(&self, inputs: &[&Value], _y: &Value, g: &Value) -> Result<Vec<Option<Value>>, String> {
        let (Value::Real(x), Value::Real(s), Value::Real(g)) = (inputs[0], inputs[1], g) else {
            return Err("real inputs".into());
        };
        let s0 = s[[0]];
        let gx = ndarray::Zip::from(x)
            .and(g)
            .map_collect(|&x, &g| 2.0 * s0 * x * g);
        let gs = ndarray::Zip::from(x)
            .and(g)
            .fold(0.0, |acc, &x, &g| acc + x * x * g);
        Ok(vec![
            Some(Value::Real(gx)),
            Some(Value::Real(ArrayD::from_elem(IxDyn(&[1]), gs))),
        ])
    }
}

#[test]
fn replay_recomputes_with_new_leaf_values() {
    let mut tape = Tape::new();
    let x = tape.leaf_real(arr(&[3], &[1.0, 2.0, 3.0]));
    let e = tape.exp(x).unwrap();
    let s = tape.sum(e).unwrap();
    tape.set_value(x, Value::Real(arr(&[3], &[0.0, 0.5, -1.0])))
        .unwrap();
    tape.replay().unwrap();
    let expected = 1.0 + 0.5f64.exp() + (-1.0f64).exp();
    assert!((tape.scalar_value(s).unwrap() - expected).abs() < 1e-15);
    tape.backward(s).unwrap();
    assert_eq!(
        tape.grad_real(x).unwrap(),
        arr(&[3], &[1.0, 0.5f64.exp(), (-1.0f64).exp()])
    );
}

#[test]
fn bad_inputs_are_errors_naming_the_operator_and_label() {
    let mut tape = Tape::new();
    tape.set_label("model.spread:3:7");
    let x = tape.leaf_real(arr(&[3], &[1.0, 2.0, 3.0]));
    let y = tape.leaf_real(arr(&[2], &[1.0, 2.0]));
    let err = tape.add(x, y).unwrap_err().to_string();
    assert!(
        err.contains("add") && err.contains("model.spread:3:7") && err.contains("[3]"),
        "{err}"
    );
    let err = tape.gather(x, 0, &[0, 3]).unwrap_err().to_string();
    assert!(err.contains("gather") && err.contains("index 3"), "{err}");
    let z = tape.exp_i(x).unwrap();
    assert!(tape.add(z, x).unwrap_err().to_string().contains("complex"));
}

#[test]
fn non_finite_value_is_located() {
    let mut tape = Tape::new();
    let x = tape.leaf_real(arr(&[2], &[1.0, -1.0]));
    tape.set_label("site sigma");
    let l = tape.log(x).unwrap();
    let _ = tape.sum(l).unwrap();
    match tape.first_non_finite_value() {
        Some(TapeError::NonFinite {
            op, label, what, ..
        }) => {
            assert_eq!((op, label.as_str(), what), ("log", "site sigma", "value"));
        }
        other => panic!("expected a non-finite error, got {other:?}"),
    }
}

/// Reused gradient buffers must be reset between passes: a replayed tape's second backward
/// equals a freshly recorded tape's gradient exactly.
#[test]
fn repeated_backward_on_replayed_tape_equals_fresh_tape() {
    let build = |t: &mut Tape, x: NodeId, w: NodeId| {
        let m = t.mul(x, w).unwrap();
        let s = t.sin(m).unwrap();
        let p = t.mul(s, x).unwrap();
        let e = t.exp(x).unwrap();
        let q = t.add(p, e).unwrap();
        t.sum(q).unwrap()
    };
    let (x0, w0) = (
        arr(&[4], &[0.1, -0.4, 0.9, 1.3]),
        arr(&[4], &[2.0, 0.5, -1.0, 0.3]),
    );
    let x1 = arr(&[4], &[0.7, 0.2, -0.6, 0.05]);
    let mut tape = Tape::new();
    let (x, w) = (tape.leaf_real(x0), tape.leaf_real(w0.clone()));
    let root = build(&mut tape, x, w);
    tape.backward(root).unwrap();
    tape.set_value(x, Value::Real(x1.clone())).unwrap();
    tape.replay().unwrap();
    tape.backward(root).unwrap();
    let mut fresh = Tape::new();
    let (fx, fw) = (fresh.leaf_real(x1), fresh.leaf_real(w0));
    let froot = build(&mut fresh, fx, fw);
    fresh.backward(froot).unwrap();
    assert_eq!(
        tape.scalar_value(root).unwrap(),
        fresh.scalar_value(froot).unwrap()
    );
    assert_eq!(tape.grad_real(x).unwrap(), fresh.grad_real(fx).unwrap());
    assert_eq!(tape.grad_real(w).unwrap(), fresh.grad_real(fw).unwrap());
}
